/* hostmem: the CLR hosting memory interfaces as the plain C binding MIDL generates (mscoree.h, COBJMACROS).
 *
 * Each interface is a struct whose only member is `lpVtbl`; the vtable holds IUnknown's QueryInterface,
 * AddRef and Release first, then the methods in the IDL's order. Slot order and signatures follow
 * mscoree.idl (SSCLI 2.0 / CoreCLR 2015); see ../shared/spec/contract-research.md. */
#ifndef HOSTMEM_INTERFACES_H
#define HOSTMEM_INTERFACES_H

#include "api.h"
#include "win32.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifndef STDMETHODCALLTYPE
#define STDMETHODCALLTYPE
#endif

/* The real IIDs (mscoree_i.c). Defined once in the library; hostmem.h exports them. */
extern HM_API const IID IID_IUnknown;
extern HM_API const IID IID_IHostMemoryManager;
extern HM_API const IID IID_IHostMalloc;
extern HM_API const IID IID_ICLRMemoryNotificationCallback;
extern HM_API const IID IID_IHostMemoryNeededCallback; /* older name, same value as ICLRMemoryNotificationCallback */

typedef struct IUnknown IUnknown;
typedef struct IHostMalloc IHostMalloc;
typedef struct IHostMemoryManager IHostMemoryManager;
typedef struct ICLRMemoryNotificationCallback ICLRMemoryNotificationCallback;

/* ---- IUnknown ----------------------------------------------------------------------------------------- */
typedef struct IUnknownVtbl {
    HRESULT(STDMETHODCALLTYPE *QueryInterface)(IUnknown *This, REFIID riid, void **ppvObject);
    ULONG(STDMETHODCALLTYPE *AddRef)(IUnknown *This);
    ULONG(STDMETHODCALLTYPE *Release)(IUnknown *This);
} IUnknownVtbl;
struct IUnknown {
    const IUnknownVtbl *lpVtbl;
};
#define IUnknown_QueryInterface(This, riid, ppv) ((This)->lpVtbl->QueryInterface(This, riid, ppv))
#define IUnknown_AddRef(This) ((This)->lpVtbl->AddRef(This))
#define IUnknown_Release(This) ((This)->lpVtbl->Release(This))

/* ---- ICLRMemoryNotificationCallback --------------------------------------------------------------------- */
typedef struct ICLRMemoryNotificationCallbackVtbl {
    HRESULT(STDMETHODCALLTYPE *QueryInterface)(ICLRMemoryNotificationCallback *This, REFIID riid, void **ppvObject);
    ULONG(STDMETHODCALLTYPE *AddRef)(ICLRMemoryNotificationCallback *This);
    ULONG(STDMETHODCALLTYPE *Release)(ICLRMemoryNotificationCallback *This);
    HRESULT(STDMETHODCALLTYPE *OnMemoryNotification)(ICLRMemoryNotificationCallback *This,
                                                     EMemoryAvailable eMemoryAvailable);
} ICLRMemoryNotificationCallbackVtbl;
struct ICLRMemoryNotificationCallback {
    const ICLRMemoryNotificationCallbackVtbl *lpVtbl;
};
#define ICLRMemoryNotificationCallback_QueryInterface(This, riid, ppv) ((This)->lpVtbl->QueryInterface(This, riid, ppv))
#define ICLRMemoryNotificationCallback_AddRef(This) ((This)->lpVtbl->AddRef(This))
#define ICLRMemoryNotificationCallback_Release(This) ((This)->lpVtbl->Release(This))
#define ICLRMemoryNotificationCallback_OnMemoryNotification(This, e) ((This)->lpVtbl->OnMemoryNotification(This, e))

/* ---- IHostMalloc ---------------------------------------------------------------------------------------- */
typedef struct IHostMallocVtbl {
    HRESULT(STDMETHODCALLTYPE *QueryInterface)(IHostMalloc *This, REFIID riid, void **ppvObject);
    ULONG(STDMETHODCALLTYPE *AddRef)(IHostMalloc *This);
    ULONG(STDMETHODCALLTYPE *Release)(IHostMalloc *This);
    HRESULT(STDMETHODCALLTYPE *Alloc)(IHostMalloc *This, SIZE_T cbSize, EMemoryCriticalLevel eCriticalLevel,
                                      void **ppMem);
    HRESULT(STDMETHODCALLTYPE *DebugAlloc)(IHostMalloc *This, SIZE_T cbSize, EMemoryCriticalLevel eCriticalLevel,
                                           char *pszFileName, int iLineNo, void **ppMem);
    HRESULT(STDMETHODCALLTYPE *Free)(IHostMalloc *This, void *pMem);
} IHostMallocVtbl;
struct IHostMalloc {
    const IHostMallocVtbl *lpVtbl;
};
#define IHostMalloc_QueryInterface(This, riid, ppv) ((This)->lpVtbl->QueryInterface(This, riid, ppv))
#define IHostMalloc_AddRef(This) ((This)->lpVtbl->AddRef(This))
#define IHostMalloc_Release(This) ((This)->lpVtbl->Release(This))
#define IHostMalloc_Alloc(This, cb, lvl, pp) ((This)->lpVtbl->Alloc(This, cb, lvl, pp))
#define IHostMalloc_DebugAlloc(This, cb, lvl, file, line, pp) ((This)->lpVtbl->DebugAlloc(This, cb, lvl, file, line, pp))
#define IHostMalloc_Free(This, p) ((This)->lpVtbl->Free(This, p))

/* ---- IHostMemoryManager --------------------------------------------------------------------------------- */
typedef struct IHostMemoryManagerVtbl {
    HRESULT(STDMETHODCALLTYPE *QueryInterface)(IHostMemoryManager *This, REFIID riid, void **ppvObject);
    ULONG(STDMETHODCALLTYPE *AddRef)(IHostMemoryManager *This);
    ULONG(STDMETHODCALLTYPE *Release)(IHostMemoryManager *This);
    /* The IDL spells it CreateMalloc; the 2.0 docs call it CreateMAlloc. dwMallocType is MALLOC_TYPE flags
     * (the 2.0 docs' BOOL fThreadSafe has the same ABI: TRUE == MALLOC_THREADSAFE). */
    HRESULT(STDMETHODCALLTYPE *CreateMalloc)(IHostMemoryManager *This, DWORD dwMallocType, IHostMalloc **ppMalloc);
    HRESULT(STDMETHODCALLTYPE *VirtualAlloc)(IHostMemoryManager *This, void *pAddress, SIZE_T dwSize,
                                             DWORD flAllocationType, DWORD flProtect,
                                             EMemoryCriticalLevel eCriticalLevel, void **ppMem);
    HRESULT(STDMETHODCALLTYPE *VirtualFree)(IHostMemoryManager *This, LPVOID lpAddress, SIZE_T dwSize,
                                            DWORD dwFreeType);
    HRESULT(STDMETHODCALLTYPE *VirtualQuery)(IHostMemoryManager *This, void *lpAddress, void *lpBuffer,
                                             SIZE_T dwLength, SIZE_T *pResult);
    HRESULT(STDMETHODCALLTYPE *VirtualProtect)(IHostMemoryManager *This, void *lpAddress, SIZE_T dwSize,
                                               DWORD flNewProtect, DWORD *pflOldProtect);
    HRESULT(STDMETHODCALLTYPE *GetMemoryLoad)(IHostMemoryManager *This, DWORD *pMemoryLoad, SIZE_T *pAvailableBytes);
    HRESULT(STDMETHODCALLTYPE *RegisterMemoryNotificationCallback)(IHostMemoryManager *This,
                                                                   ICLRMemoryNotificationCallback *pCallback);
    HRESULT(STDMETHODCALLTYPE *NeedsVirtualAddressSpace)(IHostMemoryManager *This, LPVOID startAddress, SIZE_T size);
    HRESULT(STDMETHODCALLTYPE *AcquiredVirtualAddressSpace)(IHostMemoryManager *This, LPVOID startAddress,
                                                            SIZE_T size);
    HRESULT(STDMETHODCALLTYPE *ReleasedVirtualAddressSpace)(IHostMemoryManager *This, LPVOID startAddress);
} IHostMemoryManagerVtbl;
struct IHostMemoryManager {
    const IHostMemoryManagerVtbl *lpVtbl;
};
#define IHostMemoryManager_QueryInterface(This, riid, ppv) ((This)->lpVtbl->QueryInterface(This, riid, ppv))
#define IHostMemoryManager_AddRef(This) ((This)->lpVtbl->AddRef(This))
#define IHostMemoryManager_Release(This) ((This)->lpVtbl->Release(This))
#define IHostMemoryManager_CreateMalloc(This, type, pp) ((This)->lpVtbl->CreateMalloc(This, type, pp))
#define IHostMemoryManager_CreateMAlloc(This, type, pp) ((This)->lpVtbl->CreateMalloc(This, type, pp))
#define IHostMemoryManager_VirtualAlloc(This, addr, size, type, prot, lvl, pp) \
    ((This)->lpVtbl->VirtualAlloc(This, addr, size, type, prot, lvl, pp))
#define IHostMemoryManager_VirtualFree(This, addr, size, type) ((This)->lpVtbl->VirtualFree(This, addr, size, type))
#define IHostMemoryManager_VirtualQuery(This, addr, buf, len, pres) \
    ((This)->lpVtbl->VirtualQuery(This, addr, buf, len, pres))
#define IHostMemoryManager_VirtualProtect(This, addr, size, prot, pold) \
    ((This)->lpVtbl->VirtualProtect(This, addr, size, prot, pold))
#define IHostMemoryManager_GetMemoryLoad(This, pload, pavail) ((This)->lpVtbl->GetMemoryLoad(This, pload, pavail))
#define IHostMemoryManager_RegisterMemoryNotificationCallback(This, cb) \
    ((This)->lpVtbl->RegisterMemoryNotificationCallback(This, cb))
#define IHostMemoryManager_NeedsVirtualAddressSpace(This, start, size) \
    ((This)->lpVtbl->NeedsVirtualAddressSpace(This, start, size))
#define IHostMemoryManager_AcquiredVirtualAddressSpace(This, start, size) \
    ((This)->lpVtbl->AcquiredVirtualAddressSpace(This, start, size))
#define IHostMemoryManager_ReleasedVirtualAddressSpace(This, start) \
    ((This)->lpVtbl->ReleasedVirtualAddressSpace(This, start))

/* Recover an object from one of its embedded interfaces (Wine's CONTAINING_RECORD / impl_from_...). */
#define HM_CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#ifdef __cplusplus
}
#endif
#endif /* HOSTMEM_INTERFACES_H */

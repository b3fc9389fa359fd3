/* hostmem/contract.h: the CLR hosting memory contract, standalone. Everything a host needs to implement
 * IHostMemoryManager, IHostMalloc and ICLRMemoryNotificationCallback, and nothing of hostmem's library: it
 * includes only <stddef.h> and <stdint.h>, so a host built against it needs no libhostmem.
 *
 *   - the Win32 types, HRESULTs, error codes, MEM_ and PAGE_ constants and MEMORY_BASIC_INFORMATION;
 *   - the hosting enumerations (EMemoryCriticalLevel, EMemoryAvailable, MALLOC_TYPE);
 *   - the three interfaces (and IUnknown) as the plain C binding MIDL generates: each interface is a struct whose
 *     only member is `lpVtbl`; the vtable holds IUnknown's QueryInterface, AddRef and Release first, then the
 *     methods in the IDL's order (mscoree.idl), with COBJMACROS-style call macros (IHostMalloc_Alloc(p, ...));
 *   - their IIDs, with HM_DEFINE_GUID: declared `extern` by default; the one translation unit that defines
 *     HOSTMEM_INITGUID before including this header defines them (like INITGUID with <initguid.h>);
 *   - HostMemCreateManagerFn, the factory every host plugin exports as `HostMemCreateManager`.
 *
 * Sizes follow CoreCLR's PAL on LP64 (DWORD, LONG, BOOL and HRESULT are 32-bit, never `long`), so a host built
 * against this header is ABI-compatible with one built against the PAL's.
 *
 * On Windows, include <windows.h> (and <mscoree.h>) first: every definition here is skipped when the system
 * headers already made it (their include guards _WINNT_, _WINERROR_, GUID_DEFINED, MIDL's
 * __<interface>_INTERFACE_DEFINED__, or the macro's own name). */
#ifndef HOSTMEM_CONTRACT_H
#define HOSTMEM_CONTRACT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Base types ---------------------------------------------------------------------------------------------- */
#if !defined(_WINDOWS_) && !defined(_WINNT_) && !defined(_MINWINDEF_) && !defined(_WINDEF_)
typedef int32_t HRESULT;
typedef uint32_t DWORD;
typedef uint32_t ULONG;
typedef int32_t LONG;
typedef int32_t BOOL;
typedef uint16_t WORD;
typedef uint8_t BYTE;
typedef size_t SIZE_T;
typedef void *PVOID;
typedef void *LPVOID;
#endif

#ifndef TRUE
#define TRUE 1
#endif
#ifndef FALSE
#define FALSE 0
#endif

#ifndef STDMETHODCALLTYPE
#define STDMETHODCALLTYPE
#endif

/* ---- GUIDs ---------------------------------------------------------------------------------------------------- */
#ifndef GUID_DEFINED
#define GUID_DEFINED
typedef struct _GUID {
    uint32_t Data1;
    uint16_t Data2;
    uint16_t Data3;
    uint8_t Data4[8];
} GUID;
#endif
#ifndef __IID_DEFINED__
#define __IID_DEFINED__
typedef GUID IID;
#endif
#ifndef _REFIID_DEFINED
#define _REFIID_DEFINED
typedef const IID *REFIID;
#endif

/* Field by field, so that this header needs no <string.h>. */
static inline int hm_guid_equal(const GUID *a, const GUID *b)
{
    for (int k = 0; k < 8; k++)
        if (a->Data4[k] != b->Data4[k])
            return 0;
    return a->Data1 == b->Data1 && a->Data2 == b->Data2 && a->Data3 == b->Data3;
}
#ifndef IsEqualGUID
#define IsEqualGUID(a, b) hm_guid_equal((a), (b))
#endif
#ifndef IsEqualIID
#define IsEqualIID(a, b) hm_guid_equal((a), (b))
#endif

/* HM_DEFINE_GUID(name, l, w1, w2, b1..b8) declares `extern const IID name`, or defines it in the translation unit
 * that defines HOSTMEM_INITGUID first. HOSTMEM_IID_ATTR (empty by default) goes on each declaration, e.g. a
 * visibility attribute for a library that exports them. */
#ifndef HOSTMEM_IID_ATTR
#define HOSTMEM_IID_ATTR
#endif
#ifdef HOSTMEM_INITGUID
#define HM_DEFINE_GUID(name, l, w1, w2, b1, b2, b3, b4, b5, b6, b7, b8) \
    extern HOSTMEM_IID_ATTR const IID name;                             \
    HOSTMEM_IID_ATTR const IID name = {l, w1, w2, {b1, b2, b3, b4, b5, b6, b7, b8}}
#else
#define HM_DEFINE_GUID(name, l, w1, w2, b1, b2, b3, b4, b5, b6, b7, b8) extern HOSTMEM_IID_ATTR const IID name
#endif

/* ---- HRESULTs -------------------------------------------------------------------------------------------------- */
#ifndef SUCCEEDED
#define SUCCEEDED(hr) (((HRESULT)(hr)) >= 0)
#endif
#ifndef FAILED
#define FAILED(hr) (((HRESULT)(hr)) < 0)
#endif
#ifndef HRESULT_FROM_WIN32
#define HRESULT_FROM_WIN32(e) \
    ((HRESULT)((e) == 0 ? 0 : (HRESULT)((((uint32_t)(e)) & 0x0000FFFFu) | 0x80070000u)))
#endif

#ifndef _WINERROR_
#define S_OK ((HRESULT)0x00000000)
#define S_FALSE ((HRESULT)0x00000001)
#define E_NOTIMPL ((HRESULT)0x80004001)
#define E_NOINTERFACE ((HRESULT)0x80004002)
#define E_POINTER ((HRESULT)0x80004003)
#define E_FAIL ((HRESULT)0x80004005)
#define E_UNEXPECTED ((HRESULT)0x8000FFFF)
#define E_ACCESSDENIED ((HRESULT)0x80070005)
#define E_OUTOFMEMORY ((HRESULT)0x8007000E)
#define E_INVALIDARG ((HRESULT)0x80070057)

/* Win32 error codes the virtual-memory calls set (as HRESULT_FROM_WIN32(ERROR_...)). */
#define ERROR_ACCESS_DENIED 5
#define ERROR_NOT_ENOUGH_MEMORY 8
#define ERROR_OUTOFMEMORY 14
#define ERROR_BAD_LENGTH 24
#define ERROR_INVALID_PARAMETER 87
#define ERROR_INVALID_ADDRESS 487
#define ERROR_NOACCESS 998
#define ERROR_PRIVILEGE_NOT_HELD 1314
#define ERROR_COMMITMENT_LIMIT 1455
#endif

/* The hosting HRESULTs (corerror.h). */
#ifndef HOST_E_DEADLOCK
#define HOST_E_DEADLOCK ((HRESULT)0x80131020)
#define HOST_E_INTERRUPTED ((HRESULT)0x80131021)
#define HOST_E_INVALIDOPERATION ((HRESULT)0x80131022)
#define HOST_E_CLRNOTAVAILABLE ((HRESULT)0x80131023)
#define HOST_E_TIMEOUT ((HRESULT)0x80131024)
#endif
#ifndef HOST_E_NOT_OWNER
#define HOST_E_NOT_OWNER ((HRESULT)0x80131025)
#endif
#ifndef HOST_E_ABANDONED
#define HOST_E_ABANDONED ((HRESULT)0x80131026)
#endif

/* ---- Allocation types, states, page protections, MEMORY_BASIC_INFORMATION (winnt.h) ---------------------------- */
#if !defined(_WINNT_)
#define MEM_COMMIT 0x00001000u
#define MEM_RESERVE 0x00002000u
#define MEM_DECOMMIT 0x00004000u
#define MEM_RELEASE 0x00008000u
#define MEM_FREE 0x00010000u
#define MEM_PRIVATE 0x00020000u
#define MEM_MAPPED 0x00040000u
#define MEM_RESET 0x00080000u
#define MEM_TOP_DOWN 0x00100000u
#define MEM_WRITE_WATCH 0x00200000u
#define MEM_PHYSICAL 0x00400000u
#define MEM_RESET_UNDO 0x01000000u
#define MEM_IMAGE 0x01000000u /* as a Type; same bits as MEM_RESET_UNDO */
#define MEM_LARGE_PAGES 0x20000000u

#define PAGE_NOACCESS 0x01u
#define PAGE_READONLY 0x02u
#define PAGE_READWRITE 0x04u
#define PAGE_WRITECOPY 0x08u
#define PAGE_EXECUTE 0x10u
#define PAGE_EXECUTE_READ 0x20u
#define PAGE_EXECUTE_READWRITE 0x40u
#define PAGE_EXECUTE_WRITECOPY 0x80u
#define PAGE_GUARD 0x100u
#define PAGE_NOCACHE 0x200u
#define PAGE_WRITECOMBINE 0x400u

/* The 64-bit layout (48 bytes): what VirtualQuery writes into lpBuffer. */
typedef struct _MEMORY_BASIC_INFORMATION {
    PVOID BaseAddress;       /* 0  */
    PVOID AllocationBase;    /* 8  */
    DWORD AllocationProtect; /* 16 */
    WORD PartitionId;        /* 20; always 0 */
    SIZE_T RegionSize;       /* 24 */
    DWORD State;             /* 32 */
    DWORD Protect;           /* 36 */
    DWORD Type;              /* 40 */
} MEMORY_BASIC_INFORMATION, *PMEMORY_BASIC_INFORMATION;

#if defined(__SIZEOF_POINTER__) && __SIZEOF_POINTER__ == 8 && !defined(__cplusplus)
_Static_assert(sizeof(MEMORY_BASIC_INFORMATION) == 48, "MEMORY_BASIC_INFORMATION must have the x64 layout");
_Static_assert(offsetof(MEMORY_BASIC_INFORMATION, RegionSize) == 24, "RegionSize at offset 24");
_Static_assert(offsetof(MEMORY_BASIC_INFORMATION, Type) == 40, "Type at offset 40");
#endif
#endif /* !_WINNT_ */

/* ---- Hosting enumerations (mscoree.h defines them with IHostMemoryManager, when it has it) --------------------- */
#ifndef __IHostMemoryManager_INTERFACE_DEFINED__
typedef enum EMemoryCriticalLevel {
    eTaskCritical = 0,
    eAppDomainCritical = 1,
    eProcessCritical = 2
} EMemoryCriticalLevel;

typedef enum EMemoryAvailable {
    eMemoryAvailableLow = 1,
    eMemoryAvailableNeutral = 2,
    eMemoryAvailableHigh = 3
} EMemoryAvailable;

typedef enum MALLOC_TYPE {
    MALLOC_THREADSAFE = 0x1,
    MALLOC_EXECUTABLE = 0x2
} MALLOC_TYPE;
#endif

/* ---- The IIDs (mscoree_i.c) ----------------------------------------------------------------------------------- */
#ifndef __IUnknown_INTERFACE_DEFINED__ /* else the system's uuid library defines IID_IUnknown */
HM_DEFINE_GUID(IID_IUnknown, 0x00000000, 0x0000, 0x0000, 0xC0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x46);
#endif
HM_DEFINE_GUID(IID_IHostMemoryManager, 0x7BC698D1, 0xF9E3, 0x4460, 0x9C, 0xDE, 0xD0, 0x42, 0x48, 0xE9, 0xFA, 0x25);
HM_DEFINE_GUID(IID_IHostMalloc, 0x1831991C, 0xCC53, 0x4A31, 0xB2, 0x18, 0x04, 0xE9, 0x10, 0x44, 0x64, 0x79);
HM_DEFINE_GUID(IID_ICLRMemoryNotificationCallback, 0x47EB8E57, 0x0846, 0x4546, 0xAF, 0x76, 0x6F, 0x42, 0xFC, 0xFC,
               0x26, 0x49);
/* The interface's older name, same value. */
HM_DEFINE_GUID(IID_IHostMemoryNeededCallback, 0x47EB8E57, 0x0846, 0x4546, 0xAF, 0x76, 0x6F, 0x42, 0xFC, 0xFC, 0x26,
               0x49);

/* ---- The interfaces ------------------------------------------------------------------------------------------- */
#ifndef __IUnknown_FWD_DEFINED__
#define __IUnknown_FWD_DEFINED__
typedef struct IUnknown IUnknown;
#endif
#ifndef __IHostMalloc_FWD_DEFINED__
#define __IHostMalloc_FWD_DEFINED__
typedef struct IHostMalloc IHostMalloc;
#endif
#ifndef __IHostMemoryManager_FWD_DEFINED__
#define __IHostMemoryManager_FWD_DEFINED__
typedef struct IHostMemoryManager IHostMemoryManager;
#endif
#ifndef __ICLRMemoryNotificationCallback_FWD_DEFINED__
#define __ICLRMemoryNotificationCallback_FWD_DEFINED__
typedef struct ICLRMemoryNotificationCallback ICLRMemoryNotificationCallback;
#endif

#ifndef __IUnknown_INTERFACE_DEFINED__
#define __IUnknown_INTERFACE_DEFINED__
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
#endif

/* The runtime's side: the host calls OnMemoryNotification when the memory available changes. */
#ifndef __ICLRMemoryNotificationCallback_INTERFACE_DEFINED__
#define __ICLRMemoryNotificationCallback_INTERFACE_DEFINED__
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
#endif

/* A heap the host makes for the runtime (IHostMemoryManager::CreateMalloc). */
#ifndef __IHostMalloc_INTERFACE_DEFINED__
#define __IHostMalloc_INTERFACE_DEFINED__
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
#endif

/* The host's memory manager: the runtime's VirtualAlloc & co. and its heaps go through it. */
#ifndef __IHostMemoryManager_INTERFACE_DEFINED__
#define __IHostMemoryManager_INTERFACE_DEFINED__
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
#endif

/* Recover an object from one of its embedded interfaces (Wine's CONTAINING_RECORD / impl_from_...). */
#define HM_CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* ---- The factory a host plugin exports ---------------------------------------------------------------------------
 * HRESULT HostMemCreateManager(const char *options, IHostMemoryManager **ppManager);
 * options: NULL or "" for defaults, else the host's own syntax (hostmem passes `--host-options` through). On
 * success *ppManager holds one reference; on failure it is NULL. hostmem's tools dlopen the host and look it up. */
typedef HRESULT (*HostMemCreateManagerFn)(const char *options, IHostMemoryManager **ppManager);

#ifdef __cplusplus
}
#endif
#endif /* HOSTMEM_CONTRACT_H */

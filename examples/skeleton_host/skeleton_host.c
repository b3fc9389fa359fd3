/* skeleton_host.c: the smallest complete host of the CLR hosting memory contract. The COM plumbing, a heap on
 * malloc and the factory are done; the four virtual-memory methods say E_NOTIMPL until you write them. */
#define HOSTMEM_INITGUID /* this file defines the IIDs (once per host) */
#include <hostmem/contract.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>

/* ---- The manager: one object, one interface ---------------------------------------------------------------- */
typedef struct manager {
    IHostMemoryManager iface; /* first member: the pointer the runtime holds */
    atomic_int refs;
    ICLRMemoryNotificationCallback *callback; /* the runtime's, referenced while registered */
} manager;

static manager *impl_from_manager(IHostMemoryManager *iface) { return HM_CONTAINER_OF(iface, manager, iface); }

static HRESULT STDMETHODCALLTYPE mgr_QueryInterface(IHostMemoryManager *This, REFIID riid, void **ppv)
{
    if (!ppv)
        return E_POINTER;
    *ppv = NULL;
    if (!IsEqualIID(riid, &IID_IUnknown) && !IsEqualIID(riid, &IID_IHostMemoryManager))
        return E_NOINTERFACE;
    IHostMemoryManager_AddRef(This);
    *ppv = This;
    return S_OK;
}

static ULONG STDMETHODCALLTYPE mgr_AddRef(IHostMemoryManager *This)
{
    return (ULONG)atomic_fetch_add(&impl_from_manager(This)->refs, 1) + 1;
}

static ULONG STDMETHODCALLTYPE mgr_Release(IHostMemoryManager *This)
{
    manager *m = impl_from_manager(This);
    ULONG left = (ULONG)atomic_fetch_sub(&m->refs, 1) - 1;
    if (left == 0) {
        if (m->callback)
            ICLRMemoryNotificationCallback_Release(m->callback);
        free(m);
    }
    return left;
}

/* ---- The virtual-memory methods: yours to write (Windows' VirtualAlloc rules, 64 KiB reservations) ----------- */
static HRESULT STDMETHODCALLTYPE mgr_VirtualAlloc(IHostMemoryManager *This, void *pAddress, SIZE_T dwSize,
                                                  DWORD flAllocationType, DWORD flProtect,
                                                  EMemoryCriticalLevel eCriticalLevel, void **ppMem)
{
    (void)This, (void)pAddress, (void)dwSize, (void)flAllocationType, (void)flProtect, (void)eCriticalLevel;
    if (!ppMem)
        return E_POINTER;
    *ppMem = NULL;
    return E_NOTIMPL;
}

static HRESULT STDMETHODCALLTYPE mgr_VirtualFree(IHostMemoryManager *This, LPVOID lpAddress, SIZE_T dwSize,
                                                 DWORD dwFreeType)
{
    (void)This, (void)lpAddress, (void)dwSize, (void)dwFreeType;
    return E_NOTIMPL;
}

static HRESULT STDMETHODCALLTYPE mgr_VirtualQuery(IHostMemoryManager *This, void *lpAddress, void *lpBuffer,
                                                  SIZE_T dwLength, SIZE_T *pResult)
{
    (void)This, (void)lpAddress, (void)lpBuffer, (void)dwLength;
    if (!pResult)
        return E_POINTER;
    *pResult = 0;
    return E_NOTIMPL;
}

static HRESULT STDMETHODCALLTYPE mgr_VirtualProtect(IHostMemoryManager *This, void *lpAddress, SIZE_T dwSize,
                                                    DWORD flNewProtect, DWORD *pflOldProtect)
{
    (void)This, (void)lpAddress, (void)dwSize, (void)flNewProtect;
    if (!pflOldProtect)
        return E_POINTER;
    *pflOldProtect = PAGE_NOACCESS;
    return E_NOTIMPL;
}

/* ---- Load, notifications, the address-space ledger --------------------------------------------------------- */
static HRESULT STDMETHODCALLTYPE mgr_GetMemoryLoad(IHostMemoryManager *This, DWORD *pMemoryLoad,
                                                   SIZE_T *pAvailableBytes)
{
    (void)This;
    if (!pMemoryLoad || !pAvailableBytes)
        return E_POINTER;
    *pMemoryLoad = 0;                   /* percent of your budget in use */
    *pAvailableBytes = (SIZE_T)1 << 30; /* what is left of it */
    return S_OK;
}

static HRESULT STDMETHODCALLTYPE mgr_RegisterMemoryNotificationCallback(IHostMemoryManager *This,
                                                                        ICLRMemoryNotificationCallback *pCallback)
{
    manager *m = impl_from_manager(This);
    if (!pCallback)
        return E_POINTER;
    if (m->callback)
        return HOST_E_INVALIDOPERATION; /* this skeleton keeps one */
    ICLRMemoryNotificationCallback_AddRef(pCallback);
    m->callback = pCallback;
    return S_OK;
}

static HRESULT STDMETHODCALLTYPE mgr_NeedsVirtualAddressSpace(IHostMemoryManager *This, LPVOID start, SIZE_T size)
{
    (void)This, (void)start, (void)size;
    return S_OK;
}

static HRESULT STDMETHODCALLTYPE mgr_AcquiredVirtualAddressSpace(IHostMemoryManager *This, LPVOID start, SIZE_T size)
{
    (void)This, (void)start, (void)size;
    return S_OK;
}

static HRESULT STDMETHODCALLTYPE mgr_ReleasedVirtualAddressSpace(IHostMemoryManager *This, LPVOID start)
{
    (void)This, (void)start;
    return S_OK;
}

/* ---- A heap on malloc, remembering its live blocks so that foreign pointers and double frees are refused ------ */
typedef struct block {
    struct block *next;
    max_align_t payload[]; /* what Alloc hands out */
} block;

typedef struct heap {
    IHostMalloc iface;
    atomic_int refs;
    pthread_mutex_t lock;
    block *live;
} heap;

static heap *impl_from_heap(IHostMalloc *iface) { return HM_CONTAINER_OF(iface, heap, iface); }

static HRESULT STDMETHODCALLTYPE heap_QueryInterface(IHostMalloc *This, REFIID riid, void **ppv)
{
    if (!ppv)
        return E_POINTER;
    *ppv = NULL;
    if (!IsEqualIID(riid, &IID_IUnknown) && !IsEqualIID(riid, &IID_IHostMalloc))
        return E_NOINTERFACE;
    IHostMalloc_AddRef(This);
    *ppv = This;
    return S_OK;
}

static ULONG STDMETHODCALLTYPE heap_AddRef(IHostMalloc *This)
{
    return (ULONG)atomic_fetch_add(&impl_from_heap(This)->refs, 1) + 1;
}

static ULONG STDMETHODCALLTYPE heap_Release(IHostMalloc *This)
{
    heap *h = impl_from_heap(This);
    ULONG left = (ULONG)atomic_fetch_sub(&h->refs, 1) - 1;
    if (left == 0) {
        while (h->live) {
            block *b = h->live;
            h->live = b->next;
            free(b);
        }
        pthread_mutex_destroy(&h->lock);
        free(h);
    }
    return left;
}

static HRESULT STDMETHODCALLTYPE heap_Alloc(IHostMalloc *This, SIZE_T cbSize, EMemoryCriticalLevel eCriticalLevel,
                                            void **ppMem)
{
    heap *h = impl_from_heap(This);
    (void)eCriticalLevel;
    if (!ppMem)
        return E_POINTER;
    *ppMem = NULL;
    if (cbSize > ((SIZE_T)1 << 40))
        return E_OUTOFMEMORY;
    block *b = malloc(sizeof *b + cbSize);
    if (!b)
        return E_OUTOFMEMORY;
    pthread_mutex_lock(&h->lock);
    b->next = h->live;
    h->live = b;
    pthread_mutex_unlock(&h->lock);
    *ppMem = b->payload;
    return S_OK;
}

static HRESULT STDMETHODCALLTYPE heap_DebugAlloc(IHostMalloc *This, SIZE_T cbSize,
                                                 EMemoryCriticalLevel eCriticalLevel, char *pszFileName, int iLineNo,
                                                 void **ppMem)
{
    (void)pszFileName, (void)iLineNo;
    return heap_Alloc(This, cbSize, eCriticalLevel, ppMem);
}

static HRESULT STDMETHODCALLTYPE heap_Free(IHostMalloc *This, void *pMem)
{
    heap *h = impl_from_heap(This);
    if (!pMem)
        return S_OK;
    pthread_mutex_lock(&h->lock);
    for (block **pp = &h->live; *pp; pp = &(*pp)->next)
        if ((void *)(*pp)->payload == pMem) {
            block *b = *pp;
            *pp = b->next;
            pthread_mutex_unlock(&h->lock);
            free(b);
            return S_OK;
        }
    pthread_mutex_unlock(&h->lock);
    return HOST_E_INVALIDOPERATION; /* not a live block of this heap */
}

static const IHostMallocVtbl heap_vtbl = {
    heap_QueryInterface, heap_AddRef, heap_Release, heap_Alloc, heap_DebugAlloc, heap_Free,
};

static HRESULT STDMETHODCALLTYPE mgr_CreateMalloc(IHostMemoryManager *This, DWORD dwMallocType,
                                                  IHostMalloc **ppMalloc)
{
    (void)This;
    if (!ppMalloc)
        return E_POINTER;
    *ppMalloc = NULL;
    if (dwMallocType & ~(DWORD)(MALLOC_THREADSAFE | MALLOC_EXECUTABLE))
        return E_INVALIDARG;
    heap *h = calloc(1, sizeof *h);
    if (!h)
        return E_OUTOFMEMORY;
    h->iface.lpVtbl = &heap_vtbl;
    atomic_init(&h->refs, 1);
    pthread_mutex_init(&h->lock, NULL);
    *ppMalloc = &h->iface;
    return S_OK;
}

/* IUnknown's three first, then the IDL's order (contract.h). */
static const IHostMemoryManagerVtbl manager_vtbl = {
    mgr_QueryInterface,
    mgr_AddRef,
    mgr_Release,
    mgr_CreateMalloc,
    mgr_VirtualAlloc,
    mgr_VirtualFree,
    mgr_VirtualQuery,
    mgr_VirtualProtect,
    mgr_GetMemoryLoad,
    mgr_RegisterMemoryNotificationCallback,
    mgr_NeedsVirtualAddressSpace,
    mgr_AcquiredVirtualAddressSpace,
    mgr_ReleasedVirtualAddressSpace,
};

/* ---- The factory hostmem's tools load (dlsym "HostMemCreateManager") ---------------------------------------- */
__attribute__((visibility("default"))) HRESULT HostMemCreateManager(const char *options, IHostMemoryManager **pp)
{
    if (!pp)
        return E_POINTER;
    *pp = NULL;
    if (options && *options)
        return E_INVALIDARG; /* no options yet */
    manager *m = calloc(1, sizeof *m);
    if (!m)
        return E_OUTOFMEMORY;
    m->iface.lpVtbl = &manager_vtbl;
    atomic_init(&m->refs, 1);
    *pp = &m->iface;
    return S_OK;
}

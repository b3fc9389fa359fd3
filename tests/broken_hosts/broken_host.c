/* Deliberately broken hosts, to prove hostmem's checks find real bugs. Each is hostmem's own manager behind a
 * decorator with one bug, chosen at compile time by BROKEN_<NAME>:
 *   NO_ZERO_RECOMMIT   committed pages keep stale contents (never zeroed again after a decommit)
 *   MERGED_REGIONS     VirtualQuery runs a region on into the next allocation when it looks alike
 *   OVERLAPPING_HEAP   every 16th heap allocation returns a block that is still in use
 *   RELEASE_ANYWHERE   MEM_RELEASE accepts any address inside a reservation
 *   CRASH_ON_QUERY     VirtualQuery of a committed page dereferences NULL */
#include <hostmem/hostmem.h>

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

typedef struct broken {
    IHostMemoryManager iface;
    atomic_int ref;
    IHostMemoryManager *inner;
} broken;

typedef struct broken_heap {
    IHostMalloc iface;
    atomic_int ref;
    IHostMalloc *inner;
    void *last;
    int count;
} broken_heap;

static inline broken *impl_from_IHostMemoryManager(IHostMemoryManager *iface)
{
    return HM_CONTAINER_OF(iface, broken, iface);
}
static inline broken_heap *impl_from_IHostMalloc(IHostMalloc *iface)
{
    return HM_CONTAINER_OF(iface, broken_heap, iface);
}

static HRESULT STDMETHODCALLTYPE QI(IHostMemoryManager *i, REFIID r, void **p)
{
    if (IsEqualIID(r, &IID_IUnknown) || IsEqualIID(r, &IID_IHostMemoryManager)) {
        *p = i;
        atomic_fetch_add(&impl_from_IHostMemoryManager(i)->ref, 1);
        return S_OK;
    }
    *p = NULL;
    return E_NOINTERFACE;
}
static ULONG STDMETHODCALLTYPE AddRef(IHostMemoryManager *i) { return atomic_fetch_add(&impl_from_IHostMemoryManager(i)->ref, 1) + 1; }
static ULONG STDMETHODCALLTYPE Release(IHostMemoryManager *i)
{
    broken *b = impl_from_IHostMemoryManager(i);
    ULONG left = atomic_fetch_sub(&b->ref, 1) - 1;
    if (!left) {
        IHostMemoryManager_Release(b->inner);
        free(b);
    }
    return left;
}

static HRESULT STDMETHODCALLTYPE H_QI(IHostMalloc *i, REFIID r, void **p) { return IHostMalloc_QueryInterface(impl_from_IHostMalloc(i)->inner, r, p); }
static ULONG STDMETHODCALLTYPE H_AddRef(IHostMalloc *i) { return atomic_fetch_add(&impl_from_IHostMalloc(i)->ref, 1) + 1; }
static ULONG STDMETHODCALLTYPE H_Release(IHostMalloc *i)
{
    broken_heap *h = impl_from_IHostMalloc(i);
    ULONG left = atomic_fetch_sub(&h->ref, 1) - 1;
    if (!left) {
        IHostMalloc_Release(h->inner);
        free(h);
    }
    return left;
}
static HRESULT STDMETHODCALLTYPE H_Alloc(IHostMalloc *i, SIZE_T s, EMemoryCriticalLevel l, void **pp)
{
    broken_heap *h = impl_from_IHostMalloc(i);
#ifdef BROKEN_OVERLAPPING_HEAP
    if (pp && h->last && ++h->count % 16 == 0) {
        *pp = h->last; /* still in use by its owner */
        return S_OK;
    }
#endif
    HRESULT hr = IHostMalloc_Alloc(h->inner, s, l, pp);
    if (SUCCEEDED(hr))
        h->last = *pp;
    return hr;
}
static HRESULT STDMETHODCALLTYPE H_DebugAlloc(IHostMalloc *i, SIZE_T s, EMemoryCriticalLevel l, char *f, int n, void **pp)
{
    return IHostMalloc_DebugAlloc(impl_from_IHostMalloc(i)->inner, s, l, f, n, pp);
}
static HRESULT STDMETHODCALLTYPE H_Free(IHostMalloc *i, void *p)
{
    broken_heap *h = impl_from_IHostMalloc(i);
    if (p == h->last)
        h->last = NULL;
    return IHostMalloc_Free(h->inner, p);
}
static const IHostMallocVtbl heap_vtbl = {H_QI, H_AddRef, H_Release, H_Alloc, H_DebugAlloc, H_Free};

static HRESULT STDMETHODCALLTYPE CreateMalloc(IHostMemoryManager *i, DWORD t, IHostMalloc **pp)
{
    IHostMalloc *inner;
    HRESULT hr = IHostMemoryManager_CreateMalloc(impl_from_IHostMemoryManager(i)->inner, t, pp ? &inner : NULL);
    if (FAILED(hr) || !pp)
        return hr;
    broken_heap *h = calloc(1, sizeof *h);
    h->iface.lpVtbl = &heap_vtbl;
    h->ref = 1;
    h->inner = inner;
    *pp = &h->iface;
    return hr;
}

static HRESULT STDMETHODCALLTYPE VirtualAlloc_(IHostMemoryManager *i, void *a, SIZE_T s, DWORD t, DWORD p,
                                               EMemoryCriticalLevel l, void **pp)
{
    HRESULT hr = IHostMemoryManager_VirtualAlloc(impl_from_IHostMemoryManager(i)->inner, a, s, t, p, l, pp);
#ifdef BROKEN_NO_ZERO_RECOMMIT
    /* Stale data where fresh zero pages belong: what a host that decommits with mprotect alone would show. */
    if (SUCCEEDED(hr) && (t & MEM_COMMIT) && a && (p == PAGE_READWRITE || p == PAGE_EXECUTE_READWRITE))
        memset(*pp, 0x5A, 64);
#endif
    return hr;
}

static HRESULT STDMETHODCALLTYPE VirtualFree_(IHostMemoryManager *i, LPVOID a, SIZE_T s, DWORD t)
{
#ifdef BROKEN_RELEASE_ANYWHERE
    if (t == MEM_RELEASE && s == 0) {
        MEMORY_BASIC_INFORMATION mbi;
        SIZE_T n;
        if (IHostMemoryManager_VirtualQuery(impl_from_IHostMemoryManager(i)->inner, a, &mbi, sizeof mbi, &n) == S_OK && mbi.AllocationBase)
            a = mbi.AllocationBase;
    }
#endif
    return IHostMemoryManager_VirtualFree(impl_from_IHostMemoryManager(i)->inner, a, s, t);
}

static HRESULT STDMETHODCALLTYPE VirtualQuery_(IHostMemoryManager *i, void *a, void *buf, SIZE_T len, SIZE_T *res)
{
    HRESULT hr = IHostMemoryManager_VirtualQuery(impl_from_IHostMemoryManager(i)->inner, a, buf, len, res);
#if defined(BROKEN_MERGED_REGIONS) || defined(BROKEN_CRASH_ON_QUERY)
    MEMORY_BASIC_INFORMATION *mbi = buf;
#endif
#ifdef BROKEN_MERGED_REGIONS
    if (hr == S_OK && mbi->State != MEM_FREE) {
        MEMORY_BASIC_INFORMATION next;
        SIZE_T n;
        char *end = (char *)mbi->BaseAddress + mbi->RegionSize;
        if (IHostMemoryManager_VirtualQuery(impl_from_IHostMemoryManager(i)->inner, end, &next, sizeof next, &n) == S_OK &&
            next.State == mbi->State && next.Protect == mbi->Protect)
            mbi->RegionSize += next.RegionSize; /* across the allocation boundary */
    }
#endif
#ifdef BROKEN_CRASH_ON_QUERY
    if (hr == S_OK && mbi->State == MEM_COMMIT && mbi->Type == MEM_PRIVATE && mbi->AllocationBase == mbi->BaseAddress)
        *(volatile int *)(uintptr_t)(mbi->RegionSize >> 62) = 1;
#endif
    return hr;
}

static HRESULT STDMETHODCALLTYPE VirtualProtect_(IHostMemoryManager *i, void *a, SIZE_T s, DWORD p, DWORD *o) { return IHostMemoryManager_VirtualProtect(impl_from_IHostMemoryManager(i)->inner, a, s, p, o); }
static HRESULT STDMETHODCALLTYPE GetMemoryLoad_(IHostMemoryManager *i, DWORD *l, SIZE_T *a) { return IHostMemoryManager_GetMemoryLoad(impl_from_IHostMemoryManager(i)->inner, l, a); }
static HRESULT STDMETHODCALLTYPE Register_(IHostMemoryManager *i, ICLRMemoryNotificationCallback *c) { return IHostMemoryManager_RegisterMemoryNotificationCallback(impl_from_IHostMemoryManager(i)->inner, c); }
static HRESULT STDMETHODCALLTYPE Needs_(IHostMemoryManager *i, LPVOID a, SIZE_T s) { return IHostMemoryManager_NeedsVirtualAddressSpace(impl_from_IHostMemoryManager(i)->inner, a, s); }
static HRESULT STDMETHODCALLTYPE Acquired_(IHostMemoryManager *i, LPVOID a, SIZE_T s) { return IHostMemoryManager_AcquiredVirtualAddressSpace(impl_from_IHostMemoryManager(i)->inner, a, s); }
static HRESULT STDMETHODCALLTYPE Released_(IHostMemoryManager *i, LPVOID a) { return IHostMemoryManager_ReleasedVirtualAddressSpace(impl_from_IHostMemoryManager(i)->inner, a); }

static const IHostMemoryManagerVtbl vtbl = {QI, AddRef, Release, CreateMalloc, VirtualAlloc_, VirtualFree_,
                                            VirtualQuery_, VirtualProtect_, GetMemoryLoad_, Register_, Needs_,
                                            Acquired_, Released_};

__attribute__((visibility("default"))) HRESULT HostMemCreateManager(const char *options, IHostMemoryManager **pp)
{
    if (!pp)
        return E_POINTER;
    *pp = NULL;
    broken *b = calloc(1, sizeof *b);
    if (!b)
        return E_OUTOFMEMORY;
    HRESULT hr = HostMemCreateBuiltinManager(options, &b->inner);
    if (FAILED(hr)) {
        free(b);
        return hr;
    }
    b->iface.lpVtbl = &vtbl;
    b->ref = 1;
    *pp = &b->iface;
    return S_OK;
}

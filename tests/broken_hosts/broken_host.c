/* Deliberately broken hosts, to prove hostmem's checks find real bugs. Each is hostmem's own manager behind a
 * decorator with one bug, chosen at compile time by BROKEN_<NAME>:
 *   NO_ZERO_RECOMMIT   committed pages keep stale contents (never zeroed again after a decommit)
 *   DIRTY_PAGE         a reservation committed in the same call has a stale page (8 bytes in its 4th page): one
 *                      the harness never wrote, and not one an every-8th-page sample reads
 *   MERGED_REGIONS     VirtualQuery runs a region on into the next allocation when it looks alike
 *   OVERLAPPING_HEAP   every 16th heap allocation returns a block that is still in use
 *   RELEASE_ANYWHERE   MEM_RELEASE accepts any address inside a reservation
 *   CRASH_ON_QUERY     VirtualQuery of a committed page dereferences NULL
 *   MISALIGNED         heap blocks (Alloc and DebugAlloc) are 8-byte aligned, not 16
 *   SHORT_BLOCK        a size class rounds down: a block of 4 KiB+1 .. 8 KiB gets only 4 KiB
 *   SIZE_WRAP          Alloc adds its 16-byte header without checking: Alloc(SIZE_MAX - 8) wraps to a small block
 *   RACY_HEAP          a cache of small blocks in front of the heap, a stack with no lock (check, then act), even
 *                      under MALLOC_THREADSAFE: two threads popping at once get the same block
 *   PROT_TABLE         PAGE_EXECUTE_WRITECOPY (refused by Windows for private memory) is taken as
 *                      PAGE_EXECUTE_READWRITE, in VirtualAlloc and VirtualProtect alike
 *   OLD_PROTECT        VirtualProtect's old protection drops PAGE_WRITECOMBINE (as a host that knows only
 *                      PAGE_NOCACHE would); VirtualQuery still reports it
 *   BAD_REFCOUNT       Release (of the manager and of its heaps) returns 0 whatever the count; AddRef is right
 *   LOOSE_CODES        every failing VirtualFree answers E_FAIL instead of Windows' code
 *   LOCK_IN_CALLBACK   every call holds one non-recursive mutex, also while the manager inside notifies: a callback
 *                      that calls back into the host (VirtualQuery, GetMemoryLoad) deadlocks
 *   LEAKY              keeps its own commit accounting (VirtualAlloc commits, heap Allocs) and never gives any back on
 *                      decommit, release or Free: past LEAKY_LIMIT it refuses with E_OUTOFMEMORY although its
 *                      GetMemoryLoad (the manager inside) still reports the bytes available */
#include <hostmem/hostmem.h>

#ifdef BROKEN_LOCK_IN_CALLBACK
#include <pthread.h>
static pthread_mutex_t host_lock = PTHREAD_MUTEX_INITIALIZER; /* the default kind: relocking it never returns */
#define LOCKED(call)                                                                                              \
    do {                                                                                                          \
        pthread_mutex_lock(&host_lock);                                                                           \
        HRESULT hr_ = (call);                                                                                     \
        pthread_mutex_unlock(&host_lock);                                                                         \
        return hr_;                                                                                               \
    } while (0)
#define LOCKED_INTO(hr, call)                                                                                     \
    do {                                                                                                          \
        pthread_mutex_lock(&host_lock);                                                                           \
        hr = (call);                                                                                              \
        pthread_mutex_unlock(&host_lock);                                                                         \
    } while (0)
#else
#define LOCKED(call) return (call)
#define LOCKED_INTO(hr, call) hr = (call)
#endif

#ifdef BROKEN_LEAKY
#include <stdatomic.h>
#include <stdint.h>
#define LEAKY_LIMIT ((uint64_t)32 << 20)
static _Atomic uint64_t leaky_charged; /* only ever grows */
static int leaky_charge(SIZE_T bytes)
{
    uint64_t now = atomic_fetch_add(&leaky_charged, bytes) + bytes;
    if (now > LEAKY_LIMIT) {
        atomic_fetch_sub(&leaky_charged, bytes);
        return 0;
    }
    return 1;
}
#endif

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct broken {
    IHostMemoryManager iface;
    atomic_int ref;
    IHostMemoryManager *inner;
} broken;

#define RACY_CACHE_SLOTS 1024
#define RACY_BLOCK 256 /* the size every small block gets, so any cached block serves any small request */
#define RACY_HEADER 16 /* before each block: 0 large, 1 small and live, 2 small and in the cache */

typedef struct broken_heap {
    IHostMalloc iface;
    atomic_int ref;
    IHostMalloc *inner;
    void *last;
    int count;
#ifdef BROKEN_RACY_HEAP
    /* Each access is atomic, but a pop is a load of top, a load of the slot, a store of top: two threads that load
     * the same top both take the same block. */
    _Atomic(void *) cache[RACY_CACHE_SLOTS];
    atomic_int top;
#endif
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
#ifdef BROKEN_BAD_REFCOUNT
    return 0; /* "nobody reads it" */
#endif
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
#ifdef BROKEN_BAD_REFCOUNT
    return 0;
#endif
    return left;
}
static HRESULT STDMETHODCALLTYPE H_Alloc(IHostMalloc *i, SIZE_T s, EMemoryCriticalLevel l, void **pp)
{
    broken_heap *h = impl_from_IHostMalloc(i);
#ifdef BROKEN_LEAKY
    if (pp && !leaky_charge(s)) {
        *pp = NULL;
        return E_OUTOFMEMORY;
    }
#endif
#ifdef BROKEN_OVERLAPPING_HEAP
    if (pp && h->last && ++h->count % 16 == 0) {
        *pp = h->last; /* still in use by its owner */
        return S_OK;
    }
#endif
#ifdef BROKEN_MISALIGNED
    if (pp && s <= SIZE_MAX - 8) { /* 8 bytes past a 16-aligned block */
        HRESULT hr = IHostMalloc_Alloc(h->inner, s + 8, l, pp);
        if (SUCCEEDED(hr))
            *pp = (char *)*pp + 8;
        return hr;
    }
#endif
#ifdef BROKEN_SHORT_BLOCK
    if (s > 4096 && s <= 8192)
        s = 4096;
#endif
#ifdef BROKEN_SIZE_WRAP
    if (pp) { /* a header in front of the block, its size added without an overflow check */
        HRESULT hr = IHostMalloc_Alloc(h->inner, s + 16, l, pp);
        if (SUCCEEDED(hr))
            *pp = (char *)*pp + 16;
        return hr;
    }
#endif
#ifdef BROKEN_RACY_HEAP
    if (pp && (unsigned)l <= eProcessCritical) {
        if (s <= RACY_BLOCK) {
            int top = atomic_load_explicit(&h->top, memory_order_acquire);
            if (top > 0) {
                void *p = atomic_load_explicit(&h->cache[top - 1], memory_order_relaxed);
                atomic_store_explicit(&h->top, top - 1, memory_order_release);
                *(size_t *)((char *)p - RACY_HEADER) = 1;
                *pp = p;
                return S_OK;
            }
        }
        size_t want = s <= RACY_BLOCK ? RACY_BLOCK : s;
        if (want > SIZE_MAX - RACY_HEADER)
            return IHostMalloc_Alloc(h->inner, s, l, pp);
        HRESULT hr = IHostMalloc_Alloc(h->inner, want + RACY_HEADER, l, pp);
        if (SUCCEEDED(hr)) {
            *(size_t *)*pp = s <= RACY_BLOCK;
            *pp = (char *)*pp + RACY_HEADER;
        }
        return hr;
    }
#endif
    HRESULT hr = IHostMalloc_Alloc(h->inner, s, l, pp);
#ifdef BROKEN_OVERLAPPING_HEAP
    if (SUCCEEDED(hr))
        h->last = *pp; /* only this host's bug needs it: elsewhere it would be a race of the test host's own (TSan) */
#endif
    return hr;
}
static HRESULT STDMETHODCALLTYPE H_DebugAlloc(IHostMalloc *i, SIZE_T s, EMemoryCriticalLevel l, char *f, int n, void **pp)
{
#if defined(BROKEN_MISALIGNED) || defined(BROKEN_SIZE_WRAP) || defined(BROKEN_RACY_HEAP)
    (void)f, (void)n;
    return H_Alloc(i, s, l, pp); /* the same blocks, so Free can tell them apart */
#else
    return IHostMalloc_DebugAlloc(impl_from_IHostMalloc(i)->inner, s, l, f, n, pp);
#endif
}
static HRESULT STDMETHODCALLTYPE H_Free(IHostMalloc *i, void *p)
{
    broken_heap *h = impl_from_IHostMalloc(i);
#ifdef BROKEN_MISALIGNED
    if (p && (uintptr_t)p % 16 == 8)
        p = (char *)p - 8;
#endif
#ifdef BROKEN_SIZE_WRAP
    if (p && (uintptr_t)p % 16 == 0)
        p = (char *)p - 16;
#endif
#ifdef BROKEN_RACY_HEAP
    if (p && (uintptr_t)p % 16 == 0) {
        char *raw = (char *)p - RACY_HEADER;
        if (*(size_t *)raw == 2)
            return HOST_E_INVALIDOPERATION; /* already in the cache: a double free */
        if (*(size_t *)raw == 1) {
            *(size_t *)raw = 2;
            int top = atomic_load_explicit(&h->top, memory_order_acquire);
            if (top < RACY_CACHE_SLOTS) {
                atomic_store_explicit(&h->cache[top], p, memory_order_relaxed);
                atomic_store_explicit(&h->top, top + 1, memory_order_release);
                return S_OK;
            }
        }
        p = raw;
    }
#endif
#ifdef BROKEN_OVERLAPPING_HEAP
    if (p == h->last)
        h->last = NULL;
#endif
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
#ifdef BROKEN_PROT_TABLE
    if ((p & 0xFFu) == PAGE_EXECUTE_WRITECOPY)
        p = (p & ~0xFFu) | PAGE_EXECUTE_READWRITE;
#endif
#ifdef BROKEN_LEAKY
    if ((t & MEM_COMMIT) && pp && !leaky_charge(s)) {
        *pp = NULL;
        return E_OUTOFMEMORY;
    }
#endif
#ifdef BROKEN_LOCK_IN_CALLBACK
    pthread_mutex_lock(&host_lock); /* held while the manager inside notifies the callbacks */
#endif
    HRESULT hr = IHostMemoryManager_VirtualAlloc(impl_from_IHostMemoryManager(i)->inner, a, s, t, p, l, pp);
#ifdef BROKEN_LOCK_IN_CALLBACK
    pthread_mutex_unlock(&host_lock);
#endif
#ifdef BROKEN_DIRTY_PAGE
    /* Pages from a cache of released ones, handed out again without being cleared: a reservation committed in the
     * same call gets a 4th page (index 3) holding 8 stale bytes. */
    if (SUCCEEDED(hr) && (t & MEM_RESERVE) && (t & MEM_COMMIT) && s > 3 * 0x1000 &&
        (p == PAGE_READWRITE || p == PAGE_EXECUTE_READWRITE))
        *(volatile unsigned long long *)((char *)*pp + 3 * 0x1000) = 0x5A5A5A5A5A5A5A5Aull;
#endif
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
    HRESULT hr;
    LOCKED_INTO(hr, IHostMemoryManager_VirtualFree(impl_from_IHostMemoryManager(i)->inner, a, s, t));
#ifdef BROKEN_LOOSE_CODES
    if (FAILED(hr))
        hr = E_FAIL;
#endif
    return hr;
}

static HRESULT STDMETHODCALLTYPE VirtualQuery_(IHostMemoryManager *i, void *a, void *buf, SIZE_T len, SIZE_T *res)
{
#ifdef BROKEN_LOCK_IN_CALLBACK
    LOCKED(IHostMemoryManager_VirtualQuery(impl_from_IHostMemoryManager(i)->inner, a, buf, len, res));
#endif
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

static HRESULT STDMETHODCALLTYPE VirtualProtect_(IHostMemoryManager *i, void *a, SIZE_T s, DWORD p, DWORD *o)
{
#ifdef BROKEN_PROT_TABLE
    if ((p & 0xFFu) == PAGE_EXECUTE_WRITECOPY)
        p = (p & ~0xFFu) | PAGE_EXECUTE_READWRITE;
#endif
    HRESULT hr = IHostMemoryManager_VirtualProtect(impl_from_IHostMemoryManager(i)->inner, a, s, p, o);
#ifdef BROKEN_OLD_PROTECT
    if (hr == S_OK)
        *o &= ~(DWORD)PAGE_WRITECOMBINE;
#endif
    return hr;
}
static HRESULT STDMETHODCALLTYPE GetMemoryLoad_(IHostMemoryManager *i, DWORD *l, SIZE_T *a) { LOCKED(IHostMemoryManager_GetMemoryLoad(impl_from_IHostMemoryManager(i)->inner, l, a)); }
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

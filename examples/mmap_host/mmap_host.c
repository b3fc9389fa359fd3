/* An example host for the CLR hosting memory contract, built on plain mmap, for people writing their own.
 *
 * It includes only <hostmem/contract.h> (the types, the COM binding, the IIDs; no hostmem library is linked) and
 * exports the factory every hostmem tool loads:  hostmem conform --host ./libhostmem_example_mmap.so
 * It keeps things simple on purpose: a list of reservations, each with its pages' states as runs (so its books
 * grow with what is committed, not with the size reserved), one mutex, a malloc-backed heap. hostmem's built-in
 * manager (src/) does the same job at scale. */
/* This file defines the IIDs it compares against (HM_DEFINE_GUID in contract.h). */
#define HOSTMEM_INITGUID
#include <hostmem/contract.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

#define PAGE 4096u
#define GRANULE 65536u
#define TOP ((uintptr_t)0x7ffffffff000)
#define E_INVALID_PARAMETER HRESULT_FROM_WIN32(ERROR_INVALID_PARAMETER)
#define E_INVALID_ADDRESS HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS)

/* ---- Reservations ---------------------------------------------------------------------------------------------- */

/* The pages' states are kept as runs: run k covers pages [run[k].first, run[k + 1].first) (the last one up to the
 * end) in one state, 0 = reserved, else the committed protection. Runs start at page 0, are sorted, and neighbours
 * differ. So the books grow with the number of commits and protections, not with the reservation's size (a 1 TiB
 * reservation is one run, not 256 Mi pages), and VirtualQuery's region is one run. */
typedef struct run {
    size_t first;
    DWORD state;
} run;

typedef struct reservation {
    uintptr_t base;
    size_t pages;
    DWORD alloc_protect;
    run *runs;
    size_t nruns, cap;
    struct reservation *next;
} reservation;

typedef struct host {
    IHostMemoryManager iface;
    atomic_int ref;
    pthread_mutex_t lock;
    reservation *list;
    ICLRMemoryNotificationCallback *callbacks[8];
    int ncallbacks;
    struct { uintptr_t start; size_t size; } ledger[64];
    int nledger;
} host;

static inline host *impl_from_IHostMemoryManager(IHostMemoryManager *iface)
{
    return HM_CONTAINER_OF(iface, host, iface);
}

/* The run that holds page p. */
static size_t run_of(const reservation *r, size_t p)
{
    size_t k = 0;
    while (k + 1 < r->nruns && r->runs[k + 1].first <= p)
        k++;
    return k;
}

static size_t run_end(const reservation *r, size_t k) { return k + 1 < r->nruns ? r->runs[k + 1].first : r->pages; }

static DWORD state_of(const reservation *r, size_t p) { return r->runs[run_of(r, p)].state; }

/* Whether every page of [first, end) is committed. */
static bool all_committed(const reservation *r, size_t first, size_t end)
{
    for (size_t k = run_of(r, first); k < r->nruns && r->runs[k].first < end; k++)
        if (!r->runs[k].state)
            return false;
    return true;
}

/* A change adds at most two runs: room for them is made before the change, so that it cannot fail halfway. */
static bool room_for_change(reservation *r)
{
    if (r->nruns + 2 <= r->cap)
        return true;
    size_t cap = r->cap * 2 + 2;
    run *more = realloc(r->runs, cap * sizeof *more);
    if (!more)
        return false;
    r->runs = more;
    r->cap = cap;
    return true;
}

/* Pages [first, end) to state (room_for_change first): the runs starting inside are replaced by one run of state
 * and, unless end is the reservation's end, one run from end on in the state page end had; then equal neighbours
 * are merged. */
static void set_state(reservation *r, size_t first, size_t end, DWORD state)
{
    size_t lo = 0, hi;
    while (lo < r->nruns && r->runs[lo].first < first)
        lo++;
    for (hi = lo; hi < r->nruns && r->runs[hi].first <= end; hi++)
        ;
    run replace[2] = {{first, state}, {end, end < r->pages ? state_of(r, end) : 0}};
    size_t add = end < r->pages ? 2 : 1;
    memmove(&r->runs[lo + add], &r->runs[hi], (r->nruns - hi) * sizeof *r->runs);
    memcpy(&r->runs[lo], replace, add * sizeof *r->runs);
    r->nruns = r->nruns - (hi - lo) + add;
    size_t kept = 1;
    for (size_t k = 1; k < r->nruns; k++)
        if (r->runs[k].state != r->runs[kept - 1].state)
            r->runs[kept++] = r->runs[k];
    r->nruns = kept;
}

static reservation *find(host *h, uintptr_t a)
{
    for (reservation *r = h->list; r; r = r->next)
        if (a >= r->base && a < r->base + r->pages * PAGE)
            return r;
    return NULL;
}

/* Whether [a, b) touches a reservation, counting the whole 64 KiB granules a reservation starts in. */
static bool taken(host *h, uintptr_t a, uintptr_t b)
{
    for (reservation *r = h->list; r; r = r->next) {
        uintptr_t end = (r->base + r->pages * PAGE + GRANULE - 1) & ~(uintptr_t)(GRANULE - 1);
        if (a < end && r->base < b)
            return true;
    }
    return false;
}

/* The pages [*first, *end) that [address, address + size) touches; false when the range wraps around the address
 * space (a size near SIZE_MAX would otherwise round to a small or empty range). */
static bool page_range(uintptr_t address, size_t size, uintptr_t *first, uintptr_t *end)
{
    if (size > UINTPTR_MAX - address || address + size > UINTPTR_MAX - (PAGE - 1))
        return false;
    *first = address & ~(uintptr_t)(PAGE - 1);
    *end = (address + size + PAGE - 1) & ~(uintptr_t)(PAGE - 1);
    return true;
}

static bool valid_protect(DWORD p)
{
    DWORD base = p & 0xFF, mods = p & ~0xFFu;
    if (mods & ~(DWORD)(PAGE_GUARD | PAGE_NOCACHE | PAGE_WRITECOMBINE))
        return false;
    if (base != PAGE_NOACCESS && base != PAGE_READONLY && base != PAGE_READWRITE && base != PAGE_EXECUTE &&
        base != PAGE_EXECUTE_READ && base != PAGE_EXECUTE_READWRITE)
        return false;
    if (mods & (mods - 1))
        return false; /* PAGE_GUARD, PAGE_NOCACHE and PAGE_WRITECOMBINE exclude each other (Windows' documentation) */
    return !(base == PAGE_NOACCESS && mods);
}

static int unix_prot(DWORD p)
{
    if (p & PAGE_GUARD)
        return PROT_NONE; /* this example does not emulate guard trips: the page just faults */
    switch (p & 0xFF) {
    case PAGE_READONLY: return PROT_READ;
    case PAGE_READWRITE: return PROT_READ | PROT_WRITE;
    case PAGE_EXECUTE:
    case PAGE_EXECUTE_READ: return PROT_READ | PROT_EXEC;
    case PAGE_EXECUTE_READWRITE: return PROT_READ | PROT_WRITE | PROT_EXEC;
    default: return PROT_NONE;
    }
}

static HRESULT reserve_at(host *h, uintptr_t base, size_t pages, DWORD protect, bool top_down, reservation **out)
{
    size_t bytes = pages * PAGE;
    void *p = MAP_FAILED;
    if (!base && top_down) {
        /* Linux places mappings top-down already, but each new one below the last: for MEM_TOP_DOWN, try the
         * granules above our highest reservation first. */
        uintptr_t high = 0;
        for (reservation *r = h->list; r; r = r->next)
            if (r->base + r->pages * PAGE > high)
                high = r->base + r->pages * PAGE;
        high = (high + GRANULE - 1) & ~(uintptr_t)(GRANULE - 1);
        /* Next to the highest reservation first, then further up in growing steps (other mappings, such as a
         * sanitizer's, may sit right above ours). */
        uintptr_t step = GRANULE;
        for (int attempt = 0; high && attempt < 96 && p == MAP_FAILED; attempt++, high += step) {
            if (attempt >= 16)
                step *= 2;
            if (high + bytes > TOP || high + bytes < high)
                break;
            p = mmap((void *)high, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE,
                     -1, 0);
            if (p != MAP_FAILED && (uintptr_t)p != high) {
                munmap(p, bytes);
                p = MAP_FAILED;
            }
        }
    }
    if (p != MAP_FAILED) {
        /* placed above */
    } else if (base) {
        if (taken(h, base, base + bytes))
            return E_INVALID_ADDRESS;
        p = mmap((void *)base, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
        if (p == MAP_FAILED || (uintptr_t)p != base) {
            if (p != MAP_FAILED)
                munmap(p, bytes);
            return errno == ENOMEM ? E_OUTOFMEMORY : E_INVALID_ADDRESS;
        }
    } else {
        /* mmap promises pages, Windows 64 KiB: map one granule more and trim both ends. */
        char *raw = mmap(NULL, bytes + GRANULE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (raw == MAP_FAILED)
            return E_OUTOFMEMORY;
        uintptr_t aligned = ((uintptr_t)raw + GRANULE - 1) & ~(uintptr_t)(GRANULE - 1);
        if (aligned > (uintptr_t)raw)
            munmap(raw, aligned - (uintptr_t)raw);
        size_t tail = (uintptr_t)raw + bytes + GRANULE - (aligned + bytes);
        if (tail)
            munmap((void *)(aligned + bytes), tail);
        p = (void *)aligned;
    }
    reservation *r = calloc(1, sizeof *r);
    run *runs = calloc(4, sizeof *runs); /* one run, reserved: {0, 0} */
    if (!r || !runs) {
        free(r);
        free(runs);
        munmap(p, bytes);
        return E_OUTOFMEMORY;
    }
    r->runs = runs;
    r->nruns = 1;
    r->cap = 4;
    r->base = (uintptr_t)p;
    r->pages = pages;
    r->alloc_protect = protect;
    r->next = h->list;
    h->list = r;
    *out = r;
    return S_OK;
}

static void drop(host *h, reservation *r)
{
    for (reservation **pp = &h->list; *pp; pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            break;
        }
    munmap((void *)r->base, r->pages * PAGE);
    free(r->runs);
    free(r);
}

/* ---- IHostMemoryManager ------------------------------------------------------------------------------------------ */

static HRESULT STDMETHODCALLTYPE VirtualAlloc_(IHostMemoryManager *i, void *address, SIZE_T size, DWORD type,
                                               DWORD protect, EMemoryCriticalLevel level, void **ppMem)
{
    host *h = impl_from_IHostMemoryManager(i);
    if (!ppMem)
        return E_POINTER;
    *ppMem = NULL;
    uintptr_t a = (uintptr_t)address;
    /* MEM_WRITE_WATCH is accepted with MEM_RESERVE, as Windows does; the contract has no GetWriteWatch, so there is
     * nothing to track. */
    const DWORD known = MEM_COMMIT | MEM_RESERVE | MEM_RESET | MEM_TOP_DOWN | MEM_WRITE_WATCH;
    if (size == 0 || (type & ~known) || (unsigned)level > eProcessCritical)
        return E_INVALID_PARAMETER;
    if ((type & MEM_WRITE_WATCH) && !(type & MEM_RESERVE))
        return E_INVALID_PARAMETER;
    if ((type & MEM_RESET) && type != MEM_RESET)
        return E_INVALID_PARAMETER;
    if (!(type & (MEM_COMMIT | MEM_RESERVE | MEM_RESET)))
        return E_INVALID_PARAMETER;
    if (type != MEM_RESET && !valid_protect(protect))
        return E_INVALID_PARAMETER;
    if (size > TOP || (a && (a < GRANULE || size > TOP - a)))
        return E_INVALID_PARAMETER;
    uintptr_t first = a & ~(uintptr_t)(PAGE - 1), end = (a + size + PAGE - 1) & ~(uintptr_t)(PAGE - 1);
    HRESULT hr = S_OK;
    pthread_mutex_lock(&h->lock);
    reservation *r = NULL;
    if ((type & MEM_RESERVE) || !a) {
        if (type == MEM_RESET) {
            hr = E_INVALID_ADDRESS;
            goto out;
        }
        uintptr_t base = a ? a & ~(uintptr_t)(GRANULE - 1) : 0;
        size_t pages = a ? (end - base) / PAGE : (size + PAGE - 1) / PAGE;
        hr = reserve_at(h, base, pages, protect, (type & MEM_TOP_DOWN) != 0, &r);
        if (FAILED(hr))
            goto out;
        first = r->base;
        end = r->base + pages * PAGE;
    } else {
        r = find(h, first);
        if (!r || end > r->base + r->pages * PAGE) {
            hr = E_INVALID_ADDRESS;
            goto out;
        }
    }
    if (type & MEM_COMMIT) {
        if (!room_for_change(r) || mprotect((void *)first, end - first, unix_prot(protect)) != 0) {
            hr = E_OUTOFMEMORY;
            if (type & MEM_RESERVE || !a)
                drop(h, r);
            goto out;
        }
        set_state(r, (first - r->base) / PAGE, (end - r->base) / PAGE,
                  protect & ~(DWORD)(PAGE_NOCACHE | PAGE_WRITECOMBINE));
    } else if (type == MEM_RESET) {
        madvise((void *)first, end - first, MADV_DONTNEED);
    }
    *ppMem = (void *)first;
out:
    pthread_mutex_unlock(&h->lock);
    return hr;
}

static HRESULT STDMETHODCALLTYPE VirtualFree_(IHostMemoryManager *i, LPVOID address, SIZE_T size, DWORD type)
{
    host *h = impl_from_IHostMemoryManager(i);
    if (type != MEM_DECOMMIT && type != MEM_RELEASE)
        return E_INVALID_PARAMETER;
    if (type == MEM_RELEASE && size)
        return E_INVALID_PARAMETER;
    uintptr_t first, end;
    if (!page_range((uintptr_t)address, size, &first, &end))
        return E_INVALID_PARAMETER;
    HRESULT hr = S_OK;
    pthread_mutex_lock(&h->lock);
    reservation *r = find(h, first);
    if (!r) {
        hr = E_INVALID_ADDRESS;
    } else if (type == MEM_RELEASE) {
        if (first != r->base)
            hr = E_INVALID_ADDRESS;
        else
            drop(h, r);
    } else {
        if (!size)
            end = r->base + r->pages * PAGE;
        if (!size && first != r->base)
            hr = E_INVALID_ADDRESS;
        else if (end > r->base + r->pages * PAGE)
            hr = E_INVALID_PARAMETER;
        else if (!room_for_change(r))
            hr = E_OUTOFMEMORY;
        else {
            /* A fresh PROT_NONE mapping drops the contents: the next commit reads zero. */
            mmap((void *)first, end - first, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
            set_state(r, (first - r->base) / PAGE, (end - r->base) / PAGE, 0);
        }
    }
    pthread_mutex_unlock(&h->lock);
    return hr;
}

static HRESULT STDMETHODCALLTYPE VirtualProtect_(IHostMemoryManager *i, void *address, SIZE_T size, DWORD protect,
                                                 DWORD *old)
{
    host *h = impl_from_IHostMemoryManager(i);
    if (!old)
        return E_POINTER;
    *old = PAGE_NOACCESS;
    if (!valid_protect(protect))
        return E_INVALID_PARAMETER;
    uintptr_t first, end;
    if (!page_range((uintptr_t)address, size, &first, &end))
        return E_INVALID_PARAMETER;
    bool empty = end == first;
    if (empty)
        end = first + PAGE;
    HRESULT hr = S_OK;
    pthread_mutex_lock(&h->lock);
    reservation *r = find(h, first);
    if (!r || end > r->base + r->pages * PAGE) {
        hr = E_INVALID_ADDRESS;
        goto out;
    }
    size_t p = (first - r->base) / PAGE, q = (end - r->base) / PAGE;
    if (!all_committed(r, p, q)) {
        hr = E_INVALID_ADDRESS;
        goto out;
    }
    if (!empty && !room_for_change(r)) {
        hr = E_OUTOFMEMORY;
        goto out;
    }
    *old = state_of(r, p) | (r->alloc_protect & (PAGE_NOCACHE | PAGE_WRITECOMBINE));
    if (!empty) {
        mprotect((void *)first, end - first, unix_prot(protect));
        set_state(r, p, q, protect & ~(DWORD)(PAGE_NOCACHE | PAGE_WRITECOMBINE));
    }
out:
    pthread_mutex_unlock(&h->lock);
    return hr;
}

/* Memory we do not own (the caller's stack, libraries) is described from /proc/self/maps. */
static bool describe_foreign(uintptr_t a, MEMORY_BASIC_INFORMATION *mbi)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return false;
    char line[512];
    uintptr_t next = TOP;
    bool found = false;
    while (fgets(line, sizeof line, f)) {
        unsigned long start, stop;
        char perms[5];
        char path[256] = "";
        if (sscanf(line, "%lx-%lx %4s %*s %*s %*s %255s", &start, &stop, perms, path) < 3)
            continue;
        if (a >= start && a < stop) {
            bool r = perms[0] == 'r', w = perms[1] == 'w', x = perms[2] == 'x';
            mbi->AllocationBase = (void *)start;
            mbi->RegionSize = stop - a;
            mbi->State = (r || w || x) ? MEM_COMMIT : MEM_RESERVE;
            mbi->Protect = x ? (w ? PAGE_EXECUTE_READWRITE : PAGE_EXECUTE_READ)
                             : w ? PAGE_READWRITE : r ? PAGE_READONLY : 0;
            mbi->AllocationProtect = mbi->Protect ? mbi->Protect : PAGE_NOACCESS;
            mbi->Type = path[0] == '/' ? (x ? MEM_IMAGE : MEM_MAPPED) : MEM_PRIVATE;
            found = true;
            break;
        }
        if (start > a && start < next)
            next = start;
    }
    fclose(f);
    if (!found) {
        mbi->State = MEM_FREE;
        mbi->Protect = PAGE_NOACCESS;
        mbi->RegionSize = next - a;
    }
    return true;
}

static HRESULT STDMETHODCALLTYPE VirtualQuery_(IHostMemoryManager *i, void *address, void *buffer, SIZE_T length,
                                               SIZE_T *result)
{
    host *h = impl_from_IHostMemoryManager(i);
    if (!result)
        return E_POINTER;
    *result = 0;
    if (!buffer)
        return E_POINTER;
    if (length < sizeof(MEMORY_BASIC_INFORMATION))
        return HRESULT_FROM_WIN32(ERROR_BAD_LENGTH);
    uintptr_t a = (uintptr_t)address & ~(uintptr_t)(PAGE - 1);
    if (a >= TOP)
        return E_INVALID_PARAMETER;
    MEMORY_BASIC_INFORMATION mbi;
    memset(&mbi, 0, sizeof mbi);
    mbi.BaseAddress = (void *)a;
    pthread_mutex_lock(&h->lock);
    reservation *r = find(h, a);
    if (r) {
        size_t p = (a - r->base) / PAGE, k = run_of(r, p);
        DWORD state = r->runs[k].state, cache = r->alloc_protect & (PAGE_NOCACHE | PAGE_WRITECOMBINE);
        mbi.AllocationBase = (void *)r->base;
        mbi.AllocationProtect = r->alloc_protect;
        mbi.RegionSize = (run_end(r, k) - p) * PAGE;
        mbi.State = state ? MEM_COMMIT : MEM_RESERVE;
        mbi.Protect = state ? state | cache : 0;
        mbi.Type = MEM_PRIVATE;
    } else {
        /* Free in our books: up to our next reservation, or whatever the process map says. */
        uintptr_t next = TOP;
        for (reservation *s = h->list; s; s = s->next)
            if (s->base > a && s->base < next)
                next = s->base;
        pthread_mutex_unlock(&h->lock);
        if (!describe_foreign(a, &mbi))
            return E_FAIL;
        if (mbi.State == MEM_FREE && a + mbi.RegionSize > next)
            mbi.RegionSize = next - a;
        pthread_mutex_lock(&h->lock);
    }
    pthread_mutex_unlock(&h->lock);
    memcpy(buffer, &mbi, sizeof mbi);
    *result = sizeof mbi;
    return S_OK;
}

/* ---- Heap: malloc, with every live block remembered so foreign pointers and double frees are refused ----------- */

typedef struct heap {
    IHostMalloc iface;
    atomic_int ref;
    pthread_mutex_t lock;
    void **live;
    size_t nlive, cap;
} heap;

static inline heap *impl_from_IHostMalloc(IHostMalloc *iface) { return HM_CONTAINER_OF(iface, heap, iface); }

static HRESULT STDMETHODCALLTYPE heap_QI(IHostMalloc *i, REFIID riid, void **ppv)
{
    if (!ppv)
        return E_POINTER;
    *ppv = NULL;
    if (!IsEqualIID(riid, &IID_IUnknown) && !IsEqualIID(riid, &IID_IHostMalloc))
        return E_NOINTERFACE;
    *ppv = i;
    atomic_fetch_add(&impl_from_IHostMalloc(i)->ref, 1);
    return S_OK;
}
static ULONG STDMETHODCALLTYPE heap_AddRef(IHostMalloc *i) { return atomic_fetch_add(&impl_from_IHostMalloc(i)->ref, 1) + 1; }
static ULONG STDMETHODCALLTYPE heap_Release(IHostMalloc *i)
{
    heap *hp = impl_from_IHostMalloc(i);
    ULONG left = atomic_fetch_sub(&hp->ref, 1) - 1;
    if (!left) {
        for (size_t k = 0; k < hp->nlive; k++)
            free(hp->live[k]);
        free(hp->live);
        pthread_mutex_destroy(&hp->lock);
        free(hp);
    }
    return left;
}
static HRESULT STDMETHODCALLTYPE heap_Alloc(IHostMalloc *i, SIZE_T size, EMemoryCriticalLevel level, void **pp)
{
    heap *hp = impl_from_IHostMalloc(i);
    if (!pp)
        return E_POINTER;
    *pp = NULL;
    if (size > ((size_t)1 << 40))
        return E_OUTOFMEMORY;
    void *p = malloc(size ? size : 1);
    if (!p)
        return E_OUTOFMEMORY;
    pthread_mutex_lock(&hp->lock);
    if (hp->nlive == hp->cap) {
        hp->cap = hp->cap ? hp->cap * 2 : 64;
        hp->live = realloc(hp->live, hp->cap * sizeof *hp->live);
    }
    hp->live[hp->nlive++] = p;
    pthread_mutex_unlock(&hp->lock);
    *pp = p;
    return S_OK;
}
static HRESULT STDMETHODCALLTYPE heap_DebugAlloc(IHostMalloc *i, SIZE_T size, EMemoryCriticalLevel level, char *file,
                                                 int line, void **pp)
{
    return heap_Alloc(i, size, level, pp);
}
static HRESULT STDMETHODCALLTYPE heap_Free(IHostMalloc *i, void *p)
{
    heap *hp = impl_from_IHostMalloc(i);
    if (!p)
        return S_OK;
    pthread_mutex_lock(&hp->lock);
    for (size_t k = 0; k < hp->nlive; k++)
        if (hp->live[k] == p) {
            hp->live[k] = hp->live[--hp->nlive];
            pthread_mutex_unlock(&hp->lock);
            free(p);
            return S_OK;
        }
    pthread_mutex_unlock(&hp->lock);
    return HOST_E_INVALIDOPERATION; /* not ours, or freed already */
}
static const IHostMallocVtbl heap_vtbl = {heap_QI, heap_AddRef, heap_Release, heap_Alloc, heap_DebugAlloc, heap_Free};

static HRESULT STDMETHODCALLTYPE CreateMalloc_(IHostMemoryManager *i, DWORD type, IHostMalloc **pp)
{
    if (!pp)
        return E_POINTER;
    *pp = NULL;
    if (type & ~(DWORD)(MALLOC_THREADSAFE | MALLOC_EXECUTABLE))
        return E_INVALIDARG;
    heap *hp = calloc(1, sizeof *hp);
    if (!hp)
        return E_OUTOFMEMORY;
    hp->iface.lpVtbl = &heap_vtbl;
    hp->ref = 1;
    pthread_mutex_init(&hp->lock, NULL);
    *pp = &hp->iface;
    return S_OK;
}

/* ---- Load, callbacks, ledger, COM ------------------------------------------------------------------------------- */

static HRESULT STDMETHODCALLTYPE GetMemoryLoad_(IHostMemoryManager *i, DWORD *load, SIZE_T *available)
{
    if (!load || !available)
        return E_POINTER;
    struct sysinfo si;
    if (sysinfo(&si) != 0)
        return E_FAIL;
    uint64_t total = (uint64_t)si.totalram * si.mem_unit, free_bytes = (uint64_t)si.freeram * si.mem_unit;
    *load = total ? (DWORD)((total - free_bytes) * 100 / total) : 0;
    *available = (SIZE_T)free_bytes;
    return S_OK;
}

static HRESULT STDMETHODCALLTYPE Register_(IHostMemoryManager *i, ICLRMemoryNotificationCallback *cb)
{
    host *h = impl_from_IHostMemoryManager(i);
    if (!cb)
        return E_POINTER;
    pthread_mutex_lock(&h->lock);
    HRESULT hr = h->ncallbacks < 8 ? S_OK : E_OUTOFMEMORY;
    if (hr == S_OK) {
        ICLRMemoryNotificationCallback_AddRef(cb);
        h->callbacks[h->ncallbacks++] = cb;
    }
    pthread_mutex_unlock(&h->lock);
    return hr;
}

static HRESULT STDMETHODCALLTYPE Needs_(IHostMemoryManager *i, LPVOID start, SIZE_T size) { return S_OK; }

static HRESULT STDMETHODCALLTYPE Acquired_(IHostMemoryManager *i, LPVOID start, SIZE_T size)
{
    host *h = impl_from_IHostMemoryManager(i);
    pthread_mutex_lock(&h->lock);
    HRESULT hr = h->nledger < 64 ? S_OK : E_OUTOFMEMORY;
    if (hr == S_OK) {
        h->ledger[h->nledger].start = (uintptr_t)start;
        h->ledger[h->nledger++].size = size;
    }
    pthread_mutex_unlock(&h->lock);
    return hr;
}

static HRESULT STDMETHODCALLTYPE Released_(IHostMemoryManager *i, LPVOID start)
{
    host *h = impl_from_IHostMemoryManager(i);
    HRESULT hr = HOST_E_INVALIDOPERATION;
    pthread_mutex_lock(&h->lock);
    for (int k = 0; k < h->nledger; k++)
        if (h->ledger[k].start == (uintptr_t)start) {
            h->ledger[k] = h->ledger[--h->nledger];
            hr = S_OK;
            break;
        }
    pthread_mutex_unlock(&h->lock);
    return hr;
}

static HRESULT STDMETHODCALLTYPE QueryInterface_(IHostMemoryManager *i, REFIID riid, void **ppv)
{
    if (!ppv)
        return E_POINTER;
    *ppv = NULL;
    if (!IsEqualIID(riid, &IID_IUnknown) && !IsEqualIID(riid, &IID_IHostMemoryManager))
        return E_NOINTERFACE;
    *ppv = i;
    atomic_fetch_add(&impl_from_IHostMemoryManager(i)->ref, 1);
    return S_OK;
}

static ULONG STDMETHODCALLTYPE AddRef_(IHostMemoryManager *i) { return atomic_fetch_add(&impl_from_IHostMemoryManager(i)->ref, 1) + 1; }

static ULONG STDMETHODCALLTYPE Release_(IHostMemoryManager *i)
{
    host *h = impl_from_IHostMemoryManager(i);
    ULONG left = atomic_fetch_sub(&h->ref, 1) - 1;
    if (!left) {
        while (h->list)
            drop(h, h->list);
        for (int k = 0; k < h->ncallbacks; k++)
            ICLRMemoryNotificationCallback_Release(h->callbacks[k]);
        pthread_mutex_destroy(&h->lock);
        free(h);
    }
    return left;
}

static const IHostMemoryManagerVtbl host_vtbl = {
    QueryInterface_, AddRef_, Release_, CreateMalloc_, VirtualAlloc_, VirtualFree_, VirtualQuery_, VirtualProtect_,
    GetMemoryLoad_, Register_, Needs_, Acquired_, Released_,
};

__attribute__((visibility("default"))) HRESULT HostMemCreateManager(const char *options, IHostMemoryManager **pp)
{
    if (!pp)
        return E_POINTER;
    *pp = NULL;
    if (options && *options)
        return E_INVALIDARG; /* this example has no options */
    host *h = calloc(1, sizeof *h);
    if (!h)
        return E_OUTOFMEMORY;
    h->iface.lpVtbl = &host_vtbl;
    h->ref = 1;
    pthread_mutex_init(&h->lock, NULL);
    *pp = &h->iface;
    return S_OK;
}

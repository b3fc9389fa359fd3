/* The built-in IHostMemoryManager: COM plumbing over the VM books (vm.c), the budget (budget.c), heaps (heap.c),
 * notifications (notify.c) and the address-space ledger (ledger.c). */
#include "internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* A leak report kept after its heap is gone. */
typedef struct kept_leak {
    char *file;
    int line;
    uint64_t blocks, bytes;
} kept_leak;

struct hm_manager {
    IHostMemoryManager IHostMemoryManager_iface;
    _Atomic ULONG ref;
    hm_options options;
    hm_vm *vm;
    hm_budget budget;
    hm_notify *notify;
    hm_ledger *ledger;
    _Atomic uint64_t calls[HM_METHOD_COUNT], failures[HM_METHOD_COUNT];
    _Atomic uint64_t heap_count;
    pthread_mutex_t leaks_lock; /* the heap list and the kept leak reports */
    hm_fork_entry fork_entry;   /* leaks_lock, held across fork() */
    struct heap_binding *heaps;
    kept_leak *leaks;
    size_t nleaks, cap_leaks;
};

/* What a heap's page source points at: the manager (which the heap keeps a reference on), the heap's kind, and
 * the heap itself, listed so statistics can sum the heaps' counters without any cost per allocation. */
typedef struct heap_binding {
    hm_manager *manager;
    DWORD protect;
    IHostMalloc *heap;
    struct heap_binding *next, **prev_next;
} heap_binding;

static inline hm_manager *impl_from_IHostMemoryManager(IHostMemoryManager *iface)
{
    return HM_CONTAINER_OF(iface, hm_manager, IHostMemoryManager_iface);
}

static HRESULT count(hm_manager *m, hm_method method, HRESULT hr)
{
    atomic_fetch_add_explicit(&m->calls[method], 1, memory_order_relaxed);
    if (FAILED(hr))
        atomic_fetch_add_explicit(&m->failures[method], 1, memory_order_relaxed);
    return hr;
}

/* Feeds the current load to the notifier, which calls callbacks (outside every lock) when the state changes. */
static void update_pressure(hm_manager *m)
{
    DWORD load;
    SIZE_T available;
    hm__budget_load(&m->budget, &load, &available);
    hm__notify_update(m->notify, load);
}

/* ---- IUnknown ------------------------------------------------------------------------------------------------ */

static HRESULT STDMETHODCALLTYPE manager_QueryInterface(IHostMemoryManager *iface, REFIID riid, void **ppv)
{
    return hm_com_query(iface, &IID_IHostMemoryManager, riid, ppv);
}

static ULONG STDMETHODCALLTYPE manager_AddRef(IHostMemoryManager *iface)
{
    return atomic_fetch_add(&impl_from_IHostMemoryManager(iface)->ref, 1) + 1;
}

/* Forgets the kept leak reports. */
static void free_leaks(hm_manager *m)
{
    for (size_t i = 0; i < m->nleaks; i++)
        free(m->leaks[i].file);
    free(m->leaks);
    m->leaks = NULL;
    m->nleaks = m->cap_leaks = 0;
}

static void manager_destroy(hm_manager *m)
{
    hm__notify_destroy(m->notify);
    hm__ledger_destroy(m->ledger);
    hm__vm_destroy(m->vm);
    free_leaks(m);
    hm__fork_unregister(&m->fork_entry);
    pthread_mutex_destroy(&m->leaks_lock);
    free(m);
}

static ULONG STDMETHODCALLTYPE manager_Release(IHostMemoryManager *iface)
{
    hm_manager *m = impl_from_IHostMemoryManager(iface);
    ULONG left = atomic_fetch_sub(&m->ref, 1) - 1;
    if (left == 0)
        manager_destroy(m);
    return left;
}

/* ---- Heaps ------------------------------------------------------------------------------------------------- */

/* On Linux a heap's chunks come from the top of the address space the manager holds (MEM_TOP_DOWN), the runtime's
 * own reservations from the bottom: chunks are small and live long, so mixed in they would scatter the runtime's
 * reservations, and kept apart they land in the same place from one heap to the next, on pages already touched
 * (a page fault costs 10 us on a virtual machine). Windows' own VirtualAlloc places them: there MEM_TOP_DOWN is
 * documented to be slower. */
#ifdef _WIN32
#define HEAP_CHUNK_PLACEMENT 0
#else
#define HEAP_CHUNK_PLACEMENT MEM_TOP_DOWN
#endif

static HRESULT heap_source_alloc(void *ctx, size_t size, EMemoryCriticalLevel level, void **out)
{
    heap_binding *b = ctx;
    uintptr_t base;
    HRESULT hr = hm__vm_alloc(b->manager->vm, 0, size, MEM_RESERVE | MEM_COMMIT | HEAP_CHUNK_PLACEMENT, b->protect,
                              level, &base);
    *out = SUCCEEDED(hr) ? (void *)base : NULL;
    if (SUCCEEDED(hr))
        update_pressure(b->manager);
    return hr;
}

static HRESULT heap_source_release(void *ctx, void *addr, size_t size)
{
    heap_binding *b = ctx;
    (void)size;
    HRESULT hr = hm__vm_free(b->manager->vm, (uintptr_t)addr, 0, MEM_RELEASE, true); /* heap pages: always cleared */
    if (SUCCEEDED(hr))
        update_pressure(b->manager);
    return hr;
}

/* The heap's last act: keep its leak report, drop the reference it held on the manager. */
static void heap_source_destroyed(void *ctx, const hm_leak *leaks, size_t n)
{
    heap_binding *b = ctx;
    hm_manager *m = b->manager;
    pthread_mutex_lock(&m->leaks_lock);
    if (b->prev_next) { /* listed once CreateMalloc finished */
        *b->prev_next = b->next;
        if (b->next)
            b->next->prev_next = b->prev_next;
    }
    for (size_t i = 0; i < n; i++) {
        if (m->nleaks == m->cap_leaks) {
            size_t cap = m->cap_leaks ? m->cap_leaks * 2 : 16;
            kept_leak *grown = realloc(m->leaks, cap * sizeof *grown);
            if (!grown)
                break;
            m->leaks = grown;
            m->cap_leaks = cap;
        }
        char *file = strdup(leaks[i].file ? leaks[i].file : "(null)");
        if (!file)
            break;
        m->leaks[m->nleaks++] = (kept_leak){file, leaks[i].line, leaks[i].blocks, leaks[i].bytes};
    }
    pthread_mutex_unlock(&m->leaks_lock);
    atomic_fetch_sub(&m->heap_count, 1);
    free(b);
    IHostMemoryManager_Release(&m->IHostMemoryManager_iface);
}

static HRESULT STDMETHODCALLTYPE manager_CreateMalloc(IHostMemoryManager *iface, DWORD type, IHostMalloc **ppMalloc)
{
    hm_manager *m = impl_from_IHostMemoryManager(iface);
    if (!ppMalloc)
        return count(m, HM_METHOD_CREATE_MALLOC, E_POINTER);
    *ppMalloc = NULL;
    if (type & ~(DWORD)(MALLOC_THREADSAFE | MALLOC_EXECUTABLE))
        return count(m, HM_METHOD_CREATE_MALLOC, E_INVALIDARG);
    heap_binding *b = malloc(sizeof *b);
    if (!b)
        return count(m, HM_METHOD_CREATE_MALLOC, E_OUTOFMEMORY);
    *b = (heap_binding){.manager = m, .protect = (type & MALLOC_EXECUTABLE) ? PAGE_EXECUTE_READWRITE : PAGE_READWRITE};
    hm_page_source source = {b, heap_source_alloc, heap_source_release, heap_source_destroyed};
    IHostMemoryManager_AddRef(iface); /* the heap's reference, dropped in heap_source_destroyed */
    HRESULT hr = hm__heap_create(&source, type, ppMalloc);
    if (FAILED(hr)) {
        free(b);
        IHostMemoryManager_Release(iface);
        *ppMalloc = NULL;
    } else {
        atomic_fetch_add(&m->heap_count, 1);
        b->heap = *ppMalloc;
        pthread_mutex_lock(&m->leaks_lock);
        b->next = m->heaps;
        if (b->next)
            b->next->prev_next = &b->next;
        m->heaps = b;
        b->prev_next = &m->heaps;
        pthread_mutex_unlock(&m->leaks_lock);
    }
    return count(m, HM_METHOD_CREATE_MALLOC, hr);
}

/* ---- Virtual memory ------------------------------------------------------------------------------------------ */

static bool valid_level(EMemoryCriticalLevel level)
{
    return (unsigned)level <= (unsigned)eProcessCritical;
}

static HRESULT STDMETHODCALLTYPE manager_VirtualAlloc(IHostMemoryManager *iface, void *pAddress, SIZE_T dwSize,
                                                      DWORD flAllocationType, DWORD flProtect,
                                                      EMemoryCriticalLevel eCriticalLevel, void **ppMem)
{
    hm_manager *m = impl_from_IHostMemoryManager(iface);
    if (!ppMem)
        return count(m, HM_METHOD_VIRTUAL_ALLOC, E_POINTER);
    *ppMem = NULL;
    if (!valid_level(eCriticalLevel))
        return count(m, HM_METHOD_VIRTUAL_ALLOC, E_INVALIDARG);
    uintptr_t base = 0;
    HRESULT hr = hm__vm_alloc(m->vm, (uintptr_t)pAddress, dwSize, flAllocationType, flProtect, eCriticalLevel, &base);
    if (SUCCEEDED(hr)) {
        *ppMem = (void *)base;
        if (flAllocationType & MEM_COMMIT)
            update_pressure(m);
    }
    return count(m, HM_METHOD_VIRTUAL_ALLOC, hr);
}

/* VirtualQuery for an address outside the manager's spans: the process map, where the spans a reset manager keeps
 * mapped (hm__vm_spare) are the free space they would be in a new manager, so a reset manager answers as a new one. */
static HRESULT query_outside(hm_manager *m, uintptr_t address, MEMORY_BASIC_INFORMATION *info)
{
    uintptr_t page = address & ~(uintptr_t)(HM_PAGE_SIZE - 1), start, end;
    bool after_spare = hm__vm_spare(m->vm, page, &start, &end);
    if (!after_spare) {
        HRESULT hr = hm__procmaps_query(address, info);
        if (hr != S_OK || info->State != MEM_FREE)
            return hr;
        end = page + info->RegionSize;
    }
    /* Free up to `end`; the free space goes on through spares and whatever free space follows each. */
    for (;;) {
        MEMORY_BASIC_INFORMATION next;
        if (after_spare && end < HM_MAX_ADDRESS && hm__procmaps_query(end, &next) == S_OK && next.State == MEM_FREE)
            end += next.RegionSize;
        after_spare = end < HM_MAX_ADDRESS && hm__vm_spare(m->vm, end, &start, &end);
        if (!after_spare)
            break;
    }
    hm__procmaps_free_info(page, end, info);
    return S_OK;
}

/* Whether an address is mapped in the process but not by this manager: VirtualFree's documented
 * HOST_E_INVALIDOPERATION case ("memory not allocated through the host"). */
static bool foreign_mapping(hm_manager *m, uintptr_t address)
{
    if (!address || hm__vm_owns(m->vm, address))
        return false;
    MEMORY_BASIC_INFORMATION info;
    return query_outside(m, address, &info) == S_OK && info.State != MEM_FREE;
}

static HRESULT STDMETHODCALLTYPE manager_VirtualFree(IHostMemoryManager *iface, LPVOID lpAddress, SIZE_T dwSize,
                                                     DWORD dwFreeType)
{
    hm_manager *m = impl_from_IHostMemoryManager(iface);
    HRESULT hr = hm__vm_free(m->vm, (uintptr_t)lpAddress, dwSize, dwFreeType, !m->options.zero_heaps_only);
    if (hr == HM_E_INVALID_ADDRESS && foreign_mapping(m, (uintptr_t)lpAddress))
        hr = HOST_E_INVALIDOPERATION;
    if (SUCCEEDED(hr))
        update_pressure(m);
    return count(m, HM_METHOD_VIRTUAL_FREE, hr);
}

static HRESULT STDMETHODCALLTYPE manager_VirtualQuery(IHostMemoryManager *iface, void *lpAddress, void *lpBuffer,
                                                      SIZE_T dwLength, SIZE_T *pResult)
{
    hm_manager *m = impl_from_IHostMemoryManager(iface);
    if (!pResult)
        return count(m, HM_METHOD_VIRTUAL_QUERY, E_POINTER);
    *pResult = 0;
    if (!lpBuffer)
        return count(m, HM_METHOD_VIRTUAL_QUERY, E_POINTER);
    if (dwLength < sizeof(MEMORY_BASIC_INFORMATION))
        return count(m, HM_METHOD_VIRTUAL_QUERY, HM_E_BAD_LENGTH);
    uintptr_t address = (uintptr_t)lpAddress;
    if (address >= HM_MAX_ADDRESS)
        return count(m, HM_METHOD_VIRTUAL_QUERY, HM_E_INVALID_PARAMETER);
    /* Filled locally and copied after the books' lock is gone: the buffer may itself be a guard page. */
    MEMORY_BASIC_INFORMATION info;
    HRESULT hr = hm__vm_query(m->vm, address, &info);
    if (hr == S_FALSE)
        hr = query_outside(m, address, &info);
    if (SUCCEEDED(hr)) {
        memcpy(lpBuffer, &info, sizeof info);
        *pResult = sizeof info;
        hr = S_OK;
    }
    return count(m, HM_METHOD_VIRTUAL_QUERY, hr);
}

static HRESULT STDMETHODCALLTYPE manager_VirtualProtect(IHostMemoryManager *iface, void *lpAddress, SIZE_T dwSize,
                                                        DWORD flNewProtect, DWORD *pflOldProtect)
{
    hm_manager *m = impl_from_IHostMemoryManager(iface);
    if (!pflOldProtect)
        return count(m, HM_METHOD_VIRTUAL_PROTECT, E_POINTER);
    DWORD old;
    HRESULT hr = hm__vm_protect(m->vm, (uintptr_t)lpAddress, dwSize, flNewProtect, &old);
    *pflOldProtect = old;
    return count(m, HM_METHOD_VIRTUAL_PROTECT, hr);
}

/* ---- Load, notifications, address-space ledger ------------------------------------------------------------ */

static HRESULT STDMETHODCALLTYPE manager_GetMemoryLoad(IHostMemoryManager *iface, DWORD *pMemoryLoad,
                                                       SIZE_T *pAvailableBytes)
{
    hm_manager *m = impl_from_IHostMemoryManager(iface);
    if (!pMemoryLoad || !pAvailableBytes)
        return count(m, HM_METHOD_GET_MEMORY_LOAD, E_POINTER);
    DWORD load;
    SIZE_T available;
    hm__budget_load(&m->budget, &load, &available);
    *pMemoryLoad = load;
    *pAvailableBytes = available;
    hm__notify_update(m->notify, load);
    return count(m, HM_METHOD_GET_MEMORY_LOAD, S_OK);
}

static HRESULT STDMETHODCALLTYPE manager_RegisterMemoryNotificationCallback(IHostMemoryManager *iface,
                                                                            ICLRMemoryNotificationCallback *pCallback)
{
    hm_manager *m = impl_from_IHostMemoryManager(iface);
    return count(m, HM_METHOD_REGISTER_CALLBACK, hm__notify_register(m->notify, pCallback));
}

static HRESULT STDMETHODCALLTYPE manager_NeedsVirtualAddressSpace(IHostMemoryManager *iface, LPVOID startAddress,
                                                                  SIZE_T size)
{
    hm_manager *m = impl_from_IHostMemoryManager(iface);
    return count(m, HM_METHOD_NEEDS_VAS, hm__ledger_needs(m->ledger, (uintptr_t)startAddress, size));
}

static HRESULT STDMETHODCALLTYPE manager_AcquiredVirtualAddressSpace(IHostMemoryManager *iface, LPVOID startAddress,
                                                                     SIZE_T size)
{
    hm_manager *m = impl_from_IHostMemoryManager(iface);
    HRESULT hr = hm__ledger_acquired(m->ledger, (uintptr_t)startAddress, size);
    if (SUCCEEDED(hr))
        update_pressure(m);
    return count(m, HM_METHOD_ACQUIRED_VAS, hr);
}

static HRESULT STDMETHODCALLTYPE manager_ReleasedVirtualAddressSpace(IHostMemoryManager *iface, LPVOID startAddress)
{
    hm_manager *m = impl_from_IHostMemoryManager(iface);
    HRESULT hr = hm__ledger_released(m->ledger, (uintptr_t)startAddress);
    if (SUCCEEDED(hr))
        update_pressure(m);
    return count(m, HM_METHOD_RELEASED_VAS, hr);
}

static const IHostMemoryManagerVtbl manager_vtbl = {
    manager_QueryInterface,
    manager_AddRef,
    manager_Release,
    manager_CreateMalloc,
    manager_VirtualAlloc,
    manager_VirtualFree,
    manager_VirtualQuery,
    manager_VirtualProtect,
    manager_GetMemoryLoad,
    manager_RegisterMemoryNotificationCallback,
    manager_NeedsVirtualAddressSpace,
    manager_AcquiredVirtualAddressSpace,
    manager_ReleasedVirtualAddressSpace,
};

/* ---- Construction ------------------------------------------------------------------------------------------ */

HM_API HRESULT HostMemCreateBuiltinManager(const char *options, IHostMemoryManager **ppManager)
{
    if (!ppManager)
        return E_POINTER;
    *ppManager = NULL;
    hm__clear_error();
    hm_manager *m = calloc(1, sizeof *m);
    if (!m)
        return E_OUTOFMEMORY;
    HRESULT hr = hm__options_parse(options, &m->options);
    if (FAILED(hr)) {
        free(m);
        return hr;
    }
    m->IHostMemoryManager_iface.lpVtbl = &manager_vtbl;
    atomic_init(&m->ref, 1);
    pthread_mutex_init(&m->leaks_lock, NULL);
    hm__fork_register_mutex(&m->fork_entry, &m->leaks_lock, HM_FORK_MANAGER);
    hm__budget_init(&m->budget, m->options.limit, m->options.reserve_process, m->options.reserve_appdomain);
    hm_vm_config config = {
        .os = hm__os_backend(m->options.sim),
        .budget = &m->budget,
        .span_size = m->options.span,
        .base = m->options.base,
        .deterministic = m->options.deterministic,
    };
    hr = hm__vm_create(&config, &m->vm);
    if (SUCCEEDED(hr)) {
        m->notify = hm__notify_create(m->options.notify_low, m->options.notify_high, m->options.notify_hysteresis);
        m->ledger = hm__ledger_create(&m->budget);
        if (!m->notify || !m->ledger)
            hr = E_OUTOFMEMORY;
    }
    if (FAILED(hr)) {
        manager_destroy(m);
        return hr;
    }
    *ppManager = &m->IHostMemoryManager_iface;
    return S_OK;
}

HRESULT hm__manager_reset(IHostMemoryManager *iface)
{
    hm_manager *m = iface && iface->lpVtbl == &manager_vtbl ? impl_from_IHostMemoryManager(iface) : NULL;
    if (!m)
        return E_NOINTERFACE;
    /* A live heap or another reference would see its memory vanish. */
    if (atomic_load(&m->ref) != 1 || atomic_load(&m->heap_count) != 0)
        return HOST_E_INVALIDOPERATION;
    hm__notify_reset(m->notify); /* releases the callbacks */
    hm__ledger_reset(m->ledger); /* uncharges its ranges */
    hm__vm_reset(m->vm);         /* uncharges the commits */
    atomic_store(&m->budget.charged, 0);
    atomic_store(&m->budget.peak, 0);
    for (int i = 0; i < HM_METHOD_COUNT; i++) {
        atomic_store(&m->calls[i], 0);
        atomic_store(&m->failures[i], 0);
    }
    free_leaks(m);
    return S_OK;
}

/* ---- Diagnostics ------------------------------------------------------------------------------------------- */

hm_manager *hm__manager_from(IHostMemoryManager *iface)
{
    for (int depth = 0; iface && depth < 16; depth++) {
        if (iface->lpVtbl == &manager_vtbl)
            return impl_from_IHostMemoryManager(iface);
        iface = hm__decorator_inner(iface);
    }
    return NULL;
}

HM_API HRESULT HostMemGetStats(IHostMemoryManager *manager, hm_stats *out)
{
    if (!out)
        return E_POINTER;
    hm_manager *m = hm__manager_from(manager);
    if (!m)
        return E_NOINTERFACE;
    memset(out, 0, sizeof *out);
    hm_vm_stats vs;
    hm__vm_get_stats(m->vm, &vs);
    out->reservations = vs.reservations;
    out->reserved_bytes = vs.reserved_bytes;
    out->committed_bytes = vs.committed_bytes;
    out->peak_committed_bytes = vs.peak_committed_bytes;
    out->guard_trips = vs.guard_trips;
    out->spans = vs.spans;
    out->heap_count = atomic_load(&m->heap_count);
    pthread_mutex_lock(&m->leaks_lock);
    for (heap_binding *b = m->heaps; b; b = b->next) {
        uint64_t blocks, bytes;
        hm__heap_usage(b->heap, &blocks, &bytes);
        out->heap_live_blocks += blocks;
        out->heap_live_bytes += bytes;
    }
    pthread_mutex_unlock(&m->leaks_lock);
    out->ledger_ranges = hm__ledger_ranges(m->ledger);
    out->ledger_bytes = hm__ledger_bytes(m->ledger);
    out->budget_bytes = m->budget.limit;
    out->notifications = hm__notify_count(m->notify);
    SIZE_T available;
    DWORD load;
    hm__budget_load(&m->budget, &load, &available);
    out->memory_load = load;
    for (int i = 0; i < HM_METHOD_COUNT; i++) {
        out->calls[i] = atomic_load(&m->calls[i]);
        out->failures[i] = atomic_load(&m->failures[i]);
    }
    return S_OK;
}

HM_API HRESULT HostMemCheckConsistency(IHostMemoryManager *manager, char *msg, size_t msglen)
{
    hm_manager *m = hm__manager_from(manager);
    if (!m)
        return E_NOINTERFACE;
    char scratch[256];
    if (!msg || !msglen)
        msg = scratch, msglen = sizeof scratch;
    msg[0] = '\0';
    if (hm__vm_check(m->vm, msg, msglen) != 0 || hm__ledger_check(m->ledger, msg, msglen) != 0)
        return E_FAIL;
    /* The budget is charged by commits and by the ledger, and by nothing else. */
    hm_vm_stats vs;
    hm__vm_get_stats(m->vm, &vs);
    uint64_t charged = atomic_load(&m->budget.charged), expected = vs.committed_bytes + hm__ledger_bytes(m->ledger);
    if (charged != expected) {
        snprintf(msg, msglen, "budget charged %llu bytes, but commits and ledger hold %llu",
                 (unsigned long long)charged, (unsigned long long)expected);
        return E_FAIL;
    }
    return S_OK;
}

HM_API size_t HostMemHeapLeaks(IHostMalloc *heap, hm_leak *out, size_t max)
{
    if (!heap || !hm__heap_is_builtin(heap))
        return 0;
    return hm__heap_leaks(heap, out, max);
}

HM_API uint64_t HostMemPrintLeaks(IHostMemoryManager *manager, FILE *f, int include_live)
{
    (void)include_live; /* live heaps are not tracked by the manager; use HostMemHeapLeaks on them */
    hm_manager *m = hm__manager_from(manager);
    if (!m)
        return 0;
    uint64_t blocks = 0;
    pthread_mutex_lock(&m->leaks_lock);
    for (size_t i = 0; i < m->nleaks; i++) {
        const kept_leak *k = &m->leaks[i];
        fprintf(f, "leak: %llu block(s), %llu byte(s) allocated at %s:%d\n", (unsigned long long)k->blocks,
                (unsigned long long)k->bytes, k->file, k->line);
        blocks += k->blocks;
    }
    pthread_mutex_unlock(&m->leaks_lock);
    return blocks;
}

hm_notify *hm__manager_notify(hm_manager *m) { return m->notify; }

/* The fault layer: a decorator around any IHostMemoryManager (and the heaps it makes) that fails the calls its
 * rules choose (see include/hostmem/faults.h). Model: SQLite's test_malloc.c — every wrapper asks one function,
 * fault_check(), whether to fail, and hm__fault_hit() exists only as a breakpoint target. */
#include "faults_internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

typedef struct faults {
    IHostMemoryManager IHostMemoryManager_iface;
    _Atomic ULONG ref;
    IHostMemoryManager *inner;
    /* Nothing armed means every call goes straight through: one relaxed load. Call numbers start when armed. */
    atomic_bool armed;
    pthread_mutex_t lock; /* rules, counters, log, callbacks */
    hm_fork_entry fork_entry; /* the lock, held across fork() */
    fault_rule *rules;
    size_t nrules;
    uint64_t calls;
    uint64_t method_calls[HM_METHOD_COUNT];
    hm_fault_event *log;
    size_t nlog, cap_log;
    ICLRMemoryNotificationCallback **callbacks;
    size_t ncallbacks, cap_callbacks;
    int pressure_load;     /* -1: none active */
    bool pressure_has_available;
    uint64_t pressure_available;
} faults;

typedef struct faults_heap {
    IHostMalloc IHostMalloc_iface;
    _Atomic ULONG ref;
    IHostMalloc *inner;
    faults *owner; /* holds a reference */
} faults_heap;

static const IHostMemoryManagerVtbl faults_vtbl;
static const IHostMallocVtbl faults_heap_vtbl;

static inline faults *impl_from_IHostMemoryManager(IHostMemoryManager *iface)
{
    return HM_CONTAINER_OF(iface, faults, IHostMemoryManager_iface);
}

static inline faults_heap *impl_from_IHostMalloc(IHostMalloc *iface)
{
    return HM_CONTAINER_OF(iface, faults_heap, IHostMalloc_iface);
}

/* Set a breakpoint here to stop at every injected fault. */
__attribute__((noinline)) void hm__fault_hit(const hm_fault_event *event)
{
    __asm__ volatile("" : : "r"(event) : "memory");
}

/* ---- Deciding ---------------------------------------------------------------------------------------------- */

typedef struct call_info {
    hm_method method;
    int level;            /* -1: the method has none */
    uint64_t size;
    uint64_t address;
    uint32_t alloc_type;  /* VirtualAlloc / VirtualFree type */
} call_info;

static uint64_t next_random(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static bool rule_matches(const fault_rule *r, const call_info *c, uint64_t call_number)
{
    if (r->pressure || !(r->methods & (1u << c->method)))
        return false;
    /* A level outside the enum (the host will refuse it) matches no level filter; found by fuzz_calls_faults. */
    if (r->levels && (c->level < 0 || c->level > eProcessCritical || !(r->levels & (1u << c->level))))
        return false;
    if (r->ops) {
        uint32_t op = c->alloc_type == MEM_RESET ? FAULT_OP_RESET
                      : (c->alloc_type & MEM_COMMIT) ? FAULT_OP_COMMIT
                                                     : FAULT_OP_RESERVE;
        if (c->method != HM_METHOD_VIRTUAL_ALLOC || !(r->ops & op))
            return false;
    }
    if (r->has_size && (c->size < r->size_min || c->size > r->size_max))
        return false;
    if (r->has_addr && (c->address < r->addr_min || c->address > r->addr_max))
        return false;
    if (r->call && r->call != call_number)
        return false;
    return true;
}

/* Counts the call against a matching rule and says whether the rule fires for it. */
static bool rule_fires(fault_rule *r, const call_info *c)
{
    r->matched++;
    r->bytes_matched += c->size;
    bool fire = true;
    if (r->nth && r->matched != r->nth)
        fire = false;
    if (r->every && r->matched % r->every != 0)
        fire = false;
    if (r->has_after && r->matched <= r->after)
        fire = false;
    if (r->has_after_bytes && r->bytes_matched <= r->after_bytes)
        fire = false;
    if (r->has_probability) {
        /* Drawn for every matching call, fired or not, so the sequence depends on the calls alone. */
        double draw = (double)(next_random(&r->rng) >> 11) / 9007199254740992.0;
        if (draw >= r->probability)
            fire = false;
    }
    if (r->has_times && r->fired >= r->times)
        fire = false;
    if (fire)
        r->fired++;
    return fire;
}

/* Pressure rules trigger on the global call count; returns the notification to send now (0: none). */
static EMemoryAvailable pressure_step(faults *f, uint64_t call_number)
{
    EMemoryAvailable send = 0;
    for (size_t i = 0; i < f->nrules; i++) {
        fault_rule *r = &f->rules[i];
        if (!r->pressure || r->pressure_active)
            continue;
        bool go = true;
        if (r->call && call_number != r->call)
            go = false;
        if (r->nth && call_number != r->nth)
            go = false;
        if (r->has_after && call_number <= r->after)
            go = false;
        if (!go)
            continue;
        r->pressure_active = true;
        if (r->load >= 0) {
            f->pressure_load = r->load;
            f->pressure_has_available = r->has_available;
            f->pressure_available = r->available;
        }
        if (r->notify)
            send = r->notify;
    }
    return send;
}

static void notify_all(faults *f, EMemoryAvailable state)
{
    pthread_mutex_lock(&f->lock);
    size_t n = f->ncallbacks;
    ICLRMemoryNotificationCallback **cbs = n ? malloc(n * sizeof *cbs) : NULL;
    for (size_t i = 0; cbs && i < n; i++) {
        cbs[i] = f->callbacks[i];
        ICLRMemoryNotificationCallback_AddRef(cbs[i]);
    }
    pthread_mutex_unlock(&f->lock);
    for (size_t i = 0; cbs && i < n; i++) {
        ICLRMemoryNotificationCallback_OnMemoryNotification(cbs[i], state);
        ICLRMemoryNotificationCallback_Release(cbs[i]);
    }
    free(cbs);
}

/* The one question every wrapper asks: S_OK to go ahead, or the HRESULT to fail with. */
static HRESULT fault_check(faults *f, const call_info *c)
{
    if (!atomic_load_explicit(&f->armed, memory_order_relaxed))
        return S_OK;
    HRESULT result = S_OK;
    pthread_mutex_lock(&f->lock);
    uint64_t call_number = ++f->calls;
    uint64_t method_call = ++f->method_calls[c->method];
    EMemoryAvailable send = pressure_step(f, call_number);
    for (size_t i = 0; i < f->nrules; i++) {
        fault_rule *r = &f->rules[i];
        if (!rule_matches(r, c, call_number) || !rule_fires(r, c))
            continue;
        result = r->result;
        hm_fault_event event = {call_number, method_call, c->method, c->level, c->size, c->address, c->alloc_type,
                                result, (int)i};
        if (f->nlog == f->cap_log) {
            size_t cap = f->cap_log ? f->cap_log * 2 : 64;
            hm_fault_event *grown = realloc(f->log, cap * sizeof *grown);
            if (grown) {
                f->log = grown;
                f->cap_log = cap;
            }
        }
        if (f->nlog < f->cap_log)
            f->log[f->nlog++] = event;
        hm__fault_hit(&event);
        break;
    }
    pthread_mutex_unlock(&f->lock);
    if (send)
        notify_all(f, send);
    return result;
}

/* ---- IUnknown ---------------------------------------------------------------------------------------------- */

static HRESULT STDMETHODCALLTYPE faults_QueryInterface(IHostMemoryManager *iface, REFIID riid, void **ppv)
{
    return hm_com_query(iface, &IID_IHostMemoryManager, riid, ppv);
}

static ULONG STDMETHODCALLTYPE faults_AddRef(IHostMemoryManager *iface)
{
    return atomic_fetch_add(&impl_from_IHostMemoryManager(iface)->ref, 1) + 1;
}

static ULONG STDMETHODCALLTYPE faults_Release(IHostMemoryManager *iface)
{
    faults *f = impl_from_IHostMemoryManager(iface);
    ULONG left = atomic_fetch_sub(&f->ref, 1) - 1;
    if (left == 0) {
        for (size_t i = 0; i < f->ncallbacks; i++)
            ICLRMemoryNotificationCallback_Release(f->callbacks[i]);
        free(f->callbacks);
        IHostMemoryManager_Release(f->inner);
        free(f->rules);
        free(f->log);
        hm__fork_unregister(&f->fork_entry);
        pthread_mutex_destroy(&f->lock);
        free(f);
    }
    return left;
}

/* ---- IHostMemoryManager ------------------------------------------------------------------------------------- */

static HRESULT STDMETHODCALLTYPE faults_CreateMalloc(IHostMemoryManager *iface, DWORD type, IHostMalloc **ppMalloc)
{
    faults *f = impl_from_IHostMemoryManager(iface);
    call_info c = {HM_METHOD_CREATE_MALLOC, -1, 0, 0, type};
    HRESULT hr = fault_check(f, &c);
    if (FAILED(hr)) {
        if (ppMalloc)
            *ppMalloc = NULL;
        return hr;
    }
    IHostMalloc *inner = NULL;
    hr = IHostMemoryManager_CreateMalloc(f->inner, type, ppMalloc ? &inner : NULL);
    if (FAILED(hr) || !ppMalloc) {
        if (ppMalloc)
            *ppMalloc = NULL;
        return hr;
    }
    faults_heap *h = calloc(1, sizeof *h);
    if (!h) {
        IHostMalloc_Release(inner);
        *ppMalloc = NULL;
        return E_OUTOFMEMORY;
    }
    h->IHostMalloc_iface.lpVtbl = &faults_heap_vtbl;
    atomic_init(&h->ref, 1);
    h->inner = inner;
    h->owner = f;
    IHostMemoryManager_AddRef(iface);
    *ppMalloc = &h->IHostMalloc_iface;
    return hr;
}

static HRESULT STDMETHODCALLTYPE faults_VirtualAlloc(IHostMemoryManager *iface, void *pAddress, SIZE_T dwSize,
                                                     DWORD flAllocationType, DWORD flProtect,
                                                     EMemoryCriticalLevel eCriticalLevel, void **ppMem)
{
    faults *f = impl_from_IHostMemoryManager(iface);
    call_info c = {HM_METHOD_VIRTUAL_ALLOC, (int)eCriticalLevel, dwSize, (uintptr_t)pAddress, flAllocationType};
    HRESULT hr = fault_check(f, &c);
    if (FAILED(hr)) {
        if (ppMem)
            *ppMem = NULL;
        return hr;
    }
    return IHostMemoryManager_VirtualAlloc(f->inner, pAddress, dwSize, flAllocationType, flProtect, eCriticalLevel,
                                           ppMem);
}

static HRESULT STDMETHODCALLTYPE faults_VirtualFree(IHostMemoryManager *iface, LPVOID lpAddress, SIZE_T dwSize,
                                                    DWORD dwFreeType)
{
    faults *f = impl_from_IHostMemoryManager(iface);
    call_info c = {HM_METHOD_VIRTUAL_FREE, -1, dwSize, (uintptr_t)lpAddress, dwFreeType};
    HRESULT hr = fault_check(f, &c);
    return FAILED(hr) ? hr : IHostMemoryManager_VirtualFree(f->inner, lpAddress, dwSize, dwFreeType);
}

static HRESULT STDMETHODCALLTYPE faults_VirtualQuery(IHostMemoryManager *iface, void *lpAddress, void *lpBuffer,
                                                     SIZE_T dwLength, SIZE_T *pResult)
{
    faults *f = impl_from_IHostMemoryManager(iface);
    call_info c = {HM_METHOD_VIRTUAL_QUERY, -1, 0, (uintptr_t)lpAddress, 0};
    HRESULT hr = fault_check(f, &c);
    if (FAILED(hr)) {
        if (pResult)
            *pResult = 0;
        return hr;
    }
    return IHostMemoryManager_VirtualQuery(f->inner, lpAddress, lpBuffer, dwLength, pResult);
}

static HRESULT STDMETHODCALLTYPE faults_VirtualProtect(IHostMemoryManager *iface, void *lpAddress, SIZE_T dwSize,
                                                       DWORD flNewProtect, DWORD *pflOldProtect)
{
    faults *f = impl_from_IHostMemoryManager(iface);
    call_info c = {HM_METHOD_VIRTUAL_PROTECT, -1, dwSize, (uintptr_t)lpAddress, 0};
    HRESULT hr = fault_check(f, &c);
    return FAILED(hr) ? hr : IHostMemoryManager_VirtualProtect(f->inner, lpAddress, dwSize, flNewProtect, pflOldProtect);
}

static HRESULT STDMETHODCALLTYPE faults_GetMemoryLoad(IHostMemoryManager *iface, DWORD *pMemoryLoad,
                                                      SIZE_T *pAvailableBytes)
{
    faults *f = impl_from_IHostMemoryManager(iface);
    call_info c = {HM_METHOD_GET_MEMORY_LOAD, -1, 0, 0, 0};
    HRESULT hr = fault_check(f, &c);
    if (FAILED(hr))
        return hr;
    hr = IHostMemoryManager_GetMemoryLoad(f->inner, pMemoryLoad, pAvailableBytes);
    if (SUCCEEDED(hr) && atomic_load_explicit(&f->armed, memory_order_relaxed)) {
        pthread_mutex_lock(&f->lock);
        if (f->pressure_load >= 0) {
            *pMemoryLoad = (DWORD)f->pressure_load;
            if (f->pressure_has_available)
                *pAvailableBytes = (SIZE_T)f->pressure_available;
        }
        pthread_mutex_unlock(&f->lock);
    }
    return hr;
}

static HRESULT STDMETHODCALLTYPE faults_RegisterMemoryNotificationCallback(IHostMemoryManager *iface,
                                                                           ICLRMemoryNotificationCallback *pCallback)
{
    faults *f = impl_from_IHostMemoryManager(iface);
    call_info c = {HM_METHOD_REGISTER_CALLBACK, -1, 0, 0, 0};
    HRESULT hr = fault_check(f, &c);
    if (FAILED(hr))
        return hr;
    hr = IHostMemoryManager_RegisterMemoryNotificationCallback(f->inner, pCallback);
    if (SUCCEEDED(hr) && pCallback) {
        /* Kept so that pressure rules can notify it too. */
        pthread_mutex_lock(&f->lock);
        bool known = false;
        for (size_t i = 0; i < f->ncallbacks; i++)
            known |= f->callbacks[i] == pCallback;
        if (!known && f->ncallbacks == f->cap_callbacks) {
            size_t cap = f->cap_callbacks ? f->cap_callbacks * 2 : 4;
            ICLRMemoryNotificationCallback **grown = realloc(f->callbacks, cap * sizeof *grown);
            if (grown) {
                f->callbacks = grown;
                f->cap_callbacks = cap;
            }
        }
        if (!known && f->ncallbacks < f->cap_callbacks) {
            ICLRMemoryNotificationCallback_AddRef(pCallback);
            f->callbacks[f->ncallbacks++] = pCallback;
        }
        pthread_mutex_unlock(&f->lock);
    }
    return hr;
}

static HRESULT STDMETHODCALLTYPE faults_NeedsVirtualAddressSpace(IHostMemoryManager *iface, LPVOID startAddress,
                                                                 SIZE_T size)
{
    faults *f = impl_from_IHostMemoryManager(iface);
    call_info c = {HM_METHOD_NEEDS_VAS, -1, size, (uintptr_t)startAddress, 0};
    HRESULT hr = fault_check(f, &c);
    return FAILED(hr) ? hr : IHostMemoryManager_NeedsVirtualAddressSpace(f->inner, startAddress, size);
}

static HRESULT STDMETHODCALLTYPE faults_AcquiredVirtualAddressSpace(IHostMemoryManager *iface, LPVOID startAddress,
                                                                    SIZE_T size)
{
    faults *f = impl_from_IHostMemoryManager(iface);
    call_info c = {HM_METHOD_ACQUIRED_VAS, -1, size, (uintptr_t)startAddress, 0};
    HRESULT hr = fault_check(f, &c);
    return FAILED(hr) ? hr : IHostMemoryManager_AcquiredVirtualAddressSpace(f->inner, startAddress, size);
}

static HRESULT STDMETHODCALLTYPE faults_ReleasedVirtualAddressSpace(IHostMemoryManager *iface, LPVOID startAddress)
{
    faults *f = impl_from_IHostMemoryManager(iface);
    call_info c = {HM_METHOD_RELEASED_VAS, -1, 0, (uintptr_t)startAddress, 0};
    HRESULT hr = fault_check(f, &c);
    return FAILED(hr) ? hr : IHostMemoryManager_ReleasedVirtualAddressSpace(f->inner, startAddress);
}

static const IHostMemoryManagerVtbl faults_vtbl = {
    faults_QueryInterface,
    faults_AddRef,
    faults_Release,
    faults_CreateMalloc,
    faults_VirtualAlloc,
    faults_VirtualFree,
    faults_VirtualQuery,
    faults_VirtualProtect,
    faults_GetMemoryLoad,
    faults_RegisterMemoryNotificationCallback,
    faults_NeedsVirtualAddressSpace,
    faults_AcquiredVirtualAddressSpace,
    faults_ReleasedVirtualAddressSpace,
};

/* ---- IHostMalloc ----------------------------------------------------------------------------------------------- */

static HRESULT STDMETHODCALLTYPE faults_heap_QueryInterface(IHostMalloc *iface, REFIID riid, void **ppv)
{
    return hm_com_query(iface, &IID_IHostMalloc, riid, ppv);
}

static ULONG STDMETHODCALLTYPE faults_heap_AddRef(IHostMalloc *iface)
{
    return atomic_fetch_add(&impl_from_IHostMalloc(iface)->ref, 1) + 1;
}

static ULONG STDMETHODCALLTYPE faults_heap_Release(IHostMalloc *iface)
{
    faults_heap *h = impl_from_IHostMalloc(iface);
    ULONG left = atomic_fetch_sub(&h->ref, 1) - 1;
    if (left == 0) {
        IHostMalloc_Release(h->inner);
        IHostMemoryManager_Release(&h->owner->IHostMemoryManager_iface);
        free(h);
    }
    return left;
}

static HRESULT STDMETHODCALLTYPE faults_heap_Alloc(IHostMalloc *iface, SIZE_T cbSize, EMemoryCriticalLevel level,
                                                   void **ppMem)
{
    faults_heap *h = impl_from_IHostMalloc(iface);
    call_info c = {HM_METHOD_HEAP_ALLOC, (int)level, cbSize, 0, 0};
    HRESULT hr = fault_check(h->owner, &c);
    if (FAILED(hr)) {
        if (ppMem)
            *ppMem = NULL;
        return hr;
    }
    return IHostMalloc_Alloc(h->inner, cbSize, level, ppMem);
}

static HRESULT STDMETHODCALLTYPE faults_heap_DebugAlloc(IHostMalloc *iface, SIZE_T cbSize, EMemoryCriticalLevel level,
                                                        char *file, int line, void **ppMem)
{
    faults_heap *h = impl_from_IHostMalloc(iface);
    call_info c = {HM_METHOD_HEAP_DEBUG_ALLOC, (int)level, cbSize, 0, 0};
    HRESULT hr = fault_check(h->owner, &c);
    if (FAILED(hr)) {
        if (ppMem)
            *ppMem = NULL;
        return hr;
    }
    return IHostMalloc_DebugAlloc(h->inner, cbSize, level, file, line, ppMem);
}

static HRESULT STDMETHODCALLTYPE faults_heap_Free(IHostMalloc *iface, void *pMem)
{
    faults_heap *h = impl_from_IHostMalloc(iface);
    call_info c = {HM_METHOD_HEAP_FREE, -1, 0, (uintptr_t)pMem, 0};
    HRESULT hr = fault_check(h->owner, &c);
    return FAILED(hr) ? hr : IHostMalloc_Free(h->inner, pMem);
}

static const IHostMallocVtbl faults_heap_vtbl = {faults_heap_QueryInterface, faults_heap_AddRef,
                                                 faults_heap_Release,        faults_heap_Alloc,
                                                 faults_heap_DebugAlloc,     faults_heap_Free};

/* ---- The API --------------------------------------------------------------------------------------------------- */

static faults *faults_from(IHostMemoryManager *outer)
{
    return outer && outer->lpVtbl == &faults_vtbl ? impl_from_IHostMemoryManager(outer) : NULL;
}

HM_API IHostMemoryManager *HostMemFaultsInner(IHostMemoryManager *outer)
{
    faults *f = faults_from(outer);
    return f ? f->inner : NULL;
}

HM_API HRESULT HostMemFaultSpecCheck(const char *spec, char *err, size_t errlen)
{
    fault_rule *rules;
    size_t n;
    HRESULT hr = hm__fault_spec_parse(spec, &rules, &n, err, errlen);
    free(rules);
    return hr;
}

HM_API HRESULT HostMemFaultsAdd(IHostMemoryManager *outer, const char *spec)
{
    faults *f = faults_from(outer);
    if (!f)
        return E_NOINTERFACE;
    char err[512];
    fault_rule *rules;
    size_t n;
    HRESULT hr = hm__fault_spec_parse(spec, &rules, &n, err, sizeof err);
    if (FAILED(hr)) {
        hm__set_error("%s", err);
        return hr;
    }
    pthread_mutex_lock(&f->lock);
    fault_rule *grown = n ? realloc(f->rules, (f->nrules + n) * sizeof *grown) : f->rules;
    if (n && !grown) {
        hr = E_OUTOFMEMORY;
    } else {
        if (n)
            memcpy(grown + f->nrules, rules, n * sizeof *rules);
        f->rules = grown;
        f->nrules += n;
        if (f->nrules)
            atomic_store(&f->armed, true);
    }
    pthread_mutex_unlock(&f->lock);
    free(rules);
    return hr;
}

HM_API HRESULT HostMemFaultsClear(IHostMemoryManager *outer)
{
    faults *f = faults_from(outer);
    if (!f)
        return E_NOINTERFACE;
    pthread_mutex_lock(&f->lock);
    free(f->rules);
    f->rules = NULL;
    f->nrules = 0;
    f->pressure_load = -1;
    atomic_store(&f->armed, false);
    pthread_mutex_unlock(&f->lock);
    return S_OK;
}

HM_API HRESULT HostMemWrapFaults(IHostMemoryManager *inner, const char *spec, IHostMemoryManager **ppOuter)
{
    if (!ppOuter)
        return E_POINTER;
    *ppOuter = NULL;
    if (!inner)
        return E_POINTER;
    char err[512];
    fault_rule *rules;
    size_t n;
    HRESULT hr = hm__fault_spec_parse(spec, &rules, &n, err, sizeof err);
    if (FAILED(hr)) {
        hm__set_error("%s", err);
        return hr;
    }
    faults *f = calloc(1, sizeof *f);
    if (!f) {
        free(rules);
        return E_OUTOFMEMORY;
    }
    f->IHostMemoryManager_iface.lpVtbl = &faults_vtbl;
    atomic_init(&f->ref, 1);
    f->inner = inner;
    IHostMemoryManager_AddRef(inner);
    pthread_mutex_init(&f->lock, NULL);
    hm__fork_register_mutex(&f->fork_entry, &f->lock, HM_FORK_FAULTS);
    f->rules = rules;
    f->nrules = n;
    f->pressure_load = -1;
    atomic_init(&f->armed, n > 0);
    hm__decorator_register(&faults_vtbl, HostMemFaultsInner);
    *ppOuter = &f->IHostMemoryManager_iface;
    return S_OK;
}

HM_API uint64_t HostMemFaultsLogCount(IHostMemoryManager *outer)
{
    faults *f = faults_from(outer);
    if (!f)
        return 0;
    pthread_mutex_lock(&f->lock);
    uint64_t n = f->nlog;
    pthread_mutex_unlock(&f->lock);
    return n;
}

HM_API size_t HostMemFaultsLog(IHostMemoryManager *outer, uint64_t first, hm_fault_event *out, size_t max)
{
    faults *f = faults_from(outer);
    if (!f)
        return 0;
    pthread_mutex_lock(&f->lock);
    size_t n = 0;
    for (uint64_t i = first; i < f->nlog && n < max; i++)
        out[n++] = f->log[i];
    pthread_mutex_unlock(&f->lock);
    return n;
}

HM_API uint64_t HostMemFaultsCallCount(IHostMemoryManager *outer, int method)
{
    faults *f = faults_from(outer);
    if (!f)
        return 0;
    pthread_mutex_lock(&f->lock);
    uint64_t n = method >= 0 && method < HM_METHOD_COUNT ? f->method_calls[method] : f->calls;
    pthread_mutex_unlock(&f->lock);
    return n;
}

HM_API void HostMemFaultsLogPrint(IHostMemoryManager *outer, FILE *out)
{
    faults *f = faults_from(outer);
    if (!f)
        return;
    pthread_mutex_lock(&f->lock);
    for (size_t i = 0; i < f->nlog; i++) {
        const hm_fault_event *e = &f->log[i];
        char filters[256];
        hm__fault_rule_filters(&f->rules[e->rule], filters, sizeof filters);
        fprintf(out, "fault %zu: call %llu, %s #%llu", i + 1, (unsigned long long)e->call, hm_method_name(e->method),
                (unsigned long long)e->method_call);
        if (e->level >= 0)
            fprintf(out, " level=%s", hm_level_short((EMemoryCriticalLevel)e->level));
        fprintf(out, " size=%#llx addr=%#llx -> %s (rule %d: %s)\n", (unsigned long long)e->size,
                (unsigned long long)e->address, hm_hr_name(e->result), e->rule + 1, filters);
        fprintf(out, "    reproduce with: call=%llu,return=%s   or: %s,nth=%llu,return=%s\n",
                (unsigned long long)e->call, hm_hr_name(e->result), hm_method_name(e->method),
                (unsigned long long)e->method_call, hm_hr_name(e->result));
    }
    pthread_mutex_unlock(&f->lock);
}

/* For exploration: how many calls the first rule matched. */
uint64_t hm__faults_rule_matched(IHostMemoryManager *outer, size_t rule)
{
    faults *f = faults_from(outer);
    if (!f)
        return 0;
    pthread_mutex_lock(&f->lock);
    uint64_t n = rule < f->nrules ? f->rules[rule].matched : 0;
    pthread_mutex_unlock(&f->lock);
    return n;
}

/* Systematic OOM exploration (SQLite's do_one_faultsim_test loop) and the built-in scenario it runs by default. */
#include "faults_internal.h"

#include "os.h"

#include <stdlib.h>
#include <string.h>

/* The built-in manager on the simulated backend, or where there is none (Windows) on the system's memory: what a run
 * finds does not depend on where the memory is. */
static HRESULT default_factory(void *ctx, IHostMemoryManager **out)
{
    (void)ctx;
    return HostMemCreateBuiltinManager(hm__os_backend(true) ? "backend=sim,deterministic=1,limit=256M" : "limit=256M",
                                       out);
}

/* One run: a fresh manager behind a fault layer with `spec`, the scenario, then the checks. */
static void explore_run(hm_scenario_fn scenario, void *ctx, const hm_explore_options *o, const char *spec,
                        hm_explore_point *point, uint64_t *injected, uint64_t *matched)
{
    IHostMemoryManager *base = NULL, *m = NULL;
    HRESULT hr = o->factory(o->factory_ctx, &base);
    if (FAILED(hr)) {
        point->ok = 0;
        snprintf(point->message, sizeof point->message, "the factory failed: %s", hm_hr_name(hr));
        return;
    }
    hr = HostMemWrapFaults(base, spec, &m);
    IHostMemoryManager_Release(base);
    if (FAILED(hr)) {
        point->ok = 0;
        snprintf(point->message, sizeof point->message, "bad spec '%s': %s", spec, HostMemLastError());
        return;
    }
    point->scenario_result = scenario(m, ctx);
    *injected = HostMemFaultsLogCount(m);
    *matched = hm__faults_rule_matched(m, 0);
    char msg[200];
    HRESULT check = HostMemCheckConsistency(m, msg, sizeof msg);
    point->consistent = check == S_OK ? 1 : check == E_NOINTERFACE ? -1 : 0;
    hm_stats st;
    if (HostMemGetStats(m, &st) == S_OK) {
        point->leaked_reservations = st.reservations;
        point->leaked_blocks = st.heap_live_blocks;
        point->leaked_ledger = st.ledger_ranges;
    }
    point->ok = point->scenario_result == S_OK && point->consistent != 0 && !point->leaked_reservations &&
                !point->leaked_blocks && !point->leaked_ledger;
    if (point->scenario_result != S_OK)
        snprintf(point->message, sizeof point->message, "the scenario gave up: %s", hm_hr_name(point->scenario_result));
    else if (point->consistent == 0)
        snprintf(point->message, sizeof point->message, "inconsistent books: %.130s", msg);
    else if (!point->ok)
        snprintf(point->message, sizeof point->message, "leaked %llu reservation(s), %llu heap block(s), %llu ledger range(s)",
                 (unsigned long long)point->leaked_reservations, (unsigned long long)point->leaked_blocks,
                 (unsigned long long)point->leaked_ledger);
    IHostMemoryManager_Release(m);
}

HM_API HRESULT HostMemExplore(hm_scenario_fn scenario, void *ctx, const hm_explore_options *opts,
                              hm_explore_result *result)
{
    if (!scenario || !result)
        return E_POINTER;
    memset(result, 0, sizeof *result);
    hm_explore_options o = opts ? *opts : (hm_explore_options){0};
    if (!o.match)
        o.match = "VirtualAlloc|heap";
    if (!o.fault_result)
        o.fault_result = E_OUTOFMEMORY;
    if (!o.factory)
        o.factory = default_factory;
    if (!o.transient && !o.persistent)
        o.transient = o.persistent = 1;
    char check[512]; /* a spec error whole (the list of methods is long) */
    fault_rule *rules;
    size_t nrules;
    if (hm__fault_spec_parse(o.match, &rules, &nrules, check, sizeof check) != S_OK) {
        hm__set_error("explore: bad --match: %s", check);
        return E_INVALIDARG;
    }
    const fault_rule *r = rules;
    bool plain = nrules == 1 && !r->pressure && !r->nth && !r->every && !r->call && !r->has_after &&
                 !r->has_after_bytes && !r->has_times && !r->has_probability;
    free(rules);
    if (!plain) {
        hm__set_error("explore: --match must be one rule without triggers (no nth, every, after, after-bytes, call, "
                     "times or probability): '%s'", o.match);
        return E_INVALIDARG;
    }
    /* The counting run: a rule that matches and never fires. */
    char spec[512];
    snprintf(spec, sizeof spec, "%s,times=0", o.match);
    hm_explore_point count_point = {0};
    uint64_t injected = 0, matched = 0;
    explore_run(scenario, ctx, &o, spec, &count_point, &injected, &matched);
    if (!count_point.ok) {
        hm__set_error("explore: the scenario does not run cleanly without faults: %s", count_point.message);
        return E_FAIL;
    }
    result->matching_calls = matched;
    uint64_t limit = o.max_points && o.max_points < matched ? o.max_points : matched;
    size_t cap = (size_t)limit * 2 + 2;
    result->points = calloc(cap, sizeof *result->points);
    if (!result->points)
        return E_OUTOFMEMORY;
    for (int flavour = 0; flavour < 2; flavour++) {
        int persistent = flavour;
        if ((persistent && !o.persistent) || (!persistent && !o.transient))
            continue;
        /* One past the last matching call proves the end was reached (nothing injected), unless --max cut it short. */
        uint64_t last = limit < result->matching_calls ? limit : limit + 1;
        for (uint64_t k = 1; k <= last && result->runs < cap; k++) {
            snprintf(spec, sizeof spec, "%s,%s=%llu,return=0x%08X", o.match, persistent ? "after" : "nth",
                     (unsigned long long)(persistent ? k - 1 : k), (unsigned)o.fault_result);
            hm_explore_point *p = &result->points[result->runs];
            p->k = k;
            p->persistent = persistent;
            explore_run(scenario, ctx, &o, spec, p, &injected, &matched);
            if (injected == 0 && p->ok)
                break; /* past the last matching call: nothing more to try */
            result->runs++;
            result->failures += !p->ok;
            if (o.progress)
                fprintf(o.progress, "%-10s fail call %3llu of %llu: %s%s%s\n", persistent ? "persistent" : "transient",
                        (unsigned long long)k, (unsigned long long)result->matching_calls, p->ok ? "ok" : "FAILED",
                        p->ok ? "" : ": ", p->ok ? "" : p->message);
        }
    }
    return S_OK;
}

HM_API void HostMemExploreFree(hm_explore_result *result)
{
    if (result) {
        free(result->points);
        result->points = NULL;
    }
}

/* ---- The built-in scenario: a runtime starting up, using memory, and shutting down, coping with every failure. */

typedef struct undo {
    void *segment;
    IHostMalloc *heap;
    void *blocks[16];
} undo;

static void undo_all(IHostMemoryManager *m, undo *u)
{
    for (int i = 0; i < 16; i++)
        if (u->blocks[i] && u->heap)
            IHostMalloc_Free(u->heap, u->blocks[i]);
    if (u->heap)
        IHostMalloc_Release(u->heap);
    if (u->segment)
        IHostMemoryManager_VirtualFree(m, u->segment, 0, MEM_RELEASE);
}

HM_API HRESULT hm_scenario_builtin(IHostMemoryManager *m, void *ctx)
{
    (void)ctx;
    undo u = {0};
    void *p;
    HRESULT hr;
    /* Start-up: the GC reserves a segment and commits its first part; the loader makes a heap. */
    if (FAILED(IHostMemoryManager_VirtualAlloc(m, NULL, 4 << 20, MEM_RESERVE, PAGE_READWRITE, eProcessCritical,
                                               &u.segment)))
        return S_OK; /* the runtime reports that it cannot start: handled */
    if (FAILED(IHostMemoryManager_VirtualAlloc(m, u.segment, 64 << 10, MEM_COMMIT, PAGE_READWRITE, eProcessCritical, &p)))
        goto handled;
    if (FAILED(IHostMemoryManager_CreateMalloc(m, MALLOC_THREADSAFE, &u.heap))) {
        u.heap = NULL;
        goto handled;
    }
    /* Running: allocations at every level; task-critical failures abort the task, nothing more. */
    for (int i = 0; i < 16; i++) {
        EMemoryCriticalLevel level = (EMemoryCriticalLevel)(i % 3);
        hr = i % 4 == 3 ? IHostMalloc_DebugAlloc(u.heap, 24 + (size_t)i * 100, level, (char *)"scenario.c", i, &u.blocks[i])
                        : IHostMalloc_Alloc(u.heap, 24 + (size_t)i * 100, level, &u.blocks[i]);
        if (FAILED(hr))
            u.blocks[i] = NULL;
        else
            memset(u.blocks[i], i, 24);
    }
    void *more;
    if (SUCCEEDED(IHostMemoryManager_VirtualAlloc(m, (char *)u.segment + (64 << 10), 128 << 10, MEM_COMMIT,
                                                  PAGE_READWRITE, eTaskCritical, &more))) {
        memset(more, 1, 4096);
        DWORD old;
        IHostMemoryManager_VirtualProtect(m, more, 4096, PAGE_READONLY, &old);
        IHostMemoryManager_VirtualFree(m, more, 128 << 10, MEM_DECOMMIT);
    }
    MEMORY_BASIC_INFORMATION mbi;
    SIZE_T n;
    if (SUCCEEDED(IHostMemoryManager_VirtualQuery(m, u.segment, &mbi, sizeof mbi, &n)) &&
        (mbi.State != MEM_COMMIT || mbi.AllocationBase != u.segment)) {
        undo_all(m, &u);
        return E_UNEXPECTED; /* the host answered wrongly: not something a runtime can cope with */
    }
    DWORD load;
    SIZE_T avail;
    IHostMemoryManager_GetMemoryLoad(m, &load, &avail);
    for (int i = 0; i < 16; i++)
        if (u.blocks[i] && ((unsigned char *)u.blocks[i])[23] != (unsigned char)i) {
            undo_all(m, &u);
            return E_UNEXPECTED;
        }
handled:
    /* Shut-down (or giving up): everything goes back. */
    undo_all(m, &u);
    return S_OK;
}

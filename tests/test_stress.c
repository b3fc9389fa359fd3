/* Stress (harness/check/stress.c): the built-in host runs clean, runs are reproducible, the bare mode makes the same
 * calls, and each check fires on the lie it exists for. The lying hosts are the built-in manager with one entry of
 * its vtable replaced by a function that calls the real one and then lies. */
#include "stress.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static IHostMemoryManager *sim_manager(void)
{
    IHostMemoryManager *m = NULL;
    assert_int_equal(HostMemCreateBuiltinManager("backend=sim,deterministic=1,limit=1G", &m), S_OK);
    return m;
}

static hm_stress_report *run(IHostMemoryManager *m, unsigned threads, uint64_t ops, uint64_t seed, bool verify)
{
    hm_stress_report *r = malloc(sizeof *r);
    assert_non_null(r);
    hm_stress_config c = {.threads = threads, .ops = ops, .seed = seed, .verify = verify};
    assert_int_equal(hm__stress_run(m, &c, r), S_OK);
    return r;
}

static uint64_t steps(const hm_stress_report *r)
{
    uint64_t n = 0;
    for (unsigned t = 0; t < r->threads; t++)
        n += atomic_load(&r->thread[t].done);
    return n;
}

/* The built-in host passes a verified run with 1 and 4 threads; every kind of operation was exercised and the
 * exact number of steps asked for was done. */
static void builtin_runs_clean(void **state)
{
    (void)state;
    for (unsigned threads = 1; threads <= 4; threads += 3) {
        IHostMemoryManager *m = sim_manager();
        hm_stress_report *r = run(m, threads, 20000, 5, true);
        assert_int_equal(atomic_load(&r->violations), 0);
        assert_int_equal(steps(r), 20000);
        for (int op = 0; op < HM_STRESS_OP_COUNT; op++) {
            uint64_t n = 0;
            for (unsigned t = 0; t < threads; t++)
                n += r->thread[t].ops[op];
            assert_true(n > 0);
        }
        /* MEM_RELEASE from inside a reservation is always refused by the built-in host. */
        uint64_t inside = 0, refused = 0;
        for (unsigned t = 0; t < threads; t++) {
            inside += r->thread[t].ops[HM_STRESS_RELEASE_INSIDE];
            refused += r->thread[t].failures[HM_STRESS_RELEASE_INSIDE];
        }
        assert_int_equal(inside, refused);
        assert_true(hm__stress_latency_quantile(r, HM_STRESS_OP_COUNT, 0.5) > 0);
        free(r);
        IHostMemoryManager_Release(m);
    }
}

/* One thread, same seed, deterministic manager: the same calls in the same numbers; the bare mode makes the same
 * calls except the extra queries a verified run makes after refused calls. */
static void runs_are_reproducible(void **state)
{
    (void)state;
    IHostMemoryManager *m1 = sim_manager(), *m2 = sim_manager(), *m3 = sim_manager();
    hm_stress_report *a = run(m1, 1, 5000, 9, true), *b = run(m2, 1, 5000, 9, true), *bare = run(m3, 1, 5000, 9, false);
    for (int op = 0; op < HM_STRESS_OP_COUNT; op++) {
        assert_int_equal(a->thread[0].ops[op], b->thread[0].ops[op]);
        assert_int_equal(a->thread[0].failures[op], b->thread[0].failures[op]);
        if (op != HM_STRESS_QUERY)
            assert_int_equal(a->thread[0].ops[op], bare->thread[0].ops[op]);
    }
    assert_true(bare->thread[0].ops[HM_STRESS_QUERY] <= a->thread[0].ops[HM_STRESS_QUERY]);
    assert_int_equal(bare->thread[0].calls, 0); /* no call log without verification */
    free(a);
    free(b);
    free(bare);
    IHostMemoryManager_Release(m1);
    IHostMemoryManager_Release(m2);
    IHostMemoryManager_Release(m3);
}

/* Against a 3 MiB budget, commits and heap allocations are refused (and each refusal checked to have changed
 * nothing), and the load crossing the thresholds reaches the registered callback, counted by level. */
static void tight_budget_refuses_and_notifies(void **state)
{
    (void)state;
    IHostMemoryManager *m = NULL;
    assert_int_equal(HostMemCreateBuiltinManager("backend=sim,deterministic=1,limit=3M", &m), S_OK);
    hm_stress_report *r = run(m, 1, 30000, 2, true);
    assert_int_equal(atomic_load(&r->violations), 0);
    assert_true(r->thread[0].failures[HM_STRESS_COMMIT] > 0);
    assert_true(r->thread[0].failures[HM_STRESS_HEAP_ALLOC] > 0);
    assert_true(atomic_load(&r->notifications[0]) > 0); /* low */
    assert_true(atomic_load(&r->notifications[1]) > 0); /* neutral, on the way back down */
    free(r);
    IHostMemoryManager_Release(m);
}

/* ---- Lying hosts ------------------------------------------------------------------------------------------- */

typedef enum lie {
    LIE_REGION_TOO_BIG,     /* VirtualQuery: RegionSize one page more (regions merged) */
    LIE_RELEASE_INSIDE,     /* VirtualFree(MEM_RELEASE) from inside a reservation releases it */
    LIE_STALE_COMMIT,       /* VirtualAlloc(MEM_COMMIT): a fresh page holds a stale byte */
    LIE_OLD_PROTECT,        /* VirtualProtect: the old protection is always PAGE_NOACCESS */
    LIE_LOAD_OVER_100,      /* GetMemoryLoad: 101% */
    LIE_DECOMMIT_AND_FAIL,  /* VirtualFree(MEM_DECOMMIT) decommits, then reports E_OUTOFMEMORY */
    LIE_BAD_NOTIFICATION,   /* the callback is told 7, which is no EMemoryAvailable */
} lie;

static lie current_lie;
static IHostMemoryManagerVtbl lying_vtbl;
static const IHostMemoryManagerVtbl *real_vtbl;

static HRESULT STDMETHODCALLTYPE lying_VirtualQuery(IHostMemoryManager *m, void *a, void *buffer, SIZE_T len,
                                                    SIZE_T *got)
{
    HRESULT hr = real_vtbl->VirtualQuery(m, a, buffer, len, got);
    if (SUCCEEDED(hr) && current_lie == LIE_REGION_TOO_BIG)
        ((MEMORY_BASIC_INFORMATION *)buffer)->RegionSize += 4096;
    return hr;
}

static HRESULT STDMETHODCALLTYPE lying_VirtualFree(IHostMemoryManager *m, void *a, SIZE_T size, DWORD type)
{
    if (current_lie == LIE_RELEASE_INSIDE && type == MEM_RELEASE && ((uintptr_t)a & 0xFFFF))
        return real_vtbl->VirtualFree(m, (void *)((uintptr_t)a & ~(uintptr_t)0xFFFF), 0, MEM_RELEASE);
    HRESULT hr = real_vtbl->VirtualFree(m, a, size, type);
    if (SUCCEEDED(hr) && current_lie == LIE_DECOMMIT_AND_FAIL && type == MEM_DECOMMIT)
        return E_OUTOFMEMORY;
    return hr;
}

static HRESULT STDMETHODCALLTYPE lying_VirtualAlloc(IHostMemoryManager *m, void *a, SIZE_T size, DWORD type,
                                                    DWORD protect, EMemoryCriticalLevel level, void **out)
{
    MEMORY_BASIC_INFORMATION before = {0};
    SIZE_T got;
    if (a)
        real_vtbl->VirtualQuery(m, a, &before, sizeof before, &got);
    HRESULT hr = real_vtbl->VirtualAlloc(m, a, size, type, protect, level, out);
    if (SUCCEEDED(hr) && current_lie == LIE_STALE_COMMIT && type == MEM_COMMIT && before.State == MEM_RESERVE)
        *(unsigned char *)*out = 0x5A;
    return hr;
}

static HRESULT STDMETHODCALLTYPE lying_VirtualProtect(IHostMemoryManager *m, void *a, SIZE_T size, DWORD protect,
                                                      DWORD *old)
{
    HRESULT hr = real_vtbl->VirtualProtect(m, a, size, protect, old);
    if (SUCCEEDED(hr) && current_lie == LIE_OLD_PROTECT)
        *old = PAGE_NOACCESS;
    return hr;
}

static HRESULT STDMETHODCALLTYPE lying_GetMemoryLoad(IHostMemoryManager *m, DWORD *load, SIZE_T *available)
{
    HRESULT hr = real_vtbl->GetMemoryLoad(m, load, available);
    if (SUCCEEDED(hr) && current_lie == LIE_LOAD_OVER_100)
        *load = 101;
    return hr;
}

static HRESULT STDMETHODCALLTYPE lying_Register(IHostMemoryManager *m, ICLRMemoryNotificationCallback *callback)
{
    HRESULT hr = real_vtbl->RegisterMemoryNotificationCallback(m, callback);
    if (SUCCEEDED(hr) && current_lie == LIE_BAD_NOTIFICATION)
        ICLRMemoryNotificationCallback_OnMemoryNotification(callback, (EMemoryAvailable)7);
    return hr;
}

static void each_lie_is_caught(void **state)
{
    (void)state;
    static const struct {
        lie lie;
        const char *violation; /* a piece of the message stress gives */
        int last_op;           /* the last call in the thread's log: the one caught (-1: no call made) */
    } cases[] = {
        {LIE_REGION_TOO_BIG, "VirtualQuery(", HM_STRESS_QUERY},
        {LIE_RELEASE_INSIDE, "pages inside the reservation", HM_STRESS_RELEASE_INSIDE},
        {LIE_STALE_COMMIT, "freshly committed page", HM_STRESS_COMMIT},
        {LIE_OLD_PROTECT, "VirtualProtect returned old", HM_STRESS_PROTECT},
        {LIE_LOAD_OVER_100, "GetMemoryLoad reported 101%", HM_STRESS_LOAD},
        {LIE_BAD_NOTIFICATION, "OnMemoryNotification(7): not an EMemoryAvailable", -1},
        {LIE_DECOMMIT_AND_FAIL, "after VirtualFree(MEM_DECOMMIT) failed (E_OUTOFMEMORY), the pages no longer match",
         HM_STRESS_QUERY},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        IHostMemoryManager *m = sim_manager();
        real_vtbl = m->lpVtbl;
        lying_vtbl = *real_vtbl;
        lying_vtbl.VirtualQuery = lying_VirtualQuery;
        lying_vtbl.VirtualFree = lying_VirtualFree;
        lying_vtbl.VirtualAlloc = lying_VirtualAlloc;
        lying_vtbl.VirtualProtect = lying_VirtualProtect;
        lying_vtbl.GetMemoryLoad = lying_GetMemoryLoad;
        lying_vtbl.RegisterMemoryNotificationCallback = lying_Register;
        current_lie = cases[i].lie;
        m->lpVtbl = &lying_vtbl;
        hm_stress_report *r = run(m, 1, 20000, 11, true);
        m->lpVtbl = real_vtbl;
        print_message("lie %d: %s\n", (int)cases[i].lie, r->thread[0].violation);
        assert_int_equal(atomic_load(&r->violations), 1);
        assert_non_null(strstr(r->thread[0].violation, cases[i].violation));
        /* The call log ends with the call that was caught (or the query that showed it). */
        if (cases[i].last_op < 0) {
            assert_int_equal(r->thread[0].calls, 0);
        } else {
            assert_true(r->thread[0].calls > 0);
            assert_int_equal(r->thread[0].ring[(r->thread[0].calls - 1) % HM_STRESS_RING].op, cases[i].last_op);
        }
        free(r);
        IHostMemoryManager_Release(m);
    }
}

/* The load series keeps at most HM_STRESS_LOAD_SAMPLES points: when full, every other point goes (the first stays)
 * and the caller is told to sample half as often, so the points stay evenly spread over the whole run. */
static void load_series_thins_when_full(void **state)
{
    (void)state;
    hm_stress_report *r = calloc(1, sizeof *r);
    assert_non_null(r);
    unsigned step = 1, halvings = 0;
    for (unsigned t = 0; t <= 2000; t += step) {
        hm_stress_load_sample p = {.seconds = t, .load = 1, .available = 2, .live_bytes = 3};
        if (hm__stress_load_series_add(r, &p)) {
            step *= 2;
            halvings++;
        }
        unsigned n = atomic_load(&r->load_samples);
        assert_true(n >= 1 && n <= HM_STRESS_LOAD_SAMPLES);
        assert_true(r->load_series[n - 1].seconds == t); /* the newest point is the last */
        for (unsigned i = 0; i < n; i++) /* every point on the current grid: evenly spread from 0 */
            assert_true(r->load_series[i].seconds == (double)i * step);
    }
    unsigned n = atomic_load(&r->load_samples);
    assert_true(halvings >= 4);
    assert_true(r->load_series[0].seconds == 0 && r->load_series[n - 1].seconds >= 2000 - step);
    free(r);
}

/* The load series: the first point at the start, the last after everything was given back (nothing held), times in
 * order; a run of 300 periods keeps at most HM_STRESS_LOAD_SAMPLES points, every other one dropped as it fills, and
 * still spans the run. Both workloads; the mixed one holds pages and blocks on the way. */
static void load_series_spans_the_run(void **state)
{
    (void)state;
    for (int workload = HM_STRESS_MIXED; workload <= HM_STRESS_HEAP; workload++) {
        IHostMemoryManager *m = sim_manager();
        hm_stress_report *r = malloc(sizeof *r);
        assert_non_null(r);
        hm_stress_config c = {.threads = 2, .seconds = 0.3, .seed = 4, .workload = (hm_stress_workload)workload,
                              .verify = true, .load_every_ms = 1};
        /* The workers take a point when its time has come: a machine too busy to run them (TSan at a load of 8)
         * takes fewer in 0.3 s. Such a run is tried again, longer, up to 2.4 s. */
        unsigned n = 0;
        for (int attempt = 0; attempt < 4; attempt++, c.seconds *= 2) {
            assert_int_equal(hm__stress_run(m, &c, r), S_OK);
            assert_int_equal(atomic_load(&r->violations), 0);
            n = atomic_load(&r->load_samples);
            if (n >= HM_STRESS_LOAD_SAMPLES / 4)
                break;
        }
        assert_true(n >= HM_STRESS_LOAD_SAMPLES / 4 && n <= HM_STRESS_LOAD_SAMPLES);
        assert_true(r->load_series[0].seconds < 0.001); /* taken before the threads start */
        assert_true(r->load_series[n - 1].seconds >= c.seconds * 0.93);
        int64_t most = 0;
        for (unsigned i = 0; i < n; i++) {
            assert_true(i == 0 || r->load_series[i].seconds > r->load_series[i - 1].seconds);
            assert_true(r->load_series[i].live_bytes >= 0 && r->load_series[i].load <= 100);
            most = r->load_series[i].live_bytes > most ? r->load_series[i].live_bytes : most;
        }
        assert_int_equal(r->load_series[n - 1].live_bytes, 0);
        if (workload == HM_STRESS_MIXED)
            assert_true(most > 0);
        assert_int_not_equal(atomic_load(&r->load_first), 0);
        free(r);
        IHostMemoryManager_Release(m);
    }
}

/* A bad configuration is refused before anything runs. */
static void bad_config_is_refused(void **state)
{
    (void)state;
    IHostMemoryManager *m = sim_manager();
    hm_stress_report *r = malloc(sizeof *r);
    static const hm_stress_config bad[] = {
        {.threads = 0, .ops = 10},
        {.threads = HM_STRESS_MAX_THREADS + 1, .ops = 10},
        {.threads = 1, .ops = 0, .seconds = 0},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(hm__stress_run(m, &bad[i], r), E_INVALIDARG);
    assert_int_equal(hm__stress_run(NULL, &(hm_stress_config){.threads = 1, .ops = 1}, r), E_INVALIDARG);
    free(r);
    IHostMemoryManager_Release(m);
}

/* Every call formats to a line naming its method and result. */
static void calls_format_readably(void **state)
{
    (void)state;
    static const struct {
        hm_stress_call call;
        const char *text;
    } cases[] = {
        {{.op = HM_STRESS_RESERVE, .level = eTaskCritical, .hr = S_OK, .size = 0x10000, .result = 0x7f0000},
         "VirtualAlloc(NULL, 0x10000, MEM_RESERVE, PAGE_READWRITE, task) -> S_OK 0x7f0000"},
        {{.op = HM_STRESS_COMMIT, .level = eProcessCritical, .hr = E_OUTOFMEMORY, .address = 0x7f1000, .size = 0x2000},
         "VirtualAlloc(0x7f1000, 0x2000, MEM_COMMIT, PAGE_READWRITE, process) -> E_OUTOFMEMORY"},
        {{.op = HM_STRESS_RELEASE_INSIDE, .hr = HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS), .address = 0x7f3000},
         "VirtualFree(0x7f3000, 0, MEM_RELEASE) -> HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS)"},
        {{.op = HM_STRESS_HEAP_FREE, .hr = S_OK, .address = 0x1234, .result = 0x99},
         "IHostMalloc(0x99)::Free(0x1234) -> S_OK"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char line[256];
        hm__stress_format_call(&cases[i].call, line, sizeof line);
        assert_string_equal(line, cases[i].text);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(builtin_runs_clean),    cmocka_unit_test(runs_are_reproducible),
        cmocka_unit_test(tight_budget_refuses_and_notifies),
        cmocka_unit_test(each_lie_is_caught),    cmocka_unit_test(bad_config_is_refused),
        cmocka_unit_test(calls_format_readably),  cmocka_unit_test(load_series_spans_the_run),
        cmocka_unit_test(load_series_thins_when_full),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

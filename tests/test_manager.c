/* The built-in manager as a whole: COM rules, the budget per critical level, memory load, notifications, heaps
 * drawing on the budget, the address-space ledger, and the factory's environment variables. */
#include <hostmem/hostmem.h>

#include <hostmem/faults.h>

#include "manager.h" /* hm__manager_reset */

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "counting_callback.h"

#define MB(x) ((size_t)(x) << 20)

static IHostMemoryManager *create(const char *options)
{
    IHostMemoryManager *m = NULL;
    HRESULT hr = HostMemCreateBuiltinManager(options, &m);
    if (hr != S_OK)
        fail_msg("HostMemCreateBuiltinManager(%s): %s %s", options ? options : "NULL", hm_hr_name(hr), HostMemLastError());
    return m;
}

/* Calls back into the manager (cb->ctx) from inside a notification: must not deadlock, since callbacks run with no
 * lock held. */
static void reenter_manager(hm_counting_callback *cb, EMemoryAvailable e)
{
    IHostMemoryManager *m = cb->ctx;
    DWORD load;
    SIZE_T avail;
    assert_int_equal(IHostMemoryManager_GetMemoryLoad(m, &load, &avail), S_OK);
    void *p;
    if (IHostMemoryManager_VirtualAlloc(m, NULL, 4096, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &p) == S_OK)
        IHostMemoryManager_VirtualFree(m, p, 0, MEM_RELEASE);
}

/* ---- COM ------------------------------------------------------------------------------------------------ */

/* QueryInterface answers IUnknown and IHostMemoryManager with the same pointer and a new reference; anything
 * else is E_NOINTERFACE with *ppv NULL; Release returns the count and the last one destroys. */
static void test_com_rules(void **state)
{
    IHostMemoryManager *m = create(NULL);
    void *p = (void *)1;
    assert_int_equal(IHostMemoryManager_QueryInterface(m, &IID_IUnknown, &p), S_OK);
    assert_ptr_equal(p, m);
    assert_int_equal(IHostMemoryManager_QueryInterface(m, &IID_IHostMemoryManager, &p), S_OK);
    assert_ptr_equal(p, m);
    assert_int_equal(IHostMemoryManager_QueryInterface(m, &IID_IHostMalloc, &p), E_NOINTERFACE);
    assert_null(p);
    assert_int_equal(IHostMemoryManager_QueryInterface(m, &IID_IUnknown, NULL), E_POINTER);
    assert_int_equal(IHostMemoryManager_AddRef(m), 4);
    assert_int_equal(IHostMemoryManager_Release(m), 3);
    assert_int_equal(IHostMemoryManager_Release(m), 2);
    assert_int_equal(IHostMemoryManager_Release(m), 1);
    assert_int_equal(IHostMemoryManager_Release(m), 0);
    assert_int_equal(HostMemCreateBuiltinManager(NULL, NULL), E_POINTER);
}

/* ---- Budget and critical levels ----------------------------------------------------------------------- */

typedef struct level_case {
    EMemoryCriticalLevel level;
    size_t ceiling; /* with limit=16M, reserve.process=2M, reserve.appdomain=2M */
} level_case;

/* Each level commits exactly up to its ceiling: task 12M, appdomain 14M, process 16M; one page more fails with
 * E_OUTOFMEMORY and changes nothing. */
static void test_budget_per_level(void **state)
{
    static const level_case cases[] = {
        {eTaskCritical, MB(12)}, {eAppDomainCritical, MB(14)}, {eProcessCritical, MB(16)}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        IHostMemoryManager *m = create("limit=16M,reserve.process=2M,reserve.appdomain=2M,backend=sim");
        void *big, *more = (void *)1;
        assert_int_equal(IHostMemoryManager_VirtualAlloc(m, NULL, MB(32), MEM_RESERVE, PAGE_READWRITE, cases[i].level, &big),
                         S_OK);
        void *c;
        assert_int_equal(IHostMemoryManager_VirtualAlloc(m, big, cases[i].ceiling, MEM_COMMIT, PAGE_READWRITE,
                                                         cases[i].level, &c),
                         S_OK);
        assert_int_equal(IHostMemoryManager_VirtualAlloc(m, (char *)big + cases[i].ceiling, 4096, MEM_COMMIT,
                                                         PAGE_READWRITE, cases[i].level, &more),
                         E_OUTOFMEMORY);
        assert_null(more);
        hm_stats st;
        assert_int_equal(HostMemGetStats(m, &st), S_OK);
        assert_int_equal(st.committed_bytes, cases[i].ceiling);
        /* A lower level fails where a higher one would still succeed. */
        if (cases[i].level != eTaskCritical)
            assert_int_equal(IHostMemoryManager_VirtualAlloc(m, NULL, 4096, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &more),
                             E_OUTOFMEMORY);
        /* Recommitting committed pages costs nothing. */
        assert_int_equal(IHostMemoryManager_VirtualAlloc(m, big, 4096, MEM_COMMIT, PAGE_READONLY, cases[i].level, &c),
                         S_OK);
        /* Decommit gives the budget back. */
        assert_int_equal(IHostMemoryManager_VirtualFree(m, big, MB(1), MEM_DECOMMIT), S_OK);
        assert_int_equal(IHostMemoryManager_VirtualAlloc(m, (char *)big + cases[i].ceiling, MB(1), MEM_COMMIT,
                                                         PAGE_READWRITE, cases[i].level, &c),
                         S_OK);
        char msg[256];
        assert_int_equal(HostMemCheckConsistency(m, msg, sizeof msg), S_OK);
        assert_int_equal(IHostMemoryManager_VirtualFree(m, big, 0, MEM_RELEASE), S_OK);
        IHostMemoryManager_Release(m);
    }
}

/* GetMemoryLoad reports the percentage of the budget in use and the bytes left. */
static void test_memory_load(void **state)
{
    IHostMemoryManager *m = create("limit=100M,backend=sim");
    DWORD load = 99;
    SIZE_T avail = 0;
    assert_int_equal(IHostMemoryManager_GetMemoryLoad(m, &load, &avail), S_OK);
    assert_int_equal(load, 0);
    assert_int_equal(avail, MB(100));
    void *p;
    assert_int_equal(IHostMemoryManager_VirtualAlloc(m, NULL, MB(50), MEM_COMMIT, PAGE_READWRITE, eProcessCritical, &p),
                     S_OK);
    assert_int_equal(IHostMemoryManager_GetMemoryLoad(m, &load, &avail), S_OK);
    assert_int_equal(load, 50);
    assert_int_equal(avail, MB(50));
    /* The ledger counts too. */
    assert_int_equal(IHostMemoryManager_AcquiredVirtualAddressSpace(m, (void *)0x50000000, MB(25)), S_OK);
    assert_int_equal(IHostMemoryManager_GetMemoryLoad(m, &load, &avail), S_OK);
    assert_int_equal(load, 75);
    assert_int_equal(IHostMemoryManager_ReleasedVirtualAddressSpace(m, (void *)0x50000000), S_OK);
    assert_int_equal(IHostMemoryManager_VirtualFree(m, p, 0, MEM_RELEASE), S_OK);
    assert_int_equal(IHostMemoryManager_GetMemoryLoad(m, &load, &avail), S_OK);
    assert_int_equal(load, 0);
    IHostMemoryManager_Release(m);
}

/* Crossing the thresholds sends Low and then High; the registered callback gets one reference, released with the
 * manager, and may call back into the manager. */
static void test_notifications(void **state)
{
    IHostMemoryManager *m = create("limit=100M,backend=sim,notify.low=80,notify.high=40,notify.hysteresis=5");
    hm_counting_callback cb = HM_COUNTING_CALLBACK_INIT;
    cb.on_notify = reenter_manager;
    cb.ctx = m;
    assert_int_equal(IHostMemoryManager_RegisterMemoryNotificationCallback(m, &cb.iface), S_OK);
    assert_int_equal(atomic_load(&cb.refs), 2);
    assert_int_equal(IHostMemoryManager_RegisterMemoryNotificationCallback(m, NULL), E_POINTER);
    void *p, *q;
    assert_int_equal(IHostMemoryManager_VirtualAlloc(m, NULL, MB(85), MEM_COMMIT, PAGE_READWRITE, eProcessCritical, &p),
                     S_OK);
    int low_at = cb.count;
    assert_true(low_at >= 1);
    assert_int_equal(cb.seen[low_at - 1], eMemoryAvailableLow);
    /* Inside the hysteresis band nothing changes. */
    assert_int_equal(IHostMemoryManager_VirtualFree(m, p, MB(8), MEM_DECOMMIT), S_OK);
    assert_int_equal(cb.count, low_at);
    /* Far below: High. */
    assert_int_equal(IHostMemoryManager_VirtualFree(m, p, 0, MEM_RELEASE), S_OK);
    assert_true(cb.count > low_at);
    assert_int_equal(cb.seen[cb.count - 1], eMemoryAvailableHigh);
    assert_int_equal(IHostMemoryManager_VirtualAlloc(m, NULL, MB(10), MEM_COMMIT, PAGE_READWRITE, eProcessCritical, &q),
                     S_OK);
    assert_int_equal(IHostMemoryManager_VirtualFree(m, q, 0, MEM_RELEASE), S_OK);
    hm_stats st;
    assert_int_equal(HostMemGetStats(m, &st), S_OK);
    assert_int_equal(st.notifications, (uint64_t)cb.count);
    assert_int_equal(IHostMemoryManager_Release(m), 0);
    assert_int_equal(atomic_load(&cb.refs), 1);
}

/* Heaps draw their memory through the manager's VirtualAlloc at the caller's level, keep a reference on the
 * manager, and report leaks when their last reference goes. */
static void test_heaps(void **state)
{
    IHostMemoryManager *m = create("limit=64M,backend=sim");
    IHostMalloc *h = NULL;
    assert_int_equal(IHostMemoryManager_CreateMalloc(m, MALLOC_THREADSAFE | MALLOC_EXECUTABLE, &h), S_OK);
    assert_non_null(h);
    assert_int_equal(IHostMalloc_Release(h), 0);
    assert_int_equal(IHostMemoryManager_CreateMalloc(m, 0x10, &h), E_INVALIDARG);
    assert_null(h);
    assert_int_equal(IHostMemoryManager_CreateMalloc(m, MALLOC_THREADSAFE, &h), S_OK);
    void *blocks[100];
    for (int i = 0; i < 100; i++)
        assert_int_equal(IHostMalloc_Alloc(h, 100 + (size_t)i, eTaskCritical, &blocks[i]), S_OK);
    hm_stats st;
    assert_int_equal(HostMemGetStats(m, &st), S_OK);
    assert_true(st.committed_bytes > 0);
    assert_int_equal(st.heap_count, 1);
    for (int i = 0; i < 99; i++)
        assert_int_equal(IHostMalloc_Free(h, blocks[i]), S_OK);
    void *leak;
    assert_int_equal(IHostMalloc_DebugAlloc(h, 48, eAppDomainCritical, (char *)"leaky.c", 42, &leak), S_OK);
    hm_leak leaks[4];
    size_t n = HostMemHeapLeaks(h, leaks, 4);
    assert_int_equal(n, 2);
    /* The manager outlives its release while a heap holds it. */
    IHostMemoryManager_AddRef(m);
    assert_int_equal(IHostMemoryManager_Release(m), 2);
    assert_int_equal(IHostMalloc_Release(h), 0);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_int_equal(HostMemPrintLeaks(m, f, 0), 2);
    fclose(f);
    assert_non_null(strstr(text, "leaky.c:42"));
    free(text);
    assert_int_equal(HostMemGetStats(m, &st), S_OK);
    assert_int_equal(st.heap_count, 0);
    assert_int_equal(st.committed_bytes, 0);
    assert_int_equal(IHostMemoryManager_Release(m), 0);
}

/* A heap under budget pressure fails its allocations with E_OUTOFMEMORY at the lower levels first. */
static void test_heap_budget(void **state)
{
    IHostMemoryManager *m = create("limit=4M,reserve.process=1M,reserve.appdomain=1M,backend=sim");
    IHostMalloc *h;
    assert_int_equal(IHostMemoryManager_CreateMalloc(m, MALLOC_THREADSAFE, &h), S_OK);
    void *p = NULL;
    size_t task = 0;
    while (IHostMalloc_Alloc(h, 60000, eTaskCritical, &p) == S_OK)
        task++;
    assert_null(p);
    assert_true(task > 0);
    assert_int_equal(IHostMalloc_Alloc(h, 60000, eProcessCritical, &p), S_OK);
    assert_non_null(p);
    IHostMalloc_Release(h);
    IHostMemoryManager_Release(m);
}

/* The ledger: inconsistent calls are refused with HOST_E_INVALIDOPERATION, consistent ones charge the budget. */
static void test_ledger(void **state)
{
    IHostMemoryManager *m = create("limit=64M,backend=sim");
    assert_int_equal(IHostMemoryManager_NeedsVirtualAddressSpace(m, NULL, MB(1)), S_OK);
    assert_int_equal(IHostMemoryManager_NeedsVirtualAddressSpace(m, NULL, MB(1024)), E_OUTOFMEMORY);
    assert_int_equal(IHostMemoryManager_AcquiredVirtualAddressSpace(m, (void *)0x60000000, MB(1)), S_OK);
    assert_int_equal(IHostMemoryManager_AcquiredVirtualAddressSpace(m, (void *)0x60080000, MB(1)),
                     HOST_E_INVALIDOPERATION);
    assert_int_equal(IHostMemoryManager_ReleasedVirtualAddressSpace(m, (void *)0x70000000), HOST_E_INVALIDOPERATION);
    hm_stats st;
    assert_int_equal(HostMemGetStats(m, &st), S_OK);
    assert_int_equal(st.ledger_ranges, 1);
    assert_int_equal(st.ledger_bytes, MB(1));
    assert_int_equal(IHostMemoryManager_ReleasedVirtualAddressSpace(m, (void *)0x60000000), S_OK);
    assert_int_equal(HostMemGetStats(m, &st), S_OK);
    assert_int_equal(st.ledger_ranges, 0);
    assert_int_equal(st.failures[HM_METHOD_RELEASED_VAS], 1);
    IHostMemoryManager_Release(m);
}

/* The factory honours HOSTMEM_FAULTS: the wrapped manager fails as the spec says, and diagnostics see through
 * the wrapper. A malformed spec fails the factory with a message. */
static void test_factory_environment(void **state)
{
    setenv("HOSTMEM_FAULTS", "VirtualAlloc,nth=2", 1);
    IHostMemoryManager *m;
    assert_int_equal(HostMemCreateManager("backend=sim", &m), S_OK);
    void *p, *q = (void *)1;
    assert_int_equal(IHostMemoryManager_VirtualAlloc(m, NULL, 4096, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &p), S_OK);
    assert_int_equal(IHostMemoryManager_VirtualAlloc(m, NULL, 4096, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &q),
                     E_OUTOFMEMORY);
    assert_null(q);
    hm_stats st;
    assert_int_equal(HostMemGetStats(m, &st), S_OK);
    assert_int_equal(st.reservations, 1);
    assert_int_equal(IHostMemoryManager_VirtualFree(m, p, 0, MEM_RELEASE), S_OK);
    IHostMemoryManager_Release(m);
    setenv("HOSTMEM_FAULTS", "VirtualAlloc,bogus=1", 1);
    m = (IHostMemoryManager *)1;
    assert_int_equal(HostMemCreateManager(NULL, &m), E_INVALIDARG);
    assert_non_null(strstr(HostMemLastError(), "bogus"));
    unsetenv("HOSTMEM_FAULTS");
}

/* ---- Reset: a reset manager answers as a new one ----------------------------------------------------------- */

typedef struct answers {
    uint64_t v[8192];
    size_t n;
} answers;

static void note(answers *a, uint64_t v)
{
    if (a->n < sizeof a->v / sizeof a->v[0])
        a->v[a->n++] = v;
}

static void note_query(answers *a, IHostMemoryManager *m, uintptr_t address)
{
    MEMORY_BASIC_INFORMATION mbi;
    memset(&mbi, 0, sizeof mbi);
    SIZE_T got = 0;
    note(a, (uint64_t)IHostMemoryManager_VirtualQuery(m, (void *)address, &mbi, sizeof mbi, &got));
    note(a, got);
    note(a, (uintptr_t)mbi.BaseAddress);
    note(a, (uintptr_t)mbi.AllocationBase);
    note(a, mbi.AllocationProtect);
    /* Free space is compared up to the end of the area the script uses: beyond it the process map holds whatever
     * else the process mapped meanwhile (the manager's own tables among them), which is no part of its state. */
    const uintptr_t area_end = 0x7e9840000000;
    uintptr_t lo = (uintptr_t)mbi.BaseAddress;
    note(a, mbi.State == MEM_FREE && lo < area_end && mbi.RegionSize > area_end - lo ? area_end - lo : mbi.RegionSize);
    note(a, mbi.State);
    note(a, mbi.Protect);
    note(a, mbi.Type);
}

static void note_stats(answers *a, IHostMemoryManager *m)
{
    hm_stats st;
    note(a, (uint64_t)HostMemGetStats(m, &st));
    note(a, st.reservations), note(a, st.reserved_bytes), note(a, st.committed_bytes);
    note(a, st.peak_committed_bytes), note(a, st.guard_trips), note(a, st.spans), note(a, st.heap_count);
    note(a, st.heap_live_blocks), note(a, st.heap_live_bytes), note(a, st.ledger_ranges), note(a, st.ledger_bytes);
    note(a, st.notifications), note(a, st.memory_load);
    for (int i = 0; i < HM_METHOD_COUNT; i++)
        note(a, st.calls[i]), note(a, st.failures[i]);
    DWORD load = 0;
    SIZE_T available = 0;
    note(a, (uint64_t)IHostMemoryManager_GetMemoryLoad(m, &load, &available));
    note(a, load), note(a, available);
    char msg[256];
    note(a, (uint64_t)HostMemCheckConsistency(m, msg, sizeof msg));
}

static uint64_t page_sum(uintptr_t p, size_t bytes)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < bytes; i += 8)
        sum = sum * 31 + *(volatile uint64_t *)(p + i);
    return sum;
}

/* One fixed sequence of calls touching every part of a manager; every answer (results, addresses, VirtualQuery
 * fields, page contents, statistics) goes to `a`. `dirty` makes it leave much behind: spans, a dedicated span, live
 * reservations with written pages, guard pages, acquired ranges, callbacks, a leaking heap. */
static void script(IHostMemoryManager *m, answers *a, bool dirty, hm_counting_callback *cb)
{
    const uintptr_t base = 0x7e9000000000; /* deterministic mode's first span */
    /* Before anything is reserved: the span does not exist yet. */
    note_query(a, m, base);
    note_query(a, m, base - 0x10000);
    note_query(a, m, base + MB(256) + 0x1000);
    note_stats(a, m);
    void *p[16] = {0};
    note(a, (uint64_t)IHostMemoryManager_VirtualAlloc(m, NULL, 0x30000, MEM_RESERVE, PAGE_READWRITE, eTaskCritical,
                                                      &p[0]));
    note(a, (uintptr_t)p[0]);
    note(a, (uint64_t)IHostMemoryManager_VirtualAlloc(m, p[0], 0x8000, MEM_COMMIT, PAGE_READWRITE, eTaskCritical,
                                                      &p[1]));
    note(a, page_sum((uintptr_t)p[0], 0x8000)); /* zero */
    memset(p[0], dirty ? 0x5a : 0x11, 0x8000);
    note(a, (uint64_t)IHostMemoryManager_VirtualFree(m, (char *)p[0] + 0x2000, 0x1000, MEM_DECOMMIT));
    note(a, (uint64_t)IHostMemoryManager_VirtualAlloc(m, p[0], 0x8000, MEM_COMMIT, PAGE_READWRITE, eTaskCritical,
                                                      &p[1]));
    note(a, page_sum((uintptr_t)p[0], 0x8000));
    DWORD old = 0;
    note(a, (uint64_t)IHostMemoryManager_VirtualProtect(m, (char *)p[0] + 0x4000, 0x1000, PAGE_READONLY | PAGE_GUARD,
                                                        &old));
    note(a, old);
    for (uintptr_t q = (uintptr_t)p[0]; q < (uintptr_t)p[0] + 0x40000; q += 0x1000)
        note_query(a, m, q);
    /* At fixed addresses, inside the span and outside it; commit-reserve anywhere, top-down; a large one. */
    static const uintptr_t at[] = {0x7e9001230000, 0x7e9000050000, 0x7e9000000000 - 0x100000, 0x7e9800000000};
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
        note(a, (uint64_t)IHostMemoryManager_VirtualAlloc(m, (void *)at[i], 0x12000, MEM_RESERVE | MEM_COMMIT,
                                                          PAGE_EXECUTE_READWRITE, eAppDomainCritical, &p[2 + i]));
        note(a, (uintptr_t)p[2 + i]);
        note_query(a, m, at[i] + 0x11000);
        note_query(a, m, at[i] + 0x12000);
        if (p[2 + i]) {
            note(a, page_sum(at[i], 0x12000));
            if (dirty) /* a reset keeps the (dedicated) spans mapped: they must read as zero again */
                memset(p[2 + i], 0x77, 0x12000);
        }
    }
    note(a, (uint64_t)IHostMemoryManager_VirtualAlloc(m, NULL, 0x5000, MEM_RESERVE | MEM_COMMIT | MEM_TOP_DOWN,
                                                      PAGE_READWRITE | PAGE_NOCACHE, eProcessCritical, &p[6]));
    note(a, (uintptr_t)p[6]);
    note(a, (uint64_t)IHostMemoryManager_VirtualAlloc(m, NULL, MB(100), MEM_RESERVE, PAGE_READWRITE, eTaskCritical,
                                                      &p[7]));
    note(a, (uintptr_t)p[7]);
    note_query(a, m, (uintptr_t)p[7] + MB(50));
    note(a, (uint64_t)IHostMemoryManager_VirtualAlloc(m, NULL, MB(40), MEM_RESERVE, PAGE_READWRITE, eTaskCritical,
                                                      &p[8]));
    note(a, (uintptr_t)p[8]);
    note(a, (uint64_t)IHostMemoryManager_VirtualAlloc(m, NULL, MB(300), MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
                                                      eTaskCritical, &p[9]));
    note(a, (uintptr_t)p[9]); /* over the 256M budget */
    /* Heaps, the ledger, a callback. */
    IHostMalloc *heap = NULL;
    note(a, (uint64_t)IHostMemoryManager_CreateMalloc(m, MALLOC_THREADSAFE, &heap));
    void *blocks[8];
    for (int i = 0; i < 8; i++) {
        blocks[i] = NULL;
        note(a, (uint64_t)IHostMalloc_Alloc(heap, (size_t)(16 << i), eTaskCritical, &blocks[i]));
        note(a, (uintptr_t)blocks[i]);
    }
    note(a, (uint64_t)IHostMalloc_Free(heap, blocks[3]));
    note(a, (uint64_t)IHostMemoryManager_AcquiredVirtualAddressSpace(m, (void *)0x5e0000000000, MB(8)));
    note(a, (uint64_t)IHostMemoryManager_NeedsVirtualAddressSpace(m, (void *)0x5e0001000000, MB(300)));
    if (cb)
        note(a, (uint64_t)IHostMemoryManager_RegisterMemoryNotificationCallback(m, &cb->iface));
    note(a, (uint64_t)IHostMemoryManager_VirtualAlloc(m, NULL, MB(64), MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
                                                      eProcessCritical, &p[10]));
    note(a, (uintptr_t)p[10]);
    note_stats(a, m);
    if (cb)
        note(a, (uint64_t)cb->count);
    if (dirty) { /* leave it all behind, and a leak */
        IHostMalloc_Release(heap);
        return;
    }
    for (int i = 0; i < 8; i++)
        if (i != 3)
            note(a, (uint64_t)IHostMalloc_Free(heap, blocks[i]));
    IHostMalloc_Release(heap);
    for (int i = 0; i < 16; i++)
        if (p[i] && i != 1)
            note(a, (uint64_t)IHostMemoryManager_VirtualFree(m, p[i], 0, MEM_RELEASE));
    note(a, (uint64_t)IHostMemoryManager_ReleasedVirtualAddressSpace(m, (void *)0x5e0000000000));
    note_query(a, m, base);
    note_stats(a, m);
}

static void assert_same_answers(const answers *a, const answers *b, const char *what)
{
    assert_int_equal(a->n, b->n);
    for (size_t i = 0; i < a->n; i++)
        if (a->v[i] != b->v[i])
            fail_msg("%s: answer %zu differs: %#llx, a new manager gave %#llx", what, i, (unsigned long long)b->v[i],
                     (unsigned long long)a->v[i]);
}

static void reset_answers_as_new(const char *options)
{
    static answers fresh, again, after_dirty, dirt;
    memset(&fresh, 0, sizeof fresh);
    memset(&again, 0, sizeof again);
    memset(&after_dirty, 0, sizeof after_dirty);
    hm_counting_callback cb = HM_COUNTING_CALLBACK_INIT;
    IHostMemoryManager *m = create(options);
    script(m, &fresh, false, &cb);
    assert_int_equal(IHostMemoryManager_Release(m), 0);
    assert_int_equal(atomic_load(&cb.refs), 1);
    assert_true(fresh.n > 500);

    m = create(options);
    /* Reset right away, after the clean script, and after one that leaves everything behind. */
    assert_int_equal(hm__manager_reset(m), S_OK);
    cb = (hm_counting_callback)HM_COUNTING_CALLBACK_INIT;
    script(m, &again, false, &cb);
    assert_same_answers(&fresh, &again, "after a reset of a new manager");
    assert_int_equal(hm__manager_reset(m), S_OK);
    assert_int_equal(atomic_load(&cb.refs), 1); /* the reset released the callback */
    for (int round = 0; round < 2; round++) {
        memset(&dirt, 0, sizeof dirt);
        hm_counting_callback other = HM_COUNTING_CALLBACK_INIT;
        script(m, &dirt, true, &other);
        assert_int_equal(hm__manager_reset(m), S_OK);
        assert_int_equal(atomic_load(&other.refs), 1);
        hm_stats st;
        assert_int_equal(HostMemGetStats(m, &st), S_OK);
        assert_int_equal(st.reservations + st.committed_bytes + st.ledger_ranges + st.spans + st.heap_count, 0);
        assert_int_equal(HostMemPrintLeaks(m, stderr, 0), 0); /* the leak report went with the reset */
        memset(&after_dirty, 0, sizeof after_dirty);
        cb = (hm_counting_callback)HM_COUNTING_CALLBACK_INIT;
        script(m, &after_dirty, false, &cb);
        assert_same_answers(&fresh, &after_dirty, "after a reset of a used manager");
        assert_int_equal(hm__manager_reset(m), S_OK);
    }
    IHostMemoryManager_Release(m);
}

/* hm__manager_reset puts a manager back to its new state: the same calls get the same answers (addresses, regions,
 * contents, statistics, budget, notifications) as from a new manager, however it was used before. The fuzz targets
 * rely on it to reuse one manager while each input still reproduces alone. */
static void test_reset_answers_as_new(void **state)
{
    (void)state;
    reset_answers_as_new("backend=sim,deterministic=1,limit=256M,span=256M");
    reset_answers_as_new("backend=os,deterministic=1,limit=256M,span=256M");
}

/* Reset refuses while something else holds the manager: a live heap, another reference, a decorator. */
static void test_reset_refused(void **state)
{
    (void)state;
    IHostMemoryManager *m = create("backend=sim,deterministic=1");
    void *p;
    assert_int_equal(IHostMemoryManager_VirtualAlloc(m, NULL, 0x10000, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &p),
                     S_OK);
    IHostMalloc *heap;
    assert_int_equal(IHostMemoryManager_CreateMalloc(m, 0, &heap), S_OK);
    assert_int_equal(hm__manager_reset(m), HOST_E_INVALIDOPERATION);
    IHostMalloc_Release(heap);
    IHostMemoryManager_AddRef(m);
    assert_int_equal(hm__manager_reset(m), HOST_E_INVALIDOPERATION);
    IHostMemoryManager_Release(m);
    hm_stats st;
    assert_int_equal(HostMemGetStats(m, &st), S_OK);
    assert_int_equal(st.reservations, 1); /* nothing changed */
    IHostMemoryManager *wrapped;
    assert_int_equal(HostMemWrapFaults(m, "VirtualAlloc,nth=1", &wrapped), S_OK);
    assert_int_equal(hm__manager_reset(wrapped), E_NOINTERFACE);
    IHostMemoryManager_Release(wrapped);
    assert_int_equal(hm__manager_reset(m), S_OK);
    assert_int_equal(HostMemGetStats(m, &st), S_OK);
    assert_int_equal(st.reservations, 0);
    assert_int_equal(hm__manager_reset(NULL), E_NOINTERFACE);
    IHostMemoryManager_Release(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_com_rules),     cmocka_unit_test(test_budget_per_level),
        cmocka_unit_test(test_memory_load),   cmocka_unit_test(test_notifications),
        cmocka_unit_test(test_heaps),         cmocka_unit_test(test_heap_budget),
        cmocka_unit_test(test_ledger),        cmocka_unit_test(test_factory_environment),
        cmocka_unit_test(test_reset_answers_as_new), cmocka_unit_test(test_reset_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* The fault layer (faults/): every selector alone and combined, determinism, untouched inner host, heaps, pressure,
 * the log, spec errors, and exploration. The inner host is a mock that records the calls reaching it. */
#include <hostmem/hostmem.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "counting_callback.h"

/* ---- A mock host: answers S_OK with fake addresses, counts what reaches it ------------------------------------- */
typedef struct mock {
    IHostMemoryManager iface;
    IHostMalloc heap_iface;
    atomic_int ref, heap_ref;
    int calls[HM_METHOD_COUNT];
    uintptr_t next;
    DWORD load;
    ICLRMemoryNotificationCallback *callback;
} mock;

static inline mock *impl_from_IHostMemoryManager(IHostMemoryManager *iface)
{
    return HM_CONTAINER_OF(iface, mock, iface);
}
static inline mock *impl_from_IHostMalloc(IHostMalloc *iface) { return HM_CONTAINER_OF(iface, mock, heap_iface); }

static HRESULT STDMETHODCALLTYPE m_QI(IHostMemoryManager *i, REFIID r, void **p) { (void)i, (void)r; *p = NULL; return E_NOINTERFACE; }
static ULONG STDMETHODCALLTYPE m_AddRef(IHostMemoryManager *i) { return atomic_fetch_add(&impl_from_IHostMemoryManager(i)->ref, 1) + 1; }
static ULONG STDMETHODCALLTYPE m_Release(IHostMemoryManager *i) { return atomic_fetch_sub(&impl_from_IHostMemoryManager(i)->ref, 1) - 1; }
static HRESULT STDMETHODCALLTYPE m_CreateMalloc(IHostMemoryManager *i, DWORD t, IHostMalloc **pp)
{
    mock *m = impl_from_IHostMemoryManager(i);
    m->calls[HM_METHOD_CREATE_MALLOC]++;
    atomic_fetch_add(&m->heap_ref, 1);
    *pp = &m->heap_iface;
    return S_OK;
}
static HRESULT STDMETHODCALLTYPE m_VirtualAlloc(IHostMemoryManager *i, void *a, SIZE_T s, DWORD t, DWORD p,
                                                EMemoryCriticalLevel l, void **pp)
{
    mock *m = impl_from_IHostMemoryManager(i);
    m->calls[HM_METHOD_VIRTUAL_ALLOC]++;
    *pp = a ? a : (void *)(m->next += 0x10000);
    return S_OK;
}
static HRESULT STDMETHODCALLTYPE m_VirtualFree(IHostMemoryManager *i, LPVOID a, SIZE_T s, DWORD t)
{
    impl_from_IHostMemoryManager(i)->calls[HM_METHOD_VIRTUAL_FREE]++;
    return S_OK;
}
static HRESULT STDMETHODCALLTYPE m_VirtualQuery(IHostMemoryManager *i, void *a, void *b, SIZE_T l, SIZE_T *r)
{
    impl_from_IHostMemoryManager(i)->calls[HM_METHOD_VIRTUAL_QUERY]++;
    memset(b, 0, sizeof(MEMORY_BASIC_INFORMATION));
    *r = sizeof(MEMORY_BASIC_INFORMATION);
    return S_OK;
}
static HRESULT STDMETHODCALLTYPE m_VirtualProtect(IHostMemoryManager *i, void *a, SIZE_T s, DWORD p, DWORD *o)
{
    impl_from_IHostMemoryManager(i)->calls[HM_METHOD_VIRTUAL_PROTECT]++;
    *o = PAGE_READWRITE;
    return S_OK;
}
static HRESULT STDMETHODCALLTYPE m_GetMemoryLoad(IHostMemoryManager *i, DWORD *l, SIZE_T *a)
{
    mock *m = impl_from_IHostMemoryManager(i);
    m->calls[HM_METHOD_GET_MEMORY_LOAD]++;
    *l = m->load;
    *a = 12345;
    return S_OK;
}
static HRESULT STDMETHODCALLTYPE m_Register(IHostMemoryManager *i, ICLRMemoryNotificationCallback *cb)
{
    mock *m = impl_from_IHostMemoryManager(i);
    m->calls[HM_METHOD_REGISTER_CALLBACK]++;
    m->callback = cb;
    return S_OK;
}
static HRESULT STDMETHODCALLTYPE m_Needs(IHostMemoryManager *i, LPVOID a, SIZE_T s) { impl_from_IHostMemoryManager(i)->calls[HM_METHOD_NEEDS_VAS]++; return S_OK; }
static HRESULT STDMETHODCALLTYPE m_Acquired(IHostMemoryManager *i, LPVOID a, SIZE_T s) { impl_from_IHostMemoryManager(i)->calls[HM_METHOD_ACQUIRED_VAS]++; return S_OK; }
static HRESULT STDMETHODCALLTYPE m_Released(IHostMemoryManager *i, LPVOID a) { impl_from_IHostMemoryManager(i)->calls[HM_METHOD_RELEASED_VAS]++; return S_OK; }
static const IHostMemoryManagerVtbl mock_vtbl = {m_QI, m_AddRef, m_Release, m_CreateMalloc, m_VirtualAlloc, m_VirtualFree,
                                                 m_VirtualQuery, m_VirtualProtect, m_GetMemoryLoad, m_Register, m_Needs,
                                                 m_Acquired, m_Released};

static HRESULT STDMETHODCALLTYPE h_QI(IHostMalloc *i, REFIID r, void **p) { (void)i, (void)r; *p = NULL; return E_NOINTERFACE; }
static ULONG STDMETHODCALLTYPE h_AddRef(IHostMalloc *i) { return atomic_fetch_add(&impl_from_IHostMalloc(i)->heap_ref, 1) + 1; }
static ULONG STDMETHODCALLTYPE h_Release(IHostMalloc *i) { return atomic_fetch_sub(&impl_from_IHostMalloc(i)->heap_ref, 1) - 1; }
static HRESULT STDMETHODCALLTYPE h_Alloc(IHostMalloc *i, SIZE_T s, EMemoryCriticalLevel l, void **pp)
{
    mock *m = impl_from_IHostMalloc(i);
    m->calls[HM_METHOD_HEAP_ALLOC]++;
    *pp = (void *)(m->next += 16);
    return S_OK;
}
static HRESULT STDMETHODCALLTYPE h_DebugAlloc(IHostMalloc *i, SIZE_T s, EMemoryCriticalLevel l, char *f, int n, void **pp)
{
    mock *m = impl_from_IHostMalloc(i);
    m->calls[HM_METHOD_HEAP_DEBUG_ALLOC]++;
    *pp = (void *)(m->next += 16);
    return S_OK;
}
static HRESULT STDMETHODCALLTYPE h_Free(IHostMalloc *i, void *p) { impl_from_IHostMalloc(i)->calls[HM_METHOD_HEAP_FREE]++; return S_OK; }
static const IHostMallocVtbl mock_heap_vtbl = {h_QI, h_AddRef, h_Release, h_Alloc, h_DebugAlloc, h_Free};

static void mock_init(mock *m)
{
    memset(m, 0, sizeof *m);
    m->iface.lpVtbl = &mock_vtbl;
    m->heap_iface.lpVtbl = &mock_heap_vtbl;
    m->ref = 1;
    m->next = 0x100000000;
}

/* ---- The call sequence the selector table runs ------------------------------------------------------------------ */
typedef struct call {
    hm_method method;
    EMemoryCriticalLevel level;
    DWORD type;
    size_t size;
    uintptr_t addr;
} call;

#define VA(lvl, typ, sz) {HM_METHOD_VIRTUAL_ALLOC, lvl, typ, sz, 0}
#define VA_AT(lvl, typ, sz, a) {HM_METHOD_VIRTUAL_ALLOC, lvl, typ, sz, a}
static const call sequence[] = {
    VA(eTaskCritical, MEM_RESERVE, 0x10000),                          /* 1 */
    VA(eTaskCritical, MEM_RESERVE | MEM_COMMIT, 0x200000),            /* 2 */
    VA(eAppDomainCritical, MEM_COMMIT, 0x1000),                       /* 3 */
    VA(eTaskCritical, MEM_COMMIT, 0x100000),                          /* 4 */
    VA(eProcessCritical, MEM_COMMIT, 0x300000),                       /* 5 */
    {HM_METHOD_VIRTUAL_FREE, 0, MEM_RELEASE, 0, 0x7000000},          /* 6 */
    VA(eTaskCritical, MEM_COMMIT, 0x180000),                          /* 7 */
    {HM_METHOD_HEAP_ALLOC, eTaskCritical, 0, 64, 0},                  /* 8 */
    {HM_METHOD_HEAP_ALLOC, eAppDomainCritical, 0, 128, 0},            /* 9 */
    VA_AT(eTaskCritical, MEM_RESET, 0x1000, 0x7000000),               /* 10 */
    {HM_METHOD_HEAP_DEBUG_ALLOC, eProcessCritical, 0, 32, 0},         /* 11 */
    {HM_METHOD_GET_MEMORY_LOAD, 0, 0, 0, 0},                          /* 12 */
    VA(eTaskCritical, MEM_COMMIT, 0x200000),                          /* 13 */
    {HM_METHOD_NEEDS_VAS, 0, 0, 0x1000, 0x5000000},                   /* 14 */
    VA_AT(eAppDomainCritical, MEM_RESERVE, 0x10000, 0x7fff00000000),  /* 15 */
};
#define NCALLS (sizeof sequence / sizeof sequence[0])

/* Runs the sequence through a wrapper with `spec`; fills which calls failed ('x') or passed ('.'). */
static void run_sequence(const char *spec, char *outcome, HRESULT *failure_hr)
{
    mock m;
    mock_init(&m);
    IHostMemoryManager *f;
    HRESULT hr = HostMemWrapFaults(&m.iface, spec, &f);
    if (hr != S_OK)
        fail_msg("spec '%s' refused: %s", spec, HostMemLastError());
    IHostMalloc *heap;
    assert_int_equal(HostMemFaultsClear(f), S_OK); /* CreateMalloc is not part of the sequence */
    assert_int_equal(IHostMemoryManager_CreateMalloc(f, 1, &heap), S_OK);
    assert_int_equal(HostMemFaultsAdd(f, spec), S_OK);
    for (size_t i = 0; i < NCALLS; i++) {
        const call *c = &sequence[i];
        int before = m.calls[c->method];
        void *p = (void *)1;
        DWORD load;
        SIZE_T avail;
        switch (c->method) {
        case HM_METHOD_VIRTUAL_ALLOC:
            hr = IHostMemoryManager_VirtualAlloc(f, (void *)c->addr, c->size, c->type, PAGE_READWRITE, c->level, &p);
            break;
        case HM_METHOD_VIRTUAL_FREE: hr = IHostMemoryManager_VirtualFree(f, (void *)c->addr, c->size, c->type); break;
        case HM_METHOD_HEAP_ALLOC: hr = IHostMalloc_Alloc(heap, c->size, c->level, &p); break;
        case HM_METHOD_HEAP_DEBUG_ALLOC:
            hr = IHostMalloc_DebugAlloc(heap, c->size, c->level, (char *)"f.c", 1, &p);
            break;
        case HM_METHOD_GET_MEMORY_LOAD: hr = IHostMemoryManager_GetMemoryLoad(f, &load, &avail); break;
        case HM_METHOD_NEEDS_VAS: hr = IHostMemoryManager_NeedsVirtualAddressSpace(f, (void *)c->addr, c->size); break;
        default: fail_msg("unexpected method"); return;
        }
        outcome[i] = FAILED(hr) ? 'x' : '.';
        if (FAILED(hr)) {
            *failure_hr = hr;
            /* A failed call never reaches the host, and leaves its out-pointer NULL. */
            assert_int_equal(m.calls[c->method], before);
            if (c->method != HM_METHOD_VIRTUAL_FREE && c->method != HM_METHOD_GET_MEMORY_LOAD &&
                c->method != HM_METHOD_NEEDS_VAS)
                assert_null(p);
        } else {
            assert_int_equal(m.calls[c->method], before + 1);
        }
    }
    outcome[NCALLS] = '\0';
    IHostMalloc_Release(heap);
    assert_int_equal(IHostMemoryManager_Release(f), 0);
    assert_int_equal(atomic_load(&m.ref), 1); /* the wrapper let go of the host */
    assert_int_equal(atomic_load(&m.heap_ref), 0);
}

typedef struct selector_case {
    const char *spec;
    const char *expect; /* one character per call of the sequence */
    HRESULT hr;
} selector_case;

/* Each selector alone and in combination: which calls of the sequence fail. */
static void test_selectors(void **state)
{
    static const selector_case cases[] = {
        {"", "...............", 0},
        {"any", "xxxxxxxxxxxxxxx", E_OUTOFMEMORY},
        {"VirtualAlloc", "xxxxx.x..x..x.x", E_OUTOFMEMORY},
        {"VirtualAlloc,level=task", "xx.x..x..x..x..", E_OUTOFMEMORY},
        {"VirtualAlloc,level=appdomain|process", "..x.x.........x", E_OUTOFMEMORY},
        {"VirtualAlloc,op=reserve", "x.............x", E_OUTOFMEMORY},
        {"VirtualAlloc,op=commit", ".xxxx.x.....x..", E_OUTOFMEMORY},
        {"VirtualAlloc,op=reset", ".........x.....", E_OUTOFMEMORY},
        {"VirtualAlloc,size=1M-", ".x.xx.x.....x..", E_OUTOFMEMORY},
        {"VirtualAlloc,size=-64K", "x.x......x....x", E_OUTOFMEMORY},
        {"VirtualAlloc,size=0x1000", "..x......x.....", E_OUTOFMEMORY},
        {"VirtualAlloc,addr=0x7000000-", ".........x....x", E_OUTOFMEMORY},
        {"heap", ".......xx.x....", E_OUTOFMEMORY},
        {"Alloc", ".......xx......", E_OUTOFMEMORY},
        {"heap,level=process", "..........x....", E_OUTOFMEMORY},
        {"VirtualFree|GetMemoryLoad|NeedsVirtualAddressSpace", ".....x.....x.x.", E_OUTOFMEMORY},
        {"VirtualAlloc,nth=3", "..x............", E_OUTOFMEMORY},
        {"VirtualAlloc,every=3", "..x...x.......x", E_OUTOFMEMORY},
        {"VirtualAlloc,after=7", "............x.x", E_OUTOFMEMORY},
        {"VirtualAlloc,after=2,times=2", "..xx...........", E_OUTOFMEMORY},
        {"VirtualAlloc,after-bytes=0x400000", "....x.x..x..x.x", E_OUTOFMEMORY},
        {"any,call=8", ".......x.......", E_OUTOFMEMORY},
        {"any,call=8,return=HOST_E_TIMEOUT", ".......x.......", HOST_E_TIMEOUT},
        {"VirtualAlloc,return=0x80131022", "xxxxx.x..x..x.x", HOST_E_INVALIDOPERATION},
        {"VirtualAlloc,probability=0", "...............", 0},
        {"VirtualAlloc,probability=100%", "xxxxx.x..x..x.x", E_OUTOFMEMORY},
        /* The worked example of docs/faults.md: the third eTaskCritical commit over 1 MiB. */
        {"VirtualAlloc,level=task,op=commit,size=1M-,nth=3", "......x........", E_OUTOFMEMORY},
        /* Several rules: the first that fires decides. */
        {"VirtualAlloc,nth=1;heap,nth=2;any,call=15,return=E_FAIL", "x.......x.....x", E_FAIL},
        {"  VirtualAlloc , nth = 2 ;; ", ".x.............", E_OUTOFMEMORY},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char outcome[NCALLS + 1];
        HRESULT hr = 0;
        run_sequence(cases[i].spec, outcome, &hr);
        if (strcmp(outcome, cases[i].expect) != 0)
            fail_msg("spec '%s': calls failed as %s, expected %s", cases[i].spec, outcome, cases[i].expect);
        if (cases[i].hr && hr != cases[i].hr)
            fail_msg("spec '%s': returned %s, expected %s", cases[i].spec, hm_hr_name(hr), hm_hr_name(cases[i].hr));
    }
}

/* The same seed gives the same failures; another seed, others. */
static void test_determinism(void **state)
{
    char a[NCALLS + 1], b[NCALLS + 1], c[NCALLS + 1];
    HRESULT hr;
    run_sequence("any,probability=50%,seed=7", a, &hr);
    run_sequence("any,probability=50%,seed=7", b, &hr);
    run_sequence("any,probability=50%,seed=8", c, &hr);
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
    assert_non_null(strchr(a, 'x'));
    assert_non_null(strchr(a, '.'));
}

/* The log names each fault's call, method, level and size, and a spec that reproduces it. */
static void test_log(void **state)
{
    mock m;
    mock_init(&m);
    IHostMemoryManager *f;
    assert_int_equal(HostMemWrapFaults(&m.iface, "VirtualAlloc,level=task,every=2", &f), S_OK);
    void *p;
    for (int i = 0; i < 5; i++)
        IHostMemoryManager_VirtualAlloc(f, NULL, 0x2000 * (size_t)(i + 1), MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &p);
    assert_int_equal(HostMemFaultsLogCount(f), 2);
    hm_fault_event e[4];
    assert_int_equal(HostMemFaultsLog(f, 0, e, 4), 2);
    assert_int_equal(e[0].call, 2);
    assert_int_equal(e[0].method, HM_METHOD_VIRTUAL_ALLOC);
    assert_int_equal(e[0].level, eTaskCritical);
    assert_int_equal(e[0].size, 0x4000);
    assert_int_equal(e[0].result, E_OUTOFMEMORY);
    assert_int_equal(e[0].rule, 0);
    assert_int_equal(e[1].call, 4);
    assert_int_equal(HostMemFaultsCallCount(f, -1), 5);
    assert_int_equal(HostMemFaultsCallCount(f, HM_METHOD_VIRTUAL_ALLOC), 5);
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    HostMemFaultsLogPrint(f, out);
    fclose(out);
    assert_non_null(strstr(text, "call 2, VirtualAlloc #2 level=task size=0x4000"));
    assert_non_null(strstr(text, "reproduce with: call=4,return=E_OUTOFMEMORY"));
    free(text);
    IHostMemoryManager_Release(f);
}

/* A pressure rule makes GetMemoryLoad report the chosen load from its trigger on, and notifies once. */
static void test_pressure(void **state)
{
    mock m;
    mock_init(&m);
    m.load = 10;
    IHostMemoryManager *f;
    assert_int_equal(HostMemWrapFaults(&m.iface, "pressure,after=5,load=95,available=1M,notify=low", &f), S_OK);
    hm_counting_callback c = HM_COUNTING_CALLBACK_INIT;
    assert_int_equal(IHostMemoryManager_RegisterMemoryNotificationCallback(f, &c.iface), S_OK); /* call 1 */
    assert_int_equal(atomic_load(&c.refs), 2);
    DWORD load;
    SIZE_T avail;
    for (int i = 2; i <= 5; i++) {
        assert_int_equal(IHostMemoryManager_GetMemoryLoad(f, &load, &avail), S_OK);
        assert_int_equal(load, 10);
        assert_int_equal(avail, 12345);
    }
    assert_int_equal(c.count, 0);
    assert_int_equal(IHostMemoryManager_GetMemoryLoad(f, &load, &avail), S_OK); /* call 6 */
    assert_int_equal(load, 95);
    assert_int_equal(avail, 1 << 20);
    assert_int_equal(c.count, 1);
    assert_int_equal(c.last, eMemoryAvailableLow);
    assert_int_equal(IHostMemoryManager_GetMemoryLoad(f, &load, &avail), S_OK);
    assert_int_equal(c.count, 1);
    IHostMemoryManager_Release(f);
    assert_int_equal(atomic_load(&c.refs), 1);
}

typedef struct spec_error_case {
    const char *spec;
    const char *message;
} spec_error_case;

/* Malformed specs are refused with a message that points at the bad column and says what was expected. */
static void test_spec_errors(void **state)
{
    static const spec_error_case cases[] = {
        {"VirtualAloc", "column 1: unknown method 'VirtualAloc'"},
        {"VirtualAlloc,lvl=task", "column 14: unknown key 'lvl' (expected one of: level, op"},
        {"VirtualAlloc,level=tusk", "column 20: unknown value 'tusk' (expected task, appdomain or process"},
        {"VirtualAlloc,size=12Q", "column 19: bad size '12Q'"},
        {"VirtualAlloc,size=5-1", "column 19: bad size '5-1'"},
        {"VirtualAlloc,nth=0", "column 18: bad nth '0' (expected a positive number)"},
        {"VirtualAlloc,probability=150%", "bad probability '150%'"},
        {"VirtualAlloc,return=E_NOPE", "bad HRESULT 'E_NOPE'"},
        {"VirtualAlloc,return=S_OK", "column 21: bad return 'S_OK': a fault must make the call fail, and S_OK is a "
                                     "success code"},
        {"VirtualAlloc,return=0", "column 21: bad return '0': a fault must make the call fail, and S_OK is"},
        {"heap,return=S_FALSE", "column 13: bad return 'S_FALSE': a fault must make the call fail"},
        {"heap,return=0x7fffffff", "column 13: bad return '0x7fffffff': a fault must make the call fail"},
        {"VirtualAlloc,probability=%", "column 26: bad probability '%'"},
        {"VirtualAlloc,probability=.%", "column 26: bad probability '.%'"},
        {"VirtualAlloc,probability=5%%", "column 26: bad probability '5%%'"},
        {"VirtualAlloc,nth", "column 17: expected '=' after 'nth'"},
        {"VirtualAlloc,nth=", "column 18: missing value for 'nth'"},
        {"nth=3", "column 1: rule starts with 'nth=': expected a target first"},
        {"heap,op=commit", "op= only applies to VirtualAlloc"},
        {"pressure,after=5", "a pressure rule needs load= or notify="},
        {"VirtualAlloc,load=50", "load=, available= and notify= belong to 'pressure' rules"},
        {"pressure,load=101", "bad load '101'"},
        {"pressure,notify=panic", "bad notification 'panic' (expected low, neutral or high)"},
        {"VirtualAlloc;Alloc,every=x", "column 26: bad every 'x'"},
        {",nth=1", "column 1: missing target"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[512];
        HRESULT hr = HostMemFaultSpecCheck(cases[i].spec, err, sizeof err);
        if (hr != E_INVALIDARG)
            fail_msg("spec '%s' accepted", cases[i].spec);
        if (!strstr(err, cases[i].message))
            fail_msg("spec '%s': message '%s' lacks '%s'", cases[i].spec, err, cases[i].message);
        mock m;
        mock_init(&m);
        IHostMemoryManager *f = (IHostMemoryManager *)1;
        assert_int_equal(HostMemWrapFaults(&m.iface, cases[i].spec, &f), E_INVALIDARG);
        assert_null(f);
        assert_non_null(strstr(HostMemLastError(), cases[i].message));
        assert_int_equal(atomic_load(&m.ref), 1);
    }
}

/* Exploration over the built-in scenario on the built-in host tries every failure point, transient and
 * persistent, and every run ends cleanly. */
static void test_explore_builtin(void **state)
{
    hm_explore_result r;
    hm_explore_options o = {0};
    assert_int_equal(HostMemExplore(hm_scenario_builtin, NULL, &o, &r), S_OK);
    assert_true(r.matching_calls >= 10);
    assert_int_equal(r.runs, 2 * r.matching_calls);
    assert_int_equal(r.failures, 0);
    for (uint64_t i = 0; i < r.runs; i++) {
        assert_true(r.points[i].ok);
        assert_int_equal(r.points[i].consistent, 1);
    }
    assert_int_equal(r.points[0].k, 1);
    assert_int_equal(r.points[r.matching_calls].persistent, 1);
    HostMemExploreFree(&r);
}

/* A scenario that leaks when a call fails is caught at exactly that failure point. */
static HRESULT leaky_scenario(IHostMemoryManager *m, void *ctx)
{
    void *a, *b;
    if (FAILED(IHostMemoryManager_VirtualAlloc(m, NULL, 0x10000, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &a)))
        return S_OK;
    if (FAILED(IHostMemoryManager_VirtualAlloc(m, NULL, 0x10000, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &b)))
        return S_OK; /* forgets to release a */
    IHostMemoryManager_VirtualFree(m, b, 0, MEM_RELEASE);
    IHostMemoryManager_VirtualFree(m, a, 0, MEM_RELEASE);
    return S_OK;
}

static void test_explore_finds_leak(void **state)
{
    hm_explore_result r;
    hm_explore_options o = {.match = "VirtualAlloc", .transient = 1};
    assert_int_equal(HostMemExplore(leaky_scenario, NULL, &o, &r), S_OK);
    assert_int_equal(r.matching_calls, 2);
    assert_int_equal(r.runs, 2);
    assert_int_equal(r.failures, 1);
    assert_true(r.points[0].ok);
    assert_false(r.points[1].ok);
    assert_int_equal(r.points[1].leaked_reservations, 1);
    assert_non_null(strstr(r.points[1].message, "leaked 1 reservation"));
    HostMemExploreFree(&r);
    /* --match chooses calls; when they fail is the explorer's business. */
    o.match = "VirtualAlloc,nth=1";
    assert_int_equal(HostMemExplore(leaky_scenario, NULL, &o, &r), E_INVALIDARG);
    assert_non_null(strstr(HostMemLastError(), "without triggers"));
}

/* With nothing armed, calls pass straight through and nothing is counted or logged. */
static void test_unarmed(void **state)
{
    mock m;
    mock_init(&m);
    IHostMemoryManager *f;
    assert_int_equal(HostMemWrapFaults(&m.iface, NULL, &f), S_OK);
    assert_ptr_equal(HostMemFaultsInner(f), &m.iface);
    assert_null(HostMemFaultsInner(&m.iface));
    void *p;
    assert_int_equal(IHostMemoryManager_VirtualAlloc(f, NULL, 4096, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &p), S_OK);
    assert_int_equal(m.calls[HM_METHOD_VIRTUAL_ALLOC], 1);
    assert_int_equal(HostMemFaultsLogCount(f), 0);
    IHostMemoryManager *g = (IHostMemoryManager *)1;
    assert_int_equal(HostMemWrapFaults(NULL, NULL, &g), E_POINTER);
    assert_null(g);
    assert_int_equal(HostMemWrapFaults(&m.iface, "", &g), S_OK);
    IHostMemoryManager_Release(g);
    assert_int_equal(IHostMemoryManager_Release(f), 0);
    assert_int_equal(atomic_load(&m.ref), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_selectors),      cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_log),            cmocka_unit_test(test_pressure),
        cmocka_unit_test(test_spec_errors),    cmocka_unit_test(test_explore_builtin),
        cmocka_unit_test(test_explore_finds_leak), cmocka_unit_test(test_unarmed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

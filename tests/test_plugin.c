/* Isolating a host (harness/check/plugin.c) and guarding its out-parameters (harness/check/guard.c): every way a
 * child can end is classified as what it is, a child that ends without reporting is never a pass, and a host writing
 * next to a buffer it was given is caught, with the method and the bytes named. */
#include "guard.h"
#include "plugin.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

/* ---- hm__isolate: one work function per way of ending -------------------------------------------------------- */

static void reports(void *ctx) { *(int *)ctx = 42; }
static void exits_zero(void *ctx) { (void)ctx, hm__isolate_doing("HostMemCreateManager"), exit(0); }
static void exits_three(void *ctx) { (void)ctx, _exit(3); }
static void segfaults(void *ctx)
{
    (void)ctx;
    signal(SIGSEGV, SIG_DFL); /* cmocka's handler, inherited, would catch it */
    hm__isolate_doing("IHostMemoryManager::VirtualQuery");
    raise(SIGSEGV);
}
static void hangs(void *ctx)
{
    (void)ctx;
    hm__isolate_doing("IHostMemoryManager::Release");
    for (;;)
        pause();
}
static void finds(void *ctx) { (void)ctx, hm__isolate_finding("VirtualQuery wrote %d bytes too many", 8); }
static void floods(void *ctx)
{
    static char line[4096];
    memset(line, 'y', sizeof line);
    for (int i = 0; i < 256; i++) /* 1 MiB: more than a pipe holds, so the parent must drain it */
        if (write(STDOUT_FILENO, line, sizeof line) != (ssize_t)sizeof line)
            _exit(5);
    *(int *)ctx = 7;
}

typedef struct isolate_case {
    const char *name;
    void (*work)(void *);
    double timeout;
    hm_isolated_end end;
    const char *message; /* a part of how->message ("" for REPORTED) */
    int result;          /* what the work leaves in shared memory when it reports */
} isolate_case;

static const isolate_case isolate_cases[] = {
    {"reports", reports, 0, HM_ISOLATED_REPORTED, "", 42},
    {"exit(0)", exits_zero, 0, HM_ISOLATED_EXITED,
     "the host exited the process with status 0 in HostMemCreateManager before the call returned", 0},
    {"_exit(3)", exits_three, 0, HM_ISOLATED_EXITED, "the host exited the process with status 3", 0},
    {"SIGSEGV", segfaults, 0, HM_ISOLATED_CRASHED, "the host crashed: Segmentation fault (signal 11) in "
                                                   "IHostMemoryManager::VirtualQuery", 0},
    {"hang", hangs, 0.3, HM_ISOLATED_TIMED_OUT, "the host did not return in 0.3 s: it was in "
                                                "IHostMemoryManager::Release (the process was killed)", 0},
    {"finding", finds, 0, HM_ISOLATED_FINDING, "VirtualQuery wrote 8 bytes too many", 0},
    {"stdout flood", floods, 5, HM_ISOLATED_REPORTED, "", 7},
};

static void test_isolate_classifies(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof isolate_cases / sizeof isolate_cases[0]; i++) {
        const isolate_case *c = &isolate_cases[i];
        int *shared = hm__shared_alloc(sizeof *shared);
        assert_non_null(shared);
        hm_isolate_options o = {.timeout_seconds = c->timeout};
        hm_isolated how;
        print_message("%s\n", c->name);
        assert_int_equal(hm__isolate(c->work, shared, &o, &how), c->end);
        assert_int_equal(how.end, c->end);
        assert_non_null(strstr(how.message, c->message));
        if (c->end == HM_ISOLATED_REPORTED)
            assert_int_equal(*shared, c->result);
        hm__shared_free(shared, sizeof *shared);
    }
}

static void test_isolate_captures_stdout(void **state)
{
    (void)state;
    int *shared = hm__shared_alloc(sizeof *shared);
    hm_isolate_options o = {.timeout_seconds = 5};
    hm_isolated how;
    assert_int_equal(hm__isolate(floods, shared, &o, &how), HM_ISOLATED_REPORTED);
    assert_int_equal(how.stdout_bytes, 1u << 20);
    assert_int_equal(strncmp(how.stdout_head, "yyyy", 4), 0);
    hm__shared_free(shared, sizeof *shared);
}

/* A watch that gives up at once: the end is a timeout with the watch's words. */
static bool impatient(void *ctx, double elapsed, char *why, size_t len)
{
    (void)ctx, (void)elapsed;
    snprintf(why, len, "no operation finished");
    return true;
}

static void test_isolate_watch_kills(void **state)
{
    (void)state;
    hm_isolate_options o = {.watch = impatient};
    hm_isolated how;
    assert_int_equal(hm__isolate(hangs, NULL, &o, &how), HM_ISOLATED_TIMED_OUT);
    assert_string_equal(how.message,
                        "no operation finished: it was in IHostMemoryManager::Release (the process was killed)");
    assert_string_equal(how.doing, "IHostMemoryManager::Release");
}

/* ---- A call limit: a call that does not return is a hang, a slow run whose calls return is not --------------- */

/* Calls that each take 10 ms and return, nested as a callback calling back in does, for about 0.8 s. */
static void returns_slowly(void *ctx)
{
    (void)ctx;
    for (int i = 0; i < 40; i++) {
        const char *outer = hm__isolate_enter("IHostMemoryManager::VirtualAlloc");
        const char *inner = hm__isolate_enter("IHostMemoryManager::VirtualQuery");
        usleep(10000);
        hm__isolate_leave(inner);
        usleep(10000);
        hm__isolate_leave(outer);
    }
}
/* A nested call returns, then the outer one never does: the hang is named by the outer call. */
static void outer_call_hangs(void *ctx)
{
    (void)ctx;
    hm__isolate_enter("IHostMemoryManager::VirtualAlloc");
    hm__isolate_leave(hm__isolate_enter("IHostMemoryManager::VirtualQuery"));
    for (;;)
        pause();
}
/* The tool's own code spins with no call in flight: slow work, not a host hung. */
static void spins_outside_calls(void *ctx)
{
    (void)ctx;
    hm__isolate_leave(hm__isolate_enter("IHostMemoryManager::GetMemoryLoad"));
    for (;;)
        pause();
}

typedef struct call_limit_case {
    const char *name;
    void (*work)(void *);
    double call_timeout, timeout;
    hm_isolated_end end;
    const char *message;
} call_limit_case;

static const call_limit_case call_limit_cases[] = {
    {"slow calls that return, within the run's limit", returns_slowly, 0.3, 30, HM_ISOLATED_REPORTED, ""},
    {"slow calls that return, past the run's limit", returns_slowly, 0.3, 0.4, HM_ISOLATED_TOO_SLOW,
     "the work did not end in 0.4 s, though the host kept returning"},
    {"a call that never returns", outer_call_hangs, 0.3, 30, HM_ISOLATED_TIMED_OUT,
     "the host did not return in 0.3 s: it was in IHostMemoryManager::VirtualAlloc (the process was killed)"},
    {"the tool's own code, no call in flight", spins_outside_calls, 0.3, 0.6, HM_ISOLATED_TOO_SLOW,
     "the work did not end in 0.6 s"},
    {"without a call limit, the run's limit is a hang", outer_call_hangs, 0, 0.3, HM_ISOLATED_TIMED_OUT,
     "the host did not return in 0.3 s: it was in IHostMemoryManager::VirtualAlloc"},
};

static void test_isolate_call_limit(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof call_limit_cases / sizeof call_limit_cases[0]; i++) {
        const call_limit_case *c = &call_limit_cases[i];
        hm_isolate_options o = {.timeout_seconds = c->timeout, .call_timeout_seconds = c->call_timeout};
        hm_isolated how;
        print_message("%s\n", c->name);
        assert_int_equal(hm__isolate(c->work, NULL, &o, &how), c->end);
        if (!strstr(how.message, c->message))
            fail_msg("message '%s' lacks '%s'", how.message, c->message);
    }
}

/* ---- The guard layer around a host that writes where it should not ------------------------------------------ */

typedef enum { WRITES_INSIDE, WRITES_PAST_END, WRITES_BEFORE } aim;

typedef struct fake {
    IHostMemoryManager iface;
    int ref;
    aim aim;
} fake;

static inline fake *impl_from_IHostMemoryManager(IHostMemoryManager *iface)
{
    return HM_CONTAINER_OF(iface, fake, iface);
}
static HRESULT STDMETHODCALLTYPE f_qi(IHostMemoryManager *i, REFIID r, void **p)
{
    (void)r;
    *p = i; /* itself, for anything: the layer must hand back itself instead */
    impl_from_IHostMemoryManager(i)->ref++;
    return S_OK;
}
static ULONG STDMETHODCALLTYPE f_addref(IHostMemoryManager *i) { return (ULONG)++impl_from_IHostMemoryManager(i)->ref; }
static ULONG STDMETHODCALLTYPE f_release(IHostMemoryManager *i) { return (ULONG)--impl_from_IHostMemoryManager(i)->ref; }
static HRESULT STDMETHODCALLTYPE f_valloc(IHostMemoryManager *i, void *a, SIZE_T s, DWORD t, DWORD p,
                                          EMemoryCriticalLevel l, void **pp)
{
    (void)a, (void)s, (void)t, (void)p, (void)l;
    pp[0] = (void *)0x10000;
    if (impl_from_IHostMemoryManager(i)->aim == WRITES_PAST_END)
        pp[1] = (void *)0x20000;
    return S_OK;
}
static HRESULT STDMETHODCALLTYPE f_vquery(IHostMemoryManager *i, void *a, void *buf, SIZE_T len, SIZE_T *res)
{
    (void)a;
    memset(buf, 0x11, len);
    if (impl_from_IHostMemoryManager(i)->aim == WRITES_PAST_END)
        memset((char *)buf + len, 0x41, 3);
    if (impl_from_IHostMemoryManager(i)->aim == WRITES_BEFORE)
        ((char *)buf)[-1] = 0x42;
    *res = len;
    return S_OK;
}

static const IHostMemoryManagerVtbl fake_vtbl = {.QueryInterface = f_qi, .AddRef = f_addref, .Release = f_release,
                                                 .VirtualAlloc = f_valloc, .VirtualQuery = f_vquery};

typedef struct guard_run {
    aim aim;
    bool query; /* VirtualQuery; else VirtualAlloc */
    int seen;   /* what the tool saw: 1 when every byte came back */
} guard_run;

static void call_through_guard(void *ctx)
{
    guard_run *run = ctx;
    static fake host;
    host = (fake){{&fake_vtbl}, 1, run->aim};
    IHostMemoryManager *m;
    if (FAILED(hm__guard_wrap(&host.iface, &m)))
        return;
    if (run->query) {
        MEMORY_BASIC_INFORMATION mbi;
        SIZE_T n = 0;
        IHostMemoryManager_VirtualQuery(m, &mbi, &mbi, sizeof mbi, &n);
        run->seen = n == sizeof mbi && ((unsigned char *)&mbi)[sizeof mbi - 1] == 0x11;
    } else {
        void *p = NULL;
        IHostMemoryManager_VirtualAlloc(m, NULL, 4096, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p);
        run->seen = p == (void *)0x10000;
    }
    void *self = NULL;
    IHostMemoryManager_QueryInterface(m, &IID_IUnknown, &self);
    run->seen &= self == (void *)m; /* the layer, not the host behind it */
    IHostMemoryManager_Release(m);
    IHostMemoryManager_Release(m);
}

typedef struct guard_case {
    aim aim;
    bool query;
    hm_isolated_end end;
    const char *message;
} guard_case;

static const guard_case guard_cases[] = {
    {WRITES_INSIDE, true, HM_ISOLATED_REPORTED, ""},
    {WRITES_INSIDE, false, HM_ISOLATED_REPORTED, ""},
    {WRITES_PAST_END, true, HM_ISOLATED_FINDING,
     "IHostMemoryManager::VirtualQuery wrote past the end of its 48-byte lpBuffer: 3 of the 32 guard bytes after it "
     "changed (offset past the end=new value: +0=41 +1=41 +2=41)"},
    {WRITES_BEFORE, true, HM_ISOLATED_FINDING,
     "IHostMemoryManager::VirtualQuery wrote before the start of its 48-byte lpBuffer: 1 of the 32 guard bytes"},
    {WRITES_PAST_END, false, HM_ISOLATED_FINDING,
     "IHostMemoryManager::VirtualAlloc wrote past the end of its 8-byte ppMem: 8 of the 32 guard bytes"},
};

static void test_guard_zones(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof guard_cases / sizeof guard_cases[0]; i++) {
        const guard_case *c = &guard_cases[i];
        guard_run *run = hm__shared_alloc(sizeof *run);
        assert_non_null(run);
        *run = (guard_run){c->aim, c->query, 0};
        hm_isolate_options o = {.timeout_seconds = 10};
        hm_isolated how;
        assert_int_equal(hm__isolate(call_through_guard, run, &o, &how), c->end);
        assert_non_null(strstr(how.message, c->message));
        if (c->end == HM_ISOLATED_REPORTED)
            assert_int_equal(run->seen, 1);
        hm__shared_free(run, sizeof *run);
    }
}

/* ---- The loader's messages ----------------------------------------------------------------------------------- */

static void test_host_open_errors(void **state)
{
    (void)state;
    char err[1024];
    IHostMemoryManager *m = (IHostMemoryManager *)1;
    assert_true(FAILED(hm__host_open("/nonexistent/libhost.so", NULL, &m, err, sizeof err)));
    assert_null(m);
    assert_non_null(strstr(err, "cannot load host library '/nonexistent/libhost.so'"));
    assert_true(FAILED(hm__host_open("libm.so.6", NULL, &m, err, sizeof err)));
    assert_non_null(strstr(err, "host library 'libm.so.6' does not export HostMemCreateManager"));
    assert_true(FAILED(hm__host_open(NULL, "bogus=1", &m, err, sizeof err)));
    assert_non_null(strstr(err, "the built-in manager refused options 'bogus=1'"));
    assert_int_equal(hm__host_open(NULL, NULL, &m, err, sizeof err), S_OK);
    IHostMemoryManager_Release(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_isolate_classifies),
        cmocka_unit_test(test_isolate_captures_stdout),
        cmocka_unit_test(test_isolate_watch_kills),
        cmocka_unit_test(test_isolate_call_limit),
        cmocka_unit_test(test_guard_zones),
        cmocka_unit_test(test_host_open_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

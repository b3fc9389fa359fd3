/* Memory-pressure notifications (src/notify.c): transitions with hysteresis, callback references, delivery with
 * no lock held (reentrant callers, many threads). */
#include "notify.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

typedef struct recorder {
    ICLRMemoryNotificationCallback iface;
    atomic_int ref;
    atomic_int inside;      /* callbacks running right now */
    atomic_int overlapped;  /* times a call found another running */
    int count;
    EMemoryAvailable last;
    char seen[128];         /* 'L', 'N', 'H' per call */
    hm_notify *reenter;     /* when set, feeds a load from inside the callback */
    unsigned reenter_load;
} recorder;

static recorder *rec(ICLRMemoryNotificationCallback *i) { return HM_CONTAINER_OF(i, recorder, iface); }
static HRESULT STDMETHODCALLTYPE r_QI(ICLRMemoryNotificationCallback *i, REFIID r, void **p) { (void)i, (void)r; *p = NULL; return E_NOINTERFACE; }
static ULONG STDMETHODCALLTYPE r_AddRef(ICLRMemoryNotificationCallback *i) { return atomic_fetch_add(&rec(i)->ref, 1) + 1; }
static ULONG STDMETHODCALLTYPE r_Release(ICLRMemoryNotificationCallback *i) { return atomic_fetch_sub(&rec(i)->ref, 1) - 1; }
static HRESULT STDMETHODCALLTYPE r_On(ICLRMemoryNotificationCallback *i, EMemoryAvailable e)
{
    recorder *r = rec(i);
    if (atomic_fetch_add(&r->inside, 1) != 0)
        atomic_fetch_add(&r->overlapped, 1);
    if (r->count < 127)
        r->seen[r->count] = e == eMemoryAvailableLow ? 'L' : e == eMemoryAvailableHigh ? 'H' : 'N';
    r->count++;
    r->last = e;
    r->seen[r->count < 127 ? r->count : 127] = '\0';
    if (r->reenter) {
        hm_notify *n = r->reenter;
        r->reenter = NULL; /* once */
        hm_notify_update(n, r->reenter_load);
    }
    atomic_fetch_sub(&r->inside, 1);
    return S_OK;
}
static const ICLRMemoryNotificationCallbackVtbl r_vtbl = {r_QI, r_AddRef, r_Release, r_On};

static void recorder_init(recorder *r)
{
    memset(r, 0, sizeof *r);
    r->iface.lpVtbl = &r_vtbl;
    r->ref = 1;
}

typedef struct sequence_case {
    const char *what;
    unsigned loads[12];
    int nloads;
    const char *expect;
} sequence_case;

/* With low_at 80, high_at 40, hysteresis 5: which notifications a sequence of loads produces. */
static void test_sequences(void **state)
{
    static const sequence_case cases[] = {
        {"neutral loads say nothing", {50, 60, 70, 79}, 4, ""},
        {"crossing up gives Low once", {50, 80, 85, 99, 100}, 5, "L"},
        {"crossing down gives High once", {60, 40, 10, 0}, 4, "H"},
        {"Low is kept inside the hysteresis band", {85, 79, 76, 75}, 4, "L"},
        {"Low is left below low-hysteresis", {85, 74}, 2, "LN"},
        {"High is kept up to high+hysteresis", {30, 41, 45}, 3, "H"},
        {"High is left above it", {30, 46}, 2, "HN"},
        {"a jump from Low to High", {90, 20}, 2, "LH"},
        {"flapping around a threshold does not flap", {81, 79, 81, 78, 82, 77}, 6, "L"},
        {"up, down, up", {90, 10, 95}, 3, "LHL"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        hm_notify *n = hm_notify_create(80, 40, 5);
        recorder r;
        recorder_init(&r);
        assert_int_equal(hm_notify_register(n, &r.iface), S_OK);
        for (int k = 0; k < cases[i].nloads; k++)
            hm_notify_update(n, cases[i].loads[k]);
        if (strcmp(r.seen, cases[i].expect) != 0)
            fail_msg("%s: got '%s', expected '%s'", cases[i].what, r.seen, cases[i].expect);
        assert_int_equal(hm_notify_count(n), (uint64_t)strlen(cases[i].expect));
        hm_notify_destroy(n);
    }
}

/* Registration takes one reference (once, however often); destroy releases it; NULL is E_POINTER. */
static void test_references(void **state)
{
    hm_notify *n = hm_notify_create(90, 50, 5);
    recorder a, b;
    recorder_init(&a);
    recorder_init(&b);
    assert_int_equal(hm_notify_register(n, &a.iface), S_OK);
    assert_int_equal(hm_notify_register(n, &a.iface), S_OK);
    assert_int_equal(hm_notify_register(n, &b.iface), S_OK);
    assert_int_equal(hm_notify_register(n, NULL), E_POINTER);
    assert_int_equal(hm_notify_callbacks(n), 2);
    assert_int_equal(atomic_load(&a.ref), 2);
    hm_notify_update(n, 95);
    assert_int_equal(a.count, 1);
    assert_int_equal(b.count, 1);
    assert_int_equal(atomic_load(&a.ref), 2); /* the reference taken around the call was given back */
    hm_notify_destroy(n);
    assert_int_equal(atomic_load(&a.ref), 1);
    assert_int_equal(atomic_load(&b.ref), 1);
}

/* A callback that changes the load from inside the callback does not deadlock; its change is delivered after,
 * in order. hm_notify_force sends whatever it is told. */
static void test_reentrant_and_forced(void **state)
{
    hm_notify *n = hm_notify_create(80, 40, 5);
    recorder r;
    recorder_init(&r);
    r.reenter = n;
    r.reenter_load = 10;
    assert_int_equal(hm_notify_register(n, &r.iface), S_OK);
    hm_notify_update(n, 90);
    assert_string_equal(r.seen, "LH");
    assert_int_equal(atomic_load(&r.overlapped), 0);
    hm_notify_force(n, eMemoryAvailableNeutral);
    hm_notify_force(n, eMemoryAvailableNeutral);
    assert_string_equal(r.seen, "LHNN");
    assert_int_equal(hm_notify_state(n), eMemoryAvailableNeutral);
    hm_notify_destroy(n);
}

static hm_notify *shared;

static void *feeder(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    for (int i = 0; i < 20000; i++) {
        seed = seed * 1103515245u + 12345u;
        hm_notify_update(shared, (seed >> 16) % 101);
    }
    return NULL;
}

/* Four threads feeding loads: callbacks never run concurrently, and the last state is the last delivered. */
static void test_threads(void **state)
{
    shared = hm_notify_create(80, 40, 5);
    recorder r;
    recorder_init(&r);
    assert_int_equal(hm_notify_register(shared, &r.iface), S_OK);
    pthread_t t[4];
    for (uintptr_t i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, feeder, (void *)(i + 1));
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(atomic_load(&r.overlapped), 0);
    assert_true(r.count > 0);
    assert_int_equal(r.last, hm_notify_state(shared));
    hm_notify_destroy(shared);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_sequences), cmocka_unit_test(test_references),
                                       cmocka_unit_test(test_reentrant_and_forced), cmocka_unit_test(test_threads)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}

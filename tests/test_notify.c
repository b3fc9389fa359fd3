/* Memory-pressure notifications (src/notify.c): transitions with thresholds and hysteresis, callback references,
 * delivery with no lock held (callbacks that reenter, register or block; many threads feeding loads). */
#include "notify.h"

#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

/* ---- A recording callback: a small C COM object ----------------------------------------------------------- */

#define SEEN_MAX 512

typedef struct recorder {
    ICLRMemoryNotificationCallback iface;
    atomic_int ref;
    atomic_int addrefs;    /* AddRef calls */
    atomic_int inside;     /* calls running right now */
    atomic_int overlapped; /* calls that found another running */
    int count;
    EMemoryAvailable last;
    char seen[SEEN_MAX + 1]; /* 'L', 'N', 'H' per call */
    char *shared_log;        /* when set, also appends its tag there (order across callbacks) */
    char tag;
    /* Optional behaviour inside the first call. */
    hm_notify *reenter;        /* feeds reenter_load, and records what it had seen when that returned */
    unsigned reenter_load;
    char seen_when_reentered[8];
    struct recorder *register_me; /* registers this other recorder into register_into */
    hm_notify *register_into;
    atomic_int entered, release;  /* when block is set: says it entered, then waits for release */
    bool block;
    bool spin;                    /* yields a little inside every call, to widen races */
} recorder;

static inline recorder *impl_from_ICLRMemoryNotificationCallback(ICLRMemoryNotificationCallback *iface)
{
    return HM_CONTAINER_OF(iface, recorder, iface);
}

static HRESULT STDMETHODCALLTYPE r_QueryInterface(ICLRMemoryNotificationCallback *i, REFIID riid, void **ppv)
{
    if (IsEqualIID(riid, &IID_IUnknown) || IsEqualIID(riid, &IID_ICLRMemoryNotificationCallback)) {
        *ppv = i;
        i->lpVtbl->AddRef(i);
        return S_OK;
    }
    *ppv = NULL;
    return E_NOINTERFACE;
}

static ULONG STDMETHODCALLTYPE r_AddRef(ICLRMemoryNotificationCallback *i)
{
    atomic_fetch_add(&impl_from_ICLRMemoryNotificationCallback(i)->addrefs, 1);
    return (ULONG)atomic_fetch_add(&impl_from_ICLRMemoryNotificationCallback(i)->ref, 1) + 1;
}

static ULONG STDMETHODCALLTYPE r_Release(ICLRMemoryNotificationCallback *i)
{
    return (ULONG)atomic_fetch_sub(&impl_from_ICLRMemoryNotificationCallback(i)->ref, 1) - 1;
}

static char letter(EMemoryAvailable e) { return e == eMemoryAvailableLow ? 'L' : e == eMemoryAvailableHigh ? 'H' : 'N'; }

static HRESULT STDMETHODCALLTYPE r_OnMemoryNotification(ICLRMemoryNotificationCallback *i, EMemoryAvailable e)
{
    recorder *r = impl_from_ICLRMemoryNotificationCallback(i);
    if (atomic_fetch_add(&r->inside, 1) != 0)
        atomic_fetch_add(&r->overlapped, 1);
    if (r->count < SEEN_MAX)
        r->seen[r->count] = letter(e);
    r->count++;
    r->last = e;
    r->seen[r->count < SEEN_MAX ? r->count : SEEN_MAX] = '\0';
    if (r->shared_log)
        r->shared_log[strlen(r->shared_log)] = r->tag;
    /* A moment inside the callback, for another thread to try to enter: a short busy loop, not sched_yield (next
     * to busy processes each yield may give the core away for a whole slice: the test then took minutes at load). */
    if (r->spin)
        for (volatile int k = 0; k < 2000; k++)
            ;
    if (r->reenter) {
        hm_notify *n = r->reenter;
        r->reenter = NULL; /* once */
        hm__notify_update(n, r->reenter_load);
        size_t len = strnlen(r->seen, sizeof r->seen_when_reentered - 1);
        memcpy(r->seen_when_reentered, r->seen, len);
        r->seen_when_reentered[len] = '\0';
    }
    if (r->register_me) {
        recorder *other = r->register_me;
        r->register_me = NULL;
        if (hm__notify_register(r->register_into, &other->iface) != S_OK)
            other->tag = '!';
    }
    if (r->block) {
        r->block = false;
        atomic_store(&r->entered, 1);
        while (!atomic_load(&r->release))
            sched_yield();
    }
    atomic_fetch_sub(&r->inside, 1);
    return S_OK;
}

static const ICLRMemoryNotificationCallbackVtbl r_vtbl = {r_QueryInterface, r_AddRef, r_Release,
                                                          r_OnMemoryNotification};

static void recorder_init(recorder *r)
{
    memset(r, 0, sizeof *r);
    r->iface.lpVtbl = &r_vtbl;
    atomic_init(&r->ref, 1);
}

/* ---- Transitions ---------------------------------------------------------------------------------------- */

typedef struct sequence_case {
    const char *what;
    unsigned low, high, hysteresis;
    unsigned loads[12];
    int nloads;
    const char *expect;
} sequence_case;

/* Which notifications a sequence of loads produces (the state starts Neutral). */
static void test_sequences(void **state)
{
    static const sequence_case cases[] = {
        {"neutral loads say nothing", 80, 40, 5, {50, 60, 70, 79, 41}, 5, ""},
        {"crossing up gives Low once", 80, 40, 5, {50, 80, 85, 99, 100}, 5, "L"},
        {"crossing down gives High once", 80, 40, 5, {60, 40, 10, 0}, 4, "H"},
        {"the same state again is no new notification", 80, 40, 5, {95, 95, 95, 90, 99}, 5, "L"},
        {"Low is kept inside the hysteresis band", 80, 40, 5, {85, 79, 76, 75}, 4, "L"},
        {"Low is left below low-hysteresis", 80, 40, 5, {85, 74}, 2, "LN"},
        {"High is kept up to high+hysteresis", 80, 40, 5, {30, 41, 45}, 3, "H"},
        {"High is left above it", 80, 40, 5, {30, 46}, 2, "HN"},
        {"a jump from Low to High", 80, 40, 5, {90, 20}, 2, "LH"},
        {"a jump from High to Low", 80, 40, 5, {20, 90}, 2, "HL"},
        {"flapping around Low's threshold does not flap", 80, 40, 5, {81, 79, 81, 78, 82, 77}, 6, "L"},
        {"flapping around High's threshold does not flap", 80, 40, 5, {40, 41, 39, 44, 38, 45}, 6, "H"},
        {"up, down, up", 80, 40, 5, {90, 10, 95}, 3, "LHL"},
        {"without hysteresis every crossing counts", 80, 40, 0, {80, 79, 80, 40, 41}, 5, "LNLHN"},
        {"out-of-range thresholds fall back to 90/50/5", 200, 300, 400, {89, 90, 85, 84, 50, 55, 56}, 7, "LNHN"},
        {"a High at or above Low falls back below it", 40, 60, 0, {40, 39, 40}, 3, "LHL"},
        {"load over 100 is Low", 80, 40, 5, {250}, 1, "L"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const sequence_case *c = &cases[i];
        hm_notify *n = hm__notify_create(c->low, c->high, c->hysteresis);
        assert_non_null(n);
        recorder r;
        recorder_init(&r);
        assert_int_equal(hm__notify_register(n, &r.iface), S_OK);
        for (int k = 0; k < c->nloads; k++)
            hm__notify_update(n, c->loads[k]);
        if (strcmp(r.seen, c->expect) != 0)
            fail_msg("%s: got '%s', expected '%s'", c->what, r.seen, c->expect);
        assert_int_equal(hm__notify_count(n), (uint64_t)strlen(c->expect));
        if (*c->expect)
            assert_int_equal(letter(hm__notify_state(n)), c->expect[strlen(c->expect) - 1]);
        else
            assert_int_equal(hm__notify_state(n), eMemoryAvailableNeutral);
        hm__notify_destroy(n);
    }
}

/* ---- References and registration ------------------------------------------------------------------------ */

/* Registration AddRefs once (however often it is repeated, and however many notifications follow); destroy
 * releases it; NULL is E_POINTER. */
static void test_references(void **state)
{
    hm_notify *n = hm__notify_create(90, 50, 5);
    recorder a, b;
    recorder_init(&a);
    recorder_init(&b);
    assert_int_equal(hm__notify_register(n, &a.iface), S_OK);
    assert_int_equal(hm__notify_register(n, &a.iface), S_OK);
    assert_int_equal(hm__notify_register(n, &b.iface), S_OK);
    assert_int_equal(hm__notify_register(n, NULL), E_POINTER);
    assert_int_equal(hm__notify_callbacks(n), 2);
    assert_int_equal(atomic_load(&a.ref), 2);
    hm__notify_update(n, 95);
    hm__notify_update(n, 10);
    assert_string_equal(a.seen, "LH"); /* registered twice, told once */
    assert_string_equal(b.seen, "LH");
    assert_int_equal(atomic_load(&a.addrefs), 1);
    assert_int_equal(atomic_load(&a.ref), 2);
    assert_int_equal(atomic_load(&b.addrefs), 1);
    hm__notify_destroy(n);
    assert_int_equal(atomic_load(&a.ref), 1);
    assert_int_equal(atomic_load(&b.ref), 1);
}

/* Callbacks are told in registration order, each notification to all of them before the next. */
static void test_order_across_callbacks(void **state)
{
    hm_notify *n = hm__notify_create(80, 40, 5);
    char log[32] = "";
    recorder r[3];
    for (int i = 0; i < 3; i++) {
        recorder_init(&r[i]);
        r[i].shared_log = log;
        r[i].tag = (char)('a' + i);
        assert_int_equal(hm__notify_register(n, &r[i].iface), S_OK);
    }
    hm__notify_update(n, 90);
    hm__notify_update(n, 60);
    assert_string_equal(log, "abcabc");
    assert_int_equal(hm__notify_count(n), 6);
    hm__notify_destroy(n);
}

/* A callback registered from inside a callback hears of the changes after it, not of the one being delivered. */
static void test_register_during_delivery(void **state)
{
    hm_notify *n = hm__notify_create(80, 40, 5);
    recorder first, late;
    recorder_init(&first);
    recorder_init(&late);
    first.register_me = &late;
    first.register_into = n;
    assert_int_equal(hm__notify_register(n, &first.iface), S_OK);
    hm__notify_update(n, 90);
    assert_int_equal(late.tag, 0);        /* the registration from inside succeeded */
    assert_int_equal(late.count, 0);      /* and did not hear of the change being delivered */
    assert_int_equal(hm__notify_callbacks(n), 2);
    hm__notify_update(n, 10);
    assert_string_equal(first.seen, "LH");
    assert_string_equal(late.seen, "H");
    assert_int_equal(atomic_load(&late.addrefs), 1);
    hm__notify_destroy(n);
    assert_int_equal(atomic_load(&late.ref), 1);
}

/* ---- Delivery ------------------------------------------------------------------------------------------- */

/* A callback that changes the load from inside the callback does not deadlock and is not reentered: the change
 * is delivered after the callback returns, in order. */
static void test_reentrant(void **state)
{
    hm_notify *n = hm__notify_create(80, 40, 5);
    recorder r;
    recorder_init(&r);
    r.reenter = n;
    r.reenter_load = 10;
    assert_int_equal(hm__notify_register(n, &r.iface), S_OK);
    hm__notify_update(n, 90);
    assert_string_equal(r.seen_when_reentered, "L"); /* the inner update returned before H was delivered */
    assert_string_equal(r.seen, "LH");
    assert_int_equal(atomic_load(&r.overlapped), 0);
    assert_int_equal(hm__notify_state(n), eMemoryAvailableHigh);
    hm__notify_destroy(n);
}

/* hm__notify_force sends what it is told, even the current state, and sets the state the next loads start from. */
static void test_force(void **state)
{
    hm_notify *n = hm__notify_create(80, 40, 5);
    recorder r;
    recorder_init(&r);
    assert_int_equal(hm__notify_register(n, &r.iface), S_OK);
    hm__notify_force(n, eMemoryAvailableNeutral);
    hm__notify_force(n, eMemoryAvailableNeutral);
    hm__notify_force(n, eMemoryAvailableLow);
    assert_int_equal(hm__notify_state(n), eMemoryAvailableLow);
    hm__notify_update(n, 78); /* inside Low's hysteresis band: stays Low, nothing sent */
    hm__notify_update(n, 10);
    assert_string_equal(r.seen, "NNLH");
    assert_int_equal(hm__notify_count(n), 4);
    hm__notify_destroy(n);
}

static void *update_to(void *arg)
{
    hm_notify **n = arg;
    hm__notify_update(*n, 95);
    return NULL;
}

/* While one thread is stuck in a callback, another's changes return at once and pile up; all of them are then
 * delivered by the first thread, in order, none lost (more than the queue's initial depth). */
static void test_blocked_callback_queues_changes(void **state)
{
    hm_notify *n = hm__notify_create(80, 40, 5);
    recorder r;
    recorder_init(&r);
    r.block = true;
    assert_int_equal(hm__notify_register(n, &r.iface), S_OK);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, update_to, &n), 0);
    while (!atomic_load(&r.entered))
        sched_yield();
    char expect[SEEN_MAX] = "L";
    for (int k = 0; k < 100; k++) {
        hm__notify_update(n, k % 2 ? 95 : 10);
        strcat(expect, k % 2 ? "L" : "H");
    }
    assert_int_equal(hm__notify_count(n), 0); /* nothing delivered yet: the thread is still in its first call */
    atomic_store(&r.release, 1);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_string_equal(r.seen, expect);
    assert_int_equal(hm__notify_count(n), 101);
    assert_int_equal(atomic_load(&r.overlapped), 0);
    hm__notify_destroy(n);
}

static hm_notify *shared;

static void *feeder(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    for (int i = 0; i < 5000; i++) {
        seed = seed * 1103515245u + 12345u;
        hm__notify_update(shared, (seed >> 16) % 101);
    }
    return NULL;
}

/* Four threads feeding loads: calls never overlap, no notification repeats the one before (each is a change),
 * every call is counted, and the final state is the last delivered. */
static void test_threads(void **state)
{
    shared = hm__notify_create(80, 40, 5);
    recorder r;
    recorder_init(&r);
    r.spin = true;
    assert_int_equal(hm__notify_register(shared, &r.iface), S_OK);
    pthread_t t[4];
    for (uintptr_t i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, feeder, (void *)(i + 1)), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    assert_int_equal(atomic_load(&r.overlapped), 0);
    assert_true(r.count > 1);
    assert_int_equal(hm__notify_count(shared), (uint64_t)r.count);
    for (int k = 1; k < r.count && k < SEEN_MAX; k++)
        if (r.seen[k] == r.seen[k - 1])
            fail_msg("notification %d repeats the one before: %.*s", k, k + 1, r.seen);
    assert_int_equal(r.last, hm__notify_state(shared));
    hm__notify_destroy(shared);
    assert_int_equal(atomic_load(&r.ref), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sequences),
        cmocka_unit_test(test_references),
        cmocka_unit_test(test_order_across_callbacks),
        cmocka_unit_test(test_register_during_delivery),
        cmocka_unit_test(test_reentrant),
        cmocka_unit_test(test_force),
        cmocka_unit_test(test_blocked_callback_queues_changes),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

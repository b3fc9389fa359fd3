/* The shared counting notification callback (harness/trace/counting_callback.h): it counts, keeps the first levels
 * and the last, runs its hook inside each notification, and the heap variant frees itself on its last Release. */
#include "counting_callback.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

/* The hook sees each notification after it is counted. */
static void note_level(hm_counting_callback *cb, EMemoryAvailable e)
{
    int *hooked = cb->ctx;
    if (atomic_load(&cb->count) <= 3)
        *hooked = *hooked * 10 + (int)e;
}

static void test_counts_and_hooks(void **state)
{
    (void)state;
    int hooked = 0;
    hm_counting_callback cb = HM_COUNTING_CALLBACK_INIT;
    cb.on_notify = note_level;
    cb.ctx = &hooked;
    static const EMemoryAvailable told[] = {eMemoryAvailableLow, eMemoryAvailableHigh, eMemoryAvailableNeutral};
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(ICLRMemoryNotificationCallback_OnMemoryNotification(&cb.iface, told[i]), S_OK);
    assert_int_equal(atomic_load(&cb.count), 3);
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(cb.seen[i], told[i]);
    assert_int_equal(cb.last, eMemoryAvailableNeutral);
    assert_int_equal(hooked, (int)told[0] * 100 + (int)told[1] * 10 + (int)told[2]);
    for (int i = 3; i < HM_COUNTING_CALLBACK_SEEN + 5; i++) /* past the kept levels: counted, nothing overrun */
        ICLRMemoryNotificationCallback_OnMemoryNotification(&cb.iface, eMemoryAvailableLow);
    assert_int_equal(atomic_load(&cb.count), HM_COUNTING_CALLBACK_SEEN + 5);
}

static void test_com_rules(void **state)
{
    (void)state;
    hm_counting_callback cb = HM_COUNTING_CALLBACK_INIT;
    void *got = NULL;
    assert_int_equal(ICLRMemoryNotificationCallback_QueryInterface(&cb.iface, &IID_IUnknown, &got), S_OK);
    assert_ptr_equal(got, &cb.iface);
    assert_int_equal(ICLRMemoryNotificationCallback_QueryInterface(&cb.iface, &IID_IHostMalloc, &got), E_NOINTERFACE);
    assert_null(got);
    assert_int_equal(ICLRMemoryNotificationCallback_QueryInterface(&cb.iface, &IID_IUnknown, NULL), E_POINTER);
    assert_int_equal(atomic_load(&cb.refs), 2);
    assert_int_equal(ICLRMemoryNotificationCallback_AddRef(&cb.iface), 3);
    assert_int_equal(ICLRMemoryNotificationCallback_Release(&cb.iface), 2);

    /* On the heap: the last Release frees it (a leak or a double free shows under ASan). */
    hm_counting_callback *owned = hm_counting_callback_new();
    assert_non_null(owned);
    assert_int_equal(ICLRMemoryNotificationCallback_AddRef(&owned->iface), 2);
    assert_int_equal(ICLRMemoryNotificationCallback_Release(&owned->iface), 1);
    assert_int_equal(ICLRMemoryNotificationCallback_Release(&owned->iface), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts_and_hooks),
        cmocka_unit_test(test_com_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

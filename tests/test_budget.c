/* The commit budget (src/budget.c): ceilings per critical level, load figures, concurrent charging. */
#include "budget.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

typedef struct ceiling_case {
    uint64_t limit, reserve_process, reserve_appdomain;
    uint64_t task, appdomain, process; /* expected ceilings */
} ceiling_case;

/* Each level may charge exactly up to its ceiling; one byte more fails and charges nothing. */
static void test_ceilings(void **state)
{
    static const ceiling_case cases[] = {
        {1000, 100, 200, 700, 900, 1000},
        {3200, 0, 0, 3000, 3100, 3200},      /* defaults: limit/32 each */
        {1000, 2000, 50, 0, 0, 1000},        /* reserve.process clamped to the limit */
        {1000, 600, 600, 0, 400, 1000},      /* reserve.appdomain clamped so task's ceiling stays >= 0 */
    };
    static const EMemoryCriticalLevel levels[] = {eTaskCritical, eAppDomainCritical, eProcessCritical};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const uint64_t ceilings[] = {cases[i].task, cases[i].appdomain, cases[i].process};
        for (int l = 0; l < 3; l++) {
            hm_budget b;
            hm_budget_init(&b, cases[i].limit, cases[i].reserve_process, cases[i].reserve_appdomain);
            assert_int_equal(hm_budget_ceiling(&b, levels[l]), ceilings[l]);
            if (ceilings[l])
                assert_true(hm_budget_charge(&b, levels[l], ceilings[l]));
            assert_false(hm_budget_charge(&b, levels[l], 1));
            assert_int_equal(atomic_load(&b.charged), ceilings[l]);
            hm_budget_uncharge(&b, ceilings[l]);
            assert_int_equal(atomic_load(&b.charged), 0);
            assert_int_equal(atomic_load(&b.peak), ceilings[l]);
        }
    }
}

typedef struct load_case {
    uint64_t charged;
    DWORD load;
    SIZE_T available;
} load_case;

static void test_load(void **state)
{
    static const load_case cases[] = {{0, 0, 1000}, {499, 49, 501}, {500, 50, 500}, {999, 99, 1}, {1000, 100, 0},
                                      {1500, 100, 0}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        hm_budget b;
        hm_budget_init(&b, 1000, 10, 10);
        hm_budget_charge_always(&b, cases[i].charged);
        DWORD load;
        SIZE_T available;
        hm_budget_load(&b, &load, &available);
        assert_int_equal(load, cases[i].load);
        assert_int_equal(available, cases[i].available);
    }
}

/* Without a limit the budget is the cgroup's or physical memory: something real and non-zero. */
static void test_system_limit(void **state)
{
    hm_budget b;
    hm_budget_init(&b, 0, 0, 0);
    assert_true(b.limit >= (64ull << 20));
    assert_int_equal(b.limit, hm_budget_system_limit());
}

static hm_budget shared;

static void *charger(void *arg)
{
    (void)arg;
    for (int i = 0; i < 100000; i++)
        if (hm_budget_charge(&shared, eTaskCritical, 7))
            hm_budget_uncharge(&shared, (i & 1) ? 7 : 0);
    return NULL;
}

/* Four threads charging at once never exceed the ceiling. */
static void test_concurrent(void **state)
{
    hm_budget_init(&shared, 100000, 1000, 1000);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, charger, NULL);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_true(atomic_load(&shared.charged) <= hm_budget_ceiling(&shared, eTaskCritical));
    assert_true(atomic_load(&shared.peak) <= hm_budget_ceiling(&shared, eTaskCritical));
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_ceilings), cmocka_unit_test(test_load),
                                       cmocka_unit_test(test_system_limit), cmocka_unit_test(test_concurrent)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}

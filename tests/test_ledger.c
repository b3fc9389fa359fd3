/* The address-space ledger (src/ledger.c): consistent calls charge the budget, inconsistent ones are refused and
 * logged naming the range. */
#include "ledger.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

typedef enum { NEEDS, ACQUIRED, RELEASED } op;

typedef struct step {
    op op;
    uintptr_t start;
    uint64_t size;
    HRESULT expect;
    uint64_t ranges, bytes; /* after the step */
} step;

typedef struct ledger_case {
    const char *what;
    step steps[6];
    int nsteps;
    const char *problem; /* substring of the last logged problem, or NULL when none is logged */
} ledger_case;

#define K 0x1000
static void test_sequences(void **state)
{
    static const ledger_case cases[] = {
        {"acquire and release", {{ACQUIRED, 0x10000, 4 * K, S_OK, 1, 4 * K}, {RELEASED, 0x10000, 0, S_OK, 0, 0}}, 2,
         NULL},
        {"acquired without needs is normal", {{ACQUIRED, 0x20000, K, S_OK, 1, K}}, 1, NULL},
        {"needs then acquired", {{NEEDS, 0, 8 * K, S_OK, 0, 0}, {ACQUIRED, 0x40000, 8 * K, S_OK, 1, 8 * K}}, 2, NULL},
        {"needs size 0 (whole file)", {{NEEDS, 0, 0, S_OK, 0, 0}}, 1, NULL},
        {"needs over the budget", {{NEEDS, 0, 1 << 30, E_OUTOFMEMORY, 0, 0}}, 1, NULL},
        {"release of an unknown range",
         {{ACQUIRED, 0x10000, K, S_OK, 1, K}, {RELEASED, 0x50000, 0, HOST_E_INVALIDOPERATION, 1, K}}, 2,
         "ReleasedVirtualAddressSpace(0x50000): no acquired range starts there"},
        {"release inside a range is not its start",
         {{ACQUIRED, 0x10000, 4 * K, S_OK, 1, 4 * K}, {RELEASED, 0x11000, 0, HOST_E_INVALIDOPERATION, 1, 4 * K}}, 2,
         "no acquired range starts there"},
        {"overlapping acquisitions",
         {{ACQUIRED, 0x10000, 4 * K, S_OK, 1, 4 * K}, {ACQUIRED, 0x12000, 4 * K, HOST_E_INVALIDOPERATION, 1, 4 * K}},
         2, "overlaps the acquired range 0x10000+0x4000"},
        {"overlap from below",
         {{ACQUIRED, 0x20000, 4 * K, S_OK, 1, 4 * K}, {ACQUIRED, 0x1F000, 2 * K, HOST_E_INVALIDOPERATION, 1, 4 * K}},
         2, "overlaps"},
        {"adjacent ranges are fine",
         {{ACQUIRED, 0x10000, 4 * K, S_OK, 1, 4 * K}, {ACQUIRED, 0x14000, 4 * K, S_OK, 2, 8 * K}}, 2, NULL},
        {"a NULL or empty range", {{ACQUIRED, 0, K, E_INVALIDARG, 0, 0}, {ACQUIRED, 0x10000, 0, E_INVALIDARG, 0, 0}},
         2, "an empty or impossible range"},
        {"released twice",
         {{ACQUIRED, 0x10000, K, S_OK, 1, K}, {RELEASED, 0x10000, 0, S_OK, 0, 0},
          {RELEASED, 0x10000, 0, HOST_E_INVALIDOPERATION, 0, 0}},
         3, "no acquired range starts there"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        hm_budget b;
        hm_budget_init(&b, 64 << 20, 1 << 20, 1 << 20);
        hm_ledger *l = hm_ledger_create(&b);
        for (int k = 0; k < cases[i].nsteps; k++) {
            const step *s = &cases[i].steps[k];
            HRESULT hr = s->op == NEEDS      ? hm_ledger_needs(l, s->start, s->size)
                         : s->op == ACQUIRED ? hm_ledger_acquired(l, s->start, s->size)
                                             : hm_ledger_released(l, s->start);
            if (hr != s->expect)
                fail_msg("%s, step %d: %s, expected %s", cases[i].what, k + 1, hm_hr_name(hr), hm_hr_name(s->expect));
            assert_int_equal(hm_ledger_ranges(l), s->ranges);
            assert_int_equal(hm_ledger_bytes(l), s->bytes);
            assert_int_equal(atomic_load(&b.charged), s->bytes); /* the budget is charged exactly */
            char msg[160];
            assert_int_equal(hm_ledger_check(l, msg, sizeof msg), 0);
        }
        char problems[4][160];
        size_t logged = hm_ledger_problems(l, problems, 4);
        if (cases[i].problem) {
            assert_true(logged >= 1);
            size_t kept = logged < 4 ? logged : 4;
            if (!strstr(problems[kept - 1], cases[i].problem))
                fail_msg("%s: problem '%s' lacks '%s'", cases[i].what, problems[kept - 1], cases[i].problem);
        } else {
            assert_int_equal(logged, 0);
        }
        hm_ledger_destroy(l);
        assert_int_equal(atomic_load(&b.charged), 0); /* what was left is uncharged */
    }
}

/* Acquired ranges are charged even over the limit: the memory is taken already. */
static void test_charge_over_limit(void **state)
{
    hm_budget b;
    hm_budget_init(&b, 1 << 20, 0, 0);
    hm_ledger *l = hm_ledger_create(&b);
    assert_int_equal(hm_ledger_acquired(l, 0x100000, 2 << 20), S_OK);
    DWORD load;
    SIZE_T avail;
    hm_budget_load(&b, &load, &avail);
    assert_int_equal(load, 100);
    assert_int_equal(avail, 0);
    hm_ledger_destroy(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_sequences), cmocka_unit_test(test_charge_over_limit)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}

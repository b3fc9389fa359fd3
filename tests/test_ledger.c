/* The address-space ledger (src/ledger.c): consistent calls charge the budget, inconsistent ones are refused and
 * logged naming the call and the range; the log is bounded; many threads at once keep the books straight. */
#include "ledger.h"

#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sys/mman.h>

#include <cmocka.h>

#define K ((uint64_t)0x1000)
#define MB ((uint64_t)1 << 20)

typedef enum { END = 0, NEEDS, ACQUIRED, RELEASED } op; /* END: the steps stop */

typedef struct step {
    op op;
    uintptr_t start;
    uint64_t size;
    HRESULT expect;
    uint64_t ranges, bytes; /* after the step; the budget is charged exactly `bytes` */
} step;

typedef struct ledger_case {
    const char *what;
    step steps[8];
    const char *problem; /* substring of the last logged problem, or NULL when none is logged */
    size_t nproblems;
} ledger_case;

/* The budget: 64 MiB with 1 MiB reserves, so Needs has room up to eAppDomainCritical's 63 MiB. */
static const ledger_case cases[] = {
    {"acquire and release", {{ACQUIRED, 0x10000, 4 * K, S_OK, 1, 4 * K}, {RELEASED, 0x10000, 0, S_OK, 0, 0}}, NULL, 0},
    {"acquired without needs is normal", {{ACQUIRED, 0x20000, K, S_OK, 1, K}}, NULL, 0},
    {"needs then acquired", {{NEEDS, 0, 8 * K, S_OK, 0, 0}, {ACQUIRED, 0x40000, 8 * K, S_OK, 1, 8 * K}}, NULL, 0},
    {"needs size 0 (the whole file) has room", {{NEEDS, 0, 0, S_OK, 0, 0}}, NULL, 0},
    {"needs up to the appdomain ceiling", {{NEEDS, 0x1230000, 63 * MB, S_OK, 0, 0}}, NULL, 0},
    {"needs over the budget", {{NEEDS, 0, 63 * MB + 1, E_OUTOFMEMORY, 0, 0}, {NEEDS, 0, UINT64_MAX, E_OUTOFMEMORY, 0, 0}}, NULL, 0},
    {"needs counts what is charged",
     {{ACQUIRED, 0x10000000, 60 * MB, S_OK, 1, 60 * MB},
      {NEEDS, 0, 3 * MB, S_OK, 1, 60 * MB},
      {NEEDS, 0, 3 * MB + 1, E_OUTOFMEMORY, 1, 60 * MB},
      {RELEASED, 0x10000000, 0, S_OK, 0, 0},
      {NEEDS, 0, 3 * MB + 1, S_OK, 0, 0}}, NULL, 0},
    {"release of an unknown range",
     {{ACQUIRED, 0x10000, K, S_OK, 1, K}, {RELEASED, 0x50000, 0, HOST_E_INVALIDOPERATION, 1, K}},
     "ReleasedVirtualAddressSpace(0x50000): no acquired range starts there", 1},
    {"release inside a range is not its start",
     {{ACQUIRED, 0x10000, 4 * K, S_OK, 1, 4 * K}, {RELEASED, 0x11000, 0, HOST_E_INVALIDOPERATION, 1, 4 * K}},
     "ReleasedVirtualAddressSpace(0x11000): no acquired range starts there (it is inside 0x10000+0x4000)", 1},
    {"release of NULL", {{RELEASED, 0, 0, HOST_E_INVALIDOPERATION, 0, 0}}, "ReleasedVirtualAddressSpace(0x0)", 1},
    {"released twice",
     {{ACQUIRED, 0x10000, K, S_OK, 1, K}, {RELEASED, 0x10000, 0, S_OK, 0, 0},
      {RELEASED, 0x10000, 0, HOST_E_INVALIDOPERATION, 0, 0}},
     "ReleasedVirtualAddressSpace(0x10000): no acquired range starts there", 1},
    {"overlap from above",
     {{ACQUIRED, 0x10000, 4 * K, S_OK, 1, 4 * K}, {ACQUIRED, 0x12000, 4 * K, HOST_E_INVALIDOPERATION, 1, 4 * K}},
     "AcquiredVirtualAddressSpace(0x12000, 0x4000): overlaps the acquired range 0x10000+0x4000", 1},
    {"overlap from below",
     {{ACQUIRED, 0x20000, 4 * K, S_OK, 1, 4 * K}, {ACQUIRED, 0x1F000, 2 * K, HOST_E_INVALIDOPERATION, 1, 4 * K}},
     "AcquiredVirtualAddressSpace(0x1f000, 0x2000): overlaps the acquired range 0x20000+0x4000", 1},
    {"acquired twice",
     {{ACQUIRED, 0x20000, 4 * K, S_OK, 1, 4 * K}, {ACQUIRED, 0x20000, 4 * K, HOST_E_INVALIDOPERATION, 1, 4 * K}},
     "overlaps the acquired range 0x20000+0x4000", 1},
    {"a range around others",
     {{ACQUIRED, 0x20000, K, S_OK, 1, K}, {ACQUIRED, 0x30000, K, S_OK, 2, 2 * K},
      {ACQUIRED, 0x10000, 0x40000, HOST_E_INVALIDOPERATION, 2, 2 * K}},
     "AcquiredVirtualAddressSpace(0x10000, 0x40000): overlaps the acquired range 0x20000+0x1000", 1},
    {"adjacent ranges on both sides are fine",
     {{ACQUIRED, 0x14000, 4 * K, S_OK, 1, 4 * K}, {ACQUIRED, 0x10000, 4 * K, S_OK, 2, 8 * K},
      {ACQUIRED, 0x18000, 4 * K, S_OK, 3, 12 * K}, {RELEASED, 0x14000, 0, S_OK, 2, 8 * K},
      {ACQUIRED, 0x14000, 2 * K, S_OK, 3, 10 * K},
      {ACQUIRED, 0x16000, 2 * K, S_OK, 4, 12 * K}}, NULL, 0}, /* fills the gap exactly */
    {"a NULL start", {{ACQUIRED, 0, K, E_INVALIDARG, 0, 0}}, "AcquiredVirtualAddressSpace(0x0, 0x1000): NULL start", 1},
    {"size 0", {{ACQUIRED, 0x10000, 0, E_INVALIDARG, 0, 0}}, "AcquiredVirtualAddressSpace(0x10000, 0x0): size 0", 1},
    {"a range wrapping around",
     {{ACQUIRED, UINTPTR_MAX - 0xfff, 2 * K, E_INVALIDARG, 0, 0}},
     "AcquiredVirtualAddressSpace(0xfffffffffffff000, 0x2000): the range wraps around the address space", 1},
    {"a range ending at the very top, and its neighbour",
     {{ACQUIRED, UINTPTR_MAX - 0xfff, K, S_OK, 1, K}, {ACQUIRED, UINTPTR_MAX - 0x1fff, K, S_OK, 2, 2 * K},
      {ACQUIRED, UINTPTR_MAX - 0x1fff, 2 * K, HOST_E_INVALIDOPERATION, 2, 2 * K}},
     "overlaps", 1},
    {"each problem is logged",
     {{ACQUIRED, 0, K, E_INVALIDARG, 0, 0}, {RELEASED, 0x9000, 0, HOST_E_INVALIDOPERATION, 0, 0},
      {ACQUIRED, 0x9000, 0, E_INVALIDARG, 0, 0}},
     "size 0", 3},
};

static void test_sequences(void **state)
{
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const ledger_case *c = &cases[i];
        hm_budget b;
        hm__budget_init(&b, 64 * MB, MB, MB);
        hm_ledger *l = hm__ledger_create(&b);
        assert_non_null(l);
        for (int k = 0; k < 8 && c->steps[k].op != END; k++) {
            const step *s = &c->steps[k];
            HRESULT hr = s->op == NEEDS      ? hm__ledger_needs(l, s->start, s->size)
                         : s->op == ACQUIRED ? hm__ledger_acquired(l, s->start, s->size)
                                             : hm__ledger_released(l, s->start);
            if (hr != s->expect)
                fail_msg("%s, step %d: %s, expected %s", c->what, k + 1, hm_hr_name(hr), hm_hr_name(s->expect));
            if (hm__ledger_ranges(l) != s->ranges || hm__ledger_bytes(l) != s->bytes || atomic_load(&b.charged) != s->bytes)
                fail_msg("%s, step %d: %llu ranges, %llu bytes, %llu charged", c->what, k + 1,
                         (unsigned long long)hm__ledger_ranges(l), (unsigned long long)hm__ledger_bytes(l),
                         (unsigned long long)atomic_load(&b.charged));
            char msg[160] = "untouched";
            if (hm__ledger_check(l, msg, sizeof msg) != 0 || msg[0])
                fail_msg("%s, step %d: check says '%s'", c->what, k + 1, msg);
        }
        char problems[4][160];
        size_t logged = hm__ledger_problems(l, problems, 4);
        if (logged != c->nproblems)
            fail_msg("%s: %zu problems logged, expected %zu", c->what, logged, c->nproblems);
        if (c->problem && !strstr(problems[(logged < 4 ? logged : 4) - 1], c->problem))
            fail_msg("%s: problem '%s' lacks '%s'", c->what, problems[(logged < 4 ? logged : 4) - 1], c->problem);
        hm__ledger_destroy(l);
        assert_int_equal(atomic_load(&b.charged), 0); /* what was left is uncharged */
    }
}

/* Acquired ranges are charged even over the limit: the memory is taken already. */
static void test_charge_over_limit(void **state)
{
    hm_budget b;
    hm__budget_init(&b, MB, 0, 0);
    hm_ledger *l = hm__ledger_create(&b);
    assert_int_equal(hm__ledger_acquired(l, 0x100000, 2 * MB), S_OK);
    DWORD load;
    SIZE_T avail;
    hm__budget_load(&b, &load, &avail);
    assert_int_equal(load, 100);
    assert_int_equal(avail, 0);
    assert_int_equal(hm__ledger_needs(l, 0, K), E_OUTOFMEMORY);
    hm__ledger_destroy(l);
    assert_int_equal(atomic_load(&b.charged), 0);
}

/* Without a budget the ledger still keeps its books, and Needs always has room. */
static void test_no_budget(void **state)
{
    hm_ledger *l = hm__ledger_create(NULL);
    assert_int_equal(hm__ledger_needs(l, 0, UINT64_MAX), S_OK);
    assert_int_equal(hm__ledger_acquired(l, 0x10000, K), S_OK);
    assert_int_equal(hm__ledger_bytes(l), K);
    assert_int_equal(hm__ledger_released(l, 0x10000), S_OK);
    assert_int_equal(hm__ledger_ranges(l), 0);
    hm__ledger_destroy(l);
}

/* The log keeps the last 64 lines: asked for fewer, it gives the newest, oldest first; the count is of all. */
static void test_problem_ring(void **state)
{
    hm_ledger *l = hm__ledger_create(NULL);
    for (uintptr_t i = 0; i < 100; i++)
        assert_int_equal(hm__ledger_released(l, 0x100000 + i * K), HOST_E_INVALIDOPERATION);
    static char lines[200][160];
    assert_int_equal(hm__ledger_problems(l, lines, 3), 100);
    assert_non_null(strstr(lines[0], "(0x161000)")); /* problems 97, 98, 99 */
    assert_non_null(strstr(lines[2], "(0x163000)"));
    assert_int_equal(hm__ledger_problems(l, lines, 200), 100);
    assert_non_null(strstr(lines[0], "(0x124000)")); /* the oldest kept: problem 36 */
    assert_non_null(strstr(lines[63], "(0x163000)"));
    assert_int_equal(hm__ledger_problems(l, lines, 0), 100);
    hm__ledger_destroy(l);
}

/* Runs fn with stderr going to a file, and returns what was written (static buffer). */
static const char *capture_stderr(void (*fn)(void))
{
    static char text[1024];
    char path[] = "/tmp/hostmem-ledger-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    fflush(stderr);
    int saved = dup(2);
    assert_true(saved >= 0);
    assert_true(dup2(fd, 2) >= 0);
    fn();
    fflush(stderr);
    assert_true(dup2(saved, 2) >= 0);
    close(saved);
    ssize_t n = pread(fd, text, sizeof text - 1, 0);
    close(fd);
    text[n > 0 ? n : 0] = '\0';
    return text;
}

static void release_unknown(void)
{
    hm_ledger *l = hm__ledger_create(NULL);
    hm__ledger_released(l, 0x7f0000000000);
    hm__ledger_destroy(l);
}

/* With HOSTMEM_LOG set, each problem is also printed to stderr; without it, nothing is. */
static void test_log_to_stderr(void **state)
{
    setenv("HOSTMEM_LOG", "1", 1);
    const char *text = capture_stderr(release_unknown);
    assert_string_equal(text,
                        "hostmem: ledger: ReleasedVirtualAddressSpace(0x7f0000000000): no acquired range starts there\n");
    unsetenv("HOSTMEM_LOG");
    assert_string_equal(capture_stderr(release_unknown), "");
}

/* ---- Threads -------------------------------------------------------------------------------------------- */

static hm_ledger *shared;
#define PER_THREAD 400
#define CONTESTED ((uintptr_t)0x70000000)

/* Acquires its own ranges (interleaved with the other threads'), releases every other one, and tries once for
 * a range every thread wants. */
static void *worker(void *arg)
{
    uintptr_t t = (uintptr_t)arg;
    int *won = malloc(sizeof *won);
    *won = 0;
    for (uintptr_t i = 0; i < PER_THREAD; i++) {
        uintptr_t start = 0x10000000 + (i * 4 + t) * 2 * K;
        if (hm__ledger_acquired(shared, start, 2 * K) != S_OK)
            *won = -1000;
        if (i == PER_THREAD / 2 && hm__ledger_acquired(shared, CONTESTED, K) == S_OK)
            (*won)++;
    }
    for (uintptr_t i = 0; i < PER_THREAD; i += 2)
        if (hm__ledger_released(shared, 0x10000000 + (i * 4 + t) * 2 * K) != S_OK)
            *won = -1000;
    return won;
}

/* Four threads at once: every own range is recorded, exactly one thread gets the contested range, and the books,
 * the budget and the log agree afterwards. */
static void test_threads(void **state)
{
    hm_budget b;
    hm__budget_init(&b, 64 * MB, MB, MB);
    shared = hm__ledger_create(&b);
    pthread_t t[4];
    for (uintptr_t i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, worker, (void *)i), 0);
    int winners = 0;
    for (int i = 0; i < 4; i++) {
        void *won;
        assert_int_equal(pthread_join(t[i], &won), 0);
        assert_true(*(int *)won >= 0);
        winners += *(int *)won;
        free(won);
    }
    assert_int_equal(winners, 1);
    assert_int_equal(hm__ledger_ranges(shared), 4 * PER_THREAD / 2 + 1);
    assert_int_equal(hm__ledger_bytes(shared), 4 * PER_THREAD / 2 * 2 * K + K);
    assert_int_equal(atomic_load(&b.charged), hm__ledger_bytes(shared));
    char msg[160];
    assert_int_equal(hm__ledger_check(shared, msg, sizeof msg), 0);
    char lines[4][160];
    assert_int_equal(hm__ledger_problems(shared, lines, 4), 3); /* the three losers */
    assert_non_null(strstr(lines[2], "overlaps the acquired range 0x70000000+0x1000"));
    hm__ledger_destroy(shared);
    assert_int_equal(atomic_load(&b.charged), 0);
}

/* SSCLI passes size 0 for a whole-file view: the ledger measures the mapping at start from the process map. */
static void test_acquired_size_zero_is_measured(void **state)
{
    (void)state;
    hm_budget b;
    hm__budget_init(&b, 64 << 20, 1 << 20, 1 << 20);
    hm_ledger *l = hm__ledger_create(&b);
    void *view = mmap(NULL, 5 * 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(view != MAP_FAILED);
    assert_int_equal(hm__ledger_acquired(l, (uintptr_t)view, 0), S_OK);
    assert_int_equal(hm__ledger_bytes(l), 5 * 4096);
    assert_int_equal(hm__ledger_released(l, (uintptr_t)view), S_OK);
    assert_int_equal(hm__ledger_bytes(l), 0);
    munmap(view, 5 * 4096);
    hm__ledger_destroy(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_acquired_size_zero_is_measured),
        cmocka_unit_test(test_sequences),     cmocka_unit_test(test_charge_over_limit),
        cmocka_unit_test(test_no_budget),     cmocka_unit_test(test_problem_ring),
        cmocka_unit_test(test_log_to_stderr), cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

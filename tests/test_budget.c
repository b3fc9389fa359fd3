/* The commit budget (src/budget.c): ceilings per critical level, reserves, load figures, the system's limit
 * (cgroup v2, v1, physical memory), concurrent charging. */
#include "budget.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ftw.h>

#include <cmocka.h>

static const EMemoryCriticalLevel levels[] = {eTaskCritical, eAppDomainCritical, eProcessCritical};

typedef struct ceiling_case {
    const char *what;
    uint64_t limit, reserve_process, reserve_appdomain;
    uint64_t kept_process, kept_appdomain; /* the reserves after init */
    uint64_t task, appdomain, process;     /* expected ceilings */
} ceiling_case;

static const ceiling_case ceiling_cases[] = {
    {"given reserves", 1000, 100, 200, 100, 200, 700, 900, 1000},
    {"reserves of 0 default to limit/32 each", 3200, 0, 0, 100, 100, 3000, 3100, 3200},
    {"one reserve defaulted", 3200, 0, 300, 100, 300, 2800, 3100, 3200},
    {"reserve.process clamped to the limit", 1000, 2000, 50, 1000, 0, 0, 0, 1000},
    {"reserve.appdomain clamped so the task ceiling stays >= 0", 1000, 600, 600, 600, 400, 0, 400, 1000},
    {"reserves filling the limit exactly", 1000, 500, 500, 500, 500, 0, 500, 1000},
    {"a one-byte limit", 1, 0, 0, 0, 0, 1, 1, 1},
};

/* Each level may charge exactly up to its ceiling; one byte more fails and charges nothing. */
static void test_ceilings(void **state)
{
    for (size_t i = 0; i < sizeof ceiling_cases / sizeof ceiling_cases[0]; i++) {
        const ceiling_case *c = &ceiling_cases[i];
        const uint64_t ceilings[] = {c->task, c->appdomain, c->process};
        for (int l = 0; l < 3; l++) {
            hm_budget b;
            hm__budget_init(&b, c->limit, c->reserve_process, c->reserve_appdomain);
            if (b.reserve_process != c->kept_process || b.reserve_appdomain != c->kept_appdomain)
                fail_msg("%s: reserves %llu/%llu", c->what, (unsigned long long)b.reserve_process,
                         (unsigned long long)b.reserve_appdomain);
            if (hm__budget_ceiling(&b, levels[l]) != ceilings[l])
                fail_msg("%s: ceiling of %s is %llu", c->what, hm_level_name(levels[l]),
                         (unsigned long long)hm__budget_ceiling(&b, levels[l]));
            if (ceilings[l])
                assert_true(hm__budget_charge(&b, levels[l], ceilings[l]));
            assert_true(hm__budget_charge(&b, levels[l], 0)); /* nothing more is still possible */
            assert_false(hm__budget_charge(&b, levels[l], 1));
            assert_false(hm__budget_charge(&b, levels[l], UINT64_MAX)); /* no wrap-around */
            assert_int_equal(atomic_load(&b.charged), ceilings[l]);
            hm__budget_uncharge(&b, ceilings[l]);
            assert_int_equal(atomic_load(&b.charged), 0);
            assert_int_equal(atomic_load(&b.peak), ceilings[l]);
        }
    }
}

/* Filling the budget at task level leaves exactly the reserves: appdomain gets its reserve, process the last. */
static void test_levels_fail_in_order(void **state)
{
    hm_budget b;
    hm__budget_init(&b, 10000, 1000, 2000);
    uint64_t task = 0, appdomain = 0, process = 0;
    while (hm__budget_charge(&b, eTaskCritical, 100))
        task += 100;
    while (hm__budget_charge(&b, eAppDomainCritical, 100))
        appdomain += 100;
    assert_false(hm__budget_charge(&b, eTaskCritical, 1));
    while (hm__budget_charge(&b, eProcessCritical, 100))
        process += 100;
    assert_int_equal(task, 7000);
    assert_int_equal(appdomain, 2000);
    assert_int_equal(process, 1000);
    /* Giving back some memory lets the lower levels in again. */
    hm__budget_uncharge(&b, 3500);
    assert_false(hm__budget_charge(&b, eTaskCritical, 501));
    assert_true(hm__budget_charge(&b, eTaskCritical, 500));
    assert_int_equal(atomic_load(&b.charged), 7000);
    assert_int_equal(atomic_load(&b.peak), 10000);
}

/* Memory already taken is charged whatever the ceiling; then every level is refused until it is given back. */
static void test_charge_always(void **state)
{
    hm_budget b;
    hm__budget_init(&b, 1000, 10, 10);
    hm__budget_charge_always(&b, 1500);
    assert_int_equal(atomic_load(&b.charged), 1500);
    assert_int_equal(atomic_load(&b.peak), 1500);
    for (int l = 0; l < 3; l++)
        assert_false(hm__budget_charge(&b, levels[l], 1));
    hm__budget_uncharge(&b, 600);
    assert_true(hm__budget_charge(&b, eProcessCritical, 100));
    assert_int_equal(atomic_load(&b.charged), 1000);
    assert_int_equal(atomic_load(&b.peak), 1500);
}

typedef struct load_case {
    uint64_t limit, charged;
    DWORD load;
    SIZE_T available;
} load_case;

/* Load is a percentage rounded down (100 at or over the limit); available is what is left (0 when over). */
static void test_load(void **state)
{
    static const load_case cases[] = {
        {1000, 0, 0, 1000},   {1000, 9, 0, 991},   {1000, 499, 49, 501}, {1000, 500, 50, 500},
        {1000, 999, 99, 1},   {1000, 1000, 100, 0}, {1000, 1500, 100, 0},
        {1ull << 62, 1ull << 61, 50, 1ull << 61}, /* charged * 100 would overflow */
        {1ull << 62, (1ull << 62) - 1, 99, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        hm_budget b;
        hm__budget_init(&b, cases[i].limit, 10, 10);
        hm__budget_charge_always(&b, cases[i].charged);
        DWORD load;
        SIZE_T available;
        hm__budget_load(&b, &load, &available);
        if (load != cases[i].load || available != cases[i].available)
            fail_msg("limit %llu charged %llu: load %u available %zu", (unsigned long long)cases[i].limit,
                     (unsigned long long)cases[i].charged, load, (size_t)available);
    }
}

/* ---- The system's limit ------------------------------------------------------------------------------- */

typedef struct fake_file {
    const char *path; /* relative to the fake root; "cgroup" is the /proc/self/cgroup stand-in */
    const char *text;
} fake_file;

typedef struct cgroup_case {
    const char *what;
    fake_file files[5];
    uint64_t expect;
} cgroup_case;

static void write_file(const char *root, const char *rel, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    /* Make the directories on the way. */
    for (char *s = path + strlen(root) + 1; (s = strchr(s, '/')) != NULL; s++) {
        *s = '\0';
        mkdir(path, 0700);
        *s = '/';
    }
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    return remove(path);
}

/* The cgroup limit, from fake /proc/self/cgroup and cgroupfs trees. */
static void test_cgroup_limit(void **state)
{
    static const cgroup_case cases[] = {
        {"v2: the process's own memory.max", {{"cgroup", "0::/a/b\n"}, {"fs/a/b/memory.max", "524288000\n"}}, 524288000},
        {"v2: \"max\" walks up to a parent's limit",
         {{"cgroup", "0::/a/b\n"}, {"fs/a/b/memory.max", "max\n"}, {"fs/a/memory.max", "max\n"},
          {"fs/memory.max", "1073741824\n"}},
         1073741824},
        {"v2: a parent's tighter limit binds",
         {{"cgroup", "0::/a/b\n"}, {"fs/a/b/memory.max", "800000000\n"}, {"fs/a/memory.max", "300000000\n"}},
         300000000},
        {"v2: max all the way is no limit", {{"cgroup", "0::/a\n"}, {"fs/a/memory.max", "max\n"}}, 0},
        {"v2: the root cgroup", {{"cgroup", "0::/\n"}, {"fs/memory.max", "2000000000\n"}}, 2000000000},
        {"v2: garbage is no limit", {{"cgroup", "0::/a\n"}, {"fs/a/memory.max", "lots\n"}}, 0},
        {"v1: the memory controller's limit",
         {{"cgroup", "12:cpu,cpuacct:/x\n4:memory:/m\n1:name=systemd:/\n"},
          {"fs/memory/m/memory.limit_in_bytes", "2147483648\n"}},
         2147483648},
        {"v1: absurd values mean no limit, and the walk goes on up",
         {{"cgroup", "4:memory:/docker/abc\n"},
          {"fs/memory/docker/abc/memory.limit_in_bytes", "9223372036854771712\n"},
          {"fs/memory/memory.limit_in_bytes", "3221225472\n"}},
         3221225472},
        {"v1: only absurd values", {{"cgroup", "4:memory:/\n"}, {"fs/memory/memory.limit_in_bytes", "9223372036854771712\n"}},
         0},
        {"v1: a controller list naming memory among others",
         {{"cgroup", "7:blkio,memory:/q\n"}, {"fs/memory/q/memory.limit_in_bytes", "4096\n"}}, 4096},
        {"v1: memsw is not memory", {{"cgroup", "7:memsw:/q\n"}, {"fs/memory/q/memory.limit_in_bytes", "4096\n"}}, 0},
        {"hybrid: v2 line without a limit, v1 memory limit",
         {{"cgroup", "4:memory:/m\n0::/m\n"}, {"fs/memory/m/memory.limit_in_bytes", "5000000\n"}}, 5000000},
        {"no cgroup files", {{"cgroup", "0::/nowhere\n"}}, 0},
        {"an empty /proc/self/cgroup", {{"cgroup", ""}}, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char root[] = "/tmp/hostmem-cgroup-XXXXXX";
        assert_non_null(mkdtemp(root));
        for (int f = 0; f < 5 && cases[i].files[f].path; f++)
            write_file(root, cases[i].files[f].path, cases[i].files[f].text);
        char cgroup[128], fs[128];
        snprintf(cgroup, sizeof cgroup, "%s/cgroup", root);
        snprintf(fs, sizeof fs, "%s/fs", root);
        uint64_t got = hm__budget_cgroup_limit(cgroup, fs);
        assert_int_equal(nftw(root, remove_entry, 8, FTW_DEPTH | FTW_PHYS), 0);
        if (got != cases[i].expect)
            fail_msg("%s: %llu, expected %llu", cases[i].what, (unsigned long long)got,
                     (unsigned long long)cases[i].expect);
    }
    assert_int_equal(hm__budget_cgroup_limit("/nonexistent/cgroup", "/nonexistent"), 0);
}

/* Without a limit the budget is the cgroup's or physical memory: something real, never above physical memory. */
static void test_system_limit(void **state)
{
    hm_budget b;
    hm__budget_init(&b, 0, 0, 0);
    uint64_t physical = (uint64_t)sysconf(_SC_PHYS_PAGES) * (uint64_t)sysconf(_SC_PAGESIZE);
    assert_true(b.limit >= (16ull << 20));
    assert_true(b.limit <= physical);
    assert_int_equal(b.limit, hm__budget_system_limit());
    uint64_t cgroup = hm__budget_cgroup_limit("/proc/self/cgroup", "/sys/fs/cgroup");
    assert_int_equal(b.limit, cgroup && cgroup < physical ? cgroup : physical);
    assert_int_equal(b.reserve_process, b.limit / 32);
}

/* ---- Concurrency ---------------------------------------------------------------------------------------- */

static hm_budget shared;

typedef struct charger_result {
    uint64_t charged, refused;
} charger_result;

/* Charges 7 bytes at a time; gives back every other successful charge. */
static void *charger(void *arg)
{
    charger_result *r = arg;
    for (int i = 0; i < 50000; i++) {
        if (hm__budget_charge(&shared, eTaskCritical, 7)) {
            r->charged += 7;
            if (i & 1) {
                hm__budget_uncharge(&shared, 7);
                r->charged -= 7;
            }
        } else {
            r->refused++;
        }
    }
    return NULL;
}

/* Four threads charging at once never exceed the ceiling, reach it, and lose no update. */
static void test_concurrent(void **state)
{
    hm__budget_init(&shared, 100000, 1000, 1000);
    pthread_t t[4];
    charger_result results[4] = {{0, 0}};
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, charger, &results[i]), 0);
    uint64_t total = 0, refused = 0;
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        total += results[i].charged;
        refused += results[i].refused;
    }
    uint64_t ceiling = hm__budget_ceiling(&shared, eTaskCritical);
    assert_int_equal(atomic_load(&shared.charged), total);
    assert_true(atomic_load(&shared.peak) <= ceiling);
    assert_true(refused > 0);                        /* the ceiling was reached */
    assert_true(atomic_load(&shared.peak) > ceiling - 7 * 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ceilings),     cmocka_unit_test(test_levels_fail_in_order),
        cmocka_unit_test(test_charge_always), cmocka_unit_test(test_load),
        cmocka_unit_test(test_cgroup_limit), cmocka_unit_test(test_system_limit),
        cmocka_unit_test(test_concurrent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

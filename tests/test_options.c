/* Options of the built-in manager and the names of HRESULTs, methods and levels. */
#include "options.h"
#include "size_parse.h"

#include <hostmem/hostmem.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

typedef struct option_case {
    const char *text;
    HRESULT expect;
    const char *message; /* substring HostMemLastError() must contain, for failures */
} option_case;

/* Good strings parse, and every bad key or value fails with E_INVALIDARG and a message naming it. */
static void test_option_strings(void **state)
{
    static const option_case cases[] = {
        {NULL, S_OK, NULL},
        {"", S_OK, NULL},
        {"limit=64M", S_OK, NULL},
        {" limit = 1G , backend = sim ,", S_OK, NULL},
        {"deterministic=1,base=0x7e0000000000", S_OK, NULL},
        {"deterministic=yes,span=256M", S_OK, NULL},
        {"reserve.process=1M,reserve.appdomain=2M", S_OK, NULL},
        {"notify.low=80,notify.high=40,notify.hysteresis=3", S_OK, NULL},
        {"limt=64M", E_INVALIDARG, "unknown option 'limt'"},
        {"limit", E_INVALIDARG, "expected key=value"},
        {"limit=64Q", E_INVALIDARG, "option 'limit': bad value '64Q'"},
        {"limit=-1", E_INVALIDARG, "bad value '-1'"},
        {"limit=99999999999999999999", E_INVALIDARG, "bad value"},
        {"limit=16777216T", E_INVALIDARG, "bad value"},
        {"backend=windows", E_INVALIDARG, "expected os or sim"},
        {"deterministic=2", E_INVALIDARG, "expected 0 or 1"},
        {"base=0x1234", E_INVALIDARG, "multiple of 64 KiB"},
        {"notify.low=101", E_INVALIDARG, "percentage"},
        {"notify.low=40,notify.high=60", E_INVALIDARG, "high must be below low"},
        {"=5", E_INVALIDARG, "unknown option ''"},
        {"backend=sim,zero=heaps", S_OK, NULL},
        {"zero=all", S_OK, NULL},
        {"zero=heaps", E_INVALIDARG, "option 'zero=heaps' needs backend=sim"},
        {"backend=sim,zero=none", E_INVALIDARG, "option 'zero': bad value 'none' (expected all or heaps)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        hm_options o;
        HRESULT hr = hm__options_parse(cases[i].text, &o);
        if (hr != cases[i].expect)
            fail_msg("options '%s': %s, expected %s", cases[i].text ? cases[i].text : "(null)", hm_hr_name(hr),
                     hm_hr_name(cases[i].expect));
        if (cases[i].message && !strstr(HostMemLastError(), cases[i].message))
            fail_msg("options '%s': message '%s' lacks '%s'", cases[i].text, HostMemLastError(), cases[i].message);
        /* The factory fails alike, and leaves no manager behind. */
        IHostMemoryManager *m = (IHostMemoryManager *)0x1;
        hr = HostMemCreateBuiltinManager(cases[i].text, &m);
        assert_int_equal(hr, cases[i].expect);
        if (SUCCEEDED(hr))
            assert_int_equal(IHostMemoryManager_Release(m), 0);
        else
            assert_null(m);
    }
}

/* Values land in the right fields. */
static void test_option_values(void **state)
{
    hm_options o;
    assert_int_equal(hm__options_parse("limit=64M,backend=sim,span=128M,notify.low=95", &o), S_OK);
    assert_int_equal(o.limit, 64ull << 20);
    assert_true(o.sim);
    assert_int_equal(o.span, 128ull << 20);
    assert_int_equal(o.notify_low, 95);
    assert_int_equal(o.notify_high, 50);
    assert_int_equal(o.notify_hysteresis, 5);
    assert_false(o.deterministic);
    assert_false(o.zero_heaps_only);
    assert_int_equal(hm__options_parse("backend=sim,zero=heaps", &o), S_OK);
    assert_true(o.zero_heaps_only);
}

/* The one size parser, with each caller's set: the options' (hex, K-T, "KB"), the fault spec's sizes (hex, K-T)
 * and counts (hex, no suffix), and the hostmem command's numbers (decimal, K-G). */
#define OPTIONS (HM_SIZE_RADIX | HM_SIZE_KMG | HM_SIZE_T | HM_SIZE_BYTES)
#define FAULT_SIZE (HM_SIZE_RADIX | HM_SIZE_KMG | HM_SIZE_T)
#define FAULT_COUNT HM_SIZE_RADIX
#define CLI HM_SIZE_KMG
#define OK HM_SIZE_OK
#define BAD HM_SIZE_NOT_A_NUMBER
#define BIG HM_SIZE_TOO_LARGE

typedef struct size_case {
    const char *text;
    unsigned flags;
    hm_size_result result;
    uint64_t value;
} size_case;

static void test_sizes(void **state)
{
    static const size_case cases[] = {
        {"0", OPTIONS, OK, 0}, {"4096", OPTIONS, OK, 4096}, {"0x1000", OPTIONS, OK, 4096}, {"0X1f", OPTIONS, OK, 31},
        {"010", OPTIONS, OK, 8}, /* a leading 0 is octal, as strtoull's base 0 read it */
        {"08", OPTIONS, BAD, 0}, {"64K", OPTIONS, OK, 65536}, {"64k", OPTIONS, OK, 65536},
        {"1M", OPTIONS, OK, 1u << 20}, {"2G", OPTIONS, OK, 2ull << 30}, {"1T", OPTIONS, OK, 1ull << 40},
        {"3MB", OPTIONS, OK, 3u << 20}, {"3mb", OPTIONS, OK, 3u << 20}, {"0x10K", OPTIONS, OK, 16u << 10},
        {"", OPTIONS, BAD, 0}, {"K", OPTIONS, BAD, 0}, {"0x", OPTIONS, BAD, 0}, {"1X", OPTIONS, BAD, 0},
        {"1 M", OPTIONS, BAD, 0}, {"1KK", OPTIONS, BAD, 0}, {"1B", OPTIONS, BAD, 0}, {"-5", OPTIONS, BAD, 0},
        {"+5", OPTIONS, BAD, 0}, {" 5", OPTIONS, BAD, 0}, {"18446744073709551615", OPTIONS, OK, UINT64_MAX},
        {"18446744073709551616", OPTIONS, BIG, 0}, {"0x10000000000000000", OPTIONS, BIG, 0},
        {"16777216T", OPTIONS, BIG, 0}, {"16777215T", OPTIONS, OK, 16777215ull << 40},
        {"1M", FAULT_SIZE, OK, 1u << 20}, {"2t", FAULT_SIZE, OK, 2ull << 40}, {"0x4000", FAULT_SIZE, OK, 0x4000},
        {"1KB", FAULT_SIZE, BAD, 0},
        {"3", FAULT_COUNT, OK, 3}, {"0x7f", FAULT_COUNT, OK, 0x7f}, {"3K", FAULT_COUNT, BAD, 0},
        {"64k", CLI, OK, 65536}, {"2G", CLI, OK, 2ull << 30}, {"1T", CLI, BAD, 0}, {"1KB", CLI, BAD, 0},
        {"0x10", CLI, BAD, 0}, {"010", CLI, OK, 10}, {"1.5", CLI, BAD, 0}, {"17179869184G", CLI, BIG, 0},
        {"99999999999999999999x", CLI, BAD, 0}, /* junk outranks an overflow */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint64_t v = 12345;
        hm_size_result r = hm__parse_size(cases[i].text, strlen(cases[i].text), cases[i].flags, &v);
        if (r != cases[i].result || v != (r == HM_SIZE_OK ? cases[i].value : 12345))
            fail_msg("size '%s' (flags %#x): result %d value %llu", cases[i].text, cases[i].flags, (int)r,
                     (unsigned long long)v);
    }
    /* The text is length-bounded: what follows len is not read. */
    uint64_t v = 0;
    assert_int_equal(hm__parse_size("64K,limit=1", 3, OPTIONS, &v), HM_SIZE_OK);
    assert_int_equal(v, 65536);
}

/* Every HRESULT name in the table parses back to its value; numbers parse too; the names are the specs'. */
static void test_hresult_names(void **state)
{
    static const HRESULT values[] = {S_OK, E_OUTOFMEMORY, E_INVALIDARG, E_POINTER, HOST_E_INVALIDOPERATION,
                                     HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS), HOST_E_TIMEOUT};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        const char *name = hm_hr_name(values[i]);
        HRESULT back = 0;
        assert_int_equal(hm_hr_parse(name, strlen(name), &back), 0);
        assert_int_equal(back, values[i]);
    }
    assert_string_equal(hm_hr_name(E_OUTOFMEMORY), "E_OUTOFMEMORY");
    assert_string_equal(hm_hr_name(HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS)),
                        "HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS)");
    assert_string_equal(hm_hr_name((HRESULT)0x80001234), "0x80001234");
    HRESULT hr;
    assert_int_equal(hm_hr_parse("0x8007000E", 10, &hr), 0);
    assert_int_equal(hr, E_OUTOFMEMORY);
    assert_int_equal(hm_hr_parse("e_outofmemory", 13, &hr), 0);
    assert_int_equal(hm_hr_parse("E_NOPE", 6, &hr), -1);
    assert_int_equal(hm_hr_parse("0x1FFFFFFFF", 11, &hr), -1);
}

static void test_method_and_level_names(void **state)
{
    for (int m = 0; m < HM_METHOD_COUNT; m++) {
        const char *name = hm_method_name((hm_method)m);
        assert_int_equal(hm_method_parse(name, strlen(name)), m);
    }
    assert_int_equal(hm_method_parse("virtualalloc", 12), HM_METHOD_VIRTUAL_ALLOC);
    assert_int_equal(hm_method_parse("CreateMAlloc", 12), HM_METHOD_CREATE_MALLOC);
    assert_int_equal(hm_method_parse("Nope", 4), HM_METHOD_COUNT);
    assert_string_equal(hm_level_short(eAppDomainCritical), "appdomain");
    assert_string_equal(hm_level_name(eProcessCritical), "eProcessCritical");
    assert_string_equal(hm_level_short((EMemoryCriticalLevel)9), "invalid");
}

/* The help lists every key. */
static void test_options_help(void **state)
{
    const char *help = HostMemOptionsHelp();
    static const char *const keys[] = {"backend", "deterministic", "base", "span", "limit", "reserve.process",
                                       "reserve.appdomain", "notify.low", "notify.high", "notify.hysteresis", "zero"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        assert_non_null(strstr(help, keys[i]));
}

/* A bad HOSTMEM_FAULTS makes the factory fail with a message naming the variable, its value and the parser's reason,
 * whole (the longest reason lists every method). */
static void test_environment_faults_refused(void **state)
{
    (void)state;
    static const struct {
        const char *spec, *message;
    } cases[] = {
        {"bogus", "HOSTMEM_FAULTS='bogus' is refused: fault spec: column 1: unknown method 'bogus' (expected "
                  "VirtualAlloc, VirtualFree, VirtualQuery, VirtualProtect, GetMemoryLoad, CreateMalloc, "
                  "RegisterMemoryNotificationCallback, NeedsVirtualAddressSpace, AcquiredVirtualAddressSpace, "
                  "ReleasedVirtualAddressSpace, Alloc, DebugAlloc, Free, heap, any or pressure)"},
        {"VirtualAlloc,return=S_OK", "HOSTMEM_FAULTS='VirtualAlloc,return=S_OK' is refused: fault spec: column 21: "
                                     "bad return 'S_OK'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        setenv("HOSTMEM_FAULTS", cases[i].spec, 1);
        IHostMemoryManager *m = NULL;
        HRESULT hr = HostMemCreateManager(NULL, &m);
        unsetenv("HOSTMEM_FAULTS");
        assert_int_equal(hr, E_INVALIDARG);
        assert_null(m);
        if (!strstr(HostMemLastError(), cases[i].message))
            fail_msg("HOSTMEM_FAULTS='%s': message '%s' lacks '%s'", cases[i].spec, HostMemLastError(),
                     cases[i].message);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_option_strings), cmocka_unit_test(test_option_values),
        cmocka_unit_test(test_sizes),          cmocka_unit_test(test_hresult_names),
        cmocka_unit_test(test_method_and_level_names), cmocka_unit_test(test_options_help),
        cmocka_unit_test(test_environment_faults_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

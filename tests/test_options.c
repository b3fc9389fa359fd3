/* Options of the built-in manager and the names of HRESULTs, methods and levels. */
#include "options.h"

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
        HRESULT hr = hm_options_parse(cases[i].text, &o);
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
    assert_int_equal(hm_options_parse("limit=64M,backend=sim,span=128M,notify.low=95", &o), S_OK);
    assert_int_equal(o.limit, 64ull << 20);
    assert_true(o.sim);
    assert_int_equal(o.span, 128ull << 20);
    assert_int_equal(o.notify_low, 95);
    assert_int_equal(o.notify_high, 50);
    assert_int_equal(o.notify_hysteresis, 5);
    assert_false(o.deterministic);
    assert_false(o.zero_heaps_only);
    assert_int_equal(hm_options_parse("backend=sim,zero=heaps", &o), S_OK);
    assert_true(o.zero_heaps_only);
}

typedef struct size_case {
    const char *text;
    bool ok;
    uint64_t value;
} size_case;

static void test_sizes(void **state)
{
    static const size_case cases[] = {
        {"0", true, 0},          {"4096", true, 4096},       {"0x1000", true, 4096}, {"64K", true, 65536},
        {"64k", true, 65536},    {"1M", true, 1u << 20},     {"2G", true, 2ull << 30}, {"1T", true, 1ull << 40},
        {"3MB", true, 3u << 20}, {"", false, 0},             {"K", false, 0},        {"1X", false, 0},
        {"1 M", false, 0},       {"-5", false, 0},           {"18446744073709551616", false, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint64_t v = 12345;
        bool ok = hm_parse_size(cases[i].text, strlen(cases[i].text), &v);
        if (ok != cases[i].ok || (ok && v != cases[i].value))
            fail_msg("size '%s': ok=%d value=%llu", cases[i].text, ok, (unsigned long long)v);
    }
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

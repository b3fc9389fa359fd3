/* The text form of one call: the line parser's tokens (spaces, tabs, quotes) and the formatter's output (every
 * length of buffer truncates as snprintf does, and returns the full length). */
#include <hostmem/hostmem.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "trace_internal.h"

#include <stdio.h>
#include <string.h>

typedef struct text_case {
    const char *given;     /* a line as a file may hold it */
    const char *canonical; /* how the call formats back */
} text_case;

static const text_case cases[] = {
    {"2 t1 VirtualAlloc addr=0 size=0x10000 type=MEM_RESERVE prot=PAGE_NOACCESS level=task -> S_OK mem=@1",
     "2 t1 VirtualAlloc addr=0 size=0x10000 type=MEM_RESERVE prot=PAGE_NOACCESS level=task -> S_OK mem=@1"},
    {"  4\tt1 \t VirtualAlloc\taddr=@1+0x1000   size=0x2000 type=MEM_COMMIT prot=PAGE_READWRITE level=appdomain "
     "->\tS_OK mem=@1+0x1000\t ",
     "4 t1 VirtualAlloc addr=@1+0x1000 size=0x2000 type=MEM_COMMIT prot=PAGE_READWRITE level=appdomain -> S_OK "
     "mem=@1+0x1000"},
    {"20 t1 DebugAlloc heap=h1 size=0xc8 level=process file=\"a b\\\"c\\\" d.c\"\tline=42 -> S_OK mem=#2",
     "20 t1 DebugAlloc heap=h1 size=0xc8 level=process file=\"a b\\\"c\\\" d.c\" line=42 -> S_OK mem=#2"},
    {"21 t2 DebugAlloc heap=h1 size=0x10 level=task file=\"tab\there\" line=1 -> S_OK mem=#3",
     "21 t2 DebugAlloc heap=h1 size=0x10 level=task file=\"tab\\x09here\" line=1 -> S_OK mem=#3"},
    {"18446744073709551615 t4294967295 VirtualQuery addr=0xffffffffffffffff length=18446744073709551615 -> S_OK "
     "result=18446744073709551615 base=@4294967295+0xffffffffffffffff allocbase=0x1 allocprot=0 "
     "regionsize=0xffffffffffffffff state=MEM_FREE protect=PAGE_NOACCESS memtype=0",
     "18446744073709551615 t4294967295 VirtualQuery addr=0xffffffffffffffff length=18446744073709551615 -> S_OK "
     "result=18446744073709551615 base=@4294967295+0xffffffffffffffff allocbase=0x1 allocprot=0 "
     "regionsize=0xffffffffffffffff state=MEM_FREE protect=PAGE_NOACCESS memtype=0"},
    {"8 t1 GetMemoryLoad -> S_OK load=4294967295 available=0x5e2917000",
     "8 t1 GetMemoryLoad -> S_OK load=4294967295 available=0x5e2917000"},
    {"9 t3 CreateMalloc type=MALLOC_THREADSAFE -> S_OK heap=h4294967295",
     "9 t3 CreateMalloc type=MALLOC_THREADSAFE -> S_OK heap=h4294967295"},
    {"10 t1 VirtualAlloc addr=0 size=0x1000 type=MEM_COMMIT|MEM_RESERVE prot=PAGE_READWRITE|PAGE_GUARD|0x12000 "
     "level=task -> E_INVALIDARG mem=0",
     "10 t1 VirtualAlloc addr=0 size=0x1000 type=MEM_COMMIT|MEM_RESERVE prot=PAGE_READWRITE|PAGE_GUARD|0x12000 "
     "level=task -> E_INVALIDARG mem=0"},
};

/* Refused lines: a quote keeps a tab or a space inside its token, so what follows it is not a new field. */
static const char *const refused[] = {
    "20 t1 DebugAlloc heap=h1 size=0xc8 level=process file=\"a\" line=42\" -> S_OK mem=#2",
    "1 t1\x01VirtualFree addr=@1 size=0 type=MEM_RELEASE -> S_OK",
    "1\tt1 VirtualFree addr=@1 size=0 type=MEM_RELEASE\" -> S_OK",
};

static void test_lines_parse_and_format_back(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        hm_trace_call call;
        char err[256] = "", line[HM_TRACE_LINE_MAX];
        if (hm__trace_parse_line(cases[i].given, strlen(cases[i].given), &call, err, sizeof err) != 0)
            fail_msg("case %zu refused: %s", i, err);
        size_t n = hm_trace_format_call(&call, line, sizeof line);
        assert_int_equal(n, strlen(cases[i].canonical));
        assert_string_equal(line, cases[i].canonical);
    }
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        hm_trace_call call;
        char err[256] = "";
        assert_int_not_equal(hm__trace_parse_line(refused[i], strlen(refused[i]), &call, err, sizeof err), 0);
        assert_true(err[0] != '\0');
    }
}

/* Every buffer length, 0 to the line's length + 1: snprintf's contract (the first len - 1 bytes and a NUL, the full
 * length returned), so a caller can size its buffer from a first call. */
/* A blank line (spaces, tabs, nothing) has no sequence number: refused with an empty token in the message. The
 * parser once printed its first token uninitialised there: a wild pointer, which AFL++ found as a crash. */
static void test_blank_line_refused(void **state)
{
    (void)state;
    static const char *const blank[] = {"", " ", "     ", "\t \t"};
    for (size_t i = 0; i < sizeof blank / sizeof blank[0]; i++) {
        hm_trace_call call;
        char err[256];
        assert_int_not_equal(hm__trace_parse_line(blank[i], strlen(blank[i]), &call, err, sizeof err), 0);
        assert_string_equal(err, "field 'seq': bad sequence number ''");
    }
}

static void test_format_truncates_as_snprintf(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        hm_trace_call call;
        char err[256];
        assert_int_equal(hm__trace_parse_line(cases[i].given, strlen(cases[i].given), &call, err, sizeof err), 0);
        size_t full = strlen(cases[i].canonical);
        assert_int_equal(hm_trace_format_call(&call, NULL, 0), full);
        for (size_t len = 1; len <= full + 1; len++) {
            char buf[HM_TRACE_LINE_MAX];
            memset(buf, 'X', sizeof buf);
            assert_int_equal(hm_trace_format_call(&call, buf, len), full);
            assert_int_equal(strlen(buf), len - 1);
            assert_memory_equal(buf, cases[i].canonical, len - 1);
            assert_int_equal(buf[len], 'X'); /* nothing written past the buffer */
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lines_parse_and_format_back),
        cmocka_unit_test(test_format_truncates_as_snprintf),
        cmocka_unit_test(test_blank_line_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* HostMemCreateManager with a bad HOSTMEM_FAULTS or HOSTMEM_TRACE says why on stderr, once per process. */
#include <hostmem/hostmem.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

/* Runs HostMemCreateManager with stderr sent to a file; returns what it printed (static buffer). */
static const char *create_capturing_stderr(HRESULT *hr)
{
    static char text[4096];
    FILE *capture = tmpfile();
    assert_non_null(capture);
    fflush(stderr);
    int saved = dup(2);
    assert_true(saved >= 0);
    assert_true(dup2(fileno(capture), 2) == 2);
    IHostMemoryManager *m = NULL;
    *hr = HostMemCreateManager("", &m);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    if (m)
        IHostMemoryManager_Release(m);
    rewind(capture);
    size_t n = fread(text, 1, sizeof text - 1, capture);
    text[n] = '\0';
    fclose(capture);
    return text;
}

static void test_bad_environment_is_said_once(void **state)
{
    (void)state;
    static const struct {
        const char *faults, *trace;
        HRESULT hr;
        const char *expected; /* on stderr, "" for nothing */
    } cases[] = {
        {"VirtualAlloc,probabilty=2%", NULL, E_INVALIDARG,
         "hostmem: HOSTMEM_FAULTS='VirtualAlloc,probabilty=2%' is refused: "},
        {"VirtualAlloc,probabilty=2%", NULL, E_INVALIDARG, ""}, /* said once per process */
        {NULL, "/nonexistent/dir/x.trace", E_FAIL, ""},         /* once, whichever variable */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (cases[i].faults)
            setenv("HOSTMEM_FAULTS", cases[i].faults, 1);
        else
            unsetenv("HOSTMEM_FAULTS");
        if (cases[i].trace)
            setenv("HOSTMEM_TRACE", cases[i].trace, 1);
        else
            unsetenv("HOSTMEM_TRACE");
        HRESULT hr;
        const char *said = create_capturing_stderr(&hr);
        assert_int_equal(hr, cases[i].hr);
        if (*cases[i].expected) {
            assert_ptr_equal(strstr(said, cases[i].expected), said); /* one line, said once */
            assert_null(strstr(said + 1, "hostmem:"));
        } else {
            assert_string_equal(said, "");
        }
    }
    /* The trace variable is named in HostMemLastError() too. */
    assert_non_null(strstr(HostMemLastError(), "HOSTMEM_TRACE='/nonexistent/dir/x.trace' is refused: "));
    unsetenv("HOSTMEM_TRACE");
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_bad_environment_is_said_once)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}

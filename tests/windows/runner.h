/* A tiny assertion runner for the Windows tests (cmocka is not built for mingw): each case is a function that
 * CHECKs; a failed CHECK prints the file, line and expression and ends the case. main() runs a table of cases,
 * prints each case's name with PASS or FAIL, and exits with the number of failures. */
#ifndef HOSTMEM_TESTS_WINDOWS_RUNNER_H
#define HOSTMEM_TESTS_WINDOWS_RUNNER_H

#include <stdio.h>

typedef struct win_case {
    const char *name;
    int (*run)(void); /* 0 passed, else failed */
} win_case;

#define CHECK(cond)                                                                                              \
    do {                                                                                                         \
        if (!(cond)) {                                                                                           \
            printf("  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);                                    \
            return 1;                                                                                            \
        }                                                                                                        \
    } while (0)

/* An HRESULT compared with the one expected, both printed when they differ. */
#define CHECK_HR(expr, expected)                                                                                 \
    do {                                                                                                         \
        long got_ = (long)(expr), want_ = (long)(expected);                                                      \
        if (got_ != want_) {                                                                                     \
            printf("  %s:%d: %s gave 0x%08lX, expected 0x%08lX (%s)\n", __FILE__, __LINE__, #expr,               \
                   (unsigned long)got_, (unsigned long)want_, #expected);                                        \
            return 1;                                                                                            \
        }                                                                                                        \
    } while (0)

static inline int win_run_cases(const win_case *cases, size_t n)
{
    int failures = 0;
    for (size_t i = 0; i < n; i++) {
        int failed = cases[i].run();
        printf("%s %s\n", failed ? "FAIL" : "PASS", cases[i].name);
        fflush(stdout);
        failures += failed != 0;
    }
    printf("%d of %zu cases failed\n", failures, n);
    return failures;
}

#endif

/* The pressure checks' shared pieces (harness/check/pressure.c): the in-process watchdog reports a guarded call that
 * does not return in its time, on time, and never one that returned; the refusal rule. */
#include "check.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "support/support.h"

static int report_fd = -1; /* the child's end of the pipe its hang report goes to */

static void report_hang(const char *what, double seconds, void *ctx)
{
    (void)ctx;
    char text[200];
    int n = snprintf(text, sizeof text, "%s after %g s", what, seconds);
    if (write(report_fd, text, (size_t)n) != n)
        _exit(3);
}

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void pause_ms(long ms)
{
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

/* Runs body(arg) in a child whose hang reports go to a pipe; the report (NUL-terminated) lands in text, the child's
 * wait status in *status. Returns what the read returned (0: no report). */
static ssize_t in_child(void (*body)(const void *arg), const void *arg, char *text, size_t len, int *status)
{
    int fd;
    pid_t pid = fork_with_pipe(&fd);
    if (pid == 0) {
        report_fd = fd;
        body(arg);
        _exit(0);
    }
    ssize_t got = read(fd, text, len - 1);
    text[got > 0 ? got : 0] = '\0';
    close(fd);
    assert_int_equal(waitpid(pid, status, 0), pid);
    return got;
}

typedef struct {
    const char *name;
    double first_seconds; /* a call armed, waited on a little and returned, before the one that hangs */
    double hang_seconds;  /* the call that hangs, armed with this */
} hang_case;

/* In the child: an optional call that returns, then one that hangs. */
static void arm_then_hang(const void *arg)
{
    const hang_case *c = arg;
    if (c->first_seconds > 0) {
        hm__watchdog_arm("the call that returns", c->first_seconds, report_hang, NULL);
        pause_ms(50); /* the watchdog is waiting for its deadline now */
        hm__watchdog_disarm();
    }
    hm__watchdog_arm("the call that hangs", c->hang_seconds, report_hang, NULL);
    pause_ms(20000);
}

/* A call that hangs is reported under its name within its time (plus scheduling slack), also when the watchdog was
 * last waiting for a much later deadline of an earlier call that returned: the arm must wake it. The process then
 * aborts (a fuzz engine keeps the input). Run in a child, as the abort is the point. */
static void hang_is_reported_on_time(void **state)
{
    (void)state;
    static const hang_case cases[] = {
        {"first call ever hangs", 0, 0.2},
        {"after a call with a 60 s deadline", 60, 0.2},
        {"after a call with the same deadline", 0.2, 0.2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const hang_case *c = &cases[i];
        char text[200];
        int status = 0;
        double start = now_seconds();
        in_child(arm_then_hang, c, text, sizeof text, &status);
        double took = now_seconds() - start;
        print_message("%s: '%s', %.2f s\n", c->name, text, took);
        assert_string_equal(text, "the call that hangs after 0.2 s");
        assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
        assert_true(took < 5.0); /* not the earlier call's 60 s */
    }
}

/* In the child: 0.6 s of calls, each far shorter than its 0.1 s, then a wait past the last deadline. */
static void quick_calls(const void *arg)
{
    (void)arg;
    double end = now_seconds() + 0.6;
    while (now_seconds() < end) {
        hm__watchdog_arm("a quick call", 0.1, report_hang, NULL);
        hm__watchdog_disarm();
    }
    pause_ms(300);
}

/* Calls that return within their time are never reported, however many and however close together, nor after the
 * last one (the watchdog wakes at a deadline that is past and finds nothing armed). */
static void returned_calls_are_not_reported(void **state)
{
    (void)state;
    char text[200];
    int status = 0;
    assert_int_equal(in_child(quick_calls, NULL, text, sizeof text, &status), 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* A refusal is spurious when the host reports more available than asked plus the slack; not when it reports less,
 * and never by an overflow of asked + slack. */
static void refusal_rule(void **state)
{
    (void)state;
    static const struct {
        uint64_t asked, available;
        bool spurious;
    } cases[] = {
        {1 << 20, 64 << 20, true},
        {1 << 20, (1 << 20) + HM_REFUSAL_SLACK, true},
        {1 << 20, (1 << 20) + HM_REFUSAL_SLACK - 1, false},
        {64 << 20, 1 << 20, false},
        {UINT64_MAX - 10, UINT64_MAX, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_int_equal(hm__refusal_is_spurious(cases[i].asked, cases[i].available, HM_REFUSAL_SLACK),
                         cases[i].spurious);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hang_is_reported_on_time),
        cmocka_unit_test(returned_calls_are_not_reported),
        cmocka_unit_test(refusal_rule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

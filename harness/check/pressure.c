/* Shared pieces of the pressure checks: see pressure.h. */
#include "check.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

const char hm_reentry_query[] = "VirtualQuery from inside the callback";
const char hm_reentry_load[] = "GetMemoryLoad from inside the callback";
const char hm_reentry_alloc[] = "VirtualAlloc from inside the callback";
const char hm_reentry_free[] = "VirtualFree from inside the callback";

void hm__reentry_hang_message(char *out, size_t len, const char *in_flight, double seconds)
{
    snprintf(out, len, "the host called OnMemoryNotification holding a lock: %s did not return in %g s", in_flight,
             seconds);
}

/* ---- The watchdog ------------------------------------------------------------------------------------------------
 * One thread, made on the first arm, waiting on a condition variable: for a call to be armed, then for its deadline
 * (re-armed in the meantime: the new one). Arming and disarming cost an uncontended lock, and a signal only when the
 * watchdog sleeps past the new deadline. */

static struct {
    pthread_once_t once;
    bool running;
    pthread_mutex_t lock;
    pthread_cond_t changed;
    const char *what; /* the call armed, or NULL */
    uint64_t wakes_at; /* when the watchdog wakes by itself (UINT64_MAX: never, it waits for an arm) */
    double seconds;
    uint64_t deadline_ns;
    hm_watchdog_hang_fn *on_hang;
    void *ctx;
} dog = {.once = PTHREAD_ONCE_INIT, .lock = PTHREAD_MUTEX_INITIALIZER, .wakes_at = UINT64_MAX};

static void *watchdog_main(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&dog.lock);
    for (;;) {
        if (!dog.what) {
            dog.wakes_at = UINT64_MAX;
            pthread_cond_wait(&dog.changed, &dog.lock);
            continue;
        }
        uint64_t now = hm_now_ns();
        if (now < dog.deadline_ns) {
            struct timespec until = {(time_t)(dog.deadline_ns / 1000000000u), (long)(dog.deadline_ns % 1000000000u)};
            dog.wakes_at = dog.deadline_ns;
            pthread_cond_timedwait(&dog.changed, &dog.lock, &until);
            continue;
        }
        /* Still armed past its deadline: the call hangs. The lock stays held, so a late return waits in disarm
         * while the report is written and the process aborts. */
        dog.on_hang(dog.what, dog.seconds, dog.ctx);
        fflush(NULL);
        abort();
    }
    return NULL;
}

static void watchdog_start(void)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC); /* the clock hm_now_ns reads */
    int made = pthread_cond_init(&dog.changed, &attr);
    pthread_condattr_destroy(&attr);
    pthread_t thread;
    pthread_attr_t tattr;
    if (made != 0 || pthread_attr_init(&tattr) != 0)
        return;
    pthread_attr_setdetachstate(&tattr, PTHREAD_CREATE_DETACHED);
    dog.running = pthread_create(&thread, &tattr, watchdog_main, NULL) == 0;
    pthread_attr_destroy(&tattr);
}

bool hm__watchdog_arm(const char *what, double seconds, hm_watchdog_hang_fn *on_hang, void *ctx)
{
    pthread_once(&dog.once, watchdog_start);
    if (!dog.running)
        return false;
    pthread_mutex_lock(&dog.lock);
    dog.what = what;
    dog.seconds = seconds;
    dog.deadline_ns = hm_now_ns() + (uint64_t)(seconds * 1e9);
    dog.on_hang = on_hang;
    dog.ctx = ctx;
    /* Woken only when it would sleep past the new deadline: one waiting for an earlier deadline finds the new one
     * when it wakes, and waits again. Signalling every arm cost the fuzzer a futex call and a context switch for each
     * guarded call (3 % of fuzz_calls' time). */
    if (dog.deadline_ns < dog.wakes_at) {
        dog.wakes_at = dog.deadline_ns;
        pthread_cond_signal(&dog.changed);
    }
    pthread_mutex_unlock(&dog.lock);
    return true;
}

void hm__watchdog_disarm(void)
{
    if (!dog.running)
        return;
    pthread_mutex_lock(&dog.lock);
    dog.what = NULL; /* no signal needed: the watchdog finds it disarmed when it wakes */
    pthread_mutex_unlock(&dog.lock);
}

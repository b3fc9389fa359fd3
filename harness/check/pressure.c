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
 * or its disarm. Arming and disarming cost a lock and a signal, so guarded calls should be rare ones (the fuzzer
 * guards only the calls made from inside a notification). */

static struct {
    pthread_once_t once;
    bool running;
    pthread_mutex_t lock;
    pthread_cond_t changed;
    const char *what; /* the call armed, or NULL */
    double seconds;
    uint64_t deadline_ns;
    hm_watchdog_hang_fn *on_hang;
    void *ctx;
} dog = {.once = PTHREAD_ONCE_INIT, .lock = PTHREAD_MUTEX_INITIALIZER};

static void *watchdog_main(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&dog.lock);
    for (;;) {
        if (!dog.what) {
            pthread_cond_wait(&dog.changed, &dog.lock);
            continue;
        }
        uint64_t now = hm_now_ns();
        if (now < dog.deadline_ns) {
            struct timespec until = {(time_t)(dog.deadline_ns / 1000000000u), (long)(dog.deadline_ns % 1000000000u)};
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
    pthread_cond_signal(&dog.changed);
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

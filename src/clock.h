/* The monotonic clock every timeout, watchdog and benchmark reads. Internal to hostmem; header-only (inline) so
 * each layer and test that times something uses it without linking anything. */
#ifndef HOSTMEM_SRC_CLOCK_H
#define HOSTMEM_SRC_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Nanoseconds since an arbitrary start, never going back (CLOCK_MONOTONIC). */
static inline uint64_t hm_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The same clock in seconds, for timeouts and reports. */
static inline double hm_now_seconds(void)
{
    return (double)hm_now_ns() / 1e9;
}

#endif

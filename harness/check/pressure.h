/* What the pressure checks of conform (callback.reentry, pressure.cycles-keep-succeeding), stress and the
 * call-sequence fuzzer share: the name of a call made back into the host from inside OnMemoryNotification and the
 * message when one never returns; a watchdog that names that hang in-process (the fuzzer has no child process to
 * time out, as conform and stress do); and the rule that tells a real refusal from a spurious one
 * (docs/finding-bugs.md, "Refusals: real or spurious"). Internal to hostmem. */
#ifndef HOSTMEM_CHECK_PRESSURE_H
#define HOSTMEM_CHECK_PRESSURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The calls a callback makes back into the host, named while in flight (literals: they outlive any run). */
extern const char hm_reentry_query[]; /* "VirtualQuery from inside the callback" */
extern const char hm_reentry_load[];
extern const char hm_reentry_alloc[];
extern const char hm_reentry_free[];

/* "the host called OnMemoryNotification holding a lock: <in_flight> did not return in <seconds> s" into out. */
void hm__reentry_hang_message(char *out, size_t len, const char *in_flight, double seconds);

/* The in-process watchdog: arm before a call that may hang, disarm after it. When an armed call has not returned
 * after `seconds`, on_hang(what, seconds, ctx) runs on the watchdog's own thread (it reports; the watchdog aborts
 * when it returns, so every fuzz engine keeps the input). One call armed at a time; the thread is made on the first
 * arm. Returns false when no watchdog can run (the call is then made unguarded). */
typedef void hm_watchdog_hang_fn(const char *what, double seconds, void *ctx);
bool hm__watchdog_arm(const char *what, double seconds, hm_watchdog_hang_fn *on_hang, void *ctx);
void hm__watchdog_disarm(void);

/* The slack a refusal is allowed: a 64 KiB granule of rounding (and of a heap's chunk). */
#define HM_REFUSAL_SLACK ((uint64_t)64 << 10)

/* Whether an E_OUTOFMEMORY for `asked` bytes at eProcessCritical (the level that may use the whole budget),
 * with no fault injected, contradicts the host: it reports `available` bytes, more than asked plus `slack`. */
static inline bool hm__refusal_is_spurious(uint64_t asked, uint64_t available, uint64_t slack)
{
    return asked <= UINT64_MAX - slack && available >= asked + slack;
}

#endif

/* Memory-pressure notifications of the built-in manager. Internal to hostmem.
 *
 * Keeps the registered ICLRMemoryNotificationCallback objects (each AddRef'd; released by hm__notify_destroy)
 * and a pressure state, low / neutral / high, driven by the memory load:
 *   load >= low_at                      -> eMemoryAvailableLow
 *   load <= high_at                     -> eMemoryAvailableHigh
 *   otherwise                           -> eMemoryAvailableNeutral
 * with hysteresis: leaving a state needs the load to cross its threshold by `hysteresis` points
 * (Low is left when load < low_at - hysteresis; High when load > high_at + hysteresis).
 * Every state change calls OnMemoryNotification(new state) on every callback, once, in registration order; a
 * load that keeps the state calls nothing.
 *
 * Callbacks are called with no lock held, on the thread whose call changed the load, after that call has
 * finished its own work, so a callback may call back into the manager. A change made while callbacks are
 * running (from any thread, including from inside a callback) is delivered after them, in order, by the thread
 * already delivering (so that call returns before its change is delivered): never concurrently, never
 * reentrantly, never lost. A callback hears of the changes made after it registered. */
#ifndef HOSTMEM_SRC_NOTIFY_H
#define HOSTMEM_SRC_NOTIFY_H

#include <hostmem/hostmem.h>

#include <pthread.h>
#include <stdint.h>

typedef struct hm_notify hm_notify;

/* Thresholds in percent. Out of range: low_at > 100 becomes 90, hysteresis > 100 becomes 5, and high_at >= low_at
 * becomes 50 (or low_at - 1 when low_at <= 50). The state starts Neutral. NULL when out of memory. */
hm_notify *hm__notify_create(unsigned low_at, unsigned high_at, unsigned hysteresis);
/* Releases every callback. Not while a call into n is running. */
void hm__notify_destroy(hm_notify *n);

/* Back to the state hm__notify_create gave: every callback released, the state Neutral, nothing pending, the count
 * zero. Not while a call into n is running. */
void hm__notify_reset(hm_notify *n);

/* E_POINTER for NULL; registering the same object twice keeps one registration. A callback hears of the changes
 * that happen after it registered. */
HRESULT hm__notify_register(hm_notify *n, ICLRMemoryNotificationCallback *cb);

/* Feeds a new load figure; delivers any resulting notification before returning (see above). */
void hm__notify_update(hm_notify *n, unsigned load);

/* Sends `state` to every callback now, whatever the load (used by fault-injected pressure). */
void hm__notify_force(hm_notify *n, EMemoryAvailable state);

EMemoryAvailable hm__notify_state(hm_notify *n);
uint64_t hm__notify_count(hm_notify *n); /* OnMemoryNotification calls made */
size_t hm__notify_callbacks(hm_notify *n);

#endif

/* Options of the built-in manager: the `key=value,...` string HostMemCreateManager takes. Internal to hostmem. */
#ifndef HOSTMEM_SRC_OPTIONS_H
#define HOSTMEM_SRC_OPTIONS_H

#include <hostmem/hostmem.h>

#include <stdbool.h>
#include <stdint.h>

typedef struct hm_options {
    bool sim;                   /* backend=sim */
    bool deterministic;         /* deterministic=1 */
    uint64_t base;              /* base=ADDR */
    uint64_t span;              /* span=SIZE */
    uint64_t limit;             /* limit=SIZE (0: cgroup or physical memory) */
    uint64_t reserve_process;   /* reserve.process=SIZE (0: default) */
    uint64_t reserve_appdomain; /* reserve.appdomain=SIZE (0: default) */
    unsigned notify_low, notify_high, notify_hysteresis; /* percent */
    bool zero_heaps_only;       /* zero=heaps */
} hm_options;

/* Fills *out from text (NULL or "" for defaults). E_INVALIDARG for an unknown key or a bad value, with
 * HostMemLastError() naming both. */
HRESULT hm__options_parse(const char *text, hm_options *out);

#endif

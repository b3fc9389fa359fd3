/* The handle map of record and replay: (kind, handle) of a trace to what the live side gave for it. Internal to
 * hostmem; trace_internal.h includes it. */
#ifndef HOSTMEM_HARNESS_TRACE_HANDLE_MAP_H
#define HOSTMEM_HARNESS_TRACE_HANDLE_MAP_H

#include <hostmem/trace.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* An open-addressing map from (kind, handle) to what the replay host gave for it. A region or block that was
 * freed stays resolvable (VirtualQuery after release names it) until HM_TRACE_DEAD_KEPT later regions and blocks
 * have died: the reader of raw traces, the validating reader and the replayer all forget the same handles at the
 * same point, and memory follows the live state, not the trace length. Forgetting is lazy: a dead entry notes
 * the number of deaths when it died, lookups ignore it once HM_TRACE_DEAD_KEPT more have died, and the table
 * drops such entries when it would grow. */
#define HM_TRACE_DEAD_KEPT 16384
typedef struct hm_handle_entry {
    uint64_t key;   /* kind << 32 | handle; 0 = empty */
    uint64_t address;
    uint32_t heap;  /* blocks: their heap */
    uint32_t died;  /* dead regions and blocks: the map's death count when this one died */
    uint8_t live;
} hm_handle_entry;
typedef struct hm_handle_map {
    hm_handle_entry *slots;
    size_t capacity, count;
    uint32_t deaths;   /* regions and blocks killed so far (modulo 2^32: only differences are used) */
    size_t dead_limit; /* 0: never forget */
} hm_handle_map;
void hm__handle_map_init(hm_handle_map *map, size_t dead_limit);
void hm__handle_map_destroy(hm_handle_map *map);
hm_handle_entry *hm__handle_map_find(hm_handle_map *map, uint32_t kind, uint32_t handle);
/* Inserts or revives; NULL when out of memory. */
hm_handle_entry *hm__handle_map_put(hm_handle_map *map, uint32_t kind, uint32_t handle);
/* Marks an entry dead (entry pointers stay valid until the next put, remove or kill). */
void hm__handle_map_kill(hm_handle_map *map, hm_handle_entry *entry);
void hm__handle_map_remove(hm_handle_map *map, uint32_t kind, uint32_t handle);

#endif

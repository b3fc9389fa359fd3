/* The handle map: binds the handles a trace names (@n, #n, hN, cN) to what the live side gave for them, for the
 * readers' validation, the replayer and the reducer. An open-addressing table with lazy forgetting of the dead
 * (see handle_map.h). */
#include "trace_internal.h"

#include <stdlib.h>
#include <string.h>

static uint64_t handle_key(uint32_t kind, uint32_t handle) { return (uint64_t)kind << 32 | handle; }

static size_t handle_hash(uint64_t key, size_t mask)
{
    key ^= key >> 29;
    key *= 0xbf58476d1ce4e5b9ull;
    key ^= key >> 32;
    return (size_t)key & mask;
}

void hm__handle_map_init(hm_handle_map *map, size_t dead_limit)
{
    memset(map, 0, sizeof *map);
    map->dead_limit = dead_limit;
}

void hm__handle_map_destroy(hm_handle_map *map)
{
    free(map->slots);
    memset(map, 0, sizeof *map);
}

/* A dead region or block that HM_TRACE_DEAD_KEPT (dead_limit) others have died after: forgotten. */
static inline bool expired(const hm_handle_map *map, const hm_handle_entry *e)
{
    return !e->live && map->dead_limit && (e->key >> 32 == HM_REF_ALLOC || e->key >> 32 == HM_REF_BLOCK) &&
           (uint32_t)(map->deaths - e->died) >= map->dead_limit;
}

/* The entry of key, forgotten or not. */
static hm_handle_entry *find_raw(hm_handle_map *map, uint64_t key)
{
    if (!map->capacity)
        return NULL;
    size_t mask = map->capacity - 1;
    for (size_t i = handle_hash(key, mask);; i = (i + 1) & mask) {
        if (map->slots[i].key == key)
            return &map->slots[i];
        if (map->slots[i].key == 0)
            return NULL;
    }
}

hm_handle_entry *hm__handle_map_find(hm_handle_map *map, uint32_t kind, uint32_t handle)
{
    hm_handle_entry *e = find_raw(map, handle_key(kind, handle));
    return e && !expired(map, e) ? e : NULL;
}

/* Backward-shift deletion keeps probe chains intact without tombstones. */
static void remove_slot(hm_handle_map *map, size_t i)
{
    size_t mask = map->capacity - 1;
    map->count--;
    for (size_t j = (i + 1) & mask; map->slots[j].key; j = (j + 1) & mask) {
        size_t home = handle_hash(map->slots[j].key, mask);
        /* Move j into the hole at i when its home is not in (i, j]. */
        if ((j > i && (home <= i || home > j)) || (j < i && (home <= i && home > j))) {
            map->slots[i] = map->slots[j];
            i = j;
        }
    }
    memset(&map->slots[i], 0, sizeof map->slots[i]);
}

void hm__handle_map_remove(hm_handle_map *map, uint32_t kind, uint32_t handle)
{
    hm_handle_entry *e = find_raw(map, handle_key(kind, handle));
    if (e)
        remove_slot(map, (size_t)(e - map->slots));
}

/* Rehashes into a table of `capacity` slots, leaving the forgotten entries out. */
static bool rehash(hm_handle_map *map, size_t capacity)
{
    hm_handle_entry *slots = calloc(capacity, sizeof *slots);
    if (!slots)
        return false;
    size_t count = 0;
    for (size_t i = 0; i < map->capacity; i++) {
        if (!map->slots[i].key || expired(map, &map->slots[i]))
            continue;
        size_t j = handle_hash(map->slots[i].key, capacity - 1);
        while (slots[j].key)
            j = (j + 1) & (capacity - 1);
        slots[j] = map->slots[i];
        count++;
    }
    free(map->slots);
    map->slots = slots;
    map->capacity = capacity;
    map->count = count;
    return true;
}

static bool grow(hm_handle_map *map)
{
    if (!map->capacity)
        return rehash(map, 64);
    size_t kept = 0;
    for (size_t i = 0; i < map->capacity; i++)
        if (map->slots[i].key && !expired(map, &map->slots[i]))
            kept++;
    /* Dropping the forgotten ones may be room enough (at most two thirds full after): the same size, so the
     * table stays near the live handles plus the window, not twice that. */
    return rehash(map, (kept + 1) * 3 <= map->capacity * 2 ? map->capacity : map->capacity * 2);
}

hm_handle_entry *hm__handle_map_put(hm_handle_map *map, uint32_t kind, uint32_t handle)
{
    uint64_t key = handle_key(kind, handle);
    hm_handle_entry *e = find_raw(map, key);
    if (e) {
        if (expired(map, e)) { /* forgotten: a new handle that happens to have its number */
            memset(e, 0, sizeof *e);
            e->key = key;
        }
        e->live = 1;
        return e;
    }
    if ((map->count + 1) * 4 > map->capacity * 3 && !grow(map))
        return NULL;
    size_t mask = map->capacity - 1;
    size_t i = handle_hash(key, mask);
    while (map->slots[i].key)
        i = (i + 1) & mask;
    memset(&map->slots[i], 0, sizeof map->slots[i]);
    map->slots[i].key = key;
    map->slots[i].live = 1;
    map->count++;
    return &map->slots[i];
}

void hm__handle_map_kill(hm_handle_map *map, hm_handle_entry *entry)
{
    if (!entry->live)
        return;
    entry->live = 0;
    uint32_t kind = (uint32_t)(entry->key >> 32);
    if (!map->dead_limit || (kind != HM_REF_ALLOC && kind != HM_REF_BLOCK))
        return; /* heaps and callbacks are few: never forgotten */
    entry->died = ++map->deaths;
}

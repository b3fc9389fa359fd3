/* The commit budget and the critical-level policy of the built-in manager. Internal to hostmem.
 *
 * One counter of charged bytes (commits, heap memory, and ledger ranges all charge it). A request at level L
 * may bring the total up to ceiling(L):
 *   eProcessCritical   limit
 *   eAppDomainCritical limit - reserve_process
 *   eTaskCritical      limit - reserve_process - reserve_appdomain
 * so task-critical requests fail first, then appdomain-critical ones, and process-critical ones may use the
 * last reserve. Thread-safe and lock-free (one atomic counter, compare-and-swap). */
#ifndef HOSTMEM_SRC_BUDGET_H
#define HOSTMEM_SRC_BUDGET_H

#include <hostmem/hostmem.h>

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct hm_budget {
    uint64_t limit;             /* bytes; never 0 after hm__budget_init */
    uint64_t reserve_process;   /* bytes only eProcessCritical may use */
    uint64_t reserve_appdomain; /* bytes above the task ceiling, for appdomain and process */
    _Atomic uint64_t charged;
    _Atomic uint64_t peak;
} hm_budget;

/* limit 0 means: the cgroup's memory limit (v2 memory.max, v1 memory.limit_in_bytes) if there is one, else
 * physical memory (hm__os_physical_memory). Reserves given as 0 keep their defaults (limit/32 each); reserves larger than the
 * limit allows are clamped so the task ceiling stays >= 0. */
void hm__budget_init(hm_budget *b, uint64_t limit, uint64_t reserve_process, uint64_t reserve_appdomain);

/* The limit the system gives, as hm__budget_init(0) would use: the cgroup's memory limit when there is one and it
 * is below physical memory, else physical memory. */
uint64_t hm__budget_system_limit(void);

/* The memory limit of the cgroup that proc_cgroup (a /proc/<pid>/cgroup file) names, under cgroup_root (where
 * cgroupfs is mounted, /sys/fs/cgroup), or 0 for none. cgroup v2: the tightest memory.max from the process's
 * cgroup up to the root ("max" is no limit). cgroup v1: the same with memory/.../memory.limit_in_bytes, values
 * of 2^60 or more meaning no limit. v2 wins when both give one. */
uint64_t hm__budget_cgroup_limit(const char *proc_cgroup, const char *cgroup_root);

/* Charges bytes at level; false (and nothing charged) when that would exceed the level's ceiling. */
bool hm__budget_charge(hm_budget *b, EMemoryCriticalLevel level, uint64_t bytes);
void hm__budget_uncharge(hm_budget *b, uint64_t bytes);
/* Charges memory that is already taken (the ledger's acquired ranges): never refused, may exceed the limit. */
void hm__budget_charge_always(hm_budget *b, uint64_t bytes);

/* The ceiling for a level, as above. */
uint64_t hm__budget_ceiling(const hm_budget *b, EMemoryCriticalLevel level);

/* Load in percent of the limit (0..100, rounded down; 100 when at or above it) and the bytes still available
 * (limit - charged, 0 when over). */
void hm__budget_load(const hm_budget *b, DWORD *load, SIZE_T *available);

#endif

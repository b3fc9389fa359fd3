/* hostmem: a toolkit for testing hosts of the CLR hosting memory contract.
 *
 * Umbrella header: the Win32 types, the COM interfaces, the factory every host exports, and the helpers
 * hostmem's own tools share (HRESULT names, method names, diagnostics of the built-in manager). */
#ifndef HOSTMEM_HOSTMEM_H
#define HOSTMEM_HOSTMEM_H

#include "api.h"
#include "interfaces.h"
#include "methods.h"
#include "win32.h"

#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HOSTMEM_VERSION_MAJOR 0
#define HOSTMEM_VERSION_MINOR 1
#define HOSTMEM_VERSION_PATCH 0
#define HOSTMEM_VERSION_STRING "0.1.0"

/* ---- The factory: hostmem's built-in manager, and the ABI every host plugin exports ----------------------
 *
 * options: NULL or "" for defaults, else `key=value` pairs separated by commas (see docs/options.md or
 * HostMemOptionsHelp()). An unknown key or a bad value fails with E_INVALIDARG, and HostMemLastError()
 * names the key and the value. On success *ppManager holds one reference.
 *
 * The built-in factory also honours HOSTMEM_FAULTS (a fault spec, docs/faults.md) and HOSTMEM_TRACE (a trace
 * path, docs/trace-format.md) from the environment, so a program records or injects without code changes. */
/* (HostMemCreateManagerFn, the factory's type, is in contract.h.) */
HM_API HRESULT HostMemCreateManager(const char *options, IHostMemoryManager **ppManager);

/* The built-in manager alone, ignoring HOSTMEM_FAULTS and HOSTMEM_TRACE. */
HM_API HRESULT HostMemCreateBuiltinManager(const char *options, IHostMemoryManager **ppManager);

/* The message of this thread's last hostmem failure that had more to say than its HRESULT (a bad option, a
 * malformed fault spec, a trace error), or "" when there is none. Valid until this thread's next hostmem call. */
HM_API const char *HostMemLastError(void);

/* One line per option key with its default and meaning. */
HM_API const char *HostMemOptionsHelp(void);

/* "E_OUTOFMEMORY", "HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS)", ..., or "0x%08X" for unknown values
 * (a thread-local buffer). hm_hr_parse accepts either spelling back; it returns 0 on success. */
HM_API const char *hm_hr_name(HRESULT hr);
HM_API const char *hm_hr_text(HRESULT hr);
HM_API int hm_hr_parse(const char *text, size_t len, HRESULT *out);

/* "eTaskCritical" etc., and the short names used in specs and traces ("task", "appdomain", "process"). */
HM_API const char *hm_level_name(EMemoryCriticalLevel level);
HM_API const char *hm_level_short(EMemoryCriticalLevel level);

/* ---- Diagnostics of the built-in manager ---------------------------------------------------------------
 * Work on a manager made by HostMemCreateBuiltinManager (or on a hostmem decorator around one, which they see
 * through); any other manager gives E_NOINTERFACE. */
typedef struct hm_stats {
    uint64_t reservations;          /* live VirtualAlloc reservations */
    uint64_t reserved_bytes;        /* their address space (page-rounded) */
    uint64_t committed_bytes;       /* committed pages, in bytes, VirtualAlloc and heaps alike */
    uint64_t peak_committed_bytes;  /* the most ever committed at once */
    uint64_t heap_count;            /* live IHostMalloc objects */
    uint64_t heap_live_blocks;      /* blocks allocated and not freed, over all heaps */
    uint64_t heap_live_bytes;       /* their requested sizes */
    uint64_t ledger_ranges;         /* ranges in the address-space ledger (Acquired, not Released) */
    uint64_t ledger_bytes;          /* their sizes */
    uint64_t budget_bytes;          /* the budget GetMemoryLoad measures against */
    uint64_t guard_trips;           /* PAGE_GUARD pages touched (and so un-guarded) */
    uint64_t notifications;         /* OnMemoryNotification calls made */
    uint32_t memory_load;           /* percent of the budget in use, as GetMemoryLoad reports it */
    uint32_t spans;                 /* address-space spans the manager holds from the OS */
    uint64_t calls[HM_METHOD_COUNT];    /* calls made, per method */
    uint64_t failures[HM_METHOD_COUNT]; /* of which failed */
} hm_stats;

HM_API HRESULT HostMemGetStats(IHostMemoryManager *manager, hm_stats *out);

/* Walks every internal structure and checks its invariants (regions sorted and disjoint, runs well formed,
 * counters consistent with the books). S_OK when consistent; otherwise E_FAIL and a description in msg. */
HM_API HRESULT HostMemCheckConsistency(IHostMemoryManager *manager, char *msg, size_t msglen);

/* Leaks of heaps: every (file, line) with live blocks. For a live heap, pass it; for heaps already destroyed,
 * the manager keeps the report of each heap whose last reference went with blocks still live. */
typedef struct hm_leak {
    const char *file; /* "(Alloc)" for blocks from Alloc, else DebugAlloc's file name (copied) */
    int line;
    uint64_t blocks;
    uint64_t bytes;
} hm_leak;

/* Fills up to max entries, returns how many (file, line) entries there are in all. */
HM_API size_t HostMemHeapLeaks(IHostMalloc *heap, hm_leak *out, size_t max);
/* Prints the leak reports of destroyed heaps (and of live heaps when include_live) to f; returns the number of
 * leaked blocks reported. */
HM_API uint64_t HostMemPrintLeaks(IHostMemoryManager *manager, FILE *f, int include_live);

#ifdef __cplusplus
}
#endif

/* The umbrella: the fault layer and record/replay too. (They include what they need, never this header.) */
#include "faults.h"
#include "trace.h"

#endif /* HOSTMEM_HOSTMEM_H */

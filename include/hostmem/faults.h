/* hostmem fault injection: a decorator around any IHostMemoryManager that fails chosen calls.
 *
 * Grammar (full reference with examples: docs/faults.md)
 *
 *   spec     := rule { ';' rule }
 *   rule     := target { ',' key '=' value }
 *   target   := method { '|' method } | 'any' | 'heap' | 'pressure'
 *               methods by IDL name, case-insensitive: VirtualAlloc, VirtualFree, VirtualQuery, VirtualProtect,
 *               GetMemoryLoad, CreateMalloc, RegisterMemoryNotificationCallback, NeedsVirtualAddressSpace,
 *               AcquiredVirtualAddressSpace, ReleasedVirtualAddressSpace, Alloc, DebugAlloc, Free;
 *               'heap' = Alloc|DebugAlloc; 'any' = every method.
 *   keys (all optional, combined with AND):
 *     level=task|appdomain|process{|...}   critical levels (VirtualAlloc, Alloc, DebugAlloc)
 *     op=reserve|commit|reset{|...}        VirtualAlloc's kind: reserve = MEM_RESERVE without MEM_COMMIT,
 *                                          commit = any MEM_COMMIT, reset = MEM_RESET
 *     size=A-B | A- | -B | A               byte range, inclusive; suffixes K M G (binary)
 *     addr=A-B | A                         address range (hex 0x.. or decimal), inclusive
 *     nth=N        fail only the N-th matching call (1-based)
 *     every=K      fail every K-th matching call (K, 2K, ...)
 *     after=N      fail matching calls after the first N (persistent)
 *     after-bytes=N  fail once the matching calls have asked for more than N bytes in all
 *     call=N       fail the call whose global sequence number is N (all methods counted, 1-based)
 *     times=N      at most N failures from this rule
 *     probability=P  fail with probability P (0.01 or 1%), from a PRNG seeded by seed= (default 1)
 *     seed=S
 *     return=HR    the HRESULT to return: a name (E_OUTOFMEMORY, HOST_E_TIMEOUT, ...) or hex; default
 *                  E_OUTOFMEMORY. A success code (S_OK, S_FALSE, ...) is refused: it would fail nothing
 *   'pressure' rules take: load=PCT (what GetMemoryLoad reports from then on), available=BYTES,
 *     notify=low|neutral|high (OnMemoryNotification is called once on every registered callback), and
 *     the same trigger keys (after=N global calls, call=N, nth=...).
 *
 * Examples: "VirtualAlloc,level=task,op=commit,size=1M-,nth=3"  "heap,level=appdomain,probability=1%,seed=7"
 *           "pressure,after=10000,load=95,notify=low"
 *
 * A failed call returns the rule's HRESULT, sets *ppMem (or other out-pointers) to NULL as a real failure
 * would, and does not reach the inner manager: nothing changes there. Rules are evaluated in order; the first
 * rule that fires decides. Counting is per rule, over the calls its filters match. Same spec and same calls
 * give the same failures (no clocks, no addresses in the PRNG). */
#ifndef HOSTMEM_FAULTS_H
#define HOSTMEM_FAULTS_H

#include "api.h"
#include "interfaces.h"

#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Wraps inner (which gets one reference from the wrapper) in a fault layer with the rules of spec (NULL or ""
 * for none). A malformed spec fails with E_INVALIDARG and HostMemLastError() says, e.g.,
 *   "fault spec: column 14: unknown key 'lvl' (expected level, op, size, addr, nth, every, ...)". */
HM_API HRESULT HostMemWrapFaults(IHostMemoryManager *inner, const char *spec, IHostMemoryManager **ppOuter);

/* Checks a spec without building anything. S_OK, or E_INVALIDARG with the message in err. */
HM_API HRESULT HostMemFaultSpecCheck(const char *spec, char *err, size_t errlen);

/* The inner manager of a fault wrapper (no reference added), or NULL if `outer` is not one. */
HM_API IHostMemoryManager *HostMemFaultsInner(IHostMemoryManager *outer);

/* Adds rules to a live wrapper (same grammar), or removes them all. */
HM_API HRESULT HostMemFaultsAdd(IHostMemoryManager *outer, const char *spec);
HM_API HRESULT HostMemFaultsClear(IHostMemoryManager *outer);

/* One injected fault. */
typedef struct hm_fault_event {
    uint64_t call;          /* global sequence number of the call through the wrapper (1-based) */
    uint64_t method_call;   /* sequence number among calls of the same method */
    int method;             /* hm_method */
    int level;              /* EMemoryCriticalLevel, or -1 when the method has none */
    uint64_t size;          /* requested size, 0 when none */
    uint64_t address;       /* requested address, 0 when none */
    uint32_t alloc_type;    /* VirtualAlloc's flAllocationType / VirtualFree's dwFreeType, else 0 */
    HRESULT result;         /* what was returned */
    int rule;               /* index of the rule that fired (0-based) */
} hm_fault_event;

/* The log of injected faults: count, and copies of entries [first, first+max). */
HM_API uint64_t HostMemFaultsLogCount(IHostMemoryManager *outer);
HM_API size_t HostMemFaultsLog(IHostMemoryManager *outer, uint64_t first, hm_fault_event *out, size_t max);
/* Prints the log, one line per fault, each with a spec that reproduces just that fault. */
HM_API void HostMemFaultsLogPrint(IHostMemoryManager *outer, FILE *f);
/* Number of calls seen by the wrapper so far (all methods), and per method. */
HM_API uint64_t HostMemFaultsCallCount(IHostMemoryManager *outer, int method);

/* ---- Systematic OOM exploration (SQLite's loop) -----------------------------------------------------------
 * A scenario builds what it needs on the manager it is given and releases all of it before returning; it
 * returns S_OK when it finished (failures it handled count as finishing) and anything else when it could not
 * cope. The explorer first runs it once unwrapped-counting, then for k = 1..N reruns it on a fresh manager
 * wrapped so that the k-th call matching `match` (a rule without trigger keys, e.g. "VirtualAlloc|heap")
 * fails — once (transient) and from then on (persistent) — and checks after each run that the scenario
 * returned, that the manager is consistent (HostMemCheckConsistency) and that nothing leaked (no live
 * reservations, heap blocks, or ledger ranges). */
typedef HRESULT (*hm_scenario_fn)(IHostMemoryManager *manager, void *ctx);
typedef HRESULT (*hm_manager_factory_fn)(void *ctx, IHostMemoryManager **ppManager);

typedef struct hm_explore_point {
    uint64_t k;             /* which matching call failed */
    int persistent;         /* 0 transient, 1 persistent */
    HRESULT scenario_result;
    int consistent;         /* HostMemCheckConsistency passed (1), failed (0), not available (-1) */
    uint64_t leaked_reservations, leaked_blocks, leaked_ledger;
    int ok;                 /* the run finished cleanly */
    char message[160];      /* what went wrong, when !ok */
} hm_explore_point;

typedef struct hm_explore_result {
    uint64_t matching_calls;    /* matching calls in the counting run */
    uint64_t runs, failures;    /* runs made, runs not ok */
    hm_explore_point *points;   /* runs entries, to free with HostMemExploreFree */
} hm_explore_result;

typedef struct hm_explore_options {
    const char *match;          /* which calls to fail, default "VirtualAlloc|heap" */
    HRESULT fault_result;       /* default E_OUTOFMEMORY */
    uint64_t max_points;        /* 0: all */
    int transient, persistent;  /* which flavours (both when both 0) */
    hm_manager_factory_fn factory; void *factory_ctx; /* default: HostMemCreateBuiltinManager with
                                  "backend=sim,deterministic=1,limit=256M" ("limit=256M" on Windows) */
    FILE *progress;             /* one line per run when not NULL */
} hm_explore_options;

HM_API HRESULT HostMemExplore(hm_scenario_fn scenario, void *ctx, const hm_explore_options *opts,
                              hm_explore_result *result);
HM_API void HostMemExploreFree(hm_explore_result *result);

/* The built-in scenario: a runtime starting up (a GC segment, a heap), allocating at every critical level, and
 * shutting down, undoing what it did whenever a call fails. S_OK when it coped; E_UNEXPECTED when the host gave
 * an answer no runtime could cope with (a wrong query result, a heap block that lost its contents). */
HM_API HRESULT hm_scenario_builtin(IHostMemoryManager *manager, void *ctx);

#ifdef __cplusplus
}
#endif
#endif /* HOSTMEM_FAULTS_H */

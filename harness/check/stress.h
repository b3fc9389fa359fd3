/* Stress: many threads hammering a host with a mixed workload (reserve, commit, decommit, release, protect, query,
 * heap alloc and free on a shared and a private heap, load queries), each thread writing patterns into its pages
 * and blocks and checking every answer against its own model of them. `hostmem stress` runs it (in a child
 * process, so a host that crashes leaves a report behind); `hostmem bench` runs it with and without the checks
 * to show what they cost. */
#ifndef HOSTMEM_HARNESS_STRESS_H
#define HOSTMEM_HARNESS_STRESS_H

#include <hostmem/hostmem.h>

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
    HM_STRESS_RESERVE,
    HM_STRESS_COMMIT,
    HM_STRESS_DECOMMIT,
    HM_STRESS_RELEASE,
    HM_STRESS_RELEASE_INSIDE, /* MEM_RELEASE of an address inside a reservation, not its base: must be refused */
    HM_STRESS_PROTECT,
    HM_STRESS_QUERY,
    HM_STRESS_HEAP_ALLOC,
    HM_STRESS_HEAP_FREE,
    HM_STRESS_LOAD,
    HM_STRESS_OP_COUNT
};

#define HM_STRESS_MAX_THREADS 64
#define HM_STRESS_RING 64         /* calls each thread keeps for the violation report */
#define HM_STRESS_HIST_BUCKETS 40 /* latency histogram: bucket b counts calls of [2^(b-1), 2^b) ns */
#define HM_STRESS_LOAD_SAMPLES 64 /* the host's load over the run: at most this many points */

/* One call as a thread remembers it; formatted only when a report needs it. */
typedef struct hm_stress_call {
    uint8_t op;
    uint8_t level;
    DWORD arg; /* the protection of VirtualProtect */
    HRESULT hr;
    uint64_t address, size, result;
} hm_stress_call;

typedef struct hm_stress_thread {
    _Alignas(64) atomic_uint_fast64_t done; /* operations so far, read live by the progress display */
    _Atomic int64_t live_bytes; /* what the thread holds: committed pages and heap blocks (written by it alone; a
                                 * block handed over counts with the thread that frees it, so only the sum means
                                 * anything) */
    uint64_t ops[HM_STRESS_OP_COUNT], failures[HM_STRESS_OP_COUNT];
    uint64_t latency[HM_STRESS_OP_COUNT][HM_STRESS_HIST_BUCKETS];
    hm_stress_call ring[HM_STRESS_RING];
    uint64_t calls; /* calls made; the last min(calls, HM_STRESS_RING) are in ring */
    char violation[512];
    /* A heap block found held by two threads at once (the heap workload): the block, and the other thread (1-based)
     * and its call (1-based, as the call log numbers them) that was handed the same block; 0 when none. */
    uint64_t shared_block;
    unsigned other_thread;
    uint64_t other_call;
} hm_stress_thread;

/* One point of the host's load over the run: what its GetMemoryLoad said, and what the workload held then. */
typedef struct hm_stress_load_sample {
    double seconds;      /* since the run started */
    uint32_t load;       /* percent */
    uint64_t available;  /* bytes */
    int64_t live_bytes;  /* the sum of the threads' live_bytes */
} hm_stress_load_sample;

/* Everything a run produces. Plain memory with no pointers, so `hostmem stress` can keep it in a mapping shared
 * with the child that runs the workload and still read it when the child crashed. */
typedef struct hm_stress_report {
    unsigned threads;
    double seconds;
    atomic_uint_fast64_t violations;
    atomic_uint_fast64_t notifications[3]; /* OnMemoryNotification by level: [0] low, [1] neutral, [2] high */
    /* The call the callback makes back into the host while it is in flight (a literal: the same address in a forked
     * child and its parent), so a hang there is named: the host notified holding a lock. */
    _Atomic(const char *) in_callback;
    /* The host's own GetMemoryLoad over the run, as the threads saw it (percent + 1; 0: never read): a load that
     * creeps up while the workload's live set stays bounded is a host that loses its accounting. */
    atomic_uint load_first, load_peak, load_last;
    /* The same load as a series: thread 1 samples it about every 100 ms (less often on long runs: when the series is
     * full every other point goes and the period doubles), and the run a last time when the threads are done.
     * load_samples counts the points written (stored after its point, so a crashed run's series is whole). */
    _Alignas(64) atomic_uint load_samples;
    hm_stress_load_sample load_series[HM_STRESS_LOAD_SAMPLES];
    /* Every thread reads stop at every step: alone on its line, so counters written meanwhile do not evict it. */
    _Alignas(64) atomic_bool stop;
    _Alignas(64) hm_stress_thread thread[HM_STRESS_MAX_THREADS];
} hm_stress_report;

/* What the threads do. */
typedef enum hm_stress_workload {
    HM_STRESS_MIXED, /* every method: reservations, commits, queries, heaps, loads (the table in docs/stress.md) */
    HM_STRESS_HEAP,  /* heaps only: tight Alloc/Free of small blocks on the one shared MALLOC_THREADSAFE heap, blocks
                      * handed to other threads to free, each block's canary checked after a yield */
} hm_stress_workload;

typedef struct hm_stress_config {
    unsigned threads;   /* 1..HM_STRESS_MAX_THREADS */
    double seconds;     /* run time when ops is 0 */
    uint64_t ops;       /* operations in all (split evenly among threads); 0: run for `seconds` */
    uint64_t seed;
    hm_stress_workload workload;
    bool check_refusals; /* no faults injected: an E_OUTOFMEMORY at eProcessCritical for less than the host itself
                          * reports available (before and after the call) is a violation, "spurious out-of-memory" */
    bool verify;        /* false: the same calls and memory writes, with no model checks, no call log and no
                         * latency clock (the baseline `hostmem bench` measures the checks against) */
    /* Called about every 100 ms from the calling thread while the workers run (may be NULL). */
    void (*progress)(const hm_stress_report *report, double elapsed_seconds, void *ctx);
    void *progress_ctx;
    IHostMemoryManager *unwrapped; /* the host under any recorder, or NULL (then the manager run): its and a heap's
                                    * AddRef/Release counts are checked before the threads start */
    unsigned load_every_ms; /* the load series' first period (0: 100 ms) */
} hm_stress_config;

/* Runs the workload against m, filling *report (which it clears first). Returns S_OK when the run completed (look
 * at report->violations), E_INVALIDARG for a bad config, or the failing HRESULT when the host gives no heap. */
HRESULT hm__stress_run(IHostMemoryManager *m, const hm_stress_config *config, hm_stress_report *report);

const char *hm__stress_op_name(int op);
const char *hm__stress_workload_name(hm_stress_workload workload); /* "mixed", "heap" */

/* Appends point to report's load series. When the series is full, every other point goes first (the first point
 * stays) and it returns true: the caller samples half as often from then on, so the series spans the whole run. */
bool hm__stress_load_series_add(hm_stress_report *report, const hm_stress_load_sample *point);

/* One share of a workload's mix: each step draws its operation with these weights (percent, summing to 100). */
typedef struct hm_stress_weight {
    const char *name; /* "reserve", ..., as the report's keys */
    unsigned percent;
} hm_stress_weight;
/* The mix of workload: sets *weights to its table and returns its length. */
size_t hm__stress_weights(hm_stress_workload workload, const hm_stress_weight **weights);
/* "VirtualAlloc(0x7f.., 0x3000, MEM_COMMIT, task) -> S_OK" */
void hm__stress_format_call(const hm_stress_call *call, char *buf, size_t len);
/* Sums of every thread's figures. */
uint64_t hm__stress_total_ops(const hm_stress_report *report);
uint64_t hm__stress_total_failures(const hm_stress_report *report);
/* The q-quantile (0..1) of the latency of op (HM_STRESS_OP_COUNT: all ops), as the upper bound of its bucket. */
double hm__stress_latency_quantile(const hm_stress_report *report, int op, double q);

#endif

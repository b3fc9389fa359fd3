/* The call-sequence fuzz driver: decodes bytes into a sequence of IHostMemoryManager, IHostMalloc and callback
 * calls, runs them against a host and checks every answer against the reference model (model.h). Shared by the
 * fuzz targets (fuzz/fuzz_calls.c) and `hostmem fuzz-to-trace`. Internal to hostmem. */
#ifndef HOSTMEM_FUZZ_CALLS_H
#define HOSTMEM_FUZZ_CALLS_H

#include <hostmem/hostmem.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Small spans keep each input's manager cheap to reset (or make and tear down); addresses past the first span exercise the
 * path of a reservation outside every span. */
#define HM_FUZZ_DEFAULT_OPTIONS "backend=sim,deterministic=1,limit=256M,span=256M"

typedef struct hm_fuzz_config {
    const char *host_library; /* a host plugin (exports HostMemCreateManager); NULL: hostmem's built-in manager */
    const char *host_options; /* NULL: HM_FUZZ_DEFAULT_OPTIONS for the built-in, "" for a plugin */
    bool faults;              /* the input's first bytes choose a fault spec; the host sits behind the fault layer */
    const char *trace_path;   /* when set, every call is recorded there (a raw trace; see docs/trace-format.md) */
    FILE *report;             /* where a mismatch is described (stderr when NULL) */
    bool verbose;             /* print every call to the report as it is made */
    bool fresh_manager;       /* a new built-in manager for every input, instead of one reset between inputs */
    bool strict_codes;        /* a plugin's failures must carry Windows' exact codes (HOSTMEM_FUZZ_STRICT) */
    double callback_seconds;  /* how long a call from inside OnMemoryNotification may take before the host is
                               * reported as notifying while holding a lock; 0: 5 s (HOSTMEM_FUZZ_CALLBACK_SECONDS) */
} hm_fuzz_config;

typedef struct hm_fuzz_outcome {
    unsigned calls;   /* calls made to the host (checks included) */
    unsigned skipped; /* decoded calls the model could not predict, so not made */
    bool mismatch;    /* the host answered against the contract; described in the report */
} hm_fuzz_outcome;

/* Runs the input. Returns 0 when every answer matched (or a mismatch was found and reported: see outcome),
 * -1 when the host could not be set up (reported). Bounded: at most a few hundred calls per input. */
int hm__fuzz_calls_run(const uint8_t *data, size_t size, const hm_fuzz_config *config, hm_fuzz_outcome *outcome);

/* The configuration the fuzz targets read from the environment: HOSTMEM_FUZZ_HOST, HOSTMEM_FUZZ_HOST_OPTIONS,
 * HOSTMEM_FUZZ_TRACE, HOSTMEM_FUZZ_VERBOSE, HOSTMEM_FUZZ_FRESH (1: fresh_manager), HOSTMEM_FUZZ_STRICT
 * (1: strict_codes), HOSTMEM_FUZZ_CALLBACK_SECONDS (callback_seconds). Then it is tried once: the host
 * library loads, the host starts with the options, the trace can be created. Returns 0, or -1 after saying on
 * report which variable is wrong, its value and why (a configuration error, not a finding: no input would run). */
int hm__fuzz_config_from_env(hm_fuzz_config *config, FILE *report);

/* An environment switch as the fuzz targets read it: set, and neither empty nor "0". */
bool hm__fuzz_env_flag(const char *name);

#endif

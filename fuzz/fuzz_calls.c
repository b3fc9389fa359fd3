/* Fuzz target: call sequences against a host, checked against the reference model (harness/check/calls.h). Built
 * twice: fuzz_calls (the host as it is) and fuzz_calls_faults (HM_FUZZ_WITH_FAULTS: the input's first bytes also choose
 * which calls the fault layer fails, and the target checks that a failed call changed nothing).
 *
 * Environment: HOSTMEM_FUZZ_HOST=lib.so fuzzes a host plugin instead of hostmem's built-in manager (with
 * HOSTMEM_FUZZ_HOST_OPTIONS); HOSTMEM_FUZZ_TRACE=path records the calls of the input (run it on one input);
 * HOSTMEM_FUZZ_VERBOSE=1 prints every call; HOSTMEM_FUZZ_FRESH=1 makes a new built-in manager for every input instead
 * of resetting one (hm__manager_reset: the same answers, much cheaper); HOSTMEM_FUZZ_STRICT=1 holds a plugin to
 * Windows' exact error codes; HOSTMEM_FUZZ_CALLBACK_SECONDS (default 5) is how long a call from inside the
 * notification callback may take before the host is reported as notifying while holding its lock. A mismatch prints what the host answered, what
 * the model expected and the calls before it, then aborts, so every engine keeps the input. */
#include "fuzz.h"

#include "calls.h"

#include <stdlib.h>

#ifndef HM_FUZZ_WITH_FAULTS
#define HM_FUZZ_WITH_FAULTS 0
#endif

static hm_fuzz_config config;
static int configured;

/* The engines call this once before any input (the standalone driver too): a bad environment is a configuration
 * error, said plainly with exit status 2, not a crash every engine would file as a finding. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    if (hm__fuzz_config_from_env(&config, stderr) != 0)
        exit(2);
    config.faults = HM_FUZZ_WITH_FAULTS;
    configured = 1;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!configured) /* an engine that skips the initialize hook */
        LLVMFuzzerInitialize(NULL, NULL);
    hm_fuzz_outcome outcome;
    if (hm__fuzz_calls_run(data, size, &config, &outcome) != 0)
        abort(); /* the configuration worked at start: a host that now cannot be set up is a finding */
    if (outcome.mismatch)
        abort();
    return 0;
}

/* The composition root: HostMemCreateManager, the built-in manager behind HOSTMEM_FAULTS and HOSTMEM_TRACE. */
#include "factory.h"

#include "error.h"

#include <hostmem/faults.h>
#include <hostmem/trace.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

HRESULT hm__manager_wrap_from_environment(IHostMemoryManager *manager, const char *faults, IHostMemoryManager **out)
{
    hm_trace_env env = {.host = HM_TRACE_BUILTIN_HOST, .faults = faults};
    return hm__manager_wrap_with_env(manager, faults, &env, out);
}

HRESULT hm__manager_wrap_with_env(IHostMemoryManager *manager, const char *faults, const hm_trace_env *env,
                                  IHostMemoryManager **out)
{
    const char *trace = getenv("HOSTMEM_TRACE");
    HRESULT hr;
    if (faults && *faults) {
        IHostMemoryManager *wrapped;
        hr = HostMemWrapFaults(manager, faults, &wrapped);
        IHostMemoryManager_Release(manager); /* the wrapper holds its own reference */
        if (FAILED(hr)) {
            /* Whoever reads HostMemLastError() knows nothing of the environment: name the variable and its value. */
            char why[1024];
            snprintf(why, sizeof why, "%s", HostMemLastError());
            hm__set_error("HOSTMEM_FAULTS='%s' is refused: %s", faults, why);
            return hr;
        }
        manager = wrapped;
    }
    if (trace && *trace) {
        IHostMemoryManager *wrapped;
        hm_trace_env recorded = *env;
        recorded.faults = faults; /* the spec in force, whatever env says */
        hr = HostMemWrapRecorderEnv(manager, trace, &recorded, &wrapped);
        IHostMemoryManager_Release(manager);
        if (FAILED(hr)) {
            char why[1024];
            snprintf(why, sizeof why, "%s", HostMemLastError());
            hm__set_error("HOSTMEM_TRACE='%s' is refused: %s", trace, why);
            return hr;
        }
        manager = wrapped;
    }
    *out = manager;
    return S_OK;
}

HRESULT hm__create_manager(const char *options, const char *faults, IHostMemoryManager **ppManager)
{
    if (!ppManager)
        return E_POINTER;
    *ppManager = NULL;
    IHostMemoryManager *manager;
    HRESULT hr = HostMemCreateBuiltinManager(options, &manager);
    if (FAILED(hr))
        return hr;
    /* The trace's header says which host this is, with which options and faults (docs/trace-format.md). */
    hm_trace_env env = {.host = HM_TRACE_BUILTIN_HOST, .host_options = options, .faults = faults};
    return hm__manager_wrap_with_env(manager, faults, &env, ppManager);
}

HM_API HRESULT HostMemCreateManager(const char *options, IHostMemoryManager **ppManager)
{
    HRESULT hr = hm__create_manager(options, getenv("HOSTMEM_FAULTS"), ppManager);
    /* A typo in an environment variable is the user's, not the host's: a host seldom prints HostMemLastError(), so
     * say it on stderr, once per process (a host may create many managers). */
    static atomic_flag said = ATOMIC_FLAG_INIT;
    const char *why = HostMemLastError();
    if (FAILED(hr) && strncmp(why, "HOSTMEM_", 8) == 0 && !atomic_flag_test_and_set(&said))
        fprintf(stderr, "hostmem: %s\n", why);
    return hr;
}

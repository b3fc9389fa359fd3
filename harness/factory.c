/* The composition root: HostMemCreateManager, the built-in manager behind HOSTMEM_FAULTS and HOSTMEM_TRACE. */
#include "factory.h"

#include "error.h"

#include <hostmem/faults.h>
#include <hostmem/trace.h>

#include <stdio.h>
#include <stdlib.h>

HRESULT hm_manager_wrap_from_environment(IHostMemoryManager *manager, const char *faults, IHostMemoryManager **out)
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
            hm_set_error("HOSTMEM_FAULTS='%s' is refused: %s", faults, why);
            return hr;
        }
        manager = wrapped;
    }
    if (trace && *trace) {
        IHostMemoryManager *wrapped;
        hr = HostMemWrapRecorder(manager, trace, &wrapped);
        IHostMemoryManager_Release(manager);
        if (FAILED(hr))
            return hr;
        manager = wrapped;
    }
    *out = manager;
    return S_OK;
}

HRESULT hm_create_manager(const char *options, const char *faults, IHostMemoryManager **ppManager)
{
    if (!ppManager)
        return E_POINTER;
    *ppManager = NULL;
    IHostMemoryManager *manager;
    HRESULT hr = HostMemCreateBuiltinManager(options, &manager);
    if (FAILED(hr))
        return hr;
    return hm_manager_wrap_from_environment(manager, faults, ppManager);
}

HM_API HRESULT HostMemCreateManager(const char *options, IHostMemoryManager **ppManager)
{
    return hm_create_manager(options, getenv("HOSTMEM_FAULTS"), ppManager);
}

/* How hostmem's decorators are seen through, and how the factory applies HOSTMEM_FAULTS and HOSTMEM_TRACE. */
#include "manager.h"

#include "error.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#define MAX_DECORATORS 8


typedef struct decorator_kind {
    _Atomic(const IHostMemoryManagerVtbl *) vtbl;
    _Atomic(hm_inner_fn) inner;
} decorator_kind;

static decorator_kind kinds[MAX_DECORATORS];

void hm_decorator_register(const IHostMemoryManagerVtbl *vtbl, hm_inner_fn inner)
{
    for (int i = 0; i < MAX_DECORATORS; i++) {
        const IHostMemoryManagerVtbl *seen = atomic_load(&kinds[i].vtbl);
        if (seen == vtbl)
            return;
        if (!seen) {
            atomic_store(&kinds[i].inner, inner); /* before the vtable: a reader that sees it finds its inner() */
            const IHostMemoryManagerVtbl *expected = NULL;
            if (atomic_compare_exchange_strong(&kinds[i].vtbl, &expected, vtbl) || expected == vtbl)
                return;
        }
    }
}

IHostMemoryManager *hm_decorator_inner(IHostMemoryManager *outer)
{
    if (!outer)
        return NULL;
    for (int i = 0; i < MAX_DECORATORS; i++) {
        const IHostMemoryManagerVtbl *vtbl = atomic_load(&kinds[i].vtbl);
        if (!vtbl)
            break;
        if (vtbl == outer->lpVtbl)
            return atomic_load(&kinds[i].inner)(outer);
    }
    return NULL;
}

HRESULT hm_manager_wrap_from_environment(IHostMemoryManager *manager, IHostMemoryManager **out)
{
    const char *faults = getenv("HOSTMEM_FAULTS");
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

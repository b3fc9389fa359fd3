/* hostmem bench, fault layer: what the decorator costs per call when nothing is armed, and with a rule armed
 * that never matches, against the bare manager in the same run. */
#include "bench.h"

#include <hostmem/hostmem.h>

#include <stdlib.h>

static double ns_per_query(IHostMemoryManager *m, void *address, size_t n)
{
    MEMORY_BASIC_INFORMATION mbi;
    SIZE_T got;
    double t0 = (double)hm_now_ns();
    for (size_t i = 0; i < n; i++)
        IHostMemoryManager_VirtualQuery(m, address, &mbi, sizeof mbi, &got);
    return ((double)hm_now_ns() - t0) / (double)n;
}

void hm__bench_faults(hm_bench *b)
{
    IHostMemoryManager *bare, *wrapped, *armed;
    if (HostMemCreateBuiltinManager("backend=sim", &bare) != S_OK || HostMemWrapFaults(bare, NULL, &wrapped) != S_OK ||
        HostMemWrapFaults(bare, "NeedsVirtualAddressSpace,nth=1", &armed) != S_OK) {
        fprintf(stderr, "hostmem bench: cannot build the fault layer\n");
        exit(1);
    }
    void *p;
    IHostMemoryManager_VirtualAlloc(bare, NULL, 0x10000, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p);
    size_t n = (size_t)(4000000 * b->scale) + 1;
    ns_per_query(bare, p, n / 10);
    ns_per_query(wrapped, p, n / 10);
    double best_bare = 1e9, best_wrapped = 1e9, best_armed = 1e9;
    for (int rep = 0; rep < 5; rep++) { /* interleaved, best of five: the difference is a few ns */
        double t = ns_per_query(bare, p, n);
        best_bare = t < best_bare ? t : best_bare;
        t = ns_per_query(wrapped, p, n);
        best_wrapped = t < best_wrapped ? t : best_wrapped;
        t = ns_per_query(armed, p, n / 4);
        best_armed = t < best_armed ? t : best_armed;
    }
    hm__bench_row(b, "faults", "VirtualQuery through the layer, no rule", best_wrapped, "bare manager", best_bare, "ns",
                 true, 0);
    double overhead = best_wrapped - best_bare;
    hm__bench_value(b, "faults", "overhead per call, no rule armed", overhead < 0 ? 0 : overhead, "ns", true, 2.0);
    hm__bench_row(b, "faults", "VirtualQuery, one rule armed (no match)", best_armed, "bare manager", best_bare, "ns",
                 true, 0);
    IHostMemoryManager_VirtualFree(bare, p, 0, MEM_RELEASE);
    IHostMemoryManager_Release(armed);
    IHostMemoryManager_Release(wrapped);
    IHostMemoryManager_Release(bare);
}

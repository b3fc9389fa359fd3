/* The fault layer on Windows: HostMemWrapFaults around any IHostMemoryManager (the Windows manager or a host's own),
 * and HOSTMEM_FAULTS read from the process's environment by HostMemCreateManager. Linked with the static
 * libhostmem.a (test_win_manager links hostmem.dll). Runs under Wine (ci/windows.sh).
 *
 * `test_win_faults --environment` checks instead that the HOSTMEM_FAULTS the process started with (set by the parent,
 * here ci/windows.sh through Wine, which hands the Unix environment to the Windows process) fails the first
 * process-critical VirtualAlloc: the spec "VirtualAlloc,level=process,nth=1". */
#define WIN32_LEAN_AND_MEAN
#include <windows.h>

#include <hostmem/hostmem.h>

#include "runner.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MIB ((SIZE_T)1 << 20)

static HRESULT alloc(IHostMemoryManager *m, EMemoryCriticalLevel level, void **out)
{
    *out = NULL;
    return IHostMemoryManager_VirtualAlloc(m, NULL, 64 << 10, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, level, out);
}

/* "VirtualAlloc,level=process,nth=3" on manager m: the third process-critical VirtualAlloc fails with
 * E_OUTOFMEMORY, and nothing else does. */
static int third_process_critical_alloc_fails(IHostMemoryManager *m)
{
    static const struct {
        EMemoryCriticalLevel level;
        HRESULT expected;
    } calls[] = {
        {eTaskCritical, S_OK},    {eProcessCritical, S_OK}, {eAppDomainCritical, S_OK}, {eProcessCritical, S_OK},
        {eTaskCritical, S_OK},    {eProcessCritical, E_OUTOFMEMORY}, {eProcessCritical, S_OK},
    };
    void *got[sizeof calls / sizeof *calls];
    for (size_t i = 0; i < sizeof calls / sizeof *calls; i++) {
        CHECK_HR(alloc(m, calls[i].level, &got[i]), calls[i].expected);
        CHECK((got[i] != NULL) == SUCCEEDED(calls[i].expected));
    }
    CHECK(HostMemFaultsLogCount(m) == 1);
    hm_fault_event event;
    CHECK(HostMemFaultsLog(m, 0, &event, 1) == 1);
    CHECK(event.method == HM_METHOD_VIRTUAL_ALLOC && event.level == eProcessCritical && event.call == 6);
    CHECK(event.result == E_OUTOFMEMORY);
    for (size_t i = 0; i < sizeof calls / sizeof *calls; i++)
        if (got[i])
            CHECK_HR(IHostMemoryManager_VirtualFree(m, got[i], 0, MEM_RELEASE), S_OK);
    char msg[256];
    CHECK_HR(HostMemCheckConsistency(m, msg, sizeof msg), S_OK); /* seen through the fault layer */
    hm_stats stats;
    CHECK_HR(HostMemGetStats(m, &stats), S_OK);
    CHECK(stats.reservations == 0 && stats.committed_bytes == 0);
    return 0;
}

static int wrap_the_windows_manager(void)
{
    IHostMemoryManager *inner = NULL, *m = NULL;
    CHECK_HR(HostMemCreateBuiltinManager("", &inner), S_OK);
    CHECK_HR(HostMemWrapFaults(inner, "VirtualAlloc,level=process,nth=3", &m), S_OK);
    IHostMemoryManager_Release(inner); /* the wrapper holds its own */
    CHECK(HostMemFaultsInner(m) == inner);
    CHECK(third_process_critical_alloc_fails(m) == 0);
    CHECK(IHostMemoryManager_Release(m) == 0);
    return 0;
}

static int heap_faults_by_level(void)
{
    IHostMemoryManager *inner = NULL, *m = NULL;
    CHECK_HR(HostMemCreateBuiltinManager("", &inner), S_OK);
    CHECK_HR(HostMemWrapFaults(inner, "heap,level=task,nth=2", &m), S_OK);
    IHostMemoryManager_Release(inner);
    IHostMalloc *heap = NULL;
    CHECK_HR(IHostMemoryManager_CreateMalloc(m, MALLOC_THREADSAFE, &heap), S_OK);
    void *a = NULL, *b = NULL, *c = NULL, *d = NULL;
    CHECK_HR(IHostMalloc_Alloc(heap, 100, eTaskCritical, &a), S_OK);
    CHECK_HR(IHostMalloc_Alloc(heap, 100, eProcessCritical, &b), S_OK);
    CHECK_HR(IHostMalloc_Alloc(heap, 100, eTaskCritical, &c), E_OUTOFMEMORY);
    CHECK(c == NULL);
    CHECK_HR(IHostMalloc_Alloc(heap, 100, eTaskCritical, &d), S_OK);
    CHECK_HR(IHostMalloc_Free(heap, a), S_OK);
    CHECK_HR(IHostMalloc_Free(heap, b), S_OK);
    CHECK_HR(IHostMalloc_Free(heap, d), S_OK);
    CHECK(IHostMalloc_Release(heap) == 0);
    CHECK(IHostMemoryManager_Release(m) == 0);
    return 0;
}

/* OOM exploration (HostMemExplore) of the built-in scenario on the Windows manager: every run, with the k-th
 * VirtualAlloc or heap allocation failing once or for good, ends consistent (the books against the system) with
 * nothing leaked. */
static int explore_the_windows_manager(void)
{
    hm_explore_options options = {.match = "VirtualAlloc|heap", .max_points = 40};
    hm_explore_result result;
    CHECK_HR(HostMemExplore(hm_scenario_builtin, NULL, &options, &result), S_OK);
    for (uint64_t i = 0; i < result.runs; i++)
        if (!result.points[i].ok)
            printf("  k=%llu %s: %s\n", (unsigned long long)result.points[i].k,
                   result.points[i].persistent ? "persistent" : "transient", result.points[i].message);
    CHECK(result.matching_calls > 0 && result.runs > 0);
    CHECK(result.failures == 0);
    HostMemExploreFree(&result);
    return 0;
}

/* ---- A host's own manager (a third party's): VirtualAlloc and VirtualFree only, counting the calls it gets ---- */

typedef struct own_manager {
    IHostMemoryManager iface;
    LONG refs, allocs;
} own_manager;

static own_manager *own(IHostMemoryManager *m) { return (own_manager *)m; }

static HRESULT STDMETHODCALLTYPE own_query(IHostMemoryManager *This, REFIID riid, void **ppv)
{
    if (IsEqualIID(riid, &IID_IUnknown) || IsEqualIID(riid, &IID_IHostMemoryManager)) {
        *ppv = This;
        InterlockedIncrement(&own(This)->refs);
        return S_OK;
    }
    *ppv = NULL;
    return E_NOINTERFACE;
}
static ULONG STDMETHODCALLTYPE own_addref(IHostMemoryManager *This) { return (ULONG)InterlockedIncrement(&own(This)->refs); }
static ULONG STDMETHODCALLTYPE own_release(IHostMemoryManager *This) { return (ULONG)InterlockedDecrement(&own(This)->refs); }
static HRESULT STDMETHODCALLTYPE own_create_malloc(IHostMemoryManager *This, DWORD type, IHostMalloc **pp)
{
    (void)This, (void)type;
    *pp = NULL;
    return E_NOTIMPL;
}
static HRESULT STDMETHODCALLTYPE own_virtual_alloc(IHostMemoryManager *This, void *address, SIZE_T size, DWORD type,
                                                   DWORD protect, EMemoryCriticalLevel level, void **out)
{
    (void)level;
    InterlockedIncrement(&own(This)->allocs);
    *out = VirtualAlloc(address, size, type, protect);
    return *out ? S_OK : HRESULT_FROM_WIN32(GetLastError());
}
static HRESULT STDMETHODCALLTYPE own_virtual_free(IHostMemoryManager *This, LPVOID address, SIZE_T size, DWORD type)
{
    (void)This;
    return VirtualFree(address, size, type) ? S_OK : HRESULT_FROM_WIN32(GetLastError());
}
static HRESULT STDMETHODCALLTYPE own_virtual_query(IHostMemoryManager *This, void *a, void *b, SIZE_T n, SIZE_T *r)
{
    (void)This, (void)a, (void)b, (void)n;
    *r = 0;
    return E_NOTIMPL;
}
static HRESULT STDMETHODCALLTYPE own_virtual_protect(IHostMemoryManager *This, void *a, SIZE_T n, DWORD p, DWORD *o)
{
    (void)This, (void)a, (void)n, (void)p, (void)o;
    return E_NOTIMPL;
}
static HRESULT STDMETHODCALLTYPE own_load(IHostMemoryManager *This, DWORD *load, SIZE_T *available)
{
    (void)This;
    *load = 0;
    *available = 0;
    return E_NOTIMPL;
}
static HRESULT STDMETHODCALLTYPE own_register(IHostMemoryManager *This, ICLRMemoryNotificationCallback *cb)
{
    (void)This, (void)cb;
    return E_NOTIMPL;
}
static HRESULT STDMETHODCALLTYPE own_needs(IHostMemoryManager *This, LPVOID a, SIZE_T n)
{
    (void)This, (void)a, (void)n;
    return S_OK;
}
static HRESULT STDMETHODCALLTYPE own_released(IHostMemoryManager *This, LPVOID a)
{
    (void)This, (void)a;
    return S_OK;
}
static const IHostMemoryManagerVtbl own_vtbl = {
    own_query, own_addref, own_release, own_create_malloc, own_virtual_alloc, own_virtual_free, own_virtual_query,
    own_virtual_protect, own_load, own_register, own_needs, own_needs, own_released,
};

static int wrap_a_hosts_own_manager(void)
{
    own_manager host = {{&own_vtbl}, 1, 0};
    IHostMemoryManager *m = NULL;
    CHECK_HR(HostMemWrapFaults(&host.iface, "VirtualAlloc,nth=2,return=HOST_E_TIMEOUT", &m), S_OK);
    CHECK(host.refs == 2);
    void *a = NULL, *b = NULL, *c = NULL;
    CHECK_HR(alloc(m, eTaskCritical, &a), S_OK);
    CHECK_HR(alloc(m, eTaskCritical, &b), HOST_E_TIMEOUT);
    CHECK(b == NULL && host.allocs == 1); /* the host never saw the failed call */
    CHECK_HR(alloc(m, eTaskCritical, &c), S_OK);
    CHECK(host.allocs == 2);
    CHECK_HR(IHostMemoryManager_VirtualFree(m, a, 0, MEM_RELEASE), S_OK);
    CHECK_HR(IHostMemoryManager_VirtualFree(m, c, 0, MEM_RELEASE), S_OK);
    hm_stats stats;
    CHECK_HR(HostMemGetStats(m, &stats), E_NOINTERFACE); /* not hostmem's manager underneath */
    IHostMemoryManager_Release(m);
    CHECK(host.refs == 1);
    return 0;
}

/* ---- HOSTMEM_FAULTS --------------------------------------------------------------------------------------- */

static int hostmem_faults_from_the_environment(void)
{
    CHECK(_putenv_s("HOSTMEM_FAULTS", "VirtualAlloc,level=process,nth=3") == 0);
    IHostMemoryManager *m = NULL;
    HRESULT hr = HostMemCreateManager("", &m);
    CHECK(_putenv_s("HOSTMEM_FAULTS", "") == 0);
    CHECK_HR(hr, S_OK);
    CHECK(HostMemFaultsInner(m) != NULL);
    CHECK(third_process_critical_alloc_fails(m) == 0);
    CHECK(IHostMemoryManager_Release(m) == 0);
    /* Unset: the manager alone. */
    CHECK_HR(HostMemCreateManager("", &m), S_OK);
    CHECK(HostMemFaultsInner(m) == NULL);
    CHECK(IHostMemoryManager_Release(m) == 0);
    return 0;
}

static int bad_hostmem_faults_is_named(void)
{
    CHECK(_putenv_s("HOSTMEM_FAULTS", "VirtualAlloc,lvl=process") == 0);
    IHostMemoryManager *m = (IHostMemoryManager *)1;
    HRESULT hr = HostMemCreateManager("", &m);
    CHECK(_putenv_s("HOSTMEM_FAULTS", "") == 0);
    CHECK_HR(hr, E_INVALIDARG);
    CHECK(m == NULL);
    CHECK(strstr(HostMemLastError(), "HOSTMEM_FAULTS='VirtualAlloc,lvl=process'") != NULL);
    CHECK(strstr(HostMemLastError(), "lvl") != NULL);
    return 0;
}

/* --environment: the spec came from the parent process. */
static int environment_from_the_parent(void)
{
    const char *spec = getenv("HOSTMEM_FAULTS");
    CHECK(spec && strcmp(spec, "VirtualAlloc,level=process,nth=1") == 0);
    IHostMemoryManager *m = NULL;
    CHECK_HR(HostMemCreateManager("", &m), S_OK);
    void *a = NULL, *b = NULL;
    CHECK_HR(alloc(m, eTaskCritical, &a), S_OK);
    CHECK_HR(alloc(m, eProcessCritical, &b), E_OUTOFMEMORY);
    CHECK_HR(IHostMemoryManager_VirtualFree(m, a, 0, MEM_RELEASE), S_OK);
    CHECK(IHostMemoryManager_Release(m) == 0);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--environment") == 0) {
        static const win_case from_parent[] = {{"environment_from_the_parent", environment_from_the_parent}};
        return win_run_cases(from_parent, 1);
    }
    static const win_case cases[] = {
        {"wrap_the_windows_manager", wrap_the_windows_manager},
        {"heap_faults_by_level", heap_faults_by_level},
        {"explore_the_windows_manager", explore_the_windows_manager},
        {"wrap_a_hosts_own_manager", wrap_a_hosts_own_manager},
        {"hostmem_faults_from_the_environment", hostmem_faults_from_the_environment},
        {"bad_hostmem_faults_is_named", bad_hostmem_faults_is_named},
    };
    return win_run_cases(cases, sizeof cases / sizeof *cases);
}

/* The Windows manager (HostMemCreateManager through hostmem.dll): the system's VirtualAlloc & co. under hostmem's
 * policy (budget and critical levels, GetMemoryLoad, notifications, the address-space ledger, heaps).
 * Runs under Wine in CI (ci/windows.sh). The answers the system gives are checked only where Windows' own behaviour
 * is known (Wine's conformance tests, which run on Windows, pin them; docs/semantics.md), and each says so. */
#define WIN32_LEAN_AND_MEAN
#include <windows.h>

#include <hostmem/hostmem.h>

#include "runner.h"

#include <stdint.h>
#include <string.h>

#define KIB ((SIZE_T)1 << 10)
#define MIB ((SIZE_T)1 << 20)

static IHostMemoryManager *make(const char *options)
{
    IHostMemoryManager *m = NULL;
    HRESULT hr = HostMemCreateManager(options, &m);
    if (FAILED(hr))
        printf("  HostMemCreateManager(\"%s\"): 0x%08lX %s\n", options, (unsigned long)hr, HostMemLastError());
    return m;
}

/* The manager's VirtualQuery, which must be the system's own answer. */
static int query(IHostMemoryManager *m, void *p, MEMORY_BASIC_INFORMATION *mbi)
{
    SIZE_T got = 0;
    CHECK_HR(IHostMemoryManager_VirtualQuery(m, p, mbi, sizeof *mbi, &got), S_OK);
    CHECK(got == sizeof *mbi);
    MEMORY_BASIC_INFORMATION system;
    CHECK(VirtualQuery(p, &system, sizeof system) == sizeof system);
    /* Field by field: the padding is whatever each buffer held before. */
    CHECK(mbi->BaseAddress == system.BaseAddress && mbi->AllocationBase == system.AllocationBase);
    CHECK(mbi->AllocationProtect == system.AllocationProtect && mbi->RegionSize == system.RegionSize);
    CHECK(mbi->State == system.State && mbi->Protect == system.Protect && mbi->Type == system.Type);
    return 0;
}

static int consistent(IHostMemoryManager *m)
{
    char msg[256];
    HRESULT hr = HostMemCheckConsistency(m, msg, sizeof msg);
    if (FAILED(hr))
        printf("  HostMemCheckConsistency: %s\n", msg);
    CHECK_HR(hr, S_OK);
    return 0;
}

static int reserve_commit_protect_decommit_release(void)
{
    IHostMemoryManager *m = make("");
    CHECK(m);
    void *base = NULL, *page = NULL;
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, NULL, 256 * KIB, MEM_RESERVE, PAGE_NOACCESS, eTaskCritical, &base),
             S_OK);
    CHECK(base && ((uintptr_t)base & 0xFFFF) == 0);
    MEMORY_BASIC_INFORMATION mbi;
    CHECK(query(m, base, &mbi) == 0);
    CHECK(mbi.State == MEM_RESERVE && mbi.AllocationBase == base && mbi.RegionSize == 256 * KIB);
    /* A commit of two pages from inside the first one: the address comes back rounded down to its page. */
    char *inside = (char *)base + 0x1010;
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, inside, 0x1000, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &page),
             S_OK);
    CHECK(page == (char *)base + 0x1000);
    memset(page, 0xA5, 0x2000);
    CHECK(query(m, page, &mbi) == 0);
    CHECK(mbi.State == MEM_COMMIT && mbi.Protect == PAGE_READWRITE && mbi.RegionSize == 0x2000);
    DWORD old = 0;
    CHECK_HR(IHostMemoryManager_VirtualProtect(m, page, 0x2000, PAGE_READONLY, &old), S_OK);
    CHECK(old == PAGE_READWRITE);
    CHECK(query(m, page, &mbi) == 0);
    CHECK(mbi.Protect == PAGE_READONLY && ((unsigned char *)page)[0x1FFF] == 0xA5);
    /* Protecting reserved pages is refused, by the system, as by the Linux manager (STATUS_NOT_COMMITTED is
     * ERROR_INVALID_ADDRESS: Wine's test_VirtualProtect, which passes on Windows). */
    CHECK_HR(IHostMemoryManager_VirtualProtect(m, base, 0x1000, PAGE_READWRITE, &old),
             HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS));
    CHECK(old == PAGE_NOACCESS);
    CHECK(consistent(m) == 0);
    CHECK_HR(IHostMemoryManager_VirtualFree(m, page, 0x2000, MEM_DECOMMIT), S_OK);
    CHECK(query(m, page, &mbi) == 0);
    CHECK(mbi.State == MEM_RESERVE);
    /* Committed again: zero, as the contract promises. */
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, page, 0x2000, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &page), S_OK);
    CHECK(((unsigned char *)page)[0] == 0 && ((unsigned char *)page)[0x1FFF] == 0);
    /* Release needs the base, and size 0. */
    CHECK_HR(IHostMemoryManager_VirtualFree(m, page, 0, MEM_RELEASE), HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS));
    CHECK_HR(IHostMemoryManager_VirtualFree(m, base, 0x1000, MEM_RELEASE), HRESULT_FROM_WIN32(ERROR_INVALID_PARAMETER));
    CHECK(consistent(m) == 0);
    CHECK_HR(IHostMemoryManager_VirtualFree(m, base, 0, MEM_RELEASE), S_OK);
    CHECK(query(m, base, &mbi) == 0);
    CHECK(mbi.State == MEM_FREE);
    /* Released twice: no longer the manager's. */
    CHECK_HR(IHostMemoryManager_VirtualFree(m, base, 0, MEM_RELEASE), HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS));
    hm_stats stats;
    CHECK_HR(HostMemGetStats(m, &stats), S_OK);
    CHECK(stats.reservations == 0 && stats.committed_bytes == 0 && stats.peak_committed_bytes == 0x2000);
    CHECK(consistent(m) == 0);
    CHECK(IHostMemoryManager_Release(m) == 0);
    return 0;
}

static int load_of(IHostMemoryManager *m, DWORD *load, SIZE_T *available)
{
    CHECK_HR(IHostMemoryManager_GetMemoryLoad(m, load, available), S_OK);
    return 0;
}

/* MEM_RESET keeps the pages committed (and charged); MEM_TOP_DOWN places a reservation above one made without it. */
static int reset_and_top_down_pass_through(void)
{
    IHostMemoryManager *m = make("limit=64M");
    CHECK(m);
    void *low = NULL, *high = NULL, *p = NULL;
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, NULL, 64 * KIB, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, eTaskCritical,
                                             &low), S_OK);
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, NULL, 64 * KIB, MEM_RESERVE | MEM_TOP_DOWN, PAGE_NOACCESS,
                                             eTaskCritical, &high), S_OK);
    CHECK((uintptr_t)high > (uintptr_t)low);
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, low, 32 * KIB, MEM_RESET, PAGE_NOACCESS, eTaskCritical, &p), S_OK);
    CHECK(p == low);
    MEMORY_BASIC_INFORMATION mbi;
    CHECK(query(m, low, &mbi) == 0);
    CHECK(mbi.State == MEM_COMMIT && mbi.Protect == PAGE_READWRITE && mbi.RegionSize == 64 * KIB);
    DWORD load;
    SIZE_T available;
    CHECK(load_of(m, &load, &available) == 0);
    CHECK(available == 64 * MIB - 64 * KIB);
    /* A reset outside the manager's reservations is refused like a commit there. */
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, (char *)high + 128 * KIB, 0x1000, MEM_RESET, PAGE_NOACCESS,
                                             eTaskCritical, &p), HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS));
    CHECK(consistent(m) == 0);
    CHECK_HR(IHostMemoryManager_VirtualFree(m, low, 0, MEM_RELEASE), S_OK);
    CHECK_HR(IHostMemoryManager_VirtualFree(m, high, 0, MEM_RELEASE), S_OK);
    CHECK(IHostMemoryManager_Release(m) == 0);
    return 0;
}

/* Errors: the system's for what it refuses, the Linux manager's for memory the manager did not reserve. */
static int errors_match_the_linux_manager(void)
{
    IHostMemoryManager *m = make("");
    CHECK(m);
    void *p = NULL;
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, NULL, 0, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &p),
             HRESULT_FROM_WIN32(ERROR_INVALID_PARAMETER));
    CHECK(p == NULL);
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, NULL, 0x1000, 0, PAGE_READWRITE, eTaskCritical, &p),
             HRESULT_FROM_WIN32(ERROR_INVALID_PARAMETER));
    /* An invalid protection: the system's error, ERROR_INVALID_PARAMETER (Windows maps STATUS_INVALID_PAGE_PROTECTION
     * to it: Wine's ntdll error test; Wine 8 answers the same). */
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, NULL, 0x1000, MEM_COMMIT, 0, eTaskCritical, &p),
             HRESULT_FROM_WIN32(ERROR_INVALID_PARAMETER));
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, NULL, 0x1000, MEM_COMMIT, PAGE_READWRITE, (EMemoryCriticalLevel)7, &p),
             E_INVALIDARG);
    /* Memory reserved behind the manager's back is not its to commit, protect or free. */
    void *foreign = VirtualAlloc(NULL, 64 * KIB, MEM_RESERVE, PAGE_NOACCESS);
    CHECK(foreign);
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, foreign, 0x1000, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p),
             HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS));
    CHECK_HR(IHostMemoryManager_VirtualFree(m, foreign, 0, MEM_RELEASE), HOST_E_INVALIDOPERATION);
    MEMORY_BASIC_INFORMATION mbi;
    CHECK(query(m, foreign, &mbi) == 0);
    CHECK(mbi.State == MEM_RESERVE); /* still there */
    CHECK(VirtualFree(foreign, 0, MEM_RELEASE));
    /* Free space (just released): ERROR_INVALID_ADDRESS, as the Linux manager says. */
    CHECK_HR(IHostMemoryManager_VirtualFree(m, foreign, 0, MEM_RELEASE), HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS));
    CHECK_HR(IHostMemoryManager_VirtualFree(m, foreign, 0, MEM_DECOMMIT | MEM_RELEASE),
             HRESULT_FROM_WIN32(ERROR_INVALID_PARAMETER));
    SIZE_T got = 1;
    CHECK_HR(IHostMemoryManager_VirtualQuery(m, foreign, &mbi, sizeof mbi - 1, &got), HRESULT_FROM_WIN32(ERROR_BAD_LENGTH));
    CHECK(got == 0);
    CHECK(IHostMemoryManager_Release(m) == 0);
    return 0;
}

/* The options that place memory belong to the Linux manager: refused with a message, never silently ignored. */
static int placement_options_are_refused(void)
{
    static const char *const refused[] = {"backend=sim", "deterministic=1", "base=0x100000000"};
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        IHostMemoryManager *m = (IHostMemoryManager *)1;
        CHECK_HR(HostMemCreateManager(refused[i], &m), E_INVALIDARG);
        CHECK(m == NULL);
        CHECK(strstr(HostMemLastError(), "Windows") != NULL);
    }
    return 0;
}

/* With no limit= the budget is physical memory, as the system reports it (GlobalMemoryStatusEx; under Wine, the
 * Linux machine's). */
static int default_budget_is_physical_memory(void)
{
    IHostMemoryManager *m = make("");
    CHECK(m);
    MEMORYSTATUSEX status = {.dwLength = sizeof status};
    CHECK(GlobalMemoryStatusEx(&status));
    hm_stats stats;
    CHECK_HR(HostMemGetStats(m, &stats), S_OK);
    CHECK(stats.budget_bytes == status.ullTotalPhys);
    DWORD load;
    SIZE_T available;
    CHECK(load_of(m, &load, &available) == 0);
    CHECK(load == 0 && available == status.ullTotalPhys);
    CHECK(IHostMemoryManager_Release(m) == 0);
    return 0;
}

/* GetMemoryLoad follows the pages that change state: a commit of committed pages, or a decommit of reserved ones,
 * moves nothing. */
static int memory_load_follows_commits(void)
{
    IHostMemoryManager *m = make("limit=64M");
    CHECK(m);
    DWORD load;
    SIZE_T available;
    CHECK(load_of(m, &load, &available) == 0);
    CHECK(load == 0 && available == 64 * MIB);
    void *base = NULL, *p = NULL;
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, NULL, 48 * MIB, MEM_RESERVE, PAGE_NOACCESS, eTaskCritical, &base), S_OK);
    CHECK(load_of(m, &load, &available) == 0);
    CHECK(load == 0 && available == 64 * MIB); /* reserving costs nothing */
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, base, 32 * MIB, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p), S_OK);
    CHECK(load_of(m, &load, &available) == 0);
    CHECK(load == 50 && available == 32 * MIB);
    /* Half of it again plus 8 MiB more: only the 8 MiB are new. */
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, (char *)base + 16 * MIB, 24 * MIB, MEM_COMMIT, PAGE_READWRITE,
                                             eTaskCritical, &p), S_OK);
    CHECK(load_of(m, &load, &available) == 0);
    CHECK(available == 24 * MIB);
    /* Decommit a range half committed: only the committed half is given back. */
    CHECK_HR(IHostMemoryManager_VirtualFree(m, (char *)base + 36 * MIB, 8 * MIB, MEM_DECOMMIT), S_OK);
    CHECK(load_of(m, &load, &available) == 0);
    CHECK(available == 28 * MIB);
    CHECK(consistent(m) == 0);
    CHECK_HR(IHostMemoryManager_VirtualFree(m, base, 0, MEM_RELEASE), S_OK);
    CHECK(load_of(m, &load, &available) == 0);
    CHECK(load == 0 && available == 64 * MIB);
    CHECK(IHostMemoryManager_Release(m) == 0);
    return 0;
}

/* The critical levels: with a 16 MiB budget keeping 4 MiB for eProcessCritical and 4 MiB more for
 * eAppDomainCritical, a task-critical commit may bring the total to 8 MiB, an appdomain-critical one to 12 MiB. */
static int budget_refuses_by_critical_level(void)
{
    IHostMemoryManager *m = make("limit=16M,reserve.process=4M,reserve.appdomain=4M");
    CHECK(m);
    void *a = NULL, *b = NULL, *c = NULL;
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, NULL, 10 * MIB, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &a),
             E_OUTOFMEMORY);
    CHECK(a == NULL);
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, NULL, 10 * MIB, MEM_COMMIT, PAGE_READWRITE, eAppDomainCritical, &a),
             S_OK);
    /* A commit inside a reservation is refused the same way, and leaves the pages reserved. */
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, NULL, 8 * MIB, MEM_RESERVE, PAGE_NOACCESS, eTaskCritical, &b), S_OK);
    void *p = NULL;
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, b, 4 * MIB, MEM_COMMIT, PAGE_READWRITE, eAppDomainCritical, &p),
             E_OUTOFMEMORY);
    MEMORY_BASIC_INFORMATION mbi;
    CHECK(query(m, b, &mbi) == 0);
    CHECK(mbi.State == MEM_RESERVE && mbi.RegionSize == 8 * MIB);
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, b, 4 * MIB, MEM_COMMIT, PAGE_READWRITE, eProcessCritical, &p), S_OK);
    /* Over the limit itself: refused even at eProcessCritical. */
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, NULL, 4 * MIB, MEM_COMMIT, PAGE_READWRITE, eProcessCritical, &c),
             E_OUTOFMEMORY);
    DWORD load;
    SIZE_T available;
    CHECK(load_of(m, &load, &available) == 0);
    CHECK(available == 2 * MIB && load == 87);
    CHECK(consistent(m) == 0);
    CHECK_HR(IHostMemoryManager_VirtualFree(m, a, 0, MEM_RELEASE), S_OK);
    CHECK_HR(IHostMemoryManager_VirtualFree(m, b, 0, MEM_RELEASE), S_OK);
    CHECK(IHostMemoryManager_Release(m) == 0);
    return 0;
}

/* A commit made behind the manager's back (the system's VirtualAlloc on the manager's reservation) shows in
 * HostMemCheckConsistency: the books are checked against the system. */
static int consistency_check_sees_the_system(void)
{
    IHostMemoryManager *m = make("");
    CHECK(m);
    void *base = NULL;
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, NULL, 64 * KIB, MEM_RESERVE, PAGE_NOACCESS, eTaskCritical, &base), S_OK);
    CHECK(consistent(m) == 0);
    CHECK(VirtualAlloc(base, 0x1000, MEM_COMMIT, PAGE_READWRITE) == base);
    char msg[256] = "";
    CHECK_HR(HostMemCheckConsistency(m, msg, sizeof msg), E_FAIL);
    CHECK(strstr(msg, "committed") != NULL);
    CHECK(VirtualFree(base, 0x1000, MEM_DECOMMIT));
    CHECK(consistent(m) == 0);
    /* Released behind its back: the check says so; when the system hands the address out again through the manager,
     * the stale reservation is forgotten. */
    void *page = NULL;
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, base, 0x1000, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &page), S_OK);
    CHECK(VirtualFree(base, 0, MEM_RELEASE));
    CHECK_HR(HostMemCheckConsistency(m, msg, sizeof msg), E_FAIL);
    CHECK(strstr(msg, "no longer has the reservation") != NULL);
    void *again = NULL;
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, base, 64 * KIB, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, eTaskCritical,
                                             &again), S_OK);
    CHECK(again == base);
    CHECK(consistent(m) == 0);
    hm_stats stats;
    CHECK_HR(HostMemGetStats(m, &stats), S_OK);
    CHECK(stats.reservations == 1 && stats.committed_bytes == 64 * KIB);
    CHECK_HR(IHostMemoryManager_VirtualFree(m, again, 0, MEM_RELEASE), S_OK);
    CHECK(IHostMemoryManager_Release(m) == 0);
    return 0;
}

typedef struct counting_callback {
    ICLRMemoryNotificationCallback iface;
    LONG refs, calls;
    EMemoryAvailable last;
} counting_callback;

static HRESULT STDMETHODCALLTYPE cb_query(ICLRMemoryNotificationCallback *This, REFIID riid, void **ppv)
{
    if (IsEqualIID(riid, &IID_IUnknown) || IsEqualIID(riid, &IID_ICLRMemoryNotificationCallback)) {
        *ppv = This;
        This->lpVtbl->AddRef(This);
        return S_OK;
    }
    *ppv = NULL;
    return E_NOINTERFACE;
}
static ULONG STDMETHODCALLTYPE cb_addref(ICLRMemoryNotificationCallback *This)
{
    return (ULONG)InterlockedIncrement(&((counting_callback *)This)->refs);
}
static ULONG STDMETHODCALLTYPE cb_release(ICLRMemoryNotificationCallback *This)
{
    return (ULONG)InterlockedDecrement(&((counting_callback *)This)->refs);
}
static HRESULT STDMETHODCALLTYPE cb_notify(ICLRMemoryNotificationCallback *This, EMemoryAvailable available)
{
    counting_callback *c = (counting_callback *)This;
    InterlockedIncrement(&c->calls);
    c->last = available;
    return S_OK;
}
static const ICLRMemoryNotificationCallbackVtbl cb_vtbl = {cb_query, cb_addref, cb_release, cb_notify};

/* Memory pressure: crossing notify.low sends eMemoryAvailableLow, falling back sends eMemoryAvailableHigh. */
static int notifications_follow_the_load(void)
{
    IHostMemoryManager *m = make("limit=16M,notify.low=75,notify.high=25");
    CHECK(m);
    counting_callback cb = {{&cb_vtbl}, 1, 0, 0};
    CHECK_HR(IHostMemoryManager_RegisterMemoryNotificationCallback(m, &cb.iface), S_OK);
    void *p = NULL;
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, NULL, 14 * MIB, MEM_COMMIT, PAGE_READWRITE, eProcessCritical, &p), S_OK);
    CHECK(cb.calls >= 1 && cb.last == eMemoryAvailableLow);
    LONG before = cb.calls;
    CHECK_HR(IHostMemoryManager_VirtualFree(m, p, 0, MEM_RELEASE), S_OK);
    CHECK(cb.calls == before + 1 && cb.last == eMemoryAvailableHigh);
    CHECK(IHostMemoryManager_Release(m) == 0);
    CHECK(cb.refs == 1); /* the manager let its reference go */
    return 0;
}

/* The address-space ledger: a range the runtime acquired (a mapped view) counts against the budget until released. */
static int ledger_charges_acquired_ranges(void)
{
    IHostMemoryManager *m = make("limit=64M");
    CHECK(m);
    CHECK_HR(IHostMemoryManager_NeedsVirtualAddressSpace(m, NULL, 8 * MIB), S_OK);
    CHECK_HR(IHostMemoryManager_NeedsVirtualAddressSpace(m, NULL, 63 * MIB), E_OUTOFMEMORY);
    void *view = VirtualAlloc(NULL, 8 * MIB, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE); /* stands in for a view */
    CHECK(view);
    CHECK_HR(IHostMemoryManager_AcquiredVirtualAddressSpace(m, view, 8 * MIB), S_OK);
    DWORD load;
    SIZE_T available;
    CHECK(load_of(m, &load, &available) == 0);
    CHECK(available == 56 * MIB);
    hm_stats stats;
    CHECK_HR(HostMemGetStats(m, &stats), S_OK);
    CHECK(stats.ledger_ranges == 1 && stats.ledger_bytes == 8 * MIB);
    CHECK_HR(IHostMemoryManager_ReleasedVirtualAddressSpace(m, view), S_OK);
    CHECK(load_of(m, &load, &available) == 0);
    CHECK(available == 64 * MIB);
    /* Size 0 ("the whole view"): measured with the system's VirtualQuery. */
    CHECK_HR(IHostMemoryManager_AcquiredVirtualAddressSpace(m, view, 0), S_OK);
    CHECK_HR(HostMemGetStats(m, &stats), S_OK);
    CHECK(stats.ledger_bytes == 8 * MIB);
    CHECK_HR(IHostMemoryManager_ReleasedVirtualAddressSpace(m, view), S_OK);
    CHECK(VirtualFree(view, 0, MEM_RELEASE));
    CHECK(consistent(m) == 0);
    CHECK(IHostMemoryManager_Release(m) == 0);
    return 0;
}

/* Heaps: 16-byte aligned blocks, from the manager's budget, freed by any thread of a thread-safe heap. */
static int heap_blocks_are_aligned_and_charged(void)
{
    IHostMemoryManager *m = make("limit=256M");
    CHECK(m);
    IHostMalloc *heap = NULL;
    CHECK_HR(IHostMemoryManager_CreateMalloc(m, MALLOC_THREADSAFE, &heap), S_OK);
    static const SIZE_T sizes[] = {1, 7, 16, 17, 100, 4096, 40000, 1 << 20};
    void *blocks[sizeof sizes / sizeof *sizes];
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        CHECK_HR(IHostMalloc_Alloc(heap, sizes[i], eTaskCritical, &blocks[i]), S_OK);
        CHECK(blocks[i] && ((uintptr_t)blocks[i] & 15) == 0);
        memset(blocks[i], (int)i, sizes[i]);
    }
    hm_stats stats;
    CHECK_HR(HostMemGetStats(m, &stats), S_OK);
    CHECK(stats.heap_count == 1 && stats.heap_live_blocks == sizeof sizes / sizeof *sizes);
    CHECK(stats.committed_bytes >= (1 << 20));
    DWORD load;
    SIZE_T available;
    CHECK(load_of(m, &load, &available) == 0);
    CHECK(available == 256 * MIB - stats.committed_bytes);
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
        CHECK_HR(IHostMalloc_Free(heap, blocks[i]), S_OK);
    int local;
    CHECK(FAILED(IHostMalloc_Free(heap, &local))); /* not a block of this heap */
    void *d = NULL;
    CHECK_HR(IHostMalloc_DebugAlloc(heap, 24, eAppDomainCritical, (char *)"here.c", 7, &d), S_OK);
    CHECK(((uintptr_t)d & 15) == 0);
    CHECK_HR(IHostMalloc_Free(heap, d), S_OK);
    CHECK(consistent(m) == 0);
    CHECK(IHostMalloc_Release(heap) == 0);
    CHECK_HR(HostMemGetStats(m, &stats), S_OK);
    CHECK(stats.heap_count == 0 && stats.committed_bytes == 0);
    CHECK(IHostMemoryManager_Release(m) == 0);
    return 0;
}

/* MALLOC_EXECUTABLE: the heap's pages are PAGE_EXECUTE_READWRITE, as the system reports them. */
static int executable_heap_pages(void)
{
    IHostMemoryManager *m = make("");
    CHECK(m);
    IHostMalloc *heap = NULL;
    CHECK_HR(IHostMemoryManager_CreateMalloc(m, MALLOC_EXECUTABLE, &heap), S_OK);
    void *p = NULL;
    CHECK_HR(IHostMalloc_Alloc(heap, 64, eTaskCritical, &p), S_OK);
    MEMORY_BASIC_INFORMATION mbi;
    CHECK(query(m, p, &mbi) == 0);
    CHECK(mbi.State == MEM_COMMIT && mbi.Protect == PAGE_EXECUTE_READWRITE);
    CHECK_HR(IHostMalloc_Free(heap, p), S_OK);
    CHECK(IHostMalloc_Release(heap) == 0);
    CHECK(IHostMemoryManager_Release(m) == 0);
    return 0;
}

/* A heap's budget refusal at a low level: a block larger than the task ceiling fails, a process-critical one not. */
static int heap_refuses_by_critical_level(void)
{
    IHostMemoryManager *m = make("limit=16M,reserve.process=4M,reserve.appdomain=4M");
    CHECK(m);
    IHostMalloc *heap = NULL;
    CHECK_HR(IHostMemoryManager_CreateMalloc(m, 0, &heap), S_OK);
    void *p = NULL;
    CHECK_HR(IHostMalloc_Alloc(heap, 10 * MIB, eTaskCritical, &p), E_OUTOFMEMORY);
    CHECK(p == NULL);
    CHECK_HR(IHostMalloc_Alloc(heap, 10 * MIB, eProcessCritical, &p), S_OK);
    CHECK_HR(IHostMalloc_Free(heap, p), S_OK);
    CHECK(IHostMalloc_Release(heap) == 0);
    CHECK(IHostMemoryManager_Release(m) == 0);
    return 0;
}

typedef struct worker {
    IHostMalloc *heap;
    int failures;
} worker;

static DWORD WINAPI heap_worker(void *arg)
{
    worker *w = arg;
    void *held[64] = {0};
    for (int round = 0; round < 2000; round++) {
        int k = round % 64;
        if (held[k] && FAILED(IHostMalloc_Free(w->heap, held[k])))
            w->failures++;
        held[k] = NULL;
        if (FAILED(IHostMalloc_Alloc(w->heap, (SIZE_T)(16 + round % 500), eTaskCritical, &held[k])) ||
            ((uintptr_t)held[k] & 15))
            w->failures++;
        else
            memset(held[k], round, 16);
    }
    for (int k = 0; k < 64; k++)
        if (held[k] && FAILED(IHostMalloc_Free(w->heap, held[k])))
            w->failures++;
    return 0;
}

/* A thread-safe heap used by four native threads at once (winpthreads' thread-local storage under the heap). */
static int heap_serves_native_threads(void)
{
    IHostMemoryManager *m = make("");
    CHECK(m);
    IHostMalloc *heap = NULL;
    CHECK_HR(IHostMemoryManager_CreateMalloc(m, MALLOC_THREADSAFE, &heap), S_OK);
    worker w[4];
    HANDLE threads[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (worker){heap, 0};
        threads[i] = CreateThread(NULL, 0, heap_worker, &w[i], 0, NULL);
        CHECK(threads[i]);
    }
    CHECK(WaitForMultipleObjects(4, threads, TRUE, 60000) == WAIT_OBJECT_0);
    for (int i = 0; i < 4; i++) {
        CloseHandle(threads[i]);
        CHECK(w[i].failures == 0);
    }
    hm_stats stats;
    CHECK_HR(HostMemGetStats(m, &stats), S_OK);
    CHECK(stats.heap_live_blocks == 0);
    CHECK(IHostMalloc_Release(heap) == 0);
    CHECK(consistent(m) == 0);
    CHECK(IHostMemoryManager_Release(m) == 0);
    return 0;
}

typedef struct committer {
    IHostMemoryManager *m;
    char *base;
    unsigned seed;
    int failures;
} committer;

static DWORD WINAPI commit_worker(void *arg)
{
    committer *c = arg;
    for (int i = 0; i < 300; i++) {
        c->seed = c->seed * 1103515245u + 12345u;
        char *page = c->base + (size_t)((c->seed >> 8) % 16) * 0x1000;
        SIZE_T size = (SIZE_T)(1 + (c->seed >> 20) % 4) * 0x1000;
        void *p = NULL;
        HRESULT hr = (c->seed >> 4) & 1
                         ? IHostMemoryManager_VirtualAlloc(c->m, page, size, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p)
                         : IHostMemoryManager_VirtualFree(c->m, page, size, MEM_DECOMMIT);
        if (FAILED(hr))
            c->failures++;
    }
    return 0;
}

/* Four threads committing and decommitting the same pages: each page is charged once however the calls interleave
 * (the manager's count of the pages that change state and the system call are one step). */
static int concurrent_commits_are_charged_once(void)
{
    IHostMemoryManager *m = make("");
    CHECK(m);
    void *base = NULL;
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, NULL, 20 * 0x1000, MEM_RESERVE, PAGE_NOACCESS, eTaskCritical, &base),
             S_OK);
    committer c[4];
    HANDLE threads[4];
    for (int i = 0; i < 4; i++) {
        c[i] = (committer){m, base, 7u * (unsigned)i + 1, 0};
        threads[i] = CreateThread(NULL, 0, commit_worker, &c[i], 0, NULL);
        CHECK(threads[i]);
    }
    CHECK(WaitForMultipleObjects(4, threads, TRUE, 60000) == WAIT_OBJECT_0);
    for (int i = 0; i < 4; i++) {
        CloseHandle(threads[i]);
        CHECK(c[i].failures == 0);
    }
    CHECK(consistent(m) == 0); /* the budget holds what the system says is committed */
    CHECK_HR(IHostMemoryManager_VirtualFree(m, base, 0, MEM_RELEASE), S_OK);
    hm_stats stats;
    CHECK_HR(HostMemGetStats(m, &stats), S_OK);
    CHECK(stats.committed_bytes == 0);
    CHECK(IHostMemoryManager_Release(m) == 0);
    return 0;
}

int main(void)
{
    static const win_case cases[] = {
        {"reserve_commit_protect_decommit_release", reserve_commit_protect_decommit_release},
        {"errors_match_the_linux_manager", errors_match_the_linux_manager},
        {"reset_and_top_down_pass_through", reset_and_top_down_pass_through},
        {"placement_options_are_refused", placement_options_are_refused},
        {"default_budget_is_physical_memory", default_budget_is_physical_memory},
        {"memory_load_follows_commits", memory_load_follows_commits},
        {"budget_refuses_by_critical_level", budget_refuses_by_critical_level},
        {"consistency_check_sees_the_system", consistency_check_sees_the_system},
        {"notifications_follow_the_load", notifications_follow_the_load},
        {"ledger_charges_acquired_ranges", ledger_charges_acquired_ranges},
        {"heap_blocks_are_aligned_and_charged", heap_blocks_are_aligned_and_charged},
        {"executable_heap_pages", executable_heap_pages},
        {"heap_refuses_by_critical_level", heap_refuses_by_critical_level},
        {"heap_serves_native_threads", heap_serves_native_threads},
        {"concurrent_commits_are_charged_once", concurrent_commits_are_charged_once},
    };
    return win_run_cases(cases, sizeof cases / sizeof *cases);
}

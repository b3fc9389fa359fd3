/* End to end on Windows: a program whose manager comes from hostmem.dll's HostMemCreateManager (the pass-through
 * manager over the real VirtualAlloc), with HOSTMEM_FAULTS and HOSTMEM_TRACE from the environment, makes a few
 * thousand calls at the three critical levels (reserve, commit, touch, query, protect, decommit, release, heap
 * Alloc/Free, GetMemoryLoad) and handles the injected OOM as a runtime would (it gives the region back and goes on).
 * ci/windows.sh then replays the trace with the Linux `hostmem replay` (every result must match, the OOM must be
 * reproduced), reruns this program with the spec `hostmem replay --emit-faults` prints (the same call must fail), and
 * runs it with --kill-after N: TerminateProcess after the Nth call, whose trace must still replay with N calls;
 * with --threads T, T threads share the manager and its heap, and the kill finds the others in the middle of calls.
 *
 * Output (what ci/windows.sh asserts on):
 *   oom: call C VirtualAlloc level=appdomain op=commit size=0x10000 -> E_OUTOFMEMORY   (each failed call)
 *   calls: N                                                                          (at the end)
 * Exit: 0 when the run went through (whether or not a call failed), 2 on a usage or setup error, 1 when a call
 * that must succeed failed. With --kill-after N: the process ends with status 9 right after call N. */
#include <windows.h>

#include <hostmem/hostmem.h>

#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static atomic_ulong calls, failures;
static unsigned long kill_after;

/* After every call: count it, and end the process the hard way when asked to (no atexit, no DLL detach): with
 * several threads, the others are in the middle of their calls then. Returns the call's number. */
static unsigned long after_call(void)
{
    unsigned long n = atomic_fetch_add(&calls, 1) + 1;
    if (kill_after && n == kill_after) {
        fflush(stdout);
        TerminateProcess(GetCurrentProcess(), 9);
    }
    return n;
}

static void must(HRESULT hr, const char *what)
{
    if (FAILED(hr)) {
        printf("FAIL: call %lu %s -> %s\n", atomic_load(&calls), what, hm_hr_name(hr));
        atomic_fetch_add(&failures, 1);
    }
}

static const EMemoryCriticalLevel levels[] = {eTaskCritical, eAppDomainCritical, eProcessCritical};

static HRESULT alloc(IHostMemoryManager *m, void *addr, SIZE_T size, DWORD type, DWORD prot, EMemoryCriticalLevel level,
                     void **out)
{
    HRESULT hr = IHostMemoryManager_VirtualAlloc(m, addr, size, type, prot, level, out);
    unsigned long n = after_call();
    if (FAILED(hr))
        printf("oom: call %lu VirtualAlloc level=%s op=%s size=0x%llx -> %s\n", n, hm_level_short(level),
               (type & MEM_COMMIT) ? "commit" : "reserve", (unsigned long long)size, hm_hr_name(hr));
    return hr;
}

static void release(IHostMemoryManager *m, void *base)
{
    HRESULT hr = IHostMemoryManager_VirtualFree(m, base, 0, MEM_RELEASE);
    after_call();
    must(hr, "VirtualFree(MEM_RELEASE)");
}

/* One thread's share: `rounds` rounds over its own regions and blocks (the heap is shared: MALLOC_THREADSAFE). */
typedef struct job {
    IHostMemoryManager *m;
    IHostMalloc *heap;
    unsigned rounds;
} job;

static DWORD WINAPI worker(LPVOID arg)
{
    IHostMemoryManager *m = ((job *)arg)->m;
    IHostMalloc *heap = ((job *)arg)->heap;
    unsigned rounds = ((job *)arg)->rounds;
    HRESULT hr;
    enum { LIVE = 8, RESERVE = 0x40000, CHUNK = 0x10000 };
    void *regions[LIVE] = {0};
    void *blocks[LIVE] = {0};
    for (unsigned r = 0; r < rounds; r++) {
        EMemoryCriticalLevel level = levels[r % 3];
        unsigned slot = r % LIVE;
        if (regions[slot]) {
            release(m, regions[slot]);
            regions[slot] = NULL;
        }
        void *base = NULL;
        if (FAILED(alloc(m, NULL, RESERVE, MEM_RESERVE, PAGE_NOACCESS, level, &base)))
            continue;
        regions[slot] = base;
        /* Commit two chunks; an OOM on either is handled: the region goes back, the round ends. */
        void *chunk = NULL;
        bool oom = false;
        for (unsigned c = 0; c < 2 && !oom; c++) {
            char *at = (char *)base + (size_t)((r + c) % 4) * CHUNK;
            oom = FAILED(alloc(m, at, CHUNK, MEM_COMMIT, PAGE_READWRITE, level, &chunk));
            if (!oom)
                memset(chunk, (int)(r & 0xff), 64); /* the pages are really there */
        }
        if (oom) {
            release(m, base);
            regions[slot] = NULL;
            continue;
        }
        MEMORY_BASIC_INFORMATION mbi;
        SIZE_T got = 0;
        must(IHostMemoryManager_VirtualQuery(m, chunk, &mbi, sizeof mbi, &got), "VirtualQuery");
        after_call();
        DWORD old = 0;
        must(IHostMemoryManager_VirtualProtect(m, chunk, 0x1000, PAGE_READONLY, &old), "VirtualProtect");
        after_call();
        must(IHostMemoryManager_VirtualQuery(m, (char *)chunk + 0x1000, &mbi, sizeof mbi, &got), "VirtualQuery");
        after_call();
        must(IHostMemoryManager_VirtualProtect(m, chunk, 0x1000, PAGE_READWRITE, &old), "VirtualProtect");
        after_call();
        if (r % 2) {
            /* Decommit a quarter in the middle of the chunk: committed pages on both sides. (Next to pages that were
             * never committed, Wine 8's VirtualQuery ends the reserved run where the decommitted pages end, where
             * Windows' rule, which the Linux replay keeps, runs on: docs/semantics.md.) */
            char *mid = (char *)chunk + CHUNK / 4;
            must(IHostMemoryManager_VirtualFree(m, mid, CHUNK / 4, MEM_DECOMMIT), "VirtualFree(MEM_DECOMMIT)");
            after_call();
            must(IHostMemoryManager_VirtualQuery(m, mid, &mbi, sizeof mbi, &got), "VirtualQuery");
            after_call();
        }
        /* Heap: free the slot's old block, allocate one of a size that varies. */
        if (blocks[slot]) {
            must(IHostMalloc_Free(heap, blocks[slot]), "Free");
            after_call();
            blocks[slot] = NULL;
        }
        void *block = NULL;
        hr = IHostMalloc_Alloc(heap, 16 + (r * 24) % 3000, level, &block);
        unsigned long n = after_call();
        if (SUCCEEDED(hr)) {
            memset(block, 1, 16);
            blocks[slot] = block;
        } else {
            printf("oom: call %lu Alloc level=%s -> %s\n", n, hm_level_short(level), hm_hr_name(hr));
        }
        if (r % 50 == 0) {
            DWORD load = 0;
            SIZE_T available = 0;
            must(IHostMemoryManager_GetMemoryLoad(m, &load, &available), "GetMemoryLoad");
            after_call();
        }
    }
    for (unsigned s = 0; s < LIVE; s++) {
        if (regions[s])
            release(m, regions[s]);
        if (blocks[s]) {
            must(IHostMalloc_Free(heap, blocks[s]), "Free");
            after_call();
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    unsigned rounds = 400, threads = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--kill-after") == 0 && i + 1 < argc)
            kill_after = strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
            rounds = (unsigned)strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc && atoi(argv[i + 1]) >= 1 && atoi(argv[i + 1]) <= 16)
            threads = (unsigned)atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: e2e_record [--rounds N] [--threads 1-16] [--kill-after N]\n");
            return 2;
        }
    }
    IHostMemoryManager *m;
    HRESULT hr = HostMemCreateManager(NULL, &m);
    if (FAILED(hr)) {
        fprintf(stderr, "HostMemCreateManager: %s: %s\n", hm_hr_name(hr), HostMemLastError());
        return 2;
    }
    IHostMalloc *heap;
    hr = IHostMemoryManager_CreateMalloc(m, MALLOC_THREADSAFE, &heap);
    after_call();
    if (FAILED(hr)) {
        fprintf(stderr, "CreateMalloc: %s\n", hm_hr_name(hr));
        return 2;
    }

    job work = {m, heap, rounds};
    if (threads == 1) {
        worker(&work);
    } else {
        HANDLE th[16];
        for (unsigned t = 0; t < threads; t++)
            if (!(th[t] = CreateThread(NULL, 0, worker, &work, 0, NULL)))
                return 2;
        WaitForMultipleObjects(threads, th, TRUE, INFINITE);
        for (unsigned t = 0; t < threads; t++)
            CloseHandle(th[t]);
    }
    IHostMalloc_Release(heap);
    IHostMemoryManager_Release(m);
    printf("calls: %lu\n", atomic_load(&calls));
    return atomic_load(&failures) ? 1 : 0;
}

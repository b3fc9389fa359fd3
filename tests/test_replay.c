/* Replay of recordings made by many threads or cut short by a kill: relocation against what is live at each call,
 * the recorded order being an order of the effects (no divergence on a correct host), releases lost in flight
 * implied by later calls, the `concurrent` mark of queries in the three encodings, and the reducer on such traces. */
#include <hostmem/hostmem.h>
#include "trace_internal.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "counting_callback.h"
#include "support/support.h"

#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096u

/* ---- Raw traces built by hand (version 1: the slots right after the header, no ring) ---------------------- */
typedef struct raw_builder {
    FILE *f;
    uint64_t slot;
} raw_builder;

static raw_builder raw_open(const char *path)
{
    raw_builder b = {fopen(path, "wb"), 0};
    assert_non_null(b.f);
    uint8_t header[HM_RAW_HEADER] = {0};
    memcpy(header, HM_TRACE_RAW1_MAGIC, strlen(HM_TRACE_RAW1_MAGIC));
    assert_int_equal(fwrite(header, 1, sizeof header, b.f), sizeof header);
    return b;
}

static hm_raw_record raw_rec(int method)
{
    hm_raw_record rec;
    memset(&rec, 0, sizeof rec);
    rec.method = (uint8_t)method;
    rec.level = hm__trace_method_has_level(method) ? eTaskCritical : HM_RAW_NO_LEVEL;
    rec.nslots = 1;
    rec.thread = 1;
    return rec;
}

/* committed: false writes the record as a call in flight when the recorder was killed leaves it (no commit word). */
static void raw_put(raw_builder *b, hm_raw_record rec, bool committed)
{
    rec.commit = committed ? HM_RAW_COMMIT_TAG | ((b->slot + 1) & HM_RAW_COMMIT_MASK) : 0;
    assert_int_equal(fwrite(&rec, 1, sizeof rec, b->f), sizeof rec);
    b->slot++;
}

static void raw_alloc(raw_builder *b, uint64_t addr, uint64_t size, uint32_t type, uint32_t prot, uint64_t out)
{
    hm_raw_record rec = raw_rec(HM_METHOD_VIRTUAL_ALLOC);
    rec.addr = addr, rec.size = size, rec.a32 = type, rec.b32 = prot, rec.out = out;
    raw_put(b, rec, true);
}

static void raw_free(raw_builder *b, uint64_t addr, uint64_t size, uint32_t type, bool committed)
{
    hm_raw_record rec = raw_rec(HM_METHOD_VIRTUAL_FREE);
    rec.addr = addr, rec.size = size, rec.a32 = type;
    raw_put(b, rec, committed);
}

/* A query of a committed read-write page of the reservation at base, as every correct host answers it. */
static void raw_query_committed(raw_builder *b, uint64_t base, uint64_t page)
{
    hm_raw_record rec = raw_rec(HM_METHOD_VIRTUAL_QUERY);
    rec.addr = page, rec.size = sizeof(MEMORY_BASIC_INFORMATION), rec.out = sizeof(MEMORY_BASIC_INFORMATION);
    MEMORY_BASIC_INFORMATION mbi = {.BaseAddress = (void *)(uintptr_t)page, .AllocationBase = (void *)(uintptr_t)base,
                                    .AllocationProtect = PAGE_NOACCESS, .RegionSize = PAGE, .State = MEM_COMMIT,
                                    .Protect = PAGE_READWRITE, .Type = MEM_PRIVATE};
    assert_true(hm_raw_pack_mbi(&rec, page, &mbi));
    raw_put(b, rec, true);
}

static void raw_heap(raw_builder *b, int method, uint32_t heap, uint64_t size_or_addr, uint64_t out, bool committed)
{
    hm_raw_record rec = raw_rec(method);
    rec.id = heap;
    if (method == HM_METHOD_CREATE_MALLOC)
        rec.a32 = MALLOC_THREADSAFE;
    else if (method == HM_METHOD_HEAP_ALLOC)
        rec.size = size_or_addr, rec.out = out;
    else if (method == HM_METHOD_HEAP_FREE)
        rec.addr = size_or_addr;
    raw_put(b, rec, committed);
}

static void raw_close(raw_builder *b) { assert_int_equal(fclose(b->f), 0); }

static hm_replay_result replay_file(const char *path)
{
    hm_replay_result res;
    assert_int_equal(HostMemReplay(path, NULL, &res), S_OK);
    return res;
}

static void assert_replays_cleanly(const char *path, const hm_replay_result *res)
{
    if (res->diverged)
        fail_msg("%s diverged on the built-in manager:\n%s", path, res->report);
}

/* ---- Relocation against what is live at the call ---------------------------------------------------------- */
#define R 0x7f0000100000ull /* where the recording host put things */

static void freed_block_then_region(raw_builder *b)
{
    raw_heap(b, HM_METHOD_CREATE_MALLOC, 1, 0, 0, true);
    raw_heap(b, HM_METHOD_HEAP_ALLOC, 1, 0x100, R + 0x2000, true);
    raw_heap(b, HM_METHOD_HEAP_FREE, 1, R + 0x2000, 0, true);
}

static void block_of_released_heap_then_region(raw_builder *b)
{
    raw_heap(b, HM_METHOD_CREATE_MALLOC, 1, 0, 0, true);
    raw_heap(b, HM_METHOD_HEAP_ALLOC, 1, 0x100, R + 0x2000, true);
    raw_heap(b, HM_TRACE_HEAP_RELEASE, 1, 0, 0, true); /* its block goes with it, no Free names it */
}

/* The host reuses the memory of a block that is gone for a region; a commit there names the region, not the block
 * (which stands for other memory on the replay host). */
static void test_relocation_prefers_what_is_live(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        void (*before)(raw_builder *b);
    } cases[] = {
        {"freed block", freed_block_then_region},
        {"block of a released heap", block_of_released_heap_then_region},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *path = tmp_path("relocation.raw");
        raw_builder b = raw_open(path);
        cases[i].before(&b);
        raw_alloc(&b, 0, 0x10000, MEM_RESERVE, PAGE_NOACCESS, R);
        raw_alloc(&b, R + 0x2000, PAGE, MEM_COMMIT, PAGE_READWRITE, R + 0x2000);
        raw_query_committed(&b, R, R + 0x2000);
        raw_free(&b, R, 0, MEM_RELEASE, true);
        raw_close(&b);

        hm_trace *t;
        assert_int_equal(hm_trace_load(path, &t), S_OK);
        const hm_trace_call *commit = NULL;
        for (size_t k = 0; k < t->count; k++)
            if (t->calls[k].method == HM_METHOD_VIRTUAL_ALLOC && t->calls[k].type == MEM_COMMIT)
                commit = &t->calls[k];
        assert_non_null(commit);
        char line[HM_TRACE_LINE_MAX];
        hm_trace_format_call(commit, line, sizeof line);
        if (commit->addr.kind != HM_REF_ALLOC || commit->addr.value != 0x2000)
            fail_msg("%s: the commit is '%s', expected addr=@1+0x2000", cases[i].name, line);
        hm_trace_free(t);
        hm_replay_result res = replay_file(path);
        assert_replays_cleanly(cases[i].name, &res);
        assert_int_equal(res.implied, 0);
    }
}

/* A built-in manager failing the calls a fault spec (ctx) names. */
static HRESULT failing_commit(void *ctx, IHostMemoryManager **out)
{
    IHostMemoryManager *inner = NULL;
    HRESULT hr = HostMemCreateBuiltinManager(HM_REPLAY_BUILTIN_OPTIONS, &inner);
    if (FAILED(hr))
        return hr;
    hr = HostMemWrapFaults(inner, ctx, out);
    IHostMemoryManager_Release(inner);
    return hr;
}

/* ---- Releases lost in flight ------------------------------------------------------------------------------ */
/* A region's MEM_RELEASE was in flight when the recorder was killed (its slot never committed), and another thread
 * got the same address from the host: the later reservation proves the release, replay goes on with a note. */
static void test_lost_release_implied(void **state)
{
    (void)state;
    const char *path = tmp_path("lost-release.raw");
    raw_builder b = raw_open(path);
    raw_alloc(&b, 0, 0x10000, MEM_RESERVE, PAGE_NOACCESS, R);
    raw_alloc(&b, R, PAGE, MEM_COMMIT, PAGE_READWRITE, R);
    raw_free(&b, R, 0, MEM_RELEASE, false); /* in flight */
    raw_alloc(&b, 0, 0x20000, MEM_RESERVE, PAGE_NOACCESS, R);
    raw_alloc(&b, R + PAGE, PAGE, MEM_COMMIT, PAGE_READWRITE, R + PAGE);
    raw_query_committed(&b, R, R + PAGE);
    raw_free(&b, R, 0, MEM_RELEASE, true);
    /* The same with a heap block: its Free was lost, the heap hands the block out again. */
    raw_heap(&b, HM_METHOD_CREATE_MALLOC, 1, 0, 0, true);
    raw_heap(&b, HM_METHOD_HEAP_ALLOC, 1, 0x40, 0x5000, true);
    raw_heap(&b, HM_METHOD_HEAP_FREE, 1, 0x5000, 0, false); /* in flight */
    raw_heap(&b, HM_METHOD_HEAP_ALLOC, 1, 0x40, 0x5000, true);
    raw_heap(&b, HM_METHOD_HEAP_FREE, 1, 0x5000, 0, true);
    raw_heap(&b, HM_TRACE_HEAP_RELEASE, 1, 0, 0, true);
    raw_close(&b);

    hm_replay_result res = replay_file(path);
    assert_replays_cleanly(path, &res);
    assert_int_equal(res.lost, 2);
    assert_int_equal(res.implied, 2);
    assert_int_equal(res.calls, 11);

    /* The reducer on it: a host failing the commit in the region the implied release made room for. */
    hm_trace *t, *small = NULL;
    assert_int_equal(hm_trace_load(path, &t), S_OK);
    hm_replay_options opts = {.factory = failing_commit, .factory_ctx = (void *)"VirtualAlloc,op=commit,nth=2"};
    hm_reduce_stats stats;
    assert_int_equal(HostMemReduce(t, &opts, &small, &stats), S_OK);
    assert_int_equal(small->count, 4); /* both reservations and their commits (the fault counts commits) */
    assert_int_equal(small->calls[2].mem.handle, 2);
    assert_int_equal(small->calls[3].addr.handle, 2);
    assert_int_equal(small->calls[3].method, HM_METHOD_VIRTUAL_ALLOC);
    hm_trace_free(small);
    hm_trace_free(t);
}

/* Without a lost call nothing is implied: a host that hands out a live region's address again is what the trace
 * shows, and a correct host differs from it. */
static void test_nothing_implied_without_loss(void **state)
{
    (void)state;
    const char *path = tmp_path("no-loss.raw");
    raw_builder b = raw_open(path);
    raw_alloc(&b, 0, 0x10000, MEM_RESERVE, PAGE_NOACCESS, R);
    raw_alloc(&b, 0, 0x10000, MEM_RESERVE, PAGE_NOACCESS, R);
    raw_close(&b);
    hm_replay_result res = replay_file(path);
    assert_int_equal(res.lost, 0);
    assert_int_equal(res.implied, 0);
    assert_true(res.diverged);
    assert_string_equal(res.field, "mem");
}

/* ---- Threads ---------------------------------------------------------------------------------------------- */
/* A correct host that yields the processor after each address-space call: the window between a call's effect and
 * its record, where another thread's call can come between them, is then as wide as a preemption. */
typedef struct yielding {
    IHostMemoryManager iface;
    atomic_int refs;
    IHostMemoryManager *inner;
    bool notify_on_register; /* tells a callback the memory state at once, inside its registration */
} yielding;
static inline yielding *impl_from_IHostMemoryManager(IHostMemoryManager *iface)
{
    return HM_CONTAINER_OF(iface, yielding, iface);
}
static IHostMemoryManager *inner_of(IHostMemoryManager *i) { return impl_from_IHostMemoryManager(i)->inner; }
static HRESULT STDMETHODCALLTYPE y_qi(IHostMemoryManager *i, REFIID r, void **p)
{
    return IHostMemoryManager_QueryInterface(inner_of(i), r, p);
}
static ULONG STDMETHODCALLTYPE y_addref(IHostMemoryManager *i) { return (ULONG)++impl_from_IHostMemoryManager(i)->refs; }
static ULONG STDMETHODCALLTYPE y_release(IHostMemoryManager *i)
{
    yielding *y = impl_from_IHostMemoryManager(i);
    int refs = --y->refs;
    if (refs == 0) {
        IHostMemoryManager_Release(y->inner);
        free(y);
    }
    return (ULONG)refs;
}
static HRESULT yielded(HRESULT hr)
{
    sched_yield();
    return hr;
}
static HRESULT STDMETHODCALLTYPE y_create(IHostMemoryManager *i, DWORD t, IHostMalloc **pp)
{
    return IHostMemoryManager_CreateMalloc(inner_of(i), t, pp);
}
static HRESULT STDMETHODCALLTYPE y_alloc(IHostMemoryManager *i, void *a, SIZE_T s, DWORD t, DWORD p,
                                         EMemoryCriticalLevel l, void **pp)
{
    return yielded(IHostMemoryManager_VirtualAlloc(inner_of(i), a, s, t, p, l, pp));
}
static HRESULT STDMETHODCALLTYPE y_free(IHostMemoryManager *i, LPVOID a, SIZE_T s, DWORD t)
{
    return yielded(IHostMemoryManager_VirtualFree(inner_of(i), a, s, t));
}
static HRESULT STDMETHODCALLTYPE y_query(IHostMemoryManager *i, void *a, void *b, SIZE_T n, SIZE_T *r)
{
    return yielded(IHostMemoryManager_VirtualQuery(inner_of(i), a, b, n, r));
}
static HRESULT STDMETHODCALLTYPE y_protect(IHostMemoryManager *i, void *a, SIZE_T s, DWORD p, DWORD *o)
{
    return yielded(IHostMemoryManager_VirtualProtect(inner_of(i), a, s, p, o));
}
static HRESULT STDMETHODCALLTYPE y_load(IHostMemoryManager *i, DWORD *l, SIZE_T *a)
{
    return IHostMemoryManager_GetMemoryLoad(inner_of(i), l, a);
}
static HRESULT STDMETHODCALLTYPE y_register(IHostMemoryManager *i, ICLRMemoryNotificationCallback *c)
{
    HRESULT hr = IHostMemoryManager_RegisterMemoryNotificationCallback(inner_of(i), c);
    if (SUCCEEDED(hr) && c && impl_from_IHostMemoryManager(i)->notify_on_register)
        ICLRMemoryNotificationCallback_OnMemoryNotification(c, eMemoryAvailableNeutral);
    return hr;
}
static HRESULT STDMETHODCALLTYPE y_needs(IHostMemoryManager *i, LPVOID a, SIZE_T s)
{
    return IHostMemoryManager_NeedsVirtualAddressSpace(inner_of(i), a, s);
}
static HRESULT STDMETHODCALLTYPE y_acquired(IHostMemoryManager *i, LPVOID a, SIZE_T s)
{
    return IHostMemoryManager_AcquiredVirtualAddressSpace(inner_of(i), a, s);
}
static HRESULT STDMETHODCALLTYPE y_released(IHostMemoryManager *i, LPVOID a)
{
    return IHostMemoryManager_ReleasedVirtualAddressSpace(inner_of(i), a);
}
static const IHostMemoryManagerVtbl yielding_vtbl = {y_qi,    y_addref, y_release,  y_create, y_alloc,
                                                     y_free,  y_query,  y_protect,  y_load,   y_register,
                                                     y_needs, y_acquired, y_released};

static IHostMemoryManager *recorded_yielding(const char *path, bool notify_on_register)
{
    yielding *y = calloc(1, sizeof *y);
    assert_non_null(y);
    y->iface.lpVtbl = &yielding_vtbl;
    atomic_init(&y->refs, 1);
    y->notify_on_register = notify_on_register;
    assert_int_equal(HostMemCreateBuiltinManager("deterministic=1,backend=sim", &y->inner), S_OK);
    IHostMemoryManager *m = NULL;
    unlink(path); /* the recorder refuses to overwrite a trace: each seed records afresh */
    assert_int_equal(HostMemWrapRecorder(&y->iface, path, &m), S_OK);
    IHostMemoryManager_Release(&y->iface);
    return m;
}

enum { THREADS = 8, ROUNDS = 30, SEEDS = 3, SHARED_PAGES = 4 * THREADS };

typedef struct workload {
    IHostMemoryManager *m;
    int rounds;
    IHostMalloc *shared_heap;
    char *shared; /* one reservation all threads commit in, each on its own pages next to its neighbours' */
    unsigned seed;
} workload;

typedef struct worker_arg {
    workload *w;
    unsigned index;
} worker_arg;

/* What a runtime's threads do at once: their own reservations and heaps, the shared heap, and pages of one
 * reservation, whose query answers (the region size) depend on the neighbours' pages. */
static void *worker(void *arg)
{
    worker_arg *a = arg;
    IHostMemoryManager *m = a->w->m;
    unsigned s = a->w->seed * 7919u + a->index * 104729u + 1;
    IHostMalloc *own = NULL;
    MEMORY_BASIC_INFORMATION mbi;
    SIZE_T got;
    DWORD old;
    for (int i = 0; i < a->w->rounds; i++) {
        s = s * 1103515245u + 12345u;
        void *r = NULL, *c = NULL, *block = NULL, *mine = NULL;
        if (FAILED(IHostMemoryManager_VirtualAlloc(m, NULL, (1 + (s >> 16) % 4) * 0x10000, MEM_RESERVE,
                                                   PAGE_NOACCESS, eTaskCritical, &r)))
            continue;
        IHostMemoryManager_VirtualAlloc(m, r, PAGE, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &c);
        IHostMemoryManager_VirtualQuery(m, (char *)r + 8, &mbi, sizeof mbi, &got);
        IHostMemoryManager_VirtualProtect(m, r, PAGE, PAGE_READONLY, &old);
        char *page = a->w->shared + (size_t)(a->index * 4 + (s >> 8) % 4) * PAGE;
        IHostMemoryManager_VirtualAlloc(m, page, PAGE, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &c);
        IHostMemoryManager_VirtualQuery(m, page, &mbi, sizeof mbi, &got);
        IHostMalloc_Alloc(a->w->shared_heap, 16 + (s >> 4) % 200, eTaskCritical, &block);
        if ((s >> 12) % 4 == 0) {
            if (own)
                IHostMalloc_Release(own); /* with a block still in it */
            own = NULL;
            IHostMemoryManager_CreateMalloc(m, MALLOC_THREADSAFE, &own);
        }
        if (own)
            IHostMalloc_Alloc(own, 32 + (s >> 14) % 6000, eTaskCritical, &mine);
        IHostMemoryManager_VirtualFree(m, page, PAGE, MEM_DECOMMIT);
        IHostMemoryManager_VirtualQuery(m, page, &mbi, sizeof mbi, &got);
        if (block)
            IHostMalloc_Free(a->w->shared_heap, block);
        if (mine && (s >> 20) % 2)
            IHostMalloc_Free(own, mine);
        IHostMemoryManager_VirtualFree(m, r, 0, MEM_RELEASE);
    }
    if (own)
        IHostMalloc_Release(own);
    return NULL;
}

/* Records THREADS threads doing `rounds` rounds each; with ready >= 0 (a forked child), says so on that descriptor
 * once they run and waits there to be killed. */
static void record_threads_signalling(const char *path, unsigned seed, int rounds, int ready)
{
    workload w = {recorded_yielding(path, false), rounds, NULL, NULL, seed};
    assert_int_equal(IHostMemoryManager_CreateMalloc(w.m, MALLOC_THREADSAFE, &w.shared_heap), S_OK);
    assert_int_equal(IHostMemoryManager_VirtualAlloc(w.m, NULL, SHARED_PAGES * PAGE, MEM_RESERVE, PAGE_NOACCESS,
                                                     eTaskCritical, (void **)&w.shared), S_OK);
    pthread_t th[THREADS];
    worker_arg args[THREADS];
    for (unsigned i = 0; i < THREADS; i++) {
        args[i] = (worker_arg){&w, i};
        assert_int_equal(pthread_create(&th[i], NULL, worker, &args[i]), 0);
    }
    if (ready >= 0) {
        char one = 1;
        if (write(ready, &one, 1) != 1)
            _exit(4);
        for (;;)
            pause();
    }
    for (unsigned i = 0; i < THREADS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    IHostMemoryManager_VirtualFree(w.m, w.shared, 0, MEM_RELEASE);
    IHostMalloc_Release(w.shared_heap);
    IHostMemoryManager_Release(w.m);
}

static void record_threads(const char *path, unsigned seed, int rounds)
{
    record_threads_signalling(path, seed, rounds, -1);
}

/* Recordings of 8 threads on a correct host replay on it without a divergence, seed after seed. */
static void test_threads_replay_cleanly(void **state)
{
    (void)state;
    unsigned diverged = 0;
    char first[sizeof ((hm_replay_result *)0)->report + 32] = "";
    for (unsigned seed = 1; seed <= SEEDS; seed++) {
        const char *path = tmp_path("threads.raw");
        record_threads(path, seed, ROUNDS);
        hm_replay_result res = replay_file(path);
        assert_int_equal(res.lost, 0);
        assert_true(res.diverged || res.calls > THREADS * ROUNDS * 10);
        if (res.diverged && !diverged++)
            snprintf(first, sizeof first, "seed %u: %s", seed, res.report);
    }
    if (diverged)
        fail_msg("%u of %d recordings diverged; the first:\n%s", diverged, SEEDS, first);
}

/* A process recording those threads is killed with SIGKILL at a moment that varies from run to run: each trace
 * replays without a divergence (a release in flight may be lost; a later call proving it implies it). */
static void test_killed_threads_replay_cleanly(void **state)
{
    (void)state;
    enum { RUNS = 10 };
    unsigned diverged = 0;
    uint64_t lost = 0, implied = 0;
    char first[sizeof ((hm_replay_result *)0)->report + 32] = "";
    for (unsigned run = 0; run < RUNS; run++) {
        const char *path = tmp_path("killed-threads.raw");
        int fd;
        pid_t pid = fork_with_pipe(&fd);
        if (pid == 0) {
            record_threads_signalling(path, run, 1 << 30, fd);
            _exit(5);
        }
        char one;
        assert_int_equal(read(fd, &one, 1), 1);
        close(fd);
        usleep(1000 + 1000 * (run % 8)); /* 1 to 8 ms of recording */
        kill(pid, SIGKILL);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status));
        hm_replay_result res = replay_file(path);
        lost += res.lost;
        implied += res.implied;
        if (res.diverged && !diverged++)
            snprintf(first, sizeof first, "run %u: %s", run, res.report);
    }
    print_message("%d killed recordings: %" PRIu64 " gap(s) of lost calls, %" PRIu64 " release(s) implied\n", RUNS,
                  lost, implied);
    if (diverged)
        fail_msg("%u of %d killed recordings diverged; the first:\n%s", diverged, RUNS, first);
}

/* The reducer works on such a trace (a short one: ddmin replays it many times): a host failing a commit is found
 * again in a small trace. */

static void test_reduce_threaded_trace(void **state)
{
    (void)state;
    const char *path = tmp_path("threads-reduce.raw");
    record_threads(path, 11, 2);
    hm_trace *t, *small = NULL;
    assert_int_equal(hm_trace_load(path, &t), S_OK);
    hm_replay_options opts = {.factory = failing_commit, .factory_ctx = (void *)"VirtualAlloc,op=commit,nth=12"};
    hm_replay_result res;
    assert_int_equal(HostMemReplayTrace(t, &opts, &res), S_OK);
    assert_true(res.diverged);
    hm_reduce_stats stats;
    assert_int_equal(HostMemReduce(t, &opts, &small, &stats), S_OK);
    assert_true(small->count < t->count);
    hm_replay_result again;
    assert_int_equal(HostMemReplayTrace(small, &opts, &again), S_OK);
    assert_true(again.diverged);
    assert_string_equal(again.field, res.field);
    assert_string_equal(again.expected, res.expected);
    hm_trace_free(small);
    hm_trace_free(t);
}

/* ---- Incomplete traces ----------------------------------------------------------------------------------- */
/* A trace whose recording stopped early (a killed or full-disk recorder) keeps its mark in memory (hm_trace_load),
 * through reduction (HostMemReduce) and in the replay of a trace in memory (HostMemReplayTrace), in both encodings a
 * trace is kept in; without the mark nothing says the run's end was never checked. The third call's recorded old
 * protection is wrong (the built-in manager says PAGE_READWRITE): a divergence to reduce. */
#define INCOMPLETE_REASON "writing the trace failed: No space left on device"
static const char incomplete_calls[] =
    "hostmem-trace 1\n"
    "1 t1 VirtualAlloc addr=0 size=0x10000 type=MEM_RESERVE prot=PAGE_NOACCESS level=task -> S_OK mem=@1\n"
    "2 t1 GetMemoryLoad -> S_OK load=0 available=0x1000000\n"
    "3 t1 VirtualAlloc addr=@1 size=0x1000 type=MEM_COMMIT prot=PAGE_READWRITE level=task -> S_OK mem=@1\n"
    "4 t1 VirtualProtect addr=@1 size=0x1000 prot=PAGE_READONLY -> S_OK old=PAGE_NOACCESS\n";
static const char incomplete_mark[] = "#! incomplete: recording stopped after 4 calls: " INCOMPLETE_REASON "\n";

/* Writes the calls (and the mark, when marked) as a trace in `encoding`, through the reader and the writer. */
static const char *write_incomplete_case(const char *name, hm_trace_encoding encoding, bool marked)
{
    const char *text = tmp_path("incomplete-source.trace");
    char buf[2048];
    snprintf(buf, sizeof buf, "%s%s", incomplete_calls, marked ? incomplete_mark : "");
    write_file(text, buf, strlen(buf));
    if (encoding == HM_TRACE_TEXT)
        return text;
    const char *out = tmp_path(name);
    hm_trace_reader *r;
    hm_trace_writer *w;
    assert_int_equal(hm_trace_open(text, &r), S_OK);
    assert_int_equal(hm_trace_writer_open(out, encoding, &w), S_OK);
    hm_trace_call c;
    while (hm_trace_next(r, &c) == 1)
        assert_int_equal(hm_trace_write(w, &c), S_OK);
    uint64_t calls;
    const char *why;
    if (hm_trace_reader_incomplete(r, &calls, &why))
        assert_int_equal(hm_trace_write_incomplete(w, calls, why), S_OK);
    hm_trace_close(r);
    assert_int_equal(hm_trace_writer_close(w), S_OK);
    return out;
}

static void assert_mark(int incomplete, uint64_t calls, const char *reason, bool marked)
{
    assert_int_equal(incomplete, marked);
    assert_int_equal(calls, marked ? 4 : 0);
    assert_string_equal(reason, marked ? INCOMPLETE_REASON : "");
}

static void test_incomplete_mark_kept(void **state)
{
    (void)state;
    static const struct {
        hm_trace_encoding encoding;
        bool marked;
    } cases[] = {{HM_TRACE_TEXT, true}, {HM_TRACE_BINARY, true}, {HM_TRACE_TEXT, false}, {HM_TRACE_BINARY, false}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *path = write_incomplete_case("incomplete.bin", cases[i].encoding, cases[i].marked);
        hm_trace *t, *small = NULL;
        assert_int_equal(hm_trace_load(path, &t), S_OK);
        assert_int_equal(t->count, 4);
        assert_mark(t->incomplete, t->incomplete_calls, t->incomplete_reason, cases[i].marked);

        hm_replay_result res;
        assert_int_equal(HostMemReplayTrace(t, NULL, &res), S_OK);
        assert_true(res.diverged);
        assert_mark(res.incomplete, res.incomplete_calls, res.incomplete_reason, cases[i].marked);
        /* The streamed replay of the file says the same, though it stops running calls at the divergence. */
        hm_replay_result streamed;
        assert_int_equal(HostMemReplay(path, NULL, &streamed), S_OK);
        assert_true(streamed.diverged);
        assert_mark(streamed.incomplete, streamed.incomplete_calls, streamed.incomplete_reason, cases[i].marked);

        hm_reduce_stats stats;
        assert_int_equal(HostMemReduce(t, NULL, &small, &stats), S_OK);
        assert_int_equal(small->count, 3); /* the GetMemoryLoad goes */
        assert_mark(small->incomplete, small->incomplete_calls, small->incomplete_reason, cases[i].marked);
        hm_replay_result again;
        assert_int_equal(HostMemReplayTrace(small, NULL, &again), S_OK);
        assert_true(again.diverged);
        assert_mark(again.incomplete, again.incomplete_calls, again.incomplete_reason, cases[i].marked);
        hm_trace_free(small);
        hm_trace_free(t);
    }
}

/* ---- Callbacks ------------------------------------------------------------------------------------------- */
/* A host may tell a callback the memory state inside its registration (or another thread may, before the
 * registration returns): the registration still comes first in the trace, so the trace converts to text and
 * reads back (a callback must be registered before it is named). */
static void test_registration_before_its_notifications(void **state)
{
    (void)state;
    const char *raw = tmp_path("register.raw"), *text = tmp_path("register.txt");
    IHostMemoryManager *m = recorded_yielding(raw, true);
    hm_counting_callback cb = HM_COUNTING_CALLBACK_INIT;
    assert_int_equal(IHostMemoryManager_RegisterMemoryNotificationCallback(m, &cb.iface), S_OK);
    IHostMemoryManager_Release(m);
    assert_int_equal(cb.count, 1);
    hm_trace *t;
    assert_int_equal(hm_trace_load(raw, &t), S_OK);
    assert_int_equal(t->count, 2);
    assert_int_equal(t->calls[0].method, HM_METHOD_REGISTER_CALLBACK);
    assert_int_equal(t->calls[1].method, HM_TRACE_ON_NOTIFICATION);
    hm_trace_writer *w;
    assert_int_equal(hm_trace_writer_open(text, HM_TRACE_TEXT, &w), S_OK);
    for (size_t k = 0; k < t->count; k++)
        assert_int_equal(hm_trace_write(w, &t->calls[k]), S_OK);
    assert_int_equal(hm_trace_writer_close(w), S_OK);
    hm_trace_free(t);
    assert_int_equal(hm_trace_load(text, &t), S_OK);
    hm_trace_free(t);
}

/* ---- `concurrent` in the text and binary encodings -------------------------------------------------------- */
static void test_concurrent_round_trip(void **state)
{
    (void)state;
    const char *text = tmp_path("concurrent.txt"), *bin = tmp_path("concurrent.bin"), *back = tmp_path("back.txt");
    static const char trace[] =
        "hostmem-trace 1\n"
        "1 t1 VirtualAlloc addr=0 size=0x10000 type=MEM_RESERVE prot=PAGE_NOACCESS level=task -> S_OK mem=@1\n"
        "2 t2 VirtualQuery addr=@1 length=48 -> S_OK result=48 base=@1 allocbase=@1 allocprot=PAGE_NOACCESS "
        "regionsize=0x2000 state=MEM_RESERVE protect=0 memtype=MEM_PRIVATE concurrent=1\n";
    FILE *f = fopen(text, "wb");
    assert_non_null(f);
    fputs(trace, f);
    fclose(f);
    const char *in = text;
    const char *outs[] = {bin, back};
    hm_trace_encoding encodings[] = {HM_TRACE_BINARY, HM_TRACE_TEXT};
    for (int i = 0; i < 2; i++) {
        hm_trace *t;
        assert_int_equal(hm_trace_load(in, &t), S_OK);
        assert_int_equal(t->count, 2);
        assert_int_equal(t->calls[0].concurrent, 0);
        assert_int_equal(t->calls[1].concurrent, 1);
        hm_trace_writer *w;
        assert_int_equal(hm_trace_writer_open(outs[i], encodings[i], &w), S_OK);
        for (size_t k = 0; k < t->count; k++)
            assert_int_equal(hm_trace_write(w, &t->calls[k]), S_OK);
        assert_int_equal(hm_trace_writer_close(w), S_OK);
        hm_trace_free(t);
        in = outs[i];
    }
    f = fopen(back, "rb");
    assert_non_null(f);
    char *all = calloc(1, 4096);
    assert_non_null(all);
    assert_true(fread(all, 1, 4095, f) > 0);
    fclose(f);
    assert_non_null(strstr(all, "memtype=MEM_PRIVATE concurrent=1\n"));
    assert_null(strstr(all, "@1 concurrent")); /* not on the VirtualAlloc line */
    free(all);
    /* A concurrent query replays without comparing its answer (here it could not match: regionsize is wrong). */
    hm_replay_result res;
    assert_int_equal(HostMemReplay(text, NULL, &res), S_OK);
    assert_false(res.diverged);
    assert_int_equal(res.concurrent, 1);

    static const struct {
        const char *line, *error;
    } bad[] = {
        {"1 t1 VirtualAlloc addr=0 size=0x1000 type=MEM_RESERVE prot=PAGE_NOACCESS level=task -> S_OK mem=@1 "
         "concurrent=1",
         "unknown result key 'concurrent'"},
        {"1 t1 VirtualQuery addr=0x1000 length=48 -> S_OK result=48 concurrent=2", "field 'concurrent': bad number"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        hm_trace_call c;
        char err[256];
        assert_int_equal(hm__trace_parse_line(bad[i].line, strlen(bad[i].line), &c, err, sizeof err), -1);
        if (!strstr(err, bad[i].error))
            fail_msg("'%s': got '%s', expected '%s'", bad[i].line, err, bad[i].error);
    }
}

/* ---- Which recorded failures replay injects, and what reduce keeps ------------------------------------------ */
/* Only a failure for want of resources is injected: any other recorded failure is the host's own answer to the
 * call, which replay must get from the host. A call Windows accepts, recorded as failed, replayed on the built-in
 * manager (which accepts it): an injected result matches, any other diverges (else a host accepting bad
 * arguments would pass). */
#define GOOD_ALLOC "1 t1 VirtualAlloc addr=0 size=0x1000 type=MEM_COMMIT|MEM_RESERVE prot=PAGE_READWRITE level=task"

static void test_only_resource_failures_injected(void **state)
{
    (void)state;
    static const struct {
        const char *hr;  /* as written in the trace */
        HRESULT value;
        bool injected;
    } cases[] = {
        {"0x8007000E", E_OUTOFMEMORY, true},
        {"0x80070008", HM_E_NOT_ENOUGH_MEMORY, true},
        {"0x80004005", E_FAIL, true},
        {"0x80070057", E_INVALIDARG, false},
        {"0x800701E7", HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS), false},
        {"0x80004003", E_POINTER, false},
    };
    const char *path = tmp_path("recorded-failure.trace");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[256];
        snprintf(text, sizeof text, "hostmem-trace 1\n" GOOD_ALLOC " -> %s mem=0\n", cases[i].hr);
        write_file(path, text, strlen(text));
        hm_replay_result res = replay_file(path);
        assert_int_equal(res.injected, cases[i].injected);
        assert_int_equal(res.diverged, !cases[i].injected);
        if (!cases[i].injected) {
            char want[160];
            snprintf(want, sizeof want, "VirtualAlloc: hr %s recorded, S_OK on this host", hm_hr_name(cases[i].value));
            assert_string_equal(res.signature, want);
        }
        HostMemReplayFree(&res);
    }
}

/* A trace that replays cleanly: reduce keeps its last injected failure, named an OOM only when it is one; a
 * recorded E_INVALIDARG (the host refusing a bad protection, as it does again) is no failure to keep. */
#define RESERVE "1 t1 VirtualAlloc addr=0 size=0x10000 type=MEM_RESERVE prot=PAGE_NOACCESS level=task -> S_OK mem=@1\n"
#define BAD_PROT_REFUSED(seq)                                                                                          \
    seq " t1 VirtualAlloc addr=0 size=0x1000 type=MEM_COMMIT|MEM_RESERVE "                                            \
        "prot=PAGE_NOACCESS|PAGE_READWRITE|PAGE_EXECUTE_READWRITE|PAGE_GUARD|PAGE_NOCACHE|0x12000 level=task "        \
        "-> E_INVALIDARG mem=0\n"

static void test_reduce_names_only_an_oom(void **state)
{
    (void)state;
    static const struct {
        const char *calls;
        HRESULT hr;           /* of HostMemReduce */
        const char *failure;  /* how stats.failure starts */
    } cases[] = {
        /* an OOM, then a refused bad call: the OOM is kept, not the last failure */
        {RESERVE "2 t1 VirtualAlloc addr=@1 size=0x1000 type=MEM_COMMIT prot=PAGE_READWRITE level=task "
                 "-> E_OUTOFMEMORY mem=0\n" BAD_PROT_REFUSED("3"),
         S_OK, "oom-reproduced: call 2 VirtualAlloc (level 0) fails with E_OUTOFMEMORY (injected)"},
        /* only a refused bad call: nothing to keep */
        {RESERVE BAD_PROT_REFUSED("2"), E_INVALIDARG, NULL},
        /* E_FAIL is injected (a resource failure), but it is not an out-of-memory */
        {RESERVE "2 t1 VirtualAlloc addr=@1 size=0x1000 type=MEM_COMMIT prot=PAGE_READWRITE level=task "
                 "-> E_FAIL mem=0\n",
         S_OK, "failure-reproduced: call 2 VirtualAlloc (level 0) fails with E_FAIL (injected)"},
    };
    const char *path = tmp_path("reduce-failure.trace");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[1024];
        snprintf(text, sizeof text, "hostmem-trace 1\n%s", cases[i].calls);
        write_file(path, text, strlen(text));
        hm_trace *t, *small = NULL;
        assert_int_equal(hm_trace_load(path, &t), S_OK);
        hm_reduce_stats stats;
        assert_int_equal(HostMemReduce(t, NULL, &small, &stats), cases[i].hr);
        if (cases[i].failure)
            assert_string_equal(stats.failure, cases[i].failure);
        else
            assert_null(small);
        hm_trace_free(small);
        hm_trace_free(t);
    }
}

/* ---- A host that answered S_OK without a heap ------------------------------------------------------------- */
/* A raw trace (what a crashed recording leaves) of a CreateMalloc that succeeded with no heap: every encoding reads
 * it (text writes heap=0), the same call, and replay reports the recorded host's bug at that call. */
static void test_create_malloc_ok_without_heap(void **state)
{
    (void)state;
    const char *raw = tmp_path("no-heap.raw");
    raw_builder b = raw_open(raw);
    raw_heap(&b, HM_METHOD_CREATE_MALLOC, 0, 0, 0, true); /* S_OK, heap id 0: *ppMalloc was NULL */
    raw_close(&b);
    static const hm_trace_encoding encodings[] = {HM_TRACE_RAW, HM_TRACE_TEXT, HM_TRACE_BINARY};
    for (size_t i = 0; i < sizeof encodings / sizeof encodings[0]; i++) {
        const char *path = raw;
        if (encodings[i] != HM_TRACE_RAW) {
            path = tmp_path(encodings[i] == HM_TRACE_TEXT ? "no-heap.trace" : "no-heap.bin");
            hm_trace_reader *r;
            hm_trace_writer *w;
            assert_int_equal(hm_trace_open(raw, &r), S_OK);
            assert_int_equal(hm_trace_writer_open(path, encodings[i], &w), S_OK);
            hm_trace_call c;
            while (hm_trace_next(r, &c) == 1)
                assert_int_equal(hm_trace_write(w, &c), S_OK);
            hm_trace_close(r);
            assert_int_equal(hm_trace_writer_close(w), S_OK);
        }
        hm_trace *t = NULL;
        if (FAILED(hm_trace_load(path, &t)))
            fail_msg("encoding %zu: %s", i, HostMemLastError());
        assert_int_equal(t->count, 1);
        assert_int_equal(t->calls[0].method, HM_METHOD_CREATE_MALLOC);
        assert_int_equal(t->calls[0].result, S_OK);
        assert_int_equal(t->calls[0].heap, 0);
        hm_trace_free(t);
        hm_replay_result res = replay_file(path);
        assert_true(res.diverged);
        assert_string_equal(res.field, "heap");
        assert_non_null(strstr(res.expected, "S_OK without a heap: the recorded host's bug"));
        HostMemReplayFree(&res);
    }
    /* The text form says heap=0; a succeeded CreateMalloc with no heap field at all is still malformed. */
    char line[HM_TRACE_LINE_MAX];
    hm_trace_call c;
    hm__trace_call_init(&c);
    c.seq = 1, c.thread = 1, c.method = HM_METHOD_CREATE_MALLOC, c.result = S_OK, c.level = -1;
    hm_trace_format_call(&c, line, sizeof line);
    assert_non_null(strstr(line, "-> S_OK heap=0"));
    const char *bad = tmp_path("no-heap-field.trace");
    const char text[] = "hostmem-trace 1\n1 t1 CreateMalloc type=0 -> S_OK\n";
    write_file(bad, text, strlen(text));
    hm_trace *t = NULL;
    assert_int_equal(hm_trace_load(bad, &t), E_INVALIDARG);
    assert_non_null(strstr(HostMemLastError(), "field 'heap': missing"));
}

/* A built-in manager whose CreateMalloc answers S_OK and no heap: its vtable swapped for a copy (the other methods
 * are the built-in's own, on the same object). */
static IHostMemoryManagerVtbl no_heap_vtbl;
static HRESULT STDMETHODCALLTYPE no_heap_create(IHostMemoryManager *self, DWORD type, IHostMalloc **out)
{
    (void)self, (void)type;
    if (out)
        *out = NULL;
    return S_OK;
}

static HRESULT no_heap_host(void *ctx, IHostMemoryManager **out)
{
    (void)ctx;
    HRESULT hr = HostMemCreateBuiltinManager(HM_REPLAY_BUILTIN_OPTIONS, out);
    if (FAILED(hr))
        return hr;
    no_heap_vtbl = *(*out)->lpVtbl;
    no_heap_vtbl.CreateMalloc = no_heap_create;
    (*out)->lpVtbl = &no_heap_vtbl;
    return S_OK;
}

/* A replay host doing it diverges at its CreateMalloc, whatever the trace recorded there. */
static void test_replay_host_ok_without_heap(void **state)
{
    (void)state;
    static const struct {
        const char *heap, *recorded;
    } cases[] = {{"h1", "h1"}, {"0", "NULL (S_OK without a heap)"}};
    const char *path = tmp_path("heap-made.trace");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[256];
        snprintf(text, sizeof text, "hostmem-trace 1\n1 t1 CreateMalloc type=MALLOC_THREADSAFE -> S_OK heap=%s\n",
                 cases[i].heap);
        write_file(path, text, strlen(text));
        hm_replay_options opts = {.factory = no_heap_host};
        hm_replay_result res;
        assert_int_equal(HostMemReplay(path, &opts, &res), S_OK);
        assert_true(res.diverged);
        assert_string_equal(res.field, "heap");
        assert_string_equal(res.expected, cases[i].recorded);
        assert_string_equal(res.actual, "NULL (S_OK without a heap: this host's bug)");
        assert_string_equal(res.signature, "CreateMalloc: field heap");
        HostMemReplayFree(&res);
    }
}

static int setup(void **state)
{
    (void)state;
    return tmp_dir_create("hostmem-replay");
}

static int teardown(void **state)
{
    (void)state;
    return tmp_dir_remove();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_relocation_prefers_what_is_live),
        cmocka_unit_test(test_lost_release_implied),
        cmocka_unit_test(test_nothing_implied_without_loss),
        cmocka_unit_test(test_threads_replay_cleanly),
        cmocka_unit_test(test_killed_threads_replay_cleanly),
        cmocka_unit_test(test_reduce_threaded_trace),
        cmocka_unit_test(test_incomplete_mark_kept),
        cmocka_unit_test(test_registration_before_its_notifications),
        cmocka_unit_test(test_concurrent_round_trip),
        cmocka_unit_test(test_only_resource_failures_injected),
        cmocka_unit_test(test_reduce_names_only_an_oom),
        cmocka_unit_test(test_create_malloc_ok_without_heap),
        cmocka_unit_test(test_replay_host_ok_without_heap),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

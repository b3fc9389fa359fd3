/* hostmem bench, trace part: what recording costs per call, and how fast a long trace replays. */
#include "bench.h"
#include "cli.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static size_t scaled(hm_bench *b, size_t n)
{
    size_t s = (size_t)((double)n * b->scale);
    return s ? s : 1;
}

static IHostMemoryManager *sim_manager(void)
{
    IHostMemoryManager *m = NULL;
    if (FAILED(HostMemCreateBuiltinManager("deterministic=1,backend=sim", &m))) {
        fprintf(stderr, "hostmem bench: cannot create the manager: %s\n", HostMemLastError());
        exit(HM_EXIT_FAIL);
    }
    return m;
}

/* ns per call of a cheap method (VirtualQuery inside a committed region: the recorder's worst case relative to
 * the work done). */
static double query_loop(IHostMemoryManager *m, void *addr, size_t iterations)
{
    MEMORY_BASIC_INFORMATION mbi;
    SIZE_T got;
    double t0 = (double)hm_now_ns();
    for (size_t i = 0; i < iterations; i++)
        IHostMemoryManager_VirtualQuery(m, addr, &mbi, sizeof mbi, &got);
    return ((double)hm_now_ns() - t0) / (double)iterations;
}

static double alloc_free_loop(IHostMemoryManager *m, IHostMalloc *heap, size_t iterations)
{
    double t0 = (double)hm_now_ns();
    for (size_t i = 0; i < iterations; i++) {
        void *p = NULL;
        IHostMalloc_Alloc(heap, 64, eTaskCritical, &p);
        IHostMalloc_Free(heap, p);
    }
    (void)m;
    return ((double)hm_now_ns() - t0) / (double)(2 * iterations);
}

static void bench_recorder(hm_bench *b)
{
    char path[4200];
    hm__bench_temp_path(b, "rec.raw", path, sizeof path);
    size_t n = scaled(b, 2000000);
    double best_bare = 1e9, best_rec = 1e9, best_bare_heap = 1e9, best_rec_heap = 1e9;
    for (int round = 0; round < 3; round++) {
        IHostMemoryManager *bare = sim_manager(), *rec;
        unlink(path); /* the previous round's */
        if (FAILED(HostMemWrapRecorder(bare, path, &rec))) {
            fprintf(stderr, "hostmem bench: %s\n", HostMemLastError());
            exit(HM_EXIT_FAIL);
        }
        void *region = NULL;
        IHostMemoryManager_VirtualAlloc(rec, NULL, 65536, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, eTaskCritical,
                                        &region);
        double t_bare = query_loop(bare, region, n), t_rec = query_loop(rec, region, n);
        best_bare = t_bare < best_bare ? t_bare : best_bare;
        best_rec = t_rec < best_rec ? t_rec : best_rec;
        IHostMalloc *heap_bare = NULL, *heap_rec = NULL;
        IHostMemoryManager_CreateMalloc(bare, MALLOC_THREADSAFE, &heap_bare);
        IHostMemoryManager_CreateMalloc(rec, MALLOC_THREADSAFE, &heap_rec);
        if (heap_bare && heap_rec) {
            double hb = alloc_free_loop(bare, heap_bare, n / 2), hr = alloc_free_loop(rec, heap_rec, n / 2);
            best_bare_heap = hb < best_bare_heap ? hb : best_bare_heap;
            best_rec_heap = hr < best_rec_heap ? hr : best_rec_heap;
        }
        if (heap_bare)
            IHostMalloc_Release(heap_bare);
        if (heap_rec)
            IHostMalloc_Release(heap_rec);
        IHostMemoryManager_Release(rec);
        IHostMemoryManager_Release(bare);
        unlink(path);
    }
    hm__bench_row(b, "trace", "VirtualQuery recorded", best_rec, "bare manager", best_bare, "ns/call", true, 0);
    hm__bench_value(b, "trace", "recorder overhead, VirtualQuery", best_rec - best_bare, "ns/call", true, 50);
    if (best_bare_heap < 1e9) {
        hm__bench_row(b, "trace", "heap Alloc+Free recorded", best_rec_heap, "bare manager", best_bare_heap, "ns/call",
                     true, 0);
        hm__bench_value(b, "trace", "recorder overhead, heap Alloc/Free", best_rec_heap - best_bare_heap, "ns/call", true,
                       50);
    }
}

/* A long trace: one recorded cycle of calls repeated with fresh handles (the deterministic manager gives the same
 * answers each time round, as every cycle frees what it took). */
static bool make_long_trace(hm_bench *b, const char *path, hm_trace_encoding encoding, size_t calls,
                            size_t *written)
{
    char cycle_path[4200];
    hm__bench_temp_path(b, "cycle.raw", cycle_path, sizeof cycle_path);
    IHostMemoryManager *bare = sim_manager(), *m;
    unlink(cycle_path); /* an earlier run's */
    if (FAILED(HostMemWrapRecorder(bare, cycle_path, &m)))
        return false;
    IHostMemoryManager_Release(bare);
    IHostMalloc *heap = NULL;
    IHostMemoryManager_CreateMalloc(m, MALLOC_THREADSAFE, &heap);
    void *region = NULL, *block = NULL;
    MEMORY_BASIC_INFORMATION mbi;
    SIZE_T got;
    DWORD old, load;
    SIZE_T available;
    IHostMemoryManager_VirtualAlloc(m, NULL, 65536, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &region);
    IHostMemoryManager_VirtualQuery(m, (char *)region + 256, &mbi, sizeof mbi, &got);
    IHostMemoryManager_VirtualProtect(m, region, 4096, PAGE_READONLY, &old);
    IHostMalloc_Alloc(heap, 128, eTaskCritical, &block);
    IHostMalloc_Free(heap, block);
    IHostMemoryManager_GetMemoryLoad(m, &load, &available);
    IHostMemoryManager_VirtualFree(m, region, 65536, MEM_DECOMMIT);
    IHostMemoryManager_VirtualFree(m, region, 0, MEM_RELEASE);
    IHostMalloc_Release(heap);
    IHostMemoryManager_Release(m);

    hm_trace *cycle;
    if (FAILED(hm_trace_load(cycle_path, &cycle)))
        return false;
    unlink(cycle_path);
    hm_trace_writer *w;
    if (cycle->count != 10 || FAILED(hm_trace_writer_open(path, encoding, &w))) {
        hm_trace_free(cycle);
        return false;
    }
    uint64_t seq = 0;
    hm_trace_call c = cycle->calls[0]; /* CreateMalloc */
    c.seq = ++seq;
    hm_trace_write(w, &c);
    for (uint32_t round = 1; seq + 8 <= calls; round++) {
        for (size_t i = 1; i <= 8; i++) {
            c = cycle->calls[i];
            c.seq = ++seq;
            if (c.addr.kind != HM_REF_RAW)
                c.addr.handle = round;
            if (c.mem.kind != HM_REF_RAW)
                c.mem.handle = round;
            if (c.has_mbi && c.mbi_base.kind != HM_REF_RAW)
                c.mbi_base.handle = round;
            if (c.has_mbi && c.mbi_alloc_base.kind != HM_REF_RAW)
                c.mbi_alloc_base.handle = round;
            hm_trace_write(w, &c);
        }
    }
    hm_trace_free(cycle);
    *written = seq;
    return SUCCEEDED(hm_trace_writer_close(w));
}

/* ctx: the built-in manager's options. */
static HRESULT builtin_factory(void *ctx, IHostMemoryManager **out)
{
    return HostMemCreateBuiltinManager(ctx, out);
}

static void bench_replay(hm_bench *b, hm_trace_encoding encoding, size_t calls, const char *name, const char *options,
                         double goal)
{
    char path[4200];
    hm__bench_temp_path(b, encoding == HM_TRACE_BINARY ? "long.bin" : "long.txt", path, sizeof path);
    size_t written = 0;
    if (!make_long_trace(b, path, encoding, calls, &written)) {
        fprintf(stderr, "hostmem bench: cannot make the long trace: %s\n", HostMemLastError());
        unlink(path);
        return;
    }
    hm_replay_options opts = {0};
    opts.factory = builtin_factory;
    opts.factory_ctx = (void *)options;
    hm_replay_result res;
    double t0 = (double)hm_now_ns();
    HRESULT hr = HostMemReplay(path, &opts, &res);
    double seconds = ((double)hm_now_ns() - t0) / 1e9;
    unlink(path);
    if (FAILED(hr) || res.diverged || res.calls != written) {
        fprintf(stderr, "hostmem bench: the long trace did not replay cleanly: %s%s\n", res.error, res.report);
        HostMemReplayFree(&res);
        b->goals_missed++;
        return;
    }
    HostMemReplayFree(&res);
    char label[128];
    snprintf(label, sizeof label, "replay %s, %zu calls (sim%s)", name, written,
             strstr(options, "zero=heaps") ? ", zero=heaps" : "");
    hm__bench_value(b, "trace", label, (double)written / seconds / 1e6, "Mcalls/s", false, goal);
}

void hm__bench_trace(hm_bench *b)
{
    bench_recorder(b);
    /* What hostmem replay runs on, then the same with every decommit cleared (as a fuzz target needs). */
    bench_replay(b, HM_TRACE_BINARY, scaled(b, 10000000), "binary", HM_REPLAY_BUILTIN_OPTIONS, 2.0);
    bench_replay(b, HM_TRACE_BINARY, scaled(b, 10000000), "binary", "deterministic=1,backend=sim", 0);
    bench_replay(b, HM_TRACE_TEXT, scaled(b, 1000000), "text", HM_REPLAY_BUILTIN_OPTIONS, 0);
}

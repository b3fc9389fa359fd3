/* hostmem bench, heaps: small-object Alloc/Free throughput (sizes 8-1024, ~10 000 live blocks) of IHostMalloc
 * against glibc malloc and, when installed, jemalloc and mimalloc, running the same operation sequence. */
#include "bench.h"

#include <hostmem/hostmem.h>

#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define LIVE 10000

typedef struct allocator {
    const char *name;
    void *(*alloc)(void *ctx, size_t size);
    void (*release)(void *ctx, void *p);
    void *ctx;
} allocator;

static void *heap_alloc(void *ctx, size_t size)
{
    void *p;
    return IHostMalloc_Alloc((IHostMalloc *)ctx, size, eTaskCritical, &p) == S_OK ? p : NULL;
}
static void heap_release(void *ctx, void *p) { IHostMalloc_Free((IHostMalloc *)ctx, p); }
static void *libc_alloc(void *ctx, size_t size) { (void)ctx; return malloc(size); }
static void libc_release(void *ctx, void *p) { (void)ctx; free(p); }

/* A library's malloc/free loaded with dlopen, so hostmem does not depend on it. */
typedef struct foreign {
    void *(*alloc)(size_t);
    void (*release)(void *);
} foreign;
static void *foreign_alloc(void *ctx, size_t size) { return ((foreign *)ctx)->alloc(size); }
static void foreign_release(void *ctx, void *p) { ((foreign *)ctx)->release(p); }

static bool load_foreign(hm_bench *b, const char *lib, const char *alloc_sym, const char *free_sym, foreign *out)
{
    void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        if (!b->json)
            fprintf(b->out, "heap     (%s not measured: %s)\n", lib, dlerror());
        return false;
    }
    out->alloc = (void *(*)(size_t))(uintptr_t)dlsym(h, alloc_sym);
    out->release = (void (*)(void *))(uintptr_t)dlsym(h, free_sym);
    return out->alloc && out->release;
}

typedef struct run_arg {
    const allocator *a;
    size_t steps;
    uint64_t seed;
    double ns;
} run_arg;

/* Replace a random live block with a new one of a random size, `steps` times; the sequence depends on the seed only. */
static void *workload(void *p)
{
    run_arg *r = p;
    void **live = calloc(LIVE, sizeof *live);
    uint64_t s = r->seed;
    for (size_t i = 0; i < LIVE; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        live[i] = r->a->alloc(r->a->ctx, 8 + (size_t)((s >> 33) % 1017));
    }
    double t0 = (double)hm_now_ns();
    for (size_t i = 0; i < r->steps; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        size_t slot = (size_t)(s >> 40) % LIVE;
        r->a->release(r->a->ctx, live[slot]);
        live[slot] = r->a->alloc(r->a->ctx, 8 + (size_t)((s >> 20) % 1017));
        *(volatile char *)live[slot] = 1; /* touch it, as a user would */
    }
    r->ns = (double)hm_now_ns() - t0;
    for (size_t i = 0; i < LIVE; i++)
        r->a->release(r->a->ctx, live[i]);
    free(live);
    return NULL;
}

/* Millions of alloc+free pairs per second with `threads` threads. */
static double throughput(const allocator *a, int threads, size_t steps)
{
    pthread_t t[2];
    run_arg args[2];
    double worst = 0;
    for (int i = 0; i < threads; i++) {
        args[i] = (run_arg){a, steps, 1000 + (uint64_t)i, 0};
        pthread_create(&t[i], NULL, workload, &args[i]);
    }
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
        worst = args[i].ns > worst ? args[i].ns : worst;
    }
    return (double)steps * threads / worst * 1e3; /* Mops/s */
}

static double best_of(const allocator *a, int threads, size_t steps)
{
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        double t = throughput(a, threads, steps);
        best = t > best ? t : best;
    }
    return best;
}

void hm__bench_heap(hm_bench *b)
{
    IHostMemoryManager *m;
    IHostMalloc *safe, *single;
    if (HostMemCreateBuiltinManager("backend=os", &m) != S_OK ||
        IHostMemoryManager_CreateMalloc(m, MALLOC_THREADSAFE, &safe) != S_OK ||
        IHostMemoryManager_CreateMalloc(m, 0, &single) != S_OK) {
        fprintf(stderr, "hostmem bench: cannot create heaps\n");
        exit(1);
    }
    allocator glibc = {"glibc malloc", libc_alloc, libc_release, NULL};
    allocator hm_safe = {"IHostMalloc (thread-safe)", heap_alloc, heap_release, safe};
    allocator hm_single = {"IHostMalloc (single-threaded)", heap_alloc, heap_release, single};
    foreign je, mi;
    bool have_je = load_foreign(b, "libjemalloc.so.2", "malloc", "free", &je);
    bool have_mi = load_foreign(b, "libmimalloc.so.2", "mi_malloc", "mi_free", &mi);
    allocator jemalloc = {"jemalloc", foreign_alloc, foreign_release, &je};
    allocator mimalloc = {"mimalloc", foreign_alloc, foreign_release, &mi};
    size_t steps = (size_t)(2000000 * b->scale) + 1;
    for (int threads = 1; threads <= 2; threads++) {
        double g = best_of(&glibc, threads, steps);
        double jm = have_je ? best_of(&jemalloc, threads, steps) : 0;
        double mm = have_mi ? best_of(&mimalloc, threads, steps) : 0;
        const allocator *ours[] = {&hm_safe, &hm_single};
        for (int k = 0; k < (threads == 1 ? 2 : 1); k++) {
            double v = best_of(ours[k], threads, steps);
            char name[80];
            snprintf(name, sizeof name, "%s, %d thread%s", ours[k]->name, threads, threads > 1 ? "s" : "");
            hm__bench_row(b, "heap", name, v, "glibc malloc", g, "Mops/s", false, 1.0);
            if (have_je)
                hm__bench_row(b, "heap", name, v, "jemalloc", jm, "Mops/s", false, 0);
            if (have_mi)
                hm__bench_row(b, "heap", name, v, "mimalloc", mm, "Mops/s", false, 0.8);
        }
    }
    IHostMalloc_Release(safe);
    IHostMalloc_Release(single);
    IHostMemoryManager_Release(m);
}

/* hostmem stress: many threads hammering a host with a mixed workload, every answer checked against each thread's
 * own model of its reservations and blocks. With --faults, failures are allowed but must change nothing. */
#include "cli.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { OP_RESERVE, OP_COMMIT, OP_DECOMMIT, OP_RELEASE, OP_PROTECT, OP_QUERY, OP_HEAP_ALLOC, OP_HEAP_FREE, OP_LOAD,
       OP_COUNT };
static const char *const op_names[OP_COUNT] = {"reserve", "commit", "decommit", "release", "protect", "query",
                                               "heap alloc", "heap free", "load"};

#define MAX_RES 16
#define PAGES 16
#define MAX_BLOCKS 64
#define HIST_BUCKETS 40 /* log2 nanoseconds */
#define RING 64

typedef struct reservation {
    char *base;
    bool committed[PAGES];
    DWORD protect[PAGES];
    unsigned char fill[PAGES]; /* what each committed page holds in its first and last bytes */
} reservation;

typedef struct block {
    IHostMalloc *heap;
    unsigned char *p;
    size_t size;
    unsigned char fill;
} block;

typedef struct worker {
    int id;
    IHostMemoryManager *m;
    IHostMalloc *shared_heap, *own_heap;
    uint64_t seed, ops_limit;
    reservation res[MAX_RES];
    int nres;
    block blocks[MAX_BLOCKS];
    int nblocks;
    uint64_t ops[OP_COUNT], failures[OP_COUNT];
    uint64_t hist[HIST_BUCKETS];
    char ring[RING][120];
    unsigned ring_at;
    char violation[512];
} worker;

static atomic_bool stop;
static atomic_uint_fast64_t total_ops, total_failures, total_violations;

static uint64_t next_random(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void note(worker *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(worker *w, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->ring[w->ring_at++ % RING], sizeof w->ring[0], fmt, ap);
    va_end(ap);
}

static bool violate(worker *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool violate(worker *w, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->violation, sizeof w->violation, fmt, ap);
    va_end(ap);
    atomic_fetch_add(&total_violations, 1);
    atomic_store(&stop, true);
    return false;
}

static void record(worker *w, int op, HRESULT hr, double ns)
{
    w->ops[op]++;
    if (FAILED(hr))
        w->failures[op]++;
    int b = 0;
    for (uint64_t v = (uint64_t)ns; v > 1 && b < HIST_BUCKETS - 1; v >>= 1)
        b++;
    w->hist[b]++;
}

/* The model's view of page p of r, compared with VirtualQuery. */
static bool verify_page(worker *w, reservation *r, int p)
{
    MEMORY_BASIC_INFORMATION mbi;
    SIZE_T n;
    HRESULT hr = IHostMemoryManager_VirtualQuery(w->m, r->base + p * 4096, &mbi, sizeof mbi, &n);
    if (FAILED(hr))
        return true; /* an injected failure; the query itself changes nothing */
    DWORD want_state = r->committed[p] ? MEM_COMMIT : MEM_RESERVE;
    DWORD want_protect = r->committed[p] ? r->protect[p] : 0;
    if (mbi.State != want_state || mbi.Protect != want_protect || mbi.AllocationBase != r->base)
        return violate(w, "VirtualQuery(%p) gave State %#x Protect %#x AllocationBase %p; the model says %#x %#x %p",
                       (void *)(r->base + p * 4096), mbi.State, mbi.Protect, mbi.AllocationBase, want_state,
                       want_protect, (void *)r->base);
    if (r->committed[p] && (r->protect[p] == PAGE_READWRITE || r->protect[p] == PAGE_READONLY)) {
        unsigned char *page = (unsigned char *)r->base + p * 4096;
        if (page[0] != r->fill[p] || page[4095] != r->fill[p])
            return violate(w, "page %p holds %#x/%#x; it should hold %#x", (void *)page, page[0], page[4095], r->fill[p]);
    }
    return true;
}

static bool step(worker *w)
{
    uint64_t x = next_random(&w->seed);
    int op = (int)(x % 100);
    HRESULT hr = S_OK;
    double t0 = now_ns();
    if (op < 8 && w->nres < MAX_RES) { /* reserve */
        void *p = NULL;
        hr = IHostMemoryManager_VirtualAlloc(w->m, NULL, PAGES * 4096, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &p);
        record(w, OP_RESERVE, hr, now_ns() - t0);
        note(w, "t%d VirtualAlloc(NULL, 0x10000, MEM_RESERVE) -> %s %p", w->id, hm_hr_name(hr), p);
        if (SUCCEEDED(hr)) {
            if (!p || ((uintptr_t)p & 0xFFFF))
                return violate(w, "a reservation came back at %p, not 64 KiB aligned", p);
            reservation *r = &w->res[w->nres++];
            memset(r, 0, sizeof *r);
            r->base = p;
        } else if (p) {
            return violate(w, "a failed VirtualAlloc left *ppMem = %p", p);
        }
        return true;
    }
    if (w->nres == 0)
        return true;
    reservation *r = &w->res[x / 100 % (uint64_t)w->nres];
    int page = (int)(x / 10000 % PAGES), count = 1 + (int)(x / 200000 % 4);
    if (page + count > PAGES)
        count = PAGES - page;
    if (op < 30) { /* commit and fill */
        void *c = NULL;
        hr = IHostMemoryManager_VirtualAlloc(w->m, r->base + page * 4096, (size_t)count * 4096, MEM_COMMIT,
                                             PAGE_READWRITE, (EMemoryCriticalLevel)(x % 3), &c);
        record(w, OP_COMMIT, hr, now_ns() - t0);
        note(w, "t%d VirtualAlloc(%p, %#x, MEM_COMMIT) -> %s", w->id, (void *)(r->base + page * 4096), count * 4096,
             hm_hr_name(hr));
        if (SUCCEEDED(hr)) {
            for (int k = page; k < page + count; k++) {
                unsigned char *pg = (unsigned char *)r->base + k * 4096;
                if (!r->committed[k] && (pg[0] || pg[4095]))
                    return violate(w, "a freshly committed page %p is not zero", (void *)pg);
                if (r->committed[k] && r->protect[k] != PAGE_READWRITE)
                    r->protect[k] = PAGE_READWRITE; /* recommitting sets the protection */
                r->committed[k] = true;
                r->protect[k] = PAGE_READWRITE;
                r->fill[k] = (unsigned char)(x >> 40) | 1;
                pg[0] = pg[4095] = r->fill[k];
            }
        }
    } else if (op < 40) {
        hr = IHostMemoryManager_VirtualFree(w->m, r->base + page * 4096, (size_t)count * 4096, MEM_DECOMMIT);
        record(w, OP_DECOMMIT, hr, now_ns() - t0);
        note(w, "t%d VirtualFree(%p, %#x, MEM_DECOMMIT) -> %s", w->id, (void *)(r->base + page * 4096), count * 4096,
             hm_hr_name(hr));
        if (SUCCEEDED(hr))
            for (int k = page; k < page + count; k++)
                r->committed[k] = false;
    } else if (op < 48) {
        bool all = true;
        for (int k = page; k < page + count; k++)
            all &= r->committed[k];
        DWORD want = (x >> 50) & 1 ? PAGE_READONLY : PAGE_READWRITE, old = 0;
        hr = IHostMemoryManager_VirtualProtect(w->m, r->base + page * 4096, (size_t)count * 4096, want, &old);
        record(w, OP_PROTECT, hr, now_ns() - t0);
        note(w, "t%d VirtualProtect(%p, %#x, %#x) -> %s", w->id, (void *)(r->base + page * 4096), count * 4096, want,
             hm_hr_name(hr));
        if (SUCCEEDED(hr)) {
            if (!all)
                return violate(w, "VirtualProtect over uncommitted pages at %p succeeded", (void *)(r->base + page * 4096));
            if (old != r->protect[page])
                return violate(w, "VirtualProtect returned old %#x; the first page had %#x", old, r->protect[page]);
            for (int k = page; k < page + count; k++)
                r->protect[k] = want;
        } else if (all && hr == HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS)) {
            return violate(w, "VirtualProtect of committed pages at %p failed with %s", (void *)(r->base + page * 4096),
                           hm_hr_name(hr));
        }
    } else if (op < 70) {
        record(w, OP_QUERY, S_OK, 0);
        for (int k = page; k < page + count; k++)
            if (!verify_page(w, r, k))
                return false;
        return true;
    } else if (op < 74) {
        hr = IHostMemoryManager_VirtualFree(w->m, r->base, 0, MEM_RELEASE);
        record(w, OP_RELEASE, hr, now_ns() - t0);
        note(w, "t%d VirtualFree(%p, 0, MEM_RELEASE) -> %s", w->id, (void *)r->base, hm_hr_name(hr));
        if (SUCCEEDED(hr))
            *r = w->res[--w->nres];
    } else if (op < 90) {
        if (w->nblocks == 0 || (w->nblocks < MAX_BLOCKS && (x >> 7) & 1)) {
            IHostMalloc *h = (x >> 33) & 1 || !w->own_heap ? w->shared_heap : w->own_heap;
            block b = {h, NULL, 8 + (size_t)(x >> 20) % 2000, (unsigned char)(x >> 45) | 1};
            hr = IHostMalloc_Alloc(h, b.size, (EMemoryCriticalLevel)(x % 3), (void **)&b.p);
            record(w, OP_HEAP_ALLOC, hr, now_ns() - t0);
            note(w, "t%d Alloc(%#zx, %s) -> %s %p", w->id, b.size, hm_level_short((EMemoryCriticalLevel)(x % 3)),
                 hm_hr_name(hr), (void *)b.p);
            if (SUCCEEDED(hr)) {
                memset(b.p, b.fill, b.size);
                w->blocks[w->nblocks++] = b;
            }
        } else {
            int k = (int)((x >> 10) % (uint64_t)w->nblocks);
            block *b = &w->blocks[k];
            for (size_t i = 0; i < b->size; i += 61)
                if (b->p[i] != b->fill)
                    return violate(w, "heap block %p byte %zu holds %#x, not %#x: another block overlaps it", (void *)b->p,
                                   i, b->p[i], b->fill);
            hr = IHostMalloc_Free(b->heap, b->p);
            record(w, OP_HEAP_FREE, hr, now_ns() - t0);
            note(w, "t%d Free(%p) -> %s", w->id, (void *)b->p, hm_hr_name(hr));
            if (SUCCEEDED(hr))
                *b = w->blocks[--w->nblocks];
        }
    } else {
        DWORD load;
        SIZE_T avail;
        hr = IHostMemoryManager_GetMemoryLoad(w->m, &load, &avail);
        record(w, OP_LOAD, hr, now_ns() - t0);
        if (SUCCEEDED(hr) && load > 100)
            return violate(w, "GetMemoryLoad reported %u%%", load);
    }
    if (FAILED(hr)) {
        atomic_fetch_add_explicit(&total_failures, 1, memory_order_relaxed);
        /* A failure must have changed nothing: the pages it touched still match the model. */
        for (int k = page; k < page + count; k++)
            if (!verify_page(w, r, k))
                return false;
    }
    return true;
}

static void *run_worker(void *arg)
{
    worker *w = arg;
    IHostMemoryManager_CreateMalloc(w->m, 0, &w->own_heap);
    for (uint64_t i = 0; !atomic_load_explicit(&stop, memory_order_relaxed) && (!w->ops_limit || i < w->ops_limit); i++) {
        if (!step(w))
            break;
        atomic_fetch_add_explicit(&total_ops, 1, memory_order_relaxed);
    }
    for (int i = 0; i < w->nblocks; i++)
        IHostMalloc_Free(w->blocks[i].heap, w->blocks[i].p);
    for (int i = 0; i < w->nres; i++)
        IHostMemoryManager_VirtualFree(w->m, w->res[i].base, 0, MEM_RELEASE);
    if (w->own_heap)
        IHostMalloc_Release(w->own_heap);
    return NULL;
}

static double percentile(const uint64_t *hist, uint64_t total, double q)
{
    uint64_t want = (uint64_t)((double)total * q), seen = 0;
    for (int b = 0; b < HIST_BUCKETS; b++) {
        seen += hist[b];
        if (seen > want)
            return (double)(1ull << b);
    }
    return (double)(1ull << (HIST_BUCKETS - 1));
}

int hm_cmd_stress(int argc, char **argv)
{
    hm_host_choice choice = {0};
    unsigned long long threads = 4, seconds = 5, ops = 0, seed = 1;
    bool json = false;
    const char *trace_dir = ".";
    for (int i = 1; i < argc; i++) {
        bool error = false;
        unsigned long long *target = NULL;
        if (hm_cli_take_host_option(&choice, argc, argv, &i, &error)) {
            if (error)
                return HM_EXIT_USAGE;
            continue;
        }
        if (strcmp(argv[i], "--threads") == 0)
            target = &threads;
        else if (strcmp(argv[i], "--seconds") == 0)
            target = &seconds;
        else if (strcmp(argv[i], "--ops") == 0)
            target = &ops;
        else if (strcmp(argv[i], "--seed") == 0)
            target = &seed;
        else if (strcmp(argv[i], "--json") == 0) {
            json = true;
            continue;
        } else if (strcmp(argv[i], "--trace-dir") == 0 && i + 1 < argc) {
            trace_dir = argv[++i];
            continue;
        } else if (strcmp(argv[i], "--help") == 0) {
            printf("usage: hostmem stress [--host LIB.so] [--host-options S] [--threads N] [--seconds S | --ops N]\n"
                   "                      [--seed N] [--faults SPEC] [--json] [--trace-dir DIR]\n\n"
                   "Hammers a host from N threads (reserve, commit, decommit, release, protect, query, heap alloc and\n"
                   "free on a shared and a private heap, load), writing patterns and checking every answer against\n"
                   "each thread's model. With --faults, failures are accepted but must change nothing. Every call is\n"
                   "recorded to DIR/stress-PID.trace (deleted after a clean run); on a violation it keeps it (for\n"
                   "hostmem replay and reduce), writes the offending thread's last calls to DIR/stress-violation.txt\n"
                   "and exits 1.\n");
            return HM_EXIT_OK;
        } else {
            fprintf(stderr, "hostmem stress: unknown argument '%s' (try --help)\n", argv[i]);
            return HM_EXIT_USAGE;
        }
        if (i + 1 >= argc || !hm_cli_parse_size(argv[++i], target) || (target == &threads && (threads == 0 || threads > 64))) {
            fprintf(stderr, "hostmem stress: %s wants a number%s\n", argv[i - 1], target == &threads ? " from 1 to 64" : "");
            return HM_EXIT_USAGE;
        }
    }
    if (ops)
        seconds = 0;
    IHostMemoryManager *m;
    if (FAILED(hm_cli_open_host(&choice, &m)))
        return HM_EXIT_USAGE;
    /* Every call is recorded, so a violation comes with a trace `hostmem replay` and `hostmem reduce` can use; the
     * recording is deleted when the run is clean. */
    char trace_path[4096];
    snprintf(trace_path, sizeof trace_path, "%s/stress-%d.trace", trace_dir, (int)getpid());
    IHostMemoryManager *recorded;
    bool recording = SUCCEEDED(HostMemWrapRecorder(m, trace_path, &recorded));
    IHostMemoryManager *fault_layer = m; /* the fault log is read from it */
    if (recording)
        m = recorded;
    else
        fprintf(stderr, "hostmem stress: not recording (%s); a violation will come with the last calls only\n",
                HostMemLastError());
    IHostMalloc *shared = NULL;
    if (FAILED(IHostMemoryManager_CreateMalloc(m, MALLOC_THREADSAFE, &shared)) || !shared) {
        /* With faults armed, CreateMalloc itself may be chosen: retry without counting it as a violation. */
        for (int tries = 0; tries < 100 && !shared; tries++)
            IHostMemoryManager_CreateMalloc(m, MALLOC_THREADSAFE, &shared);
        if (!shared) {
            fprintf(stderr, "hostmem stress: the host gives no heap\n");
            IHostMemoryManager_Release(m);
            return HM_EXIT_FAIL;
        }
    }
    worker *w = calloc(threads, sizeof *w);
    pthread_t *t = calloc(threads, sizeof *t);
    atomic_store(&stop, false);
    atomic_store(&total_ops, 0);
    atomic_store(&total_failures, 0);
    atomic_store(&total_violations, 0);
    double t0 = now_ns();
    for (unsigned long long i = 0; i < threads; i++) {
        w[i] = (worker){.id = (int)i + 1, .m = m, .shared_heap = shared, .seed = seed * 1000 + i, .ops_limit = ops / threads + 1};
        if (!ops)
            w[i].ops_limit = 0;
        pthread_create(&t[i], NULL, run_worker, &w[i]);
    }
    bool tty = isatty(2) && !json;
    while (seconds && !atomic_load(&stop) && now_ns() - t0 < (double)seconds * 1e9) {
        usleep(100000);
        if (tty) {
            double el = (now_ns() - t0) / 1e9;
            fprintf(stderr, "\r%6.1f s  %10llu ops  %8.0f ops/s  %6llu failures", el,
                    (unsigned long long)atomic_load(&total_ops), (double)atomic_load(&total_ops) / el,
                    (unsigned long long)atomic_load(&total_failures));
        }
    }
    if (seconds)
        atomic_store(&stop, true); /* with --ops the threads stop by themselves */
    for (unsigned long long i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    if (tty)
        fprintf(stderr, "\n");
    double elapsed = (now_ns() - t0) / 1e9;
    uint64_t by_op[OP_COUNT] = {0}, failed[OP_COUNT] = {0}, hist[HIST_BUCKETS] = {0}, all = 0;
    for (unsigned long long i = 0; i < threads; i++) {
        for (int o = 0; o < OP_COUNT; o++) {
            by_op[o] += w[i].ops[o];
            failed[o] += w[i].failures[o];
            all += w[i].ops[o];
        }
        for (int b = 0; b < HIST_BUCKETS; b++)
            hist[b] += w[i].hist[b];
    }
    uint64_t violations = atomic_load(&total_violations);
    if (json) {
        printf("{\"threads\": %llu, \"seconds\": %.2f, \"ops\": %llu, \"ops_per_second\": %.0f, \"violations\": %llu,"
               " \"p50_ns\": %.0f, \"p99_ns\": %.0f, \"by_method\": {", threads, elapsed, (unsigned long long)all,
               (double)all / elapsed, (unsigned long long)violations, percentile(hist, all, 0.5), percentile(hist, all, 0.99));
        for (int o = 0; o < OP_COUNT; o++)
            printf("%s\"%s\": {\"ops\": %llu, \"failures\": %llu}", o ? ", " : "", op_names[o],
                   (unsigned long long)by_op[o], (unsigned long long)failed[o]);
        printf("}}\n");
    } else {
        printf("stress: %llu thread(s), %.1f s, %llu ops, %.0f ops/s; latency p50 <= %.0f ns, p99 <= %.0f ns\n", threads,
               elapsed, (unsigned long long)all, (double)all / elapsed, percentile(hist, all, 0.5),
               percentile(hist, all, 0.99));
        for (int o = 0; o < OP_COUNT; o++)
            printf("  %-11s %10llu ops %8llu refused (each checked against the model)\n", op_names[o], (unsigned long long)by_op[o],
                   (unsigned long long)failed[o]);
        if (choice.faults) {
            printf("  faults injected: %llu (first ones below)\n", (unsigned long long)HostMemFaultsLogCount(fault_layer));
            hm_fault_event e[3];
            size_t n = HostMemFaultsLog(fault_layer, 0, e, 3);
            for (size_t i = 0; i < n; i++)
                printf("    call %llu: %s #%llu size %#llx -> %s\n", (unsigned long long)e[i].call,
                       hm_method_name(e[i].method), (unsigned long long)e[i].method_call,
                       (unsigned long long)e[i].size, hm_hr_name(e[i].result));
        }
        printf("  violations: %llu\n", (unsigned long long)violations);
    }
    for (unsigned long long i = 0; i < threads && violations; i++) {
        if (!w[i].violation[0])
            continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/stress-violation.txt", trace_dir);
        FILE *f = fopen(path, "w");
        fprintf(stderr, "\nVIOLATION in thread %d: %s\nthe calls that led to it are in %s\n", w[i].id, w[i].violation,
                f ? path : "(could not write it)");
        if (f) {
            fprintf(f, "# hostmem stress violation (seed %llu, thread %d): %s\n", seed, w[i].id, w[i].violation);
            unsigned from = w[i].ring_at > RING ? w[i].ring_at - RING : 0;
            for (unsigned k = from; k < w[i].ring_at; k++)
                fprintf(f, "%s\n", w[i].ring[k % RING]);
            fclose(f);
        }
        break;
    }
    IHostMalloc_Release(shared);
    IHostMemoryManager_Release(m);
    if (recording)
        IHostMemoryManager_Release(fault_layer); /* ours; the recorder held its own */
    if (recording && !violations)
        unlink(trace_path);
    else if (recording)
        fprintf(stderr, "the whole run is recorded in %s: hostmem replay %s / hostmem reduce %s -o small.trace\n",
                trace_path, trace_path, trace_path);
    free(w);
    free(t);
    return violations ? HM_EXIT_FAIL : HM_EXIT_OK;
}

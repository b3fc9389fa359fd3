/* Stress: see stress.h.
 *
 * Each thread owns its reservations and heap blocks, so it can predict every answer about them on its own: which
 * pages are committed and with what protection (hence each VirtualQuery region, exactly), which byte each committed
 * page holds at both ends, which byte fills each heap block. A freshly committed page must read zero, a committed
 * page must keep what was written, a heap block must keep its fill (another block written over it shows up here),
 * and a refused call must change nothing. The shared heap is used by every thread at once, so blocks move between
 * threads' frees and allocations in the host's heap. */
#include "host_bytes.h"
#include "pressure.h"
#include "stress.h"

#include "clock.h"
#include "com.h"

#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096
#define PAGES 16 /* one reservation: 64 KiB, one allocation granule */
#define MAX_RESERVATIONS 16
#define MAX_BLOCKS 64

static const char *const op_names[HM_STRESS_OP_COUNT] = {
    "reserve", "commit", "decommit", "release", "release inside", "protect", "query", "heap alloc", "heap free",
    "load"};

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
    uint64_t canary; /* the heap workload: the tag in the block's first 8 bytes */
} block;

#define HEAP_LIVE 32      /* blocks each thread holds at most in the heap workload */
#define MAILBOX_SLOTS 64  /* blocks in flight between threads (heap workload): handed over, freed by the taker */

/* The load sampler's state (thread 1 while the threads run, then the run itself, for the last point). */
typedef struct load_sampler {
    uint64_t started_ns, every_ns, next_ns;
} load_sampler;

/* Aligned so that one thread's fields written at every step (its seed, its block count) never share a cache line
 * with the next thread's. */
typedef struct worker {
    _Alignas(64) int id;
    IHostMemoryManager *m;
    IHostMalloc *shared_heap, *own_heap;
    uint64_t seed, ops_limit;
    bool verify, check_refusals;
    hm_stress_report *report;
    hm_stress_thread *out;
    reservation res[MAX_RESERVATIONS];
    int nres;
    block blocks[MAX_BLOCKS];
    int nblocks;
    _Atomic uint64_t *mailbox; /* the heap workload's hand-over slots, shared by every thread */
    uint64_t canaries;         /* blocks tagged so far (the sequence when calls are not logged) */
    int64_t live;              /* bytes held, published to out->live_bytes */
    load_sampler *sampler;     /* thread 1 only */
} worker;

const char *hm__stress_op_name(int op) { return op >= 0 && op < HM_STRESS_OP_COUNT ? op_names[op] : "?"; }

const char *hm__stress_workload_name(hm_stress_workload workload)
{
    return workload == HM_STRESS_HEAP ? "heap" : workload == HM_STRESS_MIXED ? "mixed" : "?";
}

/* The mixes, in percent of the random draw (step() and heap_step() cut the draw with these, in this order). */
enum {
    MIX_RESERVE = 8, MIX_COMMIT = 22, MIX_DECOMMIT = 10, MIX_PROTECT = 8, MIX_QUERY = 22, MIX_RELEASE = 3,
    MIX_RELEASE_INSIDE = 1, MIX_HEAP = 16, MIX_LOAD = 10,
    HEAP_MIX_ALLOC = 50, HEAP_MIX_FREE = 35, HEAP_MIX_HAND_OVER = 15,
};
_Static_assert(MIX_RESERVE + MIX_COMMIT + MIX_DECOMMIT + MIX_PROTECT + MIX_QUERY + MIX_RELEASE + MIX_RELEASE_INSIDE +
                   MIX_HEAP + MIX_LOAD == 100, "the mixed workload's shares sum to 100");
_Static_assert(HEAP_MIX_ALLOC + HEAP_MIX_FREE + HEAP_MIX_HAND_OVER == 100, "the heap workload's shares sum to 100");

static const hm_stress_weight mixed_weights[] = {
    {"reserve", MIX_RESERVE}, {"commit", MIX_COMMIT},   {"decommit", MIX_DECOMMIT},
    {"protect", MIX_PROTECT}, {"query", MIX_QUERY},     {"release", MIX_RELEASE},
    {"release_inside", MIX_RELEASE_INSIDE},             {"heap", MIX_HEAP},
    {"load", MIX_LOAD}};
static const hm_stress_weight heap_weights[] = {
    {"alloc", HEAP_MIX_ALLOC}, {"free", HEAP_MIX_FREE}, {"hand_over", HEAP_MIX_HAND_OVER}};

size_t hm__stress_weights(hm_stress_workload workload, const hm_stress_weight **weights)
{
    if (workload == HM_STRESS_HEAP) {
        *weights = heap_weights;
        return sizeof heap_weights / sizeof heap_weights[0];
    }
    *weights = mixed_weights;
    return sizeof mixed_weights / sizeof mixed_weights[0];
}

/* The bytes the thread holds changed by delta: published for the load sampler (a plain store: one writer). */
static void hold(worker *w, int64_t delta)
{
    w->live += delta;
    atomic_store_explicit(&w->out->live_bytes, w->live, memory_order_relaxed);
}

static uint64_t next_random(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* ---- What each thread remembers ------------------------------------------------------------------------------ */

/* Counts a finished call and, when verifying, logs it and its latency (t0 = 0: not timed). */
static void count_call(worker *w, int op, HRESULT hr, uint64_t t0, const void *address, uint64_t size,
                       EMemoryCriticalLevel level, DWORD arg, const void *result)
{
    hm_stress_thread *t = w->out;
    t->ops[op]++;
    if (FAILED(hr))
        t->failures[op]++;
    if (!w->verify)
        return;
    if (t0) {
        uint64_t ns = hm_now_ns() - t0;
        int b = ns ? 64 - __builtin_clzll(ns) : 0;
        t->latency[op][b < HM_STRESS_HIST_BUCKETS ? b : HM_STRESS_HIST_BUCKETS - 1]++;
    }
    hm_stress_call *c = &t->ring[t->calls++ % HM_STRESS_RING];
    *c = (hm_stress_call){.op = (uint8_t)op, .level = (uint8_t)level, .arg = arg, .hr = hr,
                          .address = (uint64_t)(uintptr_t)address, .size = size,
                          .result = (uint64_t)(uintptr_t)result};
}

static const char *level_name(unsigned level) { return hm_level_short((EMemoryCriticalLevel)level); }

void hm__stress_format_call(const hm_stress_call *c, char *buf, size_t len)
{
    const char *hr = hm_hr_name(c->hr);
    unsigned long long a = (unsigned long long)c->address, s = (unsigned long long)c->size,
                       r = (unsigned long long)c->result;
    switch (c->op) {
    case HM_STRESS_RESERVE:
        snprintf(buf, len, "VirtualAlloc(NULL, %#llx, %s, PAGE_READWRITE, %s) -> %s %#llx", s,
                 c->arg & MEM_COMMIT ? "MEM_RESERVE|MEM_COMMIT" : "MEM_RESERVE", level_name(c->level), hr, r);
        break;
    case HM_STRESS_COMMIT:
        snprintf(buf, len, "VirtualAlloc(%#llx, %#llx, MEM_COMMIT, PAGE_READWRITE, %s) -> %s", a, s,
                 level_name(c->level), hr);
        break;
    case HM_STRESS_DECOMMIT:
        snprintf(buf, len, "VirtualFree(%#llx, %#llx, MEM_DECOMMIT) -> %s", a, s, hr);
        break;
    case HM_STRESS_RELEASE:
    case HM_STRESS_RELEASE_INSIDE:
        snprintf(buf, len, "VirtualFree(%#llx, 0, MEM_RELEASE) -> %s", a, hr);
        break;
    case HM_STRESS_PROTECT:
        snprintf(buf, len, "VirtualProtect(%#llx, %#llx, %#x) -> %s, old %#llx", a, s, (unsigned)c->arg, hr, r);
        break;
    case HM_STRESS_QUERY:
        snprintf(buf, len, "VirtualQuery(%#llx) -> %s", a, hr);
        break;
    case HM_STRESS_HEAP_ALLOC:
        snprintf(buf, len, "IHostMalloc(%#llx)::Alloc(%#llx, %s) -> %s %#llx", a, s, level_name(c->level), hr, r);
        break;
    case HM_STRESS_HEAP_FREE:
        snprintf(buf, len, "IHostMalloc(%#llx)::Free(%#llx) -> %s", r, a, hr);
        break;
    default:
        snprintf(buf, len, "GetMemoryLoad() -> %s, %llu%%", hr, r);
        break;
    }
}

static bool violate(worker *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool violate(worker *w, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->out->violation, sizeof w->out->violation, fmt, ap);
    va_end(ap);
    atomic_fetch_add(&w->report->violations, 1);
    atomic_store(&w->report->stop, true);
    return false;
}

/* ---- The checks ------------------------------------------------------------------------------------------------ */

static bool same_attributes(const reservation *r, int a, int b)
{
    return r->committed[a] == r->committed[b] && (!r->committed[a] || r->protect[a] == r->protect[b]);
}

/* VirtualQuery of page p of r against the model: the region is exactly the run of pages from p with p's
 * attributes, within the reservation; committed pages that can be read hold their fill. */
static bool verify_page(worker *w, reservation *r, int p)
{
    MEMORY_BASIC_INFORMATION mbi;
    SIZE_T n = 0;
    char *page = r->base + p * PAGE;
    uint64_t t0 = w->verify ? hm_now_ns() : 0;
    HRESULT hr = IHostMemoryManager_VirtualQuery(w->m, page + (p * 37) % PAGE, &mbi, sizeof mbi, &n);
    count_call(w, HM_STRESS_QUERY, hr, t0, page, 0, eTaskCritical, 0, NULL);
    if (!w->verify || FAILED(hr))
        return true; /* an injected failure; a query changes nothing */
    int end = p + 1;
    while (end < PAGES && same_attributes(r, p, end))
        end++;
    DWORD want_state = r->committed[p] ? MEM_COMMIT : MEM_RESERVE;
    DWORD want_protect = r->committed[p] ? r->protect[p] : 0;
    SIZE_T want_size = (SIZE_T)(end - p) * PAGE;
    struct {
        const char *field;
        uint64_t got, want;
    } fields[] = {
        {"returned size", n, sizeof mbi},
        {"BaseAddress", (uintptr_t)mbi.BaseAddress, (uintptr_t)page},
        {"AllocationBase", (uintptr_t)mbi.AllocationBase, (uintptr_t)r->base},
        {"AllocationProtect", mbi.AllocationProtect, PAGE_READWRITE},
        {"RegionSize", mbi.RegionSize, want_size},
        {"State", mbi.State, want_state},
        {"Protect", mbi.Protect, want_protect},
        {"Type", mbi.Type, MEM_PRIVATE},
    };
    char diff[400] = "";
    size_t used = 0;
    for (size_t i = 0; i < sizeof fields / sizeof fields[0] && used < sizeof diff; i++)
        if (fields[i].got != fields[i].want)
            used += (size_t)snprintf(diff + used, sizeof diff - used, "%s%s %#llx (the model says %#llx)",
                                     used ? ", " : "", fields[i].field, (unsigned long long)fields[i].got,
                                     (unsigned long long)fields[i].want);
    if (used)
        return violate(w, "VirtualQuery(%p) gave %s", (void *)(page + (p * 37) % PAGE), diff);
    if (r->committed[p] && (r->protect[p] == PAGE_READWRITE || r->protect[p] == PAGE_READONLY)) {
        unsigned char first = host_byte(page, 0), last = host_byte(page, PAGE - 1);
        if (first != r->fill[p] || last != r->fill[p])
            return violate(w, "page %p holds %#x/%#x; it should hold %#x", (void *)page, first, last, r->fill[p]);
    }
    return true;
}

/* After a refused call: the pages it named still match the model. */
static bool verify_unchanged(worker *w, reservation *r, int first, int count, const char *call, HRESULT hr)
{
    for (int k = first; k < first + count; k++)
        if (!verify_page(w, r, k)) {
            char found[sizeof w->out->violation];
            memcpy(found, w->out->violation, sizeof found);
            snprintf(w->out->violation, sizeof w->out->violation,
                     "after %s failed (%s), the pages no longer match the model: %s", call,
                     hm_hr_name(hr), found);
            return false;
        }
    return true;
}

/* ---- The workload -------------------------------------------------------------------------------------------- */

/* What the host says is available, or 0 when it will not say. */
static uint64_t available_now(worker *w)
{
    DWORD load;
    SIZE_T available = 0;
    return IHostMemoryManager_GetMemoryLoad(w->m, &load, &available) == S_OK ? available : 0;
}

/* An E_OUTOFMEMORY at eProcessCritical (the level that may use the whole budget) for a request smaller than what
 * the host reports available, both before and after the call, with room for what the other threads may take
 * meanwhile (1 MiB each) and a 64 KiB granule of rounding: the host refused what it had, it lost the books. */
static bool check_refusal(worker *w, HRESULT hr, EMemoryCriticalLevel level, uint64_t before, const char *call,
                          uint64_t size)
{
    if (!w->check_refusals || hr != E_OUTOFMEMORY || level != eProcessCritical)
        return true;
    uint64_t after = available_now(w), slack = ((uint64_t)w->report->threads << 20) + HM_REFUSAL_SLACK;
    if (!hm__refusal_is_spurious(size, before, slack) || !hm__refusal_is_spurious(size, after, slack))
        return true;
    return violate(w, "spurious out-of-memory: %s of %#llx bytes at eProcessCritical -> E_OUTOFMEMORY although "
                      "GetMemoryLoad reports %llu bytes available (no fault injected)",
                   call, (unsigned long long)size, (unsigned long long)(after < before ? after : before));
}

/* After a successful commit of pages [page, page + count) of r (with_reserve: made in the same call as r): each page
 * committed for the first time must read as zero; then every page takes the step's fill byte at both ends. */
static bool take_commit(worker *w, uint64_t x, reservation *r, int page, int count, bool with_reserve)
{
    unsigned char fill = (unsigned char)(x >> 40) | 1;
    for (int k = page; k < page + count; k++) {
        unsigned char *pg = (unsigned char *)r->base + k * PAGE;
        if (!r->committed[k]) {
            if (w->verify && (host_byte(pg, 0) || host_byte(pg, PAGE - 1)))
                return with_reserve ? violate(w, "a freshly committed page %p (page %d of a reservation committed in "
                                                 "the same call) is not zero", (void *)pg, k)
                                    : violate(w, "a freshly committed page %p is not zero", (void *)pg);
            hold(w, PAGE);
        }
        r->committed[k] = true;
        r->protect[k] = PAGE_READWRITE; /* committing again sets the protection */
        r->fill[k] = fill;
        host_set_byte(pg, 0, fill);
        host_set_byte(pg, PAGE - 1, fill);
    }
    return true;
}

/* One reservation in four is committed in the same call, as a runtime mostly asks: every page must read as zero (a
 * host that recycles pages without clearing them is caught here, whichever page it left dirty). */
static bool do_reserve(worker *w, uint64_t x)
{
    void *p = NULL;
    EMemoryCriticalLevel level = (EMemoryCriticalLevel)(x % 3);
    DWORD type = (x >> 20) % 4 == 0 ? MEM_RESERVE | MEM_COMMIT : MEM_RESERVE;
    uint64_t before = w->check_refusals && (type & MEM_COMMIT) && level == eProcessCritical ? available_now(w) : 0;
    uint64_t t0 = w->verify ? hm_now_ns() : 0;
    HRESULT hr = IHostMemoryManager_VirtualAlloc(w->m, NULL, PAGES * PAGE, type, PAGE_READWRITE, level, &p);
    count_call(w, HM_STRESS_RESERVE, hr, t0, NULL, PAGES * PAGE, level, type, p);
    if ((type & MEM_COMMIT) &&
        !check_refusal(w, hr, level, before, "VirtualAlloc(MEM_RESERVE|MEM_COMMIT)", PAGES * PAGE))
        return false;
    if (SUCCEEDED(hr)) {
        if (w->verify && (!p || ((uintptr_t)p & 0xFFFF)))
            return violate(w, "a reservation came back at %p, not 64 KiB aligned", p);
        reservation *r = &w->res[w->nres++];
        memset(r, 0, sizeof *r);
        r->base = p;
        if (type & MEM_COMMIT)
            return take_commit(w, x, r, 0, PAGES, true);
    } else if (w->verify && p) {
        return violate(w, "a failed VirtualAlloc left *ppMem = %p", p);
    }
    return true;
}

static bool do_commit(worker *w, uint64_t x, reservation *r, int page, int count)
{
    void *c = NULL;
    char *at = r->base + page * PAGE;
    EMemoryCriticalLevel level = (EMemoryCriticalLevel)(x % 3);
    uint64_t before = w->check_refusals && level == eProcessCritical ? available_now(w) : 0;
    uint64_t t0 = w->verify ? hm_now_ns() : 0;
    HRESULT hr = IHostMemoryManager_VirtualAlloc(w->m, at, (SIZE_T)count * PAGE, MEM_COMMIT, PAGE_READWRITE, level,
                                                 &c);
    count_call(w, HM_STRESS_COMMIT, hr, t0, at, (uint64_t)count * PAGE, level, 0, c);
    if (!check_refusal(w, hr, level, before, "VirtualAlloc(MEM_COMMIT)", (uint64_t)count * PAGE))
        return false;
    if (FAILED(hr))
        return !w->verify || verify_unchanged(w, r, page, count, "VirtualAlloc(MEM_COMMIT)", hr);
    if (w->verify && c != at)
        return violate(w, "VirtualAlloc(%p, MEM_COMMIT) gave back %p", (void *)at, c);
    return take_commit(w, x, r, page, count, false);
}

static bool do_decommit(worker *w, reservation *r, int page, int count)
{
    char *at = r->base + page * PAGE;
    uint64_t t0 = w->verify ? hm_now_ns() : 0;
    HRESULT hr = IHostMemoryManager_VirtualFree(w->m, at, (SIZE_T)count * PAGE, MEM_DECOMMIT);
    count_call(w, HM_STRESS_DECOMMIT, hr, t0, at, (uint64_t)count * PAGE, eTaskCritical, 0, NULL);
    if (FAILED(hr))
        return !w->verify || verify_unchanged(w, r, page, count, "VirtualFree(MEM_DECOMMIT)", hr);
    for (int k = page; k < page + count; k++) {
        if (r->committed[k])
            hold(w, -PAGE);
        r->committed[k] = false;
    }
    return true;
}

static bool do_protect(worker *w, uint64_t x, reservation *r, int page, int count)
{
    bool all_committed = true;
    for (int k = page; k < page + count; k++)
        all_committed &= r->committed[k];
    char *at = r->base + page * PAGE;
    DWORD want = (x >> 50) & 1 ? PAGE_READONLY : PAGE_READWRITE, old = 0;
    uint64_t t0 = w->verify ? hm_now_ns() : 0;
    HRESULT hr = IHostMemoryManager_VirtualProtect(w->m, at, (SIZE_T)count * PAGE, want, &old);
    count_call(w, HM_STRESS_PROTECT, hr, t0, at, (uint64_t)count * PAGE, eTaskCritical, want,
               (void *)(uintptr_t)old);
    if (SUCCEEDED(hr)) {
        if (w->verify && !all_committed)
            return violate(w, "VirtualProtect over uncommitted pages at %p succeeded", (void *)at);
        if (w->verify && old != r->protect[page])
            return violate(w, "VirtualProtect returned old %#x; the first page had %#x", old, r->protect[page]);
        for (int k = page; k < page + count; k++)
            r->protect[k] = want;
        return true;
    }
    if (w->verify && all_committed && hr == HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS))
        return violate(w, "VirtualProtect of committed pages at %p failed with %s", (void *)at, hm_hr_name(hr));
    return !w->verify || verify_unchanged(w, r, page, count, "VirtualProtect", hr);
}

/* The reservation is gone: out of the model, its committed pages out of the bytes held. */
static void forget(worker *w, reservation *r)
{
    for (int k = 0; k < PAGES; k++)
        if (r->committed[k])
            hold(w, -PAGE);
    *r = w->res[--w->nres];
}

static bool do_release(worker *w, reservation *r)
{
    uint64_t t0 = w->verify ? hm_now_ns() : 0;
    HRESULT hr = IHostMemoryManager_VirtualFree(w->m, r->base, 0, MEM_RELEASE);
    count_call(w, HM_STRESS_RELEASE, hr, t0, r->base, 0, eTaskCritical, 0, NULL);
    if (FAILED(hr))
        return !w->verify || verify_unchanged(w, r, 0, PAGES, "VirtualFree(MEM_RELEASE)", hr);
    forget(w, r);
    return true;
}

/* MEM_RELEASE takes the reservation's base; an address a page or more inside it is refused, changing nothing. */
static bool do_release_inside(worker *w, reservation *r, int page)
{
    if (page == 0)
        page = 1;
    char *at = r->base + page * PAGE;
    uint64_t t0 = w->verify ? hm_now_ns() : 0;
    HRESULT hr = IHostMemoryManager_VirtualFree(w->m, at, 0, MEM_RELEASE);
    count_call(w, HM_STRESS_RELEASE_INSIDE, hr, t0, at, 0, eTaskCritical, 0, NULL);
    if (SUCCEEDED(hr)) {
        if (w->verify)
            return violate(w, "VirtualFree(%p, 0, MEM_RELEASE), %d pages inside the reservation at %p, succeeded",
                           (void *)at, page, (void *)r->base);
        forget(w, r); /* without checks, go on as if the host had released it all */
        return true;
    }
    return !w->verify || verify_unchanged(w, r, 0, PAGES, "VirtualFree(MEM_RELEASE) from inside", hr);
}

static bool do_heap(worker *w, uint64_t x)
{
    if (w->nblocks == 0 || (w->nblocks < MAX_BLOCKS && (x >> 7) & 1)) {
        IHostMalloc *h = (x >> 33) & 1 || !w->own_heap ? w->shared_heap : w->own_heap;
        EMemoryCriticalLevel level = (EMemoryCriticalLevel)(x % 3);
        block b = {h, NULL, 8 + (size_t)(x >> 20) % 2000, (unsigned char)(x >> 45) | 1, 0};
        uint64_t before = w->check_refusals && level == eProcessCritical ? available_now(w) : 0;
        uint64_t t0 = w->verify ? hm_now_ns() : 0;
        HRESULT hr = IHostMalloc_Alloc(h, b.size, level, (void **)&b.p);
        count_call(w, HM_STRESS_HEAP_ALLOC, hr, t0, h, b.size, level, 0, b.p);
        if (!check_refusal(w, hr, level, before, "Alloc", b.size))
            return false;
        if (SUCCEEDED(hr)) {
            if (w->verify && !b.p)
                return violate(w, "Alloc(%#zx) succeeded with a NULL block", b.size);
            if (w->verify && (uintptr_t)b.p % 16)
                return violate(w, "Alloc(%#zx) returned %p, which is not 16-byte aligned (MEMORY_ALLOCATION_ALIGNMENT)",
                               b.size, (void *)b.p);
            host_fill(b.p, b.fill, b.size);
            w->blocks[w->nblocks++] = b;
            hold(w, (int64_t)b.size);
        } else if (w->verify && b.p) {
            return violate(w, "a failed Alloc left *ppMem = %p", (void *)b.p);
        }
        return true;
    }
    block *b = &w->blocks[(x >> 10) % (uint64_t)w->nblocks];
    if (w->verify) { /* every 61st byte and the last: a block written over by another shows here */
        for (size_t i = 0; i < b->size; i += 61)
            if (host_byte(b->p, i) != b->fill)
                return violate(w, "heap block %p byte %zu holds %#x, not %#x: another block overlaps it", (void *)b->p,
                               i, host_byte(b->p, i), b->fill);
        if (host_byte(b->p, b->size - 1) != b->fill)
            return violate(w, "heap block %p byte %zu (its last) holds %#x, not %#x: another block overlaps it",
                           (void *)b->p, b->size - 1, host_byte(b->p, b->size - 1), b->fill);
    }
    uint64_t t0 = w->verify ? hm_now_ns() : 0;
    HRESULT hr = IHostMalloc_Free(b->heap, b->p);
    count_call(w, HM_STRESS_HEAP_FREE, hr, t0, b->p, b->size, eTaskCritical, 0, b->heap);
    if (SUCCEEDED(hr)) {
        hold(w, -(int64_t)b->size);
        *b = w->blocks[--w->nblocks];
    }
    return true; /* a refused Free (injected) leaves the block live: it is checked and freed again later */
}

/* The host's load for the summary's first, peak and last (each percent + 1: 0 is never read). */
static void note_load(hm_stress_report *report, DWORD load)
{
    unsigned seen = (unsigned)load + 1, none = 0, peak = atomic_load(&report->load_peak);
    atomic_compare_exchange_strong(&report->load_first, &none, seen);
    atomic_store(&report->load_last, seen);
    while (seen > peak && !atomic_compare_exchange_weak(&report->load_peak, &peak, seen))
        ;
}

bool hm__stress_load_series_add(hm_stress_report *report, const hm_stress_load_sample *point)
{
    unsigned n = atomic_load_explicit(&report->load_samples, memory_order_relaxed);
    bool halved = n >= HM_STRESS_LOAD_SAMPLES;
    if (halved) {
        n = HM_STRESS_LOAD_SAMPLES / 2;
        atomic_store_explicit(&report->load_samples, n, memory_order_release);
        for (unsigned i = 1; i < n; i++)
            report->load_series[i] = report->load_series[2 * i];
    }
    report->load_series[n] = *point;
    atomic_store_explicit(&report->load_samples, n + 1, memory_order_release); /* after its point: a crash leaves
                                                                                * the series whole */
    return halved;
}

/* A point of the load series, when its time has come (or now: force). Not a step of the workload: not counted,
 * not logged, and made the same way with and without checks. */
static void sample_load(IHostMemoryManager *m, hm_stress_report *report, load_sampler *s, bool force)
{
    uint64_t now = hm_now_ns();
    if (!force && now < s->next_ns)
        return;
    s->next_ns = now + s->every_ns;
    DWORD load = 0;
    SIZE_T available = 0;
    if (FAILED(IHostMemoryManager_GetMemoryLoad(m, &load, &available)))
        return; /* an injected failure: no point */
    note_load(report, load);
    int64_t live = 0;
    for (unsigned t = 0; t < report->threads; t++)
        live += atomic_load_explicit(&report->thread[t].live_bytes, memory_order_relaxed);
    hm_stress_load_sample point = {.seconds = (double)(now - s->started_ns) / 1e9, .load = (uint32_t)load,
                                   .available = (uint64_t)available, .live_bytes = live};
    if (hm__stress_load_series_add(report, &point))
        s->every_ns *= 2;
}

static bool do_load(worker *w)
{
    DWORD load = 0;
    SIZE_T available = 0;
    uint64_t t0 = w->verify ? hm_now_ns() : 0;
    HRESULT hr = IHostMemoryManager_GetMemoryLoad(w->m, &load, &available);
    count_call(w, HM_STRESS_LOAD, hr, t0, NULL, available, eTaskCritical, 0, (void *)(uintptr_t)load);
    if (w->verify && SUCCEEDED(hr) && load > 100)
        return violate(w, "GetMemoryLoad reported %u%%", load);
    if (SUCCEEDED(hr))
        note_load(w->report, load);
    return true;
}

/* One operation, chosen by the thread's random stream: the mix is 8% reserve, 22% commit, 10% decommit, 8% protect,
 * 22% query, 3% release, 1% release inside, 16% heap, 10% load. */
static bool step(worker *w)
{
    uint64_t x = next_random(&w->seed);
    int choice = (int)(x % 100);
    int at = MIX_RESERVE;
    if (choice < at && w->nres < MAX_RESERVATIONS)
        return do_reserve(w, x);
    if (w->nres == 0)
        return true;
    reservation *r = &w->res[x / 100 % (uint64_t)w->nres];
    int page = (int)(x / 10000 % PAGES), count = 1 + (int)(x / 200000 % 4);
    if (page + count > PAGES)
        count = PAGES - page;
    if (choice < (at += MIX_COMMIT))
        return do_commit(w, x, r, page, count);
    if (choice < (at += MIX_DECOMMIT))
        return do_decommit(w, r, page, count);
    if (choice < (at += MIX_PROTECT))
        return do_protect(w, x, r, page, count);
    if (choice < (at += MIX_QUERY)) {
        for (int k = page; k < page + count; k++)
            if (!verify_page(w, r, k))
                return false;
        return true;
    }
    if (choice < (at += MIX_RELEASE))
        return do_release(w, r);
    if (choice < (at += MIX_RELEASE_INSIDE))
        return do_release_inside(w, r, page);
    if (choice < at + MIX_HEAP)
        return do_heap(w, x);
    return do_load(w);
}

/* ---- The heap workload ------------------------------------------------------------------------------------------- */

/* A block's canary: its first 8 bytes name the thread holding it (bits 56..63), its size (43..55) and the call that
 * got it (0..42); every other byte holds a fill made from that tag. A block another thread was also given holds the
 * other thread's tag, which names it and its call. */
#define TAG_SEQ_BITS 43
static uint64_t make_tag(unsigned thread, size_t size, uint64_t seq)
{
    return (uint64_t)thread << 56 | (uint64_t)size << TAG_SEQ_BITS | (seq & ((1ull << TAG_SEQ_BITS) - 1));
}
static unsigned tag_thread(uint64_t tag) { return (unsigned)(tag >> 56); }
static size_t tag_size(uint64_t tag) { return (size_t)(tag >> TAG_SEQ_BITS) & 0x1FFF; }
static uint64_t tag_seq(uint64_t tag) { return tag & ((1ull << TAG_SEQ_BITS) - 1); }
static unsigned char tag_fill(uint64_t tag) { return (unsigned char)(tag ^ tag >> 17 ^ tag >> 56) | 1; }

static void write_canary(block *b)
{
    host_copy(b->p, &b->canary, sizeof b->canary);
    host_fill(b->p + sizeof b->canary, tag_fill(b->canary), b->size - sizeof b->canary);
}

/* The heap workload's check: b (held by this thread, given by its call b->canary's seq) still holds its canary. When
 * it holds another thread's tag, the host gave that thread the same block: both are named. */
static bool check_canary(worker *w, const block *b, const char *when)
{
    if (!w->verify)
        return true;
    uint64_t found;
    host_copy(&found, b->p, sizeof found);
    unsigned char fill = tag_fill(b->canary);
    size_t bad = 0;
    if (found == b->canary) { /* every fourth 8 bytes and the last 8 (the tag alone shows a block given twice) */
        uint64_t word = 0x0101010101010101ull * fill, got;
        bad = b->size;
        for (size_t at = sizeof found; at + 8 <= b->size; at += 32) {
            host_copy(&got, b->p + at, 8);
            if (got != word) {
                bad = at;
                break;
            }
        }
        for (size_t i = b->size >= 16 ? b->size - 8 : sizeof found; bad == b->size && i < b->size; i++)
            if (host_byte(b->p, i) != fill)
                bad = i;
        while (bad < b->size && host_byte(b->p, bad) == fill) /* the byte that differs */
            bad++;
    }
    if (found == b->canary && bad == b->size)
        return true;
    unsigned me = tag_thread(b->canary), other = tag_thread(found); /* me: its holder (the donor, if handed over) */
    w->out->shared_block = (uint64_t)(uintptr_t)b->p;
    if (found != b->canary && other >= 1 && other <= w->report->threads && other != me && tag_size(found) >= 8) {
        w->out->other_thread = other;
        w->out->other_call = tag_seq(found);
        return violate(w, "heap block %p was held by two threads at once: thread %u got it (%zu bytes) from its call "
                          "#%llu, IHostMalloc::Alloc -> %p, and thread %u got the same block (%zu bytes) from its call "
                          "#%llu and wrote its canary over it (found %s); the host's heap handed one block out twice",
                       (void *)b->p, me, b->size, (unsigned long long)tag_seq(b->canary), (void *)b->p, other,
                       tag_size(found), (unsigned long long)tag_seq(found), when);
    }
    if (found != b->canary && other == me && tag_size(found) >= 8 && tag_seq(found) != tag_seq(b->canary)) {
        w->out->other_thread = other;
        w->out->other_call = tag_seq(found);
        return violate(w, "heap block %p was handed out twice while live: thread %u got it (%zu bytes) from its call "
                          "#%llu, IHostMalloc::Alloc -> %p, and again (%zu bytes) from its call #%llu, which wrote its "
                          "canary over it (found %s); the host's heap handed one block out twice",
                       (void *)b->p, me, b->size, (unsigned long long)tag_seq(b->canary), (void *)b->p,
                       tag_size(found), (unsigned long long)tag_seq(found), when);
    }
    if (found != b->canary)
        return violate(w, "heap block %p (%zu bytes, thread %u's from its call #%llu): its first 8 bytes hold %#llx, not "
                          "its canary %#llx (found %s): written by someone else while the thread held it",
                       (void *)b->p, b->size, me, (unsigned long long)tag_seq(b->canary), (unsigned long long)found,
                       (unsigned long long)b->canary, when);
    return violate(w, "heap block %p (%zu bytes, thread %u's from its call #%llu): byte %zu holds %#x, not %#x (found "
                      "%s): written by someone else while the thread held it",
                   (void *)b->p, b->size, me, (unsigned long long)tag_seq(b->canary), bad, host_byte(b->p, bad), fill,
                   when);
}

/* The heap workload's calls take tens of nanoseconds, as much as reading the clock twice: one in 8 is timed. */
static uint64_t heap_clock(worker *w) { return w->verify && (w->out->calls & 63) == 0 ? hm_now_ns() : 0; }

static bool heap_free(worker *w, const block *b)
{
    uint64_t t0 = heap_clock(w);
    HRESULT hr = IHostMalloc_Free(b->heap, b->p);
    count_call(w, HM_STRESS_HEAP_FREE, hr, t0, b->p, b->size, eTaskCritical, 0, b->heap);
    return SUCCEEDED(hr);
}

/* Mailbox entries pack a block (16-byte aligned, below 2^47: 43 bits), its size (13 bits) and the thread that handed
 * it over (7 bits). */
static uint64_t pack_mail(const block *b, unsigned thread)
{
    return (uint64_t)(uintptr_t)b->p >> 4 | (uint64_t)b->size << 43 | (uint64_t)thread << 56;
}
static unsigned char *mail_block(uint64_t mail) { return (unsigned char *)(uintptr_t)((mail & ((1ull << 43) - 1)) << 4); }

/* One step of the heap workload: 50% Alloc (small blocks, some up to 4 KiB; one in 8 checked again after a yield),
 * 35% Free of an own block, 15% a block handed to another thread through a mailbox slot and whatever block was
 * waiting there freed by this thread. Every block's canary is checked before it leaves the thread. */
static bool heap_step(worker *w)
{
    uint64_t x = next_random(&w->seed);
    int choice = (int)(x % 100);
    if (w->nblocks == 0 || (choice < HEAP_MIX_ALLOC && w->nblocks < HEAP_LIVE)) {
        EMemoryCriticalLevel level = (EMemoryCriticalLevel)(x / 100 % 3);
        size_t size = (x >> 12) % 16 ? 8 + (size_t)(x >> 16) % 249 : 257 + (size_t)(x >> 16) % 3840;
        block b = {w->shared_heap, NULL, size, 0, 0};
        uint64_t t0 = heap_clock(w);
        HRESULT hr = IHostMalloc_Alloc(b.heap, size, level, (void **)&b.p);
        count_call(w, HM_STRESS_HEAP_ALLOC, hr, t0, b.heap, size, level, 0, b.p);
        if (FAILED(hr))
            return !w->verify || !b.p || violate(w, "a failed Alloc left *ppMem = %p", (void *)b.p);
        if (w->verify && (!b.p || (uintptr_t)b.p % 16))
            return violate(w, "Alloc(%#zx) returned %p, which is %s", size, (void *)b.p,
                           b.p ? "not 16-byte aligned (MEMORY_ALLOCATION_ALIGNMENT)" : "NULL");
        b.canary = make_tag((unsigned)w->id, size, w->verify ? w->out->calls : ++w->canaries);
        write_canary(&b);
        w->blocks[w->nblocks++] = b;
        hold(w, (int64_t)size);
        if ((x >> 40) % 8 == 0) { /* let another thread run, then look: a block it was also given shows now */
            sched_yield();
            return check_canary(w, &w->blocks[w->nblocks - 1], "after a yield");
        }
        return true;
    }
    int k = (int)((x >> 20) % (uint64_t)w->nblocks);
    block b = w->blocks[k];
    if (!check_canary(w, &b,
                      choice < HEAP_MIX_ALLOC + HEAP_MIX_FREE ? "before Free" : "before handing it to another thread"))
        return false;
    w->blocks[k] = w->blocks[--w->nblocks];
    hold(w, -(int64_t)b.size); /* freed, or in flight to another thread (not counted there) */
    if (choice < HEAP_MIX_ALLOC + HEAP_MIX_FREE) {
        if (!heap_free(w, &b)) {
            w->blocks[w->nblocks++] = b; /* refused (injected): kept, freed later */
            hold(w, (int64_t)b.size);
        }
        return true;
    }
    uint64_t got = atomic_exchange(&w->mailbox[(x >> 30) % MAILBOX_SLOTS], pack_mail(&b, (unsigned)w->id));
    if (!got)
        return true;
    block theirs = {w->shared_heap, mail_block(got), (size_t)(got >> 43) & 0x1FFF, 0, 0};
    unsigned donor = (unsigned)(got >> 56);
    if (w->verify) { /* the donor's canary, intact: the donor named in it, the size it was handed over with */
        uint64_t found;
        host_copy(&found, theirs.p, sizeof found);
        theirs.canary = tag_thread(found) == donor && tag_size(found) == theirs.size ? found : make_tag(donor, theirs.size, 0);
        if (!check_canary(w, &theirs, "in a block another thread handed over"))
            return false;
    }
    if (!heap_free(w, &theirs) && w->nblocks < MAX_BLOCKS) {
        w->blocks[w->nblocks++] = theirs; /* refused (injected): ours now, freed later */
        hold(w, (int64_t)theirs.size);
    }
    return true;
}

/* AddRef and Release return the new count: two of each count up by one and back down (only the differences are
 * checked: a host may hold references of its own). Called on an object no other thread counts at the time. */
static bool refcounts_ok(IUnknown *object, char *why, size_t len)
{
    ULONG a = IUnknown_AddRef(object), b = IUnknown_AddRef(object);
    ULONG c = IUnknown_Release(object), d = IUnknown_Release(object);
    if (a >= 2 && b == a + 1 && c == a && d == a - 1)
        return true;
    snprintf(why, len, "AddRef returned %lu then %lu, Release %lu then %lu (the new counts: n, n+1, n, n-1, n >= 2)",
             (unsigned long)a, (unsigned long)b, (unsigned long)c, (unsigned long)d);
    return false;
}

static void *run_worker(void *arg)
{
    worker *w = arg;
    if (!w->mailbox) /* the heap workload uses the shared heap alone */
        IHostMemoryManager_CreateMalloc(w->m, 0, &w->own_heap); /* may fail (faults): the shared heap serves then */
    for (uint64_t i = 0; !atomic_load_explicit(&w->report->stop, memory_order_relaxed) &&
                         (!w->ops_limit || i < w->ops_limit);
         i++) {
        if (w->sampler && (i & 255) == 0) /* the clock read every 256 steps: cheap next to them */
            sample_load(w->m, w->report, w->sampler, false);
        if (!(w->mailbox ? heap_step(w) : step(w)))
            break;
        atomic_store_explicit(&w->out->done, i + 1, memory_order_relaxed);
    }
    for (int i = 0; i < w->nblocks; i++)
        IHostMalloc_Free(w->blocks[i].heap, w->blocks[i].p);
    for (int i = 0; i < w->nres; i++)
        IHostMemoryManager_VirtualFree(w->m, w->res[i].base, 0, MEM_RELEASE);
    hold(w, -w->live); /* all given back */
    char why[200];
    if (w->own_heap && !atomic_load(&w->report->stop) && !refcounts_ok((IUnknown *)w->own_heap, why, sizeof why))
        violate(w, "its heap's %s", why);
    if (w->own_heap)
        IHostMalloc_Release(w->own_heap);
    return NULL;
}

/* ---- The callback: counts notifications; one with a level outside the enum is a violation ------------------- */

/* The manager keeps its reference until it goes, which may be after the run: the counter lives on the heap, frees
 * itself on its last Release, and is detached from the report when the run ends. */
typedef struct notification_counter {
    ICLRMemoryNotificationCallback ICLRMemoryNotificationCallback_iface;
    atomic_uint refs;
    IHostMemoryManager *m; /* called back from inside each notification, as a runtime does */
    _Atomic(hm_stress_report *) report;
} notification_counter;

static inline notification_counter *impl_from_ICLRMemoryNotificationCallback(ICLRMemoryNotificationCallback *iface)
{
    return HM_CONTAINER_OF(iface, notification_counter, ICLRMemoryNotificationCallback_iface);
}

static HRESULT STDMETHODCALLTYPE counter_QueryInterface(ICLRMemoryNotificationCallback *iface, REFIID riid, void **ppv)
{
    return hm_com_query(iface, &IID_ICLRMemoryNotificationCallback, riid, ppv);
}

static ULONG STDMETHODCALLTYPE counter_AddRef(ICLRMemoryNotificationCallback *iface)
{
    return atomic_fetch_add(&impl_from_ICLRMemoryNotificationCallback(iface)->refs, 1) + 1;
}

static ULONG STDMETHODCALLTYPE counter_Release(ICLRMemoryNotificationCallback *iface)
{
    notification_counter *c = impl_from_ICLRMemoryNotificationCallback(iface);
    ULONG left = atomic_fetch_sub(&c->refs, 1) - 1;
    if (left == 0)
        free(c);
    return left;
}

static HRESULT STDMETHODCALLTYPE counter_OnMemoryNotification(ICLRMemoryNotificationCallback *iface,
                                                              EMemoryAvailable available)
{
    hm_stress_report *report = atomic_load(&impl_from_ICLRMemoryNotificationCallback(iface)->report);
    if (!report)
        return S_OK;
    if (available < eMemoryAvailableLow || available > eMemoryAvailableHigh) {
        if (atomic_fetch_add(&report->violations, 1) == 0)
            snprintf(report->thread[0].violation, sizeof report->thread[0].violation,
                     "OnMemoryNotification(%d): not an EMemoryAvailable", (int)available);
        atomic_store(&report->stop, true);
        return S_OK;
    }
    atomic_fetch_add(&report->notifications[available - eMemoryAvailableLow], 1);
    /* A runtime reacts: it asks for the load and queries. A host that notifies holding its own lock hangs here. */
    IHostMemoryManager *m = impl_from_ICLRMemoryNotificationCallback(iface)->m;
    MEMORY_BASIC_INFORMATION mbi;
    SIZE_T n;
    DWORD load;
    SIZE_T avail;
    atomic_store(&report->in_callback, hm_reentry_query);
    IHostMemoryManager_VirtualQuery(m, &mbi, &mbi, sizeof mbi, &n);
    atomic_store(&report->in_callback, hm_reentry_load);
    IHostMemoryManager_GetMemoryLoad(m, &load, &avail);
    atomic_store(&report->in_callback, NULL);
    return S_OK;
}

static const ICLRMemoryNotificationCallbackVtbl counter_vtbl = {counter_QueryInterface, counter_AddRef,
                                                                counter_Release, counter_OnMemoryNotification};

/* ---- The run ------------------------------------------------------------------------------------------------- */

HRESULT hm__stress_run(IHostMemoryManager *m, const hm_stress_config *config, hm_stress_report *report)
{
    memset(report, 0, sizeof *report);
    if (!m || config->threads == 0 || config->threads > HM_STRESS_MAX_THREADS || (!config->ops && config->seconds <= 0) ||
        (config->workload != HM_STRESS_MIXED && config->workload != HM_STRESS_HEAP))
        return E_INVALIDARG;
    report->threads = config->threads;
    IHostMalloc *shared = NULL;
    HRESULT hr = E_FAIL;
    /* With faults armed, CreateMalloc itself may be chosen to fail: try again rather than count it. */
    for (int tries = 0; tries < 100 && !shared; tries++)
        hr = IHostMemoryManager_CreateMalloc(m, MALLOC_THREADSAFE, &shared);
    if (!shared)
        return FAILED(hr) ? hr : E_POINTER;
    hr = S_OK;
    char why[200];
    IHostMemoryManager *host = config->unwrapped ? config->unwrapped : m;
    IHostMalloc *host_heap = NULL;
    bool counted = refcounts_ok((IUnknown *)host, why, sizeof why);
    if (counted && SUCCEEDED(IHostMemoryManager_CreateMalloc(host, 0, &host_heap)) && host_heap) {
        counted = refcounts_ok((IUnknown *)host_heap, why, sizeof why);
        IHostMalloc_Release(host_heap);
    }
    if (!counted) {
        snprintf(report->thread[0].violation, sizeof report->thread[0].violation, "before the threads started: %s", why);
        atomic_fetch_add(&report->violations, 1);
        IHostMalloc_Release(shared);
        return S_OK;
    }
    notification_counter *counter = calloc(1, sizeof *counter);
    worker *workers = aligned_alloc(_Alignof(worker), config->threads * sizeof *workers); /* its lines its own */
    if (workers)
        memset(workers, 0, config->threads * sizeof *workers);
    pthread_t *threads = calloc(config->threads, sizeof *threads);
    _Atomic uint64_t *mailbox = config->workload == HM_STRESS_HEAP ? calloc(MAILBOX_SLOTS, sizeof *mailbox) : NULL;
    if (!counter || !workers || !threads || (config->workload == HM_STRESS_HEAP && !mailbox)) {
        free(mailbox);
        free(counter);
        free(workers);
        free(threads);
        IHostMalloc_Release(shared);
        return E_OUTOFMEMORY;
    }
    counter->ICLRMemoryNotificationCallback_iface.lpVtbl = &counter_vtbl;
    atomic_init(&counter->refs, 1);
    atomic_init(&counter->report, report);
    counter->m = m;
    IHostMemoryManager_RegisterMemoryNotificationCallback(m, &counter->ICLRMemoryNotificationCallback_iface);
    uint64_t t0 = hm_now_ns();
    uint64_t every_ms = config->load_every_ms ? config->load_every_ms : 100;
    load_sampler sampler = {.started_ns = t0, .every_ns = every_ms * 1000000u, .next_ns = t0};
    /* The first point, before any thread runs: the host's load as the run found it, at time 0 however late the
     * threads start (on a busy machine the first worker ran 50 ms and more after t0). */
    sample_load(m, report, &sampler, true);
    unsigned started = 0;
    for (unsigned i = 0; i < config->threads; i++) {
        workers[i] = (worker){.id = (int)i + 1, .m = m, .shared_heap = shared, .mailbox = mailbox,
                              .seed = config->seed * 1000 + i, .check_refusals = config->check_refusals && config->verify,
                              .verify = config->verify, .report = report, .out = &report->thread[i]};
        if (config->ops) /* the first ops % threads threads take one more, so the total is exact */
            workers[i].ops_limit = config->ops / config->threads + (i < config->ops % config->threads);
        if (config->ops && !workers[i].ops_limit)
            continue;
        if (started == 0)
            workers[i].sampler = &sampler;
        if (pthread_create(&threads[started], NULL, run_worker, &workers[i]) != 0) {
            hr = E_OUTOFMEMORY;
            atomic_store(&report->stop, true); /* the threads that did start stop too */
            break;
        }
        started++;
    }
    while (!config->ops || config->progress) {
        double elapsed = (double)(hm_now_ns() - t0) / 1e9;
        if (atomic_load(&report->stop) || (!config->ops && elapsed >= config->seconds))
            break;
        if (config->ops) { /* done when every thread has done its share */
            bool all_done = true;
            for (unsigned i = 0; i < config->threads; i++)
                all_done &= atomic_load_explicit(&report->thread[i].done, memory_order_relaxed) >= workers[i].ops_limit;
            if (all_done)
                break;
        }
        if (config->progress)
            config->progress(report, elapsed, config->progress_ctx);
        double left = config->ops ? 0.1 : config->seconds - elapsed;
        usleep((useconds_t)((left < 0.1 ? left : 0.1) * 1e6) + 1);
    }
    if (!config->ops)
        atomic_store(&report->stop, true);
    for (unsigned i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    report->seconds = (double)(hm_now_ns() - t0) / 1e9;
    atomic_store(&counter->report, NULL);
    ICLRMemoryNotificationCallback_Release(&counter->ICLRMemoryNotificationCallback_iface);
    for (int i = 0; mailbox && i < MAILBOX_SLOTS; i++) /* blocks still in flight between threads */
        if (mailbox[i])
            IHostMalloc_Free(shared, mail_block(mailbox[i]));
    free(mailbox);
    IHostMalloc_Release(shared);
    /* The last point, with everything given back: a load that stays up now is memory the host kept. Not after a
     * violation: the host may be broken, and a crash here would hide the finding. */
    if (!atomic_load(&report->violations))
        sample_load(m, report, &sampler, true);
    free(workers);
    free(threads);
    return hr;
}

/* The sum over threads of one of each thread's per-operation arrays. */
static uint64_t sum_over_threads(const hm_stress_report *report, size_t array_offset)
{
    uint64_t n = 0;
    for (unsigned t = 0; t < report->threads; t++) {
        const uint64_t *counts = (const uint64_t *)((const char *)&report->thread[t] + array_offset);
        for (int op = 0; op < HM_STRESS_OP_COUNT; op++)
            n += counts[op];
    }
    return n;
}

uint64_t hm__stress_total_ops(const hm_stress_report *report)
{
    return sum_over_threads(report, offsetof(hm_stress_thread, ops));
}

uint64_t hm__stress_total_failures(const hm_stress_report *report)
{
    return sum_over_threads(report, offsetof(hm_stress_thread, failures));
}

double hm__stress_latency_quantile(const hm_stress_report *report, int op, double q)
{
    uint64_t hist[HM_STRESS_HIST_BUCKETS] = {0}, total = 0;
    for (unsigned t = 0; t < report->threads; t++)
        for (int o = 0; o < HM_STRESS_OP_COUNT; o++)
            if (op == HM_STRESS_OP_COUNT || o == op)
                for (int b = 0; b < HM_STRESS_HIST_BUCKETS; b++) {
                    hist[b] += report->thread[t].latency[o][b];
                    total += report->thread[t].latency[o][b];
                }
    if (!total)
        return 0;
    uint64_t want = (uint64_t)((double)total * q), seen = 0;
    for (int b = 0; b < HM_STRESS_HIST_BUCKETS; b++) {
        seen += hist[b];
        if (seen > want)
            return (double)(1ull << b);
    }
    return (double)(1ull << (HM_STRESS_HIST_BUCKETS - 1));
}

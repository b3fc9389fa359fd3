/* The address-space ledger (see ledger.h). */
#include "internal.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Inconsistencies kept as text; older ones are overwritten but still counted. */
#define PROBLEM_RING 64
#define PROBLEM_LINE 160

typedef struct ledger_range {
    uintptr_t start;
    uint64_t size;
} ledger_range;

struct hm_ledger {
    hm_budget *budget; /* may be NULL: then nothing is charged and Needs always has room */
    pthread_mutex_t lock;
    hm_fork_entry fork_entry; /* the lock, held across fork() */
    ledger_range *ranges; /* sorted by start, disjoint, none empty */
    size_t count, cap;
    uint64_t bytes;
    char (*problems)[PROBLEM_LINE]; /* a ring of PROBLEM_RING lines, made at the first problem (most ledgers have none) */
    size_t problems_logged;
    bool log_to_stderr; /* HOSTMEM_LOG, read once: getenv is not safe against a concurrent setenv */
};

hm_ledger *hm__ledger_create(hm_budget *budget)
{
    hm_ledger *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->budget = budget;
    const char *log = getenv("HOSTMEM_LOG");
    l->log_to_stderr = log && *log && strcmp(log, "0") != 0;
    pthread_mutex_init(&l->lock, NULL);
    hm__fork_register_mutex(&l->fork_entry, &l->lock, HM_FORK_LEDGER);
    return l;
}

void hm__ledger_destroy(hm_ledger *l)
{
    if (!l)
        return;
    hm__fork_unregister(&l->fork_entry);
    if (l->budget && l->bytes)
        hm__budget_uncharge(l->budget, l->bytes);
    free(l->ranges);
    free(l->problems);
    pthread_mutex_destroy(&l->lock);
    free(l);
}

/* Called with the lock held, so lines are numbered and printed in the order they happened. */
__attribute__((format(printf, 2, 3))) static void problem(hm_ledger *l, const char *fmt, ...)
{
    if (!l->problems)
        l->problems = calloc(PROBLEM_RING, PROBLEM_LINE);
    char spare[PROBLEM_LINE]; /* without a ring (out of memory) the line is still counted and may be printed */
    char *line = l->problems ? l->problems[l->problems_logged % PROBLEM_RING] : spare;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, PROBLEM_LINE, fmt, ap);
    va_end(ap);
    l->problems_logged++;
    if (l->log_to_stderr)
        fprintf(stderr, "hostmem: ledger: %s\n", line);
}

/* Index of the first range whose start is >= start. */
static size_t lower_bound(const hm_ledger *l, uintptr_t start)
{
    size_t lo = 0, hi = l->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (l->ranges[mid].start < start)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

void hm__ledger_reset(hm_ledger *l)
{
    pthread_mutex_lock(&l->lock);
    if (l->budget && l->bytes)
        hm__budget_uncharge(l->budget, l->bytes);
    l->count = 0;
    l->bytes = 0;
    l->problems_logged = 0; /* (the ring stays allocated; only logged lines are ever read) */
    pthread_mutex_unlock(&l->lock);
}

HRESULT hm__ledger_needs(hm_ledger *l, uintptr_t start, uint64_t size)
{
    (void)start; /* where the runtime wanted the view says nothing about how much room there is */
    if (size == 0 || !l->budget)
        return S_OK; /* the CLR passes 0 for "the whole file": nothing to weigh */
    /* Room is judged at eAppDomainCritical's ceiling: the runtime asks before it maps, and a refusal only makes it
     * report an out-of-memory it can handle. Nothing is charged: Acquired does that once the view exists. */
    uint64_t charged = atomic_load(&l->budget->charged);
    uint64_t ceiling = hm__budget_ceiling(l->budget, eAppDomainCritical);
    return size <= ceiling && charged <= ceiling - size ? S_OK : E_OUTOFMEMORY;
}

/* SSCLI 2.0 passes the size it asked MapViewOfFile for, which is 0 for "the whole file" (its PAL's MapViewOfFile path).
 * The view is measured then, as CoreCLR does: the run of mapped pages the process map shows from start. */
static uint64_t measure_view(uintptr_t start)
{
    MEMORY_BASIC_INFORMATION mbi;
    if (!start || hm__procmaps_query(start, &mbi) != S_OK || mbi.State == MEM_FREE)
        return 0;
    return (uint64_t)mbi.RegionSize;
}

HRESULT hm__ledger_acquired(hm_ledger *l, uintptr_t start, uint64_t size)
{
    if (size == 0)
        size = measure_view(start);
    pthread_mutex_lock(&l->lock);
    HRESULT hr = S_OK;
    if (!start || !size || size - 1 > UINTPTR_MAX - start) {
        problem(l, "AcquiredVirtualAddressSpace(0x%" PRIxPTR ", 0x%" PRIx64 "): %s", start, size,
                !start  ? "NULL start, not a range"
                : !size ? "size 0 and nothing mapped there to measure"
                        : "the range wraps around the address space");
        hr = E_INVALIDARG;
        goto out;
    }
    uintptr_t last = start + (uintptr_t)(size - 1); /* inclusive: a range may end at the very top */
    size_t i = lower_bound(l, start);
    const ledger_range *other = NULL;
    if (i > 0 && l->ranges[i - 1].start + (l->ranges[i - 1].size - 1) >= start)
        other = &l->ranges[i - 1];
    else if (i < l->count && l->ranges[i].start <= last)
        other = &l->ranges[i];
    if (other) {
        problem(l,
                "AcquiredVirtualAddressSpace(0x%" PRIxPTR ", 0x%" PRIx64 "): overlaps the acquired range 0x%" PRIxPTR
                "+0x%" PRIx64 " (not released, or acquired twice)",
                start, size, other->start, other->size);
        hr = HOST_E_INVALIDOPERATION;
        goto out;
    }
    if (l->count == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        ledger_range *grown = realloc(l->ranges, cap * sizeof *grown);
        if (!grown) {
            problem(l, "AcquiredVirtualAddressSpace(0x%" PRIxPTR ", 0x%" PRIx64 "): out of memory recording it",
                    start, size);
            hr = E_OUTOFMEMORY;
            goto out;
        }
        l->ranges = grown;
        l->cap = cap;
    }
    memmove(&l->ranges[i + 1], &l->ranges[i], (l->count - i) * sizeof *l->ranges);
    l->ranges[i] = (ledger_range){start, size};
    l->count++;
    l->bytes += size;
    if (l->budget)
        hm__budget_charge_always(l->budget, size);
out:
    pthread_mutex_unlock(&l->lock);
    return hr;
}

HRESULT hm__ledger_released(hm_ledger *l, uintptr_t start)
{
    pthread_mutex_lock(&l->lock);
    HRESULT hr = S_OK;
    size_t i = lower_bound(l, start);
    if (i == l->count || l->ranges[i].start != start) {
        if (i > 0 && start - l->ranges[i - 1].start < l->ranges[i - 1].size)
            problem(l,
                    "ReleasedVirtualAddressSpace(0x%" PRIxPTR "): no acquired range starts there (it is inside 0x%" PRIxPTR
                    "+0x%" PRIx64 ")",
                    start, l->ranges[i - 1].start, l->ranges[i - 1].size);
        else
            problem(l, "ReleasedVirtualAddressSpace(0x%" PRIxPTR "): no acquired range starts there", start);
        hr = HOST_E_INVALIDOPERATION;
    } else {
        uint64_t size = l->ranges[i].size;
        memmove(&l->ranges[i], &l->ranges[i + 1], (l->count - i - 1) * sizeof *l->ranges);
        l->count--;
        l->bytes -= size;
        if (l->budget)
            hm__budget_uncharge(l->budget, size);
    }
    pthread_mutex_unlock(&l->lock);
    return hr;
}

uint64_t hm__ledger_ranges(hm_ledger *l)
{
    pthread_mutex_lock(&l->lock);
    uint64_t n = l->count;
    pthread_mutex_unlock(&l->lock);
    return n;
}

uint64_t hm__ledger_bytes(hm_ledger *l)
{
    pthread_mutex_lock(&l->lock);
    uint64_t n = l->bytes;
    pthread_mutex_unlock(&l->lock);
    return n;
}

size_t hm__ledger_problems(hm_ledger *l, char (*out)[160], size_t max)
{
    pthread_mutex_lock(&l->lock);
    size_t total = l->problems_logged, kept = !l->problems ? 0 : total < PROBLEM_RING ? total : PROBLEM_RING;
    size_t n = kept < max ? kept : max, first = total - n;
    for (size_t k = 0; k < n; k++)
        memcpy(out[k], l->problems[(first + k) % PROBLEM_RING], PROBLEM_LINE);
    pthread_mutex_unlock(&l->lock);
    return total;
}

int hm__ledger_check(hm_ledger *l, char *msg, size_t msglen)
{
    pthread_mutex_lock(&l->lock);
    uint64_t sum = 0;
    int bad = 0;
    for (size_t i = 0; i < l->count && !bad; i++) {
        const ledger_range *r = &l->ranges[i], *prev = i > 0 ? &l->ranges[i - 1] : NULL;
        sum += r->size;
        if (r->size == 0 || r->size - 1 > UINTPTR_MAX - r->start) {
            snprintf(msg, msglen, "ledger range %zu (0x%" PRIxPTR "+0x%" PRIx64 ") is empty or wraps", i, r->start,
                     r->size);
            bad = 1;
        } else if (prev && prev->start + (prev->size - 1) >= r->start) {
            snprintf(msg, msglen, "ledger range %zu (0x%" PRIxPTR ") overlaps or precedes the one before (0x%" PRIxPTR
                     "+0x%" PRIx64 ")", i, r->start, prev->start, prev->size);
            bad = 1;
        }
    }
    if (!bad && sum != l->bytes) {
        snprintf(msg, msglen, "ledger ranges add up to %" PRIu64 " bytes, %" PRIu64 " counted", sum, l->bytes);
        bad = 1;
    }
    pthread_mutex_unlock(&l->lock);
    if (!bad && msglen)
        msg[0] = '\0';
    return bad ? -1 : 0;
}

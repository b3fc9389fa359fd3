/* The address-space ledger (see ledger.h). */
#include "ledger.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROBLEM_RING 64

typedef struct ledger_range {
    uintptr_t start;
    uint64_t size;
} ledger_range;

struct hm_ledger {
    hm_budget *budget;
    pthread_mutex_t lock;
    ledger_range *ranges; /* sorted by start, disjoint */
    size_t count, cap;
    uint64_t bytes;
    char problems[PROBLEM_RING][160];
    size_t problems_logged;
};

hm_ledger *hm_ledger_create(hm_budget *budget)
{
    hm_ledger *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->budget = budget;
    pthread_mutex_init(&l->lock, NULL);
    return l;
}

void hm_ledger_destroy(hm_ledger *l)
{
    if (!l)
        return;
    if (l->budget && l->bytes)
        hm_budget_uncharge(l->budget, l->bytes);
    free(l->ranges);
    pthread_mutex_destroy(&l->lock);
    free(l);
}

/* Called with the lock held. */
static void problem(hm_ledger *l, const char *fmt, ...)
{
    char *line = l->problems[l->problems_logged % PROBLEM_RING];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof l->problems[0], fmt, ap);
    va_end(ap);
    l->problems_logged++;
    if (getenv("HOSTMEM_LOG"))
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

HRESULT hm_ledger_needs(hm_ledger *l, uintptr_t start, uint64_t size)
{
    (void)start;
    if (size == 0 || !l->budget)
        return S_OK; /* the CLR passes 0 for "the whole file": nothing to weigh */
    /* Room is judged at eAppDomainCritical's ceiling: the runtime asks before it maps, and a refusal only makes it
     * report an out-of-memory it can handle. */
    uint64_t charged = atomic_load(&l->budget->charged);
    uint64_t ceiling = hm_budget_ceiling(l->budget, eAppDomainCritical);
    return size <= ceiling && charged <= ceiling - size ? S_OK : E_OUTOFMEMORY;
}

HRESULT hm_ledger_acquired(hm_ledger *l, uintptr_t start, uint64_t size)
{
    pthread_mutex_lock(&l->lock);
    HRESULT hr = S_OK;
    if (!start || !size || size > UINTPTR_MAX - start) {
        problem(l, "AcquiredVirtualAddressSpace(%#lx, %#llx): an empty or impossible range", (unsigned long)start,
                (unsigned long long)size);
        hr = E_INVALIDARG;
        goto out;
    }
    size_t i = lower_bound(l, start);
    bool overlaps_next = i < l->count && l->ranges[i].start < start + size;
    bool overlaps_prev = i > 0 && l->ranges[i - 1].start + l->ranges[i - 1].size > start;
    if (overlaps_next || overlaps_prev) {
        const ledger_range *o = overlaps_prev ? &l->ranges[i - 1] : &l->ranges[i];
        problem(l, "AcquiredVirtualAddressSpace(%#lx, %#llx): overlaps the acquired range %#lx+%#llx",
                (unsigned long)start, (unsigned long long)size, (unsigned long)o->start, (unsigned long long)o->size);
        hr = HOST_E_INVALIDOPERATION;
        goto out;
    }
    if (l->count == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        ledger_range *grown = realloc(l->ranges, cap * sizeof *grown);
        if (!grown) {
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
        hm_budget_charge_always(l->budget, size);
out:
    pthread_mutex_unlock(&l->lock);
    return hr;
}

HRESULT hm_ledger_released(hm_ledger *l, uintptr_t start)
{
    pthread_mutex_lock(&l->lock);
    HRESULT hr = S_OK;
    size_t i = lower_bound(l, start);
    if (i == l->count || l->ranges[i].start != start) {
        problem(l, "ReleasedVirtualAddressSpace(%#lx): no acquired range starts there", (unsigned long)start);
        hr = HOST_E_INVALIDOPERATION;
    } else {
        uint64_t size = l->ranges[i].size;
        memmove(&l->ranges[i], &l->ranges[i + 1], (l->count - i - 1) * sizeof *l->ranges);
        l->count--;
        l->bytes -= size;
        if (l->budget)
            hm_budget_uncharge(l->budget, size);
    }
    pthread_mutex_unlock(&l->lock);
    return hr;
}

uint64_t hm_ledger_ranges(hm_ledger *l)
{
    pthread_mutex_lock(&l->lock);
    uint64_t n = l->count;
    pthread_mutex_unlock(&l->lock);
    return n;
}

uint64_t hm_ledger_bytes(hm_ledger *l)
{
    pthread_mutex_lock(&l->lock);
    uint64_t n = l->bytes;
    pthread_mutex_unlock(&l->lock);
    return n;
}

size_t hm_ledger_problems(hm_ledger *l, char (*out)[160], size_t max)
{
    pthread_mutex_lock(&l->lock);
    size_t total = l->problems_logged, kept = total < PROBLEM_RING ? total : PROBLEM_RING;
    size_t n = kept < max ? kept : max, first = total - n;
    for (size_t k = 0; k < n; k++)
        memcpy(out[k], l->problems[(first + k) % PROBLEM_RING], 160);
    pthread_mutex_unlock(&l->lock);
    return total;
}

int hm_ledger_check(hm_ledger *l, char *msg, size_t msglen)
{
    pthread_mutex_lock(&l->lock);
    uint64_t sum = 0;
    int bad = 0;
    for (size_t i = 0; i < l->count && !bad; i++) {
        sum += l->ranges[i].size;
        if (l->ranges[i].size == 0 || (i > 0 && l->ranges[i - 1].start + l->ranges[i - 1].size > l->ranges[i].start)) {
            snprintf(msg, msglen, "ledger range %zu (%#lx) is empty or overlaps the one before", i,
                     (unsigned long)l->ranges[i].start);
            bad = 1;
        }
    }
    if (!bad && sum != l->bytes) {
        snprintf(msg, msglen, "ledger ranges add up to %llu bytes, %llu counted", (unsigned long long)sum,
                 (unsigned long long)l->bytes);
        bad = 1;
    }
    pthread_mutex_unlock(&l->lock);
    return bad ? -1 : 0;
}

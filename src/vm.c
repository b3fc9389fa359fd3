/* Virtual memory with Windows' semantics (see vm.h for the design, docs/semantics.md for each rule). */
#include "internal.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define PAGE_SHIFT 12
#define GRANULE_SHIFT 16
#define PAGES_PER_GRANULE (HM_GRANULARITY / HM_PAGE_SIZE)
#define DEFAULT_SPAN_SIZE ((size_t)16 << 30)
#define MIN_SPAN_SIZE ((size_t)64 << 20)
#define INLINE_RUNS 2

/* A run of pages with the same protection: 0 means reserved (not committed); otherwise the committed protection
 * without the cache modifiers (those belong to the allocation, rule 73), PAGE_GUARD included. */
typedef struct run {
    uint32_t page;
    uint32_t protect;
} run;

typedef struct span span;

/* One cache line: a query touches the granule table and this, and nothing else. */
typedef struct region {
    uintptr_t base;
    span *span;
    run *runs;                /* inline_runs, or a malloc'd array when there are more */
    uint32_t pages;
    uint32_t committed_pages;
    DWORD alloc_protect;
    uint32_t nruns, cap;
    run inline_runs[INLINE_RUNS];
} region;

/* Regions come from 2 MiB slabs on huge pages (one TLB entry covers 32768 of them) and go back to a free list;
 * slabs are returned to the OS when the vm goes. The first slab is small (1023 regions, no huge page): most managers
 * never need more, and clearing a huge page would dominate the cost of a short-lived one (a fuzz input, a test). */
#define SLAB_SIZE ((size_t)2 << 20)
#define FIRST_SLAB_SIZE ((size_t)64 << 10)
_Static_assert(sizeof(region) == 64, "a region is one cache line");
typedef struct region_slab {
    struct region_slab *next;
    size_t size;
} region_slab;

struct span {
    uintptr_t base;
    size_t size;
    size_t granules;
    bool dedicated;      /* holds exactly one region, `only` */
    region *only;
    region *slots;       /* shared spans: one slot per granule. A reservation lives in the slot of its first
                            granule (pages != 0); its other granules' slots hold only its base (pages == 0);
                            free slots are zero. A lookup is one cache line. */
    uint64_t *used;      /* shared spans: bitmap of granules in use */
    size_t lowest_free;  /* no free granule below this one */
    size_t used_count;
};

struct hm_vm {
    const hm_os *os;
    hm_budget *budget;
    size_t span_size;
    bool deterministic;
    uintptr_t next_hint; /* deterministic mode: where the next span goes */
    size_t first_span_size; /* span_size and next_hint as created: where hm__vm_reset goes back to */
    uintptr_t first_hint;
    span **spares;       /* spans hm__vm_reset kept mapped: empty, out of the books, reused by span_create */
    size_t nspares, cap_spares;
    pthread_rwlock_t lock;
    hm_fork_entry fork_entry; /* the lock, held across fork() */
    span **spans;        /* sorted by base */
    region_slab *slabs;
    region *free_regions; /* linked through their `base` field */
    size_t slab_used;     /* regions handed out of the newest slab */
    size_t nspans, cap_spans;
    uint64_t reservations, reserved_pages, committed_pages, peak_committed_pages;
    _Atomic uint64_t guard_trips;
    bool guard_registered;
    uintptr_t os_mismatch; /* where the OS refused to undo a failed change: the books no longer match it */
};

/* Memory for books that lookups walk at random: huge pages when the kernel has them (THP in madvise mode). */
static void *map_table(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
#ifdef MADV_HUGEPAGE
    if (size >= SLAB_SIZE)
        madvise(p, size, MADV_HUGEPAGE);
#endif
    return p;
}

static size_t table_bytes(size_t n, size_t item) { return (n * item + HM_PAGE_SIZE - 1) & ~(HM_PAGE_SIZE - 1); }

static inline uintptr_t granule_down(uintptr_t a) { return a & ~(uintptr_t)(HM_GRANULARITY - 1); }
static inline uintptr_t region_end(const region *r) { return r->base + ((uintptr_t)r->pages << PAGE_SHIFT); }

static HRESULT hr_from_errno(int err)
{
    switch (err) {
    case ENOMEM: return E_OUTOFMEMORY;
    case EEXIST: return HM_E_INVALID_ADDRESS;
    case EINVAL: return HM_E_INVALID_PARAMETER;
    default: return HRESULT_FROM_WIN32(ERROR_ACCESS_DENIED); /* EACCES, EPERM: the OS refused the protection */
    }
}

/* ---- Calls into the OS layer --------------------------------------------------------------------------------
 * Every primitive goes through these, so a test can make any of them fail (os.h). Each caller checks the result:
 * a call fails with the books and the mappings as they were, or the failure is one that cannot be reported (a
 * destroy) and is said so where it happens. */

static int os_map_span(hm_vm *vm, uintptr_t hint, size_t size, bool fixed, uintptr_t *out)
{
    bool partial;
    int err = hm__os_injected(HM_OS_MAP_SPAN, &partial);
    return err ? err : vm->os->map_span(hint, size, fixed, out);
}

static int os_unmap_span(hm_vm *vm, uintptr_t addr, size_t size)
{
    bool partial;
    int err = hm__os_injected(HM_OS_UNMAP_SPAN, &partial);
    return err ? err : vm->os->unmap_span(addr, size);
}

/* commit or protect (op says which). */
static int os_set_protection(hm_vm *vm, hm_os_op op, uintptr_t addr, size_t size, int prot)
{
    bool partial;
    int (*apply)(uintptr_t, size_t, int) = op == HM_OS_COMMIT ? vm->os->commit : vm->os->protect;
    int err = hm__os_injected(op, &partial);
    if (!err)
        return apply(addr, size, prot);
    if (partial && size > HM_PAGE_SIZE)
        apply(addr, HM_PAGE_SIZE, prot); /* as mprotect leaves a range it failed on part-way */
    return err;
}

static int os_decommit(hm_vm *vm, uintptr_t addr, size_t size)
{
    bool partial;
    int err = hm__os_injected(HM_OS_DECOMMIT, &partial);
    return err ? err : vm->os->decommit(addr, size);
}

static int os_reset(hm_vm *vm, uintptr_t addr, size_t size)
{
    bool partial;
    int err = hm__os_injected(HM_OS_RESET, &partial);
    return err ? err : vm->os->reset(addr, size);
}

/* ---- Protections ------------------------------------------------------------------------------------------ */

int hm__protect_to_unix(DWORD protect)
{
    if (protect & PAGE_GUARD)
        return HM_PROT_NONE;
    switch (protect & 0xFFu) {
    case PAGE_READONLY: return HM_PROT_READ;
    case PAGE_READWRITE: return HM_PROT_READ | HM_PROT_WRITE;
    case PAGE_EXECUTE: return HM_PROT_READ | HM_PROT_EXEC; /* as Wine: x86 cannot execute without read */
    case PAGE_EXECUTE_READ: return HM_PROT_READ | HM_PROT_EXEC;
    case PAGE_EXECUTE_READWRITE: return HM_PROT_READ | HM_PROT_WRITE | HM_PROT_EXEC;
    default: return HM_PROT_NONE;
    }
}

/* ---- Runs of a region ------------------------------------------------------------------------------------- */

/* Index of the run holding page (the last run starting at or before it). */
static uint32_t run_index(const region *r, size_t page)
{
    uint32_t lo = 0, hi = r->nruns; /* invariant: runs[lo].page <= page < runs[hi].page */
    while (hi - lo > 1) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (r->runs[mid].page <= page)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

static size_t run_end(const region *r, uint32_t i) { return i + 1 < r->nruns ? r->runs[i + 1].page : r->pages; }

/* Makes room for two more runs, so that run_assign cannot fail afterwards. */
static int runs_reserve(region *r)
{
    uint32_t need = r->nruns + 2;
    if (need <= r->cap)
        return 0;
    uint32_t cap = r->cap * 2 > need ? r->cap * 2 : need;
    run *grown = malloc(sizeof(run) * cap);
    if (!grown)
        return ENOMEM;
    memcpy(grown, r->runs, sizeof(run) * r->nruns);
    if (r->runs != r->inline_runs)
        free(r->runs);
    r->runs = grown;
    r->cap = cap;
    return 0;
}

/* Sets pages [p0, p1) to `protect`. Needs runs_reserve() first. */
static void run_assign(region *r, size_t p0, size_t p1, uint32_t protect)
{
    uint32_t i0 = run_index(r, p0), i1 = run_index(r, p1 - 1);
    run head = r->runs[i0], tail = {(uint32_t)p1, r->runs[i1].protect};
    bool keep_head = head.page < p0, keep_tail = p1 < run_end(r, i1);
    uint32_t after = r->nruns - (i1 + 1); /* runs that follow unchanged */
    uint32_t at = i0 + (keep_head ? 1 : 0);
    uint32_t middle = 1 + (keep_tail ? 1 : 0);
    memmove(&r->runs[at + middle], &r->runs[i1 + 1], sizeof(run) * after);
    r->runs[at] = (run){(uint32_t)p0, protect};
    if (keep_tail)
        r->runs[at + 1] = tail;
    r->nruns = at + middle + after;
    /* Merge neighbours with equal protection around the change. */
    uint32_t lo = at > 0 ? at - 1 : 0, hi = at + middle < r->nruns ? at + middle : r->nruns - 1;
    uint32_t w = lo;
    for (uint32_t k = lo + 1; k <= hi; k++) {
        if (r->runs[k].protect == r->runs[w].protect)
            continue;
        r->runs[++w] = r->runs[k];
    }
    uint32_t removed = hi - w;
    if (removed) {
        memmove(&r->runs[w + 1], &r->runs[hi + 1], sizeof(run) * (r->nruns - (hi + 1)));
        r->nruns -= removed;
    }
}

/* Committed pages in [p0, p1); *all_committed says whether every page is. */
static size_t committed_in(const region *r, size_t p0, size_t p1, bool *all_committed)
{
    size_t n = 0;
    bool all = true;
    for (uint32_t i = run_index(r, p0); i < r->nruns && r->runs[i].page < p1; i++) {
        size_t a = r->runs[i].page > p0 ? r->runs[i].page : p0, e = run_end(r, i), b = e < p1 ? e : p1;
        if (r->runs[i].protect)
            n += b - a;
        else
            all = false;
    }
    if (all_committed)
        *all_committed = all;
    return n;
}

/* Reapplies the books' protections to the OS for [p0, p1): after a commit or protect failed part-way (mprotect
 * changes the mappings one by one and can stop at any). Undoing brings the mappings back to what they were, which
 * the kernel has room for; should it refuse all the same, the books no longer tell the truth about those pages,
 * and hm__vm_check reports it from then on. */
static void os_restore(hm_vm *vm, region *r, size_t p0, size_t p1)
{
    for (uint32_t i = run_index(r, p0); i < r->nruns && r->runs[i].page < p1; i++) {
        size_t a = r->runs[i].page > p0 ? r->runs[i].page : p0, e = run_end(r, i), b = e < p1 ? e : p1;
        uintptr_t at = r->base + (a << PAGE_SHIFT);
        if (os_set_protection(vm, HM_OS_PROTECT, at, (b - a) << PAGE_SHIFT, hm__protect_to_unix(r->runs[i].protect)) &&
            !vm->os_mismatch)
            vm->os_mismatch = at;
    }
}

/* The pages from the first committed page of r in [p0, p1) to the last: [*a, *b), false when none is committed. */
static bool committed_bounds(const region *r, size_t p0, size_t p1, size_t *a, size_t *b)
{
    bool any = false;
    for (uint32_t i = run_index(r, p0); i < r->nruns && r->runs[i].page < p1; i++) {
        if (!r->runs[i].protect)
            continue;
        size_t e = run_end(r, i);
        if (!any)
            *a = r->runs[i].page > p0 ? r->runs[i].page : p0;
        *b = e < p1 ? e : p1;
        any = true;
    }
    return any;
}

/* Discards the committed pages of r in [p0, p1) with ONE call over them (reserved pages between are inaccessible
 * and zero already): the kernel refuses a range before it changes any of it, so a failure leaves every page as it
 * was, and the caller fails with nothing changed. */
static int discard_committed(hm_vm *vm, region *r, size_t p0, size_t p1)
{
    size_t a = 0, b = 0; /* set when committed_bounds returns true (gcc -O3 cannot see it) */
    if (!committed_bounds(r, p0, p1, &a, &b))
        return 0;
    return os_decommit(vm, r->base + (a << PAGE_SHIFT), (b - a) << PAGE_SHIFT);
}

/* ---- Spans ------------------------------------------------------------------------------------------------ */

static span *find_span(hm_vm *vm, uintptr_t a)
{
    size_t lo = 0, hi = vm->nspans;
    while (lo < hi) { /* first span with base > a */
        size_t mid = lo + (hi - lo) / 2;
        if (vm->spans[mid]->base <= a)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return NULL;
    span *s = vm->spans[lo - 1];
    return a - s->base < s->size ? s : NULL;
}

/* Whether [a, b) overlaps any span. */
static bool overlaps_span(hm_vm *vm, uintptr_t a, uintptr_t b)
{
    for (size_t i = 0; i < vm->nspans; i++)
        if (vm->spans[i]->base < b && a < vm->spans[i]->base + vm->spans[i]->size)
            return true;
    return false;
}

/* The reservation whose granules include granule g of a shared span, or NULL. */
static region *slot_region(const span *s, size_t g)
{
    region *r = &s->slots[g];
    if (r->pages)
        return r;
    if (!r->base)
        return NULL;
    return &s->slots[(r->base - s->base) >> GRANULE_SHIFT];
}

/* The reservation whose granules include address a (a may lie past its last page), or NULL. */
static region *granule_region(const span *s, uintptr_t a)
{
    return s->dedicated ? s->only : slot_region(s, (a - s->base) >> GRANULE_SHIFT);
}

static region *find_region(hm_vm *vm, uintptr_t a)
{
    span *s = find_span(vm, a);
    if (!s)
        return NULL;
    region *r = granule_region(s, a);
    return r && a >= r->base && a < region_end(r) ? r : NULL;
}

static bool bit_get(const uint64_t *bits, size_t i) { return (bits[i >> 6] >> (i & 63)) & 1; }
static void bit_set(uint64_t *bits, size_t i) { bits[i >> 6] |= (uint64_t)1 << (i & 63); }
static void bit_clear(uint64_t *bits, size_t i) { bits[i >> 6] &= ~((uint64_t)1 << (i & 63)); }

/* First granule >= from whose bit equals `value`, or limit. */
static size_t bit_find(const uint64_t *bits, size_t from, size_t limit, bool value)
{
    size_t i = from;
    while (i < limit) {
        uint64_t word = bits[i >> 6];
        if (!value)
            word = ~word;
        word &= ~(uint64_t)0 << (i & 63);
        if (word) {
            size_t found = (i & ~(size_t)63) + (size_t)__builtin_ctzll(word);
            return found < limit ? found : limit;
        }
        i = (i | 63) + 1;
    }
    return limit;
}

/* Lowest run of n free granules at or after the hint, or SIZE_MAX. */
static size_t place_bottom_up(const span *s, size_t n)
{
    size_t g = s->lowest_free;
    while (g + n <= s->granules) {
        g = bit_find(s->used, g, s->granules, false);
        if (g + n > s->granules)
            break;
        size_t busy = bit_find(s->used, g, g + n, true);
        if (busy == g + n)
            return g;
        g = busy + 1;
    }
    return SIZE_MAX;
}

/* Highest run of n free granules, or SIZE_MAX. */
static size_t place_top_down(const span *s, size_t n)
{
    size_t end = s->granules; /* candidate run ends here */
    while (end >= n + s->lowest_free) {
        size_t g = end - n, k = end;
        while (k > g && !bit_get(s->used, k - 1))
            k--;
        if (k == g)
            return g;
        end = k - 1; /* granule k-1 is used: the run must end before it */
    }
    return SIZE_MAX;
}

/* Room for one more span pointer in *array (count used of *cap), doubling from `first`. */
static bool span_array_room(span ***array, size_t count, size_t *cap, size_t first)
{
    if (count < *cap)
        return true;
    size_t grown_cap = *cap ? *cap * 2 : first;
    span **grown = realloc(*array, sizeof(span *) * grown_cap);
    if (!grown)
        return false;
    *array = grown;
    *cap = grown_cap;
    return true;
}

static int span_insert(hm_vm *vm, span *s)
{
    if (!span_array_room(&vm->spans, vm->nspans, &vm->cap_spans, 8))
        return ENOMEM;
    size_t i = vm->nspans;
    while (i > 0 && vm->spans[i - 1]->base > s->base) {
        vm->spans[i] = vm->spans[i - 1];
        i--;
    }
    vm->spans[i] = s;
    vm->nspans++;
    return 0;
}

static void span_remove(hm_vm *vm, span *s)
{
    size_t i = 0;
    while (i < vm->nspans && vm->spans[i] != s)
        i++;
    if (i == vm->nspans)
        return;
    memmove(&vm->spans[i], &vm->spans[i + 1], sizeof(span *) * (vm->nspans - i - 1));
    vm->nspans--;
}

/* Frees a span's books (its mapping is the caller's business). The tables are our own memory: an munmap the kernel
 * refuses leaks them, and changes nothing any caller can see. */
static void span_forget(span *s)
{
    if (s->slots)
        munmap(s->slots, table_bytes(s->granules, sizeof(region)));
    if (s->used)
        munmap(s->used, table_bytes((s->granules + 63) / 64, sizeof(uint64_t)));
    free(s);
}

/* Unmaps a span and frees its books, for paths that cannot report a failure (destroy, and last resorts): when the
 * kernel refuses (the span merged into a larger mapping at the map limit), its address space stays mapped, outside
 * every book. */
static void span_free(hm_vm *vm, span *s)
{
    os_unmap_span(vm, s->base, s->size);
    span_forget(s);
}

static bool spare_keep(hm_vm *vm, span *s);

/* Gives back a span that is out of the books and reads as zero: unmapped, or, when the kernel will not unmap it,
 * kept as a spare (its space stays ours: reused by span_create or unmapped later). */
static void span_drop(hm_vm *vm, span *s)
{
    if (os_unmap_span(vm, s->base, s->size) == 0 || !spare_keep(vm, s))
        span_forget(s);
}

/* A spare span (kept mapped by hm__vm_reset) of `size` bytes and the kind asked for at `at` (0: any), taken out of
 * the spares. Its tables are clear and its memory reads as zero, as a new mapping's would. */
static span *spare_take(hm_vm *vm, size_t size, uintptr_t at, bool dedicated)
{
    for (size_t i = 0; i < vm->nspares; i++) {
        span *s = vm->spares[i];
        if (s->size != size || s->dedicated != dedicated || (at && s->base != at))
            continue;
        vm->spares[i] = vm->spares[--vm->nspares];
        return s;
    }
    return NULL;
}

/* Unmaps the spares that meet [a, a+size): that space is free in a new vm, so a mapping there must not fail. */
static void spares_drop(hm_vm *vm, uintptr_t a, size_t size)
{
    for (size_t i = 0; i < vm->nspares;) {
        span *s = vm->spares[i];
        if (s->base < a + size && a < s->base + s->size && os_unmap_span(vm, s->base, s->size) == 0) {
            vm->spares[i] = vm->spares[--vm->nspares];
            span_forget(s);
        } else { /* elsewhere, or the kernel keeps it: a spare still (the mapping there then fails) */
            i++;
        }
    }
}

/* Maps a new span of `size` bytes. fixed_at != 0: exactly there. Otherwise the deterministic chain of hints (or
 * anywhere). The span may be a spare of the same kind and size (hm__vm_reset) instead: in deterministic mode or at a
 * fixed address only where a new one would have been mapped (it is the spare that keeps that address from being
 * free), so a reset vm places its spans as a new one does. */
static int span_create(hm_vm *vm, size_t size, bool dedicated, uintptr_t fixed_at, span **out)
{
    /* Room in the span list first, so that span_insert cannot fail once the span is mapped. */
    if (!span_array_room(&vm->spans, vm->nspans, &vm->cap_spans, 8))
        return ENOMEM;
    bool reuse = vm->nspares != 0;
    span *spare = NULL;
    uintptr_t base = 0;
    int err = 0;
    if (fixed_at) {
        if (!reuse || !(spare = spare_take(vm, size, fixed_at, dedicated))) {
            spares_drop(vm, fixed_at, size);
            err = os_map_span(vm, fixed_at, size, true, &base);
        }
    } else if (vm->deterministic) {
        /* Try the next addresses of the chain; a taken one (another manager, a library) moves us on, in the same
         * way on every run. */
        err = EEXIST;
        for (int attempt = 0; attempt < 16 && err == EEXIST; attempt++) {
            uintptr_t hint = vm->next_hint + (uintptr_t)attempt * vm->span_size;
            if (reuse && (spare = spare_take(vm, size, hint, dedicated)) != NULL)
                break;
            spares_drop(vm, hint, size);
            err = os_map_span(vm, hint, size, true, &base);
        }
        if (err && !spare && reuse)
            spare = spare_take(vm, size, 0, dedicated);
        if (spare) {
            base = spare->base;
            err = 0;
        } else if (err) {
            err = os_map_span(vm, 0, size, false, &base);
        }
        if (!err) {
            uintptr_t end = base + size;
            vm->next_hint = (end + HM_GRANULARITY - 1) & ~(uintptr_t)(HM_GRANULARITY - 1);
        }
    } else if (!reuse || !(spare = spare_take(vm, size, 0, dedicated))) {
        err = os_map_span(vm, 0, size, false, &base);
    }
    if (err)
        return err;
    span *s = spare;
    if (!s) {
        if (!(s = calloc(1, sizeof *s))) {
            os_unmap_span(vm, base, size); /* a refusal leaves an inaccessible mapping outside the books */
            return ENOMEM;
        }
        s->base = base;
        s->size = size;
        s->dedicated = dedicated;
        if (!dedicated) {
            s->granules = size >> GRANULE_SHIFT;
            s->slots = map_table(table_bytes(s->granules, sizeof(region)));
            s->used = map_table(table_bytes((s->granules + 63) / 64, sizeof(uint64_t)));
            if (!s->slots || !s->used) {
                span_free(vm, s);
                return ENOMEM;
            }
        }
    }
    span_insert(vm, s); /* cannot fail: room was made above */
    *out = s;
    return 0;
}

/* A new shared span, halving the size when the OS refuses a large one (ulimit -v, Valgrind's address space), and
 * remembering the size that worked. */
static int shared_span_create(hm_vm *vm, span **out)
{
    for (;;) {
        int err = span_create(vm, vm->span_size, false, 0, out);
        size_t half = (vm->span_size / 2) & ~(size_t)(HM_GRANULARITY - 1);
        if (err != ENOMEM || half < MIN_SPAN_SIZE)
            return err;
        vm->span_size = half;
    }
}

/* ---- Regions ---------------------------------------------------------------------------------------------- */

static region *region_alloc(hm_vm *vm)
{
    region *r = vm->free_regions;
    if (r) {
        vm->free_regions = (region *)r->base;
    } else {
        /* the first slot of a slab holds its link */
        size_t per_slab = vm->slabs ? (vm->slabs->size - sizeof(region)) / sizeof(region) : 0;
        if (!vm->slabs || vm->slab_used == per_slab) {
            size_t size = vm->slabs ? SLAB_SIZE : FIRST_SLAB_SIZE;
            region_slab *slab = map_table(size);
            if (!slab)
                return NULL;
            slab->size = size;
            slab->next = vm->slabs;
            vm->slabs = slab;
            vm->slab_used = 0;
        }
        r = (region *)((char *)vm->slabs + sizeof(region) * (1 + vm->slab_used++));
    }
    memset(r, 0, sizeof *r);
    return r;
}

static void region_release(hm_vm *vm, region *r)
{
    if (r->runs != r->inline_runs)
        free(r->runs);
    r->base = (uintptr_t)vm->free_regions;
    vm->free_regions = r;
}

/* A dedicated span's region comes from the slabs; a shared span's lives in its first granule's slot. */
static region *region_new(hm_vm *vm, uintptr_t base, size_t pages, DWORD alloc_protect, span *s)
{
    region *r = s->dedicated ? region_alloc(vm) : &s->slots[(base - s->base) >> GRANULE_SHIFT];
    if (!r)
        return NULL;
    r->base = base;
    r->pages = (uint32_t)pages;
    r->alloc_protect = alloc_protect;
    r->runs = r->inline_runs;
    r->cap = INLINE_RUNS;
    r->nruns = 1;
    r->runs[0] = (run){0, 0};
    r->span = s;
    return r;
}

static void region_attach(hm_vm *vm, region *r)
{
    span *s = r->span;
    if (!s->dedicated) {
        size_t g0 = (r->base - s->base) >> GRANULE_SHIFT;
        size_t n = (r->pages + PAGES_PER_GRANULE - 1) / PAGES_PER_GRANULE;
        bit_set(s->used, g0);
        for (size_t g = g0 + 1; g < g0 + n; g++) {
            s->slots[g].base = r->base;
            bit_set(s->used, g);
        }
        s->used_count += n;
        if (g0 == s->lowest_free)
            s->lowest_free = bit_find(s->used, g0 + n, s->granules, false);
    } else {
        s->only = r;
    }
    vm->reservations++;
    vm->reserved_pages += r->pages;
}

/* Takes a region out of the books and gives its span's space back. The caller has already decommitted its pages,
 * and for a dedicated span returned here (out of the books, its memory the caller's business) unmaps it. */
static span *region_detach(hm_vm *vm, region *r)
{
    span *s = r->span;
    if (!s->dedicated) {
        size_t g0 = (r->base - s->base) >> GRANULE_SHIFT;
        size_t n = (r->pages + PAGES_PER_GRANULE - 1) / PAGES_PER_GRANULE;
        vm->reservations--;
        vm->reserved_pages -= r->pages;
        if (r->runs != r->inline_runs)
            free(r->runs);
        memset(&s->slots[g0], 0, n * sizeof(region));
        for (size_t g = g0; g < g0 + n; g++)
            bit_clear(s->used, g);
        s->used_count -= n;
        if (g0 < s->lowest_free)
            s->lowest_free = g0;
        return NULL;
    }
    vm->reservations--;
    vm->reserved_pages -= r->pages;
    region_release(vm, r);
    span_remove(vm, s);
    s->only = NULL;
    return s;
}

static void account_commit(hm_vm *vm, int64_t pages)
{
    vm->committed_pages += (uint64_t)pages;
    if (vm->committed_pages > vm->peak_committed_pages)
        vm->peak_committed_pages = vm->committed_pages;
}

/* ---- Guard pages ------------------------------------------------------------------------------------------ */

#define MAX_GUARDED_VMS 64
static _Atomic(hm_vm *) guarded_vms[MAX_GUARDED_VMS];
static struct sigaction previous_segv;
static pthread_once_t segv_once = PTHREAD_ONCE_INIT;

static void segv_handler(int sig, siginfo_t *info, void *context)
{
    uintptr_t a = (uintptr_t)info->si_addr;
    for (int i = 0; i < MAX_GUARDED_VMS; i++) {
        hm_vm *vm = atomic_load(&guarded_vms[i]);
        if (vm && hm__vm_owns(vm, a) && hm__vm_handle_guard_fault(vm, a))
            return; /* retry the access: the page is no longer guarded */
    }
    /* Not ours: hand it to whoever had the signal before (the runtime's handler, ASan, or the default). */
    if (previous_segv.sa_flags & SA_SIGINFO) {
        previous_segv.sa_sigaction(sig, info, context);
    } else if (previous_segv.sa_handler == SIG_IGN) {
        return;
    } else if (previous_segv.sa_handler == SIG_DFL) {
        signal(sig, SIG_DFL); /* the access faults again and the process dies as it would have */
    } else {
        previous_segv.sa_handler(sig);
    }
}

static void segv_install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = segv_handler;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &previous_segv);
}

static void guard_register(hm_vm *vm)
{
    if (vm->guard_registered || !vm->os->enforces_protection)
        return;
    pthread_once(&segv_once, segv_install);
    for (int i = 0; i < MAX_GUARDED_VMS; i++) {
        hm_vm *expected = NULL;
        if (atomic_compare_exchange_strong(&guarded_vms[i], &expected, vm)) {
            vm->guard_registered = true;
            return;
        }
    }
}

static void guard_unregister(hm_vm *vm)
{
    for (int i = 0; i < MAX_GUARDED_VMS; i++) {
        hm_vm *expected = vm;
        atomic_compare_exchange_strong(&guarded_vms[i], &expected, NULL);
    }
}

bool hm__vm_handle_guard_fault(hm_vm *vm, uintptr_t address)
{
    bool handled = false;
    pthread_rwlock_wrlock(&vm->lock);
    region *r = find_region(vm, address);
    if (r) {
        size_t p = (address - r->base) >> PAGE_SHIFT;
        uint32_t protect = r->runs[run_index(r, p)].protect;
        if ((protect & PAGE_GUARD) && runs_reserve(r) == 0) {
            uint32_t clear = protect & ~(uint32_t)PAGE_GUARD;
            if (os_set_protection(vm, HM_OS_PROTECT, r->base + (p << PAGE_SHIFT), HM_PAGE_SIZE,
                                  hm__protect_to_unix(clear)) == 0) {
                run_assign(r, p, p + 1, clear);
                atomic_fetch_add(&vm->guard_trips, 1);
                handled = true;
            }
        }
    }
    pthread_rwlock_unlock(&vm->lock);
    return handled;
}

/* ---- Life ------------------------------------------------------------------------------------------------- */

HRESULT hm__vm_create(const hm_vm_config *config, hm_vm **out)
{
    hm_vm *vm = calloc(1, sizeof *vm);
    if (!vm)
        return E_OUTOFMEMORY;
    vm->os = config->os ? config->os : &hm__os_linux;
    vm->budget = config->budget;
    size_t span_bytes = config->span_size ? config->span_size : DEFAULT_SPAN_SIZE;
    span_bytes = (span_bytes + HM_GRANULARITY - 1) & ~(size_t)(HM_GRANULARITY - 1);
    vm->span_size = span_bytes < MIN_SPAN_SIZE ? MIN_SPAN_SIZE : span_bytes;
    vm->deterministic = config->deterministic;
    vm->next_hint = config->base ? granule_down(config->base) : HM_VM_DETERMINISTIC_BASE;
    if (config->base)
        vm->deterministic = true; /* a chosen base means spans go there, in order */
    vm->first_span_size = vm->span_size;
    vm->first_hint = vm->next_hint;
    if (pthread_rwlock_init(&vm->lock, NULL) != 0) {
        free(vm);
        return E_OUTOFMEMORY;
    }
    hm__fork_register_rwlock(&vm->fork_entry, &vm->lock, HM_FORK_VM);
    *out = vm;
    return S_OK;
}

static void for_each_region(hm_vm *vm, void (*fn)(hm_vm *, region *, void *), void *ctx)
{
    for (size_t i = 0; i < vm->nspans; i++) {
        span *s = vm->spans[i];
        if (s->dedicated) {
            if (s->only)
                fn(vm, s->only, ctx);
            continue;
        }
        for (size_t g = bit_find(s->used, 0, s->granules, true); g < s->granules;) {
            region *r = &s->slots[g];
            size_t n = (r->pages + PAGES_PER_GRANULE - 1) / PAGES_PER_GRANULE;
            fn(vm, r, ctx);
            g = bit_find(s->used, g + n, s->granules, true);
        }
    }
}

static void free_region_runs(hm_vm *vm, region *r, void *ctx)
{
    (void)vm, (void)ctx;
    if (r->runs != r->inline_runs)
        free(r->runs);
}

void hm__vm_destroy(hm_vm *vm)
{
    if (!vm)
        return;
    hm__fork_unregister(&vm->fork_entry);
    guard_unregister(vm);
    if (vm->budget && vm->committed_pages)
        hm__budget_uncharge(vm->budget, vm->committed_pages << PAGE_SHIFT);
    for_each_region(vm, free_region_runs, NULL);
    for (size_t i = 0; i < vm->nspans; i++) /* a span the kernel will not unmap leaks: nobody is left to tell */
        span_free(vm, vm->spans[i]);
    for (size_t i = 0; i < vm->nspares; i++)
        span_free(vm, vm->spares[i]);
    free(vm->spares);
    while (vm->slabs) {
        region_slab *next = vm->slabs->next;
        munmap(vm->slabs, vm->slabs->size);
        vm->slabs = next;
    }
    free(vm->spans);
    pthread_rwlock_destroy(&vm->lock);
    free(vm);
}

/* At a reset, the committed pages of neighbouring reservations in a shared span are discarded with one call (the
 * pages between them are zero and inaccessible already: discarding them too changes nothing), up to this many bytes
 * a call: each call is a system call or two, and one under the simulated backend's in-place limit (os_sim.c) keeps
 * the pages mapped for the next life. */
#define RESET_DISCARD_MAX ((size_t)8 << 20)

/* Dedicated spans hm__vm_reset keeps mapped: at most this many, none larger. */
#define SPARE_DEDICATED_MAX 16
#define SPARE_DEDICATED_MAX_SIZE ((size_t)256 << 20)

static bool spare_keep(hm_vm *vm, span *s)
{
    if (!span_array_room(&vm->spares, vm->nspares, &vm->cap_spares, 4))
        return false;
    vm->spares[vm->nspares++] = s;
    return true;
}

void hm__vm_reset(hm_vm *vm)
{
    pthread_rwlock_wrlock(&vm->lock);
    guard_unregister(vm);
    vm->guard_registered = false;
    if (vm->budget && vm->committed_pages)
        hm__budget_uncharge(vm->budget, vm->committed_pages << PAGE_SHIFT);
    /* Dedicated spares the last life did not reuse go: they are tied to addresses, so they would pile up. */
    for (size_t i = 0; i < vm->nspares;) {
        if (vm->spares[i]->dedicated && os_unmap_span(vm, vm->spares[i]->base, vm->spares[i]->size) == 0) {
            span_forget(vm->spares[i]);
            vm->spares[i] = vm->spares[--vm->nspares];
        } else { /* shared, or the kernel keeps it mapped: a spare still */
            i++;
        }
    }
    size_t dedicated_kept = 0;
    for (size_t i = 0; i < vm->nspans; i++) {
        span *s = vm->spans[i];
        if (s->dedicated) {
            region *r = s->only;
            /* Kept (for a reservation at the same place next time) unless large or many: unmapped whole, and then
             * not cleared first. A spare must read as zero: one whose discard failed is unmapped. */
            bool keep = s->size <= SPARE_DEDICATED_MAX_SIZE && dedicated_kept < SPARE_DEDICATED_MAX;
            if (r) {
                keep = keep && discard_committed(vm, r, 0, r->pages) == 0;
                free_region_runs(vm, r, NULL);
            }
            s->only = NULL;
            if (!keep || !spare_keep(vm, s)) {
                span_free(vm, s);
                continue;
            }
            dedicated_kept++;
            continue;
        }
        /* Each region's pages decommitted (zero when next committed), its granules free and its slots clear, as
         * a release leaves them (only its own slots: clearing the table between regions would touch pages never
         * used). */
        bool zero = true;
        uintptr_t lo = 0, hi = 0; /* committed pages not discarded yet, of one or more regions */
        for (size_t g = bit_find(s->used, 0, s->granules, true); g < s->granules;) {
            region *r = &s->slots[g];
            size_t n = (r->pages + PAGES_PER_GRANULE - 1) / PAGES_PER_GRANULE;
            size_t a = 0, b = 0;
            if (committed_bounds(r, 0, r->pages, &a, &b)) {
                uintptr_t ra = r->base + (a << PAGE_SHIFT), rb = r->base + (b << PAGE_SHIFT);
                if (hi && rb - lo > RESET_DISCARD_MAX) {
                    zero = os_decommit(vm, lo, hi - lo) == 0 && zero;
                    hi = 0;
                }
                lo = hi ? lo : ra;
                hi = rb;
            }
            region_detach(vm, r); /* clears r: n was read first */
            g = bit_find(s->used, g + n, s->granules, true);
        }
        if (hi)
            zero = os_decommit(vm, lo, hi - lo) == 0 && zero;
        s->lowest_free = 0;
        s->used_count = 0;
        if (!zero || !spare_keep(vm, s)) /* kept for span_create when it reads as zero, or back to the OS */
            span_free(vm, s);
    }
    vm->nspans = 0;
    /* Region slabs: the first (oldest, smallest) one stays, empty. */
    while (vm->slabs && vm->slabs->next) {
        region_slab *next = vm->slabs->next;
        munmap(vm->slabs, vm->slabs->size);
        vm->slabs = next;
    }
    vm->free_regions = NULL;
    vm->slab_used = 0;
    vm->span_size = vm->first_span_size;
    vm->next_hint = vm->first_hint;
    vm->reservations = vm->reserved_pages = vm->committed_pages = vm->peak_committed_pages = 0;
    atomic_store(&vm->guard_trips, 0);
    pthread_rwlock_unlock(&vm->lock);
}

/* ---- VirtualAlloc ------------------------------------------------------------------------------------------ */

/* Finds room for a reservation of `pages` at no particular address: in a shared span (making one when all are
 * full) or, when larger than a quarter span, in a dedicated span. */
static int reserve_anywhere(hm_vm *vm, size_t pages, bool top_down, span **out_span, uintptr_t *out_base)
{
    size_t granules = (pages + PAGES_PER_GRANULE - 1) / PAGES_PER_GRANULE;
    size_t bytes = granules << GRANULE_SHIFT;
    if (granules > (vm->span_size >> GRANULE_SHIFT) / 4) {
        span *s;
        int err = span_create(vm, bytes, true, 0, &s);
        if (err)
            return err;
        *out_span = s;
        *out_base = s->base;
        return 0;
    }
    for (size_t k = 0; k < vm->nspans; k++) {
        span *s = vm->spans[top_down ? vm->nspans - 1 - k : k];
        if (s->dedicated || s->granules - s->used_count < granules)
            continue;
        size_t g = top_down ? place_top_down(s, granules) : place_bottom_up(s, granules);
        if (g != SIZE_MAX) {
            *out_span = s;
            *out_base = s->base + (g << GRANULE_SHIFT);
            return 0;
        }
    }
    span *s;
    int err = shared_span_create(vm, &s);
    if (err)
        return err;
    size_t g = top_down ? place_top_down(s, granules) : place_bottom_up(s, granules);
    if (g == SIZE_MAX)
        return ENOMEM; /* the OS only gave a span smaller than the request */
    *out_span = s;
    *out_base = s->base + (g << GRANULE_SHIFT);
    return 0;
}

/* Finds the span for a reservation at [base, end): free granules of a shared span, or a new dedicated span there
 * when the range is outside every span. EEXIST when anything is in the way. */
static int reserve_at(hm_vm *vm, uintptr_t base, uintptr_t end, span **out_span)
{
    span *s = find_span(vm, base);
    if (s) {
        if (s->dedicated || end - s->base > s->size)
            return EEXIST;
        size_t g0 = (base - s->base) >> GRANULE_SHIFT, g1 = ((end - 1 - s->base) >> GRANULE_SHIFT) + 1;
        if (bit_find(s->used, g0, g1, true) != g1)
            return EEXIST;
        *out_span = s;
        return 0;
    }
    if (overlaps_span(vm, base, end))
        return EEXIST;
    return span_create(vm, end - base, true, base, out_span);
}

static HRESULT commit_range(hm_vm *vm, region *r, size_t p0, size_t p1, DWORD protect, EMemoryCriticalLevel level)
{
    size_t already = committed_in(r, p0, p1, NULL);
    uint64_t charge = (uint64_t)((p1 - p0) - already) << PAGE_SHIFT;
    if (charge && vm->budget && !hm__budget_charge(vm->budget, level, charge))
        return E_OUTOFMEMORY;
    int err = runs_reserve(r);
    if (!err)
        err = os_set_protection(vm, HM_OS_COMMIT, r->base + (p0 << PAGE_SHIFT), (p1 - p0) << PAGE_SHIFT,
                                hm__protect_to_unix(protect));
    if (err) {
        os_restore(vm, r, p0, p1);
        if (charge && vm->budget)
            hm__budget_uncharge(vm->budget, charge);
        return hr_from_errno(err);
    }
    uint32_t stored = protect & ~(uint32_t)HM_CACHE_MODIFIERS;
    run_assign(r, p0, p1, stored);
    r->committed_pages += (p1 - p0) - already;
    account_commit(vm, (int64_t)((p1 - p0) - already));
    if (stored & PAGE_GUARD)
        guard_register(vm);
    return S_OK;
}

static HRESULT validate_alloc(uintptr_t address, size_t size, DWORD type, DWORD protect)
{
    HRESULT hr = hm__vm_check_alloc_type(size, type);
    if (FAILED(hr))
        return hr;
    /* MEM_RESET must be alone (docs); MEM_RESET_UNDO cannot be honoured: reset pages are discarded at once. */
    if ((type & (MEM_RESET | MEM_RESET_UNDO)) && type != MEM_RESET)
        return HM_E_INVALID_PARAMETER;
    if ((type & MEM_WRITE_WATCH) && !(type & MEM_RESERVE))
        return HM_E_INVALID_PARAMETER;
    if (type & MEM_PHYSICAL)
        return HM_E_INVALID_PARAMETER;
    if (type & MEM_LARGE_PAGES)
        return (type & (MEM_RESERVE | MEM_COMMIT)) == (MEM_RESERVE | MEM_COMMIT)
                   ? HRESULT_FROM_WIN32(ERROR_PRIVILEGE_NOT_HELD) /* as for a process without SeLockMemoryPrivilege */
                   : HM_E_INVALID_PARAMETER;
    if (type != MEM_RESET && !hm__protect_is_valid(protect))
        return HM_E_INVALID_PARAMETER;
    if (size > HM_MAX_ADDRESS)
        return HM_E_INVALID_PARAMETER;
    if (address) {
        if (address < HM_MIN_ADDRESS || address > HM_MAX_ADDRESS || size > HM_MAX_ADDRESS - address)
            return HM_E_INVALID_PARAMETER;
    } else if (type == MEM_RESET) {
        return HM_E_INVALID_ADDRESS;
    }
    return S_OK;
}

HRESULT hm__vm_alloc(hm_vm *vm, uintptr_t address, size_t size, DWORD type, DWORD protect, EMemoryCriticalLevel level,
                    uintptr_t *out)
{
    *out = 0;
    HRESULT hr = validate_alloc(address, size, type, protect);
    if (FAILED(hr))
        return hr;
    uintptr_t first = hm__page_down(address), end;
    hm__page_up(address + size, &end); /* cannot overflow: validated above */
    bool reserve = (type & MEM_RESERVE) || ((type & MEM_COMMIT) && !address);

    pthread_rwlock_wrlock(&vm->lock);
    if (!reserve) {
        /* Commit or reset inside an existing reservation: the whole range must lie in one. */
        region *r = find_region(vm, first);
        if (!r || end > region_end(r)) {
            hr = HM_E_INVALID_ADDRESS;
        } else {
            size_t p0 = (first - r->base) >> PAGE_SHIFT, p1 = (end - r->base) >> PAGE_SHIFT;
            if (type == MEM_RESET) {
                /* One call over the committed pages (the reserved ones between hold nothing to drop). */
                size_t a, b;
                int err = committed_bounds(r, p0, p1, &a, &b)
                              ? os_reset(vm, r->base + (a << PAGE_SHIFT), (b - a) << PAGE_SHIFT)
                              : 0;
                hr = err ? hr_from_errno(err) : S_OK;
            } else {
                hr = commit_range(vm, r, p0, p1, protect, level);
            }
            if (SUCCEEDED(hr))
                *out = first;
        }
        pthread_rwlock_unlock(&vm->lock);
        return hr;
    }

    /* A new reservation. */
    span *s = NULL;
    uintptr_t base = 0;
    size_t pages;
    int err;
    if (address) {
        base = granule_down(address);
        pages = (end - base) >> PAGE_SHIFT;
        err = reserve_at(vm, base, end, &s);
    } else {
        uintptr_t bytes;
        hm__page_up(size, &bytes);
        pages = bytes >> PAGE_SHIFT;
        err = pages > UINT32_MAX ? ENOMEM : reserve_anywhere(vm, pages, (type & MEM_TOP_DOWN) != 0, &s, &base);
    }
    if (!err && pages > UINT32_MAX)
        err = ENOMEM;
    region *r = err ? NULL : region_new(vm, base, pages, protect, s);
    if (!err && !r)
        err = ENOMEM;
    if (err) {
        if (s && s->dedicated && !s->only) {
            span_remove(vm, s);
            span_drop(vm, s);
        }
        pthread_rwlock_unlock(&vm->lock);
        return err == EEXIST ? HM_E_INVALID_ADDRESS : E_OUTOFMEMORY;
    }
    region_attach(vm, r);
    if (type & MEM_COMMIT) {
        hr = commit_range(vm, r, 0, pages, protect, level);
        if (FAILED(hr)) {
            span *dedicated = region_detach(vm, r);
            if (dedicated)
                span_drop(vm, dedicated);
            pthread_rwlock_unlock(&vm->lock);
            return hr;
        }
    }
    *out = base;
    pthread_rwlock_unlock(&vm->lock);
    return S_OK;
}

/* ---- VirtualFree ------------------------------------------------------------------------------------------- */

HRESULT hm__vm_free(hm_vm *vm, uintptr_t address, size_t size, DWORD type, bool zero)
{
    bool discard = zero || vm->os->enforces_protection; /* the os backend's decommit also takes access away */
    uintptr_t first, end;
    HRESULT hr = hm__vm_check_free(address, size, type, &first, &end);
    if (FAILED(hr))
        return hr;

    pthread_rwlock_wrlock(&vm->lock);
    region *r = find_region(vm, first);
    if (!r) {
        hr = HM_E_INVALID_ADDRESS;
    } else if (type == MEM_RELEASE) {
        if (first != r->base) {
            hr = HM_E_INVALID_ADDRESS;
        } else {
            /* The pages go first, and only if they do the books follow: a dedicated span is unmapped whole (which
             * discards its pages), a shared span's region discarded. */
            span *s = r->span;
            int err = s->dedicated ? os_unmap_span(vm, s->base, s->size)
                      : discard    ? discard_committed(vm, r, 0, r->pages)
                                   : 0;
            if (err) {
                hr = hr_from_errno(err);
            } else {
                if (vm->budget && r->committed_pages)
                    hm__budget_uncharge(vm->budget, (uint64_t)r->committed_pages << PAGE_SHIFT);
                vm->committed_pages -= r->committed_pages;
                if (region_detach(vm, r))
                    span_forget(s);
            }
        }
    } else {
        size_t p0, p1;
        if (size == 0) {
            if (first != r->base)
                hr = HM_E_INVALID_ADDRESS;
            p0 = 0, p1 = r->pages;
        } else {
            if (end > region_end(r))
                hr = HM_E_INVALID_PARAMETER;
            p0 = (first - r->base) >> PAGE_SHIFT, p1 = (end - r->base) >> PAGE_SHIFT;
        }
        if (SUCCEEDED(hr) && runs_reserve(r) != 0)
            hr = E_OUTOFMEMORY;
        int err = SUCCEEDED(hr) && discard ? discard_committed(vm, r, p0, p1) : 0;
        if (err)
            hr = hr_from_errno(err); /* nothing discarded, the books untouched */
        if (SUCCEEDED(hr)) {
            size_t n = committed_in(r, p0, p1, NULL);
            run_assign(r, p0, p1, 0);
            r->committed_pages -= n;
            vm->committed_pages -= n;
            if (vm->budget && n)
                hm__budget_uncharge(vm->budget, (uint64_t)n << PAGE_SHIFT);
        }
    }
    pthread_rwlock_unlock(&vm->lock);
    return hr;
}

/* ---- VirtualProtect --------------------------------------------------------------------------------------- */

static DWORD reported_protect(const region *r, uint32_t stored)
{
    return stored ? stored | (r->alloc_protect & HM_CACHE_MODIFIERS) : 0;
}

HRESULT hm__vm_protect(hm_vm *vm, uintptr_t address, size_t size, DWORD protect, DWORD *old)
{
    *old = PAGE_NOACCESS;
    if (!hm__protect_is_valid(protect))
        return HM_E_INVALID_PARAMETER;
    uintptr_t first, end;
    HRESULT hr = hm__vm_page_range(address, size, &first, &end);
    if (FAILED(hr))
        return hr;
    /* Every page [addr, addr+size) touches changes; an empty range (size 0 at a page boundary) changes nothing but
     * still looks at its page, which must be committed, for the old protection (Wine 8 does the same). */
    bool empty = end == first;
    if (empty)
        end = first + HM_PAGE_SIZE;

    pthread_rwlock_wrlock(&vm->lock);
    region *r = find_region(vm, first);
    bool all_committed = false;
    if (!r || end > region_end(r)) {
        hr = HM_E_INVALID_ADDRESS;
    } else {
        size_t p0 = (first - r->base) >> PAGE_SHIFT, p1 = (end - r->base) >> PAGE_SHIFT;
        committed_in(r, p0, p1, &all_committed);
        if (!all_committed) {
            hr = HM_E_INVALID_ADDRESS; /* STATUS_NOT_COMMITTED */
        } else {
            DWORD previous = reported_protect(r, r->runs[run_index(r, p0)].protect);
            uint32_t stored = protect & ~(uint32_t)HM_CACHE_MODIFIERS;
            int err = 0;
            if (!empty) {
                err = runs_reserve(r);
                if (!err)
                    err = os_set_protection(vm, HM_OS_PROTECT, first, end - first, hm__protect_to_unix(stored));
                if (err) {
                    os_restore(vm, r, p0, p1);
                    hr = hr_from_errno(err);
                } else {
                    run_assign(r, p0, p1, stored);
                    if (stored & PAGE_GUARD)
                        guard_register(vm);
                }
            }
            if (!err)
                *old = previous;
        }
    }
    pthread_rwlock_unlock(&vm->lock);
    return hr;
}

/* ---- VirtualQuery ----------------------------------------------------------------------------------------- */

bool hm__vm_owns(hm_vm *vm, uintptr_t address)
{
    pthread_rwlock_rdlock(&vm->lock);
    bool owns = find_span(vm, address) != NULL;
    pthread_rwlock_unlock(&vm->lock);
    return owns;
}

bool hm__vm_spare(hm_vm *vm, uintptr_t address, uintptr_t *start, uintptr_t *end)
{
    bool found = false;
    pthread_rwlock_rdlock(&vm->lock);
    for (size_t i = 0; i < vm->nspares && !found; i++) {
        span *s = vm->spares[i];
        if (address - s->base < s->size) {
            *start = s->base;
            *end = s->base + s->size;
            found = true;
        }
    }
    pthread_rwlock_unlock(&vm->lock);
    return found;
}

HRESULT hm__vm_query(hm_vm *vm, uintptr_t address, MEMORY_BASIC_INFORMATION *info)
{
    uintptr_t page = hm__page_down(address);
    pthread_rwlock_rdlock(&vm->lock);
    span *s = find_span(vm, page);
    if (!s) {
        pthread_rwlock_unlock(&vm->lock);
        return S_FALSE;
    }
    memset(info, 0, sizeof *info);
    info->BaseAddress = (void *)page;
    region *r = granule_region(s, page);
    if (r && page < region_end(r)) {
        size_t p = (page - r->base) >> PAGE_SHIFT;
        uint32_t i = run_index(r, p);
        uint32_t stored = r->runs[i].protect;
        info->AllocationBase = (void *)r->base;
        info->AllocationProtect = r->alloc_protect;
        info->RegionSize = (run_end(r, i) - p) << PAGE_SHIFT;
        info->State = stored ? MEM_COMMIT : MEM_RESERVE;
        info->Protect = reported_protect(r, stored);
        info->Type = MEM_PRIVATE;
    } else {
        /* Free: up to the next reservation, or the end of the span. */
        uintptr_t next = s->base + s->size;
        if (!s->dedicated) {
            size_t g = ((page - s->base) >> GRANULE_SHIFT) + 1; /* this granule may hold the tail of one */
            size_t used = bit_find(s->used, g, s->granules, true);
            if (used < s->granules)
                next = s->base + (used << GRANULE_SHIFT);
        }
        info->RegionSize = next - page;
        info->State = MEM_FREE;
        info->Protect = PAGE_NOACCESS;
    }
    pthread_rwlock_unlock(&vm->lock);
    return S_OK;
}

/* ---- Statistics and checks ---------------------------------------------------------------------------------- */

void hm__vm_get_stats(hm_vm *vm, hm_vm_stats *out)
{
    pthread_rwlock_rdlock(&vm->lock);
    out->reservations = vm->reservations;
    out->reserved_bytes = vm->reserved_pages << PAGE_SHIFT;
    out->committed_bytes = vm->committed_pages << PAGE_SHIFT;
    out->peak_committed_bytes = vm->peak_committed_pages << PAGE_SHIFT;
    out->guard_trips = atomic_load(&vm->guard_trips);
    out->spans = (uint32_t)vm->nspans;
    pthread_rwlock_unlock(&vm->lock);
}

typedef struct check_state {
    char *msg;
    size_t msglen;
    int failed;
    uint64_t regions, pages, committed;
} check_state;

#define CHECK(cond, ...)                                                                                          \
    do {                                                                                                          \
        if (!(cond) && !st->failed) {                                                                             \
            st->failed = 1;                                                                                       \
            snprintf(st->msg, st->msglen, __VA_ARGS__);                                                           \
        }                                                                                                         \
    } while (0)

static void check_region(hm_vm *vm, region *r, void *ctx)
{
    check_state *st = ctx;
    (void)vm;
    st->regions++;
    st->pages += r->pages;
    CHECK(r->base % HM_GRANULARITY == 0, "region %#lx: base not 64 KiB aligned", (unsigned long)r->base);
    CHECK(r->pages > 0 && r->nruns >= 1 && r->nruns <= r->cap, "region %#lx: bad sizes", (unsigned long)r->base);
    CHECK(r->runs[0].page == 0, "region %#lx: first run does not start at page 0", (unsigned long)r->base);
    size_t committed = 0;
    for (uint32_t i = 0; i < r->nruns; i++) {
        size_t e = run_end(r, i);
        CHECK(e > r->runs[i].page && e <= r->pages, "region %#lx: run %u is empty or past the end",
              (unsigned long)r->base, i);
        CHECK(i == 0 || r->runs[i].protect != r->runs[i - 1].protect, "region %#lx: runs %u and %u not merged",
              (unsigned long)r->base, i - 1, i);
        CHECK(r->runs[i].protect == 0 || hm__protect_is_valid(r->runs[i].protect),
              "region %#lx: run %u has invalid protection %#x", (unsigned long)r->base, i, r->runs[i].protect);
        if (r->runs[i].protect)
            committed += e - r->runs[i].page;
    }
    CHECK(committed == r->committed_pages, "region %#lx: %zu committed pages counted, %zu in the books",
          (unsigned long)r->base, committed, (size_t)r->committed_pages);
    st->committed += committed;
    span *s = r->span;
    CHECK(r->base >= s->base && region_end(r) <= s->base + s->size, "region %#lx: outside its span",
          (unsigned long)r->base);
    if (!s->dedicated) {
        size_t g0 = (r->base - s->base) >> GRANULE_SHIFT, n = (r->pages + PAGES_PER_GRANULE - 1) / PAGES_PER_GRANULE;
        for (size_t g = g0; g < g0 + n && g < s->granules; g++)
            CHECK(slot_region(s, g) == r && bit_get(s->used, g), "region %#lx: granule %zu not owned",
                  (unsigned long)r->base, g);
    } else {
        CHECK(s->only == r, "region %#lx: dedicated span does not point back", (unsigned long)r->base);
    }
}

int hm__vm_check(hm_vm *vm, char *msg, size_t msglen)
{
    char scratch[8];
    check_state state = {msg ? msg : scratch, msg ? msglen : sizeof scratch, 0, 0, 0, 0};
    check_state *st = &state;
    pthread_rwlock_rdlock(&vm->lock);
    for (size_t i = 0; i < vm->nspans; i++) {
        span *s = vm->spans[i];
        CHECK(s->base % HM_GRANULARITY == 0, "span %zu not aligned", i);
        CHECK(i == 0 || vm->spans[i - 1]->base + vm->spans[i - 1]->size <= s->base, "spans %zu and %zu overlap",
              i - 1, i);
        if (!s->dedicated) {
            size_t used = 0;
            for (size_t g = 0; g < s->granules; g++) {
                CHECK(bit_get(s->used, g) == (slot_region(s, g) != NULL),
                      "span %zu granule %zu: bitmap and slots differ", i, g);
                used += bit_get(s->used, g);
                CHECK(g >= s->lowest_free || bit_get(s->used, g), "span %zu: free granule %zu below the hint", i, g);
            }
            CHECK(used == s->used_count, "span %zu: %zu granules used, %zu counted", i, used, s->used_count);
        } else {
            CHECK(s->only != NULL, "dedicated span %zu holds nothing", i);
        }
    }
    CHECK(!vm->os_mismatch, "the OS refused to restore the protections at %#lx after a failed call: the books no "
          "longer match the mappings there", (unsigned long)vm->os_mismatch);
    for_each_region(vm, check_region, st);
    CHECK(st->regions == vm->reservations, "%llu regions found, %llu counted", (unsigned long long)st->regions,
          (unsigned long long)vm->reservations);
    CHECK(st->pages == vm->reserved_pages, "reserved pages differ from the count");
    CHECK(st->committed == vm->committed_pages, "%llu committed pages found, %llu counted",
          (unsigned long long)st->committed, (unsigned long long)vm->committed_pages);
    pthread_rwlock_unlock(&vm->lock);
    return st->failed ? -1 : 0;
}

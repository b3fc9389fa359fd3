/* The reference model the call-sequence fuzz target checks a host against: what a host's address space and heaps
 * must look like after the calls it answered, by Windows' rules (docs/semantics.md). Deliberately simple: arrays
 * and linear scans, one entry per page, no cleverness a bug could hide in. Internal to the fuzz targets. */
#ifndef HOSTMEM_FUZZ_MODEL_H
#define HOSTMEM_FUZZ_MODEL_H

#include <hostmem/hostmem.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* For the model's scans and the checks' loops: their comparisons are of the model's own state, never of the input,
 * so tracing them for a coverage-guided fuzzer (edges, comparisons) only costs time. Out of line: inlined, they
 * would be traced as part of their caller. */
#if defined(__clang__) && __clang_major__ >= 13
#define HM_MODEL_UNTRACED __attribute__((no_sanitize("coverage"), noinline))
#elif defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#define HM_MODEL_UNTRACED __attribute__((no_sanitize_coverage, noinline))
#else
#define HM_MODEL_UNTRACED
#endif

#define HM_MODEL_PAGE 0x1000u
#define HM_MODEL_GRANULE 0x10000u
#define HM_MODEL_MIN_ADDRESS ((uintptr_t)0x10000)        /* Windows never hands out the first 64 KiB */
#define HM_MODEL_MAX_ADDRESS ((uintptr_t)0x7ffffffff000) /* the top of user space on Linux x86-64 */
#define HM_MODEL_MAX_REGIONS 48
#define HM_MODEL_MAX_PAGES 512 /* larger reservations are checked once and released (see calls.c) */
#define HM_MODEL_MAX_BLOCKS 256
#define HM_MODEL_MAX_HEAPS 4
#define HM_MODEL_MAX_LEDGER 16
#define HM_STAMP_UNKNOWN UINT32_MAX /* contents the host may have discarded (MEM_RESET) */

typedef struct hm_model_page {
    uint32_t protect; /* 0: reserved; else committed with this protection (PAGE_GUARD included, cache bits not) */
    uint32_t stamp;   /* what the harness last wrote at the page's ends; 0: zero; HM_STAMP_UNKNOWN */
    bool written;     /* the harness wrote to it since the reservation was made (a recommit must zero it) */
} hm_model_page;

typedef struct hm_model_region {
    uintptr_t base;
    size_t pages;
    uint32_t alloc_protect;
    hm_model_page page[HM_MODEL_MAX_PAGES];
} hm_model_region;

typedef struct hm_model_block {
    uintptr_t address;
    size_t size;
    uint32_t stamp;
    int heap;
} hm_model_block;

typedef struct hm_model_range {
    uintptr_t start;
    size_t size;
} hm_model_range;

typedef struct hm_model {
    hm_model_region *region[HM_MODEL_MAX_REGIONS];
    size_t nregions;
    uintptr_t released[8]; /* recently released bases: double releases and reuse */
    size_t nreleased;
    hm_model_block block[HM_MODEL_MAX_BLOCKS];
    size_t nblocks;
    hm_model_range acquired[HM_MODEL_MAX_LEDGER];
    size_t nacquired;
} hm_model;

void hm__model_init(hm_model *m);
void hm__model_clear(hm_model *m);

/* ---- Windows' rules, as facts about arguments ---- */
bool hm__model_protect_valid(uint32_t protect);
bool hm__model_protect_readable(uint32_t protect); /* reading the page is allowed and trips nothing */
bool hm__model_protect_writable(uint32_t protect);
/* The VirtualAlloc argument checks that need no state: S_OK when the call gets as far as the address space. */
HRESULT hm__model_alloc_arguments(uintptr_t address, size_t size, uint32_t type, uint32_t protect);

/* ---- The address space ---- */
static inline uintptr_t hm_model_page_down(uintptr_t a) { return a & ~(uintptr_t)(HM_MODEL_PAGE - 1); }
static inline uintptr_t hm_model_granule_down(uintptr_t a) { return a & ~(uintptr_t)(HM_MODEL_GRANULE - 1); }
static inline uintptr_t hm_model_region_end(const hm_model_region *r) { return r->base + r->pages * HM_MODEL_PAGE; }
/* The region whose pages hold address, or NULL. */
hm_model_region *hm__model_find(hm_model *m, uintptr_t address);
/* Whether [lo, hi) meets any region's granules (a reservation owns its whole last 64 KiB granule). */
bool hm__model_granules_taken(const hm_model *m, uintptr_t lo, uintptr_t hi);
hm_model_region *hm__model_add(hm_model *m, uintptr_t base, size_t pages, uint32_t alloc_protect, uint32_t commit);
void hm__model_remove(hm_model *m, hm_model_region *r);
/* The protection VirtualQuery reports for a page: cache modifiers belong to the allocation. */
uint32_t hm__model_reported_protect(const hm_model_region *r, size_t page);
/* Pages from `page` on with the same state and protection, up to the region's end. */
size_t hm__model_run(const hm_model_region *r, size_t page);
/* The MEMORY_BASIC_INFORMATION Windows gives for an address inside r. */
void hm__model_query(const hm_model_region *r, uintptr_t address, MEMORY_BASIC_INFORMATION *out);

/* ---- Heaps ---- */
hm_model_block *hm__model_block_find(hm_model *m, uintptr_t address); /* the live block starting exactly there */
/* A live block or region [address, address+size) meets, or NULL; what names it goes to `what`. */
bool hm__model_overlaps(const hm_model *m, uintptr_t address, size_t size, char *what, size_t whatlen);
void hm__model_drop_heap(hm_model *m, int heap);

/* ---- The address-space ledger ---- */
hm_model_range *hm__model_acquired_find(hm_model *m, uintptr_t start);
bool hm__model_acquired_overlaps(const hm_model *m, uintptr_t start, size_t size);

#endif

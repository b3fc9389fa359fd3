/* The reference model of the call-sequence fuzz target: see model.h. */
#include "check.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CACHE_BITS (PAGE_NOCACHE | PAGE_WRITECOMBINE)

void hm__model_init(hm_model *m) { memset(m, 0, sizeof *m); }

/* Regions (6 KiB each) come from a pool that outlives the runs: a calloc per reservation cost a fresh allocation
 * and its page faults under ASan on every input. Only the pages a region has are initialised. The pool serves one
 * model at a time (the fuzz targets and the CLI run one input at a time); beyond it, regions are calloc'd. */
static hm_model_region region_pool[HM_MODEL_MAX_REGIONS];
static bool region_pool_used[HM_MODEL_MAX_REGIONS];

static hm_model_region *region_new(size_t pages)
{
    hm_model_region *r = NULL;
    for (size_t i = 0; i < HM_MODEL_MAX_REGIONS && !r; i++)
        if (!region_pool_used[i]) {
            region_pool_used[i] = true;
            r = &region_pool[i];
        }
    if (!r)
        return calloc(1, sizeof *r);
    memset(r, 0, offsetof(hm_model_region, page) + pages * sizeof r->page[0]);
    return r;
}

static void region_free(hm_model_region *r)
{
    if (r >= region_pool && r < region_pool + HM_MODEL_MAX_REGIONS)
        region_pool_used[r - region_pool] = false;
    else
        free(r);
}

void hm__model_clear(hm_model *m)
{
    for (size_t i = 0; i < m->nregions; i++)
        region_free(m->region[i]);
    hm__model_init(m);
}

/* ---- Arguments ---------------------------------------------------------------------------------------------- */
/* These rules are written again here, not shared with src/vm.c: a model that called the code under test would agree
 * with its bugs. */

bool hm__model_protect_valid(uint32_t protect)
{
    uint32_t base = protect & 0xffu, mods = protect & ~0xffu;
    switch (base) {
    case PAGE_NOACCESS: case PAGE_READONLY: case PAGE_READWRITE: case PAGE_EXECUTE: case PAGE_EXECUTE_READ:
    case PAGE_EXECUTE_READWRITE:
        break;
    default: /* none, several, or the copy-on-write ones, which private memory cannot have */
        return false;
    }
    if (mods & ~(uint32_t)(PAGE_GUARD | CACHE_BITS))
        return false;
    if ((mods & PAGE_GUARD) && base == PAGE_NOACCESS)
        return false;
    if ((mods & PAGE_NOCACHE) && (mods & (PAGE_GUARD | PAGE_WRITECOMBINE)))
        return false;
    if ((mods & PAGE_WRITECOMBINE) && (mods & PAGE_GUARD))
        return false;
    if ((mods & CACHE_BITS) && base == PAGE_NOACCESS)
        return false;
    return true;
}

HM_MODEL_UNTRACED bool hm__model_protect_readable(uint32_t protect)
{
    if (protect & PAGE_GUARD)
        return false;
    switch (protect & 0xffu) {
    case PAGE_READONLY: case PAGE_READWRITE: case PAGE_EXECUTE_READ: case PAGE_EXECUTE_READWRITE: return true;
    default: return false; /* PAGE_EXECUTE alone is not readable on Windows */
    }
}

bool hm__model_protect_writable(uint32_t protect)
{
    if (protect & PAGE_GUARD)
        return false;
    return (protect & 0xffu) == PAGE_READWRITE || (protect & 0xffu) == PAGE_EXECUTE_READWRITE;
}

HRESULT hm__model_alloc_arguments(uintptr_t address, size_t size, uint32_t type, uint32_t protect)
{
    const HRESULT invalid = HRESULT_FROM_WIN32(ERROR_INVALID_PARAMETER);
    const uint32_t known = MEM_COMMIT | MEM_RESERVE | MEM_RESET | MEM_RESET_UNDO | MEM_TOP_DOWN | MEM_WRITE_WATCH |
                           MEM_LARGE_PAGES | MEM_PHYSICAL;
    if (size == 0 || (type & ~known))
        return invalid;
    if (type & (MEM_RESET | MEM_RESET_UNDO)) {
        if (type != MEM_RESET)
            return invalid; /* MEM_RESET stands alone; MEM_RESET_UNDO is never honoured */
    } else if (!(type & (MEM_COMMIT | MEM_RESERVE))) {
        return invalid;
    }
    if ((type & MEM_WRITE_WATCH) && !(type & MEM_RESERVE))
        return invalid;
    if (type & MEM_PHYSICAL)
        return invalid;
    if (type & MEM_LARGE_PAGES)
        return (type & (MEM_RESERVE | MEM_COMMIT)) == (MEM_RESERVE | MEM_COMMIT)
                   ? HRESULT_FROM_WIN32(ERROR_PRIVILEGE_NOT_HELD)
                   : invalid;
    if (type != MEM_RESET && !hm__model_protect_valid(protect))
        return invalid;
    if (size > HM_MODEL_MAX_ADDRESS)
        return invalid;
    if (address) {
        if (address < HM_MODEL_MIN_ADDRESS || address > HM_MODEL_MAX_ADDRESS || size > HM_MODEL_MAX_ADDRESS - address)
            return invalid;
    } else if (type == MEM_RESET) {
        return HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS); /* nothing to reset */
    }
    return S_OK;
}

/* ---- Address space ------------------------------------------------------------------------------------------ */

HM_MODEL_UNTRACED hm_model_region *hm__model_find(hm_model *m, uintptr_t address)
{
    for (size_t i = 0; i < m->nregions; i++)
        if (address >= m->region[i]->base && address < hm_model_region_end(m->region[i]))
            return m->region[i];
    return NULL;
}

HM_MODEL_UNTRACED bool hm__model_granules_taken(const hm_model *m, uintptr_t lo, uintptr_t hi)
{
    for (size_t i = 0; i < m->nregions; i++) {
        const hm_model_region *r = m->region[i];
        uintptr_t end = hm_model_granule_down(hm_model_region_end(r) + HM_MODEL_GRANULE - 1);
        if (lo < end && r->base < hi)
            return true;
    }
    return false;
}

hm_model_region *hm__model_add(hm_model *m, uintptr_t base, size_t pages, uint32_t alloc_protect, uint32_t commit)
{
    if (m->nregions == HM_MODEL_MAX_REGIONS || pages > HM_MODEL_MAX_PAGES)
        return NULL;
    hm_model_region *r = region_new(pages);
    if (!r)
        return NULL;
    r->base = base;
    r->pages = pages;
    r->alloc_protect = alloc_protect;
    for (size_t p = 0; p < pages; p++)
        r->page[p].protect = commit & ~(uint32_t)CACHE_BITS;
    m->region[m->nregions++] = r;
    for (size_t i = 0; i < m->nreleased; i++)
        if (m->released[i] == base)
            m->released[i] = m->released[--m->nreleased];
    return r;
}

void hm__model_remove(hm_model *m, hm_model_region *r)
{
    for (size_t i = 0; i < m->nregions; i++) {
        if (m->region[i] != r)
            continue;
        if (m->nreleased < sizeof m->released / sizeof m->released[0])
            m->released[m->nreleased++] = r->base;
        else
            m->released[r->base / HM_MODEL_GRANULE % m->nreleased] = r->base;
        m->region[i] = m->region[--m->nregions];
        region_free(r);
        return;
    }
}

uint32_t hm__model_reported_protect(const hm_model_region *r, size_t page)
{
    uint32_t stored = r->page[page].protect;
    return stored ? stored | (r->alloc_protect & CACHE_BITS) : 0;
}

HM_MODEL_UNTRACED size_t hm__model_run(const hm_model_region *r, size_t page)
{
    size_t n = 1;
    while (page + n < r->pages && r->page[page + n].protect == r->page[page].protect)
        n++;
    return n;
}

HM_MODEL_UNTRACED void hm__model_query(const hm_model_region *r, uintptr_t address, MEMORY_BASIC_INFORMATION *out)
{
    size_t page = (address - r->base) / HM_MODEL_PAGE;
    memset(out, 0, sizeof *out);
    out->BaseAddress = (void *)hm_model_page_down(address);
    out->AllocationBase = (void *)r->base;
    out->AllocationProtect = r->alloc_protect;
    out->RegionSize = hm__model_run(r, page) * HM_MODEL_PAGE;
    out->State = r->page[page].protect ? MEM_COMMIT : MEM_RESERVE;
    out->Protect = hm__model_reported_protect(r, page);
    out->Type = MEM_PRIVATE;
}

/* ---- Heaps -------------------------------------------------------------------------------------------------- */

HM_MODEL_UNTRACED hm_model_block *hm__model_block_find(hm_model *m, uintptr_t address)
{
    for (size_t i = 0; i < m->nblocks; i++)
        if (m->block[i].address == address)
            return &m->block[i];
    return NULL;
}

HM_MODEL_UNTRACED bool hm__model_overlaps(const hm_model *m, uintptr_t address, size_t size, char *what, size_t whatlen)
{
    uintptr_t end = address + (size ? size : 1);
    for (size_t i = 0; i < m->nblocks; i++) {
        const hm_model_block *b = &m->block[i];
        if (address < b->address + (b->size ? b->size : 1) && b->address < end) {
            snprintf(what, whatlen, "live block %#lx (%zu bytes, heap %d)", (unsigned long)b->address, b->size,
                     b->heap);
            return true;
        }
    }
    for (size_t i = 0; i < m->nregions; i++) {
        const hm_model_region *r = m->region[i];
        if (address < hm_model_region_end(r) && r->base < end) {
            snprintf(what, whatlen, "the reservation at %#lx (%zu pages) the runtime made with VirtualAlloc",
                     (unsigned long)r->base, r->pages);
            return true;
        }
    }
    return false;
}

void hm__model_drop_heap(hm_model *m, int heap)
{
    for (size_t i = 0; i < m->nblocks;)
        if (m->block[i].heap == heap)
            m->block[i] = m->block[--m->nblocks];
        else
            i++;
}

/* ---- Ledger ------------------------------------------------------------------------------------------------- */

hm_model_range *hm__model_acquired_find(hm_model *m, uintptr_t start)
{
    for (size_t i = 0; i < m->nacquired; i++)
        if (m->acquired[i].start == start)
            return &m->acquired[i];
    return NULL;
}

bool hm__model_acquired_overlaps(const hm_model *m, uintptr_t start, size_t size)
{
    for (size_t i = 0; i < m->nacquired; i++)
        if (start < m->acquired[i].start + m->acquired[i].size && m->acquired[i].start < start + size)
            return true;
    return false;
}

/* The OS layer on Linux: real protections (see os.h). */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

/* Reserved space is PROT_NONE and MAP_NORESERVE: it costs no commit charge until pages become writable. */
static const int reserve_flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;

static int unix_prot(int prot)
{
    return ((prot & HM_PROT_READ) ? PROT_READ : 0) | ((prot & HM_PROT_WRITE) ? PROT_WRITE : 0) |
           ((prot & HM_PROT_EXEC) ? PROT_EXEC : 0);
}

int hm__os_map_aligned(uintptr_t hint, size_t size, bool fixed, int prot, uintptr_t *out)
{
    if (fixed) {
        void *p = mmap((void *)hint, size, prot, reserve_flags | MAP_FIXED_NOREPLACE, -1, 0);
        if (p == MAP_FAILED)
            return errno;
        if ((uintptr_t)p != hint) { /* kernels before 4.17 treat the flag as a hint */
            munmap(p, size);
            return EEXIST;
        }
        *out = hint;
        return 0;
    }
    size_t padded = size + HM_GRANULARITY;
    if (padded < size)
        return ENOMEM;
    void *p = mmap((void *)hint, padded, prot, reserve_flags, -1, 0);
    if (p == MAP_FAILED)
        return errno;
    uintptr_t start = (uintptr_t)p;
    uintptr_t aligned = (start + HM_GRANULARITY - 1) & ~(uintptr_t)(HM_GRANULARITY - 1);
    /* Trimming the padding can be refused (a split at the map limit): the padding then stays mapped, inaccessible
     * and nobody's, and the span is still good. */
    if (aligned > start)
        munmap(p, aligned - start);
    uintptr_t tail = start + padded - (aligned + size);
    if (tail)
        munmap((void *)(aligned + size), tail);
    *out = aligned;
    return 0;
}

static int linux_map_span(uintptr_t hint, size_t size, bool fixed, uintptr_t *out)
{
    return hm__os_map_aligned(hint, size, fixed, PROT_NONE, out);
}

static int linux_unmap_span(uintptr_t addr, size_t size)
{
    return munmap((void *)addr, size) == 0 ? 0 : errno;
}

static int linux_commit(uintptr_t addr, size_t size, int prot)
{
    return mprotect((void *)addr, size, unix_prot(prot)) == 0 ? 0 : errno;
}

/* Replacing the pages with a fresh PROT_NONE mapping drops their contents and their commit charge in one call
 * (mprotect(PROT_NONE) alone keeps both); with the span's flags the new mapping merges back into the span. The
 * kernel checks the map limit and makes its splits before it unmaps anything, so a refusal (ENOMEM) leaves the
 * pages as they were. */
static int linux_decommit(uintptr_t addr, size_t size)
{
    void *p = mmap((void *)addr, size, PROT_NONE, reserve_flags | MAP_FIXED, -1, 0);
    return p == MAP_FAILED ? errno : 0;
}

static int linux_reset(uintptr_t addr, size_t size)
{
    return madvise((void *)addr, size, MADV_DONTNEED) == 0 ? 0 : errno;
}

const hm_os hm__os_linux = {
    .name = "linux",
    .enforces_protection = true,
    .map_span = linux_map_span,
    .unmap_span = linux_unmap_span,
    .commit = linux_commit,
    .decommit = linux_decommit,
    .protect = linux_commit,
    .reset = linux_reset,
};

const hm_os *hm__os_backend(bool sim) { return sim ? &hm__os_sim : &hm__os_linux; }

uint64_t hm__os_physical_memory(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : (uint64_t)1 << 32;
}

void *hm__os_aligned_alloc(size_t alignment, size_t size) { return aligned_alloc(alignment, size); }

void hm__os_aligned_free(void *p) { free(p); }

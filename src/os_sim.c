/* The simulated OS layer: protections are bookkeeping only (see os.h). */
#include "os.h"

#include <errno.h>
#include <sys/mman.h>

static int sim_map_span(uintptr_t hint, size_t size, bool fixed, uintptr_t *out)
{
    return hm_os_map_aligned(hint, size, fixed, PROT_READ | PROT_WRITE, out);
}

static int sim_unmap_span(uintptr_t addr, size_t size)
{
    return munmap((void *)addr, size) == 0 ? 0 : errno;
}

static int sim_nothing(uintptr_t addr, size_t size, int prot)
{
    (void)addr, (void)size, (void)prot;
    return 0;
}

/* Decommitted pages must read as zero on the next commit, protections or not. */
static int sim_discard(uintptr_t addr, size_t size)
{
    return madvise((void *)addr, size, MADV_DONTNEED) == 0 ? 0 : errno;
}

const hm_os hm_os_sim = {
    .name = "sim",
    .enforces_protection = false,
    .map_span = sim_map_span,
    .unmap_span = sim_unmap_span,
    .commit = sim_nothing,
    .decommit = sim_discard,
    .protect = sim_nothing,
    .reset = sim_discard,
};

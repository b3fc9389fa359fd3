/* The simulated OS layer: protections are bookkeeping only (see os.h); decommit zeroes in place. */
#include "os.h"

#include <errno.h>
#include <string.h>
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

/* Pages per mincore() look; a piece with more resident pages than SIM_ZERO_MAX is dropped with MADV_DONTNEED. */
#define SIM_PIECE 256
#define SIM_ZERO_MAX 32

static bool page_is_zero(const uint64_t *p)
{
    uint64_t any = 0;
    for (size_t i = 0; i < HM_PAGE_SIZE / sizeof *p; i++)
        any |= p[i];
    return any == 0;
}

/* Decommitted pages must read as zero on the next commit, protections or not. In place: a page that is resident
 * and not zero is cleared, and stays mapped, so the next commit's first touch takes no page fault; pages never
 * touched, or only read (the shared zero page), are left alone. MADV_DONTNEED would cost a TLB shootdown on every
 * call and a fault on every next touch; it is used only for pieces where more than SIM_ZERO_MAX pages are resident
 * (clearing those would cost more), or when mincore fails. */
static int sim_discard(uintptr_t addr, size_t size)
{
    unsigned char resident[SIM_PIECE];
    for (size_t done = 0; done < size;) {
        size_t bytes = size - done < SIM_PIECE * HM_PAGE_SIZE ? size - done : SIM_PIECE * HM_PAGE_SIZE;
        uintptr_t piece = addr + done;
        size_t pages = bytes / HM_PAGE_SIZE, count = 0;
        bool clear = mincore((void *)piece, bytes, resident) == 0;
        for (size_t i = 0; clear && i < pages; i++)
            count += resident[i] & 1;
        if (!clear || count > SIM_ZERO_MAX) {
            if (madvise((void *)piece, bytes, MADV_DONTNEED) != 0)
                return errno;
        } else {
            for (size_t i = 0; i < pages && count; i++) {
                if (!(resident[i] & 1))
                    continue;
                count--;
                uint64_t *page = (uint64_t *)(piece + i * HM_PAGE_SIZE);
                if (!page_is_zero(page))
                    memset(page, 0, HM_PAGE_SIZE);
            }
        }
        done += bytes;
    }
    return 0;
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

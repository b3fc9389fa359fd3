/* The simulated OS layer: protections are bookkeeping only (see os.h); decommit zeroes in place. */
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

/* Pages per mincore() call (16 MiB), decided on in pieces of SIM_PIECE (1 MiB): a piece with more resident pages
 * than SIM_ZERO_MAX is dropped with MADV_DONTNEED instead of cleared. */
#define SIM_LOOK 4096
#define SIM_PIECE 256
#define SIM_ZERO_MAX 32

/* The loops over pages and residency bytes are plumbing, not behaviour: a coverage-guided fuzzer would only pay for
 * tracing their every comparison (a fifth of fuzz_calls' time), and ASan for checking every load of memory the
 * manager owns and never poisons. Out of line, or inlining would bring the instrumentation back. */
#if defined(__clang__) && __clang_major__ >= 13
#define SIM_PLUMBING __attribute__((no_sanitize("coverage", "address"), noinline))
#elif defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#define SIM_PLUMBING __attribute__((no_sanitize_coverage, no_sanitize_address, noinline))
#else
#define SIM_PLUMBING
#endif

SIM_PLUMBING static bool page_is_zero(const uint64_t *p)
{
    uint64_t any = 0;
    for (size_t i = 0; i < HM_PAGE_SIZE / sizeof *p; i++)
        any |= p[i];
    return any == 0;
}

/* Resident pages in a mincore() vector (bit 0 of each byte). */
SIM_PLUMBING static size_t count_resident(const unsigned char *v, size_t n)
{
    size_t count = 0;
    for (size_t i = 0; i < n; i++)
        count += v[i] & 1;
    return count;
}

/* Clears the resident pages of a piece that are not zero. */
SIM_PLUMBING static void clear_resident(uintptr_t piece, const unsigned char *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!(v[i] & 1))
            continue;
        uint64_t *page = (uint64_t *)(piece + i * HM_PAGE_SIZE);
        if (!page_is_zero(page))
            for (size_t k = 0; k < HM_PAGE_SIZE / sizeof *page; k++)
                page[k] = 0;
    }
}

/* Decommitted pages must read as zero on the next commit, protections or not. In place: a page that is resident
 * and not zero is cleared, and stays mapped, so the next commit's first touch takes no page fault; pages never
 * touched, or only read (the shared zero page), are left alone. MADV_DONTNEED would cost a TLB shootdown on every
 * call and a fault on every next touch; it is used only for pieces where more than SIM_ZERO_MAX pages are resident
 * (clearing those would cost more), or when mincore fails. */
static int sim_discard(uintptr_t addr, size_t size)
{
    /* On the stack, not thread-local: a static library's TLS block is static TLS, and a plugin that links
     * libhostmem.a must fit it in glibc's small static TLS surplus when it is dlopened. */
    unsigned char resident[SIM_LOOK];
    for (size_t done = 0; done < size;) {
        size_t bytes = size - done < SIM_LOOK * HM_PAGE_SIZE ? size - done : SIM_LOOK * HM_PAGE_SIZE;
        uintptr_t look = addr + done;
        bool known = mincore((void *)look, bytes, resident) == 0;
        for (size_t at = 0; at < bytes;) {
            size_t piece = bytes - at < SIM_PIECE * HM_PAGE_SIZE ? bytes - at : SIM_PIECE * HM_PAGE_SIZE;
            const unsigned char *v = resident + at / HM_PAGE_SIZE;
            size_t pages = piece / HM_PAGE_SIZE;
            if (!known || count_resident(v, pages) > SIM_ZERO_MAX) {
                if (madvise((void *)(look + at), piece, MADV_DONTNEED) != 0)
                    return errno;
            } else {
                clear_resident(look + at, v, pages);
            }
            at += piece;
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

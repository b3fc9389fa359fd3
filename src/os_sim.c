/* The simulated OS layer: protections are bookkeeping only (see os.h); decommit zeroes in place. */
#include "internal.h"

#include <errno.h>
#include <sys/mman.h>

static int sim_map_span(uintptr_t hint, size_t size, bool fixed, uintptr_t *out)
{
    return hm__os_map_aligned(hint, size, fixed, PROT_READ | PROT_WRITE, out);
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

/* A discard of this many bytes or more gives its pages back to the OS (MADV_DONTNEED, as a malloc trims a large
 * free); smaller ones are cleared in place, their residency found with one mincore() call. */
#define SIM_DROP_MIN ((size_t)16 << 20)
#define SIM_LOOK (SIM_DROP_MIN / HM_PAGE_SIZE)

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

/* Whether a page reads as zero: 32 bytes a step (the compiler's vector extension, SSE2 or better), as most pages
 * looked at are the shared zero page or nearly empty, and are read to the end. */
typedef uint64_t sim_lanes __attribute__((vector_size(32), aligned(32), may_alias));

SIM_PLUMBING static bool page_is_zero(const void *page)
{
    const sim_lanes *p = page;
    sim_lanes any = {0, 0, 0, 0};
    for (size_t i = 0; i < HM_PAGE_SIZE / sizeof *p; i += 4)
        any |= p[i] | p[i + 1] | p[i + 2] | p[i + 3];
    return (any[0] | any[1] | any[2] | any[3]) == 0;
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
 * touched, or only read (the shared zero page), are left alone. A page fault costs 20 to 100 times what clearing a
 * page does (10 us against 0.1 to 0.2 us on a virtual machine measured), and fuzz inputs and replays reuse the same
 * few addresses over and over, so dropping pages (MADV_DONTNEED) is kept for large discards, which bound the memory
 * this keeps, and for when mincore fails. Large discards are dropped whatever is resident in them: kept in place,
 * their pages are looked at again by every later discard over them, which costs more than the page faults it saves
 * (docs/fuzzing.md). */
static int sim_discard(uintptr_t addr, size_t size)
{
    /* On the stack, not thread-local: a static library's TLS block is static TLS, and a plugin that links
     * libhostmem.a must fit it in glibc's small static TLS surplus when it is dlopened. */
    unsigned char resident[SIM_LOOK];
    if (size < SIM_DROP_MIN && mincore((void *)addr, size, resident) == 0) {
        clear_resident(addr, resident, size / HM_PAGE_SIZE);
        return 0;
    }
    return madvise((void *)addr, size, MADV_DONTNEED) == 0 ? 0 : errno;
}

const hm_os hm__os_sim = {
    .name = "sim",
    .enforces_protection = false,
    .map_span = sim_map_span,
    .unmap_span = sim_unmap_span,
    .commit = sim_nothing,
    .decommit = sim_discard,
    .protect = sim_nothing,
    .reset = sim_discard,
};

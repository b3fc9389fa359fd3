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

/* Residency is looked up this many pages at a time (one mincore() call, its answer on the stack: 4 KiB); a discard
 * that finds more resident pages than this gives them all back to the OS (MADV_DONTNEED, as a malloc trims a large
 * free), which bounds the memory one discard keeps. */
#define SIM_LOOK (((size_t)16 << 20) / HM_PAGE_SIZE)

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

SIM_PLUMBING static size_t count_resident(const unsigned char *v, size_t n)
{
    size_t found = 0;
    for (size_t i = 0; i < n; i++)
        found += v[i] & 1;
    return found;
}

/* Decommitted pages must read as zero on the next commit, protections or not. In place: a page that is resident
 * and not zero is cleared, and stays mapped, so the next commit's first touch takes no page fault; pages never
 * touched, or only read (the shared zero page), are left alone. A page fault costs 20 to 100 times what clearing a
 * page does (10 us against 0.1 to 0.2 us on a virtual machine measured), and fuzz inputs and replays reuse the same
 * few addresses over and over. Whether to drop the pages instead (MADV_DONTNEED) goes by how many are resident, not
 * by the size of the range: a large commit that was hardly touched (the fuzz target's pressure commits, placed over
 * the addresses small reservations use) used to drop those few pages, and every later input faulted them in again.
 * Dropped: more than SIM_LOOK resident pages, or when mincore fails. */
static int sim_discard(uintptr_t addr, size_t size)
{
    /* On the stack, not thread-local: a static library's TLS block is static TLS, and a plugin that links
     * libhostmem.a must fit it in glibc's small static TLS surplus when it is dlopened. */
    unsigned char resident[SIM_LOOK];
    size_t pages = size / HM_PAGE_SIZE, found = 0;
    bool looked = true, counted = pages > SIM_LOOK;
    uint64_t busy = 0; /* counted: the looks (the first 64) that found resident pages; the others need no second */
    /* Larger than one look: counted first, so that a range is either cleared in place or dropped whole, never
     * half cleared when the kernel refuses a part. */
    for (size_t at = 0, k = 0; counted && at < pages && looked && found <= SIM_LOOK; at += SIM_LOOK, k++) {
        size_t n = pages - at < SIM_LOOK ? pages - at : SIM_LOOK;
        looked = mincore((void *)(addr + at * HM_PAGE_SIZE), n * HM_PAGE_SIZE, resident) == 0;
        size_t here = looked ? count_resident(resident, n) : 0;
        found += here;
        busy |= here && k < 64 ? (uint64_t)1 << k : 0;
    }
    for (size_t at = 0, k = 0; looked && found <= SIM_LOOK && at < pages; at += SIM_LOOK, k++) {
        if (counted && k < 64 && !(busy >> k & 1))
            continue;
        size_t n = pages - at < SIM_LOOK ? pages - at : SIM_LOOK;
        uintptr_t piece = addr + at * HM_PAGE_SIZE;
        looked = mincore((void *)piece, n * HM_PAGE_SIZE, resident) == 0;
        if (looked) /* (it fails here only if it failed counting: the same range, nothing unmapped between) */
            clear_resident(piece, resident, n);
    }
    if (looked && found <= SIM_LOOK)
        return 0;
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

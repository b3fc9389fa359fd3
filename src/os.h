/* The OS layer: the only code that maps, protects and discards memory. Internal to hostmem.
 *
 * Contract (model: mimalloc's prim.h): addresses and sizes are multiples of the 4 KiB page, sizes are
 * non-zero, and every primitive returns 0 or an errno value, changing nothing it can avoid changing on failure.
 * Policy (which error becomes which HRESULT, budgets, bookkeeping) lives above this line, in vm.c.
 *
 * Two backends on Linux:
 *   hm__os_linux  real protections with mmap/mprotect: reserved pages fault, PAGE_GUARD traps.
 *   hm__os_sim    deterministic and cheap: spans are mapped read-write once, protections are bookkeeping only
 *                (no mprotect, no VMA splits, no kernel limits), decommit still zeroes. For fuzzing, replay and
 *                benchmarks of the bookkeeping; a program that touches reserved pages is not caught.
 * On Windows (os_win32.c) there is no backend of primitives: vm_win32.c passes each call to the system's
 * VirtualAlloc & co., whose Win32 errors the errno contract above could not carry. The other hooks below
 * (hm__os_backend, hm__os_physical_memory, hm__os_aligned_alloc) exist on every platform. */
#ifndef HOSTMEM_SRC_OS_H
#define HOSTMEM_SRC_OS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HM_PAGE_SIZE ((size_t)0x1000)
#define HM_GRANULARITY ((size_t)0x10000)
/* Lowest address a reservation may use (Windows never allocates the first 64 KiB) and the end of Linux x86-64
 * user space. */
#define HM_MIN_ADDRESS ((uintptr_t)0x10000)
#define HM_MAX_ADDRESS ((uintptr_t)0x7ffffffff000)

/* Unix protections, as the backend applies them. */
enum { HM_PROT_NONE = 0, HM_PROT_READ = 1, HM_PROT_WRITE = 2, HM_PROT_EXEC = 4 };

typedef struct hm_os {
    const char *name;
    bool enforces_protection;
    /* Maps `size` bytes of reserved (inaccessible, uncharged) address space aligned to 64 KiB.
     * fixed: exactly at `hint`, failing with EEXIST when anything is mapped there; otherwise `hint` is a hint
     * only (0: anywhere). */
    int (*map_span)(uintptr_t hint, size_t size, bool fixed, uintptr_t *out);
    int (*unmap_span)(uintptr_t addr, size_t size);
    /* Makes pages accessible with `prot`; their contents stay (fresh pages read as zero). */
    int (*commit)(uintptr_t addr, size_t size, int prot);
    /* Discards pages: inaccessible again, and zero when next committed. */
    int (*decommit)(uintptr_t addr, size_t size);
    /* Changes the protection of committed pages, keeping contents. */
    int (*protect)(uintptr_t addr, size_t size, int prot);
    /* Tells the OS the contents are not needed; the pages stay committed and accessible. */
    int (*reset)(uintptr_t addr, size_t size);
} hm_os;

/* Maps size bytes at a 64 KiB boundary with unix protection `unix_prot` (over-reserving one granule and
 * trimming both ends, since mmap only promises page alignment). Shared by both backends. */
int hm__os_map_aligned(uintptr_t hint, size_t size, bool fixed, int unix_prot, uintptr_t *out);

extern const hm_os hm__os_linux;
extern const hm_os hm__os_sim;
extern const hm_os hm__os_win32; /* its name only: see above */

/* The backend the `backend=` option names: the system's own (sim false) or the simulation; NULL when this platform
 * has no simulation (Windows). */
const hm_os *hm__os_backend(bool sim);

/* Physical memory in bytes: the budget's default limit, when no container limit is tighter. */
uint64_t hm__os_physical_memory(void);

/* malloc'd memory aligned to `alignment` (a power of two dividing size), for hostmem's own objects; freed with
 * hm__os_aligned_free. C11's aligned_alloc and free, which Windows' C runtime lacks (_aligned_malloc there, whose
 * blocks only _aligned_free takes). */
void *hm__os_aligned_alloc(size_t alignment, size_t size);
void hm__os_aligned_free(void *p);

/* ---- Failure injection (tests only) -------------------------------------------------------------------------
 * The kernel can refuse any primitive (ENOMEM near vm.max_map_count, when a change would split a mapping), and the
 * vm must then fail the call with nothing changed. These hooks let a test make the nth call of one primitive fail,
 * on every backend, so each error path can be checked without filling the process's map. Unarmed, the only cost
 * is one relaxed load per primitive call. */
typedef enum hm_os_op {
    HM_OS_MAP_SPAN, HM_OS_UNMAP_SPAN, HM_OS_COMMIT, HM_OS_DECOMMIT, HM_OS_PROTECT, HM_OS_RESET, HM_OS_OPS
} hm_os_op;

/* From now on counts every primitive call (by any vm) from zero, and makes the nth call (1-based) of `op` fail with
 * `err`, once; nth 0 fails nothing (counting only). partial: a failing commit or protect first applies itself to
 * its first page, as mprotect does when it fails part-way through a range. */
void hm__os_fail(hm_os_op op, unsigned long nth, int err, bool partial);
/* Stops counting and failing. */
void hm__os_fail_off(void);
/* Calls of op counted since hm__os_fail. */
unsigned long hm__os_calls(hm_os_op op);
/* For the vm, before each primitive: 0 to go ahead, or the error to return (*partial as armed). */
int hm__os_injected(hm_os_op op, bool *partial);

#endif

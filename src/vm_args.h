/* The argument checks both VMs make before they look at their books: vm.c (Linux, its own books over mmap) and
 * vm_win32.c (the system's VirtualAlloc & co.), so the two managers refuse the same malformed calls with the same
 * HRESULTs. Internal to hostmem. */
#ifndef HOSTMEM_SRC_VM_ARGS_H
#define HOSTMEM_SRC_VM_ARGS_H

#include "os.h"

#include <hostmem/hostmem.h>

#include <stdbool.h>
#include <stdint.h>

/* Every flag VirtualAlloc's type may carry; any other bit is ERROR_INVALID_PARAMETER. */
#define HM_VM_ALLOC_TYPES                                                                                         \
    (MEM_COMMIT | MEM_RESERVE | MEM_RESET | MEM_RESET_UNDO | MEM_TOP_DOWN | MEM_WRITE_WATCH | MEM_LARGE_PAGES |  \
     MEM_PHYSICAL)

/* The protection modifiers that belong to the allocation, not to its pages. */
#define HM_CACHE_MODIFIERS (PAGE_NOCACHE | PAGE_WRITECOMBINE)

static inline uintptr_t hm__page_down(uintptr_t a) { return a & ~(uintptr_t)(HM_PAGE_SIZE - 1); }

/* Rounds up to a page; false when that overflows. */
static inline bool hm__page_up(uintptr_t a, uintptr_t *out)
{
    if (a > UINTPTR_MAX - (HM_PAGE_SIZE - 1))
        return false;
    *out = (a + HM_PAGE_SIZE - 1) & ~(uintptr_t)(HM_PAGE_SIZE - 1);
    return true;
}

/* VirtualAlloc's size and type: not 0, no unknown flag, and something to do (commit, reserve or a reset).
 * S_OK or ERROR_INVALID_PARAMETER; each VM checks the combinations it cannot honour after this. */
HRESULT hm__vm_check_alloc_type(size_t size, DWORD type);

/* The pages [address, address + size) touches: [*first, *end). ERROR_INVALID_PARAMETER when the range or its
 * rounding up to a page passes the end of the address space (nothing written then). */
HRESULT hm__vm_page_range(uintptr_t address, size_t size, uintptr_t *first, uintptr_t *end);

/* VirtualFree's type and size, checked before the address is (as kernelbase does): MEM_DECOMMIT or MEM_RELEASE,
 * a release with size 0, a range that does not overflow. On S_OK, [*first, *end) is the range's pages (*end 0 when
 * size is 0: the whole reservation). */
HRESULT hm__vm_check_free(uintptr_t address, size_t size, DWORD type, uintptr_t *first, uintptr_t *end);

/* Whether protect is one VirtualAlloc and VirtualProtect accept: one base protection (no write-copy) and the
 * modifiers Windows allows with it. (vm.c asks it; on Windows the system checks protections itself.) */
bool hm__protect_is_valid(DWORD protect);

#endif

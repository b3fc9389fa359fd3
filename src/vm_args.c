/* The argument checks both VMs share (vm_args.h). */
#include "internal.h"

HRESULT hm__vm_check_alloc_type(size_t size, DWORD type)
{
    if (size == 0 || (type & ~(DWORD)HM_VM_ALLOC_TYPES))
        return HM_E_INVALID_PARAMETER;
    if (!(type & (MEM_COMMIT | MEM_RESERVE | MEM_RESET | MEM_RESET_UNDO)))
        return HM_E_INVALID_PARAMETER;
    return S_OK;
}

HRESULT hm__vm_page_range(uintptr_t address, size_t size, uintptr_t *first, uintptr_t *end)
{
    uintptr_t last;
    if (size > UINTPTR_MAX - address || !hm__page_up(address + size, &last))
        return HM_E_INVALID_PARAMETER;
    *first = hm__page_down(address);
    *end = last;
    return S_OK;
}

HRESULT hm__vm_check_free(uintptr_t address, size_t size, DWORD type, uintptr_t *first, uintptr_t *end)
{
    if (type != MEM_DECOMMIT && type != MEM_RELEASE)
        return HM_E_INVALID_PARAMETER;
    if (type == MEM_RELEASE && size != 0) /* checked before the address, as kernelbase does */
        return HM_E_INVALID_PARAMETER;
    if (size)
        return hm__vm_page_range(address, size, first, end);
    *first = hm__page_down(address);
    *end = 0;
    return S_OK;
}

bool hm__protect_is_valid(DWORD protect)
{
    DWORD base = protect & 0xFFu, mods = protect & ~0xFFu;
    if (mods & ~(DWORD)(PAGE_GUARD | PAGE_NOCACHE | PAGE_WRITECOMBINE))
        return false;
    switch (base) {
    case PAGE_NOACCESS: case PAGE_READONLY: case PAGE_READWRITE:
    case PAGE_EXECUTE: case PAGE_EXECUTE_READ: case PAGE_EXECUTE_READWRITE:
        break;
    default: /* none, two at once, or write-copy (mapped views only) */
        return false;
    }
    /* Windows' documented exclusions (protection constants page). */
    if ((mods & PAGE_GUARD) && base == PAGE_NOACCESS)
        return false;
    if ((mods & PAGE_NOCACHE) && (mods & (PAGE_GUARD | PAGE_WRITECOMBINE)))
        return false;
    if ((mods & PAGE_WRITECOMBINE) && (mods & PAGE_GUARD))
        return false;
    if ((mods & HM_CACHE_MODIFIERS) && base == PAGE_NOACCESS)
        return false;
    return true;
}

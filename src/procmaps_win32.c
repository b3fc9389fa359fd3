/* VirtualQuery for memory the manager does not own, on Windows: the system's own answer (procmaps.h). Only the two
 * functions the manager and the ledger use; the /proc parsers have no Windows counterpart. */
#define WIN32_LEAN_AND_MEAN
#include <windows.h>

#include "internal.h"

#include <string.h>

void hm__procmaps_free_info(uintptr_t page, uintptr_t end, MEMORY_BASIC_INFORMATION *out)
{
    memset(out, 0, sizeof *out);
    out->BaseAddress = (void *)page;
    out->RegionSize = end - page;
    out->State = MEM_FREE;
    out->Protect = PAGE_NOACCESS;
}

HRESULT hm__procmaps_query(uintptr_t address, MEMORY_BASIC_INFORMATION *out)
{
    if (VirtualQuery((const void *)address, out, sizeof *out) != sizeof *out)
        return HRESULT_FROM_WIN32(GetLastError());
    return S_OK;
}

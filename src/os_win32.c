/* The OS layer on Windows: the hooks of os.h that every platform has. There are no primitives: vm_win32.c calls
 * VirtualAlloc & co. itself. <windows.h> comes first, so hostmem's headers take the system's types. */
#define WIN32_LEAN_AND_MEAN
#include <windows.h>

#include "internal.h"

#include <malloc.h>

const hm_os hm__os_win32 = {.name = "win32", .enforces_protection = true};

const hm_os *hm__os_backend(bool sim) { return sim ? NULL : &hm__os_win32; }

uint64_t hm__os_physical_memory(void)
{
    MEMORYSTATUSEX status = {.dwLength = sizeof status};
    return GlobalMemoryStatusEx(&status) && status.ullTotalPhys ? status.ullTotalPhys : (uint64_t)1 << 32;
}

void *hm__os_aligned_alloc(size_t alignment, size_t size) { return _aligned_malloc(size, alignment); }

void hm__os_aligned_free(void *p) { _aligned_free(p); }

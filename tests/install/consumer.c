/* A program outside the tree that uses an installed hostmem: proves the headers, the library, the CMake package
 * and the pkg-config file work together. */
#include <hostmem/hostmem.h>

#include <stdio.h>

int main(void)
{
    IHostMemoryManager *m;
    if (HostMemCreateManager("limit=64M", &m) != S_OK) {
        fprintf(stderr, "HostMemCreateManager failed: %s\n", HostMemLastError());
        return 1;
    }
    void *p;
    HRESULT hr = IHostMemoryManager_VirtualAlloc(m, NULL, 1 << 16, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
                                                 eTaskCritical, &p);
    if (hr != S_OK || IHostMemoryManager_VirtualFree(m, p, 0, MEM_RELEASE) != S_OK)
        return 1;
    IHostMemoryManager_Release(m);
    puts("installed hostmem works");
    return 0;
}

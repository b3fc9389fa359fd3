/* The rest of the host of docs/windows.md: tests/windows/docs_windows.sh compiles the page's GetHostManager snippet
 * (host_control.c) with the page's commands and links it with this file, which plays the runtime: it asks the
 * host control for IHostMemoryManager, as the CLR does at startup, and makes a few hundred calls at the three critical
 * levels through what it gets, giving a region back when a commit fails, as a runtime does. The page's batch file
 * runs it with HOSTMEM_TRACE and HOSTMEM_FAULTS set; the page's Linux commands then replay, reduce and explore its
 * trace. "Your manager" (CreateMyMemoryManager) is hostmem's Windows manager here.
 * Output: one "oom: call N ..." line per failed call, then "calls: N". Exit 0, or 2 when the setup fails. */
#include <windows.h>
#include <mscoree.h>

#include <hostmem/hostmem.h>

#include <stdio.h>
#include <string.h>

HRESULT STDMETHODCALLTYPE MyHostControl_GetHostManager(IHostControl *self, REFIID riid, void **ppObject);

IHostMemoryManager *CreateMyMemoryManager(void)
{
    IHostMemoryManager *m = NULL;
    return SUCCEEDED(HostMemCreateBuiltinManager(NULL, &m)) ? m : NULL;
}

/* A host control with the snippet's GetHostManager (the rest of IHostControl as a host would have it). */
static HRESULT STDMETHODCALLTYPE control_QueryInterface(IHostControl *self, REFIID riid, void **ppv)
{
    *ppv = self;
    return S_OK;
}
static ULONG STDMETHODCALLTYPE control_AddRef(IHostControl *self) { return 1; }
static ULONG STDMETHODCALLTYPE control_Release(IHostControl *self) { return 1; }
static HRESULT STDMETHODCALLTYPE control_SetAppDomainManager(IHostControl *self, DWORD id, IUnknown *manager)
{
    return S_OK;
}
static IHostControlVtbl control_vtbl = {control_QueryInterface, control_AddRef, control_Release,
                                        MyHostControl_GetHostManager, control_SetAppDomainManager};

static unsigned long calls;

int main(void)
{
    IHostControl control = {&control_vtbl};
    IHostMemoryManager *m = NULL;
    if (FAILED(control.lpVtbl->GetHostManager(&control, &IID_IHostMemoryManager, (void **)&m)) || !m) {
        fprintf(stderr, "GetHostManager gave no memory manager\n");
        return 2;
    }
    IHostMalloc *heap = NULL;
    calls++;
    if (FAILED(IHostMemoryManager_CreateMalloc(m, MALLOC_THREADSAFE, &heap))) {
        fprintf(stderr, "CreateMalloc failed\n");
        return 2;
    }
    static const EMemoryCriticalLevel levels[] = {eTaskCritical, eAppDomainCritical, eProcessCritical};
    for (unsigned r = 0; r < 300; r++) {
        EMemoryCriticalLevel level = levels[r % 3];
        void *base = NULL, *page = NULL, *block = NULL;
        calls++;
        if (FAILED(IHostMemoryManager_VirtualAlloc(m, NULL, 0x40000, MEM_RESERVE, PAGE_NOACCESS, level, &base)))
            continue;
        calls++;
        HRESULT hr = IHostMemoryManager_VirtualAlloc(m, base, 0x10000, MEM_COMMIT, PAGE_READWRITE, level, &page);
        if (FAILED(hr)) {
            printf("oom: call %lu VirtualAlloc level=%s op=commit -> %s\n", calls, hm_level_short(level),
                   hm_hr_name(hr));
        } else {
            memset(page, 1, 0x10000);
            MEMORY_BASIC_INFORMATION mbi;
            SIZE_T got;
            calls++;
            IHostMemoryManager_VirtualQuery(m, page, &mbi, sizeof mbi, &got);
        }
        calls++;
        IHostMemoryManager_VirtualFree(m, base, 0, MEM_RELEASE);
        calls++;
        if (SUCCEEDED(IHostMalloc_Alloc(heap, 32 + r, level, &block))) {
            calls++;
            IHostMalloc_Free(heap, block);
        }
    }
    IHostMalloc_Release(heap);
    IHostMemoryManager_Release(m);
    printf("calls: %lu\n", calls);
    return 0;
}

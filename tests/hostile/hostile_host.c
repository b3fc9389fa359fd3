/* Hostile host plugins: hosts that attack the tool loading them rather than break the contract. Each is hostmem's
 * own manager behind a decorator with one behaviour, chosen at compile time by HOSTILE_<NAME>:
 *   CTOR_CRASH      a library constructor dereferences NULL (during dlopen)
 *   FACTORY_CRASH   HostMemCreateManager dereferences NULL
 *   FACTORY_EXIT0   HostMemCreateManager calls exit(0)
 *   FACTORY_HANG    HostMemCreateManager never returns
 *   RELEASE_HANG    the manager's last Release never returns
 *   QUERY_HANG      VirtualQuery never returns (a fuzz input that reaches it is a libFuzzer timeout-* artifact)
 *   QUERY_OVERRUN   VirtualQuery writes 8 bytes past the end of the caller's buffer
 *   STDOUT_FLOOD    HostMemCreateManager prints 1 MiB on stdout
 *   EXIT0_MID_RUN   the 100th VirtualAlloc (the HOSTILE_EXIT_AT'th, when set) calls exit(0)
 *   SLOW            correct but slow, as on a loaded machine: every VirtualAlloc takes a millisecond more
 * The tests (tests/CMakeLists.txt) run conform, stress and replay against each and expect a clear report. */
#include <hostmem/hostmem.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct hostile {
    IHostMemoryManager iface;
    atomic_int ref;
    IHostMemoryManager *inner;
} hostile;

static inline hostile *impl_from_IHostMemoryManager(IHostMemoryManager *iface)
{
    return HM_CONTAINER_OF(iface, hostile, iface);
}

__attribute__((unused)) static void crash(void)
{
    volatile int *volatile nowhere = NULL;
    *nowhere = 1;
}

__attribute__((unused)) static void hang(void)
{
    for (;;)
        pause();
}

#ifdef HOSTILE_CTOR_CRASH
__attribute__((constructor)) static void crash_on_load(void) { crash(); }
#endif

static HRESULT STDMETHODCALLTYPE QI(IHostMemoryManager *i, REFIID r, void **p)
{
    if (!p)
        return E_POINTER;
    if (IsEqualIID(r, &IID_IUnknown) || IsEqualIID(r, &IID_IHostMemoryManager)) {
        *p = i;
        atomic_fetch_add(&impl_from_IHostMemoryManager(i)->ref, 1);
        return S_OK;
    }
    *p = NULL;
    return E_NOINTERFACE;
}
static ULONG STDMETHODCALLTYPE AddRef(IHostMemoryManager *i) { return atomic_fetch_add(&impl_from_IHostMemoryManager(i)->ref, 1) + 1; }
static ULONG STDMETHODCALLTYPE Release(IHostMemoryManager *i)
{
    hostile *h = impl_from_IHostMemoryManager(i);
    ULONG left = atomic_fetch_sub(&h->ref, 1) - 1;
    if (!left) {
#ifdef HOSTILE_RELEASE_HANG
        hang();
#endif
        IHostMemoryManager_Release(h->inner);
        free(h);
    }
    return left;
}
static HRESULT STDMETHODCALLTYPE CreateMalloc(IHostMemoryManager *i, DWORD t, IHostMalloc **pp)
{
    return IHostMemoryManager_CreateMalloc(impl_from_IHostMemoryManager(i)->inner, t, pp);
}
static HRESULT STDMETHODCALLTYPE VAlloc(IHostMemoryManager *i, void *a, SIZE_T s, DWORD t, DWORD p,
                                        EMemoryCriticalLevel l, void **pp)
{
#ifdef HOSTILE_EXIT0_MID_RUN
    static atomic_int calls;
    const char *at = getenv("HOSTILE_EXIT_AT");
    if (atomic_fetch_add(&calls, 1) + 1 == (at ? atoi(at) : 100))
        exit(0);
#endif
#ifdef HOSTILE_SLOW
    nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
#endif
    return IHostMemoryManager_VirtualAlloc(impl_from_IHostMemoryManager(i)->inner, a, s, t, p, l, pp);
}
static HRESULT STDMETHODCALLTYPE VFree(IHostMemoryManager *i, LPVOID a, SIZE_T s, DWORD t)
{
    return IHostMemoryManager_VirtualFree(impl_from_IHostMemoryManager(i)->inner, a, s, t);
}
static HRESULT STDMETHODCALLTYPE VQuery(IHostMemoryManager *i, void *a, void *buf, SIZE_T len, SIZE_T *res)
{
#ifdef HOSTILE_QUERY_HANG
    hang();
#endif
    HRESULT hr = IHostMemoryManager_VirtualQuery(impl_from_IHostMemoryManager(i)->inner, a, buf, len, res);
#ifdef HOSTILE_QUERY_OVERRUN
    if (buf && len >= sizeof(MEMORY_BASIC_INFORMATION))
        memset((char *)buf + len, 0x41, 8);
#endif
    return hr;
}
static HRESULT STDMETHODCALLTYPE VProtect(IHostMemoryManager *i, void *a, SIZE_T s, DWORD p, DWORD *old)
{
    return IHostMemoryManager_VirtualProtect(impl_from_IHostMemoryManager(i)->inner, a, s, p, old);
}
static HRESULT STDMETHODCALLTYPE Load(IHostMemoryManager *i, DWORD *l, SIZE_T *a)
{
    return IHostMemoryManager_GetMemoryLoad(impl_from_IHostMemoryManager(i)->inner, l, a);
}
static HRESULT STDMETHODCALLTYPE Register(IHostMemoryManager *i, ICLRMemoryNotificationCallback *c)
{
    return IHostMemoryManager_RegisterMemoryNotificationCallback(impl_from_IHostMemoryManager(i)->inner, c);
}
static HRESULT STDMETHODCALLTYPE Needs(IHostMemoryManager *i, LPVOID a, SIZE_T s)
{
    return IHostMemoryManager_NeedsVirtualAddressSpace(impl_from_IHostMemoryManager(i)->inner, a, s);
}
static HRESULT STDMETHODCALLTYPE Acquired(IHostMemoryManager *i, LPVOID a, SIZE_T s)
{
    return IHostMemoryManager_AcquiredVirtualAddressSpace(impl_from_IHostMemoryManager(i)->inner, a, s);
}
static HRESULT STDMETHODCALLTYPE Released(IHostMemoryManager *i, LPVOID a)
{
    return IHostMemoryManager_ReleasedVirtualAddressSpace(impl_from_IHostMemoryManager(i)->inner, a);
}

static const IHostMemoryManagerVtbl vtbl = {QI,       AddRef, Release,  CreateMalloc, VAlloc, VFree,   VQuery,
                                            VProtect, Load,   Register, Needs,        Acquired, Released};

HM_API HRESULT HostMemCreateManager(const char *options, IHostMemoryManager **pp)
{
#if defined(HOSTILE_FACTORY_CRASH)
    crash();
#elif defined(HOSTILE_FACTORY_EXIT0)
    exit(0);
#elif defined(HOSTILE_FACTORY_HANG)
    hang();
#elif defined(HOSTILE_STDOUT_FLOOD)
    static char line[1024];
    memset(line, 'x', sizeof line - 1);
    line[sizeof line - 1] = '\n';
    for (int k = 0; k < 1024; k++)
        fwrite(line, 1, sizeof line, stdout);
    fflush(stdout);
#endif
    if (!pp)
        return E_POINTER;
    *pp = NULL;
    hostile *h = calloc(1, sizeof *h);
    if (!h)
        return E_OUTOFMEMORY;
    HRESULT hr = HostMemCreateBuiltinManager(options, &h->inner);
    if (FAILED(hr)) {
        free(h);
        return hr;
    }
    h->iface.lpVtbl = &vtbl;
    atomic_init(&h->ref, 1);
    *pp = &h->iface;
    return S_OK;
}

/* The guard layer (see guard.h). */
#include "check.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* ---- Guarded out-parameters --------------------------------------------------------------------------------- */

enum { ZONE = 32, MAX_GUARDED = 512 };

/* The host sees data; ZONE bytes of a known pattern lie on either side of it. */
typedef struct guarded {
    _Alignas(16) unsigned char bytes[ZONE + MAX_GUARDED + ZONE];
    size_t len;
} guarded;

static unsigned char pattern(size_t i) { return (unsigned char)(0xA5 ^ (i * 37)); }

/* A copy of the caller's len bytes at caller, between guard zones; NULL (the host gets NULL) for NULL. Buffers
 * larger than MAX_GUARDED go to the host unguarded. */
static void *guard_open(guarded *g, void *caller, size_t len)
{
    if (!caller || len > MAX_GUARDED)
        return caller;
    g->len = len;
    for (size_t i = 0; i < ZONE; i++) {
        g->bytes[i] = pattern(i);
        g->bytes[ZONE + len + i] = pattern(ZONE + i);
    }
    memcpy(g->bytes + ZONE, caller, len);
    return g->bytes + ZONE;
}

/* Describes the changed bytes of a zone: how many, and the first few as hex. */
static size_t changed_bytes(const unsigned char *zone, size_t pattern_from, char *hex, size_t hex_len)
{
    size_t changed = 0, shown = 0, used = 0;
    hex[0] = '\0';
    for (size_t i = 0; i < ZONE; i++) {
        if (zone[i] == pattern(pattern_from + i))
            continue;
        changed++;
        if (shown++ < 8 && used < hex_len)
            used += (size_t)snprintf(hex + used, hex_len - used, "%s+%zu=%02x", shown > 1 ? " " : "", i, zone[i]);
    }
    return changed;
}

/* Checks both zones (a change is a finding: the child ends here) and copies the data back to the caller. */
static void guard_close(guarded *g, void *caller, void *given, const char *method, const char *param)
{
    if (!caller || given == caller)
        return;
    char hex[128];
    size_t after = changed_bytes(g->bytes + ZONE + g->len, ZONE, hex, sizeof hex);
    if (after)
        hm__isolate_finding("%s wrote past the end of its %zu-byte %s: %zu of the %d guard bytes after it changed "
                           "(offset past the end=new value: %s)",
                           method, g->len, param, after, ZONE, hex);
    size_t before = changed_bytes(g->bytes, 0, hex, sizeof hex);
    if (before)
        hm__isolate_finding("%s wrote before the start of its %zu-byte %s: %zu of the %d guard bytes before it "
                           "changed (offset into the zone=new value: %s)",
                           method, g->len, param, before, ZONE, hex);
    memcpy(caller, g->bytes + ZONE, g->len);
}

#define GUARDED_CALL(label, result, call)                                                                         \
    do {                                                                                                          \
        const char *outer_ = hm__isolate_enter(label);                                                            \
        result = (call);                                                                                          \
        hm__isolate_leave(outer_);                                                                                \
    } while (0)

/* ---- The objects ---------------------------------------------------------------------------------------------- */

/* Each keeps its own count of the references the tool holds (a host's counts may be wrong: that is for the
 * rules to find, not a reason to free the layer under the tool) and returns the host's. */
typedef struct guard {
    IHostMemoryManager IHostMemoryManager_iface;
    atomic_ulong ref;
    IHostMemoryManager *inner;
} guard;

typedef struct guard_heap {
    IHostMalloc IHostMalloc_iface;
    atomic_ulong ref;
    IHostMalloc *inner;
} guard_heap;

static inline guard *impl_from_IHostMemoryManager(IHostMemoryManager *iface)
{
    return HM_CONTAINER_OF(iface, guard, IHostMemoryManager_iface);
}
static inline guard_heap *impl_from_IHostMalloc(IHostMalloc *iface)
{
    return HM_CONTAINER_OF(iface, guard_heap, IHostMalloc_iface);
}

static IHostMalloc *wrap_heap(IHostMalloc *inner);

/* ---- IHostMemoryManager ----------------------------------------------------------------------------------- */

static HRESULT STDMETHODCALLTYPE g_QueryInterface(IHostMemoryManager *iface, REFIID riid, void **ppv)
{
    guard *g = impl_from_IHostMemoryManager(iface);
    guarded gv;
    void *slot = guard_open(&gv, ppv, sizeof *ppv);
    HRESULT hr;
    GUARDED_CALL("IHostMemoryManager::QueryInterface", hr, IHostMemoryManager_QueryInterface(g->inner, riid, slot));
    guard_close(&gv, ppv, slot, "IHostMemoryManager::QueryInterface", "ppvObject");
    if (ppv && *ppv == (void *)g->inner) { /* the host's own self: the tool sees the layer, which is it */
        *ppv = iface;
        atomic_fetch_add(&g->ref, 1);
    }
    return hr;
}

static ULONG STDMETHODCALLTYPE g_AddRef(IHostMemoryManager *iface)
{
    guard *g = impl_from_IHostMemoryManager(iface);
    atomic_fetch_add(&g->ref, 1);
    ULONG n;
    GUARDED_CALL("IHostMemoryManager::AddRef", n, IHostMemoryManager_AddRef(g->inner));
    return n;
}

static ULONG STDMETHODCALLTYPE g_Release(IHostMemoryManager *iface)
{
    guard *g = impl_from_IHostMemoryManager(iface);
    ULONG n;
    GUARDED_CALL("IHostMemoryManager::Release", n, IHostMemoryManager_Release(g->inner));
    if (atomic_fetch_sub(&g->ref, 1) == 1)
        free(g);
    return n;
}

static HRESULT STDMETHODCALLTYPE g_CreateMalloc(IHostMemoryManager *iface, DWORD type, IHostMalloc **ppMalloc)
{
    guard *g = impl_from_IHostMemoryManager(iface);
    guarded gv;
    IHostMalloc **slot = guard_open(&gv, ppMalloc, sizeof *ppMalloc);
    HRESULT hr;
    GUARDED_CALL("IHostMemoryManager::CreateMalloc", hr, IHostMemoryManager_CreateMalloc(g->inner, type, slot));
    guard_close(&gv, ppMalloc, slot, "IHostMemoryManager::CreateMalloc", "ppMalloc");
    if (SUCCEEDED(hr) && ppMalloc && *ppMalloc) {
        IHostMalloc *wrapped = wrap_heap(*ppMalloc);
        if (!wrapped) {
            IHostMalloc_Release(*ppMalloc);
            *ppMalloc = NULL;
            return E_OUTOFMEMORY;
        }
        *ppMalloc = wrapped;
    }
    return hr;
}

static HRESULT STDMETHODCALLTYPE g_VirtualAlloc(IHostMemoryManager *iface, void *address, SIZE_T size, DWORD type,
                                                DWORD protect, EMemoryCriticalLevel level, void **ppMem)
{
    guard *g = impl_from_IHostMemoryManager(iface);
    guarded gv;
    void **slot = guard_open(&gv, ppMem, sizeof *ppMem);
    HRESULT hr;
    GUARDED_CALL("IHostMemoryManager::VirtualAlloc", hr,
                 IHostMemoryManager_VirtualAlloc(g->inner, address, size, type, protect, level, slot));
    guard_close(&gv, ppMem, slot, "IHostMemoryManager::VirtualAlloc", "ppMem");
    return hr;
}

static HRESULT STDMETHODCALLTYPE g_VirtualFree(IHostMemoryManager *iface, LPVOID address, SIZE_T size, DWORD type)
{
    HRESULT hr;
    GUARDED_CALL("IHostMemoryManager::VirtualFree", hr,
                 IHostMemoryManager_VirtualFree(impl_from_IHostMemoryManager(iface)->inner, address, size, type));
    return hr;
}

static HRESULT STDMETHODCALLTYPE g_VirtualQuery(IHostMemoryManager *iface, void *address, void *buffer,
                                                SIZE_T length, SIZE_T *pResult)
{
    guard *g = impl_from_IHostMemoryManager(iface);
    guarded gb, gr;
    void *buffer_slot = guard_open(&gb, buffer, length);
    SIZE_T *result_slot = guard_open(&gr, pResult, sizeof *pResult);
    HRESULT hr;
    GUARDED_CALL("IHostMemoryManager::VirtualQuery", hr,
                 IHostMemoryManager_VirtualQuery(g->inner, address, buffer_slot, length, result_slot));
    guard_close(&gb, buffer, buffer_slot, "IHostMemoryManager::VirtualQuery", "lpBuffer");
    guard_close(&gr, pResult, result_slot, "IHostMemoryManager::VirtualQuery", "pResult");
    return hr;
}

static HRESULT STDMETHODCALLTYPE g_VirtualProtect(IHostMemoryManager *iface, void *address, SIZE_T size,
                                                  DWORD protect, DWORD *pOld)
{
    guard *g = impl_from_IHostMemoryManager(iface);
    guarded gv;
    DWORD *slot = guard_open(&gv, pOld, sizeof *pOld);
    HRESULT hr;
    GUARDED_CALL("IHostMemoryManager::VirtualProtect", hr,
                 IHostMemoryManager_VirtualProtect(g->inner, address, size, protect, slot));
    guard_close(&gv, pOld, slot, "IHostMemoryManager::VirtualProtect", "pflOldProtect");
    return hr;
}

static HRESULT STDMETHODCALLTYPE g_GetMemoryLoad(IHostMemoryManager *iface, DWORD *pLoad, SIZE_T *pAvailable)
{
    guard *g = impl_from_IHostMemoryManager(iface);
    guarded gl, ga;
    DWORD *load_slot = guard_open(&gl, pLoad, sizeof *pLoad);
    SIZE_T *available_slot = guard_open(&ga, pAvailable, sizeof *pAvailable);
    HRESULT hr;
    GUARDED_CALL("IHostMemoryManager::GetMemoryLoad", hr,
                 IHostMemoryManager_GetMemoryLoad(g->inner, load_slot, available_slot));
    guard_close(&gl, pLoad, load_slot, "IHostMemoryManager::GetMemoryLoad", "pMemoryLoad");
    guard_close(&ga, pAvailable, available_slot, "IHostMemoryManager::GetMemoryLoad", "pAvailableBytes");
    return hr;
}

static HRESULT STDMETHODCALLTYPE g_RegisterMemoryNotificationCallback(IHostMemoryManager *iface,
                                                                      ICLRMemoryNotificationCallback *callback)
{
    HRESULT hr;
    GUARDED_CALL("IHostMemoryManager::RegisterMemoryNotificationCallback", hr,
                 IHostMemoryManager_RegisterMemoryNotificationCallback(impl_from_IHostMemoryManager(iface)->inner, callback));
    return hr;
}

static HRESULT STDMETHODCALLTYPE g_NeedsVirtualAddressSpace(IHostMemoryManager *iface, LPVOID start, SIZE_T size)
{
    HRESULT hr;
    GUARDED_CALL("IHostMemoryManager::NeedsVirtualAddressSpace", hr,
                 IHostMemoryManager_NeedsVirtualAddressSpace(impl_from_IHostMemoryManager(iface)->inner, start, size));
    return hr;
}

static HRESULT STDMETHODCALLTYPE g_AcquiredVirtualAddressSpace(IHostMemoryManager *iface, LPVOID start, SIZE_T size)
{
    HRESULT hr;
    GUARDED_CALL("IHostMemoryManager::AcquiredVirtualAddressSpace", hr,
                 IHostMemoryManager_AcquiredVirtualAddressSpace(impl_from_IHostMemoryManager(iface)->inner, start, size));
    return hr;
}

static HRESULT STDMETHODCALLTYPE g_ReleasedVirtualAddressSpace(IHostMemoryManager *iface, LPVOID start)
{
    HRESULT hr;
    GUARDED_CALL("IHostMemoryManager::ReleasedVirtualAddressSpace", hr,
                 IHostMemoryManager_ReleasedVirtualAddressSpace(impl_from_IHostMemoryManager(iface)->inner, start));
    return hr;
}

static const IHostMemoryManagerVtbl guard_vtbl = {
    g_QueryInterface,        g_AddRef,        g_Release,
    g_CreateMalloc,          g_VirtualAlloc,  g_VirtualFree,
    g_VirtualQuery,          g_VirtualProtect, g_GetMemoryLoad,
    g_RegisterMemoryNotificationCallback, g_NeedsVirtualAddressSpace, g_AcquiredVirtualAddressSpace,
    g_ReleasedVirtualAddressSpace,
};

/* ---- IHostMalloc ------------------------------------------------------------------------------------------ */

static HRESULT STDMETHODCALLTYPE gh_QueryInterface(IHostMalloc *iface, REFIID riid, void **ppv)
{
    guard_heap *h = impl_from_IHostMalloc(iface);
    guarded gv;
    void *slot = guard_open(&gv, ppv, sizeof *ppv);
    HRESULT hr;
    GUARDED_CALL("IHostMalloc::QueryInterface", hr, IHostMalloc_QueryInterface(h->inner, riid, slot));
    guard_close(&gv, ppv, slot, "IHostMalloc::QueryInterface", "ppvObject");
    if (ppv && *ppv == (void *)h->inner) {
        *ppv = iface;
        atomic_fetch_add(&h->ref, 1);
    }
    return hr;
}

static ULONG STDMETHODCALLTYPE gh_AddRef(IHostMalloc *iface)
{
    guard_heap *h = impl_from_IHostMalloc(iface);
    atomic_fetch_add(&h->ref, 1);
    ULONG n;
    GUARDED_CALL("IHostMalloc::AddRef", n, IHostMalloc_AddRef(h->inner));
    return n;
}

static ULONG STDMETHODCALLTYPE gh_Release(IHostMalloc *iface)
{
    guard_heap *h = impl_from_IHostMalloc(iface);
    ULONG n;
    GUARDED_CALL("IHostMalloc::Release", n, IHostMalloc_Release(h->inner));
    if (atomic_fetch_sub(&h->ref, 1) == 1)
        free(h);
    return n;
}

static HRESULT STDMETHODCALLTYPE gh_Alloc(IHostMalloc *iface, SIZE_T size, EMemoryCriticalLevel level, void **ppMem)
{
    guard_heap *h = impl_from_IHostMalloc(iface);
    guarded gv;
    void **slot = guard_open(&gv, ppMem, sizeof *ppMem);
    HRESULT hr;
    GUARDED_CALL("IHostMalloc::Alloc", hr, IHostMalloc_Alloc(h->inner, size, level, slot));
    guard_close(&gv, ppMem, slot, "IHostMalloc::Alloc", "ppMem");
    return hr;
}

static HRESULT STDMETHODCALLTYPE gh_DebugAlloc(IHostMalloc *iface, SIZE_T size, EMemoryCriticalLevel level,
                                               char *file, int line, void **ppMem)
{
    guard_heap *h = impl_from_IHostMalloc(iface);
    guarded gv;
    void **slot = guard_open(&gv, ppMem, sizeof *ppMem);
    HRESULT hr;
    GUARDED_CALL("IHostMalloc::DebugAlloc", hr, IHostMalloc_DebugAlloc(h->inner, size, level, file, line, slot));
    guard_close(&gv, ppMem, slot, "IHostMalloc::DebugAlloc", "ppMem");
    return hr;
}

static HRESULT STDMETHODCALLTYPE gh_Free(IHostMalloc *iface, void *p)
{
    HRESULT hr;
    GUARDED_CALL("IHostMalloc::Free", hr, IHostMalloc_Free(impl_from_IHostMalloc(iface)->inner, p));
    return hr;
}

static const IHostMallocVtbl guard_heap_vtbl = {gh_QueryInterface, gh_AddRef,     gh_Release,
                                                gh_Alloc,          gh_DebugAlloc, gh_Free};

static IHostMalloc *wrap_heap(IHostMalloc *inner)
{
    guard_heap *h = malloc(sizeof *h);
    if (!h)
        return NULL;
    h->IHostMalloc_iface.lpVtbl = &guard_heap_vtbl;
    atomic_init(&h->ref, 1);
    h->inner = inner;
    return &h->IHostMalloc_iface;
}

HRESULT hm__guard_wrap(IHostMemoryManager *host, IHostMemoryManager **out)
{
    *out = NULL;
    guard *g = malloc(sizeof *g);
    if (!g) {
        IHostMemoryManager_Release(host);
        return E_OUTOFMEMORY;
    }
    g->IHostMemoryManager_iface.lpVtbl = &guard_vtbl;
    atomic_init(&g->ref, 1);
    g->inner = host;
    *out = &g->IHostMemoryManager_iface;
    return S_OK;
}

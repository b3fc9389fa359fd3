/* The ICLRMemoryNotificationCallback that the replay, conform, `hostmem record` and the tests register: it counts
 * what it is told, keeps the first levels, and can run a hook inside each notification. Header-only (one small
 * object, no module to link). */
#ifndef HOSTMEM_HARNESS_COUNTING_CALLBACK_H
#define HOSTMEM_HARNESS_COUNTING_CALLBACK_H

#include "com.h"

#include <hostmem/hostmem.h>

#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

#define HM_COUNTING_CALLBACK_SEEN 64

typedef struct hm_counting_callback {
    ICLRMemoryNotificationCallback iface;
    atomic_int refs;  /* AddRef/Release count: 1 from HM_COUNTING_CALLBACK_INIT or hm_counting_callback_new */
    atomic_int count; /* notifications received */
    EMemoryAvailable last;
    EMemoryAvailable seen[HM_COUNTING_CALLBACK_SEEN]; /* the first ones, in order */
    bool heap_owned;  /* from hm_counting_callback_new: its last Release frees it */
    /* Optional: called inside each notification, after it is counted (e.g. to call back into the host). */
    void (*on_notify)(struct hm_counting_callback *cb, EMemoryAvailable e);
    void *ctx;
} hm_counting_callback;

static inline hm_counting_callback *impl_from_ICLRMemoryNotificationCallback(ICLRMemoryNotificationCallback *iface)
{
    return HM_CONTAINER_OF(iface, hm_counting_callback, iface);
}

static inline HRESULT STDMETHODCALLTYPE hm_counting_callback_QueryInterface(ICLRMemoryNotificationCallback *iface,
                                                                            REFIID riid, void **ppv)
{
    return hm_com_query(iface, &IID_ICLRMemoryNotificationCallback, riid, ppv);
}

static inline ULONG STDMETHODCALLTYPE hm_counting_callback_AddRef(ICLRMemoryNotificationCallback *iface)
{
    return (ULONG)atomic_fetch_add(&impl_from_ICLRMemoryNotificationCallback(iface)->refs, 1) + 1;
}

static inline ULONG STDMETHODCALLTYPE hm_counting_callback_Release(ICLRMemoryNotificationCallback *iface)
{
    hm_counting_callback *cb = impl_from_ICLRMemoryNotificationCallback(iface);
    ULONG left = (ULONG)(atomic_fetch_sub(&cb->refs, 1) - 1);
    if (left == 0 && cb->heap_owned)
        free(cb);
    return left;
}

static inline HRESULT STDMETHODCALLTYPE hm_counting_callback_OnMemoryNotification(
    ICLRMemoryNotificationCallback *iface, EMemoryAvailable e)
{
    hm_counting_callback *cb = impl_from_ICLRMemoryNotificationCallback(iface);
    int n = atomic_fetch_add(&cb->count, 1);
    if (n >= 0 && n < HM_COUNTING_CALLBACK_SEEN)
        cb->seen[n] = e;
    cb->last = e;
    if (cb->on_notify)
        cb->on_notify(cb, e);
    return S_OK;
}

static const ICLRMemoryNotificationCallbackVtbl hm_counting_callback_vtbl = {
    hm_counting_callback_QueryInterface, hm_counting_callback_AddRef, hm_counting_callback_Release,
    hm_counting_callback_OnMemoryNotification};

#define HM_COUNTING_CALLBACK_INIT {.iface = {&hm_counting_callback_vtbl}, .refs = 1}

/* A callback on the heap, for a host that may keep its reference past the caller's scope; NULL when out of memory. */
static inline hm_counting_callback *hm_counting_callback_new(void)
{
    hm_counting_callback *cb = calloc(1, sizeof *cb);
    if (cb) {
        cb->iface.lpVtbl = &hm_counting_callback_vtbl;
        atomic_init(&cb->refs, 1);
        cb->heap_owned = true;
    }
    return cb;
}

#endif

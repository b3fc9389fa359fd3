/* Memory-pressure notifications (see notify.h). */
#include "notify.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

#define QUEUE_SIZE 32

struct hm_notify {
    unsigned low_at, high_at, hysteresis;
    pthread_mutex_t lock;
    ICLRMemoryNotificationCallback **callbacks;
    size_t ncallbacks, cap;
    EMemoryAvailable state;
    EMemoryAvailable queue[QUEUE_SIZE]; /* changes not yet delivered, oldest first */
    size_t queued;
    bool delivering;                    /* some thread is draining the queue */
    _Atomic uint64_t calls;
};

hm_notify *hm_notify_create(unsigned low_at, unsigned high_at, unsigned hysteresis)
{
    hm_notify *n = calloc(1, sizeof *n);
    if (!n)
        return NULL;
    n->low_at = low_at <= 100 ? low_at : 90;
    n->high_at = high_at < n->low_at ? high_at : (n->low_at > 40 ? 50 : 0);
    n->hysteresis = hysteresis <= 100 ? hysteresis : 5;
    n->state = eMemoryAvailableNeutral;
    pthread_mutex_init(&n->lock, NULL);
    return n;
}

void hm_notify_destroy(hm_notify *n)
{
    if (!n)
        return;
    for (size_t i = 0; i < n->ncallbacks; i++)
        ICLRMemoryNotificationCallback_Release(n->callbacks[i]);
    free(n->callbacks);
    pthread_mutex_destroy(&n->lock);
    free(n);
}

HRESULT hm_notify_register(hm_notify *n, ICLRMemoryNotificationCallback *cb)
{
    if (!cb)
        return E_POINTER;
    pthread_mutex_lock(&n->lock);
    HRESULT hr = S_OK;
    for (size_t i = 0; i < n->ncallbacks; i++)
        if (n->callbacks[i] == cb)
            goto out; /* registered once, whatever the number of calls */
    if (n->ncallbacks == n->cap) {
        size_t cap = n->cap ? n->cap * 2 : 4;
        ICLRMemoryNotificationCallback **grown = realloc(n->callbacks, cap * sizeof *grown);
        if (!grown) {
            hr = E_OUTOFMEMORY;
            goto out;
        }
        n->callbacks = grown;
        n->cap = cap;
    }
    ICLRMemoryNotificationCallback_AddRef(cb);
    n->callbacks[n->ncallbacks++] = cb;
out:
    pthread_mutex_unlock(&n->lock);
    return hr;
}

static EMemoryAvailable state_for(const hm_notify *n, unsigned load)
{
    if (load >= n->low_at)
        return eMemoryAvailableLow;
    if (load <= n->high_at)
        return eMemoryAvailableHigh;
    return eMemoryAvailableNeutral;
}

/* The state after `load`, leaving Low or High only once the load is `hysteresis` points past the threshold. */
static EMemoryAvailable next_state(const hm_notify *n, unsigned load)
{
    if (n->state == eMemoryAvailableLow && load + n->hysteresis >= n->low_at)
        return eMemoryAvailableLow;
    if (n->state == eMemoryAvailableHigh && load <= n->high_at + n->hysteresis)
        return eMemoryAvailableHigh;
    return state_for(n, load);
}

/* Called with the lock held; returns with it held. The first thread to find changes queued delivers them all,
 * with the lock released around the calls, so a callback may call the manager (and so us) again. */
static void enqueue_and_deliver(hm_notify *n, EMemoryAvailable state)
{
    if (n->queued == QUEUE_SIZE)
        n->queue[QUEUE_SIZE - 1] = state; /* a flood: the latest state is what matters */
    else
        n->queue[n->queued++] = state;
    if (n->delivering)
        return;
    n->delivering = true;
    while (n->queued) {
        EMemoryAvailable next = n->queue[0];
        for (size_t i = 1; i < n->queued; i++)
            n->queue[i - 1] = n->queue[i];
        n->queued--;
        size_t count = n->ncallbacks;
        ICLRMemoryNotificationCallback *local[16];
        ICLRMemoryNotificationCallback **cbs = count <= 16 ? local : malloc(count * sizeof *cbs);
        if (!cbs)
            continue;
        for (size_t i = 0; i < count; i++) {
            cbs[i] = n->callbacks[i];
            ICLRMemoryNotificationCallback_AddRef(cbs[i]); /* stays alive while we call it unlocked */
        }
        pthread_mutex_unlock(&n->lock);
        for (size_t i = 0; i < count; i++) {
            ICLRMemoryNotificationCallback_OnMemoryNotification(cbs[i], next);
            atomic_fetch_add(&n->calls, 1);
            ICLRMemoryNotificationCallback_Release(cbs[i]);
        }
        if (cbs != local)
            free(cbs);
        pthread_mutex_lock(&n->lock);
    }
    n->delivering = false;
}

void hm_notify_update(hm_notify *n, unsigned load)
{
    pthread_mutex_lock(&n->lock);
    EMemoryAvailable next = next_state(n, load);
    if (next != n->state) {
        n->state = next;
        enqueue_and_deliver(n, next);
    }
    pthread_mutex_unlock(&n->lock);
}

void hm_notify_force(hm_notify *n, EMemoryAvailable state)
{
    pthread_mutex_lock(&n->lock);
    n->state = state;
    enqueue_and_deliver(n, state);
    pthread_mutex_unlock(&n->lock);
}

EMemoryAvailable hm_notify_state(hm_notify *n)
{
    pthread_mutex_lock(&n->lock);
    EMemoryAvailable s = n->state;
    pthread_mutex_unlock(&n->lock);
    return s;
}

uint64_t hm_notify_count(hm_notify *n) { return atomic_load(&n->calls); }

size_t hm_notify_callbacks(hm_notify *n)
{
    pthread_mutex_lock(&n->lock);
    size_t c = n->ncallbacks;
    pthread_mutex_unlock(&n->lock);
    return c;
}

/* Memory-pressure notifications (see notify.h).
 *
 * Delivery: every state change is appended, under the mutex, to a queue of pending notifications. The thread
 * that finds nobody delivering becomes the deliverer and drains the queue, calling the callbacks with the mutex
 * released; changes made meanwhile (by other threads, or by a callback itself) are appended and drained by it
 * in turn. So calls are never concurrent, never reentrant, and happen in the order the changes did. */
#include "internal.h"

#include <pthread.h>

#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

/* The queue is preallocated this deep, and grows when a slow callback lets more changes pile up. */
#define QUEUE_INITIAL 16

typedef struct pending {
    EMemoryAvailable state;
    size_t listeners; /* callbacks registered when the change happened: the ones that hear of it */
} pending;

struct hm_notify {
    unsigned low_at, high_at, hysteresis;
    pthread_mutex_t lock;
    /* Append-only until destroy, so the deliverer may read an entry, drop the lock and call it: the registry's
     * reference keeps the object alive. */
    ICLRMemoryNotificationCallback **callbacks;
    size_t ncallbacks, cap;
    EMemoryAvailable state;
    pending *queue; /* ring buffer of changes not yet delivered */
    size_t head, queued, queue_cap;
    bool delivering; /* some thread is draining the queue */
    pthread_t deliverer;      /* which, while delivering */
    hm_fork_entry fork_entry; /* the lock, held across fork() */
    _Atomic uint64_t calls;
};

static void fork_lock(void *obj) { pthread_mutex_lock(&((hm_notify *)obj)->lock); }
static void fork_unlock(void *obj) { pthread_mutex_unlock(&((hm_notify *)obj)->lock); }

/* A thread that was delivering (outside the lock) is gone in the child: its queue is the child's to drain. */
static void fork_child(void *obj)
{
    hm_notify *n = obj;
    if (n->delivering && !pthread_equal(n->deliverer, pthread_self()))
        n->delivering = false;
    pthread_mutex_unlock(&n->lock);
}

hm_notify *hm__notify_create(unsigned low_at, unsigned high_at, unsigned hysteresis)
{
    hm_notify *n = calloc(1, sizeof *n);
    if (!n)
        return NULL;
    n->queue = calloc(QUEUE_INITIAL, sizeof *n->queue);
    if (!n->queue) {
        free(n);
        return NULL;
    }
    n->queue_cap = QUEUE_INITIAL;
    n->low_at = low_at <= 100 ? low_at : 90;
    /* High must lie below Low, or no load would be Neutral and a High load would also be a Low one. */
    if (high_at < n->low_at)
        n->high_at = high_at;
    else
        n->high_at = n->low_at > 50 ? 50 : (n->low_at ? n->low_at - 1 : 0);
    n->hysteresis = hysteresis <= 100 ? hysteresis : 5;
    n->state = eMemoryAvailableNeutral;
    pthread_mutex_init(&n->lock, NULL);
    n->fork_entry = (hm_fork_entry){.rank = HM_FORK_NOTIFY, .obj = n, .lock = fork_lock, .unlock = fork_unlock,
                                    .child = fork_child};
    hm__fork_register(&n->fork_entry);
    return n;
}

void hm__notify_destroy(hm_notify *n)
{
    if (!n)
        return;
    hm__fork_unregister(&n->fork_entry);
    for (size_t i = 0; i < n->ncallbacks; i++)
        ICLRMemoryNotificationCallback_Release(n->callbacks[i]);
    free(n->callbacks);
    free(n->queue);
    pthread_mutex_destroy(&n->lock);
    free(n);
}

void hm__notify_reset(hm_notify *n)
{
    pthread_mutex_lock(&n->lock);
    ICLRMemoryNotificationCallback **callbacks = n->callbacks;
    size_t count = n->ncallbacks;
    n->callbacks = NULL;
    n->ncallbacks = n->cap = 0;
    n->state = eMemoryAvailableNeutral;
    n->head = n->queued = 0;
    atomic_store(&n->calls, 0);
    pthread_mutex_unlock(&n->lock);
    for (size_t i = 0; i < count; i++) /* outside the lock: a Release may call back */
        ICLRMemoryNotificationCallback_Release(callbacks[i]);
    free(callbacks);
}

HRESULT hm__notify_register(hm_notify *n, ICLRMemoryNotificationCallback *cb)
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

static pending *queue_at(hm_notify *n, size_t k) { return &n->queue[(n->head + k) % n->queue_cap]; }

/* Called with the lock held. Appends a change; when the queue cannot grow (out of memory; it holds at least
 * QUEUE_INITIAL changes then), the change is folded into the newest pending one, so the last state is still the
 * last delivered. */
static void enqueue(hm_notify *n, EMemoryAvailable state)
{
    if (n->queued == n->queue_cap) {
        size_t cap = n->queue_cap * 2;
        pending *grown = malloc(cap * sizeof *grown);
        if (grown) {
            for (size_t k = 0; k < n->queued; k++)
                grown[k] = *queue_at(n, k);
            free(n->queue);
            n->queue = grown;
            n->queue_cap = cap;
            n->head = 0;
        } else {
            /* Fold the change into the newest pending one, never leaving two equal neighbours. */
            if (queue_at(n, n->queued - 2)->state == state)
                n->queued--;
            else
                *queue_at(n, n->queued - 1) = (pending){state, n->ncallbacks};
            return;
        }
    }
    *queue_at(n, n->queued++) = (pending){state, n->ncallbacks};
}

/* Called with the lock held; returns with it held. Drains the queue unless another thread already is. */
static void deliver(hm_notify *n)
{
    if (n->delivering)
        return; /* the deliverer will find our change in the queue */
    n->delivering = true;
    n->deliverer = pthread_self();
    while (n->queued) {
        pending next = *queue_at(n, 0);
        n->head = (n->head + 1) % n->queue_cap;
        n->queued--;
        for (size_t i = 0; i < next.listeners; i++) {
            ICLRMemoryNotificationCallback *cb = n->callbacks[i];
            pthread_mutex_unlock(&n->lock);
            ICLRMemoryNotificationCallback_OnMemoryNotification(cb, next.state);
            atomic_fetch_add_explicit(&n->calls, 1, memory_order_relaxed);
            pthread_mutex_lock(&n->lock);
        }
    }
    n->delivering = false;
}

void hm__notify_update(hm_notify *n, unsigned load)
{
    pthread_mutex_lock(&n->lock);
    EMemoryAvailable next = next_state(n, load);
    if (next != n->state) {
        n->state = next;
        enqueue(n, next);
        deliver(n);
    }
    pthread_mutex_unlock(&n->lock);
}

void hm__notify_force(hm_notify *n, EMemoryAvailable state)
{
    pthread_mutex_lock(&n->lock);
    n->state = state;
    enqueue(n, state);
    deliver(n);
    pthread_mutex_unlock(&n->lock);
}

EMemoryAvailable hm__notify_state(hm_notify *n)
{
    pthread_mutex_lock(&n->lock);
    EMemoryAvailable s = n->state;
    pthread_mutex_unlock(&n->lock);
    return s;
}

uint64_t hm__notify_count(hm_notify *n) { return atomic_load(&n->calls); }

size_t hm__notify_callbacks(hm_notify *n)
{
    pthread_mutex_lock(&n->lock);
    size_t c = n->ncallbacks;
    pthread_mutex_unlock(&n->lock);
    return c;
}

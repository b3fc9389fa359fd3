/* The fork handlers over every registered lock (see fork.h). */
#include "internal.h"

#include <stddef.h>

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static hm_fork_entry *ranks[HM_FORK_RANKS]; /* one list per rank */
static pthread_once_t install_once = PTHREAD_ONCE_INIT;

static void prepare(void)
{
    pthread_mutex_lock(&registry_lock);
    for (int r = 0; r < HM_FORK_RANKS; r++)
        for (hm_fork_entry *e = ranks[r]; e; e = e->next)
            e->lock(e->obj);
}

static void parent(void)
{
    for (int r = HM_FORK_RANKS - 1; r >= 0; r--)
        for (hm_fork_entry *e = ranks[r]; e; e = e->next)
            e->unlock(e->obj);
    pthread_mutex_unlock(&registry_lock);
}

static void child(void)
{
    for (int r = HM_FORK_RANKS - 1; r >= 0; r--)
        for (hm_fork_entry *e = ranks[r]; e; e = e->next)
            e->child(e->obj);
    pthread_mutex_unlock(&registry_lock);
}

static void install(void) { pthread_atfork(prepare, parent, child); }

void hm__fork_register(hm_fork_entry *e)
{
    pthread_once(&install_once, install);
    pthread_mutex_lock(&registry_lock);
    e->prev = NULL;
    e->next = ranks[e->rank];
    if (e->next)
        e->next->prev = e;
    ranks[e->rank] = e;
    pthread_mutex_unlock(&registry_lock);
}

void hm__fork_unregister(hm_fork_entry *e)
{
    pthread_mutex_lock(&registry_lock);
    if (e->prev)
        e->prev->next = e->next;
    else
        ranks[e->rank] = e->next;
    if (e->next)
        e->next->prev = e->prev;
    pthread_mutex_unlock(&registry_lock);
}

static void mutex_lock(void *m) { pthread_mutex_lock(m); }
static void mutex_unlock(void *m) { pthread_mutex_unlock(m); }

void hm__fork_register_mutex(hm_fork_entry *e, pthread_mutex_t *mutex, hm_fork_rank rank)
{
    /* A default mutex has no owner check: the child's thread (the one that locked it) unlocks it as the parent's. */
    *e = (hm_fork_entry){.rank = rank, .obj = mutex, .lock = mutex_lock, .unlock = mutex_unlock, .child = mutex_unlock};
    hm__fork_register(e);
}

static void rwlock_lock(void *l) { pthread_rwlock_wrlock(l); }
static void rwlock_unlock(void *l) { pthread_rwlock_unlock(l); }
/* glibc's rwlock remembers its writer by thread id, which the child's thread does not share: made anew instead. */
static void rwlock_child(void *l) { pthread_rwlock_init(l, NULL); }

void hm__fork_register_rwlock(hm_fork_entry *e, pthread_rwlock_t *rwlock, hm_fork_rank rank)
{
    *e = (hm_fork_entry){.rank = rank, .obj = rwlock, .lock = rwlock_lock, .unlock = rwlock_unlock,
                         .child = rwlock_child};
    hm__fork_register(e);
}

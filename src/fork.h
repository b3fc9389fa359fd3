/* fork() from a multi-threaded process: every lock hostmem takes is held across the fork, so the child never
 * inherits one that another thread (gone in the child) held mid-change. Internal to hostmem.
 *
 * Each lock registers an entry (embedded in its object: registering cannot fail) with a rank. The prepare handler
 * takes the registry lock, then every registered lock rank by rank, outer ranks first: the order in which the code
 * nests them, so preparing cannot deadlock with a thread that holds some and waits for others. The parent handler
 * releases them; the child handler makes each usable again (and may fix state a vanished thread left midway).
 * The handlers are installed once, at the first registration.
 *
 * Not covered: fork() called from inside a notification callback (the callback may run under a heap's lock, which
 * the prepare handler would then wait for forever), and a callback that creates or destroys a manager or heap while
 * another thread forks. */
#ifndef HOSTMEM_SRC_FORK_H
#define HOSTMEM_SRC_FORK_H

#include <pthread.h>

/* Outer to inner: a lock of a rank may be taken while holding locks of lower ranks only. */
typedef enum hm_fork_rank {
    HM_FORK_HEAP_THREADS, /* heap.c: the threads' lists of heap locals (then a heap's lock) */
    HM_FORK_HEAP,         /* a heap's lock: its source, so the vm, the budget and notifications, run under it */
    HM_FORK_MANAGER,      /* the manager's heap list and leak reports (statistics read heaps' chunk locks under it) */
    HM_FORK_HEAP_CHUNKS,  /* a heap's chunk set */
    HM_FORK_VM,           /* the rest are leaves */
    HM_FORK_LEDGER,
    HM_FORK_NOTIFY,
    HM_FORK_FAULTS,
    HM_FORK_RECORDER,
    HM_FORK_RANKS
} hm_fork_rank;

typedef struct hm_fork_entry {
    struct hm_fork_entry *next, *prev;
    hm_fork_rank rank;
    void *obj;
    void (*lock)(void *obj);   /* before fork */
    void (*unlock)(void *obj); /* after, in the parent */
    void (*child)(void *obj);  /* after, in the child (the only thread there: the one that forked) */
} hm_fork_entry;

/* Registers e (filled in by the caller) until hm__fork_unregister. */
void hm__fork_register(hm_fork_entry *e);
void hm__fork_unregister(hm_fork_entry *e);

/* Fills e for a plain mutex or a read-write lock and registers it. */
void hm__fork_register_mutex(hm_fork_entry *e, pthread_mutex_t *mutex, hm_fork_rank rank);
void hm__fork_register_rwlock(hm_fork_entry *e, pthread_rwlock_t *rwlock, hm_fork_rank rank);

#endif

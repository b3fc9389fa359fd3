/* fork safety on Windows: there is no fork(), so there is nothing to hold across one (see fork.h). */
#include "internal.h"

void hm__fork_register(hm_fork_entry *e) { (void)e; }

void hm__fork_unregister(hm_fork_entry *e) { (void)e; }

void hm__fork_register_mutex(hm_fork_entry *e, pthread_mutex_t *mutex, hm_fork_rank rank)
{
    (void)e, (void)mutex, (void)rank;
}

void hm__fork_register_rwlock(hm_fork_entry *e, pthread_rwlock_t *rwlock, hm_fork_rank rank)
{
    (void)e, (void)rwlock, (void)rank;
}

/* Failure injection for the OS layer's primitives (see os.h): a test-only switch, off unless a test arms it. */
#include "internal.h"

#include <stdatomic.h>

static atomic_bool armed;
static _Atomic unsigned long calls[HM_OS_OPS];
static _Atomic unsigned long fail_at; /* the call number of fail_op that fails; 0: none */
static atomic_int fail_op, fail_err;
static atomic_bool fail_partial;

void hm__os_fail(hm_os_op op, unsigned long nth, int err, bool partial)
{
    atomic_store(&armed, false);
    for (int i = 0; i < HM_OS_OPS; i++)
        atomic_store(&calls[i], 0);
    atomic_store(&fail_op, (int)op);
    atomic_store(&fail_err, err);
    atomic_store(&fail_partial, partial);
    atomic_store(&fail_at, nth);
    atomic_store(&armed, true);
}

void hm__os_fail_off(void) { atomic_store(&armed, false); }

unsigned long hm__os_calls(hm_os_op op) { return atomic_load(&calls[op]); }

int hm__os_injected(hm_os_op op, bool *partial)
{
    *partial = false;
    if (!atomic_load_explicit(&armed, memory_order_relaxed))
        return 0;
    unsigned long n = atomic_fetch_add(&calls[op], 1) + 1;
    if ((int)op != atomic_load(&fail_op) || n != atomic_load(&fail_at))
        return 0;
    *partial = atomic_load(&fail_partial);
    return atomic_load(&fail_err);
}

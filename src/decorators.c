/* How hostmem's decorators are seen through: the layers above src/ (the fault layer, the recorder) register their
 * vtables here. (HostMemCreateManager, which applies them, is in harness/factory.c.) */
#include "internal.h"

#include <stdatomic.h>

#define MAX_DECORATORS 8


typedef struct decorator_kind {
    _Atomic(const IHostMemoryManagerVtbl *) vtbl;
    _Atomic(hm_inner_fn) inner;
} decorator_kind;

static decorator_kind kinds[MAX_DECORATORS];

void hm__decorator_register(const IHostMemoryManagerVtbl *vtbl, hm_inner_fn inner)
{
    for (int i = 0; i < MAX_DECORATORS; i++) {
        const IHostMemoryManagerVtbl *seen = atomic_load(&kinds[i].vtbl);
        if (seen == vtbl)
            return;
        if (!seen) {
            atomic_store(&kinds[i].inner, inner); /* before the vtable: a reader that sees it finds its inner() */
            const IHostMemoryManagerVtbl *expected = NULL;
            if (atomic_compare_exchange_strong(&kinds[i].vtbl, &expected, vtbl) || expected == vtbl)
                return;
        }
    }
}

IHostMemoryManager *hm__decorator_inner(IHostMemoryManager *outer)
{
    if (!outer)
        return NULL;
    for (int i = 0; i < MAX_DECORATORS; i++) {
        const IHostMemoryManagerVtbl *vtbl = atomic_load(&kinds[i].vtbl);
        if (!vtbl)
            break;
        if (vtbl == outer->lpVtbl)
            return atomic_load(&kinds[i].inner)(outer);
    }
    return NULL;
}

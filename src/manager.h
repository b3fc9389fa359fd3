/* The built-in manager, as the rest of hostmem sees it. Internal to hostmem. */
#ifndef HOSTMEM_SRC_MANAGER_H
#define HOSTMEM_SRC_MANAGER_H

#include "notify.h"

#include <hostmem/hostmem.h>

typedef struct hm_manager hm_manager;

/* The built-in manager behind iface, seeing through hostmem's own decorators (fault layer, recorder); NULL when
 * there is none (a third-party host). */
hm_manager *hm__manager_from(IHostMemoryManager *iface);
hm_notify *hm__manager_notify(hm_manager *m);

/* Puts a built-in manager (iface itself, not a decorator) back to its state just after HostMemCreateBuiltinManager
 * with the same options: no reservations, ledger ranges, callbacks (released), leak reports or statistics, the
 * budget uncharged, and the same addresses for the same calls (deterministic mode). Cheaper than a new manager (its
 * address space stays mapped; see hm__vm_reset): the fuzz targets reuse one across inputs. Only while the caller
 * holds the one reference and no heap is alive: HOST_E_INVALIDOPERATION otherwise, E_NOINTERFACE for another host. */
HRESULT hm__manager_reset(IHostMemoryManager *iface);

/* Decorators (faults/, the recorder) register how to find their inner manager, so diagnostics see through them.
 * Registering the same vtable again is harmless. */
typedef IHostMemoryManager *(*hm_inner_fn)(IHostMemoryManager *outer);
void hm__decorator_register(const IHostMemoryManagerVtbl *vtbl, hm_inner_fn inner);
/* The manager a registered decorator wraps, or NULL. */
IHostMemoryManager *hm__decorator_inner(IHostMemoryManager *outer);

#endif

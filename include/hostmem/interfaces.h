/* hostmem: the CLR hosting memory interfaces (IUnknown, IHostMemoryManager, IHostMalloc,
 * ICLRMemoryNotificationCallback) as the plain C binding MIDL generates, and their IIDs.
 *
 * They are defined in <hostmem/contract.h>, which a host may include alone (it needs no hostmem library); this
 * header keeps the name hostmem's own sources use. libhostmem defines and exports the IIDs, so a program linked
 * with it needs no HOSTMEM_INITGUID. */
#ifndef HOSTMEM_INTERFACES_H
#define HOSTMEM_INTERFACES_H

#include "contract.h"
#include "win32.h"

#endif /* HOSTMEM_INTERFACES_H */

/* hostmem: the CLR hosting memory interfaces (IUnknown, IHostMemoryManager, IHostMalloc,
 * ICLRMemoryNotificationCallback) as the plain C binding MIDL generates, and their IIDs.
 *
 * They are defined in <hostmem/contract.h>, which a host may include alone (it needs no hostmem library); this
 * header keeps the name hostmem's own sources use. libhostmem defines and exports the IIDs, so a program linked
 * with it needs no HOSTMEM_INITGUID. */
#ifndef HOSTMEM_INTERFACES_H
#define HOSTMEM_INTERFACES_H

#include "api.h"

/* The IIDs are data of the library: on Windows a program that links hostmem.dll must import them (HM_API), unless it
 * defines them itself (HOSTMEM_INITGUID). */
#if !defined(HOSTMEM_IID_ATTR) && !defined(HOSTMEM_INITGUID)
#define HOSTMEM_IID_ATTR HM_API
#endif
#include "contract.h"
#include "win32.h"

#endif /* HOSTMEM_INTERFACES_H */

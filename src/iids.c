/* The interface IDs: defined here, once, from <hostmem/contract.h>, and exported by libhostmem. */
/* Not internal.h: contract.h must be first included here, with HOSTMEM_INITGUID, to define the IIDs. */
#include <hostmem/api.h>

#define HOSTMEM_INITGUID
#define HOSTMEM_IID_ATTR HM_API
#include <hostmem/contract.h>

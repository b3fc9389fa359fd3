/* The interface IDs: defined here, once, from <hostmem/contract.h>, and exported by libhostmem. */
#include <hostmem/api.h>

#define HOSTMEM_INITGUID
#define HOSTMEM_IID_ATTR HM_API
#include <hostmem/contract.h>

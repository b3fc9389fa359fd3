/* hostmem: the methods of the contract, numbered for fault rules, traces and statistics. */
#ifndef HOSTMEM_METHODS_H
#define HOSTMEM_METHODS_H

#include "api.h"

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HM_METHOD_MAP(X)                                                                                    \
    X(CREATE_MALLOC, "CreateMalloc")                                                                       \
    X(VIRTUAL_ALLOC, "VirtualAlloc")                                                                       \
    X(VIRTUAL_FREE, "VirtualFree")                                                                         \
    X(VIRTUAL_QUERY, "VirtualQuery")                                                                       \
    X(VIRTUAL_PROTECT, "VirtualProtect")                                                                   \
    X(GET_MEMORY_LOAD, "GetMemoryLoad")                                                                    \
    X(REGISTER_CALLBACK, "RegisterMemoryNotificationCallback")                                             \
    X(NEEDS_VAS, "NeedsVirtualAddressSpace")                                                               \
    X(ACQUIRED_VAS, "AcquiredVirtualAddressSpace")                                                         \
    X(RELEASED_VAS, "ReleasedVirtualAddressSpace")                                                         \
    X(HEAP_ALLOC, "Alloc")                                                                                 \
    X(HEAP_DEBUG_ALLOC, "DebugAlloc")                                                                      \
    X(HEAP_FREE, "Free")

typedef enum hm_method {
#define HM_METHOD_ENUM_(id, name) HM_METHOD_##id,
    HM_METHOD_MAP(HM_METHOD_ENUM_)
#undef HM_METHOD_ENUM_
        HM_METHOD_COUNT
} hm_method;

/* The IDL name of a method ("VirtualAlloc"); hm_method_parse matches it case-insensitively (also
 * "CreateMAlloc"), returning HM_METHOD_COUNT when unknown. */
HM_API const char *hm_method_name(hm_method m);
HM_API hm_method hm_method_parse(const char *text, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* HOSTMEM_METHODS_H */

/* hostmem record and replay: traces of the calls a runtime makes to its host (docs/trace-format.md). */
#ifndef HOSTMEM_TRACE_H
#define HOSTMEM_TRACE_H

#include "interfaces.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifndef HM_API
#define HM_API __attribute__((visibility("default")))
#endif

/* Wraps inner (taking one reference) in a recorder that appends every call to the trace at path. */
HM_API HRESULT HostMemWrapRecorder(IHostMemoryManager *inner, const char *path, IHostMemoryManager **ppOuter);

#ifdef __cplusplus
}
#endif
#endif /* HOSTMEM_TRACE_H */

/* The recorder's place in the Windows build until harness/trace/ is ported there (HOSTMEM_WINDOWS_TRACE_SOURCES in
 * CMakeLists.txt): HostMemWrapRecorder refuses, so HOSTMEM_TRACE makes HostMemCreateManager fail with a message
 * instead of recording nothing. */
#include "error.h"

#include <hostmem/trace.h>

HM_API HRESULT HostMemWrapRecorder(IHostMemoryManager *inner, const char *path, IHostMemoryManager **ppOuter)
{
    (void)inner, (void)path;
    if (ppOuter)
        *ppOuter = NULL;
    hm__set_error("the trace recorder is not available in this Windows build yet");
    return E_NOTIMPL;
}

/* Fuzz target: the fault-spec parser. Any text must be accepted or refused with a message naming a column inside
 * the text, never crash or hang; an accepted spec must build a working fault layer. */
#include "fuzz.h"

#include <hostmem/hostmem.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    char *spec = malloc(size + 1);
    memcpy(spec, data, size);
    spec[size] = '\0';
    char err[512];
    HRESULT hr = HostMemFaultSpecCheck(spec, err, sizeof err);
    if (hr == E_INVALIDARG) {
        /* The message points into the text: "fault spec: column N: ..." with 1 <= N <= length + 1. */
        const char *col = strstr(err, "column ");
        if (strncmp(err, "fault spec: ", 12) != 0 || !col)
            abort();
        long n = strtol(col + 7, NULL, 10);
        if (n < 1 || (size_t)n > strlen(spec) + 1)
            abort();
    } else if (hr == S_OK) {
        static IHostMemoryManager *base;
        if (!base && HostMemCreateBuiltinManager("backend=sim,limit=64M", &base) != S_OK)
            abort();
        IHostMemoryManager *f;
        if (HostMemWrapFaults(base, spec, &f) != S_OK)
            abort(); /* the checker and the wrapper must agree */
        void *p = NULL;
        if (IHostMemoryManager_VirtualAlloc(f, NULL, 0x10000, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &p) == S_OK)
            IHostMemoryManager_VirtualFree(f, p, 0, MEM_RELEASE);
        IHostMemoryManager_Release(f);
    } else {
        abort(); /* only S_OK or E_INVALIDARG are possible answers */
    }
    free(spec);
    return 0;
}

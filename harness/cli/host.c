/* Choosing the host a subcommand talks to: the built-in manager or a plugin, optionally behind the fault layer. */
#include "cli.h"
#include "plugin.h"

#include <stdlib.h>
#include <string.h>

bool hm_cli_take_host_option(hm_host_choice *choice, int argc, char **argv, int *i, bool *error)
{
    const char *arg = argv[*i];
    const char **slot = NULL;
    if (strcmp(arg, "--host") == 0)
        slot = &choice->library;
    else if (strcmp(arg, "--host-options") == 0)
        slot = &choice->options;
    else if (strcmp(arg, "--faults") == 0)
        slot = &choice->faults;
    else
        return false;
    if (*i + 1 >= argc) {
        fprintf(stderr, "hostmem: %s needs a value\n", arg);
        *error = true;
        return true;
    }
    *slot = argv[++*i];
    return true;
}

HRESULT hm_cli_open_host(const hm_host_choice *choice, IHostMemoryManager **out)
{
    *out = NULL;
    IHostMemoryManager *manager = NULL;
    char err[1024];
    HRESULT hr = hm_host_open(choice->library, choice->options, &manager, err, sizeof err);
    if (FAILED(hr)) {
        fprintf(stderr, "hostmem: %s\n", err);
        return hr;
    }
    if (choice->faults) {
        IHostMemoryManager *wrapped;
        hr = HostMemWrapFaults(manager, choice->faults, &wrapped);
        IHostMemoryManager_Release(manager);
        if (FAILED(hr)) {
            fprintf(stderr, "hostmem: --faults '%s': %s\n", choice->faults, HostMemLastError());
            return hr;
        }
        manager = wrapped;
    }
    *out = manager;
    return S_OK;
}

bool hm_cli_parse_size(const char *text, unsigned long long *out)
{
    if (!text || !*text)
        return false;
    char *end;
    unsigned long long v = strtoull(text, &end, 0);
    if (end == text)
        return false;
    unsigned shift = 0;
    switch (*end) {
    case '\0': break;
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    default: return false;
    }
    if (*end != '\0' || (shift && v > (~0ull >> shift)))
        return false;
    *out = v << shift;
    return true;
}

/* Choosing the host a subcommand talks to: the built-in manager or a plugin, optionally behind the fault layer. */
#include "cli.h"

#include <dlfcn.h>
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
    HRESULT hr;
    if (!choice->library) {
        hr = HostMemCreateManager(choice->options, &manager);
        if (FAILED(hr)) {
            fprintf(stderr, "hostmem: the built-in manager could not be created (options '%s'): %s (%s)\n",
                    choice->options ? choice->options : "", HostMemLastError(), hm_hr_name(hr));
            return hr;
        }
    } else {
        /* RTLD_LOCAL keeps the plugin's symbols (its own HostMemCreateManager) out of everyone else's way. */
        void *lib = dlopen(choice->library, RTLD_NOW | RTLD_LOCAL);
        if (!lib) {
            fprintf(stderr, "hostmem: cannot load host library '%s': %s\n", choice->library, dlerror());
            return E_FAIL;
        }
        HostMemCreateManagerFn factory = (HostMemCreateManagerFn)(uintptr_t)dlsym(lib, "HostMemCreateManager");
        if (!factory) {
            fprintf(stderr,
                    "hostmem: host library '%s' does not export HostMemCreateManager (a host plugin exports\n"
                    "  HRESULT HostMemCreateManager(const char *options, IHostMemoryManager **ppManager);)\n",
                    choice->library);
            dlclose(lib);
            return E_FAIL;
        }
        hr = factory(choice->options, &manager);
        if (FAILED(hr) || !manager) {
            const char *(*last_error)(void) = (const char *(*)(void))(uintptr_t)dlsym(lib, "HostMemLastError");
            fprintf(stderr, "hostmem: HostMemCreateManager of '%s' with options '%s' failed: %s%s%s\n",
                    choice->library, choice->options ? choice->options : "", hm_hr_name(hr),
                    last_error && *last_error() ? ": " : "", last_error ? last_error() : "");
            if (SUCCEEDED(hr)) {
                fprintf(stderr, "hostmem: (it returned %s but no manager)\n", hm_hr_name(hr));
                hr = E_POINTER;
            }
            return hr;
        }
        /* The plugin stays loaded: its objects may outlive any scope we could close it in. */
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

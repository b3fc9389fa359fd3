/* Choosing the host a subcommand talks to: the built-in manager or a plugin, optionally behind the fault layer. */
#include "cli.h"
#include "factory.h"
#include "plugin.h"

#include "options.h"

#include <stdlib.h>
#include <string.h>

HRESULT hm__cli_open_host(const hm_host_choice *choice, IHostMemoryManager **out)
{
    *out = NULL;
    IHostMemoryManager *manager = NULL;
    char err[1024];
    HRESULT hr;
    if (!choice->library) {
        /* HostMemCreateManager's manager, except that --faults replaces HOSTMEM_FAULTS: one fault layer (below). */
        hr = hm__create_manager(choice->options, choice->faults ? NULL : getenv("HOSTMEM_FAULTS"), &manager);
        if (FAILED(hr)) {
            fprintf(stderr, "hostmem: the built-in manager could not be created (options '%s'): %s (%s)\n",
                    choice->options ? choice->options : "", HostMemLastError(), hm_hr_name(hr));
            return hr;
        }
    } else if (FAILED(hr = hm__host_open(choice->library, choice->options, &manager, err, sizeof err))) {
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

/* ---- Running a whole subcommand isolated ------------------------------------------------------------------- */

typedef struct isolated_command {
    hm_cmd_fn fn;
    int argc;
    char **argv;
    int code;
} isolated_command;

static void command_child(void *ctx)
{
    isolated_command *c = ctx;
    c->code = c->fn(c->argc, c->argv);
}

int hm__cli_isolated(const char *name, hm_cmd_fn fn, int argc, char **argv)
{
    /* First the command's own parser, in this process: --help, bad usage (exit 2) and the values of --host and
     * --timeout come from the command's table, as for any option. */
    hm_cli_probe probe = {0};
    hm__cli_probe_set(&probe);
    int code = fn(argc, argv);
    hm__cli_probe_set(NULL);
    if (!probe.parsed)
        return code;
    if (!probe.library)
        return fn(argc, argv);
    isolated_command *c = hm__shared_alloc(sizeof *c);
    if (!c) {
        fprintf(stderr, "hostmem %s: cannot map memory to share with the child\n", name);
        return HM_EXIT_FAIL;
    }
    *c = (isolated_command){fn, argc, argv, HM_EXIT_FAIL};
    hm_isolate_options io = {.timeout_seconds = (double)probe.timeout, .pass_stdout = true};
    hm_isolated how;
    if (hm__isolate(command_child, c, &io, &how) == HM_ISOLATED_REPORTED) {
        code = c->code;
    } else {
        fflush(stdout);
        fprintf(stderr, "hostmem %s: FAIL: %s\n", name, how.message);
        code = HM_EXIT_FAIL;
    }
    hm__shared_free(c, sizeof *c);
    return code;
}

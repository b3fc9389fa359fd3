/* Choosing the host a subcommand talks to: the built-in manager or a plugin, optionally behind the fault layer. */
#include "cli.h"
#include "factory.h"
#include "plugin.h"

#include "options.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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

void hm__cli_host_env(const hm_host_choice *choice, hm_trace_env *env, char *resolved, size_t resolved_len)
{
    memset(env, 0, sizeof *env);
    resolved[0] = '\0';
    env->host = choice->library ? choice->library : HM_TRACE_BUILTIN_HOST;
    env->host_options = choice->options;
    /* The spec in force: --faults, else (the built-in factory only) HOSTMEM_FAULTS. */
    env->faults = choice->faults ? choice->faults : choice->library ? NULL : getenv("HOSTMEM_FAULTS");
    if (choice->library) {
        char *real = realpath(choice->library, NULL); /* a bare name found in the library path stays unresolved */
        if (real && strlen(real) < resolved_len)
            snprintf(resolved, resolved_len, "%s", real);
        free(real);
        env->host_path = resolved;
    }
}

static bool is_file(const char *path)
{
    struct stat st;
    return path && *path && stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

char *hm__cli_host_from_env(const hm_trace_env *env, hm_host_choice *choice, bool inject, bool faults_allowed,
                            FILE *report)
{
    /* A loaded trace's fields may be NULL (hm_trace): read them as "". */
    hm_trace_env given = *env;
    const char **fields[] = {&given.host, &given.host_path, &given.host_options, &given.faults};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        if (!*fields[i])
            *fields[i] = "";
    env = &given;
    char *options = NULL;
    bool builtin_recorded = strcmp(env->host, HM_TRACE_BUILTIN_HOST) == 0;
    bool recorded_host_used = false; /* the recorded options are for the recorded host only */
    if (!choice->library && *env->host && !builtin_recorded) {
        /* The exact file recorded (its resolved path), else the path as it was given (relative to here). */
        const char *plugin = is_file(env->host_path) ? env->host_path : is_file(env->host) ? env->host : NULL;
        if (plugin) {
            choice->library = plugin;
            recorded_host_used = true;
            fprintf(report, "host: %s (from the trace)\n", plugin);
        } else {
            fprintf(report, "host: built-in (the trace's host '%s' is not found here)\n", env->host);
        }
    } else if (!choice->library && builtin_recorded) {
        recorded_host_used = true;
    }
    if (!choice->options && recorded_host_used && *env->host_options) {
        if (choice->library) {
            choice->options = env->host_options;
        } else {
            /* The replay's own settings (deterministic, simulated), then the recorded ones, which win. */
            size_t len = strlen(HM_REPLAY_BUILTIN_OPTIONS) + 1 + strlen(env->host_options) + 1;
            if ((options = malloc(len)) != NULL) {
                snprintf(options, len, "%s,%s", HM_REPLAY_BUILTIN_OPTIONS, env->host_options);
                choice->options = options;
            }
        }
        if (choice->options)
            fprintf(report, "host options: %s (from the trace)\n", env->host_options);
    }
    if (!choice->faults && *env->faults) {
        /* The recorded fault spec made the trace's failed calls fail; injection fails those same calls again, so
         * applying the spec too would fail others: its counters (nth=...) never see the injected calls. */
        if (!faults_allowed)
            fprintf(report, "recorded faults: %s (not applied, this command injects its own)\n", env->faults);
        else if (inject)
            fprintf(report, "recorded faults: %s (not applied again, the failed calls it caused are "
                            "injected from the trace; --no-inject applies it instead)\n",
                    env->faults);
        else {
            choice->faults = env->faults;
            fprintf(report, "faults: %s (from the trace)\n", env->faults);
        }
    }
    return options;
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
    return hm__cli_isolated_if(name, fn, argc, argv, false);
}

int hm__cli_isolated_if(const char *name, hm_cmd_fn fn, int argc, char **argv, bool always)
{
    /* First the command's own parser, in this process: --help, bad usage (exit 2) and the values of --host and
     * --timeout come from the command's table, as for any option. */
    hm_cli_probe probe = {0};
    hm__cli_probe_set(&probe);
    int code = fn(argc, argv);
    hm__cli_probe_set(NULL);
    if (!probe.parsed)
        return code;
    if (!probe.library && !always)
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

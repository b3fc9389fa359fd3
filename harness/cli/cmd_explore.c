/* hostmem explore: systematic OOM exploration of a scenario (SQLite's loop; see docs/faults.md). */
#include "cli.h"
#include "options.h"

#include <stdlib.h>
#include <string.h>

typedef struct host_factory {
    hm_host_choice choice;
} host_factory;

static HRESULT open_host(void *ctx, IHostMemoryManager **out)
{
    host_factory *f = ctx;
    return hm__cli_open_host(&f->choice, out);
}

static const char description[] =
    "Runs a scenario once counting the calls RULE matches (default 'VirtualAlloc|heap'), then once per\n"
    "call failing it (transient: only that call; persistent: that call and every later one), checking\n"
    "each run finishes cleanly: the scenario copes, the books stay consistent, nothing leaks.\n"
    "The scenario is the built-in workload (a runtime starting, working and stopping), or a trace.\n"
    "It prints the runs that failed and a summary; --verbose prints every run.\n"
    "With a trace and no --host or --host-options, the host and options the trace's header names are\n"
    "used, as replay does (--no-trace-env ignores them); its fault spec is not (exploration injects its own).\n"
    "A --host plugin runs in a child process: its crash, exit or hang (past --timeout; default: no\n"
    "limit) is reported as a failure.\n"
    "Exit 0 when every run finished cleanly, 1 otherwise, 2 for bad usage or a host that cannot be loaded.\n";

static int explore_command(int argc, char **argv)
{
    hm_explore_options o = {0};
    host_factory factory = {{0}};
    bool json = false, verbose = false, transient = false, persistent = false, no_trace_env = false;
    unsigned long long max = 0, timeout = 0;
    const hm_option table[] = {
        HM_HOST_OPTIONS(&factory.choice),
        HM_NO_TRACE_ENV_OPTION(&no_trace_env),
        {"--faults", "SPEC", HM_OPTION_STRING, &factory.choice.faults, 0, 0,
         "refused: exploration injects its own failures", NULL},
        {"--match", "RULE", HM_OPTION_STRING, &o.match, 0, 0, "the calls to fail (default 'VirtualAlloc|heap')", NULL},
        {"--transient", NULL, HM_OPTION_FLAG, &transient, 0, 0, "fail only the chosen call", NULL},
        {"--persistent", NULL, HM_OPTION_FLAG, &persistent, 0, 0, "fail the chosen call and every later one", NULL},
        {"--max", "N", HM_OPTION_UINT, &max, 1, 1000000000, "at most N runs of each kind", NULL},
        {"--json", NULL, HM_OPTION_FLAG, &json, 0, 0, "one JSON document on stdout (every run)", NULL},
        {"--verbose", NULL, HM_OPTION_FLAG, &verbose, 0, 0, "print every run, not only the failed ones", NULL},
        /* read by hm__cli_isolated (its first pass of this parser), which runs a plugin in a child */
        {"--timeout", "SECONDS", HM_OPTION_UINT, &timeout, 1, 86400, "for the whole exploration of a plugin", NULL},
    };
    const hm_command_spec spec = {"explore", "[TRACE]", 0, 1, description, table, sizeof table / sizeof table[0]};
    const char *operands[1] = {NULL};
    size_t operand_count;
    int parsed = hm__cli_parse_options(&spec, argc, argv, operands, &operand_count);
    if (parsed >= 0)
        return parsed;
    const char *trace = operands[0];
    o.transient = transient;
    o.persistent = persistent;
    o.max_points = max;
    if (factory.choice.faults) {
        fprintf(stderr, "hostmem explore: --faults does not combine with exploration (it injects its own)\n");
        return HM_EXIT_USAGE;
    }
    hm_scenario_fn scenario = hm_scenario_builtin;
    hm_trace *loaded = NULL;
    char *env_options = NULL;
    if (trace) {
        if (FAILED(hm_trace_load(trace, &loaded))) {
            fprintf(stderr, "hostmem explore: %s\n", HostMemLastError());
            return HM_EXIT_USAGE;
        }
        scenario = hm_trace_scenario;
        /* The host the trace was recorded on (choice points into loaded->env); never its faults. */
        if (!no_trace_env) {
            env_options = hm__cli_host_from_env(&loaded->env, &factory.choice, true, false, json ? stderr : stdout);
            fflush(stdout);
        }
    }
    o.factory = open_host;
    o.factory_ctx = &factory;
    o.progress = json || !verbose ? NULL : stdout;
    /* A host that cannot be loaded or made is bad input (it said why), not a failed exploration. */
    IHostMemoryManager *probe;
    if (FAILED(open_host(&factory, &probe))) {
        hm_trace_free(loaded);
        free(env_options);
        return HM_EXIT_USAGE;
    }
    IHostMemoryManager_Release(probe);
    hm_explore_result r;
    HRESULT hr = HostMemExplore(scenario, loaded, &o, &r);
    hm_trace_free(loaded);
    free(env_options);
    if (FAILED(hr)) {
        fprintf(stderr, "hostmem explore: %s\n", HostMemLastError());
        return hr == E_INVALIDARG ? HM_EXIT_USAGE : HM_EXIT_FAIL;
    }
    if (json) {
        printf("{\"scenario\": ");
        hm__cli_json_string(stdout, trace ? trace : "builtin");
        printf(", \"match\": ");
        hm__cli_json_string(stdout, o.match ? o.match : "VirtualAlloc|heap");
        printf(", \"matching_calls\": %llu, \"runs\": %llu, \"failures\": %llu, \"points\": [",
               (unsigned long long)r.matching_calls, (unsigned long long)r.runs, (unsigned long long)r.failures);
        for (uint64_t i = 0; i < r.runs; i++) {
            const hm_explore_point *p = &r.points[i];
            printf("%s\n  {\"k\": %llu, \"persistent\": %s, \"ok\": %s, \"result\": ", i ? "," : "",
                   (unsigned long long)p->k, p->persistent ? "true" : "false", p->ok ? "true" : "false");
            hm__cli_json_string(stdout, hm_hr_name(p->scenario_result));
            printf(", \"message\": ");
            hm__cli_json_string(stdout, p->message);
            printf("}");
        }
        printf("\n]}\n");
    } else {
        for (uint64_t i = 0; i < r.runs && !verbose; i++) /* --verbose printed them all already */
            if (!r.points[i].ok)
                printf("%-10s fail call %3llu of %llu: FAILED: %s\n", r.points[i].persistent ? "persistent" : "transient",
                       (unsigned long long)r.points[i].k, (unsigned long long)r.matching_calls, r.points[i].message);
        printf("%s%llu matching call(s); %llu run(s), %llu failed\n", verbose || r.failures ? "\n" : "",
               (unsigned long long)r.matching_calls, (unsigned long long)r.runs, (unsigned long long)r.failures);
    }
    int code = r.failures ? HM_EXIT_FAIL : HM_EXIT_OK;
    HostMemExploreFree(&r);
    return code;
}

/* A plugin host is run in an isolated child (hm__cli_isolated): its crash, exit or hang is a finding. Always
 * isolated: the host a trace's header names may be a plugin. */
int hm__cmd_explore(int argc, char **argv) { return hm__cli_isolated_if("explore", explore_command, argc, argv, true); }

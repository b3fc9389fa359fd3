/* hostmem explore: systematic OOM exploration of a scenario (SQLite's loop; see docs/faults.md). */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

typedef struct host_factory {
    hm_host_choice choice;
} host_factory;

static HRESULT open_host(void *ctx, IHostMemoryManager **out)
{
    host_factory *f = ctx;
    return hm_cli_open_host(&f->choice, out);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: hostmem explore [TRACE] [--match RULE] [--transient | --persistent] [--max N]\n"
               "                       [--host LIB.so] [--host-options S] [--json] [--timeout SECONDS]\n\n"
               "Runs a scenario once counting the calls RULE matches (default 'VirtualAlloc|heap'), then once per\n"
               "call failing it (transient: only that call; persistent: that call and every later one), checking\n"
               "each run finishes cleanly: the scenario copes, the books stay consistent, nothing leaks.\n"
               "The scenario is the built-in workload (a runtime starting, working and stopping), or a trace.\n"
               "A --host plugin runs in a child process: its crash, exit or hang (past --timeout; default: no\n"
               "limit) is reported as a failure.\n"
               "Exit 0 when every run finished cleanly, 1 otherwise, 2 for bad usage.\n");
}

static int explore_command(int argc, char **argv)
{
    hm_explore_options o = {0};
    host_factory factory = {{0}};
    const char *trace = NULL;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        bool error = false;
        if (hm_cli_take_host_option(&factory.choice, argc, argv, &i, &error)) {
            if (error)
                return HM_EXIT_USAGE;
        } else if (strcmp(argv[i], "--match") == 0 && i + 1 < argc) {
            o.match = argv[++i];
        } else if (strcmp(argv[i], "--transient") == 0) {
            o.transient = 1;
        } else if (strcmp(argv[i], "--persistent") == 0) {
            o.persistent = 1;
        } else if (strcmp(argv[i], "--max") == 0) {
            unsigned long long n;
            if (!hm_cli_take_uint("explore", argc, argv, &i, 1, 1000000000, &n))
                return HM_EXIT_USAGE;
            o.max_points = n;
        } else if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if (strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return HM_EXIT_OK;
        } else if (argv[i][0] != '-' && !trace) {
            trace = argv[i];
        } else {
            fprintf(stderr, "hostmem explore: unknown argument '%s'\n\n", argv[i]);
            usage(stderr);
            return HM_EXIT_USAGE;
        }
    }
    if (factory.choice.faults) {
        fprintf(stderr, "hostmem explore: --faults does not combine with exploration (it injects its own)\n");
        return HM_EXIT_USAGE;
    }
    hm_scenario_fn scenario = hm_scenario_builtin;
    hm_trace *loaded = NULL;
    if (trace) {
        if (FAILED(hm_trace_load(trace, &loaded))) {
            fprintf(stderr, "hostmem explore: %s\n", HostMemLastError());
            return HM_EXIT_USAGE;
        }
        scenario = hm_trace_scenario;
    }
    o.factory = open_host;
    o.factory_ctx = &factory;
    o.progress = json ? NULL : stdout;
    hm_explore_result r;
    HRESULT hr = HostMemExplore(scenario, loaded, &o, &r);
    if (loaded)
        hm_trace_free(loaded);
    if (FAILED(hr)) {
        fprintf(stderr, "hostmem explore: %s\n", HostMemLastError());
        return hr == E_INVALIDARG ? HM_EXIT_USAGE : HM_EXIT_FAIL;
    }
    if (json) {
        printf("{\"scenario\": ");
        hm_cli_json_string(stdout, trace ? trace : "builtin");
        printf(", \"match\": ");
        hm_cli_json_string(stdout, o.match ? o.match : "VirtualAlloc|heap");
        printf(", \"matching_calls\": %llu, \"runs\": %llu, \"failures\": %llu, \"points\": [",
               (unsigned long long)r.matching_calls, (unsigned long long)r.runs, (unsigned long long)r.failures);
        for (uint64_t i = 0; i < r.runs; i++) {
            const hm_explore_point *p = &r.points[i];
            printf("%s\n  {\"k\": %llu, \"persistent\": %s, \"ok\": %s, \"result\": ", i ? "," : "",
                   (unsigned long long)p->k, p->persistent ? "true" : "false", p->ok ? "true" : "false");
            hm_cli_json_string(stdout, hm_hr_name(p->scenario_result));
            printf(", \"message\": ");
            hm_cli_json_string(stdout, p->message);
            printf("}");
        }
        printf("\n]}\n");
    } else {
        printf("\n%llu matching call(s); %llu run(s), %llu failed\n", (unsigned long long)r.matching_calls,
               (unsigned long long)r.runs, (unsigned long long)r.failures);
    }
    int code = r.failures ? HM_EXIT_FAIL : HM_EXIT_OK;
    HostMemExploreFree(&r);
    return code;
}

/* A plugin host is run in an isolated child (hm_cli_isolated): its crash, exit or hang is a finding. */
int hm_cmd_explore(int argc, char **argv) { return hm_cli_isolated("explore", explore_command, argc, argv); }

/* hostmem replay TRACE: re-executes a trace against a host and reports the first divergence.
 * Exit codes: 0 every result matched, 1 divergence, 2 bad input (or the host could not be made). */
#include "cli.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: hostmem replay TRACE [--host LIB.so] [--host-options S] [--faults SPEC] [--emit-faults]\n"
               "                            [--json] [--no-inject] [--compare-load] [--context N]\n"
               "  Without --host and --host-options the built-in manager runs with " HM_REPLAY_BUILTIN_OPTIONS ".\n");
}

/* The replay's manager factory: the chosen host, made afresh for each run. */
static HRESULT open_choice(void *ctx, IHostMemoryManager **out) { return hm_cli_open_host(ctx, out); }

int hm_cmd_replay(int argc, char **argv)
{
    hm_host_choice choice = {0};
    hm_replay_options opts = {0};
    const char *path = NULL;
    bool json = false, error = false;
    for (int i = 1; i < argc && !error; i++) {
        if (hm_cli_take_host_option(&choice, argc, argv, &i, &error))
            continue;
        if (strcmp(argv[i], "--emit-faults") == 0)
            opts.emit_faults = 1;
        else if (strcmp(argv[i], "--json") == 0)
            json = true;
        else if (strcmp(argv[i], "--no-inject") == 0)
            opts.no_inject = 1;
        else if (strcmp(argv[i], "--compare-load") == 0)
            opts.compare_load = 1;
        else if (strcmp(argv[i], "--context") == 0) {
            unsigned long long context;
            /* The replay keeps at most 16 calls: the context and the call that diverged. */
            if (!hm_cli_take_uint("replay", argc, argv, &i, 1, 15, &context))
                return HM_EXIT_USAGE;
            opts.context = (int)context;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "hostmem replay: unknown option '%s'\n", argv[i]);
            error = true;
        } else if (!path)
            path = argv[i];
        else
            error = true;
    }
    if (error || !path) {
        usage(stderr);
        return HM_EXIT_USAGE;
    }
    if (!choice.library && !choice.options)
        choice.options = HM_REPLAY_BUILTIN_OPTIONS;
    opts.factory = open_choice;
    opts.factory_ctx = &choice;

    hm_replay_result res;
    HRESULT hr = HostMemReplay(path, &opts, &res);
    if (FAILED(hr)) {
        fprintf(stderr, "hostmem replay: %s\n", res.error[0] ? res.error : hm_hr_name(hr));
        HostMemReplayFree(&res);
        return HM_EXIT_USAGE;
    }
    if (json) {
        printf("{\"trace\": ");
        hm_cli_json_string(stdout, path);
        printf(", \"calls\": %" PRIu64 ", \"host_calls\": %" PRIu64 ", \"injected\": %" PRIu64
               ", \"notifications_recorded\": %" PRIu64 ", \"notifications_seen\": %" PRIu64 ", \"lost\": %" PRIu64
               ", \"diverged\": %s",
               res.calls, res.host_calls, res.injected, res.notifications_recorded, res.notifications_seen, res.lost,
               res.diverged ? "true" : "false");
        if (res.diverged) {
            printf(", \"divergence\": {\"seq\": %" PRIu64 ", \"method\": ", res.divergence_seq);
            hm_cli_json_string(stdout, hm_trace_method_name(res.divergence_method));
            printf(", \"field\": ");
            hm_cli_json_string(stdout, res.field);
            printf(", \"expected\": ");
            hm_cli_json_string(stdout, res.expected);
            printf(", \"actual\": ");
            hm_cli_json_string(stdout, res.actual);
            printf(", \"report\": ");
            hm_cli_json_string(stdout, res.report);
            printf("}");
        }
        if (res.fault_spec) {
            printf(", \"faults\": ");
            hm_cli_json_string(stdout, res.fault_spec);
        }
        printf("}\n");
    } else {
        if (res.diverged)
            fputs(res.report, stdout);
        printf("%s: %" PRIu64 " calls replayed (%" PRIu64 " to the host, %" PRIu64
               " recorded failures injected), %s\n",
               path, res.calls, res.host_calls, res.injected, res.diverged ? "DIVERGED" : "every result matched");
        if (res.notifications_recorded || res.notifications_seen)
            printf("notifications: %" PRIu64 " recorded, %" PRIu64 " sent by this host (not compared)\n",
                   res.notifications_recorded, res.notifications_seen);
        if (res.lost)
            printf("note: the recorder was killed with calls in flight (%" PRIu64 " gap(s)); they are not in the trace\n",
                   res.lost);
        if (res.fault_spec)
            printf("faults: %s\n", res.fault_spec[0] ? res.fault_spec : "(none: no recorded failure to reproduce)");
    }
    int code = res.diverged ? HM_EXIT_FAIL : HM_EXIT_OK;
    HostMemReplayFree(&res);
    return code;
}

/* hostmem reduce TRACE -o SMALL: the fewest calls that still show the trace's failure (ddmin). */
#include "cli.h"
#include "options.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static const char description[] =
    "Delta debugging: the fewest calls of TRACE whose replay still shows the same failure, written to\n"
    "SMALL (binary when it ends in .bin, else text). The failure is the signature of the first divergence\n"
    "(the method and the HRESULTs, or the method and the field that differs) or, for a trace that replays\n"
    "cleanly, its last recorded failure replay injects (an out-of-memory: oom-reproduced; E_FAIL or a\n"
    "HOST_E_*: failure-reproduced; never an E_INVALIDARG, which the host is asked for again);\n"
    "a candidate whose first divergence is another bug is refused (--any accepts it).\n"
    "Without --host, --host-options and --faults, the ones the trace's header names are used, as replay\n"
    "does (--no-trace-env ignores them); SMALL keeps the header.\n"
    "A --host plugin runs in a child process: its crash, exit or hang (past --timeout; default: no\n"
    "limit) is reported and the exit status is 1.\n";

static HRESULT open_choice(void *ctx, IHostMemoryManager **out) { return hm__cli_open_host(ctx, out); }

static int reduce_command(int argc, char **argv)
{
    hm_host_choice choice = {0};
    hm_replay_options opts = {0};
    const char *out = NULL;
    bool no_inject = false, any = false, no_trace_env = false;
    unsigned long long timeout = 0;
    const hm_option table[] = {
        {"-o", "SMALL", HM_OPTION_STRING, &out, 0, 0, "the reduced trace to write (required)", NULL},
        HM_HOST_OPTIONS(&choice),
        HM_FAULTS_OPTION(&choice),
        HM_NO_TRACE_ENV_OPTION(&no_trace_env),
        {"--no-inject", NULL, HM_OPTION_FLAG, &no_inject, 0, 0, "do not inject the recorded failures", NULL},
        {"--any", NULL, HM_OPTION_FLAG, &any, 0, 0, "keep any divergence, not only the original's signature", NULL},
        /* read by hm__cli_isolated (its first pass of this parser), which runs a plugin in a child */
        {"--timeout", "SECONDS", HM_OPTION_UINT, &timeout, 1, 86400, "for the whole reduction of a plugin", NULL},
    };
    const hm_command_spec spec = {"reduce", "TRACE -o SMALL", 1, 1, description, table, sizeof table / sizeof table[0]};
    const char *operands[1];
    size_t operand_count;
    int parsed = hm__cli_parse_options(&spec, argc, argv, operands, &operand_count);
    if (parsed >= 0)
        return parsed;
    const char *path = operands[0];
    if (!out) {
        fprintf(stderr, "hostmem reduce: -o SMALL is missing: where to write the reduced trace\n");
        hm__cli_usage(&spec, stderr, false);
        return HM_EXIT_USAGE;
    }
    opts.no_inject = no_inject;
    opts.any_failure = any;
    hm_trace *trace;
    if (FAILED(hm_trace_load(path, &trace))) {
        fprintf(stderr, "hostmem reduce: %s\n", HostMemLastError());
        return HM_EXIT_USAGE;
    }
    /* What the command line leaves open, the trace's header may say (choice points into trace->env). */
    char *env_options = NULL;
    if (!no_trace_env) {
        env_options = hm__cli_host_from_env(&trace->env, &choice, !no_inject, true, stdout);
        fflush(stdout);
    }
    if (!choice.library && !choice.options)
        choice.options = HM_REPLAY_BUILTIN_OPTIONS;
    opts.factory = open_choice;
    opts.factory_ctx = &choice;
    hm_trace *small;
    hm_reduce_stats stats;
    HRESULT hr = HostMemReduce(trace, &opts, &small, &stats);
    if (FAILED(hr)) {
        fprintf(stderr, "hostmem reduce: %s\n", HostMemLastError());
        hm_trace_free(trace);
        free(env_options);
        return HM_EXIT_USAGE;
    }
    hm_trace_writer *w;
    int code = HM_EXIT_OK;
    if (FAILED(hm_trace_writer_open(out, strlen(out) > 4 && strcmp(out + strlen(out) - 4, ".bin") == 0
                                             ? HM_TRACE_BINARY : HM_TRACE_TEXT, &w))) {
        fprintf(stderr, "hostmem reduce: %s\n", HostMemLastError());
        hm_trace_free(small);
        hm_trace_free(trace);
        free(env_options);
        return HM_EXIT_USAGE; /* an output that cannot be made: bad usage, as everywhere */
    }
    /* The smaller trace keeps the recording's environment (HostMemReduce copied it): it replays on the same host. */
    hm_trace_write_env(w, &small->env);
    char note[400];
    snprintf(note, sizeof note, "reduced from %s (%zu calls) to %zu calls; keeps: %s", path, stats.original_calls,
             stats.reduced_calls, stats.failure);
    hm_trace_write_comment(w, note);
    for (size_t i = 0; i < small->count; i++)
        hm_trace_write(w, &small->calls[i]);
    if (small->incomplete)
        hm_trace_write_incomplete(w, small->incomplete_calls, small->incomplete_reason);
    if (FAILED(hm_trace_writer_close(w))) {
        fprintf(stderr, "hostmem reduce: %s\n", HostMemLastError());
        code = HM_EXIT_USAGE;
    }
    if (code == HM_EXIT_OK) {
        printf("%s: %zu calls -> %s: %zu calls (%" PRIu64 " replays); the failure kept: %s\n", path,
               stats.original_calls, out, stats.reduced_calls, stats.replays, stats.failure);
        if (small->incomplete)
            printf("the trace is incomplete (recording stopped after %" PRIu64 " calls: %s): so is the reduced one\n",
                   small->incomplete_calls, small->incomplete_reason);
    }
    hm_trace_free(small);
    hm_trace_free(trace);
    free(env_options);
    return code;
}

/* A plugin host is run in an isolated child (hm__cli_isolated): its crash, exit or hang is a finding. Always
 * isolated: the host the trace's header names may be a plugin. */
int hm__cmd_reduce(int argc, char **argv) { return hm__cli_isolated_if("reduce", reduce_command, argc, argv, true); }

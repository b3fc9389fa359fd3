/* hostmem reduce TRACE -o SMALL: the fewest calls that still show the trace's failure (ddmin). */
#include "cli.h"

#include <inttypes.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: hostmem reduce TRACE -o SMALL [--host LIB.so] [--host-options S] [--faults SPEC] [--no-inject]\n"
               "                     [--timeout SECONDS]\n"
               "  A --host plugin runs in a child process: its crash, exit or hang (past --timeout; default: no\n"
               "  limit) is reported and the exit status is 1.\n");
}

static HRESULT open_choice(void *ctx, IHostMemoryManager **out) { return hm_cli_open_host(ctx, out); }

static int reduce_command(int argc, char **argv)
{
    hm_host_choice choice = {0};
    hm_replay_options opts = {0};
    const char *path = NULL, *out = NULL;
    bool error = false;
    for (int i = 1; i < argc && !error; i++) {
        if (hm_cli_take_host_option(&choice, argc, argv, &i, &error))
            continue;
        if (strcmp(argv[i], "-o") == 0 && i + 1 < argc)
            out = argv[++i];
        else if (strcmp(argv[i], "--no-inject") == 0)
            opts.no_inject = 1;
        else if (argv[i][0] == '-' && argv[i][1])
            error = true;
        else if (!path)
            path = argv[i];
        else
            error = true;
    }
    if (error || !path || !out) {
        usage(stderr);
        return HM_EXIT_USAGE;
    }
    if (!choice.library && !choice.options)
        choice.options = HM_REPLAY_BUILTIN_OPTIONS;
    opts.factory = open_choice;
    opts.factory_ctx = &choice;

    hm_trace *trace;
    if (FAILED(hm_trace_load(path, &trace))) {
        fprintf(stderr, "hostmem reduce: %s\n", HostMemLastError());
        return HM_EXIT_USAGE;
    }
    hm_trace *small;
    hm_reduce_stats stats;
    HRESULT hr = HostMemReduce(trace, &opts, &small, &stats);
    hm_trace_free(trace);
    if (FAILED(hr)) {
        fprintf(stderr, "hostmem reduce: %s\n", HostMemLastError());
        return HM_EXIT_USAGE;
    }
    hm_trace_writer *w;
    int code = HM_EXIT_OK;
    if (FAILED(hm_trace_writer_open(out, strlen(out) > 4 && strcmp(out + strlen(out) - 4, ".bin") == 0
                                             ? HM_TRACE_BINARY : HM_TRACE_TEXT, &w))) {
        fprintf(stderr, "hostmem reduce: %s\n", HostMemLastError());
        hm_trace_free(small);
        return HM_EXIT_USAGE; /* an output that cannot be made: bad usage, as everywhere */
    }
    char note[400];
    snprintf(note, sizeof note, "reduced from %s (%zu calls) to %zu calls; keeps: %s", path, stats.original_calls,
             stats.reduced_calls, stats.failure);
    hm_trace_write_comment(w, note);
    for (size_t i = 0; i < small->count; i++)
        hm_trace_write(w, &small->calls[i]);
    if (FAILED(hm_trace_writer_close(w))) {
        fprintf(stderr, "hostmem reduce: %s\n", HostMemLastError());
        code = HM_EXIT_USAGE;
    }
    if (code == HM_EXIT_OK)
        printf("%s: %zu calls -> %s: %zu calls (%" PRIu64 " replays); the failure kept: %s\n", path,
               stats.original_calls, out, stats.reduced_calls, stats.replays, stats.failure);
    hm_trace_free(small);
    return code;
}

/* A plugin host is run in an isolated child (hm_cli_isolated): its crash, exit or hang is a finding. */
int hm_cmd_reduce(int argc, char **argv) { return hm_cli_isolated("reduce", reduce_command, argc, argv); }

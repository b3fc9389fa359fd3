/* hostmem replay TRACE: re-executes a trace against a host and reports the first divergence.
 * Exit codes: 0 every result matched, 1 divergence or an incomplete trace (the recorder stopped early), 2 bad input
 * (or the host could not be made). */
#include "cli.h"
#include "options.h"
#include "plugin.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static const char description[] =
    "Re-executes every call of TRACE against a host and compares each result with the recorded one; the\n"
    "first divergence is shown with the calls before it, the recorded answer and this host's, and its\n"
    "signature (the method and the HRESULTs, or the field that differs: what reduce keeps). Recorded\n"
    "out-of-memory results (and E_FAIL, HOST_E_*) of allocating calls are injected at the same calls\n"
    "(unless --no-inject), so a recorded OOM reproduces; every other recorded failure (E_INVALIDARG...)\n"
    "is asked of the host and compared. Without --host, --host-options and --faults, the ones the\n"
    "trace's header names are used (the recorded plugin when its file is here, its options; the fault\n"
    "spec only with --no-inject), and the report says so (--json: \"environment_used\"); --no-trace-env\n"
    "ignores them. Otherwise the built-in manager runs with " HM_REPLAY_BUILTIN_OPTIONS ".\n"
    "The replay runs in a child process: a host that crashes, exits the process or does not finish\n"
    "within --timeout (default 60 s) is reported (exit 1). --no-fork runs in this process.\n"
    "Exit 0 every result matched, 1 a divergence, a host failure, an incomplete trace or one this host\n"
    "cannot reproduce (a fixed address its own placement took: not the host's divergence), 2 bad input\n"
    "(a trace with no calls too: nothing checked is not a pass).\n";

/* The replay's manager factory: the chosen host, made afresh for each run. */
static HRESULT open_choice(void *ctx, IHostMemoryManager **out) { return hm__cli_open_host(ctx, out); }

#define DEFAULT_TIMEOUT 60
#define MAX_FAULT_SPEC (1u << 20)

/* What the replay runs with and where each part came from ("command line", "trace": the trace's header, "default"),
 * for --json: the text mode says it in its "(from the trace)" lines, which --json sends to stderr. */
typedef struct env_used {
    const char *host, *host_source;
    const char *options, *options_source;
    const char *faults, *faults_source;
    const char *recorded_faults; /* the header's spec when it is not applied (NULL: none, or applied) */
    char *notes;                 /* the lines the text mode prints, malloc'd; NULL: none */
} env_used;

static void print_env_json(FILE *f, const env_used *e)
{
    fprintf(f, ", \"environment_used\": {\"host\": ");
    hm__cli_json_string(f, e->host);
    hm__cli_json_member(f, "host_options", e->options);
    hm__cli_json_member(f, "faults", e->faults); /* null when none */
    fprintf(f, ", \"source\": {\"host\": \"%s\", \"host_options\": \"%s\", \"faults\": \"%s\"}", e->host_source,
            e->options_source, e->faults_source);
    if (e->recorded_faults)
        hm__cli_json_member(f, "recorded_faults_not_applied", e->recorded_faults);
    fprintf(f, ", \"notes\": [");
    const char *line = e->notes ? e->notes : "";
    for (bool first = true; *line; first = false) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        char *one = strndup(line, len);
        fprintf(f, "%s", first ? "" : ", ");
        hm__cli_json_string(f, one ? one : "");
        free(one);
        line += len + (end ? 1 : 0);
    }
    fprintf(f, "]}");
}

/* The notes hm__cli_host_from_env wrote to tmp, read back (NULL when none or unreadable). */
static char *read_notes(FILE *tmp)
{
    if (!tmp)
        return NULL;
    long n = ftell(tmp);
    char *notes = n > 0 ? malloc((size_t)n + 1) : NULL;
    if (notes) {
        rewind(tmp);
        size_t got = fread(notes, 1, (size_t)n, tmp);
        notes[got] = '\0';
    }
    fclose(tmp);
    return notes;
}

/* The replay in a child: every contact with the host (loading it, its factory, each call, its Release) happens
 * there; the result comes back in shared memory, the fault spec copied after it. */
typedef struct replay_run {
    const char *path;
    const hm_replay_options *opts;
    HRESULT hr;
    hm_replay_result res;
    bool has_spec, spec_too_long;
    char spec[MAX_FAULT_SPEC];
} replay_run;

static void replay_child(void *ctx)
{
    replay_run *run = ctx;
    run->hr = HostMemReplay(run->path, run->opts, &run->res);
    if (run->res.fault_spec) {
        size_t n = strlen(run->res.fault_spec);
        run->has_spec = true;
        run->spec_too_long = n >= sizeof run->spec;
        if (!run->spec_too_long)
            memcpy(run->spec, run->res.fault_spec, n + 1);
    }
    HostMemReplayFree(&run->res);
    run->res.fault_spec = NULL;
}

/* Replays in a child with a timeout; a host that crashes, exits or hangs is a finding (HM_EXIT_FAIL), said on
 * stderr (and in the JSON). Otherwise fills *res and *hr and returns HM_EXIT_OK. */
static int replay_isolated(const char *path, const hm_replay_options *opts, unsigned timeout, bool json,
                           const env_used *env, HRESULT *hr, hm_replay_result *res)
{
    replay_run *run = hm__shared_alloc(sizeof *run);
    if (!run) {
        fprintf(stderr, "hostmem replay: cannot map memory to share with the child\n");
        return HM_EXIT_FAIL;
    }
    run->path = path;
    run->opts = opts;
    hm_isolate_options io = {.timeout_seconds = timeout};
    hm_isolated how;
    hm__isolate(replay_child, run, &io, &how);
    hm__isolated_note_stdout(&how, stderr);
    int code = HM_EXIT_OK;
    if (how.end != HM_ISOLATED_REPORTED) {
        if (json) {
            printf("{\"trace\": ");
            hm__cli_json_string(stdout, path);
            printf(", \"diverged\": false");
            hm__cli_json_member(stdout, "host_failure", how.message);
            print_env_json(stdout, env);
            printf("}\n");
        }
        fprintf(stderr, "hostmem replay: %s: FAIL: %s\n", path, how.message);
        code = HM_EXIT_FAIL;
    } else if (run->spec_too_long) {
        fprintf(stderr, "hostmem replay: %s: the fault spec is longer than %u bytes\n", path, MAX_FAULT_SPEC);
        code = HM_EXIT_FAIL;
    } else {
        *hr = run->hr;
        *res = run->res;
        res->fault_spec = run->has_spec ? strdup(run->spec) : NULL;
    }
    hm__shared_free(run, sizeof *run);
    return code;
}

int hm__cmd_replay(int argc, char **argv)
{
    hm_host_choice choice = {0};
    hm_replay_options opts = {0};
    bool json = false, no_fork = false, emit_faults = false, no_inject = false, compare_load = false;
    bool no_trace_env = false;
    unsigned long long timeout = DEFAULT_TIMEOUT, context = 0;
    const hm_option table[] = {
        HM_HOST_OPTIONS(&choice),
        HM_FAULTS_OPTION(&choice),
        HM_NO_TRACE_ENV_OPTION(&no_trace_env),
        {"--emit-faults", NULL, HM_OPTION_FLAG, &emit_faults, 0, 0,
         "print a fault spec that fails the same calls in the real program", NULL},
        {"--json", NULL, HM_OPTION_FLAG, &json, 0, 0, "one JSON object on stdout", NULL},
        {"--no-inject", NULL, HM_OPTION_FLAG, &no_inject, 0, 0, "do not inject the recorded failures", NULL},
        {"--compare-load", NULL, HM_OPTION_FLAG, &compare_load, 0, 0, "compare GetMemoryLoad's figures too", NULL},
        /* The replay keeps at most 16 calls: the context and the call that diverged. */
        {"--context", "N", HM_OPTION_UINT, &context, 1, 15, "trace lines shown before a divergence (default 4)", NULL},
        {"--timeout", "SECONDS", HM_OPTION_UINT, &timeout, 1, 86400, "for the whole replay (default 60)", NULL},
        {"--no-fork", NULL, HM_OPTION_FLAG, &no_fork, 0, 0, "run in this process (for a debugger)", NULL},
    };
    const hm_command_spec spec = {"replay", "TRACE", 1, 1, description, table, sizeof table / sizeof table[0]};
    const char *operands[1];
    size_t operand_count;
    int parsed = hm__cli_parse_options(&spec, argc, argv, operands, &operand_count);
    if (parsed >= 0)
        return parsed;
    const char *path = operands[0];
    opts.emit_faults = emit_faults;
    opts.no_inject = no_inject;
    opts.compare_load = compare_load;
    opts.context = (int)context;
    /* What the command line leaves open, the trace's header may say (a trace that cannot be opened is reported
     * by the replay itself, below). */
    hm_trace_reader *header = NULL;
    char *env_options = NULL;
    const hm_host_choice given = choice; /* what the command line said */
    env_used env = {0};
    FILE *notes = json ? tmpfile() : NULL; /* --json: the notes go into the object too (and to stderr) */
    if (!no_trace_env && SUCCEEDED(hm_trace_open(path, &header))) {
        const hm_trace_env *recorded = hm_trace_reader_env(header);
        env_options = hm__cli_host_from_env(recorded, &choice, !no_inject, true,
                                            notes                 ? notes
                                            : json || emit_faults ? stderr
                                                                  : stdout); /* stdout: the spec alone */
        if (recorded->faults && *recorded->faults && !given.faults && !choice.faults)
            env.recorded_faults = recorded->faults;
    }
    if (notes) {
        env.notes = read_notes(notes);
        if (env.notes)
            fputs(env.notes, stderr);
    }
    fflush(stdout); /* before the replay's child: said once */
    bool default_options = !choice.library && !choice.options;
    if (default_options)
        choice.options = HM_REPLAY_BUILTIN_OPTIONS;
    env.host = choice.library ? choice.library : HM_TRACE_BUILTIN_HOST;
    /* The built-in manager is the trace's when its header names it, the default when the recorded plugin is gone. */
    const char *recorded_host = header ? hm_trace_reader_env(header)->host : NULL;
    bool builtin_recorded = recorded_host && strcmp(recorded_host, HM_TRACE_BUILTIN_HOST) == 0;
    env.host_source = given.library ? "command line" : choice.library || builtin_recorded ? "trace" : "default";
    env.options = choice.options;
    env.options_source = given.options     ? "command line"
                         : default_options ? "default"
                         : choice.options  ? "trace"
                                           : "none";
    if (!env.options)
        env.options = "";
    env.faults = choice.faults;
    env.faults_source = given.faults ? "command line" : choice.faults ? "trace" : "none";
    opts.factory = open_choice;
    opts.factory_ctx = &choice;

    hm_replay_result res = {0}; /* zeroed: freeing it is safe on every path, a child that failed included */
    HRESULT hr;
    int code;
    if (no_fork) {
        hr = HostMemReplay(path, &opts, &res);
    } else {
        code = replay_isolated(path, &opts, (unsigned)timeout, json, &env, &hr, &res);
        if (code != HM_EXIT_OK)
            goto done;
    }
    if (FAILED(hr)) {
        fprintf(stderr, "hostmem replay: %s\n", res.error[0] ? res.error : hm_hr_name(hr));
        code = HM_EXIT_USAGE;
        goto done;
    }
    /* A trace without a call checks nothing: "every result matched" would be a vacuous pass (a writer that wrote
     * nothing, the wrong file kept as a regression trace). An incomplete one says so below instead. */
    if (res.calls == 0 && !res.incomplete) {
        fprintf(stderr, "hostmem replay: '%s' holds no calls: nothing to replay, nothing checked\n", path);
        code = HM_EXIT_USAGE;
        goto done;
    }
    if (json) {
        printf("{\"trace\": ");
        hm__cli_json_string(stdout, path);
        printf(", \"calls\": %" PRIu64 ", \"host_calls\": %" PRIu64 ", \"injected\": %" PRIu64
               ", \"notifications_recorded\": %" PRIu64 ", \"notifications_seen\": %" PRIu64 ", \"lost\": %" PRIu64
               ", \"implied\": %" PRIu64 ", \"concurrent\": %" PRIu64 ", \"diverged\": %s",
               res.calls, res.host_calls, res.injected, res.notifications_recorded, res.notifications_seen, res.lost,
               res.implied, res.concurrent, res.diverged ? "true" : "false");
        if (res.incomplete) {
            printf(", \"incomplete\": {\"calls\": %" PRIu64, res.incomplete_calls);
            hm__cli_json_member(stdout, "reason", res.incomplete_reason);
            printf("}");
        }
        if (res.unreproducible) {
            printf(", \"unreproducible\": {\"seq\": %" PRIu64, res.unreproducible_seq);
            hm__cli_json_member(stdout, "reason", res.unreproducible_reason);
            printf("}");
        }
        if (res.diverged) {
            printf(", \"divergence\": {\"seq\": %" PRIu64, res.divergence_seq);
            hm__cli_json_member(stdout, "method", hm_trace_method_name(res.divergence_method));
            hm__cli_json_member(stdout, "field", res.field);
            hm__cli_json_member(stdout, "expected", res.expected);
            hm__cli_json_member(stdout, "actual", res.actual);
            /* "recorded" and "this_host" say whose answer each is; "expected"/"actual" stay for older readers. */
            hm__cli_json_member(stdout, "recorded", res.expected);
            hm__cli_json_member(stdout, "this_host", res.actual);
            hm__cli_json_member(stdout, "signature", res.signature);
            hm__cli_json_member(stdout, "report", res.report);
            printf("}");
        }
        if (res.fault_spec)
            hm__cli_json_member(stdout, "faults", res.fault_spec);
        print_env_json(stdout, &env);
        printf("}\n");
    } else {
        if (res.diverged) {
            fputs(res.report, stdout);
            printf("signature: %s\n", res.signature);
        }
        printf("%s: %" PRIu64 " calls replayed (%" PRIu64 " to the host, %" PRIu64
               " recorded failures injected), %s\n",
               path, res.calls, res.host_calls, res.injected,
               res.diverged         ? "DIVERGED"
               : res.unreproducible ? "NOT REPRODUCIBLE on this host (not a divergence of the host)"
               : res.incomplete     ? "every result in the trace matched, but the trace is INCOMPLETE"
                                    : "every result matched");
        if (res.unreproducible)
            printf("%s\n", res.unreproducible_reason);
        if (res.incomplete)
            printf("the trace is incomplete: recording stopped after %" PRIu64 " calls: %s (the rest of the run was "
                   "not recorded, so not checked)\n",
                   res.incomplete_calls, res.incomplete_reason);
        if (res.notifications_recorded || res.notifications_seen)
            printf("notifications: %" PRIu64 " recorded, %" PRIu64 " sent by this host (not compared)\n",
                   res.notifications_recorded, res.notifications_seen);
        if (res.lost)
            printf("note: the recorder was killed with calls in flight (%" PRIu64 " gap(s)); they are not in the trace\n",
                   res.lost);
        if (res.implied)
            printf("note: %" PRIu64 " release(s) lost in flight were implied by later calls (not divergences)\n",
                   res.implied);
        if (res.concurrent)
            printf("note: %" PRIu64 " VirtualQuery answer(s) not compared: another thread changed the address space "
                   "while they ran\n", res.concurrent);
        if (res.fault_spec)
            printf("faults: %s\n", res.fault_spec[0] ? res.fault_spec : "(none: no recorded failure to reproduce)");
    }
    /* An incomplete trace is not a clean pass: the run's end was never checked. */
    code = res.diverged || res.incomplete || res.unreproducible ? HM_EXIT_FAIL : HM_EXIT_OK;
done:
    HostMemReplayFree(&res);
    hm_trace_close(header); /* env's and choice's strings may point into the header */
    free(env_options);
    free(env.notes);
    return code;
}

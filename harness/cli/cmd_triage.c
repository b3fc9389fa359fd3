/* hostmem triage DIR: replays every input of a crash folder (AFL++ crashes/, libFuzzer artifacts) against a host,
 * groups them by the signature of their failure, and prints one line per group. */
#include "calls.h"
#include "cli.h"
#include "options.h"
#include "plugin.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char description[] =
    "Replays each file of DIR against a host and groups the failures by signature (what replay prints:\n"
    "the method and the HRESULTs or the field that differs; a crash, exit or hang of the host in a call\n"
    "is a signature too). A file is a trace (hostmem record, fuzz-to-trace) or a fuzz_calls input: run\n"
    "on the host against the model, and when it fails, run on the built-in manager to record the answers\n"
    "the model expects, then replayed on the host for the signature. Each input runs in\n"
    "a child process (--timeout SECONDS each, default 60). One line per group: the count, the smallest\n"
    "input, the signature. --reduce OUTDIR reduces each group's smallest input on the host (a child each)\n"
    "into OUTDIR/group-N.trace. Exit 0 no failure, 1 at least one group, 2 bad usage.\n";

#define DEFAULT_TIMEOUT 60

typedef struct triage_run {
    char path[4096];
    const hm_host_choice *choice;
    int diverged; /* 1: signature set; -1: the input could not be read or run (message in signature) */
    char signature[160];
} triage_run;

static HRESULT open_choice(void *ctx, IHostMemoryManager **out) { return hm__cli_open_host(ctx, out); }

static uint8_t *read_all(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0, got;
    uint8_t *buf = malloc(cap);
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            uint8_t *bigger = n < (64u << 20) ? realloc(buf, cap *= 2) : NULL;
            if (!bigger)
                free(buf);
            buf = bigger;
        }
    }
    fclose(f);
    *size = n;
    return buf;
}

/* Whether path opens as a trace (any encoding); a file that does not is taken for a fuzz_calls input. */
static bool is_trace(const char *path)
{
    hm_trace_reader *probe;
    if (FAILED(hm_trace_open(path, &probe)))
        return false;
    hm_trace_close(probe);
    return true;
}

static const char cannot_read_input[] = "cannot read the input or make a temporary file";

/* A fuzz_calls input read whole (free it), with a new empty temporary file made in raw for the trace it will be
 * recorded into. NULL when the input cannot be read or the file cannot be made (raw is then empty). */
static uint8_t *read_fuzz_input(const char *path, size_t *size, char *raw, size_t raw_size)
{
    uint8_t *data = read_all(path, size);
    const char *tmp = getenv("TMPDIR");
    snprintf(raw, raw_size, "%s/hostmem-triage-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    int fd = data ? mkstemp(raw) : -1;
    if (fd < 0) {
        free(data);
        raw[0] = '\0';
        return NULL;
    }
    close(fd);
    return data;
}

/* Runs a fuzz_calls input with its report silenced; returns hm__fuzz_calls_run's status. */
static int fuzz_run_quietly(const uint8_t *data, size_t size, hm_fuzz_config *config, hm_fuzz_outcome *outcome)
{
    FILE *quiet = fopen("/dev/null", "w");
    config->report = quiet;
    int status = hm__fuzz_calls_run(data, size, config, outcome);
    if (quiet)
        fclose(quiet);
    return status;
}

/* Runs a fuzz_calls input on the built-in manager, recording its calls into the file raw (replaced). */
static int record_on_builtin(const uint8_t *data, size_t size, const char *raw)
{
    char spec[4096 + 16];
    snprintf(spec, sizeof spec, "%s,overwrite", raw);
    hm_fuzz_config config = {.trace_path = spec};
    hm_fuzz_outcome outcome = {0};
    return fuzz_run_quietly(data, size, &config, &outcome);
}

/* In the child: a trace replays as it is; a fuzz input is first recorded on the built-in manager. */
static void triage_child(void *ctx)
{
    triage_run *run = ctx;
    const char *trace = run->path;
    char raw[4096] = "";
    if (!is_trace(run->path)) {
        size_t size;
        uint8_t *data = read_fuzz_input(run->path, &size, raw, sizeof raw);
        if (!data) {
            run->diverged = -1;
            snprintf(run->signature, sizeof run->signature, "%s", cannot_read_input);
            return;
        }
        /* The verdict is the model's, on the host itself: a replay of the built-in run's trace could also diverge
         * where the answers depend on placement (a fixed-address reservation), which is no bug. */
        hm_fuzz_config on_host = {.host_library = run->choice->library,
                                  .host_options = run->choice->library ? run->choice->options : NULL};
        hm_fuzz_outcome verdict = {0};
        int ran = fuzz_run_quietly(data, size, &on_host, &verdict);
        if (ran != 0 || !verdict.mismatch) {
            free(data);
            unlink(raw);
            run->diverged = ran != 0 ? -1 : 0;
            snprintf(run->signature, sizeof run->signature, "the host could not be set up");
            return;
        }
        int status = record_on_builtin(data, size, raw);
        free(data);
        if (status != 0) {
            unlink(raw);
            run->diverged = -1;
            snprintf(run->signature, sizeof run->signature, "the input could not be run on the built-in manager");
            return;
        }
        trace = raw;
    }
    hm_replay_options opts = {.factory = open_choice, .factory_ctx = (void *)run->choice};
    hm_replay_result res;
    HRESULT hr = HostMemReplay(trace, &opts, &res);
    if (FAILED(hr)) {
        run->diverged = -1;
        snprintf(run->signature, sizeof run->signature, "%.150s", res.error);
    } else if (res.diverged) {
        run->diverged = 1;
        memcpy(run->signature, res.signature, sizeof run->signature);
    } else if (res.unreproducible) {
        run->diverged = -1; /* neither a bug of the host nor clean: said, and skipped */
        snprintf(run->signature, sizeof run->signature, "%.159s", res.unreproducible_reason);
    } else if (raw[0]) {
        run->diverged = 1; /* the model saw a mismatch the replay's comparisons do not cover */
        snprintf(run->signature, sizeof run->signature, "a mismatch with the model (no replay divergence)");
    }
    HostMemReplayFree(&res);
    if (raw[0])
        unlink(raw);
}

/* --reduce: the smallest input of a group, reduced on the host in a child, written to out. */
typedef struct reduce_run {
    char path[4096], out[4096];
    const hm_host_choice *choice;
    int done; /* 1 written; -1 failed (why in failure) */
    size_t original_calls, reduced_calls;
    char failure[256];
} reduce_run;

static void reduce_child(void *ctx)
{
    reduce_run *run = ctx;
    hm_trace *trace = NULL;
    char raw[4096] = "";
    run->done = -1;
    if (!is_trace(run->path)) {
        size_t size;
        uint8_t *data = read_fuzz_input(run->path, &size, raw, sizeof raw);
        if (!data) {
            snprintf(run->failure, sizeof run->failure, "%s", cannot_read_input);
            return;
        }
        (void)record_on_builtin(data, size, raw); /* the load below judges the trace it left */
        free(data);
    }
    HRESULT hr = hm_trace_load(raw[0] ? raw : run->path, &trace);
    if (raw[0])
        unlink(raw);
    if (FAILED(hr)) {
        snprintf(run->failure, sizeof run->failure, "%.250s", HostMemLastError());
        return;
    }
    hm_replay_options opts = {.factory = open_choice, .factory_ctx = (void *)run->choice};
    hm_trace *small = NULL;
    hm_reduce_stats stats;
    hr = HostMemReduce(trace, &opts, &small, &stats);
    hm_trace_free(trace);
    hm_trace_writer *w;
    if (FAILED(hr) || FAILED(hm_trace_writer_open(run->out, HM_TRACE_TEXT, &w))) {
        snprintf(run->failure, sizeof run->failure, "%.250s", HostMemLastError());
        hm_trace_free(small);
        return;
    }
    char note[400];
    snprintf(note, sizeof note, "reduced by hostmem triage from %.150s; keeps: %.200s", run->path, stats.failure);
    hm_trace_write_comment(w, note);
    for (size_t i = 0; i < small->count; i++)
        hm_trace_write(w, &small->calls[i]);
    hr = hm_trace_writer_close(w);
    hm_trace_free(small);
    if (FAILED(hr)) {
        snprintf(run->failure, sizeof run->failure, "%.250s", HostMemLastError());
        return;
    }
    run->done = 1;
    run->original_calls = stats.original_calls;
    run->reduced_calls = stats.reduced_calls;
    snprintf(run->failure, sizeof run->failure, "%s", stats.failure);
}

typedef struct group {
    char signature[200];
    size_t count;
    char smallest[4096];
    long long smallest_size;
} group;

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int hm__cmd_triage(int argc, char **argv)
{
    hm_host_choice choice = {0};
    unsigned long long timeout = DEFAULT_TIMEOUT;
    const char *reduce_dir = NULL;
    const hm_option table[] = {
        HM_HOST_OPTIONS(&choice),
        {"--reduce", "OUTDIR", HM_OPTION_STRING, &reduce_dir, 0, 0,
         "reduce each group's smallest input on the host, into OUTDIR/group-N.trace", NULL},
        {"--timeout", "SECONDS", HM_OPTION_UINT, &timeout, 1, 86400, "for each input's replay (default 60)", NULL},
    };
    const hm_command_spec spec = {"triage", "DIR", 1, 1, description, table, sizeof table / sizeof table[0]};
    const char *operands[1];
    size_t operand_count;
    int parsed = hm__cli_parse_options(&spec, argc, argv, operands, &operand_count);
    if (parsed >= 0)
        return parsed;
    const char *dir = operands[0];
    if (!choice.library && !choice.options)
        choice.options = HM_REPLAY_BUILTIN_OPTIONS;
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "hostmem triage: cannot open the folder '%s'\n", dir);
        return HM_EXIT_USAGE;
    }
    char **names = NULL;
    size_t nnames = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || strcmp(e->d_name, "README.txt") == 0) /* AFL++ writes a README.txt there */
            continue;
        char **grown = realloc(names, (nnames + 1) * sizeof *names);
        if (!grown)
            break;
        names = grown;
        names[nnames] = strdup(e->d_name);
        if (names[nnames])
            nnames++;
    }
    closedir(d);
    if (nnames > 1)
        qsort(names, nnames, sizeof *names, by_name);

    group *groups = NULL;
    size_t ngroups = 0, inputs = 0, clean = 0;
    triage_run *run = hm__shared_alloc(sizeof *run);
    int code = run ? HM_EXIT_OK : HM_EXIT_USAGE;
    for (size_t i = 0; i < nnames && run; i++) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        inputs++;
        memset(run, 0, sizeof *run);
        snprintf(run->path, sizeof run->path, "%s", path);
        run->choice = &choice;
        hm_isolate_options io = {.timeout_seconds = (unsigned)timeout};
        hm_isolated how;
        hm__isolate(triage_child, run, &io, &how);
        char signature[200];
        if (how.end != HM_ISOLATED_REPORTED) {
            const char *what = how.end == HM_ISOLATED_CRASHED     ? "crash"
                               : how.end == HM_ISOLATED_TIMED_OUT ? "hang"
                               : how.end == HM_ISOLATED_EXITED    ? "exit"
                                                                  : "host failure";
            snprintf(signature, sizeof signature, "%s in %s", what, how.doing[0] ? how.doing : "the tool's own code");
        } else if (run->diverged < 0) {
            fprintf(stderr, "hostmem triage: %s: skipped: %s\n", path, run->signature);
            continue;
        } else if (run->diverged) {
            snprintf(signature, sizeof signature, "%s", run->signature);
        } else {
            clean++;
            continue;
        }
        group *g = NULL;
        for (size_t k = 0; k < ngroups && !g; k++)
            if (strcmp(groups[k].signature, signature) == 0)
                g = &groups[k];
        if (!g) {
            group *grown = realloc(groups, (ngroups + 1) * sizeof *groups);
            if (!grown)
                break;
            groups = grown;
            g = &groups[ngroups++];
            memset(g, 0, sizeof *g);
            snprintf(g->signature, sizeof g->signature, "%s", signature);
            g->smallest_size = -1;
        }
        g->count++;
        if (g->smallest_size < 0 || (long long)st.st_size < g->smallest_size) {
            g->smallest_size = (long long)st.st_size;
            snprintf(g->smallest, sizeof g->smallest, "%s", path);
        }
    }
    if (run)
        hm__shared_free(run, sizeof *run);
    for (size_t k = 0; k < ngroups; k++)
        printf("%zu  %s (%lld bytes)  %s\n", groups[k].count, groups[k].smallest, groups[k].smallest_size,
               groups[k].signature);
    printf("%s: %zu input(s), %zu group(s) of failures, %zu clean\n", dir, inputs, ngroups, clean);
    reduce_run *rr = reduce_dir && ngroups ? hm__shared_alloc(sizeof *rr) : NULL;
    for (size_t k = 0; rr && k < ngroups; k++) {
        memset(rr, 0, sizeof *rr);
        snprintf(rr->path, sizeof rr->path, "%s", groups[k].smallest);
        snprintf(rr->out, sizeof rr->out, "%s/group-%zu.trace", reduce_dir, k + 1);
        rr->choice = &choice;
        hm_isolate_options io = {.timeout_seconds = (unsigned)timeout};
        hm_isolated how;
        hm__isolate(reduce_child, rr, &io, &how);
        if (how.end != HM_ISOLATED_REPORTED)
            printf("group %zu: not reduced: %s\n", k + 1, how.message);
        else if (rr->done < 0)
            printf("group %zu: not reduced: %s\n", k + 1, rr->failure);
        else
            printf("group %zu: %s: %zu calls -> %s: %zu calls; keeps: %s\n", k + 1, rr->path, rr->original_calls,
                   rr->out, rr->reduced_calls, rr->failure);
    }
    if (rr)
        hm__shared_free(rr, sizeof *rr);
    if (code == HM_EXIT_OK && ngroups)
        code = HM_EXIT_FAIL;
    free(groups);
    for (size_t i = 0; i < nnames; i++)
        free(names[i]);
    free(names);
    return code;
}

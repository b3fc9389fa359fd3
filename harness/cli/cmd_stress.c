/* hostmem stress: the workload of harness/check/stress.c against the chosen host, run in a child process so that a host
 * that crashes or hangs still gets a report (its signal, each thread's last calls, the recorded trace), with live
 * progress on a terminal and a summary or JSON at the end. */
#include "cli.h"
#include "junit.h"
#include "options.h"
#include "plugin.h"
#include "pressure.h"
#include "stress.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define HANG_SECONDS 20 /* the default --timeout */
#define MAX_SECONDS 2592000ull   /* --seconds: 30 days */
#define MAX_OPS 1000000000000ull /* --ops: 10^12 */

/* What the child leaves for the parent, in a shared mapping. */
typedef struct shared_run {
    hm_stress_report report;
    HRESULT run_result;
    bool finished;           /* the workload returned (the host did not crash or hang) */
    bool open_failed;        /* the host could not be loaded or made (bad usage, said on stderr) */
    bool recording;
    uint64_t faults_injected;
    hm_fault_event first_faults[3];
    size_t first_fault_count;
    char trace_note[256];    /* why nothing was recorded, when so */
} shared_run;

typedef struct stress_options {
    hm_host_choice host;
    hm_stress_config config;
    bool json, no_fork, no_trace;
    unsigned long long trace_max; /* --trace-max: the recorder's ",max=" (0: no cap) */
    unsigned heartbeat_seconds; /* a progress line on stdout this often when it is not a terminal (0: none) */
    unsigned hang_seconds;   /* no operation finished for this long: the host is hung */
    const char *trace_dir;
    const char *junit;       /* --junit FILE, or NULL */
    char trace_path[4096];
} stress_options;

static uint64_t ops_done(const hm_stress_report *r)
{
    uint64_t n = 0;
    for (unsigned t = 0; t < r->threads && t < HM_STRESS_MAX_THREADS; t++)
        n += atomic_load_explicit(&r->thread[t].done, memory_order_relaxed);
    return n;
}

static void show_progress(const hm_stress_report *r, double elapsed, void *ctx)
{
    (void)ctx;
    uint64_t failures = 0;
    for (unsigned t = 0; t < r->threads && t < HM_STRESS_MAX_THREADS; t++)
        for (int op = 0; op < HM_STRESS_OP_COUNT; op++)
            failures += r->thread[t].failures[op]; /* a racy read, for display only */
    uint64_t done = ops_done(r);
    fprintf(stderr, "\r%6.1f s  %10llu ops  %9.0f ops/s  %6llu refused", elapsed, (unsigned long long)done,
            elapsed > 0 ? (double)done / elapsed : 0.0, (unsigned long long)failures);
}

/* The workload itself: opens the host, records every call, runs, fills *out. */
static void run_workload(stress_options *o, shared_run *out, bool progress)
{
    IHostMemoryManager *m;
    if (FAILED(hm__cli_open_host(&o->host, &m))) { /* it said why */
        out->run_result = E_FAIL;
        out->open_failed = true;
        out->finished = true;
        return;
    }
    /* Every call is recorded, so a violation or a crash comes with a trace `hostmem replay` and `hostmem reduce`
     * can use (the recorder survives the process being killed); the parent deletes it after a clean run. */
    IHostMemoryManager *recorded, *fault_layer = m;
    char spec[sizeof o->trace_path + 48], resolved[4096];
    hm_trace_env env; /* the trace's header: the host, its options and the fault spec of this run */
    hm__cli_host_env(&o->host, &env, resolved, sizeof resolved);
    /* The file is this run's own (made empty, with O_EXCL, before the run), so the recorder may take it over. */
    if (o->trace_max)
        snprintf(spec, sizeof spec, "%s,max=%llu,overwrite", o->trace_path, o->trace_max);
    else
        snprintf(spec, sizeof spec, "%s,overwrite", o->trace_path);
    if (o->no_trace)
        snprintf(out->trace_note, sizeof out->trace_note, "--no-trace");
    else if ((out->recording = SUCCEEDED(HostMemWrapRecorderEnv(m, spec, &env, &recorded))))
        m = recorded;
    else
        snprintf(out->trace_note, sizeof out->trace_note, "%s", HostMemLastError());
    hm_stress_config config = o->config;
    config.unwrapped = fault_layer;
    config.progress = progress ? show_progress : NULL;
    out->run_result = hm__stress_run(m, &config, &out->report);
    if (o->host.faults) {
        out->faults_injected = HostMemFaultsLogCount(fault_layer);
        out->first_fault_count = HostMemFaultsLog(fault_layer, 0, out->first_faults, 3);
    }
    IHostMemoryManager_Release(m);
    if (out->recording)
        IHostMemoryManager_Release(fault_layer); /* ours; the recorder held its own */
    out->finished = true;
}

static void print_last_calls(FILE *f, const hm_stress_thread *t, unsigned id, unsigned max)
{
    uint64_t from = t->calls > max ? t->calls - max : 0;
    for (uint64_t k = from; k < t->calls; k++) {
        char line[256];
        hm__stress_format_call(&t->ring[k % HM_STRESS_RING], line, sizeof line);
        fprintf(f, "  t%u #%llu %s\n", id, (unsigned long long)k + 1, line);
    }
}

/* The points of the load series the report holds (at most HM_STRESS_LOAD_SAMPLES, also after a crash). */
static unsigned load_points(const hm_stress_report *r)
{
    unsigned n = atomic_load(&r->load_samples);
    return n < HM_STRESS_LOAD_SAMPLES ? n : HM_STRESS_LOAD_SAMPLES;
}

/* What was asked for: the workload, its mix, threads, the run's length, the seed. */
static void print_json_run(const stress_options *o)
{
    const hm_stress_config *c = &o->config;
    printf("\"workload\": \"%s\", \"run\": {\"workload\": \"%s\", \"threads\": %u, ",
           hm__stress_workload_name(c->workload), hm__stress_workload_name(c->workload), c->threads);
    if (c->ops)
        printf("\"seconds\": null, \"ops\": %llu, ", (unsigned long long)c->ops);
    else
        printf("\"seconds\": %.0f, \"ops\": null, ", c->seconds);
    printf("\"seed\": %llu, \"weights\": {", (unsigned long long)c->seed);
    const hm_stress_weight *w;
    size_t n = hm__stress_weights(c->workload, &w);
    for (size_t i = 0; i < n; i++)
        printf("%s\"%s\": %u", i ? ", " : "", w[i].name, w[i].percent);
    printf("}}, ");
}

/* The host's load: first, peak, last (null when never read) and the series. */
static void print_json_load(const hm_stress_report *r)
{
    printf("\"host_load\": {");
    const char *names[] = {"first", "peak", "last"};
    unsigned values[] = {atomic_load(&r->load_first), atomic_load(&r->load_peak), atomic_load(&r->load_last)};
    for (int i = 0; i < 3; i++)
        if (values[i])
            printf("\"%s_percent\": %u, ", names[i], values[i] - 1);
        else
            printf("\"%s_percent\": null, ", names[i]);
    printf("\"series\": [");
    for (unsigned i = 0, n = load_points(r); i < n; i++) {
        const hm_stress_load_sample *p = &r->load_series[i];
        printf("%s{\"seconds\": %.3f, \"load_percent\": %u, \"available_bytes\": %llu, \"live_bytes\": %lld}",
               i ? ", " : "", p->seconds, (unsigned)p->load, (unsigned long long)p->available,
               (long long)p->live_bytes);
    }
    printf("]}, ");
}

static void print_json(const stress_options *o, const shared_run *s, const char *crash)
{
    const hm_stress_report *r = &s->report;
    uint64_t all = hm__stress_total_ops(r);
    printf("{\"threads\": %u, \"seconds\": %.2f, \"ops\": %llu, \"ops_per_second\": %.0f, \"failures\": %llu, "
           "\"violations\": %llu, \"seed\": %llu, ",
           o->config.threads, r->seconds, (unsigned long long)all, r->seconds > 0 ? (double)all / r->seconds : 0.0,
           (unsigned long long)hm__stress_total_failures(r), (unsigned long long)atomic_load(&r->violations),
           (unsigned long long)o->config.seed);
    printf("\"latency_ns\": {\"p50\": %.0f, \"p90\": %.0f, \"p99\": %.0f, \"p999\": %.0f}, ",
           hm__stress_latency_quantile(r, HM_STRESS_OP_COUNT, 0.5),
           hm__stress_latency_quantile(r, HM_STRESS_OP_COUNT, 0.9),
           hm__stress_latency_quantile(r, HM_STRESS_OP_COUNT, 0.99),
           hm__stress_latency_quantile(r, HM_STRESS_OP_COUNT, 0.999));
    printf("\"notifications\": {\"low\": %llu, \"neutral\": %llu, \"high\": %llu}, \"by_method\": {",
           (unsigned long long)atomic_load(&r->notifications[0]), (unsigned long long)atomic_load(&r->notifications[1]),
           (unsigned long long)atomic_load(&r->notifications[2]));
    for (int op = 0; op < HM_STRESS_OP_COUNT; op++) {
        uint64_t n = 0, failed = 0;
        for (unsigned t = 0; t < r->threads; t++) {
            n += r->thread[t].ops[op];
            failed += r->thread[t].failures[op];
        }
        char key[32]; /* "heap alloc" -> "heap_alloc" */
        snprintf(key, sizeof key, "%s", hm__stress_op_name(op));
        for (char *c = key; *c; c++)
            *c = *c == ' ' ? '_' : *c;
        printf("%s\"%s\": {\"ops\": %llu, \"failures\": %llu, \"p50_ns\": %.0f, \"p99_ns\": %.0f}", op ? ", " : "",
               key, (unsigned long long)n, (unsigned long long)failed,
               hm__stress_latency_quantile(r, op, 0.5), hm__stress_latency_quantile(r, op, 0.99));
    }
    printf("}, ");
    print_json_run(o);
    print_json_load(r);
    printf("\"faults_injected\": %llu", (unsigned long long)s->faults_injected);
    const char *violation = NULL;
    for (unsigned t = 0; t < r->threads && !violation; t++)
        if (r->thread[t].violation[0])
            violation = r->thread[t].violation;
    printf(", \"violation\": ");
    hm__cli_json_string(stdout, violation ? violation : crash);
    printf(", \"trace\": ");
    hm__cli_json_string(stdout, s->recording && (violation || crash) ? o->trace_path : NULL);
    printf("}\n");
}

/* bytes for a person: "512 B", "37.5 KiB", "1.2 GiB" */
static const char *human_bytes(int64_t bytes, char *buf, size_t len)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)bytes;
    int u = 0;
    while (u < 4 && (v >= 1024 || v <= -1024)) {
        v /= 1024;
        u++;
    }
    snprintf(buf, len, u ? "%.1f %s" : "%.0f %s", v, units[u]);
    return buf;
}

/* The workload asked for, and the host's load over the run (at most 12 of its points, the first and last among
 * them; --json has them all). */
static void print_run_and_load(const stress_options *o, const hm_stress_report *r)
{
    const hm_stress_config *c = &o->config;
    const hm_stress_weight *w;
    size_t nw = hm__stress_weights(c->workload, &w);
    printf("  workload: %s (", hm__stress_workload_name(c->workload));
    for (size_t i = 0; i < nw; i++)
        printf("%s%s %u%%", i ? ", " : "", w[i].name, w[i].percent);
    if (c->ops)
        printf("), %u thread(s), %llu ops, seed %llu\n", c->threads, (unsigned long long)c->ops,
               (unsigned long long)c->seed);
    else
        printf("), %u thread(s), %.0f s, seed %llu\n", c->threads, c->seconds, (unsigned long long)c->seed);
    unsigned n = load_points(r);
    if (!n)
        return;
    printf("  host load over the run (its GetMemoryLoad; held: the threads' committed pages and heap blocks):\n");
    printf("  %10s %6s %14s %14s\n", "time", "load", "available", "held");
    unsigned shown = n < 12 ? n : 12;
    for (unsigned k = 0; k < shown; k++) {
        const hm_stress_load_sample *p = &r->load_series[shown > 1 ? (size_t)k * (n - 1) / (shown - 1) : 0];
        char avail[32], held[32];
        printf("  %8.1f s %5u%% %14s %14s\n", p->seconds, (unsigned)p->load,
               human_bytes((int64_t)p->available, avail, sizeof avail), human_bytes(p->live_bytes, held, sizeof held));
    }
}

static void print_summary(const stress_options *o, const shared_run *s, const char *crash)
{
    const hm_stress_report *r = &s->report;
    uint64_t all = hm__stress_total_ops(r);
    printf("stress: %u thread(s), %.1f s, %llu ops, %.0f ops/s; latency p50 <= %.0f ns, p90 <= %.0f ns, p99 <= %.0f "
           "ns\n",
           o->config.threads, r->seconds, (unsigned long long)all, r->seconds > 0 ? (double)all / r->seconds : 0.0,
           hm__stress_latency_quantile(r, HM_STRESS_OP_COUNT, 0.5),
           hm__stress_latency_quantile(r, HM_STRESS_OP_COUNT, 0.9),
           hm__stress_latency_quantile(r, HM_STRESS_OP_COUNT, 0.99));
    printf("  %-15s %10s %9s %10s %10s\n", "method", "ops", "refused", "p50 ns", "p99 ns");
    for (int op = 0; op < HM_STRESS_OP_COUNT; op++) {
        uint64_t n = 0, failed = 0;
        for (unsigned t = 0; t < r->threads; t++) {
            n += r->thread[t].ops[op];
            failed += r->thread[t].failures[op];
        }
        printf("  %-15s %10llu %9llu %10.0f %10.0f\n", hm__stress_op_name(op), (unsigned long long)n,
               (unsigned long long)failed, hm__stress_latency_quantile(r, op, 0.5),
               hm__stress_latency_quantile(r, op, 0.99));
    }
    printf("  every answer checked against each thread's model; notifications: %llu low, %llu neutral, %llu high\n",
           (unsigned long long)atomic_load(&r->notifications[0]), (unsigned long long)atomic_load(&r->notifications[1]),
           (unsigned long long)atomic_load(&r->notifications[2]));
    if (atomic_load(&r->load_first))
        printf("  host load (its GetMemoryLoad): %u%% first, %u%% peak, %u%% last\n", atomic_load(&r->load_first) - 1,
               atomic_load(&r->load_peak) - 1, atomic_load(&r->load_last) - 1);
    print_run_and_load(o, r);
    if (o->host.faults) {
        printf("  faults injected: %llu%s\n", (unsigned long long)s->faults_injected,
               s->first_fault_count ? " (first ones below)" : "");
        for (size_t i = 0; i < s->first_fault_count; i++) {
            const hm_fault_event *e = &s->first_faults[i];
            printf("    call %llu: %s #%llu size %#llx -> %s\n", (unsigned long long)e->call, hm_method_name(e->method),
                   (unsigned long long)e->method_call, (unsigned long long)e->size, hm_hr_name(e->result));
        }
    }
    if (crash) /* never "violations: 0": the run did not finish */
        printf("  the run did not finish: %s\n", crash);
    else
        printf("  violations: %llu\n", (unsigned long long)atomic_load(&r->violations));
}

/* A new file of this run's own, never one already there: O_EXCL refuses an existing name and O_NOFOLLOW a symlink
 * planted in its place (the directory may be shared, /tmp). NULL, said on stderr, when it cannot be made. */
static FILE *create_new_file(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        fprintf(stderr, "hostmem stress: cannot create '%s': %s\n", path, strerror(errno));
        if (fd >= 0)
            close(fd);
    }
    return f;
}

/* The other thread that held a block at the same time: its call that got the block (when still in its log) and its
 * last calls. Read after the run, when the threads are done. */
static void print_other_thread(FILE *f, const hm_stress_thread *o, unsigned id, uint64_t call, uint64_t block)
{
    FILE *out[2] = {stderr, f};
    for (int i = 0; i < 2 && out[i]; i++) {
        if (call && call <= o->calls && o->calls - call < HM_STRESS_RING) {
            char line[256];
            hm__stress_format_call(&o->ring[(call - 1) % HM_STRESS_RING], line, sizeof line);
            fprintf(out[i], "thread %u's call #%llu that got block %#llx: %s\n", id, (unsigned long long)call,
                    (unsigned long long)block, line);
        }
        fprintf(out[i], "thread %u's last calls:\n", id);
        print_last_calls(out[i], o, id, i ? HM_STRESS_RING : 8);
    }
}

/* On a violation or a crash: the message, the offending thread's last calls (every thread's, for a crash) on
 * stderr and in DIR/stress-PID-XXXXXX.violation.txt (named after the run's trace). */
static void report_failure(const stress_options *o, const shared_run *s, const char *crash)
{
    const hm_stress_report *r = &s->report;
    char path[sizeof o->trace_path + 16];
    size_t stem = strlen(o->trace_path) - strlen(".trace");
    snprintf(path, sizeof path, "%.*s.violation.txt", (int)stem, o->trace_path);
    FILE *f = create_new_file(path);
    for (unsigned t = 0; t < r->threads; t++) {
        const hm_stress_thread *th = &r->thread[t];
        if (!crash && !th->violation[0])
            continue;
        if (!crash) {
            fprintf(stderr, "\nVIOLATION in thread %u: %s\nits last calls:\n", t + 1, th->violation);
            if (f)
                fprintf(f, "# hostmem stress violation (seed %llu, thread %u): %s\n",
                        (unsigned long long)o->config.seed, t + 1, th->violation);
        } else {
            fprintf(stderr, "%sthread %u's last calls:\n", t ? "" : "\n", t + 1);
            if (f && t == 0)
                fprintf(f, "# hostmem stress (seed %llu): %s\n", (unsigned long long)o->config.seed, crash);
        }
        print_last_calls(stderr, th, t + 1, crash ? 4 : 8);
        if (f)
            print_last_calls(f, th, t + 1, HM_STRESS_RING);
        if (!crash && th->other_thread && th->other_thread <= r->threads) /* the heap workload: a block held twice */
            print_other_thread(f, &r->thread[th->other_thread - 1], th->other_thread, th->other_call,
                               th->shared_block);
        if (!crash)
            break;
    }
    if (crash)
        fprintf(stderr, "\nCRASH: %s\n", crash);
    if (f) {
        fclose(f);
        fprintf(stderr, "the calls that led to it are in %s\n", path);
    }
    if (s->recording)
        fprintf(stderr, "the whole run is recorded in %s: hostmem replay %s / hostmem reduce %s -o small.trace\n",
                o->trace_path, o->trace_path, o->trace_path);
    else if (s->trace_note[0])
        fprintf(stderr, "(not recorded: %s)\n", s->trace_note);
}

/* A child that exits with a sanitizer's exit code has printed the sanitizer's report on stderr, above: name it. */
static void name_sanitizer(char *why, size_t len)
{
    static const struct {
        int status;
        const char *note;
    } codes[] = {
        {66, "66 is ThreadSanitizer's exit code (run with TSAN_OPTIONS=halt_on_error=1): its report is above"},
        {23, "23 is a sanitizer exit code you chose: its report is above"},
        {1, "1 is AddressSanitizer's and UndefinedBehaviorSanitizer's exit code: a report above, if any, is theirs"},
    };
    const char *at = strstr(why, "exited the process with status ");
    if (!at)
        return;
    int status = atoi(at + strlen("exited the process with status "));
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        if (codes[i].status == status) {
            size_t used = strlen(why);
            snprintf(why + used, len - used, "; %s", codes[i].note);
            return;
        }
}

/* --junit FILE: one testcase for the run (a failure when the host crashed or hung) and one per thread (a failure
 * when its answers broke its model; skipped, never passed, when the run did not finish). */
static bool write_junit(const stress_options *o, FILE *f, const shared_run *s, const char *crash)
{
    const hm_stress_report *r = &s->report;
    unsigned threads = r->threads ? r->threads : o->config.threads, failures = crash != NULL, skipped = 0;
    for (unsigned t = 0; t < threads && t < HM_STRESS_MAX_THREADS; t++) {
        failures += r->thread[t].violation[0] != 0;
        skipped += crash && !r->thread[t].violation[0];
    }
    char suite[4200], name[64], out[4200];
    snprintf(suite, sizeof suite, "hostmem stress (%s host)", o->host.library ? o->host.library : "built-in");
    hm__junit_begin(f, suite, threads + 1, failures, skipped, r->seconds);
    snprintf(out, sizeof out, "seed %llu; the run is recorded in %s", (unsigned long long)o->config.seed,
             o->trace_path);
    hm__junit_case(f, "hostmem.stress", "the run completes", r->seconds, crash ? "failure" : NULL,
                  crash ? "the host did not survive the run" : NULL, crash, crash && s->recording ? out : NULL);
    for (unsigned t = 0; t < threads && t < HM_STRESS_MAX_THREADS; t++) {
        const char *violation = r->thread[t].violation;
        snprintf(name, sizeof name, "thread %u: every answer matches its model", t + 1);
        if (violation[0])
            hm__junit_case(f, "hostmem.stress", name, r->seconds, "failure", "VIOLATION", violation,
                          s->recording ? out : NULL);
        else
            hm__junit_case(f, "hostmem.stress", name, r->seconds, crash ? "skipped" : NULL,
                          crash ? "not checked to the end: the run did not finish" : NULL, NULL, NULL);
    }
    return hm__junit_close("stress", o->junit, f);
}

typedef struct forked_run {
    stress_options *o;
    shared_run *s;
    bool progress;
    uint64_t last_done;
    double last_change, elapsed, last_heartbeat;
} forked_run;

static void workload_child(void *ctx)
{
    forked_run *run = ctx;
    run_workload(run->o, run->s, false);
}

/* In the parent while the child runs: progress, and the hang check (no operation finished for hang_seconds). */
static bool watch_run(void *ctx, double elapsed, char *why, size_t why_len)
{
    forked_run *run = ctx;
    run->elapsed = elapsed;
    uint64_t done = ops_done(&run->s->report);
    if (done != run->last_done) {
        run->last_done = done;
        run->last_change = elapsed;
    } else if (elapsed - run->last_change >= run->o->hang_seconds) {
        snprintf(why, why_len, "the host did not return in %u s (no operation finished)", run->o->hang_seconds);
        return true;
    }
    if (run->progress && run->s->report.threads)
        show_progress(&run->s->report, elapsed, NULL);
    /* A log (CI, nohup) shows a long run alive without the terminal's \r progress. */
    if (run->o->heartbeat_seconds && elapsed - run->last_heartbeat >= run->o->heartbeat_seconds) {
        run->last_heartbeat = elapsed;
        printf("stress: %.0f s, %llu ops, %.0f ops/s, %llu violation(s)\n", elapsed, (unsigned long long)done,
               elapsed > 0 ? (double)done / elapsed : 0.0,
               (unsigned long long)atomic_load(&run->s->report.violations));
        fflush(stdout);
    }
    return false;
}

/* Runs the workload in a child (the host is loaded, made and released there too); returns a description of how
 * the child ended, or NULL when the workload returned. */
static const char *run_forked(stress_options *o, shared_run *s, bool progress, char *why, size_t why_len)
{
    forked_run run = {.o = o, .s = s, .progress = progress};
    hm_isolate_options io = {.watch = watch_run, .watch_ctx = &run};
    hm_isolated how;
    hm__isolate(workload_child, &run, &io, &how);
    if (progress)
        fprintf(stderr, "\n");
    hm__isolated_note_stdout(&how, stderr);
    if (how.end == HM_ISOLATED_REPORTED)
        return NULL;
    snprintf(why, why_len, "%s", how.message);
    const char *in_callback = atomic_load(&s->report.in_callback);
    if (how.end == HM_ISOLATED_TIMED_OUT && in_callback)
        hm__reentry_hang_message(why, why_len, in_callback, o->hang_seconds);
    if (how.end == HM_ISOLATED_EXITED)
        name_sanitizer(why, why_len);
    if (s->report.seconds == 0)
        s->report.seconds = run.elapsed;
    return why;
}

static const char description[] =
    "Hammers a host from N threads (default 4, for 5 s): reserve, commit, decommit, release (also from\n"
    "inside a reservation, which must be refused), protect, query, heap alloc and free on a shared and a\n"
    "private heap, load queries, notifications. Each thread writes patterns into its pages and blocks and\n"
    "checks every answer against its own model (regions exactly, page contents, zeroed commits, blocks\n"
    "not overlapping). With --faults, failures are accepted but must change nothing.\n"
    "--workload heap: only heap calls, tight Alloc/Free of small blocks on one shared MALLOC_THREADSAFE\n"
    "heap, blocks freed by other threads, each block's canary checked after a yield: a block the heap\n"
    "hands to two threads at once is reported with both threads' calls.\n\n"
    "The run (loading the host included) happens in a child process that dies with the parent: a host\n"
    "that crashes, exits the process or hangs (no call returning for --timeout S seconds, default 20) is\n"
    "reported with its signal and each thread's last calls. Every call is recorded to a new file\n"
    "DIR/stress-PID-XXXXXX.trace (--artifacts DIR, default .; deleted after a clean run; none with\n"
    "--no-trace); after a violation or a crash it is kept (for hostmem replay and reduce), the last calls\n"
    "go to DIR/stress-PID-XXXXXX.violation.txt beside it and the exit status is 1. When stdout is not a\n"
    "terminal, a progress line is printed every 10 s (--heartbeat). --junit FILE also writes a JUnit XML report: a testcase for the run (failing on a\n"
    "crash or hang) and one per thread (failing on a violation).\n";

int hm__cmd_stress(int argc, char **argv)
{
    stress_options o = {.config = {.threads = 4, .seconds = 5, .seed = 1, .verify = true}, .trace_dir = "."};
    unsigned long long threads = 4, seconds = 5, ops = 0, seed = 1, timeout = HANG_SECONDS, heartbeat = 10;
    bool seconds_given = false;
    const char *workload = "mixed";
    const hm_option table[] = {
        HM_HOST_OPTIONS(&o.host),
        HM_FAULTS_OPTION(&o.host),
        {"--threads", "N", HM_OPTION_UINT, &threads, 1, HM_STRESS_MAX_THREADS, "threads (default 4)", NULL},
        {"--seconds", "S", HM_OPTION_UINT, &seconds, 1, MAX_SECONDS, "how long (default 5)", &seconds_given},
        {"--ops", "N", HM_OPTION_UINT, &ops, 1, MAX_OPS, "operations in all, instead of --seconds", NULL},
        {"--seed", "N", HM_OPTION_UINT, &seed, 0, ~0ull, "the workload's seed (default 1)", NULL},
        {"--workload", "W", HM_OPTION_STRING, &workload, 0, 0, "mixed (the default) or heap", NULL},
        {"--json", NULL, HM_OPTION_FLAG, &o.json, 0, 0, "one JSON object on stdout", NULL},
        {"--junit", "FILE", HM_OPTION_STRING, &o.junit, 0, 0, "also write a JUnit XML report", NULL},
        {"--artifacts", "DIR", HM_OPTION_STRING, &o.trace_dir, 0, 0,
         "where the trace and violation report go (default .)", NULL},
        {"--trace-dir", "DIR", HM_OPTION_STRING, &o.trace_dir, 0, 0, "the same as --artifacts DIR", NULL},
        {"--trace-max", "SIZE", HM_OPTION_UINT, &o.trace_max, 2 << 20, 1ull << 50,
         "stop recording before the trace passes SIZE bytes (K, M, G; default: no cap)", NULL},
        {"--no-trace", NULL, HM_OPTION_FLAG, &o.no_trace, 0, 0, "record nothing (a violation has no trace)", NULL},
        {"--heartbeat", "S", HM_OPTION_UINT, &heartbeat, 0, 3600,
         "a progress line on stdout every S s when it is not a terminal (default 10, 0 none)", NULL},
        {"--timeout", "S", HM_OPTION_UINT, &timeout, 1, 86400, "no operation finishing this long is a hang (default 20)",
         NULL},
        {"--no-fork", NULL, HM_OPTION_FLAG, &o.no_fork, 0, 0, "run in this process (for a debugger)", NULL},
    };
    const hm_command_spec spec = {"stress", "", 0, 0, description, table, sizeof table / sizeof table[0]};
    size_t operand_count;
    int parsed = hm__cli_parse_options(&spec, argc, argv, NULL, &operand_count);
    if (parsed >= 0)
        return parsed;
    if (strcmp(workload, "mixed") == 0) {
        o.config.workload = HM_STRESS_MIXED;
    } else if (strcmp(workload, "heap") == 0) {
        o.config.workload = HM_STRESS_HEAP;
    } else {
        fprintf(stderr, "hostmem stress: --workload '%s' is not one: mixed (the default) or heap\n", workload);
        return HM_EXIT_USAGE;
    }
    if (ops && seconds_given) {
        fprintf(stderr, "hostmem stress: --seconds and --ops both say when to stop: give one\n");
        return HM_EXIT_USAGE;
    }
    o.config.threads = (unsigned)threads;
    o.config.seconds = ops ? 0 : (double)seconds;
    o.config.ops = ops;
    o.config.seed = seed;
    o.config.check_refusals = !o.host.faults; /* an injected E_OUTOFMEMORY is no finding */
    o.hang_seconds = (unsigned)timeout;
    o.heartbeat_seconds = isatty(1) || o.json || o.no_fork ? 0 : (unsigned)heartbeat;

    /* The trace's name is new and unique (mkstemps: O_EXCL), so the recorder never truncates a file that was there
     * before, nor one a symlink planted under a predictable name points to; a directory where it cannot be made is
     * bad usage, found before the run rather than a run without its trace. */
    if ((size_t)snprintf(o.trace_path, sizeof o.trace_path, "%s/stress-%d-XXXXXX.trace", o.trace_dir,
                         (int)getpid()) >= sizeof o.trace_path) {
        fprintf(stderr, "hostmem stress: --artifacts '%s' is too long\n", o.trace_dir);
        return HM_EXIT_USAGE;
    }
    int trace_fd = mkstemps(o.trace_path, (int)strlen(".trace"));
    if (trace_fd < 0) {
        fprintf(stderr, "hostmem stress: cannot create the run's trace in '%s': %s\n", o.trace_dir, strerror(errno));
        return HM_EXIT_USAGE;
    }
    close(trace_fd);
    if (o.no_trace) /* the directory is checked all the same: the violation report goes there */
        unlink(o.trace_path);
    /* The JUnit report is made before the run too: an output that cannot be created is bad usage, found early. */
    FILE *junit = NULL;
    if (o.junit && !(junit = hm__junit_create("stress", o.junit))) {
        unlink(o.trace_path);
        return HM_EXIT_USAGE;
    }

    shared_run *s = mmap(NULL, sizeof *s, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (s == MAP_FAILED) {
        fprintf(stderr, "hostmem stress: cannot map the report: out of memory\n");
        unlink(o.trace_path);
        if (junit) {
            fclose(junit);
            unlink(o.junit);
        }
        return HM_EXIT_FAIL;
    }
    bool progress = isatty(2) && !o.json;
    char why[700];
    const char *crash = NULL;
    if (o.no_fork)
        run_workload(&o, s, progress);
    else
        crash = run_forked(&o, s, progress, why, sizeof why);
    if (o.no_fork && progress)
        fprintf(stderr, "\n");

    int exit_code;
    if (!crash && s->open_failed) {
        exit_code = HM_EXIT_USAGE;
    } else if (!crash && FAILED(s->run_result)) {
        fprintf(stderr, "hostmem stress: the run could not start: %s (the host gives no heap?)\n",
                hm_hr_name(s->run_result));
        exit_code = HM_EXIT_FAIL;
    } else {
        uint64_t violations = atomic_load(&s->report.violations);
        if (o.json)
            print_json(&o, s, crash);
        else
            print_summary(&o, s, crash);
        if (violations || crash)
            report_failure(&o, s, crash);
        exit_code = violations || crash ? HM_EXIT_FAIL : HM_EXIT_OK;
        if (junit && !write_junit(&o, junit, s, crash))
            exit_code = HM_EXIT_FAIL; /* a CI run must not lose its report silently */
        junit = NULL;             /* closed */
    }
    if (junit) { /* the run never started: no report */
        fclose(junit);
        unlink(o.junit);
    }
    if (exit_code == HM_EXIT_OK || !s->recording)
        unlink(o.trace_path); /* kept only when it holds what went wrong */
    munmap(s, sizeof *s);
    return exit_code;
}

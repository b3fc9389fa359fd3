/* The reducer: delta debugging (Zeller's ddmin) over the calls of a trace.
 *
 * A candidate is a subset of the calls, closed under handles: a call is kept only when every handle it names
 * was created by a kept call, so every candidate is a well-formed trace. A candidate is interesting when its
 * replay shows the same failure as the original (see HostMemReduce in trace.h). */
#include "trace_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_REPLAYS 20000

typedef struct failure {
    enum { FAIL_DIVERGENCE, FAIL_OOM } kind;
    int method;
    char signature[160];                      /* divergence: hm_replay_result.signature */
    uint64_t target_seq;                      /* OOM: the call that must still fail */
    hm_replay_options opts;
} failure;

typedef struct reducer {
    const hm_trace *trace;
    failure want;
    hm_trace candidate; /* scratch, as long as the trace */
    uint64_t replays;
} reducer;

/* Adds a reference's handle to the uses when it names one. */
static size_t add_ref(hm_trace_handle *uses, size_t n, hm_trace_ref r)
{
    if (r.kind != HM_REF_RAW)
        uses[n++] = (hm_trace_handle){r.kind, r.handle};
    return n;
}

/* Copies the calls of `keep` (indices, ascending) that survive the handle closure into r->candidate. */
static void close_subset(reducer *r, const size_t *keep, size_t nkeep)
{
    hm_handle_map made;
    hm__handle_map_init(&made, 0);
    r->candidate.count = 0;
    for (size_t i = 0; i < nkeep; i++) {
        const hm_trace_call *c = &r->trace->calls[keep[i]];
        hm_trace_handle uses[8], created;
        size_t n = hm__trace_call_handles(c, uses, &created);
        bool fresh = created.kind && !hm__handle_map_find(&made, created.kind, created.handle);
        if (!fresh && c->mem.kind != HM_REF_RAW)
            n = add_ref(uses, n, c->mem);
        if (c->has_mbi) {
            n = add_ref(uses, n, c->mbi_base);
            n = add_ref(uses, n, c->mbi_alloc_base);
        }
        bool ok = true;
        for (size_t u = 0; u < n && ok; u++)
            ok = hm__handle_map_find(&made, uses[u].kind, uses[u].handle) != NULL;
        if (!ok)
            continue;
        if (created.kind && !hm__handle_map_put(&made, created.kind, created.handle))
            continue;
        r->candidate.calls[r->candidate.count++] = *c;
    }
    hm__handle_map_destroy(&made);
}

static bool same_failure(const failure *want, const hm_replay_result *res)
{
    if (want->kind == FAIL_OOM)
        return !res->diverged || res->divergence_seq > want->target_seq;
    if (!res->diverged)
        return false;
    /* The first divergence must be the same bug (its signature), or else a candidate may trade the failure for
     * another bug of the same host; --any takes whichever comes first. */
    return want->opts.any_failure || strcmp(res->signature, want->signature) == 0;
}

static bool interesting(reducer *r, const size_t *keep, size_t nkeep)
{
    close_subset(r, keep, nkeep);
    if (r->want.kind == FAIL_OOM) {
        bool has_target = false;
        for (size_t i = 0; i < r->candidate.count && !has_target; i++)
            has_target = r->candidate.calls[i].seq == r->want.target_seq;
        if (!has_target)
            return false;
    }
    hm_replay_result res;
    r->replays++;
    HRESULT hr = HostMemReplayTrace(&r->candidate, &r->want.opts, &res);
    bool yes = SUCCEEDED(hr) && same_failure(&r->want, &res);
    HostMemReplayFree(&res);
    return yes;
}

/* ddmin: try each of n chunks alone, then each complement; on success continue from it, else double n. */
static size_t ddmin(reducer *r, size_t *set, size_t count)
{
    size_t n = 2;
    size_t *trial = malloc((count ? count : 1) * sizeof *trial);
    if (!trial)
        return count;
    while (count >= 2 && r->replays < MAX_REPLAYS) {
        bool reduced = false;
        size_t chunk = (count + n - 1) / n;
        for (size_t start = 0; start < count && !reduced; start += chunk) {
            size_t len = start + chunk > count ? count - start : chunk;
            if (interesting(r, set + start, len)) {
                memmove(set, set + start, len * sizeof *set);
                count = len;
                n = 2;
                reduced = true;
            }
        }
        for (size_t start = 0; start < count && !reduced && n > 2; start += chunk) {
            size_t len = start + chunk > count ? count - start : chunk;
            size_t m = 0;
            for (size_t i = 0; i < count; i++)
                if (i < start || i >= start + len)
                    trial[m++] = set[i];
            if (interesting(r, trial, m)) {
                memcpy(set, trial, m * sizeof *set);
                count = m;
                n = n - 1 > 2 ? n - 1 : 2;
                reduced = true;
            }
        }
        if (!reduced) {
            if (n >= count)
                break;
            n = n * 2 > count ? count : n * 2;
        }
    }
    free(trial);
    return count;
}

HM_API HRESULT HostMemReduce(const hm_trace *trace, const hm_replay_options *opts, hm_trace **reduced,
                             hm_reduce_stats *stats)
{
    if (!trace || !reduced)
        return E_POINTER;
    *reduced = NULL;
    hm_reduce_stats local;
    if (!stats)
        stats = &local;
    memset(stats, 0, sizeof *stats);
    stats->original_calls = trace->count;

    reducer r;
    memset(&r, 0, sizeof r);
    r.trace = trace;
    if (opts)
        r.want.opts = *opts;
    r.want.opts.emit_faults = 0;

    /* What failure to keep: the original's divergence, or else its last recorded OOM. */
    hm_replay_result res;
    HRESULT hr = HostMemReplayTrace(trace, &r.want.opts, &res);
    stats->replays = 1;
    if (FAILED(hr)) {
        hm__set_error("%s", res.error);
        HostMemReplayFree(&res);
        return hr;
    }
    if (res.unreproducible) {
        /* Not the host's failure: nothing a smaller trace should keep. */
        hm__set_error("%s", res.unreproducible_reason);
        HostMemReplayFree(&res);
        return E_INVALIDARG;
    }
    if (res.diverged) {
        r.want.kind = FAIL_DIVERGENCE;
        r.want.method = res.divergence_method;
        memcpy(r.want.signature, res.signature, sizeof r.want.signature);
        if (r.want.opts.any_failure)
            snprintf(stats->failure, sizeof stats->failure, "any divergence (the original's: %s)", res.signature);
        else
            snprintf(stats->failure, sizeof stats->failure, "%s", res.signature);
    } else {
        /* Only a failure replay injects (an OOM or another "could not satisfy" answer) is kept this way: any
         * other recorded failure (E_INVALIDARG...) was the host's own answer, and the host gave it again. */
        const hm_trace_call *oom = NULL;
        for (size_t i = trace->count; i-- > 0 && !oom;) {
            const hm_trace_call *c = &trace->calls[i];
            if (hm__trace_is_injected_failure(c->method, c->result))
                oom = c;
        }
        if (!oom) {
            HostMemReplayFree(&res);
            hm__set_error("the trace replays without divergence and records no out-of-memory (nor another failure "
                          "replay injects): nothing to keep");
            return E_INVALIDARG;
        }
        r.want.kind = FAIL_OOM;
        r.want.target_seq = oom->seq;
        r.want.method = oom->method;
        /* Prefer the host running out by itself; when it does not, the injected failure is the failure. */
        hm_replay_options natural = r.want.opts;
        natural.no_inject = 1;
        hm_replay_result nres;
        stats->replays++;
        if (SUCCEEDED(HostMemReplayTrace(trace, &natural, &nres)) &&
            (!nres.diverged || nres.divergence_seq > oom->seq))
            r.want.opts = natural;
        HostMemReplayFree(&nres);
        snprintf(stats->failure, sizeof stats->failure, "%s: call %" PRIu64 " %s (level %d) fails with %s%s",
                 hm__trace_is_out_of_memory(oom->result) ? "oom-reproduced" : "failure-reproduced", oom->seq,
                 hm_trace_method_name(oom->method), oom->level, hm_hr_name(oom->result),
                 r.want.opts.no_inject ? " on the host itself" : " (injected)");
    }
    HostMemReplayFree(&res);

    size_t *set = malloc((trace->count ? trace->count : 1) * sizeof *set);
    r.candidate.calls = malloc((trace->count ? trace->count : 1) * sizeof *r.candidate.calls);
    if (!set || !r.candidate.calls) {
        free(set);
        free(r.candidate.calls);
        return E_OUTOFMEMORY;
    }
    for (size_t i = 0; i < trace->count; i++)
        set[i] = i;
    size_t count = ddmin(&r, set, trace->count);
    close_subset(&r, set, count);
    free(set);
    stats->replays += r.replays;

    /* The result: the kept calls, renumbered 1..n (handles keep their numbers: the format allows gaps). */
    hm_trace *out = calloc(1, sizeof *out);
    if (!out) {
        free(r.candidate.calls);
        return E_OUTOFMEMORY;
    }
    out->calls = r.candidate.calls;
    out->count = r.candidate.count;
    /* Still a piece of an incomplete recording: a replay of it is not a clean pass (the run's end was not seen). */
    out->incomplete = trace->incomplete;
    out->incomplete_calls = trace->incomplete_calls;
    memcpy(out->incomplete_reason, trace->incomplete_reason, sizeof out->incomplete_reason);
    for (size_t i = 0; i < out->count; i++)
        out->calls[i].seq = i + 1;
    /* The smaller trace was recorded where the original was: it keeps the header's environment. */
    if (!hm__trace_env_copy(&trace->env, &out->env)) {
        hm_trace_free(out);
        return E_OUTOFMEMORY;
    }
    stats->reduced_calls = out->count;
    *reduced = out;
    return S_OK;
}

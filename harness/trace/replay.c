/* The replayer: re-executes a trace against a host, relocating addresses, and compares every answer.
 *
 * Calls run in the trace's global order on one thread (a multi-threaded trace is replayed as the recorder
 * serialised it). Handles map to what the replay host returned: @3 is wherever this host put the third region.
 *
 * Recorded failures that depend on the machine rather than on the calls (E_OUTOFMEMORY and the other
 * "could not satisfy" answers of allocating calls) are not compared: the replayer fails those calls itself, as the
 * fault layer would (the host does not see them, their outputs are NULL), so the same calls fail on an idle
 * machine. A file is read once, streamed: each call is decoded straight into the context ring, and bad input
 * stops the replay where it is found.
 *
 * Not compared: GetMemoryLoad's figures (machine-dependent; opts->compare_load turns it on), notifications
 * (the host sends them when its own policy says; they are counted), a VirtualQuery the recorder saw overlap
 * another thread's change of the address space (its answer may be from before or after), VirtualQuery of an
 * address outside every
 * handle (its answer depends on the process's layout: only the HRESULT is compared) and, for a MEM_FREE answer,
 * anything but the state (the size of a free gap depends on the placement). */
#include "trace_internal.h"

#include "counting_callback.h" /* not in trace_internal.h: the recorder has an impl_from_ of the same name */

#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONTEXT_MAX 16

/* ---- Which recorded failures are injected -------------------------------------------------------------- */
static bool is_allocating(int method)
{
    return method == HM_METHOD_VIRTUAL_ALLOC || method == HM_METHOD_HEAP_ALLOC ||
           method == HM_METHOD_HEAP_DEBUG_ALLOC || method == HM_METHOD_CREATE_MALLOC || method == HM_METHOD_NEEDS_VAS;
}

static bool is_circumstantial(HRESULT hr)
{
    switch ((uint32_t)hr) {
    case (uint32_t)E_OUTOFMEMORY:
    case (uint32_t)HM_E_NOT_ENOUGH_MEMORY:
    case (uint32_t)HRESULT_FROM_WIN32(ERROR_COMMITMENT_LIMIT):
    case (uint32_t)E_FAIL:
    case (uint32_t)HOST_E_DEADLOCK:
    case (uint32_t)HOST_E_INTERRUPTED:
    case (uint32_t)HOST_E_CLRNOTAVAILABLE:
    case (uint32_t)HOST_E_TIMEOUT:
    case (uint32_t)HOST_E_NOT_OWNER:
    case (uint32_t)HOST_E_ABANDONED:
        return true;
    default:
        return false;
    }
}

bool hm__trace_is_injected_failure(int method, HRESULT hr)
{
    return is_allocating(method) && FAILED(hr) && is_circumstantial(hr);
}

bool hm__trace_is_out_of_memory(HRESULT hr)
{
    return hr == E_OUTOFMEMORY || hr == HM_E_NOT_ENOUGH_MEMORY || hr == HRESULT_FROM_WIN32(ERROR_COMMITMENT_LIMIT);
}

static bool injected(const hm_replay_options *o, const hm_trace_call *c)
{
    return !o->no_inject && hm__trace_is_injected_failure(c->method, c->result);
}

/* ---- A growing string ----------------------------------------------------------------------------------- */
typedef struct strbuf {
    char *p;
    size_t len, cap;
    bool failed;
} strbuf;

static void sb_printf(strbuf *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(strbuf *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || s->failed)
        return;
    if (s->len + (size_t)n + 1 > s->cap) {
        size_t cap = (s->cap ? s->cap * 2 : 256) + (size_t)n;
        char *p = realloc(s->p, cap);
        if (!p) {
            s->failed = true;
            return;
        }
        s->p = p;
        s->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(s->p + s->len, s->cap - s->len, fmt, ap);
    va_end(ap);
    s->len += (size_t)n;
}

/* ---- --emit-faults: the spec that fails the recorded failures in a rerun of the real program ---------------- */
typedef struct emit_key {
    int method, level, op;
    uint64_t size;
    uint64_t count; /* calls so far with this key */
    bool used;
} emit_key;

typedef struct plan {
    strbuf emit;      /* the spec for a rerun of the real program */
    emit_key *keys;
    size_t nkeys, capkeys;
} plan;

static const char *op_of(uint32_t type)
{
    if (type & MEM_RESET)
        return "reset";
    if (type & MEM_COMMIT)
        return "commit";
    if (type & MEM_RESERVE)
        return "reserve";
    return NULL;
}

/* Counts one call under its (method, level, op, size) key: its ordinal among such calls, as nth= counts them. */
static uint64_t count_key(plan *p, const hm_trace_call *c)
{
    const char *op = c->method == HM_METHOD_VIRTUAL_ALLOC ? op_of(c->type) : NULL;
    int op_id = op ? (int)op[2] : 0; /* 's', 'm', 's'... distinct enough with the strings below */
    if (op)
        op_id = strcmp(op, "reset") == 0 ? 1 : strcmp(op, "commit") == 0 ? 2 : 3;
    uint64_t size = c->method == HM_METHOD_CREATE_MALLOC ? 0 : c->size;
    if (p->nkeys * 2 + 2 > p->capkeys) {
        size_t cap = p->capkeys ? p->capkeys * 2 : 64;
        emit_key *keys = calloc(cap, sizeof *keys);
        if (!keys)
            return 0;
        for (size_t i = 0; i < p->capkeys; i++) {
            if (!p->keys[i].used)
                continue;
            uint64_t h = (p->keys[i].size * 31 + (uint64_t)p->keys[i].method * 7 + (uint64_t)p->keys[i].level * 3 +
                          (uint64_t)p->keys[i].op) * 0x9e3779b97f4a7c15ull;
            size_t j = (size_t)(h >> 20) & (cap - 1);
            while (keys[j].used)
                j = (j + 1) & (cap - 1);
            keys[j] = p->keys[i];
        }
        free(p->keys);
        p->keys = keys;
        p->capkeys = cap;
    }
    uint64_t h = (size * 31 + (uint64_t)c->method * 7 + (uint64_t)(c->level + 1) * 3 + (uint64_t)op_id) *
                 0x9e3779b97f4a7c15ull;
    /* level + 1 above and below: the level is -1 for CreateMalloc and NeedsVirtualAddressSpace */
    size_t j = (size_t)(h >> 20) & (p->capkeys - 1);
    for (;; j = (j + 1) & (p->capkeys - 1)) {
        emit_key *k = &p->keys[j];
        if (!k->used) {
            *k = (emit_key){c->method, c->level + 1, op_id, size, 0, true};
            p->nkeys++;
        }
        if (k->method == c->method && k->level == c->level + 1 && k->op == op_id && k->size == size)
            return ++k->count;
    }
}

static void plan_call(plan *p, const hm_replay_options *o, const hm_trace_call *c)
{
    if (!is_allocating(c->method)) /* (all of them host methods) */
        return;
    uint64_t nth = count_key(p, c);
    if (!injected(o, c))
        return;
    const char *method = hm_method_name((hm_method)c->method);
    const char *ret = c->result == E_OUTOFMEMORY ? NULL : hm_hr_name(c->result);
    sb_printf(&p->emit, "%s%s", p->emit.len ? ";" : "", method);
    if (hm__trace_method_has_level(c->method) && c->level >= 0 && c->level <= 2)
        sb_printf(&p->emit, ",level=%s", hm_level_short((EMemoryCriticalLevel)c->level));
    const char *op = c->method == HM_METHOD_VIRTUAL_ALLOC ? op_of(c->type) : NULL;
    if (op)
        sb_printf(&p->emit, ",op=%s", op);
    if (c->method != HM_METHOD_CREATE_MALLOC)
        sb_printf(&p->emit, ",size=%" PRIu64, c->size);
    sb_printf(&p->emit, ",nth=%" PRIu64, nth);
    if (ret)
        sb_printf(&p->emit, ",return=%s", ret);
}

static void plan_free(plan *p)
{
    free(p->emit.p);
    free(p->keys);
}

/* ---- Callbacks the replay registers: they count what they are told, and free themselves on their last Release
 * (the host may keep its reference past the replay) ---- */
typedef hm_counting_callback replay_callback;

/* ---- The replayer ---------------------------------------------------------------------------------------- */
typedef struct replayer {
    hm_replay_options opts;
    hm_replay_result *res;
    IHostMemoryManager *host;
    bool scenario; /* exploration: no comparing; calls whose handles are missing are skipped */
    hm_handle_map map; /* (kind, handle) -> address; heaps: the IHostMalloc *; callbacks: replay_callback * */
    hm_trace_call ring[CONTEXT_MAX];
    size_t ring_size, ring_count, ring_next;
    replay_callback **callbacks;
    size_t ncallbacks;
    uint64_t *ledger; /* starts of ranges acquired and not released (scenario cleanup) */
    size_t nledger, capledger;
    bool error; /* an inconsistency the reader could not see (handled by stopping) */
} replayer;

static void replayer_init(replayer *rp, const hm_replay_options *opts, hm_replay_result *res)
{
    memset(rp, 0, sizeof *rp);
    if (opts)
        rp->opts = *opts;
    rp->res = res;
    int context = rp->opts.context > 0 ? rp->opts.context : 4;
    rp->ring_size = (size_t)(context >= CONTEXT_MAX ? CONTEXT_MAX : context + 1); /* no context + 1 at INT_MAX */
    hm__handle_map_init(&rp->map, HM_TRACE_DEAD_KEPT);
}

/* A streamed replay decodes each call straight into the ring's next slot: nothing to copy then. */
static void remember(replayer *rp, const hm_trace_call *c)
{
    if (c != &rp->ring[rp->ring_next])
        rp->ring[rp->ring_next] = *c;
    rp->ring_next = (rp->ring_next + 1) % rp->ring_size;
    if (rp->ring_count < rp->ring_size)
        rp->ring_count++;
}

static const char *fmt_ref(char *buf, size_t len, hm_trace_ref r)
{
    if (r.kind == HM_REF_RAW)
        snprintf(buf, len, "0x%" PRIx64, r.value);
    else if (r.value)
        snprintf(buf, len, "%c%" PRIu32 "+0x%" PRIx64, r.kind == HM_REF_ALLOC ? '@' : '#', r.handle, r.value);
    else
        snprintf(buf, len, "%c%" PRIu32, r.kind == HM_REF_ALLOC ? '@' : '#', r.handle);
    return buf;
}

static int diverge(replayer *rp, const hm_trace_call *c, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Records the first divergence. fmt gives "EXPECTED\tACTUAL". */
static int diverge(replayer *rp, const hm_trace_call *c, const char *field, const char *fmt, ...)
{
    hm_replay_result *res = rp->res;
    if (rp->scenario)
        return 0;
    char both[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(both, sizeof both, fmt, ap);
    va_end(ap);
    char *tab = strchr(both, '\t');
    if (tab)
        *tab = '\0';
    res->diverged = 1;
    res->divergence_seq = c->seq;
    res->divergence_method = c->method;
    snprintf(res->field, sizeof res->field, "%s", field);
    snprintf(res->expected, sizeof res->expected, "%.79s", both);
    snprintf(res->actual, sizeof res->actual, "%.79s", tab ? tab + 1 : "");
    if (strcmp(field, "result") == 0)
        snprintf(res->signature, sizeof res->signature, "%s: hr %.60s recorded, %.60s on this host",
                 hm_trace_method_name(c->method), res->expected, res->actual);
    else
        snprintf(res->signature, sizeof res->signature, "%s: field %s", hm_trace_method_name(c->method), field);

    strbuf s = {0};
    sb_printf(&s, "divergence at call %" PRIu64 " (%s), field '%s': recorded %s, this host %s\n", c->seq,
              hm_trace_method_name(c->method), field, res->expected, res->actual);
    size_t first = (rp->ring_next + rp->ring_size - rp->ring_count) % rp->ring_size;
    for (size_t i = 0; i < rp->ring_count; i++) {
        const hm_trace_call *k = &rp->ring[(first + i) % rp->ring_size];
        char line[HM_TRACE_LINE_MAX];
        hm_trace_format_call(k, line, sizeof line);
        sb_printf(&s, "%s %s\n", i + 1 == rp->ring_count ? ">" : " ", line);
    }
    sb_printf(&s, "  recorded  %s: %s\n  this host %s: %s\n", field, res->expected, field, res->actual);
    snprintf(res->report, sizeof res->report, "%s", s.p ? s.p : "");
    free(s.p);
    return 1;
}

/* The address a reference stands for on this host; false when its handle never appeared here. */
static bool resolve(replayer *rp, hm_trace_ref r, uint64_t *out)
{
    if (r.kind == HM_REF_RAW) {
        *out = r.value;
        return true;
    }
    hm_handle_entry *e = hm__handle_map_find(&rp->map, r.kind, r.handle);
    if (!e)
        return false;
    *out = e->address + r.value;
    return true;
}

static void *as_ptr(uint64_t v) { return (void *)(uintptr_t)v; }

/* A reservation at a fixed address the trace names raw (outside every region it knows) depends on what else holds
 * the address space, which differs from host to host: when this host's answer differs from the recording's
 * because the address is taken here (or free here where the recording found it taken), the trace cannot be
 * reproduced on this host. Says so (stopping the replay, no divergence) and returns 1; returns 0 when the
 * difference is the host's own (the address is free here and the host still refused: a divergence). */
static int fixed_address_unreproducible(replayer *rp, const hm_trace_call *c, uint64_t addr, HRESULT hr)
{
    if (rp->scenario || c->addr.kind != HM_REF_RAW || !addr || !(c->type & MEM_RESERVE) || hr == c->result)
        return 0;
    bool recorded_ok = SUCCEEDED(c->result);
    if (recorded_ok == SUCCEEDED(hr) || (!recorded_ok && c->result != HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS)))
        return 0;
    /* Windows reserves from the 64 KiB boundary at or below the address, for the pages the range touches. */
    uint64_t base = addr & ~(uint64_t)0xffff, end = (addr + c->size + 0xfff) & ~(uint64_t)0xfff;
    MEMORY_BASIC_INFORMATION mbi;
    SIZE_T got = 0;
    memset(&mbi, 0, sizeof mbi);
    bool free_here = false;
    if (recorded_ok) {
        if (FAILED(IHostMemoryManager_VirtualQuery(rp->host, as_ptr(base), &mbi, sizeof mbi, &got)) || !got)
            return 0;
        free_here = mbi.State == MEM_FREE && (uint64_t)(uintptr_t)mbi.BaseAddress + mbi.RegionSize >= end;
        if (free_here)
            return 0; /* free, yet refused: the host's doing */
    }
    hm_replay_result *res = rp->res;
    res->unreproducible = 1;
    res->unreproducible_seq = c->seq;
    if (recorded_ok)
        snprintf(res->unreproducible_reason, sizeof res->unreproducible_reason,
                 "call %" PRIu64 " (VirtualAlloc MEM_RESERVE at 0x%" PRIx64 ", outside every region of the trace) "
                 "is not reproducible on this host (address taken): recorded %s, this host %s; this host holds "
                 "that address (%s): it placed earlier memory there",
                 c->seq, addr, hm_hr_name(c->result), hm_hr_name(hr),
                 mbi.State == MEM_RESERVE ? "reserved" : mbi.State == MEM_COMMIT ? "committed" : "not free");
    else
        snprintf(res->unreproducible_reason, sizeof res->unreproducible_reason,
                 "call %" PRIu64 " (VirtualAlloc MEM_RESERVE at 0x%" PRIx64 ", outside every region of the trace) "
                 "is not reproducible on this host (address free): recorded %s (the address was taken when "
                 "recorded), this host %s",
                 c->seq, addr, hm_hr_name(c->result), hm_hr_name(hr));
    return 1;
}

static int compare_hr(replayer *rp, const hm_trace_call *c, HRESULT actual)
{
    if (actual == c->result)
        return 0;
    char expected[64];
    snprintf(expected, sizeof expected, "%s", hm_hr_name(c->result));
    return diverge(rp, c, "result", "%s\t%s", expected, hm_hr_name(actual));
}

static int compare_u64(replayer *rp, const hm_trace_call *c, const char *field, uint64_t expected, uint64_t actual)
{
    return expected == actual ? 0 : diverge(rp, c, field, "0x%" PRIx64 "\t0x%" PRIx64, expected, actual);
}

/* A returned or reported address: expected is a reference, checked against where its handle is on this host. */
static int compare_ref(replayer *rp, const hm_trace_call *c, const char *field, hm_trace_ref expected, uint64_t actual)
{
    uint64_t want;
    char name[64];
    if (!resolve(rp, expected, &want))
        return diverge(rp, c, field, "%s (a handle this replay never saw)\t0x%" PRIx64,
                       fmt_ref(name, sizeof name, expected), actual);
    if (want == actual)
        return 0;
    return diverge(rp, c, field, "%s = 0x%" PRIx64 "\t0x%" PRIx64, fmt_ref(name, sizeof name, expected), want, actual);
}

/* A VirtualAlloc/Alloc result: a fresh handle is bound to what the host returned, else compared. */
static int bind_or_compare(replayer *rp, const hm_trace_call *c, void *mem, uint32_t heap)
{
    if (c->mem.kind == HM_REF_RAW)
        return rp->scenario || !SUCCEEDED(c->result) ? 0 : compare_u64(rp, c, "mem", c->mem.value, (uint64_t)(uintptr_t)mem);
    hm_handle_entry *e = hm__handle_map_find(&rp->map, c->mem.kind, c->mem.handle);
    bool fresh = c->mem.value == 0 && (!e || !e->live || c->mem.kind == HM_REF_BLOCK);
    if (c->method == HM_METHOD_VIRTUAL_ALLOC && e && e->live && c->addr.kind == HM_REF_ALLOC &&
        c->addr.handle == c->mem.handle)
        fresh = false;
    if (!fresh)
        return rp->scenario ? 0 : compare_ref(rp, c, "mem", c->mem, (uint64_t)(uintptr_t)mem);
    if (!mem)
        return diverge(rp, c, "mem", "a new %s\tNULL", c->mem.kind == HM_REF_ALLOC ? "region" : "block");
    e = hm__handle_map_put(&rp->map, c->mem.kind, c->mem.handle);
    if (!e) {
        rp->error = true;
        snprintf(rp->res->error, sizeof rp->res->error, "out of memory");
        return 1;
    }
    e->address = (uint64_t)(uintptr_t)mem;
    e->heap = heap;
    return 0;
}

static void kill_handle(replayer *rp, uint32_t kind, uint32_t handle)
{
    hm_handle_entry *e = hm__handle_map_find(&rp->map, kind, handle);
    if (e)
        hm__handle_map_kill(&rp->map, e);
}

static IHostMalloc *heap_of(replayer *rp, uint32_t heap)
{
    hm_handle_entry *e = hm__handle_map_find(&rp->map, HM_HANDLE_HEAP, heap);
    return e && e->live ? (IHostMalloc *)as_ptr(e->address) : NULL;
}

static void ledger_note(replayer *rp, uint64_t start, bool acquired)
{
    if (!acquired) {
        for (size_t i = 0; i < rp->nledger; i++) {
            if (rp->ledger[i] == start) {
                rp->ledger[i] = rp->ledger[--rp->nledger];
                return;
            }
        }
        return;
    }
    if (rp->nledger == rp->capledger) {
        size_t cap = rp->capledger ? rp->capledger * 2 : 16;
        uint64_t *v = realloc(rp->ledger, cap * sizeof *v);
        if (!v)
            return;
        rp->ledger = v;
        rp->capledger = cap;
    }
    rp->ledger[rp->nledger++] = start;
}

/* Replays one call. Returns 0 to go on, 1 to stop (divergence or error). */
static int replay_call(replayer *rp, const hm_trace_call *c)
{
    hm_replay_result *res = rp->res;
    IHostMemoryManager *m = rp->host;
    remember(rp, c);
    res->calls++;
    uint64_t addr = 0;
    if (!resolve(rp, c->addr, &addr)) {
        if (rp->scenario)
            return 0;
        char name[64];
        return diverge(rp, c, "addr", "%s\ta handle this replay never saw", fmt_ref(name, sizeof name, c->addr));
    }
    IHostMalloc *heap = NULL;
    if (c->method >= HM_METHOD_HEAP_ALLOC && c->method <= HM_METHOD_HEAP_FREE) {
        heap = heap_of(rp, c->heap);
        if (!heap) {
            if (rp->scenario)
                return 0;
            return diverge(rp, c, "heap", "h%" PRIu32 "\ta heap this replay does not hold", c->heap);
        }
    }
    if (hm__trace_is_host_method(c->method))
        res->host_calls++;
    if (!rp->scenario && injected(&rp->opts, c)) {
        /* Failed here as the fault layer would fail it: the host never sees the call, its outputs are NULL. */
        res->injected++;
        return 0;
    }
    bool null1 = c->nulls & HM_TRACE_NULL_OUT1, null2 = c->nulls & HM_TRACE_NULL_OUT2;
    HRESULT hr;
    switch (c->method) {
    case HM_METHOD_CREATE_MALLOC: {
        IHostMalloc *created = NULL;
        hr = IHostMemoryManager_CreateMalloc(m, c->type, null1 ? NULL : &created);
        /* S_OK without a heap is a host's bug: this host's (whatever the trace says), or the recorded host's
         * (heap=0 after S_OK), which a correct host cannot repeat: either way said at this call. */
        bool recorded_none = SUCCEEDED(c->result) && !c->heap && !null1;
        if (!null1 && SUCCEEDED(hr) && !created && !rp->scenario) {
            char want[32];
            snprintf(want, sizeof want, "h%" PRIu32, c->heap);
            return diverge(rp, c, "heap", "%s	NULL (S_OK without a heap: this host's bug)",
                           recorded_none ? "NULL (S_OK without a heap)" : want);
        }
        if (recorded_none && SUCCEEDED(hr) && !rp->scenario) {
            IHostMalloc_Release(created);
            return diverge(rp, c, "heap", "NULL (S_OK without a heap: the recorded host's bug)\ta heap");
        }
        if (SUCCEEDED(hr) && created) {
            if (c->heap && SUCCEEDED(c->result)) {
                hm_handle_entry *e = hm__handle_map_put(&rp->map, HM_HANDLE_HEAP, c->heap);
                if (e)
                    e->address = (uint64_t)(uintptr_t)created;
                else
                    IHostMalloc_Release(created);
            } else {
                IHostMalloc_Release(created); /* the trace's heap failed: this one has no handle */
            }
        }
        return compare_hr(rp, c, hr);
    }
    case HM_METHOD_VIRTUAL_ALLOC: {
        void *mem = NULL;
        hr = IHostMemoryManager_VirtualAlloc(m, as_ptr(addr), (SIZE_T)c->size, c->type, c->prot,
                                             (EMemoryCriticalLevel)c->level, null1 ? NULL : &mem);
        if (fixed_address_unreproducible(rp, c, addr, hr)) {
            if (SUCCEEDED(hr) && mem)
                IHostMemoryManager_VirtualFree(m, mem, 0, MEM_RELEASE); /* not the trace's: nothing of it leaks */
            return 1;
        }
        if (compare_hr(rp, c, hr))
            return 1;
        if (null1 || FAILED(hr))
            return 0;
        if (rp->scenario && FAILED(c->result)) {
            /* Recorded as failed, succeeded here: give a new region back at once, so nothing leaks. */
            if (mem && (c->addr.kind == HM_REF_RAW || (c->type & MEM_RESERVE)))
                IHostMemoryManager_VirtualFree(m, mem, 0, MEM_RELEASE);
            return 0;
        }
        return bind_or_compare(rp, c, mem, 0);
    }
    case HM_METHOD_VIRTUAL_FREE:
        hr = IHostMemoryManager_VirtualFree(m, as_ptr(addr), (SIZE_T)c->size, c->type);
        if (SUCCEEDED(hr) && (c->type & MEM_RELEASE) && c->addr.kind == HM_REF_ALLOC)
            kill_handle(rp, HM_REF_ALLOC, c->addr.handle);
        return compare_hr(rp, c, hr);
    case HM_METHOD_VIRTUAL_QUERY: {
        MEMORY_BASIC_INFORMATION mbi;
        memset(&mbi, 0, sizeof mbi);
        SIZE_T got = 0;
        /* The recorded length, so a host that checks dwLength answers the same; but never more than our buffer. */
        SIZE_T pass_len = (SIZE_T)(c->size < sizeof mbi ? c->size : sizeof mbi);
        hr = IHostMemoryManager_VirtualQuery(m, as_ptr(addr), null1 ? NULL : &mbi, pass_len, null2 ? NULL : &got);
        if (c->concurrent) { /* recorded while another thread changed the address space: either state is right */
            res->concurrent++;
            return 0;
        }
        if (compare_hr(rp, c, hr) || FAILED(hr) || rp->scenario)
            return rp->res->diverged;
        if (!null2 && compare_u64(rp, c, "result", c->query_result, got))
            return 1;
        if (!c->has_mbi || c->addr.kind == HM_REF_RAW)
            return 0;
        if (mbi.State != c->mbi_state)
            return diverge(rp, c, "state", "0x%" PRIx32 "\t0x%" PRIx32, c->mbi_state, mbi.State);
        if (c->mbi_state == MEM_FREE)
            return 0;
        if (compare_ref(rp, c, "base", c->mbi_base, (uint64_t)(uintptr_t)mbi.BaseAddress) ||
            compare_ref(rp, c, "allocbase", c->mbi_alloc_base, (uint64_t)(uintptr_t)mbi.AllocationBase) ||
            compare_u64(rp, c, "allocprot", c->mbi_alloc_protect, mbi.AllocationProtect) ||
            compare_u64(rp, c, "regionsize", c->mbi_region_size, mbi.RegionSize) ||
            compare_u64(rp, c, "protect", c->mbi_protect, mbi.Protect) ||
            compare_u64(rp, c, "memtype", c->mbi_type, mbi.Type))
            return 1;
        return 0;
    }
    case HM_METHOD_VIRTUAL_PROTECT: {
        DWORD old = 0;
        hr = IHostMemoryManager_VirtualProtect(m, as_ptr(addr), (SIZE_T)c->size, c->prot, null1 ? NULL : &old);
        if (compare_hr(rp, c, hr))
            return 1;
        if (SUCCEEDED(hr) && !null1 && !rp->scenario)
            return compare_u64(rp, c, "old", c->old_prot, old);
        return 0;
    }
    case HM_METHOD_GET_MEMORY_LOAD: {
        DWORD load = 0;
        SIZE_T available = 0;
        hr = IHostMemoryManager_GetMemoryLoad(m, null1 ? NULL : &load, null2 ? NULL : &available);
        if (compare_hr(rp, c, hr))
            return 1;
        if (rp->opts.compare_load && SUCCEEDED(hr) && !rp->scenario)
            return (!null1 && compare_u64(rp, c, "load", c->load, load)) ||
                   (!null2 && compare_u64(rp, c, "available", c->available_bytes, available));
        return 0;
    }
    case HM_METHOD_REGISTER_CALLBACK: {
        replay_callback *cb = NULL;
        if (c->callback) {
            cb = hm_counting_callback_new();
            replay_callback **grown = realloc(rp->callbacks, (rp->ncallbacks + 1) * sizeof *grown);
            if (!cb || !grown) {
                free(cb);
                if (grown)
                    rp->callbacks = grown;
                snprintf(res->error, sizeof res->error, "out of memory");
                rp->error = true;
                return 1;
            }
            rp->callbacks = grown;
            rp->callbacks[rp->ncallbacks++] = cb; /* our reference, dropped at the end */
            hm_handle_entry *e = hm__handle_map_put(&rp->map, HM_HANDLE_CALLBACK, c->callback);
            if (e)
                e->address = (uint64_t)(uintptr_t)cb;
        }
        hr = IHostMemoryManager_RegisterMemoryNotificationCallback(m, cb ? &cb->iface : NULL);
        return compare_hr(rp, c, hr);
    }
    case HM_METHOD_NEEDS_VAS:
        hr = IHostMemoryManager_NeedsVirtualAddressSpace(m, as_ptr(addr), (SIZE_T)c->size);
        return compare_hr(rp, c, hr);
    case HM_METHOD_ACQUIRED_VAS:
        hr = IHostMemoryManager_AcquiredVirtualAddressSpace(m, as_ptr(addr), (SIZE_T)c->size);
        if (SUCCEEDED(hr))
            ledger_note(rp, addr, true);
        return compare_hr(rp, c, hr);
    case HM_METHOD_RELEASED_VAS:
        hr = IHostMemoryManager_ReleasedVirtualAddressSpace(m, as_ptr(addr));
        if (SUCCEEDED(hr))
            ledger_note(rp, addr, false);
        return compare_hr(rp, c, hr);
    case HM_METHOD_HEAP_ALLOC:
    case HM_METHOD_HEAP_DEBUG_ALLOC: {
        void *mem = NULL;
        if (c->method == HM_METHOD_HEAP_ALLOC) {
            hr = IHostMalloc_Alloc(heap, (SIZE_T)c->size, (EMemoryCriticalLevel)c->level, null1 ? NULL : &mem);
        } else {
            char file[HM_TRACE_FILE_MAX];
            memcpy(file, c->file, sizeof file);
            hr = IHostMalloc_DebugAlloc(heap, (SIZE_T)c->size, (EMemoryCriticalLevel)c->level,
                                        c->has_file ? file : NULL, c->line, null1 ? NULL : &mem);
        }
        if (compare_hr(rp, c, hr)) {
            if (SUCCEEDED(hr) && mem)
                IHostMalloc_Free(heap, mem); /* not the trace's block: do not leak it */
            return 1;
        }
        if (null1 || FAILED(hr))
            return 0;
        if (rp->scenario && FAILED(c->result)) {
            IHostMalloc_Free(heap, mem);
            return 0;
        }
        return bind_or_compare(rp, c, mem, c->heap);
    }
    case HM_METHOD_HEAP_FREE:
        hr = IHostMalloc_Free(heap, as_ptr(addr));
        if (SUCCEEDED(hr) && c->addr.kind == HM_REF_BLOCK && c->addr.value == 0)
            kill_handle(rp, HM_REF_BLOCK, c->addr.handle);
        return compare_hr(rp, c, hr);
    case HM_TRACE_ON_NOTIFICATION:
        res->notifications_recorded++;
        return 0;
    case HM_TRACE_HEAP_RELEASE: {
        hm_handle_entry *e = hm__handle_map_find(&rp->map, HM_HANDLE_HEAP, c->heap);
        if (e && e->live) {
            IHostMalloc_Release((IHostMalloc *)as_ptr(e->address));
            hm__handle_map_kill(&rp->map, e);
        }
        return 0;
    }
    default:
        return 0;
    }
}

/* Gives back what the replay holds. Scenario runs free everything the trace left live, so the explorer's leak
 * checks see only what the host itself lost. */
static void replayer_finish(replayer *rp)
{
    hm_handle_map *map = &rp->map;
    if (rp->scenario && rp->host) {
        for (size_t i = 0; i < map->capacity; i++) {
            hm_handle_entry *e = &map->slots[i];
            if (e->key && e->live && (uint32_t)(e->key >> 32) == HM_REF_BLOCK) {
                IHostMalloc *heap = heap_of(rp, e->heap);
                if (heap)
                    IHostMalloc_Free(heap, as_ptr(e->address));
            }
        }
        for (size_t i = 0; i < map->capacity; i++) {
            hm_handle_entry *e = &map->slots[i];
            if (e->key && e->live && (uint32_t)(e->key >> 32) == HM_REF_ALLOC)
                IHostMemoryManager_VirtualFree(rp->host, as_ptr(e->address), 0, MEM_RELEASE);
        }
        for (size_t i = 0; i < rp->nledger; i++)
            IHostMemoryManager_ReleasedVirtualAddressSpace(rp->host, as_ptr(rp->ledger[i]));
    }
    for (size_t i = 0; i < map->capacity; i++) {
        hm_handle_entry *e = &map->slots[i];
        if (e->key && e->live && (uint32_t)(e->key >> 32) == HM_HANDLE_HEAP)
            IHostMalloc_Release((IHostMalloc *)as_ptr(e->address));
    }
    for (size_t i = 0; i < rp->ncallbacks; i++) {
        rp->res->notifications_seen += atomic_load(&rp->callbacks[i]->count);
        ICLRMemoryNotificationCallback_Release(&rp->callbacks[i]->iface);
    }
    free(rp->callbacks);
    free(rp->ledger);
    hm__handle_map_destroy(map);
}

/* ---- Entry points ---------------------------------------------------------------------------------------- */
static HRESULT open_host(const hm_replay_options *o, IHostMemoryManager **out)
{
    IHostMemoryManager *m = NULL;
    HRESULT hr = o && o->factory ? o->factory(o->factory_ctx, &m)
                                 : HostMemCreateBuiltinManager(HM_REPLAY_BUILTIN_OPTIONS, &m);
    if (FAILED(hr) || !m)
        return FAILED(hr) ? hr : E_POINTER;
    *out = m;
    return S_OK;
}

/* Both entry points: path (streamed, one pass) or trace (in memory). */
static HRESULT replay(const char *path, const hm_trace *trace, const hm_replay_options *opts, hm_replay_result *res)
{
    hm_replay_options defaults = {0};
    if (!opts)
        opts = &defaults;
    memset(res, 0, sizeof *res);
    hm__clear_error();

    hm_trace_reader *reader = NULL;
    HRESULT hr;
    if (path && FAILED(hr = hm_trace_open(path, &reader))) {
        snprintf(res->error, sizeof res->error, "%s", HostMemLastError());
        return hr;
    }
    replayer rp;
    replayer_init(&rp, opts, res);
    hr = open_host(opts, &rp.host);
    if (FAILED(hr)) {
        snprintf(res->error, sizeof res->error, "cannot create the replay host: %s%s%s", hm_hr_name(hr),
                 *HostMemLastError() ? ": " : "", HostMemLastError());
        replayer_finish(&rp);
        hm_trace_close(reader);
        return hr;
    }
    /* --emit-faults: the spec is built as the calls go by (it counts every allocating call of the trace, so after
     * a divergence the rest is still read, not run). */
    plan p = {0};
    bool emit = opts->emit_faults != 0;
    int got = 0;
    bool stopped = false;
    hm_trace_call rest; /* calls read after a divergence */
    size_t next = 0;
    for (;;) {
        const hm_trace_call *c;
        if (reader) {
            hm_trace_call *slot = stopped ? &rest : &rp.ring[rp.ring_next];
            if ((got = hm_trace_next(reader, slot)) <= 0)
                break;
            c = slot;
        } else {
            if (next >= trace->count)
                break;
            c = &trace->calls[next++];
        }
        if (emit)
            plan_call(&p, opts, c);
        if (!stopped && replay_call(&rp, c)) {
            stopped = true; /* the report is written: the ring is not needed any more */
            /* A text or binary trace says it is incomplete after its last call: read on (running nothing) to
             * report the mark as HostMemReplayTrace does. A raw trace says it in its header. */
            if (rp.error || (!emit && (!reader || hm_trace_reader_encoding(reader) == HM_TRACE_RAW)))
                break;
        }
    }
    if (reader) {
        res->lost = hm_trace_reader_lost(reader);
        const char *why;
        res->incomplete = hm_trace_reader_incomplete(reader, &res->incomplete_calls, &why);
        snprintf(res->incomplete_reason, sizeof res->incomplete_reason, "%s", why);
        res->implied = hm__trace_reader_implied(reader);
        if (got < 0 && (emit || !stopped)) { /* past a divergence only the mark was looked for */
            snprintf(res->error, sizeof res->error, "%s", hm_trace_error(reader));
            hr = E_INVALIDARG;
        }
        hm_trace_close(reader);
    } else if (trace->incomplete) {
        res->incomplete = 1;
        res->incomplete_calls = trace->incomplete_calls;
        snprintf(res->incomplete_reason, sizeof res->incomplete_reason, "%s", trace->incomplete_reason);
    }
    if (rp.error)
        hr = E_OUTOFMEMORY;
    if (SUCCEEDED(hr) && p.emit.failed) {
        snprintf(res->error, sizeof res->error, "out of memory planning the replay");
        hr = E_OUTOFMEMORY;
    }
    if (emit && SUCCEEDED(hr)) {
        res->fault_spec = p.emit.p ? p.emit.p : strdup("");
        p.emit.p = NULL;
    }
    plan_free(&p);
    replayer_finish(&rp);
    IHostMemoryManager_Release(rp.host);
    return hr;
}

HM_API HRESULT HostMemReplay(const char *path, const hm_replay_options *opts, hm_replay_result *result)
{
    if (!path || !result)
        return E_POINTER;
    return replay(path, NULL, opts, result);
}

HM_API HRESULT HostMemReplayTrace(const hm_trace *trace, const hm_replay_options *opts, hm_replay_result *result)
{
    if (!trace || !result)
        return E_POINTER;
    return replay(NULL, trace, opts, result);
}

HM_API void HostMemReplayFree(hm_replay_result *result)
{
    if (!result)
        return;
    free(result->fault_spec);
    result->fault_spec = NULL;
}

HM_API HRESULT hm_trace_scenario(IHostMemoryManager *manager, void *ctx)
{
    const hm_trace *trace = ctx;
    if (!manager || !trace)
        return E_POINTER;
    hm_replay_result res;
    memset(&res, 0, sizeof res);
    replayer rp;
    hm_replay_options opts = {0};
    opts.no_inject = 1;
    replayer_init(&rp, &opts, &res);
    rp.scenario = true;
    rp.host = manager;
    HRESULT hr = S_OK;
    for (size_t i = 0; i < trace->count; i++) {
        if (replay_call(&rp, &trace->calls[i])) {
            hr = E_OUTOFMEMORY; /* only the replay's own bookkeeping can stop a scenario */
            break;
        }
    }
    replayer_finish(&rp);
    return hr;
}

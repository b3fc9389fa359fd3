/* The call-sequence fuzz driver: see calls.h.
 *
 * Each input is a stream of operations: one byte picks the operation, the next bytes its arguments, drawn toward
 * the edges where hosts go wrong (page and 64 KiB boundaries, size 0, huge sizes, addresses at, inside and just past
 * earlier allocations, every flag and protection, each critical level). Every answer is compared with what the
 * model says Windows would answer, and every call that changes memory is followed by a walk of the regions it
 * touched with VirtualQuery and a look at their pages' contents. The first mismatch ends the run with a report
 * naming the call and the calls before it. Calls whose answer the model cannot know (an address owned by something
 * it does not track, such as a heap's own chunks) are not made. */
#include "check.h"

#include <hostmem/faults.h>
#include <hostmem/trace.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#define MAX_OPS 400
#define HISTORY 12
#define DEFERRED_ARGS 6 /* the most arguments a call's description takes */
#define MAX_CALLBACKS 4
#define MAX_BALLAST 4 /* large commits that drive the load toward the budget (op_pressure), outside the model */
#define DEFAULT_CALLBACK_SECONDS 5.0
#define LEDGER_AREA ((uintptr_t)0x5e0000000000) /* fake ranges the runtime "mapped itself": never touched */
#define HM_E(e) HRESULT_FROM_WIN32(e)

typedef struct fuzz_run fuzz_run;

/* An argument of a call's description, kept until the description is needed (note_call). */
typedef union {
    uint64_t u;
    const char *s;
} deferred_arg;

struct fuzz_run {
    const hm_fuzz_config *config;
    FILE *report;
    bool strict; /* hostmem's own answers where Windows leaves a choice (the built-in manager only) */
    const uint8_t *in;
    size_t left;
    IHostMemoryManager *host;   /* what the calls go to: recorder -> fault layer -> host */
    IHostMemoryManager *bare;   /* the host itself (callbacks call it directly: no faults, no double count) */
    IHostMemoryManager *faults; /* the fault layer, or NULL */
    IHostMalloc *heap[HM_MODEL_MAX_HEAPS];
    hm_counting_callback callback[MAX_CALLBACKS]; /* ctx: the run */
    int ncallbacks;
    /* Findings made inside a notification (which may run on another thread): the first one's text, written by
     * whoever claims it, published by `callback_ready`, reported by the fuzz thread after its call returns. */
    atomic_bool callback_claimed, callback_ready;
    char callback_finding[700];
    atomic_bool in_notification; /* the callback is calling back in: a notification that causes runs no calls */
    atomic_bool closing;         /* the manager is going: a notification from its teardown must not call into it */
    pthread_t thread;            /* the fuzz thread (a notification on it may read the model: it is not changing) */
    bool notified_here;          /* the notification being handled came on the fuzz thread, from its current call */
    uintptr_t ballast[MAX_BALLAST]; /* op_pressure's reservations (bases), the newest last */
    size_t nballast;
    hm_model model;
    uintptr_t freed[8]; /* recently freed heap blocks, for double frees */
    unsigned nfreed;
    uint32_t next_stamp;
    char history[HISTORY][200]; /* the last calls' descriptions, call n in history[(n - 1) % HISTORY] */
    struct {                    /* a description not formatted yet (most calls' are never needed) */
        int kind;               /* 0: history holds the text; else a QUERY_* or NOTE_DEFERRED */
        unsigned long address, base;
        const char *fmt;        /* NOTE_DEFERRED: note_call's format and arguments */
        deferred_arg args[DEFERRED_ARGS];
    } pending[HISTORY];
    unsigned calls, skipped;
    const char *current; /* what is being done: the last call's description, or `scratch` */
    char scratch[200];
    uint64_t fault_count;
    HRESULT injected; /* S_OK, or what the fault layer made the last call return */
    bool failed;
};

/* ---- Reporting ------------------------------------------------------------------------------------------------- */

/* Calls are described only when a report needs them: formatting each was a tenth of the run time. The checks'
 * VirtualQuery calls keep their two addresses; other calls keep note_call's format and arguments. */
enum { QUERY_LOOK = 1, QUERY_CHECK, NOTE_DEFERRED };

/* Formats one deferred description: `fmt`'s conversions are those note_call's callers use (%d %u %x, with the l
 * and z length modifiers, %p, and %s of strings that live as long as the program), each formatted on its own. */
static void format_deferred(char *out, size_t len, const char *fmt, const deferred_arg *args)
{
    size_t at = 0, n = 0;
    for (const char *p = fmt; *p && at + 1 < len;) {
        if (*p != '%' || p[1] == '%') {
            out[at++] = *p;
            p += *p == '%' ? 2 : 1;
            continue;
        }
        size_t k = strspn(p + 1, "#0123456789lz") + 1;
        char spec[16];
        if (k + 1 >= sizeof spec || n == DEFERRED_ARGS)
            break;
        memcpy(spec, p, k + 1);
        spec[k + 1] = '\0';
        char length = p[k - 1], conversion = p[k];
        deferred_arg a = args[n++];
        int w = conversion == 's' ? snprintf(out + at, len - at, spec, a.s)
                : conversion == 'p' ? snprintf(out + at, len - at, spec, (void *)(uintptr_t)a.u)
                : length == 'l'   ? snprintf(out + at, len - at, spec, (unsigned long)a.u)
                : length == 'z'   ? snprintf(out + at, len - at, spec, (size_t)a.u)
                                  : snprintf(out + at, len - at, spec, (unsigned)a.u);
        at += w > 0 ? (size_t)w : 0;
        if (at >= len)
            at = len - 1;
        p += k + 1;
    }
    out[at] = '\0';
}

static void format_pending(fuzz_run *r, unsigned slot)
{
    char *text = r->history[slot];
    switch (r->pending[slot].kind) {
    case QUERY_LOOK:
        snprintf(text, sizeof r->history[0], "VirtualQuery(%#lx) [a look at memory the model does not track]",
                 r->pending[slot].address);
        break;
    case QUERY_CHECK:
        snprintf(text, sizeof r->history[0], "VirtualQuery(%#lx) [checking the reservation at %#lx]",
                 r->pending[slot].address, r->pending[slot].base);
        break;
    case NOTE_DEFERRED:
        format_deferred(text, sizeof r->history[0], r->pending[slot].fmt, r->pending[slot].args);
        break;
    default:
        return;
    }
    r->pending[slot].kind = 0;
}

/* The call in history slot `slot` is the one being made now: counted, printed when verbose, and the fault layer's
 * log count taken, so that was_injected can tell whether it failed this call. */
static void call_noted(fuzz_run *r, unsigned slot)
{
    r->current = r->history[slot];
    r->calls++;
    if (r->config->verbose) {
        format_pending(r, slot);
        fprintf(r->report, "#%u %s\n", r->calls, r->current);
    }
    r->fault_count = r->faults ? HostMemFaultsLogCount(r->faults) : 0;
}

/* The arguments a note_call format takes, by kind: found once per format (a format is a string literal, so its
 * address names it), not on every call, where the parsing (strchr, strspn, each checked by ASan) was most of
 * note_call's cost. A direct-mapped cache: two formats that meet in one entry only cost a parse again. */
enum { ARG_UNSIGNED, ARG_LONG, ARG_SIZE, ARG_POINTER, ARG_STRING };
typedef struct {
    const char *fmt;
    unsigned char n, kind[DEFERRED_ARGS];
} format_shape;

HM_MODEL_UNTRACED static const format_shape *shape_of(const char *fmt)
{
    static format_shape cache[128];
    format_shape *s = &cache[((uintptr_t)fmt >> 3) % (sizeof cache / sizeof cache[0])];
    if (s->fmt == fmt)
        return s;
    s->n = 0;
    for (const char *p = strchr(fmt, '%'); p && s->n < DEFERRED_ARGS; p = strchr(p + 1, '%')) {
        if (p[1] == '%') {
            p++;
            continue;
        }
        const char *c = p + 1 + strspn(p + 1, "#0123456789lz");
        s->kind[s->n++] = *c == 's'     ? ARG_STRING
                          : *c == 'p'   ? ARG_POINTER
                          : c[-1] == 'l' ? ARG_LONG
                          : c[-1] == 'z' ? ARG_SIZE
                                         : ARG_UNSIGNED; /* %d, %u, %x: int and unsigned share their representation */
    }
    s->fmt = fmt;
    return s;
}

/* Describes the call about to be made; the arguments are kept, and formatted only when needed (format_deferred). */
static void note_call(fuzz_run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note_call(fuzz_run *r, const char *fmt, ...)
{
    unsigned slot = r->calls % HISTORY;
    r->pending[slot].kind = NOTE_DEFERRED;
    r->pending[slot].fmt = fmt;
    const format_shape *shape = shape_of(fmt);
    va_list ap;
    va_start(ap, fmt);
    for (size_t n = 0; n < shape->n; n++) {
        deferred_arg *a = &r->pending[slot].args[n];
        switch (shape->kind[n]) {
        case ARG_STRING: a->s = va_arg(ap, const char *); break;
        case ARG_POINTER: a->u = (uintptr_t)va_arg(ap, void *); break;
        case ARG_LONG: a->u = va_arg(ap, unsigned long); break;
        case ARG_SIZE: a->u = va_arg(ap, size_t); break;
        default: a->u = va_arg(ap, unsigned); break;
        }
    }
    va_end(ap);
    call_noted(r, slot);
}

static void note_query(fuzz_run *r, int kind, uintptr_t address, uintptr_t base)
{
    unsigned slot = r->calls % HISTORY;
    r->pending[slot].kind = kind;
    r->pending[slot].address = (unsigned long)address;
    r->pending[slot].base = (unsigned long)base;
    call_noted(r, slot);
}

/* After a call: whether the fault layer failed it, and with what. */
static bool was_injected(fuzz_run *r)
{
    r->injected = S_OK;
    if (!r->faults)
        return false;
    uint64_t n = HostMemFaultsLogCount(r->faults);
    if (n == r->fault_count)
        return false;
    hm_fault_event e;
    if (HostMemFaultsLog(r->faults, n - 1, &e, 1) == 1)
        r->injected = e.result;
    r->fault_count = n;
    return true;
}

static void mismatch(fuzz_run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void mismatch(fuzz_run *r, const char *fmt, ...)
{
    if (r->failed)
        return;
    r->failed = true;
    for (unsigned slot = 0; slot < HISTORY; slot++)
        format_pending(r, slot);
    char what[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    fprintf(r->report, "hostmem fuzz: the host broke the contract at call #%u:\n  %s\n  %s\n", r->calls, r->current,
            what);
    unsigned first = r->calls > HISTORY ? r->calls - HISTORY : 0;
    if (r->calls > 1)
        fprintf(r->report, "  the calls before it:\n");
    for (unsigned i = first; i + 1 < r->calls; i++)
        fprintf(r->report, "    #%u %s\n", i + 1, r->history[i % HISTORY]);
    fprintf(r->report, "  (a readable, replayable trace of this input: hostmem fuzz-to-trace INPUT -o crash.trace)\n");
}

static bool expect_hr(fuzz_run *r, HRESULT got, HRESULT want)
{
    if (got != want)
        mismatch(r, "returned %s (0x%08x); Windows' rules say %s", hm_hr_name(got), (unsigned)got, hm_hr_name(want));
    return got == want;
}

/* Whether any failure will do where the model expects `want`. hostmem's own answers are checked strictly (they
 * are Windows' error codes, docs/semantics.md); another host need only refuse what Windows refuses: hosts differ on
 * which of several faults in one call they name, and on what they support, and `hostmem conform` checks their codes
 * one rule at a time. A NULL out-pointer must still be E_POINTER. What the fuzzer checks for every host is the state
 * after the call: a refused call changed nothing. */
static bool refusal_is_enough(const fuzz_run *r, HRESULT want)
{
    return !r->strict && !r->config->strict_codes && FAILED(want) && want != E_POINTER;
}

/* ---- Input ----------------------------------------------------------------------------------------------------- */

static uint8_t take8(fuzz_run *r)
{
    if (!r->left)
        return 0;
    r->left--;
    return *r->in++;
}
static uint16_t take16(fuzz_run *r) { return (uint16_t)(take8(r) | take8(r) << 8); }
static uint32_t take32(fuzz_run *r) { return take16(r) | (uint32_t)take16(r) << 16; }
static uint64_t take64(fuzz_run *r) { return take32(r) | (uint64_t)take32(r) << 32; }

static hm_model_region *pick_region(fuzz_run *r)
{
    uint8_t k = take8(r);
    return r->model.nregions ? r->model.region[k % r->model.nregions] : NULL;
}

/* Addresses: mostly at, inside and just past what the model holds, and fresh places inside the host's first span;
 * now and then NULL, low, top-of-space or wild ones. (Memory outside every span costs hostmem a read of the process
 * map to answer for, so those stay rare enough not to dominate the run time.) */
static uintptr_t pick_address(fuzz_run *r)
{
    uint8_t kind = take8(r) % 32;
    hm_model_region *g = kind >= 1 && kind <= 16 ? pick_region(r) : NULL;
    if (!g && kind >= 1 && kind <= 16)
        kind = 31; /* nothing reserved yet: somewhere new */
    switch (kind) {
    case 0: return 0;
    case 1: case 2: case 3: case 4: return g->base;
    case 5: case 6: return g->base + (take16(r) % g->pages) * HM_MODEL_PAGE;
    case 7: case 8: return g->base + take16(r) % (g->pages * HM_MODEL_PAGE);
    case 9: case 10: return hm_model_region_end(g);
    case 11: return hm_model_granule_down(hm_model_region_end(g) + HM_MODEL_GRANULE - 1);
    case 12: return g->base - (take8(r) & 1 ? HM_MODEL_PAGE : HM_MODEL_GRANULE);
    case 13: case 14: return hm_model_region_end(g) - HM_MODEL_PAGE + take8(r);
    case 15: case 16: return g->base + (g->pages / 2) * HM_MODEL_PAGE;
    case 17: case 18:
        if (r->model.nblocks)
            return r->model.block[take8(r) % r->model.nblocks].address + (take8(r) & 0x18);
        return 0;
    case 19: case 20: return r->model.nreleased ? r->model.released[take8(r) % r->model.nreleased] : 0;
    case 21: return take16(r); /* below 64 KiB */
    case 22: {
        static const uintptr_t tops[] = {HM_MODEL_MAX_ADDRESS, HM_MODEL_MAX_ADDRESS - HM_MODEL_PAGE,
                                         HM_MODEL_MAX_ADDRESS - HM_MODEL_GRANULE, HM_MODEL_MAX_ADDRESS + 1,
                                         (uintptr_t)1 << 47, UINTPTR_MAX - HM_MODEL_PAGE + 1};
        return tops[take8(r) % (sizeof tops / sizeof tops[0])];
    }
    case 23: return (uintptr_t)take64(r);
    default: { /* a fresh place where deterministic managers start: mostly inside the first 256 MiB span */
        uint16_t n = take16(r);
        return (uintptr_t)0x7e9000000000 + (uintptr_t)(0x400 + (n >= 0xf000 ? n : n % 0xc00)) * HM_MODEL_GRANULE;
    }
    }
}

static size_t pick_size(fuzz_run *r, uintptr_t address)
{
    hm_model_region *g = hm__model_find(&r->model, hm_model_page_down(address));
    uint8_t kind = take8(r);
    switch (kind % 14) {
    case 0: return 0;
    case 1: return 1;
    case 2: case 3: return HM_MODEL_PAGE;
    case 4: return (size_t)(1 + take8(r) % 32) * HM_MODEL_PAGE;
    case 5: return (size_t)(1 + take8(r) % 8) * HM_MODEL_GRANULE;
    case 6: return 1 + take16(r) % 0x6000;
    case 7: return g ? hm_model_region_end(g) - address : HM_MODEL_GRANULE;
    case 8: return g ? hm_model_region_end(g) - address + HM_MODEL_PAGE : 2 * HM_MODEL_GRANULE;
    case 9: {
        static const size_t huge[] = {(size_t)1 << 40, SIZE_MAX, HM_MODEL_MAX_ADDRESS, HM_MODEL_MAX_ADDRESS + 1,
                                      (size_t)1 << 31, (size_t)64 << 20};
        return huge[take8(r) % (sizeof huge / sizeof huge[0])];
    }
    case 10: return (size_t)HM_MODEL_MAX_PAGES * HM_MODEL_PAGE;
    case 11: return (size_t)take8(r) * HM_MODEL_PAGE + (take8(r) & 1 ? 0x10 : 0);
    case 12: return take32(r);
    default: return 2 * HM_MODEL_PAGE;
    }
}

static uint32_t pick_alloc_type(fuzz_run *r)
{
    static const uint32_t common[] = {MEM_RESERVE, MEM_COMMIT, MEM_COMMIT | MEM_RESERVE};
    static const uint32_t edges[] = {
        MEM_RESET, MEM_RESERVE | MEM_TOP_DOWN, MEM_COMMIT | MEM_RESERVE | MEM_TOP_DOWN, MEM_RESERVE | MEM_WRITE_WATCH,
        MEM_COMMIT | MEM_WRITE_WATCH, MEM_RESET_UNDO, MEM_RESET | MEM_COMMIT, MEM_TOP_DOWN, 0, MEM_DECOMMIT,
        MEM_RELEASE, MEM_PHYSICAL | MEM_RESERVE, MEM_LARGE_PAGES | MEM_COMMIT | MEM_RESERVE,
        MEM_LARGE_PAGES | MEM_RESERVE, 0x40000000u, MEM_COMMIT | MEM_TOP_DOWN};
    uint8_t k = take8(r);
    if (k < 176)
        return common[k % 3];
    if (k == 255)
        return take32(r);
    return edges[k % (sizeof edges / sizeof edges[0])];
}

static uint32_t pick_protect(fuzz_run *r)
{
    static const uint32_t table[] = {
        PAGE_READWRITE, PAGE_READWRITE, PAGE_READWRITE, PAGE_NOACCESS, PAGE_READONLY, PAGE_EXECUTE,
        PAGE_EXECUTE_READ, PAGE_EXECUTE_READWRITE, PAGE_READWRITE | PAGE_GUARD, PAGE_READONLY | PAGE_GUARD,
        PAGE_READWRITE | PAGE_NOCACHE, PAGE_READWRITE | PAGE_WRITECOMBINE, PAGE_EXECUTE_READWRITE | PAGE_NOCACHE,
        /* invalid ones */
        0, PAGE_WRITECOPY, PAGE_EXECUTE_WRITECOPY, PAGE_NOACCESS | PAGE_GUARD, PAGE_READWRITE | PAGE_NOCACHE | PAGE_GUARD,
        PAGE_READWRITE | PAGE_NOCACHE | PAGE_WRITECOMBINE, PAGE_READWRITE | PAGE_READONLY, PAGE_READWRITE | 0x800,
        PAGE_NOACCESS | PAGE_NOCACHE};
    uint8_t k = take8(r);
    return k == 255 ? take32(r) : table[k % (sizeof table / sizeof table[0])];
}

static EMemoryCriticalLevel pick_level(fuzz_run *r)
{
    uint8_t k = take8(r) % 16;
    if (k == 15) {
        uint8_t bad = take8(r); /* read for every host, so a seed decodes alike for all */
        if (r->strict)
            return (EMemoryCriticalLevel)(bad & 1 ? 3 : 0x7fffffff);
    }
    return (EMemoryCriticalLevel)(k % 3);
}

/* ---- Looking without the model ---------------------------------------------------------------------------- */

typedef enum { SPACE_FREE, SPACE_FREE_SHORT, SPACE_TAKEN } space;

/* What the host says is at [address, address+size), for addresses the model does not track. A failed query
 * (an address above user space) counts as free: nothing can be there. */
static space look(fuzz_run *r, uintptr_t address, size_t size)
{
    if (address < HM_MODEL_MIN_ADDRESS || address >= HM_MODEL_MAX_ADDRESS)
        return SPACE_FREE; /* never anybody's, and asking would cost the host a read of the process map */
    MEMORY_BASIC_INFORMATION mbi;
    SIZE_T got = 0;
    note_query(r, QUERY_LOOK, address, 0);
    HRESULT hr = IHostMemoryManager_VirtualQuery(r->host, (void *)address, &mbi, sizeof mbi, &got);
    if (hr != S_OK)
        return SPACE_FREE;
    if (mbi.State != MEM_FREE)
        return SPACE_TAKEN;
    uintptr_t end = (uintptr_t)mbi.BaseAddress + mbi.RegionSize;
    return end >= address + size ? SPACE_FREE : SPACE_FREE_SHORT;
}

/* ---- Checking a region against the model ---------------------------------------------------------------- */

static uint64_t pattern(uint32_t stamp) { return stamp ? 0x9e3779b97f4a7c15ull * stamp | 1 : 0; }

/* Whether a page that is not resident reads as zero: true of the built-in manager's memory (private anonymous
 * mappings) when there is no swap, where a page with contents could also be out of memory. Not known of a plugin's
 * (a host may map a file). Asked once. */
static bool residency_tells_zero(const fuzz_run *r)
{
    static _Atomic int no_swap = -1; /* (a race to ask it first is harmless: same answer) */
    if (no_swap < 0) {
        struct sysinfo si;
        no_swap = sysinfo(&si) == 0 && si.totalswap == 0;
    }
    return r->strict && no_swap;
}

#define RESIDENCY_WINDOW 512   /* pages whose residency one mincore() call finds */
/* A smaller range of the built-in's is sampled instead: checked again after every call near it, its sampled page
 * faults once and stays, where a mincore() would be paid at every check. */
#define RESIDENCY_MIN_PAGES 16

/* Reads the readable committed pages of [p0, p1) (their first and last 8 bytes) and compares them with what the
 * harness wrote, or zero. Pages the harness wrote are all read. The others must read as zero, and reading one the
 * host never touched costs a page fault (and a discard later a zero page to look at) for no news, so which are read
 * depends on what is known:
 *   - every page the kernel holds in memory (mincore): only the host can have written one. For a plugin, and for a
 *     range of the built-in's of more than RESIDENCY_MIN_PAGES pages;
 *   - every 8th page, for what residency cannot tell: a plugin's pages (a host may map a file, whose pages out of
 *     memory are not zero), the built-in's small ranges, and anything when the machine has swap. */
HM_MODEL_UNTRACED static void check_contents(fuzz_run *r, const hm_model_region *g, size_t p0, size_t p1)
{
    unsigned char resident[RESIDENCY_WINDOW];
    size_t known_from = 0, known_to = 0; /* pages whose residency is in resident[] */
    bool zero_known = residency_tells_zero(r);
    bool by_residency = !zero_known || p1 - p0 > RESIDENCY_MIN_PAGES;
    bool every_8th = !(zero_known && by_residency);
    for (size_t p = p0; p < p1 && !r->failed; p++) {
        const hm_model_page *pg = &g->page[p];
        if (!pg->protect || pg->stamp == HM_STAMP_UNKNOWN || !hm__model_protect_readable(pg->protect))
            continue;
        if (!pg->written && !(every_8th && p % 8 == 0)) {
            if (!by_residency)
                continue;
            if (p < known_from || p >= known_to) {
                size_t n = p1 - p < RESIDENCY_WINDOW ? p1 - p : RESIDENCY_WINDOW;
                if (mincore((void *)(g->base + p * HM_MODEL_PAGE), n * HM_MODEL_PAGE, resident) != 0) {
                    by_residency = false; /* not mapped, although committed: the reads below say so */
                    every_8th = true;
                    if (p % 8 != 0)
                        continue;
                } else {
                    known_from = p;
                    known_to = p + n;
                }
            }
            if (by_residency && !(resident[p - known_from] & 1))
                continue;
        }
        const volatile uint64_t *first = (const uint64_t *)(g->base + p * HM_MODEL_PAGE);
        const volatile uint64_t *last = (const uint64_t *)(g->base + (p + 1) * HM_MODEL_PAGE - 8);
        uint64_t want = pattern(pg->stamp), a = *first, b = *last;
        if (a != want || b != want) {
            r->current = r->scratch;
            snprintf(r->scratch, sizeof r->scratch, "reading the committed page %#lx of the reservation at %#lx",
                     (unsigned long)(g->base + p * HM_MODEL_PAGE), (unsigned long)g->base);
            mismatch(r, "it holds %#llx...%#llx; expected %s%#llx (%s)", (unsigned long long)a, (unsigned long long)b,
                     pg->stamp ? "what the harness wrote, " : "zeros, ", (unsigned long long)want,
                     pg->stamp ? "committed pages keep their contents"
                               : "freshly committed pages read as zero, also after a decommit");
        }
    }
}

static bool same_mbi(const MEMORY_BASIC_INFORMATION *a, const MEMORY_BASIC_INFORMATION *b)
{
    return a->BaseAddress == b->BaseAddress && a->AllocationBase == b->AllocationBase &&
           a->AllocationProtect == b->AllocationProtect && a->RegionSize == b->RegionSize && a->State == b->State &&
           a->Protect == b->Protect && a->Type == b->Type;
}

static void describe_mbi(const MEMORY_BASIC_INFORMATION *m, char *buf, size_t len)
{
    snprintf(buf, len, "{Base %#lx, AllocationBase %#lx, AllocationProtect %#x, RegionSize %#lx, State %#x, "
             "Protect %#x, Type %#x}", (unsigned long)(uintptr_t)m->BaseAddress,
             (unsigned long)(uintptr_t)m->AllocationBase, (unsigned)m->AllocationProtect,
             (unsigned long)m->RegionSize, (unsigned)m->State, (unsigned)m->Protect, (unsigned)m->Type);
}

static void check_query(fuzz_run *r, const hm_model_region *g, uintptr_t address, HRESULT hr,
                        const MEMORY_BASIC_INFORMATION *got, SIZE_T result)
{
    MEMORY_BASIC_INFORMATION want;
    hm__model_query(g, address, &want);
    if (!expect_hr(r, hr, S_OK))
        return;
    if (result != sizeof want) {
        mismatch(r, "*pResult is %zu; expected %zu", (size_t)result, sizeof want);
        return;
    }
    if (!same_mbi(got, &want)) {
        char a[300], b[300];
        describe_mbi(got, a, sizeof a);
        describe_mbi(&want, b, sizeof b);
        mismatch(r, "answered %s\n  expected %s", a, b);
    }
}

/* Walks the whole region with VirtualQuery and reads the pages of [lo, hi) (clamped to the region): those the last
 * call could have changed. Reading every page after every call made page faults and reads most of the run time;
 * a host that changes pages outside a call's range is still caught by verify_all, which reads them all (after
 * the last call, and as an operation of its own). */
static void verify_region_range(fuzz_run *r, const hm_model_region *g, uintptr_t lo, uintptr_t hi)
{
    for (uintptr_t a = g->base; a < hm_model_region_end(g) && !r->failed;) {
        MEMORY_BASIC_INFORMATION mbi;
        SIZE_T got = 0;
        note_query(r, QUERY_CHECK, a, g->base);
        HRESULT hr = IHostMemoryManager_VirtualQuery(r->host, (void *)a, &mbi, sizeof mbi, &got);
        check_query(r, g, a, hr, &mbi, got);
        a += mbi.RegionSize ? mbi.RegionSize : HM_MODEL_PAGE;
    }
    uintptr_t end = hm_model_region_end(g);
    lo = lo < g->base ? g->base : lo;
    hi = hi > end ? end : hi;
    if (lo < hi)
        check_contents(r, g, (lo - g->base) / HM_MODEL_PAGE, (hi - g->base + HM_MODEL_PAGE - 1) / HM_MODEL_PAGE);
}

static void verify_region(fuzz_run *r, const hm_model_region *g)
{
    verify_region_range(r, g, g->base, hm_model_region_end(g));
}

static void verify_all(fuzz_run *r)
{
    for (size_t i = 0; i < r->model.nregions && !r->failed; i++)
        verify_region(r, r->model.region[i]);
}

/* ---- VirtualAlloc ---------------------------------------------------------------------------------------- */

/* The base of a reservation just made that the model does not hold: it is there, with its protection. */
static bool check_unmodelled_base(fuzz_run *r, uintptr_t base, uint32_t protect, const char *why)
{
    MEMORY_BASIC_INFORMATION mbi;
    SIZE_T got = 0;
    note_call(r, "VirtualQuery(%#lx) [the base of %s]", (unsigned long)base, why);
    HRESULT hr = IHostMemoryManager_VirtualQuery(r->host, (void *)base, &mbi, sizeof mbi, &got);
    if (!expect_hr(r, hr, S_OK))
        return false;
    if ((uintptr_t)mbi.AllocationBase != base || mbi.AllocationProtect != protect || mbi.State == MEM_FREE) {
        char a[300];
        describe_mbi(&mbi, a, sizeof a);
        mismatch(r, "answered %s for the base of a reservation just made with protection %#x", a, protect);
        return false;
    }
    return true;
}

/* An E_OUTOFMEMORY the fault layer did not inject, at eProcessCritical (the level that may use the whole budget),
 * for a request that charges `asked` bytes: a finding when the host's own GetMemoryLoad reports more available than
 * that plus `slack` (docs/finding-bugs.md, "Refusals: real or spurious"). Asked of the host itself: not recorded,
 * never failed by the fault layer. */
static void check_refusal(fuzz_run *r, HRESULT hr, EMemoryCriticalLevel level, uint64_t asked, uint64_t slack)
{
    if (hr != E_OUTOFMEMORY || level != eProcessCritical || r->injected != S_OK)
        return;
    DWORD load = 0;
    SIZE_T available = 0;
    if (IHostMemoryManager_GetMemoryLoad(r->bare, &load, &available) != S_OK ||
        !hm__refusal_is_spurious(asked, available, slack))
        return;
    mismatch(r, "spurious out-of-memory: E_OUTOFMEMORY at eProcessCritical for a request of %#llx bytes although "
                "GetMemoryLoad reports %llu bytes available (load %u%%, no fault injected): the host refused what "
                "it says it has", (unsigned long long)asked, (unsigned long long)available, (unsigned)load);
}

/* A reservation the model cannot hold (too large, or too many): checked at its base, then given back. Left to the
 * host when the release fails (an injected fault); the model treats it as memory it does not track. */
static void drop_unmodelled(fuzz_run *r, uintptr_t base, uint32_t protect)
{
    if (!check_unmodelled_base(r, base, protect, "a reservation too large to model"))
        return;
    HRESULT hr;
    note_call(r, "VirtualFree(%#lx, 0, MEM_RELEASE) [giving back a reservation too large to model]",
              (unsigned long)base);
    hr = IHostMemoryManager_VirtualFree(r->host, (void *)base, 0, MEM_RELEASE);
    if (was_injected(r))
        return;
    expect_hr(r, hr, S_OK);
}

static void op_virtual_alloc(fuzz_run *r)
{
    uintptr_t address = pick_address(r);
    size_t size = pick_size(r, address);
    uint32_t type = pick_alloc_type(r), protect = pick_protect(r);
    EMemoryCriticalLevel level = pick_level(r);
    bool null_out = take8(r) == 0xee && r->strict; /* (the byte is read for every host: seeds decode alike) */

    /* What Windows would do, before asking the host. */
    HRESULT want = (unsigned)level > eProcessCritical ? E_INVALIDARG
                                                       : hm__model_alloc_arguments(address, size, type, protect);
    bool reserve = (type & MEM_RESERVE) || ((type & MEM_COMMIT) && !address);
    bool may_oom = false, may_invalid = false;
    uint64_t charged = 0; /* what a commit charges the budget (0: not known, or nothing) */
    hm_model_region *g = NULL;
    uintptr_t first = hm_model_page_down(address), end = 0, base = 0;
    if (want == S_OK) {
        end = hm_model_page_down(address + size + HM_MODEL_PAGE - 1);
        if (reserve && address) {
            base = hm_model_granule_down(address);
            if (hm__model_granules_taken(&r->model, base, end)) {
                want = HM_E(ERROR_INVALID_ADDRESS);
            } else {
                space s = look(r, base, end - base);
                if (s == SPACE_TAKEN)
                    want = HM_E(ERROR_INVALID_ADDRESS);
                may_oom = s != SPACE_TAKEN;
                may_invalid = s == SPACE_FREE_SHORT;
            }
        } else if (reserve) {
            may_oom = true;
            if (type & MEM_COMMIT)
                charged = end; /* the size, in whole pages */
        } else {
            g = hm__model_find(&r->model, first);
            if (!g) {
                if (look(r, first, HM_MODEL_PAGE) == SPACE_TAKEN) {
                    r->skipped++; /* somebody else's memory (a heap's chunk, a library): not ours to touch */
                    return;
                }
                want = HM_E(ERROR_INVALID_ADDRESS);
            } else if (end > hm_model_region_end(g)) {
                want = HM_E(ERROR_INVALID_ADDRESS);
            } else if (type & MEM_COMMIT) {
                for (size_t p = (first - g->base) / HM_MODEL_PAGE; p < (end - g->base) / HM_MODEL_PAGE; p++)
                    if (!g->page[p].protect) { /* only new pages are charged */
                        may_oom = true;
                        charged += HM_MODEL_PAGE;
                    }
            }
        }
    }
    if (null_out)
        want = E_POINTER;
    bool any_refusal = refusal_is_enough(r, want);

    void *mem = (void *)(uintptr_t)0x1;
    note_call(r, "VirtualAlloc(%#lx, %#zx, %#x, %#x, %s)%s", (unsigned long)address, size, type, protect,
              hm_level_name(level), null_out ? " with ppMem NULL" : "");
    HRESULT hr = IHostMemoryManager_VirtualAlloc(r->host, (void *)address, size, type, protect, level,
                                                 null_out ? NULL : &mem);
    if (was_injected(r)) {
        want = r->injected;
        may_oom = may_invalid = any_refusal = false;
    }
    if (null_out) {
        expect_hr(r, hr, want);
        return;
    }
    if (hr != want && !(may_oom && hr == E_OUTOFMEMORY) && !(may_invalid && hr == HM_E(ERROR_INVALID_ADDRESS)) &&
        !(any_refusal && FAILED(hr))) {
        expect_hr(r, hr, want);
        return;
    }
    if (FAILED(hr)) {
        if (mem)
            mismatch(r, "failed with %s but left *ppMem = %p (it must be NULL)", hm_hr_name(hr), mem);
        if (charged && !r->failed)
            check_refusal(r, hr, level, charged, HM_REFUSAL_SLACK);
        if (g && !r->failed)
            verify_region_range(r, g, first, end); /* nothing changed */
        return;
    }
    uintptr_t got = (uintptr_t)mem;
    if (!reserve) { /* commit or reset inside g */
        if (got != first) {
            mismatch(r, "returned %#lx; expected %#lx (the address rounded down to a page)", (unsigned long)got,
                     (unsigned long)first);
            return;
        }
        for (size_t p = (first - g->base) / HM_MODEL_PAGE; p < (end - g->base) / HM_MODEL_PAGE; p++) {
            hm_model_page *pg = &g->page[p];
            if (type == MEM_RESET) {
                if (pg->protect)
                    pg->stamp = HM_STAMP_UNKNOWN; /* the contents may be discarded */
                continue;
            }
            if (!pg->protect)
                pg->stamp = 0;
            pg->protect = protect & ~(uint32_t)(PAGE_NOCACHE | PAGE_WRITECOMBINE);
        }
        verify_region_range(r, g, first, end);
        return;
    }
    size_t pages = (address ? end - hm_model_granule_down(address) : hm_model_page_down(size + HM_MODEL_PAGE - 1)) /
                   HM_MODEL_PAGE;
    char what[160];
    if (address && got != base) {
        mismatch(r, "reserved at %#lx; expected %#lx (the address rounded down to 64 KiB)", (unsigned long)got,
                 (unsigned long)base);
        return;
    }
    if (got % HM_MODEL_GRANULE || got < HM_MODEL_MIN_ADDRESS || got > HM_MODEL_MAX_ADDRESS - pages * HM_MODEL_PAGE) {
        mismatch(r, "reserved at %#lx, not a 64 KiB boundary of user space", (unsigned long)got);
        return;
    }
    if (hm__model_granules_taken(&r->model, got, got + pages * HM_MODEL_PAGE) ||
        hm__model_overlaps(&r->model, got, pages * HM_MODEL_PAGE, what, sizeof what)) {
        hm__model_overlaps(&r->model, got, pages * HM_MODEL_PAGE, what, sizeof what);
        mismatch(r, "reserved %#lx..%#lx, which is already taken (%s)", (unsigned long)got,
                 (unsigned long)(got + pages * HM_MODEL_PAGE), what);
        return;
    }
    g = hm__model_add(&r->model, got, pages, protect, (type & MEM_COMMIT) ? protect : 0);
    if (!g)
        drop_unmodelled(r, got, protect);
    else
        verify_region(r, g);
}

/* ---- VirtualFree ----------------------------------------------------------------------------------------- */

static void op_virtual_free(fuzz_run *r)
{
    static const uint32_t types[] = {MEM_RELEASE, MEM_DECOMMIT, MEM_RELEASE, MEM_DECOMMIT, MEM_RELEASE | MEM_DECOMMIT,
                                     0, MEM_RESERVE, MEM_RELEASE | 0x1};
    uintptr_t address = pick_address(r);
    uint8_t k = take8(r);
    size_t size = k & 1 ? pick_size(r, address) : 0;
    uint32_t type = types[(k >> 1) % (sizeof types / sizeof types[0])];

    HRESULT want;
    uintptr_t first = hm_model_page_down(address), end = 0;
    hm_model_region *g = NULL;
    if (type != MEM_DECOMMIT && type != MEM_RELEASE)
        want = HM_E(ERROR_INVALID_PARAMETER);
    else if (type == MEM_RELEASE && size)
        want = HM_E(ERROR_INVALID_PARAMETER);
    else if (size && (size > UINTPTR_MAX - address || address + size > UINTPTR_MAX - (HM_MODEL_PAGE - 1))) {
        /* A range that wraps around: hostmem says invalid parameter; what Windows says is not known, so another
         * host may call the address invalid instead. */
        want = HM_E(ERROR_INVALID_PARAMETER);
    }
    else if (!(g = hm__model_find(&r->model, first))) {
        if (address && look(r, first, HM_MODEL_PAGE) == SPACE_TAKEN) {
            r->skipped++;
            return;
        }
        want = HM_E(ERROR_INVALID_ADDRESS);
    } else if (type == MEM_RELEASE || size == 0) {
        want = first == g->base ? S_OK : HM_E(ERROR_INVALID_ADDRESS);
    } else {
        end = hm_model_page_down(address + size + HM_MODEL_PAGE - 1);
        want = end > hm_model_region_end(g) ? HM_E(ERROR_INVALID_PARAMETER) : S_OK;
    }

    bool any_refusal = refusal_is_enough(r, want);
    note_call(r, "VirtualFree(%#lx, %#zx, %s)", (unsigned long)address, size,
              type == MEM_RELEASE ? "MEM_RELEASE" : type == MEM_DECOMMIT ? "MEM_DECOMMIT" : "an invalid type");
    HRESULT hr = IHostMemoryManager_VirtualFree(r->host, (void *)address, size, type);
    if (was_injected(r))
        want = r->injected, any_refusal = false;
    if (any_refusal && FAILED(hr))
        hr = want;
    if (!expect_hr(r, hr, want) || !g)
        return;
    if (SUCCEEDED(hr) && r->injected == S_OK) {
        if (type == MEM_RELEASE) {
            uintptr_t base = g->base;
            hm__model_remove(&r->model, g);
            MEMORY_BASIC_INFORMATION mbi;
            SIZE_T got = 0;
            note_call(r, "VirtualQuery(%#lx) [the base of the released reservation]", (unsigned long)base);
            if (IHostMemoryManager_VirtualQuery(r->host, (void *)base, &mbi, sizeof mbi, &got) == S_OK &&
                (uintptr_t)mbi.AllocationBase == base && mbi.State != MEM_FREE)
                mismatch(r, "the released reservation is still there (State %#x, AllocationBase %#lx)",
                         (unsigned)mbi.State, (unsigned long)base);
            return;
        }
        size_t p0 = size ? (first - g->base) / HM_MODEL_PAGE : 0;
        size_t p1 = size ? (end - g->base) / HM_MODEL_PAGE : g->pages;
        for (size_t p = p0; p < p1; p++)
            g->page[p].protect = g->page[p].stamp = 0; /* `written` stays: the next commit must zero it */
    }
    if (size && end) /* the pages the call named; size 0 names the whole reservation */
        verify_region_range(r, g, first, end);
    else
        verify_region(r, g);
}

/* ---- VirtualProtect -------------------------------------------------------------------------------------- */

static void op_virtual_protect(fuzz_run *r)
{
    uintptr_t address = pick_address(r);
    size_t size = take8(r) & 1 ? 0 : pick_size(r, address);
    uint32_t protect = pick_protect(r);
    bool null_old = take8(r) == 0xee;

    HRESULT want = S_OK;
    uint32_t want_old = PAGE_NOACCESS;
    uintptr_t first = hm_model_page_down(address), end = 0;
    bool empty = false;
    hm_model_region *g = NULL;
    if (null_old)
        want = E_POINTER;
    else if (!hm__model_protect_valid(protect))
        want = HM_E(ERROR_INVALID_PARAMETER);
    else if (size > UINTPTR_MAX - address || address + size > UINTPTR_MAX - (HM_MODEL_PAGE - 1)) {
        want = HM_E(ERROR_INVALID_PARAMETER);
    } else {
        end = hm_model_page_down(address + size + HM_MODEL_PAGE - 1);
        empty = end == first; /* size 0 at a page boundary: nothing changes, the page's protection comes back */
        if (empty)
            end = first + HM_MODEL_PAGE;
        g = hm__model_find(&r->model, first);
        if (!g) {
            if (look(r, first, HM_MODEL_PAGE) == SPACE_TAKEN) {
                r->skipped++;
                return;
            }
            want = HM_E(ERROR_INVALID_ADDRESS);
        } else if (end > hm_model_region_end(g)) {
            want = HM_E(ERROR_INVALID_ADDRESS);
        } else {
            for (size_t p = (first - g->base) / HM_MODEL_PAGE; p < (end - g->base) / HM_MODEL_PAGE; p++)
                if (!g->page[p].protect)
                    want = HM_E(ERROR_INVALID_ADDRESS); /* not committed */
            if (want == S_OK)
                want_old = hm__model_reported_protect(g, (first - g->base) / HM_MODEL_PAGE);
        }
    }

    bool any_refusal = refusal_is_enough(r, want);
    DWORD old = 0xdeadbeef;
    note_call(r, "VirtualProtect(%#lx, %#zx, %#x)%s", (unsigned long)address, size, protect,
              null_old ? " with pflOldProtect NULL" : "");
    HRESULT hr = IHostMemoryManager_VirtualProtect(r->host, (void *)address, size, protect, null_old ? NULL : &old);
    bool injected = was_injected(r);
    if (injected)
        want = r->injected, any_refusal = false;
    if (any_refusal && FAILED(hr))
        hr = want;
    if (!expect_hr(r, hr, want))
        return;
    if (hr == S_OK && old != want_old) {
        mismatch(r, "gave the old protection %#x; expected %#x (the first page's)", (unsigned)old, want_old);
        return;
    }
    if (FAILED(hr) && !null_old && !injected && r->strict && old != PAGE_NOACCESS) {
        mismatch(r, "failed but set the old protection to %#x; hostmem writes PAGE_NOACCESS, as Windows does",
                 (unsigned)old);
        return;
    }
    if (!g)
        return;
    if (hr == S_OK && !empty)
        for (size_t p = (first - g->base) / HM_MODEL_PAGE; p < (end - g->base) / HM_MODEL_PAGE; p++)
            g->page[p].protect = protect & ~(uint32_t)(PAGE_NOCACHE | PAGE_WRITECOMBINE);
    verify_region_range(r, g, first, end);
}

/* ---- VirtualQuery ---------------------------------------------------------------------------------------- */

static void op_virtual_query(fuzz_run *r)
{
    uintptr_t address = pick_address(r);
    uint8_t variant = take8(r);
    MEMORY_BASIC_INFORMATION mbi;
    memset(&mbi, 0xa5, sizeof mbi);
    SIZE_T got = 12345;
    if (variant >= 0xfd) { /* the argument checks */
        SIZE_T length = variant == 0xfd ? sizeof mbi - 1 : sizeof mbi;
        note_call(r, "VirtualQuery(%#lx, %s)", (unsigned long)address,
                  variant == 0xfd ? "dwLength 47" : variant == 0xfe ? "lpBuffer NULL" : "pResult NULL");
        HRESULT hr = IHostMemoryManager_VirtualQuery(r->host, (void *)address, variant == 0xfe ? NULL : &mbi, length,
                                                     variant == 0xff ? NULL : &got);
        expect_hr(r, hr, variant == 0xfd ? HM_E(ERROR_BAD_LENGTH) : E_POINTER);
        return;
    }
    note_call(r, "VirtualQuery(%#lx)", (unsigned long)address);
    HRESULT hr = IHostMemoryManager_VirtualQuery(r->host, (void *)address, &mbi, sizeof mbi, &got);
    if (address >= HM_MODEL_MAX_ADDRESS) {
        if (expect_hr(r, hr, HM_E(ERROR_INVALID_PARAMETER)) && got != 0)
            mismatch(r, "failed but set *pResult to %zu (it must be 0)", (size_t)got);
        return;
    }
    hm_model_region *g = hm__model_find(&r->model, address);
    if (g) {
        check_query(r, g, address, hr, &mbi, got);
        return;
    }
    /* Memory the model does not track: the answer must hold the address, and must not run into a reservation
     * the model knows (regions never span allocations). */
    if (!expect_hr(r, hr, S_OK))
        return;
    uintptr_t lo = (uintptr_t)mbi.BaseAddress, hi = lo + mbi.RegionSize;
    if (got != sizeof mbi || lo != hm_model_page_down(address) || hi <= address) {
        char a[300];
        describe_mbi(&mbi, a, sizeof a);
        mismatch(r, "answered %s (*pResult %zu), which does not start at the address's page", a, (size_t)got);
        return;
    }
    for (size_t i = 0; i < r->model.nregions; i++) {
        hm_model_region *o = r->model.region[i];
        if (lo < hm_model_region_end(o) && o->base < hi) {
            mismatch(r, "answered a %s region %#lx..%#lx, but the reservation at %#lx lies in it",
                     mbi.State == MEM_FREE ? "free" : "foreign", (unsigned long)lo, (unsigned long)hi,
                     (unsigned long)o->base);
            return;
        }
    }
}

/* ---- Touching memory (not calls: what a runtime does with what it got) --------------------------------------- */

static void op_write(fuzz_run *r)
{
    hm_model_region *g = pick_region(r);
    if (!g)
        return;
    size_t p0 = take16(r) % g->pages, n = 1 + take8(r) % 8;
    for (size_t p = p0; p < g->pages && p < p0 + n; p++) {
        hm_model_page *pg = &g->page[p];
        if (!pg->protect || !hm__model_protect_writable(pg->protect))
            continue;
        pg->stamp = ++r->next_stamp;
        pg->written = true;
        if (pg->stamp == HM_STAMP_UNKNOWN)
            pg->stamp = r->next_stamp = 1;
        uint64_t v = pattern(pg->stamp);
        *(volatile uint64_t *)(g->base + p * HM_MODEL_PAGE) = v;
        *(volatile uint64_t *)(g->base + (p + 1) * HM_MODEL_PAGE - 8) = v;
    }
}

/* ---- Heaps ----------------------------------------------------------------------------------------------- */

/* A block's first and last 8 bytes hold a pattern of its stamp, by offset (so the two ends may overlap). */
static uint8_t block_byte(uint32_t stamp, size_t offset)
{
    return (uint8_t)((pattern(stamp) >> (offset % 8 * 8)) ^ (offset / 8));
}

static void block_fill(uintptr_t address, size_t size, uint32_t stamp)
{
    for (size_t i = 0; i < size && i < 8; i++)
        ((uint8_t *)address)[i] = block_byte(stamp, i);
    for (size_t i = size > 8 ? size - 8 : 0; i < size; i++)
        ((uint8_t *)address)[i] = block_byte(stamp, i);
}

HM_MODEL_UNTRACED static bool block_intact(const hm_model_block *b)
{
    const uint8_t *p = (const uint8_t *)b->address;
    for (size_t i = 0; i < b->size && i < 8; i++)
        if (p[i] != block_byte(b->stamp, i))
            return false;
    for (size_t i = b->size > 8 ? b->size - 8 : 0; i < b->size; i++)
        if (p[i] != block_byte(b->stamp, i))
            return false;
    return true;
}

static void check_block(fuzz_run *r, const hm_model_block *b)
{
    if (b->size && !block_intact(b)) {
        r->current = r->scratch;
        snprintf(r->scratch, sizeof r->scratch, "reading the live block %#lx (%zu bytes) of heap %d",
                 (unsigned long)b->address, b->size, b->heap);
        mismatch(r, "its contents changed behind the runtime's back (another block or reservation overlaps it)");
    }
}

/* AddRef and Release return the new count (a runtime's own debug checks read them): two AddRefs count up by one,
 * two Releases back down. Only the difference is checked: a host may hold references of its own. */
static void check_refcounts(fuzz_run *r, IUnknown *object, const char *what)
{
    note_call(r, "%s: AddRef, AddRef, Release, Release", what);
    ULONG a = IUnknown_AddRef(object), b = IUnknown_AddRef(object);
    ULONG c = IUnknown_Release(object), d = IUnknown_Release(object);
    if (a < 2 || b != a + 1 || c != a || d != a - 1)
        mismatch(r, "AddRef returned %lu then %lu, Release %lu then %lu (the new counts: n, n+1, n, n-1, n >= 2)",
                 (unsigned long)a, (unsigned long)b, (unsigned long)c, (unsigned long)d);
}

static void release_heap(fuzz_run *r, int i)
{
    for (size_t k = 0; k < r->model.nblocks && !r->failed; k++)
        if (r->model.block[k].heap == i)
            check_block(r, &r->model.block[k]);
    if (!r->failed)
        check_refcounts(r, (IUnknown *)r->heap[i], "heap");
    note_call(r, "heap %d: Release", i);
    IHostMalloc_Release(r->heap[i]);
    r->heap[i] = NULL;
    hm__model_drop_heap(&r->model, i);
}

static void op_create_heap(fuzz_run *r)
{
    int i = take8(r) % HM_MODEL_MAX_HEAPS;
    if (r->heap[i]) {
        release_heap(r, i);
        return;
    }
    static const DWORD types[] = {MALLOC_THREADSAFE, 0, MALLOC_THREADSAFE | MALLOC_EXECUTABLE, MALLOC_EXECUTABLE,
                                  MALLOC_THREADSAFE, 0, 0x4, 0x80000000u};
    uint8_t k = take8(r);
    DWORD type = types[k % (r->strict ? 8 : 6)];
    bool null_out = r->strict && k == 0xee;
    HRESULT want = null_out ? E_POINTER : type & ~(DWORD)3 ? E_INVALIDARG : S_OK;
    IHostMalloc *heap = (IHostMalloc *)(uintptr_t)0x1;
    note_call(r, "CreateMalloc(%#x) as heap %d%s", (unsigned)type, i, null_out ? " with ppMalloc NULL" : "");
    HRESULT hr = IHostMemoryManager_CreateMalloc(r->host, type, null_out ? NULL : &heap);
    if (was_injected(r))
        want = r->injected;
    if (null_out) {
        expect_hr(r, hr, want);
        return;
    }
    if (hr != want && !(want == S_OK && hr == E_OUTOFMEMORY)) {
        expect_hr(r, hr, want);
        if (SUCCEEDED(hr) && heap)
            IHostMalloc_Release(heap);
        return;
    }
    if (FAILED(hr)) {
        if (heap)
            mismatch(r, "failed but left *ppMalloc = %p (it must be NULL)", (void *)heap);
        return;
    }
    if (!heap) {
        mismatch(r, "returned S_OK and no heap");
        return;
    }
    r->heap[i] = heap;
}

static size_t pick_block_size(fuzz_run *r)
{
    uint8_t k = take8(r);
    switch (k % 10) {
    case 0: return 0;
    case 1: return 1 + k / 10 % 16;
    case 2: case 3: case 4: return 8 + take16(r) % 1017;
    case 5: return 16 << (take8(r) % 12); /* powers of two up to 32 KiB */
    case 6: return 32 * 1024 + take16(r);  /* just past the small sizes */
    case 7: return (size_t)(1 + take8(r) % 16) << 16;
    case 8: {
        static const size_t huge[] = {(size_t)1 << 41, SIZE_MAX, SIZE_MAX - 15, (size_t)1 << 62};
        return huge[take8(r) % 4];
    }
    default: return take16(r);
    }
}

static void remember_freed(fuzz_run *r, uintptr_t address)
{
    r->freed[r->nfreed++ % (sizeof r->freed / sizeof r->freed[0])] = address;
}

static void op_heap_alloc(fuzz_run *r, bool debug)
{
    int i = take8(r) % HM_MODEL_MAX_HEAPS;
    size_t size = pick_block_size(r);
    EMemoryCriticalLevel level = pick_level(r);
    if (!r->heap[i])
        return;
    if (r->model.nblocks == HM_MODEL_MAX_BLOCKS) {
        r->skipped++;
        return;
    }
    bool huge = size > ((size_t)1 << 40);
    HRESULT want = (unsigned)level > eProcessCritical ? E_INVALIDARG : huge ? E_OUTOFMEMORY : S_OK;
    void *mem = (void *)(uintptr_t)0x1;
    HRESULT hr;
    int line = take16(r);
    if (debug) {
        note_call(r, "heap %d: DebugAlloc(%#zx, %s, \"fuzz.c\", %d)", i, size, hm_level_name(level), line);
        hr = IHostMalloc_DebugAlloc(r->heap[i], size, level, (char *)"fuzz.c", line, &mem);
    } else {
        note_call(r, "heap %d: Alloc(%#zx, %s)", i, size, hm_level_name(level));
        hr = IHostMalloc_Alloc(r->heap[i], size, level, &mem);
    }
    if (was_injected(r))
        want = r->injected;
    if (hr != want && !(want == S_OK && hr == E_OUTOFMEMORY)) {
        expect_hr(r, hr, want);
        return;
    }
    if (FAILED(hr)) {
        if (mem)
            mismatch(r, "failed but left *ppMem = %p (it must be NULL)", mem);
        else if (want == S_OK) /* a heap takes memory in 64 KiB chunks, each with a header: one more of slack */
            check_refusal(r, hr, level, size, 2 * HM_REFUSAL_SLACK);
        return;
    }
    uintptr_t a = (uintptr_t)mem;
    char what[160];
    if (!a || a % 16) { /* MEMORY_ALLOCATION_ALIGNMENT on x64: what HeapAlloc guarantees and the runtime relies on */
        mismatch(r, "returned the block %p, which is %s", mem, a ? "not 16-byte aligned" : "NULL");
        return;
    }
    if (hm__model_overlaps(&r->model, a, size, what, sizeof what)) {
        mismatch(r, "returned the block %#lx..%#lx, which overlaps %s", (unsigned long)a, (unsigned long)(a + size),
                 what);
        return;
    }
    hm_model_block *b = &r->model.block[r->model.nblocks++];
    *b = (hm_model_block){a, size, ++r->next_stamp, i};
    if (size)
        block_fill(a, size, b->stamp);
    for (unsigned k = 0; k < sizeof r->freed / sizeof r->freed[0]; k++)
        if (r->freed[k] == a)
            r->freed[k] = 0;
}

static void op_heap_free(fuzz_run *r)
{
    uint8_t k = take8(r);
    if (!r->model.nblocks) {
        int i = k % HM_MODEL_MAX_HEAPS;
        if (r->heap[i]) {
            note_call(r, "heap %d: Free(NULL)", i);
            HRESULT hr = IHostMalloc_Free(r->heap[i], NULL);
            expect_hr(r, hr, was_injected(r) ? r->injected : S_OK);
        }
        return;
    }
    hm_model_block *b = &r->model.block[k % r->model.nblocks];
    check_block(r, b);
    if (r->failed)
        return;
    note_call(r, "heap %d: Free(%#lx) [a live block of %zu bytes]", b->heap, (unsigned long)b->address, b->size);
    HRESULT hr = IHostMalloc_Free(r->heap[b->heap], (void *)b->address);
    HRESULT want = was_injected(r) ? r->injected : S_OK;
    if (!expect_hr(r, hr, want) || FAILED(hr))
        return;
    remember_freed(r, b->address);
    *b = r->model.block[--r->model.nblocks];
}

static void op_heap_check(fuzz_run *r)
{
    for (size_t k = 0; k < r->model.nblocks && !r->failed; k++)
        check_block(r, &r->model.block[k]);
}

/* Frees the heap must refuse without harm (hostmem's own promise): foreign, interior, double, another heap's. */
static void op_heap_bad_free(fuzz_run *r)
{
    int i = take8(r) % HM_MODEL_MAX_HEAPS;
    uint8_t kind = take8(r) % 5;
    if (!r->heap[i])
        return;
    uintptr_t a = 0;
    const char *what = "";
    int local;
    switch (kind) {
    case 0:
        if (r->model.nblocks) {
            hm_model_block *b = &r->model.block[take8(r) % r->model.nblocks];
            a = b->address + (b->size > 16 ? 16 : 1), what = "a pointer into a live block";
        }
        break;
    case 1:
        a = r->freed[take8(r) % (sizeof r->freed / sizeof r->freed[0])], what = "a block freed already";
        break;
    case 2:
        for (size_t k = 0; k < r->model.nblocks; k++)
            if (r->model.block[k].heap != i)
                a = r->model.block[k].address, what = "a live block of another heap";
        break;
    case 3:
        if (r->model.nregions)
            a = pick_region(r)->base, what = "memory from VirtualAlloc";
        break;
    default:
        a = (uintptr_t)&local, what = "a stack address";
        break;
    }
    if (!r->strict) {
        op_heap_check(r); /* only hostmem promises to refuse bad frees harmlessly */
        return;
    }
    if (!a || hm__model_block_find(&r->model, a))
        return;
    note_call(r, "heap %d: Free(%#lx) [%s]", i, (unsigned long)a, what);
    HRESULT hr = IHostMalloc_Free(r->heap[i], (void *)a);
    expect_hr(r, hr, was_injected(r) ? r->injected : HOST_E_INVALIDOPERATION);
}

/* ---- Load, notifications, identity ------------------------------------------------------------------------ */

static void op_memory_load(fuzz_run *r)
{
    uint8_t k = take8(r);
    DWORD load = 0xdead;
    SIZE_T available = 0;
    bool null_arg = r->strict && k >= 0xf0;
    note_call(r, "GetMemoryLoad(%s)", null_arg ? (k & 1 ? "NULL, &available" : "&load, NULL") : "&load, &available");
    HRESULT hr = IHostMemoryManager_GetMemoryLoad(r->host, null_arg && k & 1 ? NULL : &load,
                                                  null_arg && !(k & 1) ? NULL : &available);
    HRESULT want = was_injected(r) ? r->injected : null_arg ? E_POINTER : S_OK;
    if (expect_hr(r, hr, want) && hr == S_OK && load > 100)
        mismatch(r, "reported a memory load of %u%% (a percentage)", (unsigned)load);
}

/* ---- Driving the load toward the budget ---------------------------------------------------------------------- */

#define PRESSURE_CAP ((size_t)4 << 30) /* as conform's callback.reentry: a host with more is not driven that far */

/* Gives back the newest ballast reservation; kept when the fault layer fails the release (the host still has it). */
static void release_ballast(fuzz_run *r)
{
    uintptr_t base = r->ballast[r->nballast - 1];
    note_call(r, "VirtualFree(%#lx, 0, MEM_RELEASE) [giving back a commit that drove the load up]",
              (unsigned long)base);
    HRESULT hr = IHostMemoryManager_VirtualFree(r->host, (void *)base, 0, MEM_RELEASE);
    if (was_injected(r)) {
        expect_hr(r, hr, r->injected);
        return;
    }
    if (expect_hr(r, hr, S_OK))
        r->nballast--;
}

/* Commits half to fifteen sixteenths of what the host's own GetMemoryLoad says is available, in one reservation the
 * model does not track (ballast, never read or written), or gives the newest one back: the load crosses the host's
 * thresholds, so it notifies (and the callbacks call back in), and requests near the budget are refused, which
 * check_refusal judges. */
static void op_pressure(fuzz_run *r)
{
    uint8_t k = take8(r);
    EMemoryCriticalLevel level = (EMemoryCriticalLevel)(take8(r) % 3); /* valid ones: op_virtual_alloc tries the rest */
    if ((k & 3) == 3 || r->nballast == MAX_BALLAST) {
        if (r->nballast)
            release_ballast(r);
        return;
    }
    DWORD load = 0;
    SIZE_T available = 0;
    note_call(r, "GetMemoryLoad(&load, &available) [how far the budget is]");
    HRESULT hr = IHostMemoryManager_GetMemoryLoad(r->host, &load, &available);
    if (!expect_hr(r, hr, was_injected(r) ? r->injected : S_OK) || FAILED(hr))
        return;
    uint64_t share = (uint64_t)available / 16 * (8 + (k >> 2) % 8);
    size_t size = share > PRESSURE_CAP ? PRESSURE_CAP : (size_t)share & ~(size_t)(HM_MODEL_GRANULE - 1);
    if (size < HM_MODEL_GRANULE)
        size = HM_MODEL_GRANULE;
    void *mem = (void *)(uintptr_t)0x1;
    note_call(r, "VirtualAlloc(NULL, %#zx, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, %s) [driving the load toward "
              "the budget: load %u%%, %#zx bytes available]", size, hm_level_name(level), (unsigned)load,
              (size_t)available);
    hr = IHostMemoryManager_VirtualAlloc(r->host, NULL, size, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, level, &mem);
    if (was_injected(r)) {
        expect_hr(r, hr, r->injected);
        return;
    }
    if (FAILED(hr)) {
        if (!expect_hr(r, hr, E_OUTOFMEMORY))
            return;
        if (mem)
            mismatch(r, "failed with %s but left *ppMem = %p (it must be NULL)", hm_hr_name(hr), mem);
        else
            check_refusal(r, hr, level, size, HM_REFUSAL_SLACK);
        return;
    }
    uintptr_t base = (uintptr_t)mem;
    char what[160];
    if (base % HM_MODEL_GRANULE || base < HM_MODEL_MIN_ADDRESS || base > HM_MODEL_MAX_ADDRESS - size) {
        mismatch(r, "reserved at %#lx, not a 64 KiB boundary of user space", (unsigned long)base);
        return;
    }
    if (hm__model_granules_taken(&r->model, base, base + size) ||
        hm__model_overlaps(&r->model, base, size, what, sizeof what)) {
        hm__model_overlaps(&r->model, base, size, what, sizeof what);
        mismatch(r, "reserved %#lx..%#lx, which is already taken (%s)", (unsigned long)base,
                 (unsigned long)(base + size), what);
        return;
    }
    r->ballast[r->nballast++] = base;
    check_unmodelled_base(r, base, PAGE_READWRITE, "a commit driving the load up");
}

/* ---- Notifications: a callback that calls back in ------------------------------------------------------------ */

/* Keeps the first finding made inside a notification, for the fuzz thread to report (check_callback_findings). */
static void callback_finding(fuzz_run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void callback_finding(fuzz_run *r, const char *fmt, ...)
{
    if (atomic_exchange(&r->callback_claimed, true))
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->callback_finding, sizeof r->callback_finding, fmt, ap);
    va_end(ap);
    atomic_store(&r->callback_ready, true);
}

static void check_callback_findings(fuzz_run *r)
{
    if (atomic_load(&r->callback_ready) && !r->failed)
        mismatch(r, "%s", r->callback_finding);
}

/* On the watchdog's thread, when a call from inside the callback has not returned: the fuzz thread is stuck in the
 * host, so its history is still the calls that led here (the watchdog's lock orders our reads after its writes). */
static void callback_hung(const char *what, double seconds, void *ctx)
{
    fuzz_run *r = ctx;
    char why[300];
    hm__reentry_hang_message(why, sizeof why, what, seconds);
    mismatch(r, "%s (%s)", why, r->notified_here ? "the notification came from inside this call"
                                                  : "the notification came on another thread, during this call");
}

static double callback_seconds(const fuzz_run *r)
{
    return r->config->callback_seconds > 0 ? r->config->callback_seconds : DEFAULT_CALLBACK_SECONDS;
}

/* Makes `call`, assigning its result to the caller's `hr`, with the watchdog armed under the name `what`. */
#define GUARDED(r, what, call)                                                                                     \
    do {                                                                                                           \
        bool armed_ = hm__watchdog_arm(what, callback_seconds(r), callback_hung, r);                               \
        hr = (call);                                                                                               \
        if (armed_)                                                                                                \
            hm__watchdog_disarm();                                                                                 \
    } while (0)

/* What a runtime does inside OnMemoryNotification (as conform's callback.reentry does): it queries memory, asks for
 * the load, reserves a little and gives it back. Each call goes to the host itself (no fault layer, not recorded:
 * the reservation is made and released, so the trace's state is unchanged) under the watchdog, so a host that
 * notifies holding its own lock is named instead of ending as a fuzz timeout. Checked where the answer is known
 * whatever the fuzz thread is doing (a notification may come from another thread, in the middle of a call the model
 * has not taken in yet): the sizes and bases of every answer, and the new reservation's VirtualQuery exactly. */
static void call_back_in(fuzz_run *r, void *known)
{
    IHostMemoryManager *m = r->bare;
    MEMORY_BASIC_INFORMATION mbi;
    memset(&mbi, 0, sizeof mbi);
    SIZE_T got = 0;
    HRESULT hr;
    char a[300], b[300];
    GUARDED(r, hm_reentry_query, IHostMemoryManager_VirtualQuery(m, known, &mbi, sizeof mbi, &got));
    uintptr_t page = hm_model_page_down((uintptr_t)known);
    if (hr != S_OK || got != sizeof mbi || (uintptr_t)mbi.BaseAddress != page ||
        (uintptr_t)mbi.BaseAddress + mbi.RegionSize <= (uintptr_t)known) {
        describe_mbi(&mbi, a, sizeof a);
        callback_finding(r, "from inside OnMemoryNotification, VirtualQuery(%p) returned %s, *pResult %zu, %s; "
                         "expected S_OK and a region holding the address, starting at its page", known,
                         hm_hr_name(hr), (size_t)got, hr == S_OK ? a : "");
        return;
    }
    DWORD load = 0xdead;
    SIZE_T available = 0;
    GUARDED(r, hm_reentry_load, IHostMemoryManager_GetMemoryLoad(m, &load, &available));
    if (hr != S_OK || load > 100) {
        callback_finding(r, "from inside OnMemoryNotification, GetMemoryLoad returned %s with a load of %u%%; "
                         "expected S_OK and a percentage", hm_hr_name(hr), (unsigned)load);
        return;
    }
    void *p = NULL;
    GUARDED(r, hm_reentry_alloc, IHostMemoryManager_VirtualAlloc(m, NULL, HM_MODEL_GRANULE, MEM_RESERVE,
                                                                 PAGE_READWRITE, eProcessCritical, &p));
    if (hr != S_OK || !p || (uintptr_t)p % HM_MODEL_GRANULE) {
        /* A reservation is not charged: even at full load the host has no reason to refuse it. */
        callback_finding(r, "from inside OnMemoryNotification, VirtualAlloc(NULL, 0x10000, MEM_RESERVE, "
                         "PAGE_READWRITE, eProcessCritical) returned %s, %p; expected S_OK and a 64 KiB boundary",
                         hm_hr_name(hr), p);
        return;
    }
    GUARDED(r, hm_reentry_query, IHostMemoryManager_VirtualQuery(m, p, &mbi, sizeof mbi, &got));
    MEMORY_BASIC_INFORMATION want = {.BaseAddress = p, .AllocationBase = p, .AllocationProtect = PAGE_READWRITE,
                                     .RegionSize = HM_MODEL_GRANULE, .State = MEM_RESERVE, .Type = MEM_PRIVATE};
    if (hr != S_OK || got != sizeof mbi || !same_mbi(&mbi, &want)) {
        describe_mbi(&mbi, a, sizeof a);
        describe_mbi(&want, b, sizeof b);
        callback_finding(r, "from inside OnMemoryNotification, VirtualQuery of the 64 KiB reservation %p just made "
                         "returned %s, %s; expected S_OK, %s", p, hm_hr_name(hr), hr == S_OK ? a : "", b);
    }
    GUARDED(r, hm_reentry_free, IHostMemoryManager_VirtualFree(m, p, 0, MEM_RELEASE));
    if (hr != S_OK)
        callback_finding(r, "from inside OnMemoryNotification, VirtualFree(%p, 0, MEM_RELEASE) of the reservation "
                         "just made returned %s; expected S_OK", p, hm_hr_name(hr));
}

static void check_notification(hm_counting_callback *cb, EMemoryAvailable e)
{
    fuzz_run *r = cb->ctx;
    if ((int)e < eMemoryAvailableLow || (int)e > eMemoryAvailableHigh)
        callback_finding(r, "OnMemoryNotification was called with %d, not one of EMemoryAvailable's values", (int)e);
    if (atomic_load(&r->closing) || atomic_exchange(&r->in_notification, true))
        return; /* caused by our own calls back in (or concurrent with them): one level is enough */
    /* The address to query: a reservation the model holds (its answer may be changing under the call in flight, so
     * only its shape is checked), or else the callback itself (memory of the process: a host may have to read the
     * process map to answer, which costs more). */
    void *known = cb;
    r->notified_here = pthread_equal(pthread_self(), r->thread);
    if (r->notified_here && r->model.nregions)
        known = (void *)r->model.region[0]->base;
    call_back_in(r, known);
    atomic_store(&r->in_notification, false);
}

static void op_register_callback(fuzz_run *r)
{
    bool null_arg = take8(r) == 0xee && r->strict;
    if (!null_arg && r->ncallbacks == MAX_CALLBACKS)
        return;
    hm_counting_callback *c = null_arg ? NULL : &r->callback[r->ncallbacks];
    if (c)
        *c = (hm_counting_callback){.iface.lpVtbl = &hm_counting_callback_vtbl, .refs = 1,
                                    .on_notify = check_notification, .ctx = r};
    note_call(r, "RegisterMemoryNotificationCallback(%s)", c ? "a callback" : "NULL");
    HRESULT hr = IHostMemoryManager_RegisterMemoryNotificationCallback(r->host, c ? &c->iface : NULL);
    HRESULT want = was_injected(r) ? r->injected : c ? S_OK : E_POINTER;
    if (!expect_hr(r, hr, want) || !c)
        return;
    r->ncallbacks++;
    if (hr == S_OK && atomic_load(&c->refs) < 2)
        mismatch(r, "took the callback without keeping a reference to it (AddRef)");
}

static void op_query_interface(fuzz_run *r)
{
    static const IID unknown_iid = {0x12345678, 0x1234, 0x1234, {1, 2, 3, 4, 5, 6, 7, 8}};
    uint8_t k = take8(r) % 4;
    const IID *iid = k == 0 ? &IID_IUnknown : k == 1 ? &IID_IHostMemoryManager : k == 2 ? &IID_IHostMalloc
                                                                                          : &unknown_iid;
    void *out = (void *)(uintptr_t)0x1;
    note_call(r, "QueryInterface(%s)", k == 0 ? "IID_IUnknown" : k == 1 ? "IID_IHostMemoryManager"
                                          : k == 2 ? "IID_IHostMalloc" : "an unknown IID");
    HRESULT hr = IHostMemoryManager_QueryInterface(r->host, iid, &out);
    if (!expect_hr(r, hr, k < 2 ? S_OK : E_NOINTERFACE))
        return;
    if (FAILED(hr) && out)
        mismatch(r, "failed but left *ppv = %p (it must be NULL)", out);
    if (SUCCEEDED(hr)) {
        if (!out)
            mismatch(r, "returned S_OK and no interface");
        else
            IUnknown_Release((IUnknown *)out);
    }
}

/* ---- The address-space ledger ---------------------------------------------------------------------------- */

static void op_ledger(fuzz_run *r)
{
    uint8_t k = take8(r);
    uintptr_t start = LEDGER_AREA + (uintptr_t)(take8(r) % 32) * 0x100000 + (k & 0x80 ? 0x10000 : 0);
    size_t size = (size_t)(1 + take8(r) % 24) * HM_MODEL_GRANULE;
    hm_model_range *known = hm__model_acquired_find(&r->model, start);
    switch (k % 3) {
    case 0: {
        note_call(r, "NeedsVirtualAddressSpace(%#lx, %#zx)", (unsigned long)start, size);
        HRESULT hr = IHostMemoryManager_NeedsVirtualAddressSpace(r->host, (void *)start, size);
        if (was_injected(r))
            expect_hr(r, hr, r->injected);
        else if (hr != E_OUTOFMEMORY)
            expect_hr(r, hr, S_OK);
        return;
    }
    case 1: {
        bool overlap = hm__model_acquired_overlaps(&r->model, start, size);
        if ((overlap && !r->strict) || r->model.nacquired == HM_MODEL_MAX_LEDGER)
            return; /* inconsistent calls: only hostmem promises an answer */
        note_call(r, "AcquiredVirtualAddressSpace(%#lx, %#zx)%s", (unsigned long)start, size,
                  overlap ? " [overlaps an acquired range]" : "");
        HRESULT hr = IHostMemoryManager_AcquiredVirtualAddressSpace(r->host, (void *)start, size);
        if (was_injected(r)) {
            expect_hr(r, hr, r->injected);
            return;
        }
        if (expect_hr(r, hr, overlap ? HOST_E_INVALIDOPERATION : S_OK) && !overlap)
            r->model.acquired[r->model.nacquired++] = (hm_model_range){start, size};
        return;
    }
    default: {
        if (!known && !r->strict) {
            if (!r->model.nacquired)
                return;
            known = &r->model.acquired[k % r->model.nacquired];
            start = known->start;
        }
        note_call(r, "ReleasedVirtualAddressSpace(%#lx)%s", (unsigned long)start, known ? "" : " [never acquired]");
        HRESULT hr = IHostMemoryManager_ReleasedVirtualAddressSpace(r->host, (void *)start);
        if (was_injected(r)) {
            expect_hr(r, hr, r->injected);
            return;
        }
        if (expect_hr(r, hr, known ? S_OK : HOST_E_INVALIDOPERATION) && known)
            *known = r->model.acquired[--r->model.nacquired];
        return;
    }
    }
}

/* ---- Setting up ------------------------------------------------------------------------------------------ */

/* The fault spec the input's first bytes choose: up to three rules, each a method, a trigger and a result. */
static void decode_fault_spec(fuzz_run *r, char *spec, size_t len)
{
    static const char *methods[] = {"VirtualAlloc", "VirtualFree", "VirtualProtect", "CreateMalloc", "heap", "Free",
                                    "GetMemoryLoad", "NeedsVirtualAddressSpace", "VirtualAlloc|heap"};
    static const char *results[] = {"E_OUTOFMEMORY", "E_OUTOFMEMORY", "HOST_E_TIMEOUT", "E_FAIL"};
    static const char *levels[] = {"", ",level=task", ",level=appdomain", ",level=process|appdomain"};
    size_t n = 0;
    spec[0] = '\0';
    int rules = take8(r) % 4;
    for (int i = 0; i < rules && n < len; i++) {
        uint8_t m = take8(r), t = take8(r), v = take8(r), x = take8(r);
        char trigger[48];
        switch (t % 4) {
        case 0: snprintf(trigger, sizeof trigger, "nth=%u", 1 + v % 16); break;
        case 1: snprintf(trigger, sizeof trigger, "every=%u", 1 + v % 8); break;
        case 2: snprintf(trigger, sizeof trigger, "after=%u", v % 32); break;
        default: snprintf(trigger, sizeof trigger, "probability=%u%%,seed=%u", 1 + v % 50, x); break;
        }
        n += (size_t)snprintf(spec + n, len - n, "%s%s,%s%s,return=%s", i ? ";" : "",
                              methods[m % (sizeof methods / sizeof methods[0])], trigger, levels[x % 4],
                              results[(x >> 2) % 4]);
    }
}

/* The built-in manager, kept across inputs: hm__manager_reset puts it back to its new state after each (much cheaper
 * than a new manager; tests/test_manager.c checks that a reset manager answers as a new one does, so an input still
 * reproduces alone). */
static struct {
    IHostMemoryManager *manager; /* our reference; NULL: none kept */
    char options[512];           /* what it was made with */
} builtin;

static const char *builtin_options(const hm_fuzz_config *c)
{
    return c->host_options ? c->host_options : HM_FUZZ_DEFAULT_OPTIONS;
}

static bool builtin_reusable(const fuzz_run *r)
{
    const char *options = builtin_options(r->config);
    if (!builtin.manager)
        return false;
    if (!r->config->fresh_manager && strcmp(options, builtin.options) == 0)
        return true;
    IHostMemoryManager_Release(builtin.manager); /* made for other options */
    builtin.manager = NULL;
    return false;
}

/* After an input, with every other reference gone: the kept manager back to its new state, or dropped. */
static void builtin_reset(void)
{
    if (builtin.manager && hm__manager_reset(builtin.manager) != S_OK) {
        IHostMemoryManager_Release(builtin.manager);
        builtin.manager = NULL;
    }
}

static int open_host(fuzz_run *r, IHostMemoryManager **bare)
{
    const hm_fuzz_config *c = r->config;
    HRESULT hr;
    if (c->host_library) {
        /* The one plugin loader of every hostmem tool (harness/plugin.h): a load failure is said once, plainly. */
        char err[1024];
        hr = hm__host_open(c->host_library, c->host_options ? c->host_options : "", bare, err, sizeof err);
        if (FAILED(hr)) {
            fprintf(r->report, "hostmem fuzz: %s\n", err);
            return -1;
        }
    } else if (builtin_reusable(r)) {
        *bare = builtin.manager;
        IHostMemoryManager_AddRef(*bare); /* this input's reference */
        hr = S_OK;
    } else {
        hr = HostMemCreateBuiltinManager(builtin_options(c), bare);
        if (SUCCEEDED(hr) && !c->fresh_manager) { /* kept (a reference of its own) for the next inputs */
            builtin.manager = *bare;
            IHostMemoryManager_AddRef(builtin.manager);
            snprintf(builtin.options, sizeof builtin.options, "%s", builtin_options(c));
        }
    }
    if (FAILED(hr) || !*bare) {
        fprintf(r->report, "hostmem fuzz: the host refused to start: %s %s\n", hm_hr_name(hr),
                c->host_library ? "" : HostMemLastError());
        return -1;
    }
    r->host = r->bare = *bare;
    char spec[512] = "";
    if (c->faults) {
        decode_fault_spec(r, spec, sizeof spec);
        if (c->verbose)
            fprintf(r->report, "fault spec: '%s'\n", spec);
        if (FAILED(HostMemWrapFaults(*bare, spec, &r->faults))) {
            fprintf(r->report, "hostmem fuzz: the fault spec '%s' was refused: %s\n", spec, HostMemLastError());
            return -1;
        }
        r->host = r->faults; /* the wrapper holds the host now */
        IHostMemoryManager_Release(*bare);
    }
    if (c->trace_path) {
        IHostMemoryManager *recorder;
        /* The trace's header: which host, with which options and fault spec, made the recorded answers. */
        hm_trace_env env = {.host = c->host_library ? c->host_library : HM_TRACE_BUILTIN_HOST,
                            .host_options = c->host_library ? c->host_options : builtin_options(c),
                            .faults = spec};
        char *resolved = c->host_library ? realpath(c->host_library, NULL) : NULL;
        env.host_path = resolved;
        hr = HostMemWrapRecorderEnv(r->host, c->trace_path, &env, &recorder);
        free(resolved);
        if (FAILED(hr)) {
            fprintf(r->report, "hostmem fuzz: cannot record to '%s': %s\n", c->trace_path, HostMemLastError());
            return -1;
        }
        IHostMemoryManager_Release(r->host);
        r->host = recorder;
    }
    return 0;
}

int hm__fuzz_calls_run(const uint8_t *data, size_t size, const hm_fuzz_config *config, hm_fuzz_outcome *outcome)
{
    /* One run at a time (the targets and the CLI are single-threaded): a static run costs no page faults per
     * input, which a fresh 40 KiB allocation would under ASan. */
    static fuzz_run the_run;
    fuzz_run *r = &the_run;
    memset(r, 0, sizeof *r);
    r->config = config;
    r->report = config->report ? config->report : stderr;
    r->strict = config->host_library == NULL;
    r->in = data;
    r->left = size;
    r->current = "setting up the host";
    r->thread = pthread_self();
    hm__model_init(&r->model);
    IHostMemoryManager *bare = NULL;
    int status = open_host(r, &bare);
    if (status == 0) {
        /* One reservation made and given back first: a host that takes address space lazily (hostmem maps its first
         * span here) then answers queries of its own range from its books, not from the process map. */
        void *p = NULL;
        note_call(r, "VirtualAlloc(NULL, 0x10000, MEM_RESERVE, PAGE_NOACCESS, eTaskCritical) [warming up]");
        HRESULT hr = IHostMemoryManager_VirtualAlloc(r->host, NULL, HM_MODEL_GRANULE, MEM_RESERVE, PAGE_NOACCESS,
                                                     eTaskCritical, &p);
        if (hr == S_OK && !was_injected(r)) {
            note_call(r, "VirtualFree(%p, 0, MEM_RELEASE) [warming up]", p);
            if (IHostMemoryManager_VirtualFree(r->host, p, 0, MEM_RELEASE) != S_OK && !was_injected(r))
                mismatch(r, "could not release the reservation it just made");
        }
    }
    for (unsigned op = 0; status == 0 && op < MAX_OPS && r->left && !r->failed; op++) {
        switch (take8(r) % 24) {
        case 0: case 1: case 2: case 3: case 4: op_virtual_alloc(r); break;
        case 5: case 6: op_virtual_free(r); break;
        case 7: case 8: op_virtual_protect(r); break;
        case 9: case 10: op_virtual_query(r); break;
        case 11: case 12: op_write(r); break;
        case 13: op_create_heap(r); break;
        case 14: case 15: op_heap_alloc(r, false); break;
        case 16: op_heap_alloc(r, true); break;
        case 17: case 18: op_heap_free(r); break;
        case 19: op_heap_bad_free(r); break;
        case 20: op_memory_load(r); break;
        case 21: op_register_callback(r); break;
        case 22: op_ledger(r); break;
        default: {
            uint8_t k = take8(r);
            if (k & 1)
                op_query_interface(r);
            else if (k >= 0xf0) /* carved out of verify_all's share, so most earlier seeds decode as they did */
                op_pressure(r);
            else
                verify_all(r);
            break;
        }
        }
        check_callback_findings(r);
    }
    while (status == 0 && !r->failed && r->nballast) {
        size_t before = r->nballast;
        release_ballast(r);
        check_callback_findings(r);
        if (r->nballast == before)
            break; /* an injected failure: the host keeps it until its last Release */
    }
    if (status == 0 && !r->failed) {
        verify_all(r);
        op_heap_check(r);
        check_callback_findings(r);
        if (!r->failed)
            check_refcounts(r, (IUnknown *)r->bare, "the manager");
    }
    atomic_store(&r->closing, true);
    /* Teardown: heaps, then the manager; then every callback must have been let go. */
    for (int i = 0; i < HM_MODEL_MAX_HEAPS; i++)
        if (r->heap[i])
            IHostMalloc_Release(r->heap[i]);
    if (r->host)
        IHostMemoryManager_Release(r->host);
    if (!r->config->host_library)
        builtin_reset(); /* releases the callbacks, as the last Release would */
    for (int i = 0; i < r->ncallbacks && status == 0; i++)
        if (atomic_load(&r->callback[i].refs) != 1 && !r->failed) {
            r->current = "the manager's last Release";
            mismatch(r, "the host still holds %d reference(s) to callback %d after its last Release",
                     atomic_load(&r->callback[i].refs) - 1, i);
        }
    if (outcome)
        *outcome = (hm_fuzz_outcome){r->calls, r->skipped, r->failed};
    hm__model_clear(&r->model);
    return status;
}

bool hm__fuzz_env_flag(const char *name)
{
    const char *v = getenv(name);
    return v && *v && strcmp(v, "0") != 0;
}

int hm__fuzz_config_from_env(hm_fuzz_config *config, FILE *report)
{
    const char *host = getenv("HOSTMEM_FUZZ_HOST");
    config->host_library = host && *host ? host : NULL;
    config->host_options = getenv("HOSTMEM_FUZZ_HOST_OPTIONS");
    const char *trace = getenv("HOSTMEM_FUZZ_TRACE");
    config->trace_path = trace && *trace ? trace : NULL;
    config->fresh_manager = hm__fuzz_env_flag("HOSTMEM_FUZZ_FRESH");
    config->verbose = hm__fuzz_env_flag("HOSTMEM_FUZZ_VERBOSE");
    config->strict_codes = hm__fuzz_env_flag("HOSTMEM_FUZZ_STRICT");
    const char *seconds = getenv("HOSTMEM_FUZZ_CALLBACK_SECONDS");
    config->callback_seconds = 0;
    if (seconds && *seconds) {
        char *end;
        errno = 0;
        double v = strtod(seconds, &end);
        if (errno || *end || !(v > 0 && v <= 86400)) {
            fprintf(report, "hostmem fuzz: configuration error: HOSTMEM_FUZZ_CALLBACK_SECONDS='%s' is not a number "
                            "of seconds from 0 (excluded) to 86400\n", seconds);
            return -1;
        }
        config->callback_seconds = v;
    }

    IHostMemoryManager *m = NULL;
    HRESULT hr;
    if (config->host_library) {
        char err[1024];
        hr = hm__host_open(config->host_library, config->host_options ? config->host_options : "", &m, err, sizeof err);
        if (FAILED(hr)) {
            fprintf(report, "hostmem fuzz: configuration error: HOSTMEM_FUZZ_HOST='%s' is not a usable host plugin: %s\n",
                    config->host_library, err);
            return -1;
        }
    } else {
        hr = HostMemCreateBuiltinManager(builtin_options(config), &m);
    }
    if (FAILED(hr) || !m) {
        fprintf(report, "hostmem fuzz: configuration error: the %s host refused HOSTMEM_FUZZ_HOST_OPTIONS='%s': %s%s%s\n",
                config->host_library ? config->host_library : "built-in",
                config->host_options ? config->host_options : "", hm_hr_name(hr),
                config->host_library ? "" : ": ", config->host_library ? "" : HostMemLastError());
        return -1;
    }
    IHostMemoryManager_Release(m);
    if (config->trace_path) { /* created now, as each run will; not truncated here */
        int fd = open(config->trace_path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) {
            fprintf(report, "hostmem fuzz: configuration error: HOSTMEM_FUZZ_TRACE='%s' cannot be created: %s\n",
                    config->trace_path, strerror(errno));
            return -1;
        }
        close(fd);
        /* Each input's calls replace the last input's: the recorder may overwrite the file (its spec's suffix). */
        static char spec[4200];
        size_t len = strlen(config->trace_path);
        if (len < 10 || strcmp(config->trace_path + len - 10, ",overwrite") != 0) {
            snprintf(spec, sizeof spec, "%s,overwrite", config->trace_path);
            config->trace_path = spec;
        }
    }
    return 0;
}

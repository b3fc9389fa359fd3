/* Options of the built-in manager (documented in docs/options.md; keep the table below and that page in step). */
#include "internal.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef enum { OPT_BOOL, OPT_SIZE, OPT_ADDRESS, OPT_PERCENT, OPT_BACKEND, OPT_ZERO } option_kind;

/* Options that name one of two choices: their words for false and true, and what a bad value is told. */
static const struct {
    const char *word[2], *expectation;
} choices[] = {
    [OPT_BACKEND] = {{"os", "sim"}, "os or sim"},
    [OPT_ZERO] = {{"all", "heaps"}, "all or heaps"},
};

typedef struct option_desc {
    const char *key;
    option_kind kind;
    size_t offset;
    const char *default_text;
    const char *help;
} option_desc;

#define FIELD(f) offsetof(hm_options, f)
static const option_desc option_table[] = {
    {"backend", OPT_BACKEND, FIELD(sim), "os",
     "os: real protections (mmap/mprotect); sim: protections are bookkeeping only (fast, for fuzzing and replay)"},
    {"deterministic", OPT_BOOL, FIELD(deterministic), "0",
     "1: the same calls give the same addresses on every run (spans at a fixed base, in order)"},
    {"base", OPT_ADDRESS, FIELD(base), "0",
     "address of the first span (implies deterministic placement); 0: 0x7e9000000000 when deterministic"},
    {"span", OPT_SIZE, FIELD(span), "16G", "address space reserved from the OS at a time, carved into reservations"},
    {"limit", OPT_SIZE, FIELD(limit), "0", "commit budget in bytes (K/M/G); 0: the cgroup's limit or physical memory"},
    {"reserve.process", OPT_SIZE, FIELD(reserve_process), "limit/32",
     "the last part of the budget, usable only by eProcessCritical requests"},
    {"reserve.appdomain", OPT_SIZE, FIELD(reserve_appdomain), "limit/32",
     "the part below it that eAppDomainCritical requests may use and eTaskCritical ones may not"},
    {"notify.low", OPT_PERCENT, FIELD(notify_low), "90", "memory load (%) at which eMemoryAvailableLow is sent"},
    {"notify.high", OPT_PERCENT, FIELD(notify_high), "50", "memory load (%) at or below which eMemoryAvailableHigh is sent"},
    {"notify.hysteresis", OPT_PERCENT, FIELD(notify_hysteresis), "5",
     "points the load must move back past a threshold before the state changes again"},
    {"zero", OPT_ZERO, FIELD(zero_heaps_only), "all",
     "all: decommitted pages read as zero when committed again; heaps (backend=sim only): only the pages of "
     "hostmem's own heaps are cleared, for callers that never touch what they commit (replays)"},
};
#define OPTION_COUNT (sizeof option_table / sizeof option_table[0])

/* The manager's sizes: decimal, 0x hex, K/M/G/T with an optional B ("64KB"), as docs/options.md says. */
static bool parse_size(const char *v, size_t n, uint64_t *out)
{
    return hm__parse_size(v, n, HM_SIZE_RADIX | HM_SIZE_KMG | HM_SIZE_T | HM_SIZE_BYTES, out) == HM_SIZE_OK;
}

static bool parse_bool(const char *v, size_t n, bool *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"}, *const no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strlen(yes[i]) == n && strncasecmp(v, yes[i], n) == 0)
            return *out = true, true;
        if (strlen(no[i]) == n && strncasecmp(v, no[i], n) == 0)
            return *out = false, true;
    }
    return false;
}

static const char *expectation(const option_desc *d)
{
    switch (d->kind) {
    case OPT_BOOL: return "0 or 1";
    case OPT_SIZE: return "a size such as 4096, 64K, 512M or 2G";
    case OPT_ADDRESS: return "an address such as 0x7e9000000000, a multiple of 64 KiB";
    case OPT_PERCENT: return "a percentage from 0 to 100";
    case OPT_BACKEND:
    case OPT_ZERO: return choices[d->kind].expectation;
    }
    return "?";
}

static bool apply(const option_desc *d, const char *v, size_t n, hm_options *o)
{
    char *field = (char *)o + d->offset;
    uint64_t x;
    bool b;
    switch (d->kind) {
    case OPT_BOOL:
        if (!parse_bool(v, n, &b))
            return false;
        *(bool *)field = b;
        return true;
    case OPT_SIZE:
        if (!parse_size(v, n, &x))
            return false;
        *(uint64_t *)field = x;
        return true;
    case OPT_ADDRESS:
        if (!parse_size(v, n, &x) || x % 0x10000 != 0 || x >= 0x7ffffffff000ull)
            return false;
        *(uint64_t *)field = x;
        return true;
    case OPT_PERCENT:
        if (!parse_size(v, n, &x) || x > 100)
            return false;
        *(unsigned *)field = (unsigned)x;
        return true;
    case OPT_BACKEND:
    case OPT_ZERO:
        for (int k = 0; k < 2; k++) {
            const char *word = choices[d->kind].word[k];
            if (strlen(word) == n && strncmp(v, word, n) == 0) {
                *(bool *)field = k == 1;
                return true;
            }
        }
        return false;
    }
    return false;
}

static void trim(const char **s, size_t *n)
{
    while (*n && isspace((unsigned char)**s))
        (*s)++, (*n)--;
    while (*n && isspace((unsigned char)(*s)[*n - 1]))
        (*n)--;
}

HRESULT hm__options_parse(const char *text, hm_options *out)
{
    memset(out, 0, sizeof *out);
    out->notify_low = 90;
    out->notify_high = 50;
    out->notify_hysteresis = 5;
    if (!text)
        return S_OK;
    const char *p = text;
    while (*p) {
        const char *item = p;
        size_t n = strcspn(p, ",");
        p += n;
        if (*p == ',')
            p++;
        trim(&item, &n);
        if (n == 0)
            continue; /* tolerate "a=1,,b=2" and a trailing comma */
        const char *eq = memchr(item, '=', n);
        if (!eq) {
            hm__set_error("option '%.*s': expected key=value", (int)n, item);
            return E_INVALIDARG;
        }
        const char *key = item, *value = eq + 1;
        size_t klen = (size_t)(eq - item), vlen = n - klen - 1;
        trim(&key, &klen);
        trim(&value, &vlen);
        const option_desc *d = NULL;
        for (size_t i = 0; i < OPTION_COUNT; i++)
            if (strlen(option_table[i].key) == klen && strncmp(option_table[i].key, key, klen) == 0)
                d = &option_table[i];
        if (!d) {
            hm__set_error("unknown option '%.*s' (known: backend, deterministic, base, span, limit, reserve.process, "
                         "reserve.appdomain, notify.low, notify.high, notify.hysteresis, zero)",
                         (int)klen, key);
            return E_INVALIDARG;
        }
        if (!apply(d, value, vlen, out)) {
            hm__set_error("option '%s': bad value '%.*s' (expected %s)", d->key, (int)vlen, value,
                         expectation(d));
            return E_INVALIDARG;
        }
    }
    if (out->zero_heaps_only && !out->sim) {
        /* The os backend's decommit is what takes the pages' access away: it cannot be skipped. */
        hm__set_error("option 'zero=heaps' needs backend=sim");
        return E_INVALIDARG;
    }
    if (out->notify_high >= out->notify_low) {
        hm__set_error("options notify.high (%u) and notify.low (%u): high must be below low", out->notify_high,
                     out->notify_low);
        return E_INVALIDARG;
    }
    return S_OK;
}

static char help_text[4096];

static void build_help(void)
{
    size_t at = 0;
    for (size_t i = 0; i < OPTION_COUNT && at < sizeof help_text; i++)
        at += (size_t)snprintf(help_text + at, sizeof help_text - at, "  %-18s default %-9s %s\n",
                               option_table[i].key, option_table[i].default_text, option_table[i].help);
}

HM_API const char *HostMemOptionsHelp(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, build_help);
    return help_text;
}

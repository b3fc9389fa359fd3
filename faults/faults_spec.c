/* The fault-spec parser: hand-written, so every error can point at its column and say what was expected. */
#include "faults_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct parser {
    const char *spec;
    const char *p;
    char *err;
    size_t errlen;
} parser;

static HRESULT fail_at(parser *ps, const char *where, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static HRESULT fail_at(parser *ps, const char *where, const char *fmt, ...)
{
    char what[480]; /* the longest, the list of methods, whole */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (ps->err && ps->errlen)
        snprintf(ps->err, ps->errlen, "fault spec: column %d: %s", (int)(where - ps->spec) + 1, what);
    return E_INVALIDARG;
}

/* The extent of the current token: up to ',', ';', '=' or the end. */
static size_t token_length(const char *p)
{
    return strcspn(p, ",;=");
}

static bool word_is(const char *p, size_t n, const char *word)
{
    return strlen(word) == n && strncasecmp(p, word, n) == 0;
}

/* Decimal, 0x hex; with allow_suffix also K/M/G/T (sizes: docs/faults.md). */
static bool parse_u64(const char *p, size_t n, uint64_t *out, bool allow_suffix)
{
    unsigned flags = HM_SIZE_RADIX | (allow_suffix ? HM_SIZE_KMG | HM_SIZE_T : 0);
    return hm__parse_size(p, n, flags, out) == HM_SIZE_OK;
}

/* "A-B", "A-", "-B" or "A". */
static bool parse_range(const char *p, size_t n, uint64_t *lo, uint64_t *hi, bool suffixes)
{
    const char *dash = memchr(p, '-', n);
    if (!dash)
        return parse_u64(p, n, lo, suffixes) && (*hi = *lo, true);
    size_t left = (size_t)(dash - p), right = n - left - 1;
    *lo = 0;
    *hi = UINT64_MAX;
    if (left && !parse_u64(p, left, lo, suffixes))
        return false;
    if (right && !parse_u64(dash + 1, right, hi, suffixes))
        return false;
    return (left || right) && *lo <= *hi;
}

/* A '|'-separated list of names, each mapped to a bit by fn (returns -1 for unknown). */
static HRESULT parse_set(parser *ps, const char *p, size_t n, int (*fn)(const char *, size_t), uint32_t *out,
                         const char *expected)
{
    uint32_t bits = 0;
    const char *end = p + n;
    while (p <= end) {
        const char *bar = memchr(p, '|', (size_t)(end - p));
        const char *item_end = bar ? bar : end;
        int bit = fn(p, (size_t)(item_end - p));
        if (bit < 0)
            return fail_at(ps, p, "unknown value '%.*s' (expected %s)", (int)(item_end - p), p, expected);
        bits |= 1u << bit;
        if (!bar)
            break;
        p = bar + 1;
    }
    *out = bits;
    return S_OK;
}

static int level_bit(const char *p, size_t n)
{
    if (word_is(p, n, "task") || word_is(p, n, "eTaskCritical"))
        return eTaskCritical;
    if (word_is(p, n, "appdomain") || word_is(p, n, "eAppDomainCritical"))
        return eAppDomainCritical;
    if (word_is(p, n, "process") || word_is(p, n, "eProcessCritical"))
        return eProcessCritical;
    return -1;
}

static int op_bit(const char *p, size_t n)
{
    if (word_is(p, n, "reserve"))
        return 0;
    if (word_is(p, n, "commit"))
        return 1;
    if (word_is(p, n, "reset"))
        return 2;
    return -1;
}

static int method_bit(const char *p, size_t n)
{
    hm_method m = hm_method_parse(p, n);
    return m == HM_METHOD_COUNT ? -1 : (int)m;
}

#define ALL_METHODS ((1u << HM_METHOD_COUNT) - 1)
#define HEAP_METHODS ((1u << HM_METHOD_HEAP_ALLOC) | (1u << HM_METHOD_HEAP_DEBUG_ALLOC))

static HRESULT parse_target(parser *ps, const char *p, size_t n, fault_rule *r)
{
    if (n == 0)
        return fail_at(ps, p, "missing target (expected a method such as VirtualAlloc, 'heap', 'any' or 'pressure')");
    if (word_is(p, n, "any") || word_is(p, n, "*")) {
        r->methods = ALL_METHODS;
        return S_OK;
    }
    if (word_is(p, n, "heap")) {
        r->methods = HEAP_METHODS;
        return S_OK;
    }
    if (word_is(p, n, "pressure")) {
        r->pressure = true;
        return S_OK;
    }
    /* 'heap' may also appear inside a list: "VirtualAlloc|heap". */
    uint32_t bits = 0;
    const char *end = p + n;
    while (p <= end) {
        const char *bar = memchr(p, '|', (size_t)(end - p));
        const char *item_end = bar ? bar : end;
        size_t len = (size_t)(item_end - p);
        if (word_is(p, len, "heap"))
            bits |= HEAP_METHODS;
        else if (method_bit(p, len) >= 0)
            bits |= 1u << method_bit(p, len);
        else
            return fail_at(ps, p,
                           "unknown method '%.*s' (expected VirtualAlloc, VirtualFree, VirtualQuery, VirtualProtect, "
                           "GetMemoryLoad, CreateMalloc, RegisterMemoryNotificationCallback, "
                           "NeedsVirtualAddressSpace, AcquiredVirtualAddressSpace, ReleasedVirtualAddressSpace, "
                           "Alloc, DebugAlloc, Free, heap, any or pressure)",
                           (int)len, p);
        if (!bar)
            break;
        p = bar + 1;
    }
    r->methods = bits;
    return S_OK;
}

static const char *const key_list =
    "level, op, size, addr, nth, every, after, after-bytes, call, times, probability, seed, return, load, "
    "available, notify";

static HRESULT parse_key(parser *ps, const char *key, size_t klen, const char *v, size_t vlen, fault_rule *r)
{
    uint64_t x;
    if (word_is(key, klen, "level"))
        return parse_set(ps, v, vlen, level_bit, &r->levels, "task, appdomain or process, joined with '|'");
    if (word_is(key, klen, "op"))
        return parse_set(ps, v, vlen, op_bit, &r->ops, "reserve, commit or reset, joined with '|'");
    if (word_is(key, klen, "size")) {
        if (!parse_range(v, vlen, &r->size_min, &r->size_max, true))
            return fail_at(ps, v, "bad size '%.*s' (expected A-B, A-, -B or A, numbers with optional K, M or G)",
                           (int)vlen, v);
        r->has_size = true;
        return S_OK;
    }
    if (word_is(key, klen, "addr")) {
        if (!parse_range(v, vlen, &r->addr_min, &r->addr_max, false))
            return fail_at(ps, v, "bad address range '%.*s' (expected A-B, A-, -B or A, e.g. 0x7f0000000000-)",
                           (int)vlen, v);
        r->has_addr = true;
        return S_OK;
    }
    struct {
        const char *name;
        uint64_t *field;
        bool *flag;
        bool positive;
        bool suffix;
    } numbers[] = {
        {"nth", &r->nth, NULL, true, false},         {"every", &r->every, NULL, true, false},
        {"call", &r->call, NULL, true, false},       {"after", &r->after, &r->has_after, false, false},
        {"after-bytes", &r->after_bytes, &r->has_after_bytes, false, true},
        {"times", &r->times, &r->has_times, false, false}, {"seed", &r->seed, NULL, false, false},
        {"available", &r->available, &r->has_available, false, true},
    };
    for (size_t i = 0; i < sizeof numbers / sizeof numbers[0]; i++) {
        if (!word_is(key, klen, numbers[i].name))
            continue;
        if (!parse_u64(v, vlen, &x, numbers[i].suffix) || (numbers[i].positive && x == 0))
            return fail_at(ps, v, "bad %s '%.*s' (expected a %s number%s)", numbers[i].name, (int)vlen, v,
                           numbers[i].positive ? "positive" : "non-negative",
                           numbers[i].suffix ? " with optional K, M or G" : "");
        *numbers[i].field = x;
        if (numbers[i].flag)
            *numbers[i].flag = true;
        return S_OK;
    }
    if (word_is(key, klen, "probability") || word_is(key, klen, "p")) {
        char buf[32];
        if (vlen == 0 || vlen >= sizeof buf)
            return fail_at(ps, v, "bad probability '%.*s' (expected 0.01 or 1%%)", (int)vlen, v);
        memcpy(buf, v, vlen);
        buf[vlen] = '\0';
        char *end;
        double d = strtod(buf, &end);
        if (end == buf) /* no number at all: "%" alone is not 0% */
            return fail_at(ps, v, "bad probability '%.*s' (expected a number from 0 to 1, or a percentage)",
                           (int)vlen, v);
        if (*end == '%') {
            d /= 100;
            end++;
        }
        if (end == buf || *end || !(d >= 0 && d <= 1))
            return fail_at(ps, v, "bad probability '%.*s' (expected a number from 0 to 1, or a percentage)",
                           (int)vlen, v);
        r->probability = d;
        r->has_probability = true;
        return S_OK;
    }
    if (word_is(key, klen, "return")) {
        HRESULT hr;
        if (hm_hr_parse(v, vlen, &hr) != 0)
            return fail_at(ps, v, "bad HRESULT '%.*s' (expected a name such as E_OUTOFMEMORY or HOST_E_TIMEOUT, or a "
                                  "number such as 0x8007000E)",
                           (int)vlen, v);
        if (SUCCEEDED(hr)) /* the call would "fail" with success: nothing fails, yet it counts as injected */
            return fail_at(ps, v, "bad return '%.*s': a fault must make the call fail, and %s is a success code "
                                  "(expected a failure HRESULT such as E_OUTOFMEMORY or HOST_E_TIMEOUT)",
                           (int)vlen, v, hm_hr_name(hr));
        r->result = hr;
        return S_OK;
    }
    if (word_is(key, klen, "load")) {
        if (!parse_u64(v, vlen, &x, false) || x > 100)
            return fail_at(ps, v, "bad load '%.*s' (expected a percentage from 0 to 100)", (int)vlen, v);
        r->load = (int)x;
        return S_OK;
    }
    if (word_is(key, klen, "notify")) {
        if (word_is(v, vlen, "low"))
            r->notify = eMemoryAvailableLow;
        else if (word_is(v, vlen, "neutral"))
            r->notify = eMemoryAvailableNeutral;
        else if (word_is(v, vlen, "high"))
            r->notify = eMemoryAvailableHigh;
        else
            return fail_at(ps, v, "bad notification '%.*s' (expected low, neutral or high)", (int)vlen, v);
        return S_OK;
    }
    return fail_at(ps, key, "unknown key '%.*s' (expected one of: %s)", (int)klen, key, key_list);
}

static HRESULT parse_rule(parser *ps, fault_rule *r)
{
    memset(r, 0, sizeof *r);
    r->result = E_OUTOFMEMORY;
    r->load = -1;
    r->seed = 1;
    while (*ps->p == ' ')
        ps->p++;
    size_t n = token_length(ps->p);
    const char *target = ps->p;
    size_t tlen = n;
    while (tlen && target[tlen - 1] == ' ')
        tlen--;
    if (target[n] == '=')
        return fail_at(ps, target, "rule starts with '%.*s=': expected a target first (a method, 'heap', 'any' or "
                                   "'pressure')",
                       (int)n, target);
    HRESULT hr = parse_target(ps, target, tlen, r);
    if (FAILED(hr))
        return hr;
    ps->p += n;
    while (*ps->p == ',') {
        ps->p++;
        while (*ps->p == ' ')
            ps->p++;
        const char *key = ps->p;
        size_t klen = token_length(key);
        if (key[klen] != '=')
            return fail_at(ps, key + klen, "expected '=' after '%.*s'", (int)klen, key);
        const char *value = key + klen + 1;
        while (*value == ' ')
            value++;
        size_t vlen = strcspn(value, ",;");
        size_t kl = klen, vl = vlen;
        while (kl && key[kl - 1] == ' ')
            kl--;
        while (vl && value[vl - 1] == ' ')
            vl--;
        if (vl == 0)
            return fail_at(ps, value, "missing value for '%.*s'", (int)kl, key);
        hr = parse_key(ps, key, kl, value, vl, r);
        if (FAILED(hr))
            return hr;
        ps->p = value + vlen;
    }
    if (*ps->p && *ps->p != ';')
        return fail_at(ps, ps->p, "unexpected '%c' (expected ',' or ';')", *ps->p);
    if (r->pressure && r->load < 0 && !r->notify)
        return fail_at(ps, target, "a pressure rule needs load= or notify=");
    if (!r->pressure && (r->load >= 0 || r->notify || r->has_available))
        return fail_at(ps, target, "load=, available= and notify= belong to 'pressure' rules");
    if (r->ops && !(r->methods & (1u << HM_METHOD_VIRTUAL_ALLOC)))
        return fail_at(ps, target, "op= only applies to VirtualAlloc");
    r->rng = r->seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
    return S_OK;
}

HRESULT hm__fault_spec_parse(const char *spec, fault_rule **rules, size_t *count, char *err, size_t errlen)
{
    *rules = NULL;
    *count = 0;
    if (err && errlen)
        err[0] = '\0';
    if (!spec)
        return S_OK;
    parser ps = {spec, spec, err, errlen};
    size_t cap = 0;
    fault_rule *list = NULL;
    while (*ps.p) {
        const char *start = ps.p;
        while (*start == ' ')
            start++;
        if (*start == ';' || *start == '\0') { /* an empty rule: "a;;b" or a trailing ';' */
            ps.p = *start ? start + 1 : start;
            continue;
        }
        if (*count == cap) {
            cap = cap ? cap * 2 : 4;
            fault_rule *grown = realloc(list, cap * sizeof *grown);
            if (!grown) {
                free(list);
                return E_OUTOFMEMORY;
            }
            list = grown;
        }
        HRESULT hr = parse_rule(&ps, &list[*count]);
        if (FAILED(hr)) {
            free(list);
            *count = 0;
            return hr;
        }
        (*count)++;
        if (*ps.p == ';')
            ps.p++;
    }
    *rules = list;
    return S_OK;
}

void hm__fault_rule_filters(const fault_rule *r, char *out, size_t outlen)
{
    size_t at = 0;
#define APPEND(...) (at += (size_t)snprintf(out + at, at < outlen ? outlen - at : 0, __VA_ARGS__))
    if (r->pressure) {
        APPEND("pressure");
    } else if (r->methods == ALL_METHODS) {
        APPEND("any");
    } else {
        const char *sep = "";
        for (int m = 0; m < HM_METHOD_COUNT; m++)
            if (r->methods & (1u << m)) {
                APPEND("%s%s", sep, hm_method_name((hm_method)m));
                sep = "|";
            }
    }
    if (r->levels) {
        const char *sep = ",level=";
        for (int l = 0; l < 3; l++)
            if (r->levels & (1u << l)) {
                APPEND("%s%s", sep, hm_level_short((EMemoryCriticalLevel)l));
                sep = "|";
            }
    }
    if (r->ops) {
        static const char *const names[] = {"reserve", "commit", "reset"};
        const char *sep = ",op=";
        for (int o = 0; o < 3; o++)
            if (r->ops & (1u << o)) {
                APPEND("%s%s", sep, names[o]);
                sep = "|";
            }
    }
    if (r->has_size) {
        APPEND(",size=%llu-", (unsigned long long)r->size_min);
        if (r->size_max != UINT64_MAX)
            APPEND("%llu", (unsigned long long)r->size_max);
    }
    if (r->has_addr) {
        APPEND(",addr=%#llx-", (unsigned long long)r->addr_min);
        if (r->addr_max != UINT64_MAX)
            APPEND("%#llx", (unsigned long long)r->addr_max);
    }
#undef APPEND
}

/* The recording's environment in a trace's header: one "#! KEY: VALUE" line per field, in every encoding, checked
 * the same way when written and when read (trace_internal.h). */
#include "trace_internal.h"

#include <stdarg.h>
#include <stdlib.h>

static const struct {
    const char *key;
    size_t offset;
} fields[HM_TRACE_ENV_FIELDS] = {
    {"version", offsetof(hm_trace_env, version)},
    {"host", offsetof(hm_trace_env, host)},
    {"host-path", offsetof(hm_trace_env, host_path)},
    {"host-options", offsetof(hm_trace_env, host_options)},
    {"faults", offsetof(hm_trace_env, faults)},
    {"time", offsetof(hm_trace_env, time)},
    {"os", offsetof(hm_trace_env, os)},
    {"pid", offsetof(hm_trace_env, pid)},
};
_Static_assert(sizeof(hm_trace_env) == HM_TRACE_ENV_FIELDS * sizeof(const char *), "one entry per field");

enum { FIELD_TIME = 5, FIELD_OS = 6, FIELD_PID = 7 };

const char *hm__trace_env_key(int field) { return field >= 0 && field < HM_TRACE_ENV_FIELDS ? fields[field].key : NULL; }

const char **hm__trace_env_field(hm_trace_env *env, int field)
{
    return (const char **)(void *)((char *)env + fields[field].offset);
}

const char *hm__trace_env_get(const hm_trace_env *env, int field)
{
    return *(const char *const *)(const void *)((const char *)env + fields[field].offset);
}

static void refresh_view(hm_trace_env_store *store)
{
    for (int i = 0; i < HM_TRACE_ENV_FIELDS; i++)
        *hm__trace_env_field(&store->view, i) = store->values[i] ? store->values[i] : "";
}

void hm__trace_env_store_init(hm_trace_env_store *store)
{
    memset(store->values, 0, sizeof store->values);
    refresh_view(store);
}

void hm__trace_env_store_free(hm_trace_env_store *store)
{
    for (int i = 0; i < HM_TRACE_ENV_FIELDS; i++)
        free(store->values[i]);
    hm__trace_env_store_init(store);
}

static int env_fail(char *err, size_t errlen, int field, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int env_fail(char *err, size_t errlen, int field, const char *fmt, ...)
{
    int n = snprintf(err, errlen, "field '%s': ", fields[field].key);
    if (n > 0 && (size_t)n < errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

int hm__trace_env_check(int field, const char *value, size_t len, char *err, size_t errlen)
{
    if (len > HM_TRACE_ENV_VALUE_MAX)
        return env_fail(err, errlen, field, "longer than %d bytes", HM_TRACE_ENV_VALUE_MAX);
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)value[i] < 0x20 || value[i] == 0x7f)
            return env_fail(err, errlen, field, "control character 0x%02x in the value", (unsigned char)value[i]);
    if (field == FIELD_TIME && len) {
        static const char shape[] = "DDDD-DD-DDTDD:DD:DDZ";
        bool ok = len == sizeof shape - 1;
        for (size_t i = 0; ok && i < len; i++)
            ok = shape[i] == 'D' ? is_digit(value[i]) : shape[i] == value[i];
        if (!ok)
            return env_fail(err, errlen, field, "bad time %s (UTC as 2026-12-07T15:41:28Z)", HM_TRACE_SHOW(value, len));
    } else if (field == FIELD_PID && len) {
        bool ok = len <= 10;
        for (size_t i = 0; ok && i < len; i++)
            ok = is_digit(value[i]);
        if (!ok)
            return env_fail(err, errlen, field, "bad process id %s (decimal, at most 10 digits)",
                            HM_TRACE_SHOW(value, len));
    } else if (field == FIELD_OS && len) {
        bool ok = len <= 32;
        for (size_t i = 0; ok && i < len; i++)
            ok = (value[i] >= 'a' && value[i] <= 'z') || is_digit(value[i]) || value[i] == '_';
        if (!ok)
            return env_fail(err, errlen, field, "bad OS name %s (lower-case letters and digits)",
                            HM_TRACE_SHOW(value, len));
    }
    return 0;
}

int hm__trace_env_parse_line(hm_trace_env_store *store, const char *line, size_t len, char *err, size_t errlen)
{
    size_t plen = strlen(HM_TRACE_ENV_PREFIX);
    if (len < plen || memcmp(line, HM_TRACE_ENV_PREFIX, plen) != 0)
        return 0;
    for (int i = 0; i < HM_TRACE_ENV_FIELDS; i++) {
        size_t klen = strlen(fields[i].key);
        if (len - plen < klen + 1 || memcmp(line + plen, fields[i].key, klen) != 0 || line[plen + klen] != ':')
            continue;
        /* "KEY:" then one space before the value (none when the value is empty). */
        size_t at = plen + klen + 1;
        if (at < len && line[at] == ' ')
            at++;
        if (store->values[i])
            return env_fail(err, errlen, i, "given twice in the header");
        if (hm__trace_env_check(i, line + at, len - at, err, errlen) != 0)
            return -1;
        if (!(store->values[i] = malloc(len - at + 1))) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        memcpy(store->values[i], line + at, len - at);
        store->values[i][len - at] = '\0';
        refresh_view(store);
        return 1;
    }
    return 0; /* "#! incomplete: ...", or a field a later hostmem added: a comment */
}

int hm__trace_env_parse_block(hm_trace_env_store *store, const char *block, size_t len, char *err, size_t errlen)
{
    const char *nul = memchr(block, '\0', len);
    if (nul)
        len = (size_t)(nul - block);
    const char *p = block, *end = block + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) {
            snprintf(err, errlen, "field 'env': the environment's last line has no newline");
            return -1;
        }
        int got = hm__trace_env_parse_line(store, p, (size_t)(nl - p), err, errlen);
        if (got < 0)
            return -1;
        /* An unknown "#! KEY: VALUE" is a field a later hostmem added; anything else does not belong here. */
        if (got == 0 && ((size_t)(nl - p) < strlen(HM_TRACE_ENV_PREFIX) ||
                         memcmp(p, HM_TRACE_ENV_PREFIX, strlen(HM_TRACE_ENV_PREFIX)) != 0)) {
            snprintf(err, errlen, "field 'env': %s is not a line of the environment",
                     HM_TRACE_SHOW(p, (size_t)(nl - p)));
            return -1;
        }
        p = nl + 1;
    }
    return 0;
}

char *hm__trace_env_format(const hm_trace_env *env, size_t *len, char *err, size_t errlen)
{
    size_t cap = 1;
    for (int i = 0; i < HM_TRACE_ENV_FIELDS; i++) {
        const char *v = env ? hm__trace_env_get(env, i) : NULL;
        if (!v || !*v)
            continue;
        if (hm__trace_env_check(i, v, strlen(v), err, errlen) != 0)
            return NULL;
        cap += strlen(HM_TRACE_ENV_PREFIX) + strlen(fields[i].key) + 2 + strlen(v) + 1;
    }
    char *out = malloc(cap);
    if (!out) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    size_t n = 0;
    out[0] = '\0';
    for (int i = 0; i < HM_TRACE_ENV_FIELDS; i++) {
        const char *v = env ? hm__trace_env_get(env, i) : NULL;
        if (v && *v)
            n += (size_t)snprintf(out + n, cap - n, "%s%s: %s\n", HM_TRACE_ENV_PREFIX, fields[i].key, v);
    }
    *len = n;
    return out;
}

bool hm__trace_env_copy(const hm_trace_env *env, hm_trace_env *out)
{
    memset(out, 0, sizeof *out);
    for (int i = 0; i < HM_TRACE_ENV_FIELDS; i++) {
        const char *v = hm__trace_env_get(env, i);
        if (v && *v && !(*hm__trace_env_field(out, i) = strdup(v))) {
            hm__trace_env_free_copy(out);
            return false;
        }
    }
    return true;
}

void hm__trace_env_free_copy(hm_trace_env *env)
{
    for (int i = 0; i < HM_TRACE_ENV_FIELDS; i++) {
        free((void *)(uintptr_t)*hm__trace_env_field(env, i));
        *hm__trace_env_field(env, i) = NULL;
    }
}

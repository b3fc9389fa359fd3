/* The call model of traces: which fields each method has, and one call as a text line or a binary record.
 *
 * One table (method_fields) drives the text writer, the text parser and both directions of the binary
 * encoding, so the two encodings carry exactly the same information and convert into each other exactly. */
#include "trace_internal.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Names ------------------------------------------------------------------------------------------------ */
HM_API const char *hm_trace_method_name(int method)
{
    if (method >= 0 && method < HM_METHOD_COUNT)
        return hm_method_name((hm_method)method);
    if (method == HM_TRACE_ON_NOTIFICATION)
        return "OnMemoryNotification";
    if (method == HM_TRACE_HEAP_RELEASE)
        return "Release";
    return NULL;
}

static int method_parse(const char *text, size_t len)
{
    hm_method m = hm_method_parse(text, len);
    if (m != HM_METHOD_COUNT)
        return (int)m;
    if (len == 20 && strncmp(text, "OnMemoryNotification", len) == 0)
        return HM_TRACE_ON_NOTIFICATION;
    if (len == 7 && strncmp(text, "Release", len) == 0)
        return HM_TRACE_HEAP_RELEASE;
    return -1;
}

typedef struct flag_name {
    uint32_t value;
    const char *name;
} flag_name;

static const flag_name alloc_type_names[] = {
    {MEM_COMMIT, "MEM_COMMIT"},         {MEM_RESERVE, "MEM_RESERVE"},       {MEM_RESET, "MEM_RESET"},
    {MEM_RESET_UNDO, "MEM_RESET_UNDO"}, {MEM_TOP_DOWN, "MEM_TOP_DOWN"},     {MEM_WRITE_WATCH, "MEM_WRITE_WATCH"},
    {MEM_PHYSICAL, "MEM_PHYSICAL"},     {MEM_LARGE_PAGES, "MEM_LARGE_PAGES"}, {0, NULL}};
static const flag_name free_type_names[] = {{MEM_DECOMMIT, "MEM_DECOMMIT"}, {MEM_RELEASE, "MEM_RELEASE"}, {0, NULL}};
static const flag_name malloc_type_names[] = {
    {MALLOC_THREADSAFE, "MALLOC_THREADSAFE"}, {MALLOC_EXECUTABLE, "MALLOC_EXECUTABLE"}, {0, NULL}};
static const flag_name protect_names[] = {
    {PAGE_NOACCESS, "PAGE_NOACCESS"},
    {PAGE_READONLY, "PAGE_READONLY"},
    {PAGE_READWRITE, "PAGE_READWRITE"},
    {PAGE_WRITECOPY, "PAGE_WRITECOPY"},
    {PAGE_EXECUTE, "PAGE_EXECUTE"},
    {PAGE_EXECUTE_READ, "PAGE_EXECUTE_READ"},
    {PAGE_EXECUTE_READWRITE, "PAGE_EXECUTE_READWRITE"},
    {PAGE_EXECUTE_WRITECOPY, "PAGE_EXECUTE_WRITECOPY"},
    {PAGE_GUARD, "PAGE_GUARD"},
    {PAGE_NOCACHE, "PAGE_NOCACHE"},
    {PAGE_WRITECOMBINE, "PAGE_WRITECOMBINE"},
    {0, NULL}};
static const flag_name state_names[] = {{MEM_COMMIT, "MEM_COMMIT"}, {MEM_RESERVE, "MEM_RESERVE"}, {MEM_FREE, "MEM_FREE"}, {0, NULL}};
static const flag_name mem_type_names[] = {{MEM_PRIVATE, "MEM_PRIVATE"}, {MEM_MAPPED, "MEM_MAPPED"}, {MEM_IMAGE, "MEM_IMAGE"}, {0, NULL}};
static const char *const available_names[] = {NULL, "low", "neutral", "high"};

/* ---- Fields of each method -------------------------------------------------------------------------------- */
typedef enum field_id {
    /* arguments */
    F_ADDR, F_SIZE, F_LENGTH, F_ATYPE, F_FTYPE, F_MTYPE, F_PROT, F_LEVEL, F_HEAP, F_CALLBACK, F_MEMORY, F_FILE,
    F_LINE,
    /* results */
    F_NEWHEAP, F_MEM, F_OLD, F_QRESULT, F_BASE, F_ABASE, F_APROT, F_RSIZE, F_STATE, F_PROTECT, F_MEMTYPE, F_LOAD,
    F_AVAIL, F_CONCURRENT,
    F_END
} field_id;

static const char *const field_keys[F_END] = {
    [F_ADDR] = "addr",       [F_SIZE] = "size",         [F_LENGTH] = "length",   [F_ATYPE] = "type",
    [F_FTYPE] = "type",      [F_MTYPE] = "type",        [F_PROT] = "prot",       [F_LEVEL] = "level",
    [F_HEAP] = "heap",       [F_CALLBACK] = "callback", [F_MEMORY] = "memory",   [F_FILE] = "file",
    [F_LINE] = "line",       [F_NEWHEAP] = "heap",      [F_MEM] = "mem",         [F_OLD] = "old",
    [F_QRESULT] = "result",  [F_BASE] = "base",         [F_ABASE] = "allocbase", [F_APROT] = "allocprot",
    [F_RSIZE] = "regionsize", [F_STATE] = "state",      [F_PROTECT] = "protect", [F_MEMTYPE] = "memtype",
    [F_LOAD] = "load",       [F_AVAIL] = "available",   [F_CONCURRENT] = "concurrent",
};
_Static_assert(F_END <= 32, "a line's fields are tracked in a 32-bit set");

#define MAX_FIELDS 10
typedef struct method_fields {
    signed char args[MAX_FIELDS];    /* field_id, ended by -1 */
    signed char results[MAX_FIELDS];
    const char *out1, *out2;         /* names of the out-parameters that may be NULL */
} method_fields;

static const method_fields fields_of[HM_TRACE_METHOD_COUNT] = {
    [HM_METHOD_CREATE_MALLOC] = {{F_MTYPE, -1}, {F_NEWHEAP, -1}, "ppMalloc", NULL},
    [HM_METHOD_VIRTUAL_ALLOC] = {{F_ADDR, F_SIZE, F_ATYPE, F_PROT, F_LEVEL, -1}, {F_MEM, -1}, "ppMem", NULL},
    [HM_METHOD_VIRTUAL_FREE] = {{F_ADDR, F_SIZE, F_FTYPE, -1}, {-1}, NULL, NULL},
    [HM_METHOD_VIRTUAL_QUERY] = {{F_ADDR, F_LENGTH, -1},
                                 {F_QRESULT, F_BASE, F_ABASE, F_APROT, F_RSIZE, F_STATE, F_PROTECT, F_MEMTYPE,
                                  F_CONCURRENT, -1},
                                 "lpBuffer", "pResult"},
    [HM_METHOD_VIRTUAL_PROTECT] = {{F_ADDR, F_SIZE, F_PROT, -1}, {F_OLD, -1}, "pflOldProtect", NULL},
    [HM_METHOD_GET_MEMORY_LOAD] = {{-1}, {F_LOAD, F_AVAIL, -1}, "pMemoryLoad", "pAvailableBytes"},
    [HM_METHOD_REGISTER_CALLBACK] = {{F_CALLBACK, -1}, {-1}, NULL, NULL},
    [HM_METHOD_NEEDS_VAS] = {{F_ADDR, F_SIZE, -1}, {-1}, NULL, NULL},
    [HM_METHOD_ACQUIRED_VAS] = {{F_ADDR, F_SIZE, -1}, {-1}, NULL, NULL},
    [HM_METHOD_RELEASED_VAS] = {{F_ADDR, -1}, {-1}, NULL, NULL},
    [HM_METHOD_HEAP_ALLOC] = {{F_HEAP, F_SIZE, F_LEVEL, -1}, {F_MEM, -1}, "ppMem", NULL},
    [HM_METHOD_HEAP_DEBUG_ALLOC] = {{F_HEAP, F_SIZE, F_LEVEL, F_FILE, F_LINE, -1}, {F_MEM, -1}, "ppMem", NULL},
    [HM_METHOD_HEAP_FREE] = {{F_HEAP, F_ADDR, -1}, {-1}, NULL, NULL},
    [HM_TRACE_ON_NOTIFICATION] = {{F_CALLBACK, F_MEMORY, -1}, {-1}, NULL, NULL},
    [HM_TRACE_HEAP_RELEASE] = {{F_HEAP, -1}, {-1}, NULL, NULL},
};

/* Which out-parameter a result field comes through: 1, 2, or 0 (always written). */
static unsigned field_out(field_id f)
{
    switch (f) {
    case F_NEWHEAP: case F_MEM: case F_OLD: case F_LOAD: return 1;
    case F_BASE: case F_ABASE: case F_APROT: case F_RSIZE: case F_STATE: case F_PROTECT: case F_MEMTYPE: return 1;
    case F_QRESULT: case F_AVAIL: return 2;
    default: return 0;
    }
}

static bool field_is_mbi(field_id f) { return f >= F_BASE && f <= F_MEMTYPE; }

void hm__trace_call_init(hm_trace_call *call)
{
    memset(call, 0, sizeof *call);
    call->level = -1;
}

bool hm__trace_method_has_level(int method)
{
    return method == HM_METHOD_VIRTUAL_ALLOC || method == HM_METHOD_HEAP_ALLOC || method == HM_METHOD_HEAP_DEBUG_ALLOC;
}

bool hm__trace_is_host_method(int method) { return method >= 0 && method < HM_METHOD_COUNT; }

size_t hm__trace_call_handles(const hm_trace_call *call, hm_trace_handle *uses, hm_trace_handle *created)
{
    size_t n = 0;
    created->kind = 0;
    created->handle = 0;
    if (call->addr.kind != HM_REF_RAW)
        uses[n++] = (hm_trace_handle){call->addr.kind, call->addr.handle};
    if (call->heap && call->method != HM_METHOD_CREATE_MALLOC)
        uses[n++] = (hm_trace_handle){HM_HANDLE_HEAP, call->heap};
    if (call->callback && call->method == HM_TRACE_ON_NOTIFICATION)
        uses[n++] = (hm_trace_handle){HM_HANDLE_CALLBACK, call->callback};
    bool ok = SUCCEEDED(call->result);
    switch (call->method) {
    case HM_METHOD_CREATE_MALLOC:
        if (ok && call->heap)
            *created = (hm_trace_handle){HM_HANDLE_HEAP, call->heap};
        break;
    case HM_METHOD_REGISTER_CALLBACK:
        if (call->callback)
            *created = (hm_trace_handle){HM_HANDLE_CALLBACK, call->callback};
        break;
    case HM_METHOD_VIRTUAL_ALLOC:
    case HM_METHOD_HEAP_ALLOC:
    case HM_METHOD_HEAP_DEBUG_ALLOC:
        if (ok && call->mem.kind != HM_REF_RAW && call->mem.value == 0)
            *created = (hm_trace_handle){call->mem.kind, call->mem.handle};
        break;
    default:
        break;
    }
    return n;
}

/* ---- Writing one line ------------------------------------------------------------------------------------- */
typedef struct out_buf {
    char *p;
    size_t len, used;
} out_buf;

static void put(out_buf *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(out_buf *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t room = o->used < o->len ? o->len - o->used : 0;
    int n = vsnprintf(room ? o->p + o->used : NULL, room, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->used += (size_t)n;
}

/* put() for the common pieces, without a printf: a line is a few dozen of them, and printf's format parsing (under
 * ASan, its interceptor's too) was most of the cost of writing one. The same truncation as vsnprintf. */
static void put_mem(out_buf *o, const char *s, size_t n)
{
    if (o->used < o->len) {
        size_t room = o->len - o->used - 1, k = n < room ? n : room;
        memcpy(o->p + o->used, s, k);
        o->p[o->used + k] = '\0';
    }
    o->used += n;
}

static void put_str(out_buf *o, const char *s) { put_mem(o, s, strlen(s)); }

/* Decimal or lowercase hex, as PRIu64 and PRIx64 print them. */
static void put_u64(out_buf *o, uint64_t v, unsigned base)
{
    char digits[24];
    size_t i = sizeof digits;
    do {
        digits[--i] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    put_mem(o, digits + i, sizeof digits - i);
}

static void put_flags(out_buf *o, uint32_t value, const flag_name *names)
{
    if (value == 0) {
        put_mem(o, "0", 1);
        return;
    }
    const char *sep = "";
    for (const flag_name *f = names; f->name; f++) {
        if ((value & f->value) == f->value) {
            put_str(o, sep);
            put_str(o, f->name);
            value &= ~f->value;
            sep = "|";
        }
    }
    if (value)
        put(o, "%s0x%" PRIx32, sep, value);
}

static void put_hex(out_buf *o, uint64_t v)
{
    if (v) {
        put_mem(o, "0x", 2);
        put_u64(o, v, 16);
    } else {
        put_mem(o, "0", 1);
    }
}

static void put_ref(out_buf *o, hm_trace_ref r)
{
    if (r.kind == HM_REF_RAW) {
        put_hex(o, r.value);
        return;
    }
    put_mem(o, r.kind == HM_REF_ALLOC ? "@" : "#", 1);
    put_u64(o, r.handle, 10);
    if (r.value) {
        put_mem(o, "+0x", 3);
        put_u64(o, r.value, 16);
    }
}

static void put_file(out_buf *o, const hm_trace_call *c)
{
    if (!c->has_file) {
        put(o, "NULL");
        return;
    }
    put(o, "\"");
    for (const unsigned char *s = (const unsigned char *)c->file; *s; s++) {
        if (*s == '"' || *s == '\\')
            put(o, "\\%c", *s);
        else if (*s < 0x20 || *s >= 0x7f)
            put(o, "\\x%02x", *s);
        else
            put(o, "%c", *s);
    }
    put(o, "\"");
}

static void put_field(out_buf *o, const hm_trace_call *c, field_id f)
{
    put_mem(o, " ", 1);
    put_str(o, field_keys[f]);
    put_mem(o, "=", 1);
    switch (f) {
    case F_ADDR: put_ref(o, c->addr); break;
    case F_SIZE: put_hex(o, c->size); break;
    case F_LENGTH: put_u64(o, c->size, 10); break;
    case F_ATYPE: put_flags(o, c->type, alloc_type_names); break;
    case F_FTYPE: put_flags(o, c->type, free_type_names); break;
    case F_MTYPE: put_flags(o, c->type, malloc_type_names); break;
    case F_PROT: put_flags(o, c->prot, protect_names); break;
    case F_LEVEL:
        if (c->level >= eTaskCritical && c->level <= eProcessCritical)
            put_str(o, hm_level_short((EMemoryCriticalLevel)c->level));
        else
            put(o, "%d", c->level);
        break;
    case F_HEAP: case F_NEWHEAP:
        put_mem(o, c->heap ? "h" : "0", 1);
        if (c->heap)
            put_u64(o, c->heap, 10);
        break;
    case F_CALLBACK:
        put_mem(o, c->callback ? "c" : "0", 1);
        if (c->callback)
            put_u64(o, c->callback, 10);
        break;
    case F_MEMORY:
        if (c->available >= 1 && c->available <= 3)
            put(o, "%s", available_names[c->available]);
        else
            put(o, "%d", c->available);
        break;
    case F_FILE: put_file(o, c); break;
    case F_LINE: put(o, "%d", c->line); break;
    case F_MEM: put_ref(o, c->mem); break;
    case F_OLD: put_flags(o, c->old_prot, protect_names); break;
    case F_QRESULT: put_u64(o, c->query_result, 10); break;
    case F_BASE: put_ref(o, c->mbi_base); break;
    case F_ABASE: put_ref(o, c->mbi_alloc_base); break;
    case F_APROT: put_flags(o, c->mbi_alloc_protect, protect_names); break;
    case F_RSIZE: put_hex(o, c->mbi_region_size); break;
    case F_STATE: put_flags(o, c->mbi_state, state_names); break;
    case F_PROTECT: put_flags(o, c->mbi_protect, protect_names); break;
    case F_MEMTYPE: put_flags(o, c->mbi_type, mem_type_names); break;
    case F_LOAD: put_u64(o, c->load, 10); break;
    case F_AVAIL: put_hex(o, c->available_bytes); break;
    case F_CONCURRENT: put(o, "%d", c->concurrent ? 1 : 0); break;
    case F_END: break;
    }
}

HM_API size_t hm_trace_format_call(const hm_trace_call *c, char *buf, size_t len)
{
    out_buf o = {buf, len, 0};
    const char *name = hm_trace_method_name(c->method);
    if (!name) {
        put(&o, "%" PRIu64 " t%" PRIu32 " ?method%d", c->seq, c->thread, c->method);
        return o.used;
    }
    const method_fields *mf = &fields_of[c->method];
    put_u64(&o, c->seq, 10);
    put_mem(&o, " t", 2);
    put_u64(&o, c->thread, 10);
    put_mem(&o, " ", 1);
    put_str(&o, name);
    for (int i = 0; mf->args[i] >= 0; i++)
        put_field(&o, c, (field_id)mf->args[i]);
    if (c->nulls) {
        put(&o, " null=");
        if (c->nulls & HM_TRACE_NULL_OUT1)
            put(&o, "%s%s", mf->out1 ? mf->out1 : "out1", (c->nulls & HM_TRACE_NULL_OUT2) ? "|" : "");
        if (c->nulls & HM_TRACE_NULL_OUT2)
            put(&o, "%s", mf->out2 ? mf->out2 : "out2");
    }
    if (c->method == HM_TRACE_HEAP_RELEASE)
        return o.used; /* Release returns a count, not an HRESULT: nothing to compare */
    put_mem(&o, " -> ", 4);
    put_str(&o, hm_hr_name(c->result));
    for (int i = 0; mf->results[i] >= 0; i++) {
        field_id f = (field_id)mf->results[i];
        unsigned out = field_out(f);
        if ((out == 1 && (c->nulls & HM_TRACE_NULL_OUT1)) || (out == 2 && (c->nulls & HM_TRACE_NULL_OUT2)))
            continue;
        if (field_is_mbi(f) && !c->has_mbi)
            continue;
        /* heap=0 stays for a CreateMalloc that succeeded without a heap (the recorded host's bug, kept as such) */
        if ((f == F_NEWHEAP && !c->heap && !(c->method == HM_METHOD_CREATE_MALLOC && SUCCEEDED(c->result))) ||
            (f == F_CONCURRENT && !c->concurrent))
            continue;
        put_field(&o, c, f);
    }
    if (o.len)
        o.p[o.used < o.len ? o.used : o.len - 1] = '\0';
    return o.used;
}

/* ---- Parsing one line ------------------------------------------------------------------------------------- */
typedef struct parser {
    const char *p, *end;
    char *err;
    size_t errlen;
} parser;

static int fail(parser *ps, const char *field, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(parser *ps, const char *field, const char *fmt, ...)
{
    int n = snprintf(ps->err, ps->errlen, "field '%s': ", field);
    if (n < 0 || (size_t)n >= ps->errlen)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ps->err + n, ps->errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return -1;
}

const char *hm__trace_shown(char *buf, const char *value, size_t len)
{
    if (len <= HM_TRACE_SHOWN_MAX)
        snprintf(buf, HM_TRACE_SHOWN_SIZE, "'%.*s'", (int)len, value);
    else
        snprintf(buf, HM_TRACE_SHOWN_SIZE, "'%.*s...' (%zu bytes)", HM_TRACE_SHOWN_MAX, value, len);
    return buf;
}

static bool parse_u64(const char *s, size_t len, uint64_t *out)
{
    if (len == 0)
        return false;
    uint64_t v = 0;
    unsigned base = 10;
    if (len > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
        len -= 2;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned d;
        char ch = s[i];
        if (ch >= '0' && ch <= '9')
            d = (unsigned)(ch - '0');
        else if (base == 16 && ch >= 'a' && ch <= 'f')
            d = (unsigned)(ch - 'a' + 10);
        else if (base == 16 && ch >= 'A' && ch <= 'F')
            d = (unsigned)(ch - 'A' + 10);
        else
            return false;
        if (v > (UINT64_MAX - d) / base)
            return false; /* overflow */
        v = v * base + d;
    }
    *out = v;
    return true;
}

static int parse_number(parser *ps, const char *field, const char *s, size_t len, uint64_t max, uint64_t *out)
{
    if (!parse_u64(s, len, out) || *out > max)
        return fail(ps, field, "bad number %s", HM_TRACE_SHOW(s, len));
    return 0;
}

static int parse_flags(parser *ps, const char *field, const char *s, size_t len, const flag_name *names,
                       uint32_t *out)
{
    uint32_t v = 0;
    size_t i = 0;
    while (i <= len) {
        size_t j = i;
        while (j < len && s[j] != '|')
            j++;
        const char *tok = s + i;
        size_t tlen = j - i;
        uint64_t num;
        bool found = false;
        for (const flag_name *f = names; f->name && !found; f++) {
            if (strlen(f->name) == tlen && memcmp(f->name, tok, tlen) == 0) {
                v |= f->value;
                found = true;
            }
        }
        if (!found) {
            if (tlen && isdigit((unsigned char)tok[0]) && parse_u64(tok, tlen, &num) && num <= UINT32_MAX)
                v |= (uint32_t)num;
            else
                return fail(ps, field, "unknown flag %s", HM_TRACE_SHOW(tok, tlen));
        }
        i = j + 1;
    }
    *out = v;
    return 0;
}

static int parse_ref(parser *ps, const char *field, const char *s, size_t len, hm_trace_ref *out)
{
    memset(out, 0, sizeof *out);
    if (len && (s[0] == '@' || s[0] == '#')) {
        out->kind = s[0] == '@' ? HM_REF_ALLOC : HM_REF_BLOCK;
        size_t plus = 1;
        while (plus < len && s[plus] != '+')
            plus++;
        uint64_t h;
        if (!parse_u64(s + 1, plus - 1, &h) || h == 0 || h > UINT32_MAX)
            return fail(ps, field, "bad handle %s", HM_TRACE_SHOW(s, len));
        out->handle = (uint32_t)h;
        if (plus < len && !parse_u64(s + plus + 1, len - plus - 1, &out->value))
            return fail(ps, field, "bad offset %s", HM_TRACE_SHOW(s, len));
        return 0;
    }
    out->kind = HM_REF_RAW;
    if (!parse_u64(s, len, &out->value))
        return fail(ps, field, "bad address %s", HM_TRACE_SHOW(s, len));
    return 0;
}

static int parse_tagged(parser *ps, const char *field, const char *s, size_t len, char tag, uint32_t *out)
{
    uint64_t v;
    if (len == 1 && s[0] == '0') {
        *out = 0;
        return 0;
    }
    if (len < 2 || s[0] != tag || !parse_u64(s + 1, len - 1, &v) || v == 0 || v > UINT32_MAX)
        return fail(ps, field, "bad handle %s (expected %c1, %c2, ...)", HM_TRACE_SHOW(s, len), tag, tag);
    *out = (uint32_t)v;
    return 0;
}

static int parse_file(parser *ps, const char *s, size_t len, hm_trace_call *c)
{
    if (len == 4 && memcmp(s, "NULL", 4) == 0) {
        c->has_file = 0;
        c->file[0] = '\0';
        return 0;
    }
    if (len < 2 || s[0] != '"' || s[len - 1] != '"')
        return fail(ps, "file", "expected a quoted string or NULL");
    size_t n = 0;
    for (size_t i = 1; i + 1 < len; i++) {
        char ch = s[i];
        if (ch == '\\') {
            if (i + 2 >= len)
                return fail(ps, "file", "bad escape");
            char e = s[++i];
            if (e == 'x') {
                uint64_t v;
                if (i + 3 > len - 1 || !parse_u64((char[]){'0', 'x', s[i + 1], s[i + 2]}, 4, &v) || v == 0)
                    return fail(ps, "file", "bad escape");
                ch = (char)v;
                i += 2;
            } else if (e == '"' || e == '\\') {
                ch = e;
            } else {
                return fail(ps, "file", "bad escape '\\%c'", e);
            }
        }
        if (n + 1 >= HM_TRACE_FILE_MAX)
            return fail(ps, "file", "longer than %d bytes", HM_TRACE_FILE_MAX - 1);
        c->file[n++] = ch;
    }
    c->file[n] = '\0';
    c->has_file = 1;
    return 0;
}

static int parse_level(parser *ps, const char *s, size_t len, int *out)
{
    static const char *const names[] = {"task", "appdomain", "process"};
    for (int i = 0; i < 3; i++) {
        if (strlen(names[i]) == len && memcmp(names[i], s, len) == 0) {
            *out = i;
            return 0;
        }
    }
    /* Any other value is the number the formatter wrote (%d): 0 to INT32_MAX, or -1, which the binary and raw
     * readers give for a level they do not know (the binary form stores level + 1), so that it reads back. */
    uint64_t v;
    if (len == 2 && memcmp(s, "-1", 2) == 0) {
        *out = -1;
        return 0;
    }
    if (parse_u64(s, len, &v) && v <= INT32_MAX) {
        *out = (int)v;
        return 0;
    }
    return fail(ps, "level", "unknown level %s (expected task, appdomain, process or a number)", HM_TRACE_SHOW(s, len));
}

static int parse_field(parser *ps, field_id f, const char *s, size_t len, hm_trace_call *c)
{
    const char *key = field_keys[f];
    uint64_t v;
    switch (f) {
    case F_ADDR: return parse_ref(ps, key, s, len, &c->addr);
    case F_SIZE: case F_LENGTH: return parse_number(ps, key, s, len, UINT64_MAX, &c->size);
    case F_ATYPE: return parse_flags(ps, key, s, len, alloc_type_names, &c->type);
    case F_FTYPE: return parse_flags(ps, key, s, len, free_type_names, &c->type);
    case F_MTYPE: return parse_flags(ps, key, s, len, malloc_type_names, &c->type);
    case F_PROT: return parse_flags(ps, key, s, len, protect_names, &c->prot);
    case F_LEVEL: return parse_level(ps, s, len, &c->level);
    case F_HEAP: case F_NEWHEAP: return parse_tagged(ps, key, s, len, 'h', &c->heap);
    case F_CALLBACK: return parse_tagged(ps, key, s, len, 'c', &c->callback);
    case F_MEMORY:
        for (int i = 1; i <= 3; i++) {
            if (strlen(available_names[i]) == len && memcmp(available_names[i], s, len) == 0) {
                c->available = i;
                return 0;
            }
        }
        if (parse_number(ps, key, s, len, INT32_MAX, &v))
            return -1;
        c->available = (int)v;
        return 0;
    case F_FILE: return parse_file(ps, s, len, c);
    case F_LINE:
        if (len && s[0] == '-') { /* iLineNo is an int: keep what the caller passed */
            if (parse_number(ps, key, s + 1, len - 1, (uint64_t)INT32_MAX + 1, &v))
                return -1;
            c->line = (int)(-(int64_t)v);
            return 0;
        }
        if (parse_number(ps, key, s, len, INT32_MAX, &v))
            return -1;
        c->line = (int)v;
        return 0;
    case F_MEM: return parse_ref(ps, key, s, len, &c->mem);
    case F_OLD: return parse_flags(ps, key, s, len, protect_names, &c->old_prot);
    case F_QRESULT: return parse_number(ps, key, s, len, UINT64_MAX, &c->query_result);
    case F_BASE: return parse_ref(ps, key, s, len, &c->mbi_base);
    case F_ABASE: return parse_ref(ps, key, s, len, &c->mbi_alloc_base);
    case F_APROT: return parse_flags(ps, key, s, len, protect_names, &c->mbi_alloc_protect);
    case F_RSIZE: return parse_number(ps, key, s, len, UINT64_MAX, &c->mbi_region_size);
    case F_STATE: return parse_flags(ps, key, s, len, state_names, &c->mbi_state);
    case F_PROTECT: return parse_flags(ps, key, s, len, protect_names, &c->mbi_protect);
    case F_MEMTYPE: return parse_flags(ps, key, s, len, mem_type_names, &c->mbi_type);
    case F_LOAD:
        if (parse_number(ps, key, s, len, UINT32_MAX, &v))
            return -1;
        c->load = (uint32_t)v;
        return 0;
    case F_AVAIL: return parse_number(ps, key, s, len, UINT64_MAX, &c->available_bytes);
    case F_CONCURRENT:
        if (parse_number(ps, key, s, len, 1, &v))
            return -1;
        c->concurrent = (int)v;
        return 0;
    case F_END: break;
    }
    return -1;
}

/* The next space-separated token; a quoted value (file="a b") may hold spaces. */
static bool next_token(parser *ps, const char **tok, size_t *len)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t'))
        ps->p++;
    if (ps->p >= ps->end)
        return false;
    const char *s = ps->p;
    /* Most tokens hold no quote: they end at the first space or tab, found with memchr (a line may be kilobytes of
     * binary garbage, which a byte-by-byte loop walks slowly, and far more slowly under a fuzzer's tracing of
     * every comparison). */
    size_t n = (size_t)(ps->end - s);
    const char *space = memchr(s, ' ', n), *tab;
    if (space)
        n = (size_t)(space - s);
    if ((tab = memchr(s, '\t', n)) != NULL)
        n = (size_t)(tab - s);
    if (!memchr(s, '"', n)) {
        ps->p = s + n;
        *tok = s;
        *len = n;
        return true;
    }
    bool quoted = false;
    while (ps->p < ps->end && (quoted || (*ps->p != ' ' && *ps->p != '\t'))) {
        if (*ps->p == '"')
            quoted = !quoted;
        else if (*ps->p == '\\' && quoted && ps->p + 1 < ps->end)
            ps->p++;
        ps->p++;
    }
    *tok = s;
    *len = (size_t)(ps->p - s);
    return true;
}

static int parse_nulls(parser *ps, const method_fields *mf, const char *s, size_t len, uint32_t *out)
{
    *out = 0;
    size_t i = 0;
    while (i <= len) {
        size_t j = i;
        while (j < len && s[j] != '|')
            j++;
        size_t tlen = j - i;
        if (mf->out1 && strlen(mf->out1) == tlen && memcmp(mf->out1, s + i, tlen) == 0)
            *out |= HM_TRACE_NULL_OUT1;
        else if (mf->out2 && strlen(mf->out2) == tlen && memcmp(mf->out2, s + i, tlen) == 0)
            *out |= HM_TRACE_NULL_OUT2;
        else
            return fail(ps, "null", "%s is not an out-parameter of this method", HM_TRACE_SHOW(s + i, tlen));
        i = j + 1;
    }
    return 0;
}

int hm__trace_parse_line(const char *line, size_t len, hm_trace_call *c, char *err, size_t errlen)
{
    parser ps = {line, line + len, err, errlen};
    hm__trace_call_init(c);
    const char *tok = line; /* a blank line has no first token: the message then shows '' */
    size_t tlen = 0;
    uint64_t v;

    if (!next_token(&ps, &tok, &tlen) || !parse_u64(tok, tlen, &v) || v == 0)
        return fail(&ps, "seq", "bad sequence number %s", HM_TRACE_SHOW(tok, tlen));
    c->seq = v;
    if (!next_token(&ps, &tok, &tlen))
        return fail(&ps, "thread", "missing");
    if (tlen < 2 || tok[0] != 't' || !parse_u64(tok + 1, tlen - 1, &v) || v == 0 || v > UINT32_MAX)
        return fail(&ps, "thread", "bad thread %s (expected t1, t2, ...)", HM_TRACE_SHOW(tok, tlen));
    c->thread = (uint32_t)v;
    if (!next_token(&ps, &tok, &tlen))
        return fail(&ps, "method", "missing");
    c->method = method_parse(tok, tlen);
    if (c->method < 0)
        return fail(&ps, "method", "unknown method %s", HM_TRACE_SHOW(tok, tlen));
    const method_fields *mf = &fields_of[c->method];

    /* Arguments until "->", then the result, then result fields. Each field once; arguments all present. */
    uint32_t seen = 0, mbi_seen = 0;
    bool results = false;
    while (next_token(&ps, &tok, &tlen)) {
        if (!results && tlen == 2 && memcmp(tok, "->", 2) == 0) {
            if (c->method == HM_TRACE_HEAP_RELEASE)
                return fail(&ps, "result", "Release has no result");
            if (!next_token(&ps, &tok, &tlen))
                return fail(&ps, "result", "missing after '->'");
            if (hm_hr_parse(tok, tlen, &c->result) != 0)
                return fail(&ps, "result", "unknown HRESULT %s", HM_TRACE_SHOW(tok, tlen));
            results = true;
            continue;
        }
        const char *eq = memchr(tok, '=', tlen);
        if (!eq)
            return fail(&ps, "?", "expected key=value, got %s", HM_TRACE_SHOW(tok, tlen));
        size_t klen = (size_t)(eq - tok);
        const char *val = eq + 1;
        size_t vlen = tlen - klen - 1;
        if (!results && klen == 4 && memcmp(tok, "null", 4) == 0) {
            if (parse_nulls(&ps, mf, val, vlen, &c->nulls))
                return -1;
            continue;
        }
        const signed char *list = results ? mf->results : mf->args;
        int found = -1;
        for (int i = 0; list[i] >= 0; i++)
            if (strlen(field_keys[list[i]]) == klen && memcmp(field_keys[list[i]], tok, klen) == 0)
                found = list[i];
        if (found < 0)
            return fail(&ps, "?", "unknown %s key %s for %s", results ? "result" : "argument", HM_TRACE_SHOW(tok, klen),
                        hm_trace_method_name(c->method));
        if (seen & (1u << found))
            return fail(&ps, field_keys[found], "given twice");
        seen |= 1u << found;
        if (field_is_mbi((field_id)found))
            mbi_seen++;
        if (parse_field(&ps, (field_id)found, val, vlen, c))
            return -1;
    }
    for (int i = 0; mf->args[i] >= 0; i++)
        if (!(seen & (1u << mf->args[i])))
            return fail(&ps, field_keys[mf->args[i]], "missing");
    if (!results && c->method != HM_TRACE_HEAP_RELEASE)
        return fail(&ps, "result", "missing ('-> HRESULT')");
    if (mbi_seen && mbi_seen != F_MEMTYPE - F_BASE + 1)
        return fail(&ps, "base", "a VirtualQuery result gives all of base, allocbase, allocprot, regionsize, "
                                 "state, protect and memtype, or none");
    c->has_mbi = mbi_seen != 0;
    /* A CreateMalloc that succeeded names its heap, or says heap=0: the host returned S_OK without one. */
    if (c->method == HM_METHOD_CREATE_MALLOC && SUCCEEDED(c->result) && !(seen & (1u << F_NEWHEAP)) &&
        !(c->nulls & HM_TRACE_NULL_OUT1))
        return fail(&ps, "heap", "missing (CreateMalloc succeeded: heap=hN, or heap=0 when the host gave none)");
    if (!hm__trace_method_has_level(c->method))
        c->level = -1;
    return 0;
}

/* ---- Binary records ---------------------------------------------------------------------------------------
 * varint seq, varint thread, byte method, varint nulls, varint result (as uint32), then every argument and every
 * result field of the method in table order, each as varints (a reference as kind, handle, value; the level as
 * level + 1; the file as has_file, length, bytes; the MBI group preceded by has_mbi). `concurrent` is no field of
 * its own but a bit of the nulls varint, so records written before it existed read the same. */
#define BIN_CONCURRENT 0x4u
static size_t put_ref_bin(uint8_t *p, hm_trace_ref r)
{
    size_t n = hm_varint_put(p, r.kind);
    n += hm_varint_put(p + n, r.handle);
    return n + hm_varint_put(p + n, r.value);
}

size_t hm__trace_encode_binary(const hm_trace_call *c, uint8_t *buf)
{
    size_t n = hm_varint_put(buf, c->seq);
    n += hm_varint_put(buf + n, c->thread);
    buf[n++] = (uint8_t)c->method;
    n += hm_varint_put(buf + n, c->nulls | (c->concurrent ? BIN_CONCURRENT : 0));
    n += hm_varint_put(buf + n, (uint32_t)c->result);
    const method_fields *mf = &fields_of[c->method];
    for (int side = 0; side < 2; side++) {
        const signed char *list = side ? mf->results : mf->args;
        for (int i = 0; list[i] >= 0; i++) {
            switch ((field_id)list[i]) {
            case F_ADDR: n += put_ref_bin(buf + n, c->addr); break;
            case F_SIZE: case F_LENGTH: n += hm_varint_put(buf + n, c->size); break;
            case F_ATYPE: case F_FTYPE: case F_MTYPE: n += hm_varint_put(buf + n, c->type); break;
            case F_PROT: n += hm_varint_put(buf + n, c->prot); break;
            case F_LEVEL: n += hm_varint_put(buf + n, (uint64_t)((int64_t)c->level + 1)); break;
            case F_HEAP: case F_NEWHEAP: n += hm_varint_put(buf + n, c->heap); break;
            case F_CALLBACK: n += hm_varint_put(buf + n, c->callback); break;
            case F_MEMORY: n += hm_varint_put(buf + n, (uint32_t)c->available); break;
            case F_FILE: {
                size_t flen = c->has_file ? strnlen(c->file, HM_TRACE_FILE_MAX - 1) : 0;
                n += hm_varint_put(buf + n, (uint64_t)c->has_file);
                n += hm_varint_put(buf + n, flen);
                memcpy(buf + n, c->file, flen);
                n += flen;
                break;
            }
            case F_LINE: n += hm_varint_put(buf + n, (uint32_t)c->line); break;
            case F_MEM: n += put_ref_bin(buf + n, c->mem); break;
            case F_OLD: n += hm_varint_put(buf + n, c->old_prot); break;
            case F_QRESULT: n += hm_varint_put(buf + n, c->query_result); break;
            case F_BASE:
                n += hm_varint_put(buf + n, (uint64_t)c->has_mbi);
                n += put_ref_bin(buf + n, c->mbi_base);
                break;
            case F_ABASE: n += put_ref_bin(buf + n, c->mbi_alloc_base); break;
            case F_APROT: n += hm_varint_put(buf + n, c->mbi_alloc_protect); break;
            case F_RSIZE: n += hm_varint_put(buf + n, c->mbi_region_size); break;
            case F_STATE: n += hm_varint_put(buf + n, c->mbi_state); break;
            case F_PROTECT: n += hm_varint_put(buf + n, c->mbi_protect); break;
            case F_MEMTYPE: n += hm_varint_put(buf + n, c->mbi_type); break;
            case F_LOAD: n += hm_varint_put(buf + n, c->load); break;
            case F_AVAIL: n += hm_varint_put(buf + n, c->available_bytes); break;
            case F_CONCURRENT: case F_END: break;
            }
        }
    }
    return n;
}

typedef struct bin_in {
    const uint8_t *p;
    size_t len, used;
    int status; /* 0 fine, 1 needs more input, -1 malformed */
} bin_in;

static uint64_t get_bin_slow(bin_in *in, uint64_t max)
{
    uint64_t v = 0;
    if (in->status)
        return 0;
    long n = hm_varint_get(in->p + in->used, in->len - in->used, &v);
    if (n == 0)
        in->status = 1;
    else if (n < 0 || v > max)
        in->status = -1;
    else
        in->used += (size_t)n;
    return v;
}

/* With 10 bytes at hand (every record but the last few): values up to 9 bytes inline; the rest, the end of the
 * input and every error in get_bin_slow. */
static inline __attribute__((always_inline)) uint64_t get_bin(bin_in *in, uint64_t max)
{
    if (__builtin_expect(!in->status && in->len - in->used >= 10, 1)) {
        const uint8_t *p = in->p + in->used;
        uint64_t v = p[0] & 0x7f;
        if (!(p[0] & 0x80)) {
            if (__builtin_expect(v <= max, 1)) {
                in->used++;
                return v;
            }
        } else {
            for (unsigned i = 1; i < 9; i++) {
                v |= (uint64_t)(p[i] & 0x7f) << (7 * i);
                if (!(p[i] & 0x80)) {
                    if (v > max)
                        break;
                    in->used += i + 1;
                    return v;
                }
            }
        }
    }
    return get_bin_slow(in, max);
}

static inline hm_trace_ref get_ref_bin(bin_in *in)
{
    hm_trace_ref r;
    r.kind = (uint32_t)get_bin(in, HM_REF_BLOCK);
    r.handle = (uint32_t)get_bin(in, UINT32_MAX);
    r.value = get_bin(in, UINT64_MAX);
    if ((r.kind == HM_REF_RAW) != (r.handle == 0) && !in->status)
        in->status = -1;
    return r;
}

long hm__trace_decode_binary(const uint8_t *p, size_t len, hm_trace_call *c, char *err, size_t errlen)
{
    bin_in in = {p, len, 0, 0};
    hm__trace_call_init(c);
    c->seq = get_bin(&in, UINT64_MAX);
    c->thread = (uint32_t)get_bin(&in, UINT32_MAX);
    if (in.status == 0 && in.used >= len)
        return 0;
    if (in.status)
        goto out;
    c->method = p[in.used++];
    if (c->method >= HM_TRACE_METHOD_COUNT) {
        snprintf(err, errlen, "field 'method': unknown method %d", c->method);
        return -1;
    }
    c->nulls = (uint32_t)get_bin(&in, HM_TRACE_NULL_OUT1 | HM_TRACE_NULL_OUT2 | BIN_CONCURRENT);
    c->concurrent = (c->nulls & BIN_CONCURRENT) != 0;
    c->nulls &= ~BIN_CONCURRENT;
    if (c->concurrent && c->method != HM_METHOD_VIRTUAL_QUERY && !in.status)
        in.status = -1; /* only a query can be concurrent */
    c->result = (HRESULT)(uint32_t)get_bin(&in, UINT32_MAX);
    const method_fields *mf = &fields_of[c->method];
    if (((c->nulls & HM_TRACE_NULL_OUT1) && !mf->out1) || ((c->nulls & HM_TRACE_NULL_OUT2) && !mf->out2))
        in.status = -1; /* a NULL out-parameter the method does not have: the text reader refuses it too */
    for (int side = 0; side < 2; side++) {
        const signed char *list = side ? mf->results : mf->args;
        for (int i = 0; list[i] >= 0; i++) {
            switch ((field_id)list[i]) {
            case F_ADDR: c->addr = get_ref_bin(&in); break;
            case F_SIZE: case F_LENGTH: c->size = get_bin(&in, UINT64_MAX); break;
            case F_ATYPE: case F_FTYPE: case F_MTYPE: c->type = (uint32_t)get_bin(&in, UINT32_MAX); break;
            case F_PROT: c->prot = (uint32_t)get_bin(&in, UINT32_MAX); break;
            case F_LEVEL: c->level = (int)((int64_t)get_bin(&in, (uint64_t)INT32_MAX + 1) - 1); /* level + 1 was stored: 0 .. 2^31 */ break;
            case F_HEAP: case F_NEWHEAP: c->heap = (uint32_t)get_bin(&in, UINT32_MAX); break;
            case F_CALLBACK: c->callback = (uint32_t)get_bin(&in, UINT32_MAX); break;
            case F_MEMORY: c->available = (int)get_bin(&in, INT32_MAX); break;
            case F_FILE: {
                c->has_file = (int)get_bin(&in, 1);
                uint64_t flen = get_bin(&in, HM_TRACE_FILE_MAX - 1);
                if (in.status)
                    break;
                if (in.len - in.used < flen) {
                    in.status = 1;
                    break;
                }
                memcpy(c->file, in.p + in.used, flen);
                c->file[flen] = '\0';
                if (strlen(c->file) != flen)
                    in.status = -1;
                in.used += flen;
                break;
            }
            case F_LINE: c->line = (int)(uint32_t)get_bin(&in, UINT32_MAX); break;
            case F_MEM: c->mem = get_ref_bin(&in); break;
            case F_OLD: c->old_prot = (uint32_t)get_bin(&in, UINT32_MAX); break;
            case F_QRESULT: c->query_result = get_bin(&in, UINT64_MAX); break;
            case F_BASE:
                c->has_mbi = (int)get_bin(&in, 1);
                c->mbi_base = get_ref_bin(&in);
                break;
            case F_ABASE: c->mbi_alloc_base = get_ref_bin(&in); break;
            case F_APROT: c->mbi_alloc_protect = (uint32_t)get_bin(&in, UINT32_MAX); break;
            case F_RSIZE: c->mbi_region_size = get_bin(&in, UINT64_MAX); break;
            case F_STATE: c->mbi_state = (uint32_t)get_bin(&in, UINT32_MAX); break;
            case F_PROTECT: c->mbi_protect = (uint32_t)get_bin(&in, UINT32_MAX); break;
            case F_MEMTYPE: c->mbi_type = (uint32_t)get_bin(&in, UINT32_MAX); break;
            case F_LOAD: c->load = (uint32_t)get_bin(&in, UINT32_MAX); break;
            case F_AVAIL: c->available_bytes = get_bin(&in, UINT64_MAX); break;
            case F_CONCURRENT: case F_END: break;
            }
        }
    }
out:
    if (in.status > 0)
        return len >= HM_TRACE_BIN_RECORD_MAX ? (snprintf(err, errlen, "field '?': record too long"), -1) : 0;
    if (in.status < 0) {
        snprintf(err, errlen, "field '?': malformed binary record");
        return -1;
    }
    if (c->seq == 0 || c->thread == 0) {
        snprintf(err, errlen, "field '%s': zero", c->seq == 0 ? "seq" : "thread");
        return -1;
    }
    /* A NULL out-parameter has no value: what the record carries for it is dropped, as the text form drops it (its
     * line has no such field), so both encodings read as the same call. */
    if (c->nulls & HM_TRACE_NULL_OUT1) {
        c->mem = (hm_trace_ref){0, 0, HM_REF_RAW};
        c->old_prot = 0;
        c->load = 0;
        if (c->method == HM_METHOD_CREATE_MALLOC)
            c->heap = 0;
        if (c->method == HM_METHOD_VIRTUAL_QUERY)
            c->has_mbi = 0;
    }
    if (c->nulls & HM_TRACE_NULL_OUT2) {
        c->query_result = 0;
        c->available_bytes = 0;
    }
    /* A CreateMalloc that succeeded with heap 0: the host returned S_OK without a heap (its bug, which replay
     * reports); the text form writes it heap=0, the raw reader reads it from a recording. */
    if (!hm__trace_method_has_level(c->method))
        c->level = -1;
    return (long)in.used;
}

/* Reading traces: text, binary and raw, streamed, strict about everything.
 *
 * Text and binary traces are already relocated; the reader checks that every handle they name was created
 * before (and not twice). Raw traces (the recorder's) hold real addresses: the reader relocates them, giving
 * each region a VirtualAlloc returns @n and each heap block #n in order, and writing later addresses inside
 * them as handle+offset. Either way memory follows the allocations alive at a point of the trace. */
#include "trace_internal.h"

#include "trace_file.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define READ_CHUNK (256 * 1024)

/* A region or block of a raw trace, by its recorded address. */
typedef struct span {
    uint64_t start, end; /* [start, end) */
    uint64_t died;       /* dead spans: the call that ended it (the latest death wins a relocation) */
    uint32_t handle;
    uint8_t live;
} span;
typedef struct span_set {
    span *v;
    size_t count, capacity;
    uint32_t next_handle;
    span *dead; /* the spans that died last (start and handle), oldest first: a ring as in hm_handle_map */
    size_t dead_head, dead_count, dead_capacity; /* grown as spans die, up to HM_TRACE_DEAD_KEPT */
} span_set;

struct hm_trace_reader {
    FILE *file;
    bool own_file;
    char *path;
    hm_trace_encoding encoding;
    uint8_t *buf;      /* READ_CHUNK bytes read from file; or, for a trace in memory, the caller's bytes */
    bool own_buf;
    size_t start, end; /* unread bytes buf[start, end) */
    bool eof;
    /* The recorder stopped before the end of the run (raw header, text "#! incomplete", binary marker). */
    bool incomplete;
    uint64_t incomplete_calls;
    char incomplete_reason[128];
    hm_trace_env_store env; /* the header's environment */
    bool seen_call;         /* text: a call was read (environment lines come before) */
    uint64_t line;     /* text: line number of the last line; binary: record number; raw: slot number */
    uint64_t last_seq;
    int failed;
    char error[512];
    /* text and binary: handles seen */
    hm_handle_map known;
    /* raw: relocation */
    span_set regions, blocks;
    uint32_t *threads; /* recorded thread id -> 1-based order of appearance (index: recorded id) */
    size_t thread_count;
    uint32_t next_thread;
    uint64_t lost;
    uint64_t implied; /* releases lost in flight that a later call proved */
    uint64_t slot;
    /* raw version 2: the ring when it holds records not copied to their place (a killed recorder): the slots
     * the file holds (ring_have; the rest are zeros), copied, or in place for a trace in memory */
    const uint8_t *ring;
    uint8_t *ring_copy;
    size_t ring_have, ring_capacity;
    uint64_t ring_slots, ring_max; /* ring_max: 1 + the last record slot the ring holds */
    uint64_t *ring_held;           /* the record slots the ring holds, in order */
    size_t ring_held_count, ring_held_capacity, ring_held_next;
    bool in_hole;
    uint8_t extra[3 * HM_RAW_SLOT];
};

static int reader_fail(hm_trace_reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int reader_fail(hm_trace_reader *r, const char *fmt, ...)
{
    int n;
    if (r->encoding == HM_TRACE_TEXT)
        n = snprintf(r->error, sizeof r->error, "%s:%" PRIu64 ": ", r->path, r->line);
    else if (r->encoding == HM_TRACE_BINARY)
        n = snprintf(r->error, sizeof r->error, "%s: record %" PRIu64 ": ", r->path, r->line);
    else
        n = snprintf(r->error, sizeof r->error, "%s: slot %" PRIu64 ": ", r->path, r->line);
    if (n > 0 && (size_t)n < sizeof r->error) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->error + n, sizeof r->error - (size_t)n, fmt, ap);
        va_end(ap);
    }
    r->failed = 1;
    hm__set_error("%s", r->error);
    return -1;
}

/* Makes at least `want` bytes available in buf[start, end) unless the file ends first. */
static void fill(hm_trace_reader *r, size_t want)
{
    if (r->end - r->start >= want || r->eof)
        return;
    memmove(r->buf, r->buf + r->start, r->end - r->start);
    r->end -= r->start;
    r->start = 0;
    while (r->end < want && !r->eof) {
        size_t n = fread(r->buf + r->end, 1, READ_CHUNK - r->end, r->file);
        r->end += n;
        if (n == 0)
            r->eof = true;
    }
}

static bool all_zero(const uint8_t *p, size_t n);

static int compare_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Ring slot i of a raw trace: what the file holds, zeros past its end. */
static const uint8_t *ring_at(const hm_trace_reader *r, uint64_t i)
{
    static const uint8_t zeros[HM_RAW_SLOT];
    return i < r->ring_have ? r->ring + (size_t)i * HM_RAW_SLOT : zeros;
}

/* Raw version 2: reads the ring that follows the header. It is kept only when it holds a record (the recorder
 * was killed before copying it to its place); a trace closed properly has an empty ring. Memory follows what the
 * file holds, not the ring size the header claims. */
static int read_ring(hm_trace_reader *r, uint64_t ring_slots)
{
    r->ring_slots = ring_slots;
    bool in_memory = !r->own_buf;
    if (in_memory) /* the caller's bytes stay put: the ring is read where it is */
        r->ring = r->buf + r->start;
    for (uint64_t i = 0; i < ring_slots;) {
        fill(r, HM_RAW_SLOT);
        size_t have = r->end - r->start;
        if (have < HM_RAW_SLOT) {
            r->start = r->end; /* the file ends inside the ring: the rest is zeros */
            break;
        }
        size_t n = have / HM_RAW_SLOT;
        if (n > ring_slots - i)
            n = (size_t)(ring_slots - i);
        if (all_zero(r->buf + r->start, n * HM_RAW_SLOT)) { /* the usual ring: empty */
            i += n;
            r->start += n * HM_RAW_SLOT;
            continue;
        }
        for (size_t k = 0; k < n; k++, i++) {
            const uint8_t *p = r->buf + r->start + k * HM_RAW_SLOT;
            if (all_zero(p, HM_RAW_SLOT))
                continue;
            if (in_memory) {
                r->ring_have = (size_t)i + 1;
            } else {
                if (i >= r->ring_capacity) {
                    size_t capacity = r->ring_capacity ? r->ring_capacity : 64;
                    while (capacity <= i)
                        capacity *= 2;
                    if (capacity > ring_slots)
                        capacity = (size_t)ring_slots;
                    uint8_t *copy = realloc(r->ring_copy, capacity * HM_RAW_SLOT);
                    if (!copy)
                        return -1;
                    r->ring = r->ring_copy = copy;
                    r->ring_capacity = capacity;
                }
                memset(r->ring_copy + r->ring_have * HM_RAW_SLOT, 0, ((size_t)i - r->ring_have) * HM_RAW_SLOT);
                memcpy(r->ring_copy + (size_t)i * HM_RAW_SLOT, p, HM_RAW_SLOT);
                r->ring_have = (size_t)i + 1;
            }
            uint64_t word;
            memcpy(&word, p, sizeof word);
            /* The tag fills the top 24 bits; a slot number (below 2^40) the rest. */
            uint64_t low = word & ((1ull << 40) - 1), slot = low - 1;
            if ((word & ~((1ull << 40) - 1)) != HM_RAW_COMMIT_TAG || !low || (slot & (ring_slots - 1)) != i)
                continue;
            if (low > r->ring_max)
                r->ring_max = low;
            if (r->ring_held_count == r->ring_held_capacity) {
                size_t capacity = r->ring_held_capacity ? r->ring_held_capacity * 2 : 64;
                uint64_t *held = realloc(r->ring_held, capacity * sizeof *held);
                if (!held)
                    return -1;
                r->ring_held = held;
                r->ring_held_capacity = capacity;
            }
            r->ring_held[r->ring_held_count++] = slot;
        }
        r->start += n * HM_RAW_SLOT;
    }
    if (!r->ring_max) { /* no record: the ring is not needed */
        free(r->ring_copy);
        r->ring_copy = NULL;
        r->ring = NULL;
        r->ring_have = 0;
    }
    if (r->ring_held_count > 1)
        qsort(r->ring_held, r->ring_held_count, sizeof *r->ring_held, compare_u64);
    return 0;
}

static HRESULT open_common(hm_trace_reader *r, const char *path, hm_trace_reader **out);

HM_API HRESULT hm_trace_open(const char *path, hm_trace_reader **out)
{
    *out = NULL;
    hm_trace_reader *r = calloc(1, sizeof *r);
    if (!r || !(r->buf = malloc(READ_CHUNK)) || !(r->path = strdup(path))) {
        if (r)
            free(r->buf);
        free(r);
        hm__set_error("out of memory opening trace '%s'", path);
        return E_OUTOFMEMORY;
    }
    r->own_buf = true;
    if (strcmp(path, "-") == 0) {
        r->file = stdin;
    } else {
        r->file = hm__trace_file_open_read(path);
        r->own_file = true;
    }
    if (!r->file) {
        free(r->buf);
        free(r->path);
        free(r);
        return E_FAIL;
    }
    return open_common(r, path, out);
}

HRESULT hm__trace_open_memory(const void *data, size_t size, const char *name, hm_trace_reader **out)
{
    *out = NULL;
    static const uint8_t empty[1];
    hm_trace_reader *r = calloc(1, sizeof *r);
    if (!r || !(r->path = strdup(name))) {
        free(r);
        hm__set_error("out of memory opening trace '%s'", name);
        return E_OUTOFMEMORY;
    }
    /* Read in place: fill() never moves or writes the bytes of a reader at its end. */
    r->buf = (uint8_t *)(uintptr_t)(size ? data : empty);
    r->end = size;
    r->eof = true;
    return open_common(r, name, out);
}

static void read_incomplete_text(hm_trace_reader *r, const char *s, size_t len);

/* Text: the comment lines before the first call, the environment's among them, so that hm_trace_reader_env knows
 * it once the trace is open. Stops at the first other line (or a last line without newline: next_text decides). */
static int read_text_header(hm_trace_reader *r)
{
    for (;;) {
        fill(r, HM_TRACE_LINE_MAX + 1);
        const char *s = (const char *)r->buf + r->start;
        size_t have = r->end - r->start;
        const char *nl = memchr(s, '\n', have);
        if (!nl || (size_t)(nl - s) > HM_TRACE_LINE_MAX)
            return 0;
        size_t len = (size_t)(nl - s);
        if (len && s[len - 1] == '\r')
            len--;
        size_t i = 0;
        while (i < len && (s[i] == ' ' || s[i] == '\t'))
            i++;
        if (i < len && s[i] != '#')
            return 0; /* the first call */
        r->line++;
        r->start += (size_t)(nl - s) + 1;
        if (len >= strlen(HM_TRACE_INCOMPLETE_TEXT) &&
            memcmp(s, HM_TRACE_INCOMPLETE_TEXT, strlen(HM_TRACE_INCOMPLETE_TEXT)) == 0)
            read_incomplete_text(r, s, len);
        char err[256];
        if (len && s[0] == '#' && hm__trace_env_parse_line(&r->env, s, len, err, sizeof err) < 0)
            return reader_fail(r, "%s", err);
    }
}

/* Raw version 4: the environment block after the 64-byte header (its size at HM_RAW_ENV_FIELD). */
static int read_raw_env(hm_trace_reader *r, const char *path)
{
    uint32_t size;
    memcpy(&size, r->buf + HM_RAW_ENV_FIELD, sizeof size);
    if (size % HM_RAW_SLOT || size > HM_RAW_ENV_MAX) {
        hm__set_error("%s: slot 0: field 'env': bad size %" PRIu32 " of the environment block", path, size);
        return -1;
    }
    fill(r, HM_RAW_HEADER + size);
    if (r->end - r->start < HM_RAW_HEADER + (size_t)size) {
        hm__set_error("%s: slot 0: field 'env': the environment block is cut short (the file ends inside it)", path);
        return -1;
    }
    char err[256];
    /* r->start is 0: the header starts the buffer. */
    if (hm__trace_env_parse_block(&r->env, (const char *)r->buf + r->start + HM_RAW_HEADER, size, err, sizeof err)) {
        hm__set_error("%s: slot 0: %s", path, err);
        return -1;
    }
    r->start += HM_RAW_HEADER + size;
    return 0;
}

/* Binary version 2: a varint length, then the environment's lines. */
static int read_binary_env(hm_trace_reader *r, const char *path)
{
    fill(r, 10);
    uint64_t size = 0;
    long n = hm_varint_get(r->buf + r->start, r->end - r->start, &size);
    if (n <= 0 || size > HM_RAW_ENV_MAX) {
        hm__set_error("%s: record 0: field 'env': %s", path,
                      n == 0 ? "the header is cut short (the file ends inside it)" : "bad size of the environment");
        return -1;
    }
    r->start += (size_t)n;
    fill(r, (size_t)size);
    if (r->end - r->start < size) {
        hm__set_error("%s: record 0: field 'env': the environment is cut short (the file ends inside it)", path);
        return -1;
    }
    char err[256];
    if (memchr(r->buf + r->start, '\0', (size_t)size)) {
        hm__set_error("%s: record 0: field 'env': a NUL byte in the environment", path);
        return -1;
    }
    if (hm__trace_env_parse_block(&r->env, (const char *)r->buf + r->start, (size_t)size, err, sizeof err)) {
        hm__set_error("%s: record 0: %s", path, err);
        return -1;
    }
    r->start += (size_t)size;
    return 0;
}

static HRESULT open_common(hm_trace_reader *r, const char *path, hm_trace_reader **out)
{
    hm__handle_map_init(&r->known, HM_TRACE_DEAD_KEPT);
    hm__trace_env_store_init(&r->env);
    fill(r, HM_RAW_HEADER);
    size_t have = r->end - r->start;
    const char *head = (const char *)r->buf;
    size_t raw_len = strlen(HM_TRACE_RAW_MAGIC), bin_len = strlen(HM_TRACE_BIN_MAGIC);
    bool raw1 = have >= raw_len && memcmp(head, HM_TRACE_RAW1_MAGIC, raw_len) == 0;
    bool raw2 = have >= raw_len && memcmp(head, HM_TRACE_RAW2_MAGIC, raw_len) == 0;
    bool raw3 = have >= raw_len && memcmp(head, HM_TRACE_RAW3_MAGIC, raw_len) == 0;
    bool bin1 = have >= bin_len && memcmp(head, HM_TRACE_BIN1_MAGIC, bin_len) == 0;
    if (raw1 || raw2 || raw3 || (have >= raw_len && memcmp(head, HM_TRACE_RAW_MAGIC, raw_len) == 0)) {
        r->encoding = HM_TRACE_RAW;
        if (have < HM_RAW_HEADER) {
            hm__set_error("%s: raw trace header cut short", path);
            hm_trace_close(r);
            return E_INVALIDARG;
        }
        uint64_t ring = 0;
        if (!raw1)
            memcpy(&ring, head + HM_RAW_RING_FIELD, sizeof ring);
        if (!raw1 && (ring == 0 || ring > HM_RAW_RING_MAX || (ring & (ring - 1)))) {
            hm__set_error("%s: slot 0: field 'ring': bad ring size %" PRIu64, path, ring);
            hm_trace_close(r);
            return E_INVALIDARG;
        }
        uint32_t stopped;
        memcpy(&stopped, head + HM_RAW_STOPPED_FIELD, sizeof stopped);
        if (stopped == HM_RAW_STOPPED) {
            int32_t err;
            memcpy(&err, head + HM_RAW_STOPPED_ERRNO_FIELD, sizeof err);
            memcpy(&r->incomplete_calls, head + HM_RAW_STOPPED_CALLS_FIELD, sizeof r->incomplete_calls);
            r->incomplete = true;
            snprintf(r->incomplete_reason, sizeof r->incomplete_reason, "writing the trace failed: %s",
                     err > 0 ? strerror(err) : "unknown error");
        }
        if (raw1 || raw2 || raw3) {
            r->start = HM_RAW_HEADER;
        } else if (read_raw_env(r, path) != 0) { /* moves r->start past the header and the block */
            hm_trace_close(r);
            return E_INVALIDARG;
        }
        if (ring && read_ring(r, ring) != 0) {
            hm__set_error("out of memory opening trace '%s'", path);
            hm_trace_close(r);
            return E_OUTOFMEMORY;
        }
    } else if (bin1 || (have >= bin_len && memcmp(head, HM_TRACE_BIN_MAGIC, bin_len) == 0)) {
        r->encoding = HM_TRACE_BINARY;
        r->start = bin_len;
        if (!bin1 && read_binary_env(r, path) != 0) {
            hm_trace_close(r);
            return E_INVALIDARG;
        }
    } else {
        r->encoding = HM_TRACE_TEXT;
        /* "hostmem-trace VERSION" then a newline. */
        size_t mlen = strlen(HM_TRACE_TEXT_MAGIC);
        const char *nl = memchr(head, '\n', have);
        size_t llen = nl ? (size_t)(nl - head) : have;
        r->line = 1;
        if (llen < mlen + 2 || memcmp(head, HM_TRACE_TEXT_MAGIC, mlen) != 0 || head[mlen] != ' ') {
            hm__set_error("%s:1: field 'version': not a hostmem trace (expected '%s %d' on the first line)", path,
                         HM_TRACE_TEXT_MAGIC, HM_TRACE_TEXT_VERSION);
            hm_trace_close(r);
            return E_INVALIDARG;
        }
        if (llen != mlen + 2 || head[mlen + 1] != '0' + HM_TRACE_TEXT_VERSION) {
            hm__set_error("%s:1: field 'version': unsupported version '%.*s' (this hostmem reads version %d)", path,
                         (int)(llen - mlen - 1 > 20 ? 20 : llen - mlen - 1), head + mlen + 1, HM_TRACE_TEXT_VERSION);
            hm_trace_close(r);
            return E_INVALIDARG;
        }
        r->start = nl ? llen + 1 : llen; /* a header alone, without its newline, is an empty trace */
        if (read_text_header(r) != 0) {
            hm_trace_close(r);
            return E_INVALIDARG;
        }
    }
    *out = r;
    return S_OK;
}

HM_API void hm_trace_close(hm_trace_reader *r)
{
    if (!r)
        return;
    if (r->own_file && r->file)
        fclose(r->file);
    hm__handle_map_destroy(&r->known);
    hm__trace_env_store_free(&r->env);
    free(r->regions.v);
    free(r->blocks.v);
    free(r->regions.dead);
    free(r->blocks.dead);
    free(r->threads);
    free(r->ring_copy);
    free(r->ring_held);
    if (r->own_buf)
        free(r->buf);
    free(r->path);
    free(r);
}

HM_API const char *hm_trace_error(const hm_trace_reader *r) { return r->error; }
HM_API hm_trace_encoding hm_trace_reader_encoding(const hm_trace_reader *r) { return r->encoding; }
HM_API uint64_t hm_trace_reader_lost(const hm_trace_reader *r) { return r->lost; }
HM_API const hm_trace_env *hm_trace_reader_env(const hm_trace_reader *r) { return &r->env.view; }
uint64_t hm__trace_reader_implied(const hm_trace_reader *r) { return r->implied; }

HM_API int hm_trace_reader_incomplete(const hm_trace_reader *r, uint64_t *calls, const char **reason)
{
    if (calls)
        *calls = r->incomplete ? r->incomplete_calls : 0;
    if (reason)
        *reason = r->incomplete ? r->incomplete_reason : "";
    return r->incomplete;
}

/* "#! incomplete: recording stopped after N calls: REASON" (s is the line, len its length). */
static void read_incomplete_text(hm_trace_reader *r, const char *s, size_t len)
{
    size_t i = strlen(HM_TRACE_INCOMPLETE_TEXT);
    uint64_t n = 0;
    for (; i < len && s[i] >= '0' && s[i] <= '9' && n < UINT64_MAX / 10; i++)
        n = n * 10 + (uint64_t)(s[i] - '0');
    const char *sep = " calls: ";
    size_t seplen = strlen(sep);
    size_t at = len - i >= seplen && memcmp(s + i, sep, seplen) == 0 ? i + seplen : len;
    r->incomplete = true;
    r->incomplete_calls = n;
    snprintf(r->incomplete_reason, sizeof r->incomplete_reason, "%.*s", (int)(len - at), s + at);
}

/* ---- Handle checks (text and binary) ----------------------------------------------------------------------- */
static const char *kind_name(uint32_t kind)
{
    switch (kind) {
    case HM_REF_ALLOC: return "@";
    case HM_REF_BLOCK: return "#";
    case HM_HANDLE_HEAP: return "h";
    default: return "c";
    }
}

static const char *use_field(const hm_trace_call *c, uint32_t kind)
{
    if (kind == HM_HANDLE_HEAP)
        return "heap";
    if (kind == HM_HANDLE_CALLBACK)
        return "callback";
    return c->method == HM_METHOD_HEAP_FREE || c->addr.kind != HM_REF_RAW ? "addr" : "mem";
}

static int check_handles(hm_trace_reader *r, const hm_trace_call *c)
{
    hm_trace_handle uses[4], created;
    size_t n = hm__trace_call_handles(c, uses, &created);
    for (size_t i = 0; i < n; i++) {
        if (!hm__handle_map_find(&r->known, uses[i].kind, uses[i].handle))
            return reader_fail(r, "field '%s': unknown handle '%s%" PRIu32 "'", use_field(c, uses[i].kind),
                               kind_name(uses[i].kind), uses[i].handle);
    }
    /* What a call returns: a fresh handle, or an address inside a known one. */
    bool ok = SUCCEEDED(c->result);
    if ((c->method == HM_METHOD_VIRTUAL_ALLOC || c->method == HM_METHOD_HEAP_ALLOC ||
         c->method == HM_METHOD_HEAP_DEBUG_ALLOC) && c->mem.kind != HM_REF_RAW) {
        hm_handle_entry *e = hm__handle_map_find(&r->known, c->mem.kind, c->mem.handle);
        bool fresh = c->mem.value == 0 && (!e || !e->live) && ok;
        if (!fresh && !e)
            return reader_fail(r, "field 'mem': unknown handle '%s%" PRIu32 "'", kind_name(c->mem.kind), c->mem.handle);
        if (c->method != HM_METHOD_VIRTUAL_ALLOC && !fresh)
            return reader_fail(r, "field 'mem': heap block '#%" PRIu32 "' returned twice", c->mem.handle);
        if (fresh && e && c->method == HM_METHOD_VIRTUAL_ALLOC && c->mem.kind == HM_REF_ALLOC &&
            c->addr.kind == HM_REF_ALLOC && c->addr.handle == c->mem.handle)
            fresh = false; /* committing in a region named by its own (dead) handle: not a new region */
        if (fresh && e)
            return reader_fail(r, "field 'mem': handle '%s%" PRIu32 "' created twice", kind_name(c->mem.kind),
                               c->mem.handle);
    }
    if (c->has_mbi) {
        const hm_trace_ref *refs[2] = {&c->mbi_base, &c->mbi_alloc_base};
        const char *names[2] = {"base", "allocbase"};
        for (int i = 0; i < 2; i++)
            if (refs[i]->kind != HM_REF_RAW && !hm__handle_map_find(&r->known, refs[i]->kind, refs[i]->handle))
                return reader_fail(r, "field '%s': unknown handle '%s%" PRIu32 "'", names[i], kind_name(refs[i]->kind),
                                   refs[i]->handle);
    }
    if (created.kind) {
        hm_handle_entry *e = hm__handle_map_find(&r->known, created.kind, created.handle);
        if (e && (created.kind == HM_HANDLE_HEAP || created.kind == HM_HANDLE_CALLBACK))
            return reader_fail(r, "field '%s': handle '%s%" PRIu32 "' created twice",
                               created.kind == HM_HANDLE_HEAP ? "heap" : "callback", kind_name(created.kind),
                               created.handle);
        if (!e && !hm__handle_map_put(&r->known, created.kind, created.handle))
            return reader_fail(r, "out of memory");
    }
    /* What a call ends. */
    hm_handle_entry *dead = NULL;
    if (ok && c->method == HM_METHOD_VIRTUAL_FREE && (c->type & MEM_RELEASE) && c->addr.kind == HM_REF_ALLOC)
        dead = hm__handle_map_find(&r->known, HM_REF_ALLOC, c->addr.handle);
    else if (ok && c->method == HM_METHOD_HEAP_FREE && c->addr.kind == HM_REF_BLOCK && c->addr.value == 0)
        dead = hm__handle_map_find(&r->known, HM_REF_BLOCK, c->addr.handle);
    else if (c->method == HM_TRACE_HEAP_RELEASE)
        dead = hm__handle_map_find(&r->known, HM_HANDLE_HEAP, c->heap);
    if (dead)
        hm__handle_map_kill(&r->known, dead);
    return 0;
}

static int check_call(hm_trace_reader *r, const hm_trace_call *c)
{
    if (c->seq <= r->last_seq)
        return reader_fail(r, "field 'seq': %" PRIu64 " does not follow %" PRIu64, c->seq, r->last_seq);
    r->last_seq = c->seq;
    return check_handles(r, c);
}

/* ---- Text --------------------------------------------------------------------------------------------------- */
static int next_text(hm_trace_reader *r, hm_trace_call *c)
{
    for (;;) {
        fill(r, HM_TRACE_LINE_MAX + 1);
        if (r->start == r->end)
            return 0;
        const char *s = (const char *)r->buf + r->start;
        size_t have = r->end - r->start;
        const char *nl = memchr(s, '\n', have);
        r->line++;
        if (!nl && have > HM_TRACE_LINE_MAX)
            return reader_fail(r, "field 'line': longer than %d bytes", HM_TRACE_LINE_MAX);
        /* A last line without newline is a line cut by a crash: read it if it parses, else end there. */
        bool cut = !nl;
        size_t len = nl ? (size_t)(nl - s) : have;
        r->start += nl ? len + 1 : len;
        if (len && s[len - 1] == '\r')
            len--;
        if (len > HM_TRACE_LINE_MAX)
            return reader_fail(r, "field 'line': longer than %d bytes", HM_TRACE_LINE_MAX);
        size_t i = 0;
        while (i < len && (s[i] == ' ' || s[i] == '\t'))
            i++;
        if (len >= strlen(HM_TRACE_INCOMPLETE_TEXT) &&
            memcmp(s, HM_TRACE_INCOMPLETE_TEXT, strlen(HM_TRACE_INCOMPLETE_TEXT)) == 0)
            read_incomplete_text(r, s, len);
        /* The environment's lines, in the header (a cut last line is not read: its value may be cut too). */
        if (len && s[0] == '#' && !cut) {
            char err[256];
            int got = hm__trace_env_parse_line(&r->env, s, len, err, sizeof err);
            if (got < 0)
                return reader_fail(r, "%s", err);
            if (got > 0 && r->seen_call)
                return reader_fail(r, "field 'env': a line of the environment after the first call (it belongs in "
                                      "the header)");
        }
        if (i == len || s[i] == '#')
            continue;
        char err[256];
        if (hm__trace_parse_line(s, len, c, err, sizeof err) != 0) {
            if (cut)
                return 0;
            return reader_fail(r, "%s", err);
        }
        r->seen_call = true;
        return check_call(r, c) ? -1 : 1;
    }
}

/* ---- Binary ------------------------------------------------------------------------------------------------- */
static int next_binary(hm_trace_reader *r, hm_trace_call *c)
{
    for (;;) {
        fill(r, HM_TRACE_BIN_RECORD_MAX);
        if (r->start == r->end)
            return 0;
        r->line++;
        const uint8_t *p = r->buf + r->start;
        size_t have = r->end - r->start;
        if (p[0] != 0)
            break;
        /* Not a record (its sequence number would be 0): the marker of an incomplete trace. */
        size_t used = 1;
        uint64_t calls = 0, len = 0;
        long n = hm_varint_get(p + used, have - used, &calls);
        if (n > 0) {
            used += (size_t)n;
            n = hm_varint_get(p + used, have - used, &len);
        }
        if (n <= 0 || len >= HM_TRACE_INCOMPLETE_REASON_MAX || have - used - (size_t)n < len)
            return reader_fail(r, "field 'incomplete': bad marker of an incomplete trace");
        used += (size_t)n;
        r->incomplete = true;
        r->incomplete_calls = calls;
        snprintf(r->incomplete_reason, sizeof r->incomplete_reason, "%.*s", (int)len, (const char *)p + used);
        r->start += used + (size_t)len;
    }
    char err[256];
    long n = hm__trace_decode_binary(r->buf + r->start, r->end - r->start, c, err, sizeof err);
    if (n < 0)
        return reader_fail(r, "%s", err);
    if (n == 0)
        return reader_fail(r, "field '?': record cut short (the file ends inside it)");
    r->start += (size_t)n;
    return check_call(r, c) ? -1 : 1;
}

/* ---- Raw: relocation ---------------------------------------------------------------------------------------- */
/* The last span starting at or before addr, or -1. */
static long span_floor(const span_set *s, uint64_t addr)
{
    long lo = 0, hi = (long)s->count - 1, found = -1;
    while (lo <= hi) {
        long mid = lo + (hi - lo) / 2;
        if (s->v[mid].start <= addr) {
            found = mid;
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    return found;
}

static span *span_containing(span_set *s, uint64_t addr)
{
    long i = span_floor(s, addr);
    return i >= 0 && addr < s->v[i].end ? &s->v[i] : NULL;
}

static void span_erase(span_set *s, size_t i)
{
    memmove(&s->v[i], &s->v[i + 1], (s->count - i - 1) * sizeof *s->v);
    s->count--;
}

/* A new span: whatever it overlaps is gone (the host reused the addresses), so it is dropped. */
static span *span_insert(span_set *s, uint64_t start, uint64_t size)
{
    uint64_t end = start + (size ? size : 1);
    if (end < start)
        end = UINT64_MAX;
    long i = span_floor(s, start);
    if (i >= 0 && s->v[i].end > start)
        span_erase(s, (size_t)i--);
    size_t at = (size_t)(i + 1);
    while (at < s->count && s->v[at].start < end)
        span_erase(s, at);
    if (s->count == s->capacity) {
        size_t capacity = s->capacity ? s->capacity * 2 : 64;
        span *v = realloc(s->v, capacity * sizeof *v);
        if (!v)
            return NULL;
        s->v = v;
        s->capacity = capacity;
    }
    memmove(&s->v[at + 1], &s->v[at], (s->count - at) * sizeof *s->v);
    s->count++;
    s->v[at] = (span){start, end, 0, ++s->next_handle, 1};
    return &s->v[at];
}

static void span_kill(span_set *s, span *sp)
{
    if (!sp->live)
        return;
    sp->live = 0;
    if (s->dead_count == s->dead_capacity && s->dead_capacity < HM_TRACE_DEAD_KEPT) {
        /* Grow the ring (unrolled, oldest first): memory follows the deaths seen, up to the window. */
        size_t capacity = s->dead_capacity ? s->dead_capacity * 2 : 64;
        if (capacity > HM_TRACE_DEAD_KEPT)
            capacity = HM_TRACE_DEAD_KEPT;
        span *dead = malloc(capacity * sizeof *dead);
        if (!dead)
            return;
        for (size_t i = 0; i < s->dead_count; i++)
            dead[i] = s->dead[(s->dead_head + i) % s->dead_capacity];
        free(s->dead);
        s->dead = dead;
        s->dead_head = 0;
        s->dead_capacity = capacity;
    }
    span victim = {0, 0, 0, 0, 0};
    if (s->dead_count == HM_TRACE_DEAD_KEPT) {
        victim = s->dead[s->dead_head];
        s->dead_head = (s->dead_head + 1) % HM_TRACE_DEAD_KEPT;
        s->dead_count--;
    }
    s->dead[(s->dead_head + s->dead_count++) % s->dead_capacity] = *sp;
    if (victim.handle) {
        /* Forgotten as the validating reader and the replayer forget it (sp may move: it is not used below). */
        long i = span_floor(s, victim.start);
        if (i >= 0 && s->v[i].start == victim.start && s->v[i].handle == victim.handle && !s->v[i].live)
            span_erase(s, (size_t)i);
    }
}

/* An address as what holds it at this call: a live block, else a live region, else the one of a dead block and a
 * dead region that died last (a query after a release names what was there). A dead handle must never win over a
 * live one: on the replay host it stands for other memory. */
static hm_trace_ref relocate(hm_trace_reader *r, uint64_t addr)
{
    span *block = span_containing(&r->blocks, addr), *region = span_containing(&r->regions, addr);
    if (block && !block->live && region && (region->live || region->died > block->died))
        block = NULL;
    if (block)
        return (hm_trace_ref){addr - block->start, block->handle, HM_REF_BLOCK};
    if (region)
        return (hm_trace_ref){addr - region->start, region->handle, HM_REF_ALLOC};
    return (hm_trace_ref){addr, 0, HM_REF_RAW};
}

static void kill_span(hm_trace_reader *r, span_set *s, span *sp)
{
    sp->died = r->last_seq;
    span_kill(s, sp);
}

/* A live span overlapping [start, end), or NULL. */
static span *live_overlap(span_set *s, uint64_t start, uint64_t end)
{
    for (long i = span_floor(s, end - 1); i >= 0 && s->v[i].end > start; i--)
        if (s->v[i].live)
            return &s->v[i];
    return NULL;
}

/* A new region [start, end): the live blocks there are gone (their heap gave the memory back; a heap's last
 * Release frees blocks no Free names). With calls lost in flight, a live region there was released by one of
 * them: the new call proves it, so it is implied rather than taken for a host handing out live memory twice. */
static void new_region_clears(hm_trace_reader *r, uint64_t start, uint64_t size)
{
    uint64_t end = start + (size ? size : 1);
    if (end < start)
        end = UINT64_MAX;
    span *sp;
    while ((sp = live_overlap(&r->blocks, start, end))) /* one at a time: a kill may move the spans */
        kill_span(r, &r->blocks, sp);
    while (r->lost && (sp = live_overlap(&r->regions, start, end))) {
        kill_span(r, &r->regions, sp);
        r->implied++;
    }
}

/* Recorded thread ids are small numbers from the recorder, numbered here in order of first appearance; a hostile
 * file (or a run of more threads than this) may hold any value: an id beyond the table keeps its value, moved past
 * every number the table can give (0 for the one id that cannot be moved: refused). */
#define MAX_RECORDED_THREAD 65536u

static uint32_t thread_number(hm_trace_reader *r, uint32_t recorded)
{
    if (recorded >= MAX_RECORDED_THREAD)
        return recorded + 1;
    if (recorded >= r->thread_count) {
        size_t count = recorded + 16;
        uint32_t *t = realloc(r->threads, count * sizeof *t);
        if (!t)
            return 0;
        memset(t + r->thread_count, 0, (count - r->thread_count) * sizeof *t);
        r->threads = t;
        r->thread_count = count;
    }
    if (!r->threads[recorded])
        r->threads[recorded] = ++r->next_thread;
    return r->threads[recorded];
}

static bool slot_committed(const uint8_t *p, uint64_t slot)
{
    uint64_t commit;
    memcpy(&commit, p, sizeof commit);
    return commit == (HM_RAW_COMMIT_TAG | ((slot + 1) & HM_RAW_COMMIT_MASK));
}

static bool all_zero(const uint8_t *p, size_t n)
{
    return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0); /* libc's memcmp: a closed trace's 1 MiB ring */
}

/* Version 2 with records left in the ring: each slot from its place, or else from the ring. */
static int next_raw_ring(hm_trace_reader *r, hm_raw_record *rec, const uint8_t **extra)
{
    for (;;) {
        fill(r, HM_RAW_SLOT * 4);
        size_t have = r->end - r->start;
        const uint8_t *p = have >= HM_RAW_SLOT ? r->buf + r->start : NULL;
        const uint8_t *q = ring_at(r, r->slot & (r->ring_slots - 1));
        r->line = r->slot + 1;
        bool in_place = p && slot_committed(p, r->slot);
        if (in_place || slot_committed(q, r->slot)) {
            memcpy(rec, in_place ? p : q, sizeof *rec);
            if (rec->nslots < 1 || rec->nslots > 4 || rec->method >= HM_TRACE_METHOD_COUNT)
                return reader_fail(r, "field '%s': bad value in a committed slot",
                                   rec->method >= HM_TRACE_METHOD_COUNT ? "method" : "nslots");
            size_t len = (size_t)rec->nslots * HM_RAW_SLOT;
            if (in_place) {
                if (have < len)
                    return 0; /* extra slots cut off: the call was in flight */
                memcpy(r->extra, p + HM_RAW_SLOT, len - HM_RAW_SLOT);
            } else {
                for (unsigned i = 1; i < rec->nslots; i++)
                    memcpy(r->extra + (i - 1) * HM_RAW_SLOT, ring_at(r, (r->slot + i) & (r->ring_slots - 1)),
                           HM_RAW_SLOT);
            }
            *extra = r->extra;
            size_t skip = have < len ? have / HM_RAW_SLOT * HM_RAW_SLOT : len;
            r->start += skip;
            r->slot += rec->nslots;
            r->in_hole = false;
            return 1;
        }
        if (r->slot >= r->ring_max && (!p || all_zero(p, have > READ_CHUNK / 2 ? READ_CHUNK / 2 : have)))
            return 0; /* past the ring's last record, and nothing (or zeros) in place: the end */
        if (!r->in_hole)
            r->lost++; /* a call in flight when the recorder died */
        r->in_hole = true;
        if (p) {
            r->start += HM_RAW_SLOT;
            r->slot++;
            continue;
        }
        /* Nothing in place any more: on to the next record the ring holds (a hostile file may name any slot). */
        while (r->ring_held_next < r->ring_held_count && r->ring_held[r->ring_held_next] <= r->slot)
            r->ring_held_next++;
        if (r->ring_held_next == r->ring_held_count)
            return 0;
        r->slot = r->ring_held[r->ring_held_next];
    }
}

static int next_raw(hm_trace_reader *r, hm_trace_call *c)
{
    hm_raw_record rec;
    const uint8_t *extra = NULL;
    if (r->incomplete && r->last_seq >= r->incomplete_calls)
        return 0; /* where the recorder stopped: what the file holds after it is not the trace */
    if (r->ring) {
        int got = next_raw_ring(r, &rec, &extra);
        if (got <= 0)
            return got;
    }
    for (; !extra;) {
        fill(r, HM_RAW_SLOT * 4);
        size_t have = r->end - r->start;
        if (have < HM_RAW_SLOT)
            return 0; /* the end, or a slot cut short by a kill */
        const uint8_t *p = r->buf + r->start;
        r->line = r->slot + 1;
        if (!slot_committed(p, r->slot)) {
            /* Zeros to the end of the file are the unused rest of the recorder's mapping; anything else is a
             * call that was in flight when the recorder died, or garbage. */
            if (all_zero(p, HM_RAW_SLOT)) {
                bool rest_zero = true;
                while (rest_zero) {
                    fill(r, READ_CHUNK);
                    if (r->start == r->end)
                        return 0;
                    size_t n = (r->end - r->start) / HM_RAW_SLOT * HM_RAW_SLOT;
                    if (n == 0)
                        return 0;
                    for (size_t off = 0; off < n; off += HM_RAW_SLOT) {
                        if (!all_zero(r->buf + r->start + off, HM_RAW_SLOT)) {
                            rest_zero = false;
                            n = off;
                            break;
                        }
                    }
                    r->start += n;
                    r->slot += n / HM_RAW_SLOT;
                }
                r->lost++; /* a hole with calls after it */
                continue;
            }
            r->start += HM_RAW_SLOT;
            r->slot++;
            r->lost++;
            continue;
        }
        memcpy(&rec, p, sizeof rec);
        if (rec.nslots < 1 || rec.nslots > 4 || rec.method >= HM_TRACE_METHOD_COUNT)
            return reader_fail(r, "field '%s': bad value in a committed slot", rec.method >= HM_TRACE_METHOD_COUNT ? "method" : "nslots");
        if (have < (size_t)rec.nslots * HM_RAW_SLOT)
            return 0; /* extra slots cut off: the call was in flight */
        extra = r->buf + r->start + HM_RAW_SLOT;
        r->start += (size_t)rec.nslots * HM_RAW_SLOT;
        r->slot += rec.nslots;
    }

    hm__trace_call_init(c);
    c->seq = ++r->last_seq;
    c->thread = thread_number(r, rec.thread);
    if (!c->thread)
        return reader_fail(r, "field 'thread': bad thread id %" PRIu32, rec.thread);
    c->method = rec.method;
    /* Only the out-parameters the method has (a hostile file may set any bit). */
    bool two_outs = c->method == HM_METHOD_VIRTUAL_QUERY || c->method == HM_METHOD_GET_MEMORY_LOAD;
    bool one_out = two_outs || c->method == HM_METHOD_CREATE_MALLOC || c->method == HM_METHOD_VIRTUAL_ALLOC ||
                   c->method == HM_METHOD_VIRTUAL_PROTECT || c->method == HM_METHOD_HEAP_ALLOC ||
                   c->method == HM_METHOD_HEAP_DEBUG_ALLOC;
    c->nulls = rec.nulls & ((one_out ? HM_TRACE_NULL_OUT1 : 0) | (two_outs ? HM_TRACE_NULL_OUT2 : 0));
    c->result = rec.result;
    c->level = hm__trace_method_has_level(c->method) ? (rec.level == HM_RAW_NO_LEVEL ? -1 : rec.level) : -1;
    bool ok = SUCCEEDED(rec.result);
    switch (c->method) {
    case HM_METHOD_CREATE_MALLOC:
        c->type = rec.a32;
        c->heap = ok ? rec.id : 0;
        break;
    case HM_METHOD_VIRTUAL_ALLOC: {
        c->addr = relocate(r, rec.addr);
        c->size = rec.size;
        c->type = rec.a32;
        c->prot = rec.b32;
        if (c->nulls & HM_TRACE_NULL_OUT1)
            break;
        /* A call asking for a new region (not a commit inside a known one) ends what was at its answer. */
        bool fresh = ok && rec.out && ((rec.a32 & MEM_RESERVE) || !rec.addr);
        if (fresh)
            new_region_clears(r, rec.out, rec.size);
        span *sp = ok && rec.out ? span_containing(&r->regions, rec.out) : NULL;
        if (sp && sp->live) {
            c->mem = (hm_trace_ref){rec.out - sp->start, sp->handle, HM_REF_ALLOC};
        } else if (ok && rec.out) {
            sp = span_insert(&r->regions, rec.out, rec.size);
            if (!sp)
                return reader_fail(r, "out of memory");
            c->mem = (hm_trace_ref){0, sp->handle, HM_REF_ALLOC};
        } else {
            c->mem = relocate(r, rec.out);
        }
        break;
    }
    case HM_METHOD_VIRTUAL_FREE: {
        c->addr = relocate(r, rec.addr);
        c->size = rec.size;
        c->type = rec.a32;
        span *sp = span_containing(&r->regions, rec.addr);
        if (ok && (rec.a32 & MEM_RELEASE) && sp)
            kill_span(r, &r->regions, sp);
        break;
    }
    case HM_METHOD_VIRTUAL_QUERY:
        c->addr = relocate(r, rec.addr);
        c->size = rec.size;
        c->query_result = rec.out;
        c->concurrent = (rec.flags & HM_RAW_CONCURRENT) != 0;
        if ((rec.flags & HM_RAW_MBI_PACKED) || (rec.flags & HM_RAW_HAS_MBI && rec.nslots >= 2)) {
            MEMORY_BASIC_INFORMATION mbi;
            if (rec.flags & HM_RAW_MBI_PACKED)
                hm_raw_unpack_mbi(&rec, &mbi);
            else
                memcpy(&mbi, extra, sizeof mbi);
            c->has_mbi = 1;
            c->mbi_base = relocate(r, (uint64_t)(uintptr_t)mbi.BaseAddress);
            c->mbi_alloc_base = relocate(r, (uint64_t)(uintptr_t)mbi.AllocationBase);
            c->mbi_alloc_protect = mbi.AllocationProtect;
            c->mbi_region_size = mbi.RegionSize;
            c->mbi_state = mbi.State;
            c->mbi_protect = mbi.Protect;
            c->mbi_type = mbi.Type;
        }
        break;
    case HM_METHOD_VIRTUAL_PROTECT:
        c->addr = relocate(r, rec.addr);
        c->size = rec.size;
        c->prot = rec.b32;
        c->old_prot = (uint32_t)rec.out;
        break;
    case HM_METHOD_GET_MEMORY_LOAD:
        c->load = rec.b32;
        c->available_bytes = rec.out;
        break;
    case HM_METHOD_REGISTER_CALLBACK:
        c->callback = rec.id;
        break;
    case HM_METHOD_NEEDS_VAS:
    case HM_METHOD_ACQUIRED_VAS:
        c->addr = relocate(r, rec.addr);
        c->size = rec.size;
        break;
    case HM_METHOD_RELEASED_VAS:
        c->addr = relocate(r, rec.addr);
        break;
    case HM_METHOD_HEAP_ALLOC:
    case HM_METHOD_HEAP_DEBUG_ALLOC:
        c->heap = rec.id;
        c->size = rec.size;
        if (c->method == HM_METHOD_HEAP_DEBUG_ALLOC) {
            c->line = (int)rec.a32;
            if (rec.flags & HM_RAW_HAS_FILE) {
                size_t room = (size_t)(rec.nslots - 1) * HM_RAW_SLOT;
                if (room > HM_TRACE_FILE_MAX - 1)
                    room = HM_TRACE_FILE_MAX - 1;
                memcpy(c->file, extra, room);
                c->file[room] = '\0';
                c->has_file = 1;
            }
        }
        if (c->nulls & HM_TRACE_NULL_OUT1)
            break;
        if (ok && rec.out) {
            span *old = r->lost ? span_containing(&r->blocks, rec.out) : NULL;
            if (old && old->live)
                r->implied++; /* its Free was lost in flight: this block proves it */
            span *sp = span_insert(&r->blocks, rec.out, rec.size);
            if (!sp)
                return reader_fail(r, "out of memory");
            c->mem = (hm_trace_ref){0, sp->handle, HM_REF_BLOCK};
        } else {
            c->mem = relocate(r, rec.out);
        }
        break;
    case HM_METHOD_HEAP_FREE: {
        c->heap = rec.id;
        c->addr = relocate(r, rec.addr);
        span *sp = span_containing(&r->blocks, rec.addr);
        if (ok && sp && sp->start == rec.addr)
            kill_span(r, &r->blocks, sp);
        break;
    }
    case HM_TRACE_ON_NOTIFICATION:
        c->callback = rec.id;
        c->available = (int)rec.a32;
        break;
    case HM_TRACE_HEAP_RELEASE:
        c->heap = rec.id;
        break;
    }
    return 1;
}

HM_API int hm_trace_next(hm_trace_reader *r, hm_trace_call *c)
{
    if (r->failed)
        return -1;
    switch (r->encoding) {
    case HM_TRACE_TEXT: return next_text(r, c);
    case HM_TRACE_BINARY: return next_binary(r, c);
    case HM_TRACE_RAW: return next_raw(r, c);
    }
    return -1;
}

HM_API HRESULT hm_trace_load(const char *path, hm_trace **out)
{
    *out = NULL;
    hm_trace_reader *r;
    HRESULT hr = hm_trace_open(path, &r);
    if (FAILED(hr))
        return hr;
    hm_trace *t = calloc(1, sizeof *t);
    size_t capacity = 0;
    int got = 0;
    if (!t) {
        hm_trace_close(r);
        return E_OUTOFMEMORY;
    }
    for (;;) {
        if (t->count == capacity) {
            capacity = capacity ? capacity * 2 : 256;
            hm_trace_call *calls = realloc(t->calls, capacity * sizeof *calls);
            if (!calls) {
                hm__set_error("out of memory loading trace '%s'", path);
                got = -2;
                break;
            }
            t->calls = calls;
        }
        got = hm_trace_next(r, &t->calls[t->count]);
        if (got <= 0)
            break;
        t->count++;
    }
    if (got == 0 && !hm__trace_env_copy(hm_trace_reader_env(r), &t->env)) {
        hm__set_error("out of memory loading trace '%s'", path);
        got = -2;
    }
    const char *why;
    t->incomplete = hm_trace_reader_incomplete(r, &t->incomplete_calls, &why);
    snprintf(t->incomplete_reason, sizeof t->incomplete_reason, "%s", why);
    hm_trace_close(r); /* keeps HostMemLastError() */
    if (got < 0) {
        hm_trace_free(t);
        return got == -2 ? E_OUTOFMEMORY : E_INVALIDARG;
    }
    *out = t;
    return S_OK;
}

HM_API void hm_trace_free(hm_trace *t)
{
    if (!t)
        return;
    free(t->calls);
    hm__trace_env_free_copy(&t->env);
    free(t);
}

/* Fuzz target: the trace reader (text, binary and raw encodings, detected from the bytes). A hostile file must be
 * read to its end or refused with a message naming file, line and field; never a crash or a hang. Each line is
 * also fed to the line parser directly. And what was read must survive the writer: the calls read are written as
 * text and as binary, read back, and must format to the same lines (the encodings carry the same information), the
 * header's environment (host, options, faults, ...) included.
 *
 * Speed: the input is read where it lies (hm__trace_open_memory: no file, no copy, no 256 KiB read buffer), and the
 * round trip is written through two streams opened once, unbuffered, into buffers kept from one input to the next. */
#include "fuzz.h"

#include "trace_internal.h"

#include <hostmem/hostmem.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CALLS 4096     /* calls compared in the round trip (a bigger input is read to its end, unchecked beyond) */
#define ENCODED_MAX (4u << 20) /* room for the text or binary form of MAX_CALLS calls (a line is under 4096 bytes) */

/* Streams kept from one input to the next, each writing straight into its own buffer (fmemopen, unbuffered):
 * opening a stream per input costs a stdio buffer allocation per write side, which under ASan (allocation, fill,
 * quarantine) cost more than reading a small trace does. */
static char *encoded_text, *encoded_binary;
static FILE *text_stream, *binary_stream;

/* The calls of a reader as text lines, one per call, and how the reader ended. */
typedef struct lines {
    char *text;
    size_t len, capacity;
    size_t calls;
    int end; /* 0: the end of the trace, -1: an error */
    int incomplete;
    uint64_t incomplete_calls;
} lines;

static void add_line(lines *out, const char *line, size_t n)
{
    if (out->len + n + 1 > out->capacity) {
        size_t capacity = out->capacity ? out->capacity : 65536;
        while (capacity < out->len + n + 1)
            capacity *= 2;
        char *text = realloc(out->text, capacity);
        if (!text)
            abort();
        out->text = text;
        out->capacity = capacity;
    }
    memcpy(out->text + out->len, line, n);
    out->text[out->len + n] = '\n';
    out->len += n + 1;
}

static void read_all(hm_trace_reader *reader, const char *name, lines *out, hm_trace_writer *text,
                     hm_trace_writer *binary)
{
    hm_trace_call call;
    int got;
    out->len = 0;
    /* The environment first, as its header lines: the writers must carry every field the reader accepted. */
    char err[256];
    size_t env_len;
    char *env = hm__trace_env_format(hm_trace_reader_env(reader), &env_len, err, sizeof err);
    if (!env)
        abort(); /* a field the reader accepted and the writer refuses */
    if (env_len)
        add_line(out, env, env_len - 1); /* without its last newline: add_line adds one */
    free(env);
    if ((text && hm_trace_write_env(text, hm_trace_reader_env(reader)) != S_OK) ||
        (binary && hm_trace_write_env(binary, hm_trace_reader_env(reader)) != S_OK))
        abort();
    for (out->calls = 0; (got = hm_trace_next(reader, &call)) > 0; out->calls++) {
        if (out->calls >= MAX_CALLS)
            continue;
        char line[HM_TRACE_LINE_MAX];
        size_t n = hm_trace_format_call(&call, line, sizeof line);
        add_line(out, line, n < sizeof line ? n : sizeof line - 1);
        if (text)
            hm_trace_write(text, &call);
        if (binary)
            hm_trace_write(binary, &call);
    }
    out->end = got;
    const char *why;
    out->incomplete = hm_trace_reader_incomplete(reader, &out->incomplete_calls, &why);
    if (out->incomplete && got == 0) {
        if (text)
            hm_trace_write_incomplete(text, out->incomplete_calls, why);
        if (binary)
            hm_trace_write_incomplete(binary, out->incomplete_calls, why);
    }
    const char *error = hm_trace_error(reader);
    if (got < 0 && (!error || !strstr(error, name)))
        abort(); /* an error must name the file */
}

/* Reads back what the writer made of the calls: every call, the same lines, the same marker. */
static void check_round_trip(const lines *first, lines *again, const char *encoded, size_t len, const char *name)
{
    hm_trace_reader *reader;
    if (hm__trace_open_memory(encoded, len, name, &reader) != S_OK)
        abort();
    read_all(reader, name, again, NULL, NULL);
    hm_trace_close(reader);
    if (again->end != 0 || again->calls != first->calls || again->len != first->len ||
        (first->len && memcmp(again->text, first->text, first->len) != 0) || again->incomplete != first->incomplete ||
        again->incomplete_calls != first->incomplete_calls)
        abort();
}

/* A writer into one of the kept buffers, from its start; *f is its stream, opened on first use. */
static hm_trace_writer *writer_into(char **buffer, hm_trace_encoding encoding, FILE **f)
{
    if (!*f) {
        if (!(*buffer = malloc(ENCODED_MAX)) || !(*f = fmemopen(*buffer, ENCODED_MAX, "w")) ||
            setvbuf(*f, NULL, _IONBF, 0) != 0)
            abort();
    }
    rewind(*f); /* also clears the error of an input that did not fit */
    hm_trace_writer *w;
    if (hm__trace_writer_open_stream(*f, encoding, &w) != S_OK)
        abort();
    return w;
}

/* Closes a writer into a kept buffer (the stream stays open): the bytes written, or 0 when they did not fit. */
static size_t writer_done(hm_trace_writer *w, FILE *f)
{
    bool ok = hm_trace_writer_close(w) == S_OK;
    long n = ftell(f);
    return ok && n > 0 && (size_t)n < ENCODED_MAX ? (size_t)n : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static lines first, again;
    if (size > (1 << 20))
        return 0;
    hm_trace_reader *reader;
    if (hm__trace_open_memory(data, size, "fuzz.trace", &reader) == S_OK) {
        hm_trace_writer *tw = writer_into(&encoded_text, HM_TRACE_TEXT, &text_stream);
        hm_trace_writer *bw = writer_into(&encoded_binary, HM_TRACE_BINARY, &binary_stream);
        hm_trace_encoding encoding = hm_trace_reader_encoding(reader);
        read_all(reader, "fuzz.trace", &first, tw, bw);
        hm_trace_close(reader);
        size_t text_len = writer_done(tw, text_stream), binary_len = writer_done(bw, binary_stream);
        /* A text or binary trace read to its end, in full, round-trips through both encodings. (Not yet a raw
         * one: its reader relocates addresses but does not check heap and callback handles, so a hostile raw file
         * can name a heap no call created, which the text reader then refuses.) */
        if (first.end == 0 && first.calls <= MAX_CALLS && encoding != HM_TRACE_RAW && text_len && binary_len) {
            check_round_trip(&first, &again, encoded_text, text_len, "fuzz.txt");
            check_round_trip(&first, &again, encoded_binary, binary_len, "fuzz.bin");
        }
    }
    /* The line parser on each line of the input. */
    const char *p = (const char *)data, *end = p + size;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = (size_t)((nl ? nl : end) - p);
        hm_trace_call call;
        char err[256];
        hm__trace_parse_line(p, len, &call, err, sizeof err);
        p = nl ? nl + 1 : end;
    }
    return 0;
}

/* Fuzz target: the trace reader (text, binary and raw encodings, detected from the bytes). A hostile file must be
 * read to its end or refused with a message naming file, line and field; never a crash or a hang. Each line is
 * also fed to the line parser directly. And what was read must survive the writer: the calls read are written as
 * text and as binary, read back, and must format to the same lines (the encodings carry the same information).
 *
 * Speed: the input is read where it lies (hm_trace_open_memory: no file, no copy, no 256 KiB read buffer), and the
 * round trip goes through memory streams. */
#include "trace_internal.h"

#include <hostmem/hostmem.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_CALLS 4096 /* calls compared in the round trip (a bigger input is read to its end, unchecked beyond) */

/* The calls of a reader as text lines, one per call, and how the reader ended. */
typedef struct lines {
    char *text;
    size_t len;
    size_t calls;
    int end; /* 0: the end of the trace, -1: an error */
    int incomplete;
    uint64_t incomplete_calls;
} lines;

static void read_all(hm_trace_reader *reader, const char *name, lines *out, hm_trace_writer *text,
                     hm_trace_writer *binary)
{
    FILE *f = open_memstream(&out->text, &out->len);
    if (!f)
        abort();
    hm_trace_call call;
    int got;
    for (out->calls = 0; (got = hm_trace_next(reader, &call)) > 0; out->calls++) {
        if (out->calls >= MAX_CALLS)
            continue;
        char line[HM_TRACE_LINE_MAX];
        hm_trace_format_call(&call, line, sizeof line);
        fprintf(f, "%s\n", line);
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
    fclose(f);
}

/* Reads back what the writer made of the calls: every call, the same lines, the same marker. */
static void check_round_trip(const lines *first, const char *encoded, size_t len, const char *name)
{
    hm_trace_reader *reader;
    if (hm_trace_open_memory(encoded, len, name, &reader) != S_OK)
        abort();
    lines again = {0};
    read_all(reader, name, &again, NULL, NULL);
    hm_trace_close(reader);
    if (again.end != 0 || again.calls != first->calls || again.len != first->len ||
        memcmp(again.text, first->text, first->len) != 0 || again.incomplete != first->incomplete ||
        again.incomplete_calls != first->incomplete_calls)
        abort();
    free(again.text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (1 << 20))
        return 0;
    hm_trace_reader *reader;
    if (hm_trace_open_memory(data, size, "fuzz.trace", &reader) == S_OK) {
        char *text = NULL, *binary = NULL;
        size_t text_len = 0, binary_len = 0;
        FILE *tf = open_memstream(&text, &text_len), *bf = open_memstream(&binary, &binary_len);
        hm_trace_writer *tw = NULL, *bw = NULL;
        if (!tf || !bf || hm_trace_writer_open_stream(tf, HM_TRACE_TEXT, &tw) != S_OK ||
            hm_trace_writer_open_stream(bf, HM_TRACE_BINARY, &bw) != S_OK)
            abort();
        lines first = {0};
        read_all(reader, "fuzz.trace", &first, tw, bw);
        hm_trace_close(reader);
        hm_trace_writer_close(tw);
        hm_trace_writer_close(bw);
        fclose(tf);
        fclose(bf);
        /* A trace read to its end, in full, round-trips through both encodings. */
        if (first.end == 0 && first.calls <= MAX_CALLS) {
            check_round_trip(&first, text, text_len, "fuzz.txt");
            check_round_trip(&first, binary, binary_len, "fuzz.bin");
        }
        free(first.text);
        free(text);
        free(binary);
    }
    /* The line parser on each line of the input. */
    const char *p = (const char *)data, *end = p + size;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = (size_t)((nl ? nl : end) - p);
        hm_trace_call call;
        char err[256];
        hm_trace_parse_line(p, len, &call, err, sizeof err);
        p = nl ? nl + 1 : end;
    }
    return 0;
}

/* Writing traces: text (one line per call) and binary (varints), through stdio buffering. */
#include "trace_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct hm_trace_writer {
    FILE *file;
    bool own_file;
    hm_trace_encoding encoding;
    bool failed;
    bool header_written; /* the magic and the environment go out before anything else */
};

/* Writes the header (magic and environment block) once, before the first call, comment or mark. */
static void write_header(hm_trace_writer *w, const char *env, size_t env_len)
{
    if (w->header_written)
        return;
    w->header_written = true;
    if (w->encoding == HM_TRACE_TEXT) {
        if (fprintf(w->file, "%s %d\n", HM_TRACE_TEXT_MAGIC, HM_TRACE_TEXT_VERSION) < 0)
            w->failed = true;
    } else {
        uint8_t len[10];
        size_t n = hm_varint_put(len, env_len);
        if (fputs(HM_TRACE_BIN_MAGIC, w->file) < 0 || fwrite(len, 1, n, w->file) != n)
            w->failed = true;
    }
    if (env_len && fwrite(env, 1, env_len, w->file) != env_len)
        w->failed = true;
}

static HRESULT writer_start(FILE *file, bool own_file, hm_trace_encoding encoding, hm_trace_writer **out)
{
    hm_trace_writer *w = calloc(1, sizeof *w);
    if (!w) {
        if (own_file)
            fclose(file);
        return E_OUTOFMEMORY;
    }
    w->encoding = encoding;
    w->file = file;
    w->own_file = own_file;
    *out = w;
    return S_OK;
}

HM_API HRESULT hm_trace_writer_open(const char *path, hm_trace_encoding encoding, hm_trace_writer **out)
{
    *out = NULL;
    if (encoding != HM_TRACE_TEXT && encoding != HM_TRACE_BINARY) {
        hm__set_error("only the recorder writes raw traces");
        return E_INVALIDARG;
    }
    if (strcmp(path, "-") == 0)
        return writer_start(stdout, false, encoding, out);
    FILE *f = fopen(path, "wb");
    if (!f) {
        hm__set_error("cannot create trace '%s': %s", path, strerror(errno));
        return E_FAIL;
    }
    return writer_start(f, true, encoding, out);
}

HRESULT hm__trace_writer_open_stream(FILE *file, hm_trace_encoding encoding, hm_trace_writer **out)
{
    *out = NULL;
    if (encoding != HM_TRACE_TEXT && encoding != HM_TRACE_BINARY)
        return E_INVALIDARG;
    return writer_start(file, false, encoding, out);
}

HM_API HRESULT hm_trace_write(hm_trace_writer *w, const hm_trace_call *c)
{
    if (c->method < 0 || c->method >= HM_TRACE_METHOD_COUNT)
        return E_INVALIDARG;
    write_header(w, NULL, 0);
    if (w->encoding == HM_TRACE_TEXT) {
        char line[HM_TRACE_LINE_MAX];
        size_t n = hm_trace_format_call(c, line, sizeof line);
        if (n >= sizeof line)
            return E_INVALIDARG; /* cannot happen with HM_TRACE_FILE_MAX names, but never write half a line */
        line[n++] = '\n';
        if (fwrite(line, 1, n, w->file) != n)
            w->failed = true;
    } else {
        uint8_t rec[HM_TRACE_BIN_RECORD_MAX];
        size_t n = hm__trace_encode_binary(c, rec);
        if (fwrite(rec, 1, n, w->file) != n)
            w->failed = true;
    }
    return w->failed ? E_FAIL : S_OK;
}

HM_API HRESULT hm_trace_write_env(hm_trace_writer *w, const hm_trace_env *env)
{
    if (w->header_written) {
        hm__set_error("the environment goes into the trace's header: write it before the first call");
        return E_INVALIDARG;
    }
    char err[256];
    size_t len = 0;
    char *block = hm__trace_env_format(env, &len, err, sizeof err);
    if (!block) {
        hm__set_error("the trace's environment is refused: %s", err);
        return E_INVALIDARG;
    }
    if (len > HM_RAW_ENV_MAX) { /* cannot happen with values within HM_TRACE_ENV_VALUE_MAX, but never write half */
        free(block);
        hm__set_error("the trace's environment is longer than %u bytes", HM_RAW_ENV_MAX);
        return E_INVALIDARG;
    }
    write_header(w, block, len);
    free(block);
    return w->failed ? E_FAIL : S_OK;
}

HM_API HRESULT hm_trace_write_comment(hm_trace_writer *w, const char *comment)
{
    if (w->encoding != HM_TRACE_TEXT)
        return S_FALSE;
    write_header(w, NULL, 0);
    /* One comment line per line of the text, so a newline in it cannot forge a call. */
    const char *s = comment;
    do {
        const char *nl = strchr(s, '\n');
        int len = nl ? (int)(nl - s) : (int)strlen(s);
        if (fprintf(w->file, "# %.*s\n", len, s) < 0)
            w->failed = true;
        s = nl ? nl + 1 : NULL;
    } while (s && *s);
    return w->failed ? E_FAIL : S_OK;
}

HM_API HRESULT hm_trace_write_incomplete(hm_trace_writer *w, uint64_t calls, const char *reason)
{
    char why[HM_TRACE_INCOMPLETE_REASON_MAX];
    /* One line of text: a newline in the reason would end the marker early. */
    snprintf(why, sizeof why, "%s", reason ? reason : "");
    for (char *p = why; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    write_header(w, NULL, 0);
    if (w->encoding == HM_TRACE_TEXT) {
        if (fprintf(w->file, "%s%llu calls: %s\n", HM_TRACE_INCOMPLETE_TEXT, (unsigned long long)calls, why) < 0)
            w->failed = true;
    } else {
        uint8_t rec[1 + 2 * 10 + sizeof why];
        size_t n = 0, len = strlen(why);
        rec[n++] = 0;
        n += hm_varint_put(rec + n, calls);
        n += hm_varint_put(rec + n, len);
        memcpy(rec + n, why, len);
        n += len;
        if (fwrite(rec, 1, n, w->file) != n)
            w->failed = true;
    }
    return w->failed ? E_FAIL : S_OK;
}

HM_API HRESULT hm_trace_writer_close(hm_trace_writer *w)
{
    if (!w)
        return S_OK;
    write_header(w, NULL, 0);
    if (fflush(w->file) != 0 || ferror(w->file))
        w->failed = true;
    if (w->own_file && fclose(w->file) != 0)
        w->failed = true;
    HRESULT hr = w->failed ? E_FAIL : S_OK;
    if (FAILED(hr))
        hm__set_error("writing the trace failed: %s", strerror(errno));
    free(w);
    return hr;
}

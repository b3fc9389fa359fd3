/* hostmem trace convert|cat|stats: traces between encodings, as text, and summarised. */
#include "cli.h"
#include "options.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static const char description[] =
    "  hostmem trace convert IN OUT [--to text|binary]   (default: binary when OUT ends in .bin)\n"
    "  hostmem trace cat IN                              (any encoding, as text, to stdout)\n"
    "  hostmem trace stats IN                            (calls and failures per method)\n";

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

int hm__cli_trace_copy(const char *in, const char *out, hm_trace_encoding encoding)
{
    hm_trace_reader *r;
    if (FAILED(hm_trace_open(in, &r))) {
        fprintf(stderr, "hostmem trace: %s\n", HostMemLastError());
        return HM_EXIT_USAGE;
    }
    hm_trace_writer *w;
    if (FAILED(hm_trace_writer_open(out, encoding, &w))) { /* an output that cannot be made: bad usage */
        fprintf(stderr, "hostmem trace: %s\n", HostMemLastError());
        hm_trace_close(r);
        return HM_EXIT_USAGE;
    }
    hm_trace_call call;
    int got;
    /* The recording's environment goes along (it was read with the header). */
    bool write_failed = FAILED(hm_trace_write_env(w, hm_trace_reader_env(r)));
    while ((got = hm_trace_next(r, &call)) > 0)
        if (FAILED(hm_trace_write(w, &call)))
            write_failed = true;
    if (got == 0 && hm_trace_reader_lost(r)) {
        char note[96];
        snprintf(note, sizeof note, "%" PRIu64 " gap(s) of calls in flight when the recorder was killed",
                 hm_trace_reader_lost(r));
        hm_trace_write_comment(w, note);
    }
    uint64_t recorded;
    const char *why;
    if (got == 0 && hm_trace_reader_incomplete(r, &recorded, &why) && FAILED(hm_trace_write_incomplete(w, recorded, why)))
        write_failed = true;
    if (FAILED(hm_trace_writer_close(w)))
        write_failed = true;
    int code = HM_EXIT_OK;
    if (got < 0) {
        fprintf(stderr, "hostmem trace: %s\n", hm_trace_error(r));
        code = HM_EXIT_USAGE;
    } else if (write_failed) {
        fprintf(stderr, "hostmem trace: writing '%s' failed\n", out);
        code = HM_EXIT_USAGE;
    }
    hm_trace_close(r);
    return code;
}

static int stats(const char *in)
{
    hm_trace_reader *r;
    if (FAILED(hm_trace_open(in, &r))) {
        fprintf(stderr, "hostmem trace: %s\n", HostMemLastError());
        return HM_EXIT_USAGE;
    }
    uint64_t calls[HM_TRACE_METHOD_COUNT] = {0}, failures[HM_TRACE_METHOD_COUNT] = {0};
    uint64_t total = 0;
    uint32_t threads = 0, regions = 0, blocks = 0, heaps = 0;
    hm_trace_call c;
    int got;
    while ((got = hm_trace_next(r, &c)) > 0) {
        total++;
        calls[c.method]++;
        if (FAILED(c.result))
            failures[c.method]++;
        if (c.thread > threads)
            threads = c.thread;
        if (c.mem.kind == HM_REF_ALLOC && c.mem.handle > regions)
            regions = c.mem.handle;
        if (c.mem.kind == HM_REF_BLOCK && c.mem.handle > blocks)
            blocks = c.mem.handle;
        if (c.method == HM_METHOD_CREATE_MALLOC && c.heap > heaps)
            heaps = c.heap;
    }
    if (got < 0) {
        fprintf(stderr, "hostmem trace: %s\n", hm_trace_error(r));
        hm_trace_close(r);
        return HM_EXIT_USAGE;
    }
    static const char *const encodings[] = {"text", "binary", "raw"};
    printf("%s: %s trace, %" PRIu64 " calls, %" PRIu32 " thread(s), %" PRIu32 " regions, %" PRIu32
           " heap blocks, %" PRIu32 " heaps",
           in, encodings[hm_trace_reader_encoding(r)], total, threads, regions, blocks, heaps);
    if (hm_trace_reader_lost(r))
        printf(", %" PRIu64 " gap(s) of calls lost in flight", hm_trace_reader_lost(r));
    const hm_trace_env *env = hm_trace_reader_env(r);
    const struct {
        const char *name, *value;
    } fields[] = {{"hostmem", env->version}, {"host", env->host},   {"host path", env->host_path},
                  {"host options", env->host_options}, {"faults", env->faults}, {"recorded at", env->time},
                  {"os", env->os},           {"pid", env->pid}};
    bool any = false;
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        if (*fields[i].value) {
            printf("%s%s: %s", any ? ", " : "\nrecorded with ", fields[i].name, fields[i].value);
            any = true;
        }
    if (!any)
        printf("\nno recording environment in the header (a trace from before hostmem recorded it)");
    uint64_t recorded;
    const char *why;
    if (hm_trace_reader_incomplete(r, &recorded, &why))
        printf("\nthe trace is incomplete: recording stopped after %" PRIu64 " calls: %s", recorded, why);
    printf("\n%-36s %12s %12s\n", "method", "calls", "failed");
    for (int m = 0; m < HM_TRACE_METHOD_COUNT; m++)
        if (calls[m])
            printf("%-36s %12" PRIu64 " %12" PRIu64 "\n", hm_trace_method_name(m), calls[m], failures[m]);
    hm_trace_close(r);
    return HM_EXIT_OK;
}

int hm__cmd_trace(int argc, char **argv)
{
    const char *to = NULL;
    const hm_option table[] = {
        {"--to", "text|binary", HM_OPTION_STRING, &to, 0, 0, "convert: the encoding of OUT", NULL},
    };
    const hm_command_spec spec = {"trace", "convert IN OUT | cat IN | stats IN", 2, 3, description, table,
                                  sizeof table / sizeof table[0]};
    const char *operands[3];
    size_t n;
    int parsed = hm__cli_parse_options(&spec, argc, argv, operands, &n);
    if (parsed >= 0)
        return parsed;
    const char *verb = operands[0];
    bool convert = strcmp(verb, "convert") == 0;
    if (to && (!convert || (strcmp(to, "text") != 0 && strcmp(to, "binary") != 0))) {
        fprintf(stderr, "hostmem trace: --to '%s': it wants text or binary, with convert\n", to);
        hm__cli_usage(&spec, stderr, false);
        return HM_EXIT_USAGE;
    }
    if (strcmp(verb, "cat") == 0 && n == 2)
        return hm__cli_trace_copy(operands[1], "-", HM_TRACE_TEXT);
    if (strcmp(verb, "stats") == 0 && n == 2)
        return stats(operands[1]);
    if (convert && n == 3) {
        hm_trace_encoding encoding = ends_with(operands[2], ".bin") ? HM_TRACE_BINARY : HM_TRACE_TEXT;
        if (to)
            encoding = strcmp(to, "binary") == 0 ? HM_TRACE_BINARY : HM_TRACE_TEXT;
        return hm__cli_trace_copy(operands[1], operands[2], encoding);
    }
    fprintf(stderr, "hostmem trace: '%s' with %zu file(s): it wants convert IN OUT, cat IN or stats IN\n", verb, n - 1);
    hm__cli_usage(&spec, stderr, false);
    return HM_EXIT_USAGE;
}

/* Fuzz target: the trace reader (text, binary and raw encodings, detected from the bytes). A hostile file must be
 * read to its end or refused with a message naming file, line and field; never a crash or a hang. Each line is
 * also fed to the line parser directly. */
#include "trace_internal.h"

#include <hostmem/hostmem.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (1 << 20))
        return 0;
    /* The reader takes a path: an in-memory file gives it one without touching the disk. */
    int fd = memfd_create("hostmem-fuzz-trace", 0);
    if (fd < 0)
        return 0;
    if (size && write(fd, data, size) != (ssize_t)size) {
        close(fd);
        return 0;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    hm_trace_reader *reader;
    if (hm_trace_open(path, &reader) == S_OK) {
        hm_trace_call call;
        for (int n = 0; n < 100000 && hm_trace_next(reader, &call) > 0; n++) {
            char line[1024];
            hm_trace_format_call(&call, line, sizeof line);
        }
        const char *error = hm_trace_error(reader);
        if (error && *error && !strstr(error, path))
            abort(); /* an error must name the file */
        hm_trace_close(reader);
    }
    close(fd);
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

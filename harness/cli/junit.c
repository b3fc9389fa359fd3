/* JUnit XML reports: escaped text, a testsuite, its testcases. */
#include "junit.h"

#include <errno.h>
#include <string.h>
#include <stdbool.h>

void hm__junit_escape(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        unsigned char ch = (unsigned char)*s;
        switch (ch) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&apos;", f); break;
        default: fputc(ch < 0x20 && ch != '\t' && ch != '\n' && ch != '\r' ? '?' : ch, f);
        }
    }
}

FILE *hm__junit_create(const char *command, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f)
        fprintf(stderr, "hostmem %s: cannot create the JUnit report '%s': %s\n", command, path, strerror(errno));
    return f;
}

void hm__junit_begin(FILE *f, const char *suite, unsigned tests, unsigned failures, unsigned skipped, double seconds)
{
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n<testsuite name=\"");
    hm__junit_escape(f, suite);
    fprintf(f, "\" tests=\"%u\" failures=\"%u\" errors=\"0\" skipped=\"%u\" time=\"%.3f\">\n", tests, failures,
            skipped, seconds);
}

void hm__junit_case(FILE *f, const char *classname, const char *name, double seconds, const char *kind,
                   const char *message, const char *body, const char *out)
{
    fputs("  <testcase classname=\"", f);
    hm__junit_escape(f, classname);
    fputs("\" name=\"", f);
    hm__junit_escape(f, name);
    fprintf(f, "\" time=\"%.3f\">", seconds);
    if (kind) {
        fprintf(f, "\n    <%s message=\"", kind);
        hm__junit_escape(f, message);
        fputs("\">", f);
        hm__junit_escape(f, body);
        fprintf(f, "</%s>", kind);
    }
    if (out) {
        fputs("\n    <system-out>", f);
        hm__junit_escape(f, out);
        fputs("</system-out>", f);
    }
    fputs(kind || out ? "\n  </testcase>\n" : "</testcase>\n", f);
}

bool hm__junit_close(const char *command, const char *path, FILE *f)
{
    fputs("</testsuite>\n</testsuites>\n", f);
    int bad = ferror(f);
    bad |= fclose(f) != 0;
    if (bad)
        fprintf(stderr, "hostmem %s: cannot write the JUnit report '%s'\n", command, path);
    return !bad;
}

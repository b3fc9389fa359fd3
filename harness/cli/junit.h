/* JUnit XML reports (--junit FILE) for CI dashboards: one testsuite, a testcase per check. */
#ifndef HOSTMEM_CLI_JUNIT_H
#define HOSTMEM_CLI_JUNIT_H

#include <stdbool.h>
#include <stdio.h>

/* Writes s as XML character data or an attribute value: & < > " ' escaped; control characters XML 1.0 cannot hold
 * (all below 0x20 but tab, newline and carriage return) become '?'. NULL writes nothing. */
void hm__junit_escape(FILE *f, const char *s);

/* Creates FILE for the report, before the run, so an output that cannot be made is bad usage found early (said on
 * stderr as "hostmem COMMAND: ...", naming it; NULL then). */
FILE *hm__junit_create(const char *command, const char *path);

/* Writes the XML declaration and <testsuites><testsuite ...> with its totals, once they are known. */
void hm__junit_begin(FILE *f, const char *suite, unsigned tests, unsigned failures, unsigned skipped, double seconds);

/* One testcase. kind: NULL (passed), "failure" or "skipped" (with message, and body as the element's text when
 * not NULL); out, when not NULL, becomes its <system-out>. */
void hm__junit_case(FILE *f, const char *classname, const char *name, double seconds, const char *kind,
                   const char *message, const char *body, const char *out);

/* Closes the elements and the file; false (said on stderr) when a write failed. */
bool hm__junit_close(const char *command, const char *path, FILE *f);

#endif

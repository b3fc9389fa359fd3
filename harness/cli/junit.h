/* JUnit XML reports (--junit FILE) for CI dashboards: one testsuite, a testcase per check. */
#ifndef HOSTMEM_CLI_JUNIT_H
#define HOSTMEM_CLI_JUNIT_H

#include <stdbool.h>
#include <stdio.h>

/* Writes s as XML character data or an attribute value: & < > " ' escaped; control characters XML 1.0 cannot hold
 * (all below 0x20 but tab, newline and carriage return) become '?'. NULL writes nothing. */
void hm_junit_escape(FILE *f, const char *s);

/* Opens FILE for the report (errors go to stderr, naming it, as "hostmem COMMAND: ..."; NULL then) and writes the
 * XML declaration and <testsuites><testsuite ...> with its totals. */
FILE *hm_junit_open(const char *command, const char *path, const char *suite, unsigned tests, unsigned failures,
                    unsigned skipped, double seconds);

/* One testcase. kind: NULL (passed), "failure" or "skipped" (with message, and body as the element's text when
 * not NULL); out, when not NULL, becomes its <system-out>. */
void hm_junit_case(FILE *f, const char *classname, const char *name, double seconds, const char *kind,
                   const char *message, const char *body, const char *out);

/* Closes the elements and the file; false (said on stderr) when a write failed. */
bool hm_junit_close(const char *command, const char *path, FILE *f);

#endif

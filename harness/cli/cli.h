/* The hostmem command: shared pieces of its subcommands. */
#ifndef HOSTMEM_CLI_H
#define HOSTMEM_CLI_H

#include <hostmem/hostmem.h>
#include <hostmem/trace.h>

#include <stdbool.h>
#include <stdio.h>

/* Exit codes every subcommand uses. */
enum { HM_EXIT_OK = 0, HM_EXIT_FAIL = 1, HM_EXIT_USAGE = 2 };

/* A subcommand: argv[0] is the subcommand's name. Returns an exit code. */
typedef int (*hm_cmd_fn)(int argc, char **argv);

/* The subcommands (cmd_<name>.c, bench.c), each an hm_cmd_fn; main.c dispatches to them, `demo` runs several. */
int hm__cmd_bench(int argc, char **argv);
int hm__cmd_conform(int argc, char **argv);
int hm__cmd_demo(int argc, char **argv);
int hm__cmd_explore(int argc, char **argv);
int hm__cmd_fuzz_to_trace(int argc, char **argv);
int hm__cmd_record(int argc, char **argv);
int hm__cmd_reduce(int argc, char **argv);
int hm__cmd_replay(int argc, char **argv);
int hm__cmd_stress(int argc, char **argv);
int hm__cmd_trace(int argc, char **argv);
int hm__cmd_triage(int argc, char **argv);

/* The host a subcommand talks to, from --host LIB.so, --host-options S, --faults SPEC (options.h's
 * HM_HOST_OPTIONS and HM_FAULTS_OPTION put them in a command's option table). */
typedef struct hm_host_choice {
    const char *library;  /* NULL: the built-in manager */
    const char *options;  /* passed to the factory */
    const char *faults;   /* NULL: none (HOSTMEM_FAULTS still applies to the built-in factory) */
} hm_host_choice;

/* Creates the chosen manager (loading the plugin when library is set, then wrapping it in the fault layer when
 * faults is set). On failure prints a clear message naming the library, symbol or option to stderr and returns
 * the HRESULT. The plugin stays loaded for the life of the process. */
HRESULT hm__cli_open_host(const hm_host_choice *choice, IHostMemoryManager **out);

/* Runs a subcommand fn(argc, argv) that talks to a host. fn parses its options first in this process (a probe,
 * options.h: --help and bad usage end there). When they name a plugin (--host), fn then runs in an isolated child
 * (plugin.h): a host that crashes, exits the process or hangs past the --timeout SECONDS of fn's table (its
 * default there; 0: no limit) ends as "hostmem NAME: FAIL: what happened" and HM_EXIT_FAIL, never as the tool's own
 * crash, hang or exit status. The child's stdout is the tool's. */
int hm__cli_isolated(const char *name, hm_cmd_fn fn, int argc, char **argv);

/* Copies every call of the trace IN (any encoding) to OUT ("-": stdout) in `encoding`; errors go to stderr naming
 * the file. Returns an exit code. */
int hm__cli_trace_copy(const char *in, const char *out, hm_trace_encoding encoding);

/* Writes s as a JSON string (escaped), or null when s is NULL. */
void hm__cli_json_string(FILE *f, const char *s);

/* Every numeric option: "123", "64K", "1M", "2G" (binary suffixes), from min to max. Anything else (a sign, a
 * fraction, hex, junk, an overflow, out of range) prints "hostmem COMMAND: OPTION 'TEXT' is ...: it wants ..." to
 * stderr and returns false (the caller exits with HM_EXIT_USAGE). */
bool hm__cli_parse_uint(const char *command, const char *option, const char *text, unsigned long long min,
                       unsigned long long max, unsigned long long *out);

#endif

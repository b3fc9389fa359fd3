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

/* The recording's environment for a trace made with the chosen host (hostmem record, stress): the host as given
 * (or "built-in"), its resolved path (into resolved), its options and the fault spec in force. env's strings point
 * into choice, resolved and the environment. */
void hm__cli_host_env(const hm_host_choice *choice, hm_trace_env *env, char *resolved, size_t resolved_len);

/* What replay, reduce and explore take from a trace's header for what their command line left open
 * (docs/trace-format.md, "The environment"): with no --host, the recorded plugin when its file is here (its
 * resolved path, else the path as given), else the built-in manager; with no --host-options, the recorded options
 * when the recorded host is the one used (after HM_REPLAY_BUILTIN_OPTIONS for the built-in manager); with no
 * --faults, the recorded fault spec only when the command does not inject the trace's failed calls itself (inject
 * false) and faults are allowed. Says on `report` what it took, one line each ("host: ./lib.so (from the trace)").
 * choice's strings may point into env (keep the reader or trace open); returns a malloc'd string choice->options
 * points to (free it after), or NULL. */
char *hm__cli_host_from_env(const hm_trace_env *env, hm_host_choice *choice, bool inject, bool faults_allowed,
                            FILE *report);

/* Runs a subcommand fn(argc, argv) that talks to a host. fn parses its options first in this process (a probe,
 * options.h: --help and bad usage end there). When they name a plugin (--host), fn then runs in an isolated child
 * (plugin.h): a host that crashes, exits the process or hangs past the --timeout SECONDS of fn's table (its
 * default there; 0: no limit) ends as "hostmem NAME: FAIL: what happened" and HM_EXIT_FAIL, never as the tool's own
 * crash, hang or exit status. The child's stdout is the tool's. */
int hm__cli_isolated(const char *name, hm_cmd_fn fn, int argc, char **argv);
/* The same, isolated also without --host when always (a host the trace's header names may be a plugin). */
int hm__cli_isolated_if(const char *name, hm_cmd_fn fn, int argc, char **argv, bool always);

/* Copies every call of the trace IN (any encoding) to OUT ("-": stdout) in `encoding`; errors go to stderr naming
 * the file. Returns an exit code. */
int hm__cli_trace_copy(const char *in, const char *out, hm_trace_encoding encoding);

/* Writes s as a JSON string (escaped), or null when s is NULL. */
void hm__cli_json_string(FILE *f, const char *s);
/* `, "key": ` and the value as hm__cli_json_string writes it: one member after the first of an object. */
void hm__cli_json_member(FILE *f, const char *key, const char *value);

/* Every numeric option: "123", "64K", "1M", "2G" (binary suffixes), from min to max. Anything else (a sign, a
 * fraction, hex, junk, an overflow, out of range) prints "hostmem COMMAND: OPTION 'TEXT' is ...: it wants ..." to
 * stderr and returns false (the caller exits with HM_EXIT_USAGE). */
bool hm__cli_parse_uint(const char *command, const char *option, const char *text, unsigned long long min,
                       unsigned long long max, unsigned long long *out);

#endif

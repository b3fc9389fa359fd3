/* One option parser for every subcommand: a table of options per command, from which the usage text is made too. */
#ifndef HOSTMEM_CLI_OPTIONS_H
#define HOSTMEM_CLI_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef enum hm_option_kind {
    HM_OPTION_FLAG,   /* no value; target: bool */
    HM_OPTION_UINT,   /* a whole number from min to max (hm__cli_parse_uint: 64K, 1M...); target: unsigned long long */
    HM_OPTION_STRING, /* one value (the last one given wins); target: const char * */
    HM_OPTION_LIST,   /* repeatable; target: hm_option_list */
} hm_option_kind;

#define HM_OPTION_LIST_MAX 64
typedef struct hm_option_list {
    const char *items[HM_OPTION_LIST_MAX];
    size_t count;
} hm_option_list;

typedef struct hm_option {
    const char *name;       /* "--threads" */
    const char *value;      /* what the value is, in the usage: "N", "FILE" (NULL for a flag) */
    hm_option_kind kind;
    void *target;
    unsigned long long min, max; /* HM_OPTION_UINT */
    const char *help;       /* one line */
    bool *given;            /* set when the option is on the command line (may be NULL) */
} hm_option;

typedef struct hm_command_spec {
    const char *name;        /* "replay" */
    const char *operands;    /* after the options in the usage line: "TRACE", "" for none */
    size_t min_operands, max_operands;
    const char *description; /* the paragraph --help prints after the usage line and before the options */
    const hm_option *options;
    size_t option_count;
} hm_command_spec;

/* The options every command that talks to a host takes, for a command's table (targets in *choice). */
#define HM_HOST_OPTIONS(choice)                                                                                    \
    {"--host", "LIB.so", HM_OPTION_STRING, &(choice)->library, 0, 0,                                              \
     "the host plugin (NAME without a slash: ./NAME when it exists, else the library path)", NULL},               \
    {"--host-options", "S", HM_OPTION_STRING, &(choice)->options, 0, 0, "options passed to the host's factory", NULL}
/* replay, reduce, explore: ignore the host, host options and fault spec a trace's header names. */
#define HM_NO_TRACE_ENV_OPTION(flag)                                                                               \
    {"--no-trace-env", NULL, HM_OPTION_FLAG, (flag), 0, 0,                                                         \
     "ignore the host, its options and the faults the trace's header names", NULL}
#define HM_FAULTS_OPTION(choice)                                                                                   \
    {"--faults", "SPEC", HM_OPTION_STRING, &(choice)->faults, 0, 0, "inject failures (docs/faults.md)", NULL}

/* Parses argv[1..argc-1] against spec: options anywhere, operands (arguments not starting with '-', "-" itself, and
 * everything after "--") into operands[0..*operand_count-1] (operands holds max_operands). -h and --help print the
 * usage to stdout and return HM_EXIT_OK; an unknown option, a missing or bad value, or a wrong number of operands
 * prints the problem and the usage line to stderr and returns HM_EXIT_USAGE. Returns -1 when the command should
 * run. */
int hm__cli_parse_options(const hm_command_spec *spec, int argc, char **argv, const char **operands,
                     size_t *operand_count);

/* hm__cli_isolated's first pass over a command's options, in the parent: while a probe is set, a parse that would
 * let the command run records the --host and --timeout the command's table gave (its defaults included) in the
 * probe, sets parsed, and returns HM_EXIT_OK, so the command returns at once without running. -h/--help and bad
 * usage behave as always (printed by the parent; parsed stays false). */
typedef struct hm_cli_probe {
    bool parsed;
    const char *library;        /* --host (NULL: the built-in manager) */
    unsigned long long timeout; /* --timeout in seconds (0: the table has none, or no limit) */
} hm_cli_probe;
void hm__cli_probe_set(hm_cli_probe *probe); /* NULL: parse normally again */

/* What -h/--help prints: the usage text, a man page section (roff) or the command's option names (for a bash
 * completion). `hostmem help --man` and `--bash-completion` run every command's --help in the other modes, so the man
 * page and the completion come from the same tables as --help. */
typedef enum hm_help_format { HM_HELP_TEXT, HM_HELP_MAN, HM_HELP_WORDS } hm_help_format;
void hm__cli_set_help_format(hm_help_format format);

/* The usage line ("usage: hostmem NAME [options] OPERANDS"), and with full the description and every option. */
void hm__cli_usage(const hm_command_spec *spec, FILE *f, bool full);

#endif

/* The hostmem command: one binary, one subcommand per job. */
#include "cli.h"
#include "options.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmd_options(int argc, char **argv)
{
    const hm_command_spec spec = {"options", "", 0, 0, "Lists the built-in manager's options (--host-options).\n",
                                  NULL, 0};
    size_t operand_count;
    int parsed = hm_cli_parse_options(&spec, argc, argv, NULL, &operand_count);
    if (parsed >= 0)
        return parsed;
    printf("Options of the built-in manager (HostMemCreateManager, --host-options), as key=value,...:\n%s",
           HostMemOptionsHelp());
    return HM_EXIT_OK;
}

typedef struct command {
    const char *name;
    hm_cmd_fn fn;
    const char *summary;
} command;

static const command *commands(size_t *n)
{
    static command table[16];
    static size_t count;
    if (!count) {
        const command all[] = {
            {"demo", hm_cmd_demo, "the main job: conformance, stress with faults and an OOM replay, one report"},
            {"conform", hm_cmd_conform, "check a host against every rule of the contract"},
            {"stress", hm_cmd_stress, "hammer a host from many threads, verifying every answer"},
            {"replay", hm_cmd_replay, "re-execute a recorded trace against a host and compare"},
            {"reduce", hm_cmd_reduce, "shrink a trace to the calls that still show its failure"},
            {"explore", hm_cmd_explore, "fail the 1st, 2nd, ... allocation of a scenario, checking each run"},
            {"record", hm_cmd_record, "record a program's (or a built-in workload's) calls into a trace"},
            {"trace", hm_cmd_trace, "convert, print or summarise traces"},
            {"fuzz-to-trace", hm_cmd_fuzz_to_trace, "turn a fuzzer input into a readable trace"},
            {"triage", hm_cmd_triage, "replay a crash folder and group the failures by signature"},
            {"bench", hm_cmd_bench, "measure the manager against raw syscalls and malloc, as ratios"},
            {"options", cmd_options, "list the built-in manager's options"},
        };
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            if (all[i].fn)
                table[count++] = all[i];
    }
    *n = count;
    return table;
}

static void usage(FILE *f)
{
    size_t n;
    const command *c = commands(&n);
    fprintf(f, "hostmem %s: test hosts of the CLR hosting memory contract\n\nusage: hostmem COMMAND [ARGS]\n\n",
            HOSTMEM_VERSION_STRING);
    for (size_t i = 0; i < n; i++)
        fprintf(f, "  %-14s %s\n", c[i].name, c[i].summary);
    fprintf(f, "\nEvery command that talks to a host takes --host LIB.so and --host-options S; stress, replay,\n"
               "reduce, record and bench also take --faults SPEC (conform, explore and fuzz-to-trace refuse it: they\n"
               "choose their own failures or none). 'hostmem help COMMAND' or 'hostmem COMMAND --help' tells more.\n"
               "Exit codes: 0 success, 1 a check failed, 2 bad usage or input.\n");
}

int main(int argc, char **argv)
{
    /* hostmem's own managers are not recorded: HOSTMEM_TRACE=t.trace hostmem replay t.trace would overwrite the
     * trace it reads. HOSTMEM_TRACE_SELF=1 keeps it (to record what a command asks of a host). `hostmem record`
     * sets it again for the program it runs. */
    const char *self = getenv("HOSTMEM_TRACE_SELF");
    if (!self || strcmp(self, "1") != 0)
        unsetenv("HOSTMEM_TRACE");
    if (argc < 2) {
        usage(stderr);
        return HM_EXIT_USAGE;
    }
    size_t n;
    const command *c = commands(&n);
    if (strcmp(argv[1], "help") == 0 && argc > 2) { /* hostmem help CMD: CMD --help */
        for (size_t i = 0; i < n; i++)
            if (strcmp(argv[2], c[i].name) == 0) {
                char *help_argv[] = {argv[2], "--help", NULL};
                return c[i].fn(2, help_argv);
            }
        fprintf(stderr, "hostmem help: unknown command '%s'\n\n", argv[2]);
        usage(stderr);
        return HM_EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return HM_EXIT_OK;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("hostmem %s\n", HOSTMEM_VERSION_STRING);
        return HM_EXIT_OK;
    }
    for (size_t i = 0; i < n; i++)
        if (strcmp(argv[1], c[i].name) == 0)
            return c[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "hostmem: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return HM_EXIT_USAGE;
}

/* hostmem fuzz-to-trace INPUT: runs a fuzz_calls (or fuzz_calls_faults) input once, recording every call, and writes
 * the calls as a readable text trace, which `hostmem replay` and `hostmem reduce` take: one path from a fuzzer's
 * crash file to a small readable reproducer. Exit codes: 0 the input ran clean, 1 it showed a mismatch (reported;
 * the trace ends at it), 2 bad usage or input. */
#include "calls.h"
#include "cli.h"
#include "options.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char description[] =
    "Runs INPUT, a file from fuzz_calls (a crash, a corpus entry), recording every call, and writes them\n"
    "as a readable text trace for hostmem replay and reduce. With --host the trace records the answers\n"
    "the model expects (the input run on the built-in manager), then the input runs on the host and its\n"
    "mismatch is reported: replaying the trace on the host diverges at the bug. Without --host the\n"
    "built-in manager runs with " HM_FUZZ_DEFAULT_OPTIONS "; a plugin runs in a child process: its\n"
    "crash, exit or hang (past --timeout SECONDS, default 10: a fuzz input is a few hundred calls) is\n"
    "reported, exit 1; the trace of the model's answers is written first, and kept. --strict (or\n"
    "HOSTMEM_FUZZ_STRICT=1, as for the fuzz targets) holds the plugin to Windows' exact error codes.\n"
    "Exit 0 the input ran clean, 1 it showed a mismatch (the trace ends at it), 2 bad usage or input.\n";

/* A fuzz input is at most a few hundred calls (microseconds each): a plugin still running after this many seconds
 * hangs (a libFuzzer timeout-* artifact is such an input). */
#define HM_FUZZ_TO_TRACE_TIMEOUT 10

static uint8_t *read_input(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "hostmem fuzz-to-trace: cannot open '%s'\n", path);
        return NULL;
    }
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            uint8_t *bigger = n < (64u << 20) ? realloc(buf, cap *= 2) : NULL;
            if (!bigger) {
                fprintf(stderr, "hostmem fuzz-to-trace: '%s' is larger than 64 MiB; fuzz inputs are small\n", path);
                free(buf);
                buf = NULL;
            }
            buf = bigger;
        }
    }
    fclose(f);
    *size = n;
    return buf;
}

static int fuzz_to_trace_command(int argc, char **argv)
{
    hm_fuzz_config config = {0};
    const char *input = NULL, *out = NULL;
    hm_host_choice choice = {0};
    bool faults_input = false, strict = false;
    unsigned long long timeout = HM_FUZZ_TO_TRACE_TIMEOUT;
    const hm_option table[] = {
        {"-o", "OUT", HM_OPTION_STRING, &out, 0, 0, "the text trace to write (default: INPUT.trace, a new file)", NULL},
        {"--faults-input", NULL, HM_OPTION_FLAG, &faults_input, 0, 0,
         "the input is fuzz_calls_faults': its first bytes choose the faults", NULL},
        HM_HOST_OPTIONS(&choice),
        {"--strict", NULL, HM_OPTION_FLAG, &strict, 0, 0,
         "the plugin's failures must carry Windows' exact codes (default: any refusal will do; also "
         "HOSTMEM_FUZZ_STRICT=1)", NULL},
        {"--faults", "SPEC", HM_OPTION_STRING, &choice.faults, 0, 0,
         "refused: a faults input chooses its own (--faults-input)", NULL},
        /* read by hm__cli_isolated (its first pass of this parser), which runs a plugin in a child */
        {"--timeout", "SECONDS", HM_OPTION_UINT, &timeout, 1, 86400, "for the run of a plugin (default 10)", NULL},
    };
    const hm_command_spec command = {"fuzz-to-trace", "INPUT", 1, 1, description, table, sizeof table / sizeof table[0]};
    const char *operands[1];
    size_t operand_count;
    int parsed = hm__cli_parse_options(&command, argc, argv, operands, &operand_count);
    if (parsed >= 0)
        return parsed;
    input = operands[0];
    config.faults = faults_input;
    config.strict_codes = strict || hm__fuzz_env_flag("HOSTMEM_FUZZ_STRICT"); /* as the fuzz targets read it */
    if (choice.faults) {
        fprintf(stderr, "hostmem fuzz-to-trace: --faults does not apply (a faults input chooses its own: "
                        "--faults-input)\n");
        hm__cli_usage(&command, stderr, false);
        return HM_EXIT_USAGE;
    }
    size_t size;
    uint8_t *data = read_input(input, &size);
    if (!data)
        return HM_EXIT_USAGE;
    char default_out[4096];
    if (!out) {
        /* A name the command picks itself (crash files often sit in /tmp): made new, never an existing file nor a
         * symlink planted there; -o names a file to overwrite. */
        snprintf(default_out, sizeof default_out, "%s.trace", input);
        out = default_out;
        int fd = open(out, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd < 0) {
            fprintf(stderr, "hostmem fuzz-to-trace: cannot create '%s': %s%s\n", out, strerror(errno),
                    errno == EEXIST ? " (name the output with -o to replace it)" : "");
            free(data);
            return HM_EXIT_USAGE;
        }
        close(fd);
    }
    /* The recorder writes its crash-proof raw form; the text form is made from it afterwards. */
    char raw[4096];
    const char *tmp = getenv("TMPDIR");
    snprintf(raw, sizeof raw, "%s/hostmem-fuzz-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    int fd = mkstemp(raw); /* a new file of our own: the recorder may truncate it */
    if (fd < 0) {
        fprintf(stderr, "hostmem fuzz-to-trace: cannot make a temporary file '%s': %s\n", raw, strerror(errno));
        if (out == default_out)
            unlink(out);
        free(data);
        return HM_EXIT_FAIL;
    }
    close(fd);
    char spec[sizeof raw + 16];
    snprintf(spec, sizeof spec, "%s,overwrite", raw); /* the file mkstemp made is ours to fill */
    config.trace_path = spec;
    config.report = stdout;
    /* With a plugin, the trace records the answers the model agrees with (the built-in manager's), not the
     * plugin's: replaying it against the plugin then diverges at the bug. Recorded first, so a plugin that
     * crashes below still leaves the trace. */
    FILE *quiet = NULL;
    if (choice.library) {
        quiet = fopen("/dev/null", "w");
        config.report = quiet;
    } else {
        config.host_options = choice.options;
    }
    hm_fuzz_outcome outcome = {0};
    int status = hm__fuzz_calls_run(data, size, &config, &outcome);
    bool reference_mismatch = choice.library && outcome.mismatch;
    int code = status != 0 ? HM_EXIT_USAGE : hm__cli_trace_copy(raw, out, HM_TRACE_TEXT);
    unlink(raw);
    if (quiet)
        fclose(quiet);
    if (code != HM_EXIT_OK) {
        free(data);
        if (out == default_out)
            unlink(out); /* ours, and holding nothing useful */
        return code;
    }
    if (choice.library) {
        /* Said now: a plugin that crashes or hangs below ends this process, and the trace is already whole. */
        printf("the model's answers are in %s; now running the input on %s\n", out, choice.library);
        fflush(stdout);
        config.host_library = choice.library;
        config.host_options = choice.options;
        config.trace_path = NULL;
        config.report = stdout;
        /* As the fuzz target that found the input was run: a finding of a strict run is a finding here too. */
        config.strict_codes = strict || hm__fuzz_env_flag("HOSTMEM_FUZZ_STRICT");
        memset(&outcome, 0, sizeof outcome);
        status = hm__fuzz_calls_run(data, size, &config, &outcome);
        if (status != 0) {
            free(data);
            return HM_EXIT_USAGE;
        }
        if (reference_mismatch)
            fprintf(stderr, "hostmem fuzz-to-trace: note: the built-in manager disagreed with the model on this input; "
                            "the trace ends there\n");
    }
    free(data);
    printf("%s: %u call(s) (%u the model could not predict, skipped), %s\n", input, outcome.calls, outcome.skipped,
           outcome.mismatch ? "ending at the mismatch above" : "every answer as the model expected");
    if (choice.library)
        printf("the trace records the answers the model expects (the built-in manager's), so replaying it on the host "
               "shows where the host differs\n");
    const char *host = choice.library ? choice.library : "";
    printf("trace written to %s\n", out);
    if (*host)
        printf("  replay it on the host:          hostmem replay %s --host %s\n", out, host);
    printf("  replay it on the built-in host: hostmem replay %s\n", out);
    printf("  shrink it:                      hostmem reduce %s -o %s.small%s\n", out, out,
           *host ? " --host ...   (to the calls where the host differs)" : "");
    return outcome.mismatch ? HM_EXIT_FAIL : HM_EXIT_OK;
}

/* A plugin host is run in an isolated child (hm__cli_isolated): its crash, exit or hang is a finding. */
int hm__cmd_fuzz_to_trace(int argc, char **argv) { return hm__cli_isolated("fuzz-to-trace", fuzz_to_trace_command, argc, argv); }

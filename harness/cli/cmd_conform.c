/* hostmem conform: check a host against every rule of the contract. */
#include "cli.h"
#include "conform.h"
#include "plugin.h"

#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: hostmem conform [--host LIB.so] [--host-options S] [--filter TEXT] [--json] [--list]\n"
               "                       [--timeout SECONDS] [--no-fork]\n\n"
               "Runs every rule of the hosting memory contract and of Windows' virtual memory against a host (the\n"
               "built-in one by default), each on a fresh manager in its own process, and prints PASS, FAIL (with\n"
               "expected and actual) or INFO (a choice the host may make) per rule. Loading the host, its factory\n"
               "and Release run in child processes too, each rule with a timeout (default 10 s): a host that\n"
               "crashes, exits the process or hangs fails the rule (or the load) it did so in. --no-fork runs in\n"
               "this process (for a debugger).\n"
               "Exit 0 when every rule passes, 1 when one fails, 2 for bad usage or a host that cannot be loaded.\n");
}

/* The probe: load the host and make and release one manager, in a child like every rule, so a bad library is
 * reported once, before any rule runs. */
typedef struct probe {
    const hm_conform_options *o;
    HRESULT hr;
    char error[1024];
} probe;

static void probe_child(void *ctx)
{
    probe *p = ctx;
    IHostMemoryManager *m;
    p->hr = hm_host_open(p->o->library, p->o->host_options, &m, p->error, sizeof p->error);
    if (SUCCEEDED(p->hr))
        IHostMemoryManager_Release(m);
}

/* HM_EXIT_OK when the host loads; HM_EXIT_USAGE (with the loader's message) when it cannot be loaded or its factory
 * fails; HM_EXIT_FAIL when it crashes, exits or hangs while being loaded, made or released: that is a finding. */
static int probe_host(const hm_conform_options *o, bool json)
{
    probe *p = o->no_fork ? calloc(1, sizeof *p) : hm_shared_alloc(sizeof *p);
    if (!p) {
        fprintf(stderr, "hostmem conform: out of memory\n");
        return HM_EXIT_FAIL;
    }
    p->o = o;
    hm_isolated how = {.end = HM_ISOLATED_REPORTED};
    if (o->no_fork) {
        probe_child(p);
    } else {
        hm_isolate_options io = {.timeout_seconds = o->timeout_seconds ? o->timeout_seconds : 10};
        hm_isolate(probe_child, p, &io, &how);
        hm_isolated_note_stdout(&how, stderr);
    }
    int code = HM_EXIT_OK;
    const char *host = o->library ? o->library : "built-in";
    if (how.end != HM_ISOLATED_REPORTED) {
        code = HM_EXIT_FAIL;
        if (json) {
            printf("{\"host\": ");
            hm_cli_json_string(stdout, host);
            printf(", \"rules\": [], \"load\": ");
            hm_cli_json_string(stdout, how.message);
            printf(", \"passed\": 0, \"failed\": 1, \"info\": 0}\n");
        }
        fprintf(stderr, "hostmem conform: FAIL: loading the %s host: %s\n", host, how.message);
    } else if (FAILED(p->hr)) {
        code = HM_EXIT_USAGE;
        fprintf(stderr, "hostmem conform: %s\n", p->error);
    }
    if (o->no_fork)
        free(p);
    else
        hm_shared_free(p, sizeof *p);
    return code;
}

int hm_cmd_conform(int argc, char **argv)
{
    hm_host_choice choice = {0};
    hm_conform_options o = {0};
    bool json = false, list = false;
    for (int i = 1; i < argc; i++) {
        bool error = false;
        if (hm_cli_take_host_option(&choice, argc, argv, &i, &error)) {
            if (error)
                return HM_EXIT_USAGE;
        } else if (strcmp(argv[i], "--filter") == 0 && i + 1 < argc) {
            o.filter = argv[++i];
        } else if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if (strcmp(argv[i], "--list") == 0) {
            list = true;
        } else if (strcmp(argv[i], "--no-fork") == 0) {
            o.no_fork = true;
        } else if (strcmp(argv[i], "--timeout") == 0) {
            unsigned long long seconds;
            if (!hm_cli_take_uint("conform", argc, argv, &i, 1, 86400, &seconds))
                return HM_EXIT_USAGE;
            o.timeout_seconds = (unsigned)seconds;
        } else if (strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return HM_EXIT_OK;
        } else {
            fprintf(stderr, "hostmem conform: unknown argument '%s'\n\n", argv[i]);
            usage(stderr);
            return HM_EXIT_USAGE;
        }
    }
    if (choice.faults) {
        fprintf(stderr, "hostmem conform: --faults would make correct hosts fail; use it with stress or explore\n");
        return HM_EXIT_USAGE;
    }
    size_t n;
    const hm_rule *rules = hm_conform_rules(&n);
    size_t selected = 0;
    for (size_t i = 0; i < n; i++)
        selected += !o.filter || strstr(rules[i].id, o.filter);
    if (!selected) { /* nothing to run would pass */
        fprintf(stderr, "hostmem conform: no rule's id contains '%s' (hostmem conform --list shows them)\n", o.filter);
        return HM_EXIT_USAGE;
    }
    if (list) {
        for (size_t i = 0; i < n; i++)
            if (!o.filter || strstr(rules[i].id, o.filter))
                printf("%-40s %s%s [%s]\n", rules[i].id, rules[i].statement, rules[i].policy ? " (policy)" : "",
                       rules[i].reference);
        return HM_EXIT_OK;
    }
    o.library = choice.library;
    o.host_options = choice.options;
    int probed = probe_host(&o, json);
    if (probed != HM_EXIT_OK)
        return probed;

    const char *host = choice.library ? choice.library : "built-in";
    int passed = 0, failed = 0, info = 0;
    unsigned long long host_stdout = 0;
    if (json) {
        printf("{\"host\": ");
        hm_cli_json_string(stdout, host);
        printf(", \"rules\": [");
    }
    else
        printf("conformance of the %s host\n\n", host);
    bool first = true;
    for (size_t i = 0; i < n; i++) {
        if (o.filter && !strstr(rules[i].id, o.filter))
            continue;
        hm_rule_result r;
        hm_conform_run_rule(&rules[i], &o, &r);
        const char *status = r.status == HM_RULE_PASS ? "pass" : r.status == HM_RULE_FAIL ? "fail" : "info";
        passed += r.status == HM_RULE_PASS;
        failed += r.status == HM_RULE_FAIL;
        info += r.status == HM_RULE_INFO;
        host_stdout += r.host_stdout_bytes;
        if (json) {
            printf("%s\n  {\"id\": ", first ? "" : ",");
            hm_cli_json_string(stdout, rules[i].id);
            printf(", \"status\": \"%s\", \"expected\": ", status);
            hm_cli_json_string(stdout, r.status == HM_RULE_PASS ? rules[i].statement : r.expected);
            printf(", \"actual\": ");
            hm_cli_json_string(stdout, r.status == HM_RULE_PASS ? "as expected" : r.actual);
            printf(", \"reference\": ");
            hm_cli_json_string(stdout, rules[i].reference);
            printf(", \"ms\": %.1f}", r.ms);
        } else if (r.status == HM_RULE_PASS) {
            printf("  PASS  %s\n", rules[i].id);
        } else {
            printf("  %s  %s: %s\n          expected: %s\n          actual:   %s\n",
                   r.status == HM_RULE_FAIL ? "FAIL" : "INFO", rules[i].id, rules[i].statement, r.expected, r.actual);
        }
        first = false;
        fflush(stdout);
    }
    if (host_stdout)
        fprintf(stderr, "hostmem conform: note: the host wrote %llu byte(s) on stdout, kept out of this report\n",
                host_stdout);
    if (json)
        printf("\n], \"passed\": %d, \"failed\": %d, \"info\": %d}\n", passed, failed, info);
    else
        printf("\n%d passed, %d failed, %d info\n", passed, failed, info);
    return failed ? HM_EXIT_FAIL : HM_EXIT_OK;
}

/* hostmem conform: check a host against every rule of the contract. */
#include "cli.h"
#include "conform.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: hostmem conform [--host LIB.so] [--host-options S] [--filter TEXT] [--json] [--list] [--no-fork]\n\n"
               "Runs every rule of the hosting memory contract and of Windows' virtual memory against a host (the\n"
               "built-in one by default), each on a fresh manager in its own process, and prints PASS, FAIL (with\n"
               "expected and actual) or INFO (a choice the host may make) per rule.\n"
               "Exit 0 when every rule passes, 1 when one fails, 2 for bad usage or a host that cannot be loaded.\n");
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
    /* Load the host once here, so a bad library is reported before any rule runs. */
    o.factory = HostMemCreateManager;
    if (choice.library) {
        void *lib = dlopen(choice.library, RTLD_NOW | RTLD_LOCAL);
        if (!lib) {
            fprintf(stderr, "hostmem: cannot load host library '%s': %s\n", choice.library, dlerror());
            return HM_EXIT_USAGE;
        }
        o.factory = (HostMemCreateManagerFn)(uintptr_t)dlsym(lib, "HostMemCreateManager");
        if (!o.factory) {
            fprintf(stderr, "hostmem: host library '%s' does not export HostMemCreateManager\n", choice.library);
            return HM_EXIT_USAGE;
        }
    }
    o.host_options = choice.options;
    IHostMemoryManager *probe = NULL;
    HRESULT hr = o.factory(choice.options, &probe);
    if (FAILED(hr) || !probe) {
        fprintf(stderr, "hostmem conform: the host's HostMemCreateManager('%s') failed: %s%s%s\n",
                choice.options ? choice.options : "", hm_hr_name(hr), choice.library ? "" : ": ",
                choice.library ? "" : HostMemLastError());
        return HM_EXIT_USAGE;
    }
    IHostMemoryManager_Release(probe);

    const char *host = choice.library ? choice.library : "built-in";
    int passed = 0, failed = 0, info = 0;
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
    if (json)
        printf("\n], \"passed\": %d, \"failed\": %d, \"info\": %d}\n", passed, failed, info);
    else
        printf("\n%d passed, %d failed, %d info\n", passed, failed, info);
    return failed ? HM_EXIT_FAIL : HM_EXIT_OK;
}

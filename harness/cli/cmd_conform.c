/* hostmem conform: check a host against every rule of the contract. */
#include "cli.h"
#include "conform.h"
#include "plugin.h"

#include "junit.h"
#include "options.h"

#include <errno.h>
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char description[] =
    "Runs every rule of the hosting memory contract and of Windows' virtual memory against a host (the\n"
    "built-in one by default), each on a fresh manager in its own process, and prints PASS, FAIL (with\n"
    "expected and actual) or INFO (a choice the host may make) per rule. Loading the host, its factory\n"
    "and Release run in child processes too: a host that crashes, exits the process or hangs (a call\n"
    "not returning in --timeout S, default 10) fails the rule (or the load) it did so in. A rule still\n"
    "running after --rule-timeout S (default 300) while the host keeps returning is TIMEOUT: not\n"
    "checked, no finding (a loaded machine or a slow host). --no-fork runs in this process (for a\n"
    "debugger).\n"
    "--filter (repeatable) runs the rules one of its patterns matches, --skip leaves out the ones it\n"
    "matches: a shell glob (vm.*.zeroed) matches the whole id, a pattern without * ? [ any part of it. A\n"
    "pattern that matches no rule is bad usage. --baseline FILE lists known deviations, one per line:\n"
    "RULE-ID REASON ('#' starts a comment); a listed rule that fails is KNOWN and does not fail the run,\n"
    "one that passes is STALE (reported, not a failure). --junit FILE also writes a JUnit XML report.\n"
    "Exit 0 when every rule passes, 1 when one fails or times out, 2 for bad usage or a host that cannot\n"
    "be loaded.\n";

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
    p->hr = hm__host_open(p->o->library, p->o->host_options, &m, p->error, sizeof p->error);
    if (SUCCEEDED(p->hr))
        IHostMemoryManager_Release(m);
}

/* HM_EXIT_OK when the host loads; HM_EXIT_USAGE (with the loader's message) when it cannot be loaded or its factory
 * fails; HM_EXIT_FAIL when it crashes, exits or hangs while being loaded, made or released: that is a finding. */
static int probe_host(const hm_conform_options *o, bool json, FILE *junit)
{
    probe *p = o->no_fork ? calloc(1, sizeof *p) : hm__shared_alloc(sizeof *p);
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
        hm__isolate(probe_child, p, &io, &how);
        hm__isolated_note_stdout(&how, stderr);
    }
    int code = HM_EXIT_OK;
    const char *host = o->library ? o->library : "built-in";
    if (how.end != HM_ISOLATED_REPORTED) {
        code = HM_EXIT_FAIL;
        if (json) {
            printf("{\"host\": ");
            hm__cli_json_string(stdout, host);
            printf(", \"rules\": [], \"load\": ");
            hm__cli_json_string(stdout, how.message);
            printf(", \"passed\": 0, \"failed\": 1, \"info\": 0}\n");
        }
        fprintf(stderr, "hostmem conform: FAIL: loading the %s host: %s\n", host, how.message);
        if (junit) {
            hm__junit_begin(junit, "hostmem conform", 1, 1, 0, 0);
            hm__junit_case(junit, "hostmem.conform", "load", 0, "failure", "the host could not be loaded", how.message,
                          NULL);
        }
    } else if (FAILED(p->hr)) {
        code = HM_EXIT_USAGE;
        fprintf(stderr, "hostmem conform: %s\n", p->error);
    }
    if (o->no_fork)
        free(p);
    else
        hm__shared_free(p, sizeof *p);
    return code;
}

/* A --filter or --skip pattern: a glob matches the whole id, plain text any part of it (as --filter always did). */
static bool is_glob(const char *pattern)
{
    return strpbrk(pattern, "*?[") != NULL;
}

static bool pattern_matches(const char *pattern, const char *id)
{
    return is_glob(pattern) ? fnmatch(pattern, id, 0) == 0 : strstr(id, pattern) != NULL;
}

static bool any_matches(const char *const *patterns, size_t n, const char *id)
{
    for (size_t i = 0; i < n; i++)
        if (pattern_matches(patterns[i], id))
            return true;
    return false;
}

/* Every pattern must match some rule: a typo would otherwise run nothing (or skip nothing) and pass. */
static bool every_pattern_matches(const char *option, const char *const *patterns, size_t n, const hm_rule *rules,
                                  size_t rule_count)
{
    for (size_t p = 0; p < n; p++) {
        size_t hits = 0;
        for (size_t i = 0; i < rule_count; i++)
            hits += pattern_matches(patterns[p], rules[i].id);
        if (!hits) {
            fprintf(stderr, "hostmem conform: %s: no rule's id %s '%s' (hostmem conform --list shows them)\n", option,
                    is_glob(patterns[p]) ? "matches" : "contains", patterns[p]);
            return false;
        }
    }
    return true;
}

/* Reads a baseline: "RULE-ID REASON" per line, '#' comments, blank lines. reasons[i] gets rule i's reason (strdup'd)
 * and lines[i] its line number. A malformed line (no reason, an unknown or repeated rule) is bad usage, naming
 * FILE:LINE. */
static bool read_baseline(const char *path, const hm_rule *rules, size_t n, char **reasons, unsigned *lines)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "hostmem conform: cannot read the baseline '%s': %s\n", path, strerror(errno));
        return false;
    }
    char *line = NULL;
    size_t cap = 0;
    unsigned number = 0;
    bool ok = true;
    while (ok && getline(&line, &cap, f) >= 0) {
        number++;
        char *id = line + strspn(line, " \t");
        id[strcspn(id, "\r\n")] = '\0';
        if (!*id || *id == '#')
            continue;
        char *reason = id + strcspn(id, " \t");
        if (*reason)
            *reason++ = '\0';
        reason += strspn(reason, " \t");
        size_t len = strlen(reason);
        while (len && (reason[len - 1] == ' ' || reason[len - 1] == '\t'))
            reason[--len] = '\0';
        size_t i = 0;
        while (i < n && strcmp(rules[i].id, id) != 0)
            i++;
        if (i == n) {
            fprintf(stderr, "hostmem conform: %s:%u: no rule '%s' (hostmem conform --list shows them)\n", path, number,
                    id);
            ok = false;
        } else if (!*reason) {
            fprintf(stderr, "hostmem conform: %s:%u: '%s' has no reason: a baseline line is RULE-ID REASON...\n", path,
                    number, id);
            ok = false;
        } else if (reasons[i]) {
            fprintf(stderr, "hostmem conform: %s:%u: '%s' is already listed on line %u\n", path, number, id, lines[i]);
            ok = false;
        } else if (!(reasons[i] = strdup(reason))) {
            fprintf(stderr, "hostmem conform: out of memory\n");
            ok = false;
        } else {
            lines[i] = number;
        }
    }
    if (ok && ferror(f)) {
        fprintf(stderr, "hostmem conform: cannot read the baseline '%s': %s\n", path, strerror(errno));
        ok = false;
    }
    free(line);
    fclose(f);
    return ok;
}

/* How a rule came out, baseline applied. */
typedef enum verdict { V_SKIPPED, V_PASS, V_FAIL, V_INFO, V_KNOWN, V_STALE, V_TIMEOUT } verdict;
static const char *const verdict_json[] = {"", "pass", "fail", "info", "known", "stale", "timeout"};

static void write_junit(FILE *f, const char *host, const hm_rule *rules, size_t n, const verdict *v,
                        const hm_rule_result *r, char *const *reasons, unsigned tests, unsigned failed,
                        unsigned skipped)
{
    double seconds = 0;
    for (size_t i = 0; i < n; i++)
        seconds += v[i] != V_SKIPPED ? r[i].ms / 1000 : 0;
    char suite[512];
    snprintf(suite, sizeof suite, "hostmem conform (%s host)", host);
    hm__junit_begin(f, suite, tests, failed, skipped, seconds);
    for (size_t i = 0; i < n; i++) {
        if (v[i] == V_SKIPPED)
            continue;
        char body[1200], message[1400];
        snprintf(body, sizeof body, "expected: %s\nactual:   %s\nreference: %s", r[i].expected, r[i].actual,
                 rules[i].reference);
        const char *kind = NULL, *msg = NULL, *text = NULL, *out = NULL;
        if (v[i] == V_FAIL) {
            kind = "failure", msg = rules[i].statement, text = body;
        } else if (v[i] == V_KNOWN) {
            snprintf(message, sizeof message, "known deviation (baseline): %s", reasons[i]);
            kind = "skipped", msg = message, text = body;
        } else if (v[i] == V_TIMEOUT) {
            kind = "skipped", msg = "TIMEOUT: not checked (the rule ran out of time while the host kept returning)",
            text = body;
        } else if (v[i] == V_INFO) {
            snprintf(message, sizeof message, "INFO (a choice the host may make)\n%s", body);
            out = message;
        } else if (v[i] == V_STALE) {
            snprintf(message, sizeof message, "STALE: the baseline lists this rule (%s) but it passes now", reasons[i]);
            out = message;
        }
        hm__junit_case(f, "hostmem.conform", rules[i].id, r[i].ms / 1000, kind, msg, text, out);
    }
}

int hm__cmd_conform(int argc, char **argv)
{
    hm_host_choice choice = {0};
    hm_conform_options o = {0};
    bool json = false, list = false, no_fork = false;
    const char *baseline = NULL, *junit = NULL;
    hm_option_list filter = {0}, skip = {0};
    unsigned long long timeout = 0, rule_timeout = 0;
    const hm_option table[] = {
        HM_HOST_OPTIONS(&choice),
        {"--faults", "SPEC", HM_OPTION_STRING, &choice.faults, 0, 0,
         "refused: injected failures would make correct hosts fail (use stress or explore)", NULL},
        {"--filter", "PATTERN", HM_OPTION_LIST, &filter, 0, 0, "run only the rules a pattern matches", NULL},
        {"--skip", "PATTERN", HM_OPTION_LIST, &skip, 0, 0, "leave out the rules a pattern matches", NULL},
        {"--baseline", "FILE", HM_OPTION_STRING, &baseline, 0, 0, "known deviations: RULE-ID REASON per line", NULL},
        {"--junit", "FILE", HM_OPTION_STRING, &junit, 0, 0, "also write a JUnit XML report", NULL},
        {"--json", NULL, HM_OPTION_FLAG, &json, 0, 0, "one JSON document on stdout", NULL},
        {"--list", NULL, HM_OPTION_FLAG, &list, 0, 0, "list the (selected) rules, run nothing", NULL},
        {"--timeout", "SECONDS", HM_OPTION_UINT, &timeout, 1, 86400,
         "a host call not returning this long is a hang (default 10)", NULL},
        {"--rule-timeout", "SECONDS", HM_OPTION_UINT, &rule_timeout, 1, 86400,
         "a rule still running this long is TIMEOUT, not checked (default 300)", NULL},
        {"--no-fork", NULL, HM_OPTION_FLAG, &no_fork, 0, 0, "run in this process (for a debugger)", NULL},
    };
    const hm_command_spec spec = {"conform", "", 0, 0, description, table, sizeof table / sizeof table[0]};
    size_t operand_count;
    int parsed = hm__cli_parse_options(&spec, argc, argv, NULL, &operand_count);
    if (parsed >= 0)
        return parsed;
    o.no_fork = no_fork;
    o.timeout_seconds = (unsigned)timeout;
    o.rule_timeout_seconds = (unsigned)rule_timeout;
    const char *const *filters = filter.items, *const *skips = skip.items;
    size_t filter_count = filter.count, skip_count = skip.count;
    size_t n;
    const hm_rule *rules = hm__conform_rules(&n);
    char **reasons = calloc(n, sizeof *reasons);
    unsigned *lines = calloc(n, sizeof *lines);
    verdict *v = calloc(n, sizeof *v);
    hm_rule_result *results = calloc(n, sizeof *results);
    int code = HM_EXIT_USAGE;
    FILE *junit_file = NULL;
    if (!reasons || !lines || !v || !results) {
        fprintf(stderr, "hostmem conform: out of memory\n");
        code = HM_EXIT_FAIL;
        goto done;
    }
    if (choice.faults) {
        fprintf(stderr, "hostmem conform: --faults would make correct hosts fail; use it with stress or explore\n");
        goto done;
    }
    if (!every_pattern_matches("--filter", filters, filter_count, rules, n) ||
        !every_pattern_matches("--skip", skips, skip_count, rules, n))
        goto done;
    unsigned selected = 0;
    for (size_t i = 0; i < n; i++) {
        bool run = (!filter_count || any_matches(filters, filter_count, rules[i].id)) &&
                   !any_matches(skips, skip_count, rules[i].id);
        v[i] = run ? V_PASS : V_SKIPPED;
        selected += run;
    }
    if (!selected) { /* nothing to run would pass */
        fprintf(stderr, "hostmem conform: --skip leaves no rule to run\n");
        goto done;
    }
    if (baseline && !read_baseline(baseline, rules, n, reasons, lines))
        goto done;
    if (list) {
        for (size_t i = 0; i < n; i++)
            if (v[i] != V_SKIPPED)
                printf("%-40s %s%s [%s]\n", rules[i].id, rules[i].statement, rules[i].policy ? " (policy)" : "",
                       rules[i].reference);
        code = HM_EXIT_OK;
        goto done;
    }
    o.library = choice.library;
    o.host_options = choice.options;
    /* Made before anything runs: an output that cannot be created is bad usage, not a lost report at the end. */
    if (junit && !(junit_file = hm__junit_create("conform", junit)))
        goto done;
    code = probe_host(&o, json, junit_file);
    if (code != HM_EXIT_OK)
        goto done;

    const char *host = choice.library ? choice.library : "built-in";
    unsigned passed = 0, failed = 0, info = 0, known = 0, stale = 0, timed_out = 0;
    unsigned long long host_stdout = 0;
    if (json) {
        printf("{\"host\": ");
        hm__cli_json_string(stdout, host);
        printf(", \"rules\": [");
    }
    else
        printf("conformance of the %s host\n\n", host);
    bool first = true;
    for (size_t i = 0; i < n; i++) {
        if (v[i] == V_SKIPPED)
            continue;
        hm_rule_result *r = &results[i];
        hm__conform_run_rule(&rules[i], &o, r);
        /* The baseline turns a failure into a known one; a listed rule that no longer fails is stale. */
        v[i] = r->status == HM_RULE_TIMEOUT ? V_TIMEOUT /* not checked: neither known nor stale */
               : r->status == HM_RULE_FAIL ? (reasons[i] ? V_KNOWN : V_FAIL)
               : reasons[i]              ? V_STALE
               : r->status == HM_RULE_PASS ? V_PASS
                                           : V_INFO;
        passed += v[i] == V_PASS;
        failed += v[i] == V_FAIL;
        info += v[i] == V_INFO;
        known += v[i] == V_KNOWN;
        stale += v[i] == V_STALE;
        timed_out += v[i] == V_TIMEOUT;
        host_stdout += r->host_stdout_bytes;
        if (json) {
            printf("%s\n  {\"id\": ", first ? "" : ",");
            hm__cli_json_string(stdout, rules[i].id);
            printf(", \"status\": \"%s\", \"expected\": ", verdict_json[v[i]]);
            hm__cli_json_string(stdout, r->status == HM_RULE_PASS ? rules[i].statement : r->expected);
            printf(", \"actual\": ");
            hm__cli_json_string(stdout, r->status == HM_RULE_PASS ? "as expected" : r->actual);
            printf(", \"reference\": ");
            hm__cli_json_string(stdout, rules[i].reference);
            if (reasons[i]) {
                printf(", \"baseline\": ");
                hm__cli_json_string(stdout, reasons[i]);
            }
            printf(", \"ms\": %.1f}", r->ms);
        } else if (v[i] == V_PASS) {
            printf("  PASS  %s\n", rules[i].id);
        } else if (v[i] == V_STALE) {
            printf("  STALE %s: passes now; its baseline entry (%s:%u: %s) can go\n", rules[i].id, baseline, lines[i],
                   reasons[i]);
        } else {
            printf("  %s  %s: %s\n          expected: %s\n          actual:   %s\n",
                   v[i] == V_FAIL ? "FAIL" : v[i] == V_KNOWN ? "KNOWN" : v[i] == V_TIMEOUT ? "TIMEOUT" : "INFO",
                   rules[i].id, rules[i].statement,
                   r->expected, r->actual);
            if (v[i] == V_KNOWN)
                printf("          baseline: %s\n", reasons[i]);
        }
        first = false;
        fflush(stdout);
    }
    if (host_stdout)
        fprintf(stderr, "hostmem conform: note: the host wrote %llu byte(s) on stdout, kept out of this report\n",
                host_stdout);
    /* Timed-out rules were not checked: said apart from failures, and the run does not pass. */
    char timeouts[48] = "";
    if (timed_out)
        snprintf(timeouts, sizeof timeouts, ", %u timed out", timed_out);
    if (json)
        printf("\n], \"timed_out\": %u, \"known\": %u, \"stale\": %u, \"passed\": %u, \"failed\": %u, \"info\": %u}\n",
               timed_out, known, stale, passed, failed, info);
    else if (baseline)
        printf("\n%u passed, %u failed, %u info, %u known, %u stale%s\n", passed, failed, info, known, stale, timeouts);
    else
        printf("\n%u passed, %u failed, %u info%s\n", passed, failed, info, timeouts);
    code = failed || timed_out ? HM_EXIT_FAIL : HM_EXIT_OK;
    if (junit_file)
        write_junit(junit_file, host, rules, n, v, results, reasons, selected, failed, known + timed_out);
done:
    /* A report that cannot be written fails the run: CI must not lose it silently. After a host that cannot be
     * loaded (exit 2: nothing ran) there is no report: the file made for it goes. */
    if (junit_file && code != HM_EXIT_USAGE) {
        if (!hm__junit_close("conform", junit, junit_file))
            code = HM_EXIT_FAIL;
    } else if (junit_file) {
        fclose(junit_file);
        unlink(junit);
    }
    for (size_t i = 0; reasons && i < n; i++)
        free(reasons[i]);
    free(reasons);
    free(lines);
    free(v);
    free(results);
    return code;
}

/* Conformance: every rule of the hosting memory contract and of Windows' virtual memory, as named checks run
 * against any host (docs/semantics.md has the rules; hostmem's own manager passes them all). */
#ifndef HOSTMEM_HARNESS_CONFORM_H
#define HOSTMEM_HARNESS_CONFORM_H

#include <hostmem/hostmem.h>

#include <stdbool.h>
#include <stdio.h>

/* TIMEOUT: the rule ran out of its time (rule_timeout_seconds) while the host kept returning: not checked, which is
 * neither a pass nor a finding (a loaded machine or a slow host; a host call that never returns is a FAIL). */
typedef enum hm_rule_status { HM_RULE_PASS, HM_RULE_FAIL, HM_RULE_INFO, HM_RULE_TIMEOUT } hm_rule_status;

typedef struct hm_rule_result {
    hm_rule_status status;
    char expected[200];
    char actual[400];
    double ms;
    unsigned long long host_stdout_bytes; /* what the host wrote on stdout (kept out of the report) */
    const char *in_callback; /* while a check calls the host from inside OnMemoryNotification: that call (a literal,
                              * the same address in the child and the parent), so a hang there is named as such */
} hm_rule_result;

/* What a check gets: a fresh manager from the host, and where to write its verdict. */
typedef struct hm_rule_ctx {
    IHostMemoryManager *m;
    hm_rule_result *result;
} hm_rule_ctx;

typedef struct hm_rule {
    const char *id;         /* e.g. "vm.release.not-at-base" */
    const char *statement;  /* the rule in one sentence */
    const char *reference;  /* where it is documented: a section of docs/semantics.md, the hosting contract, COM */
    void (*check)(hm_rule_ctx *c);
    bool policy;            /* a choice the host may make: a mismatch is information, not failure */
} hm_rule;

const hm_rule *hm__conform_rules(size_t *count);

typedef struct hm_conform_options {
    const char *library;             /* the host plugin (NULL: the built-in manager) */
    const char *host_options;
    bool no_fork;                    /* run in-process (for debuggers); a crash then ends the run */
    unsigned timeout_seconds;        /* per host call: one still in flight this long is a hang; default 10 */
    unsigned rule_timeout_seconds;   /* per rule, while the host keeps returning; default 300 */
} hm_conform_options;

/* Runs one rule: loading the host, making the manager, the check and the final Release all happen in a forked
 * child (unless no_fork), every host call named and timed (the built-in host too goes behind the guard layer), so a
 * host that crashes, exits or hangs in a call is reported as the rule's failure (with its signal, exit status or the
 * call it hung in) and the run goes on; a rule that outlasts rule_timeout_seconds while the host keeps returning is
 * HM_RULE_TIMEOUT. */
void hm__conform_run_rule(const hm_rule *rule, const hm_conform_options *o, hm_rule_result *out);

#endif

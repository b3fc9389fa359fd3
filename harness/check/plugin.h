/* Host plugins: the one loader every hostmem tool uses, and the one way to run code that touches a plugin in an
 * isolated child process, so that whatever the host does (crash, abort, exit, hang, flood stdout) ends as a report
 * and never as the tool's own crash, hang or silent exit 0. */
#ifndef HOSTMEM_HARNESS_PLUGIN_H
#define HOSTMEM_HARNESS_PLUGIN_H

#include <hostmem/hostmem.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* ---- Loading ------------------------------------------------------------------------------------------------ */

/* Makes a manager: the built-in one (HostMemCreateManager(options)) when library is NULL, else the plugin's
 * (dlopen, dlsym("HostMemCreateManager"), its factory; a library named without a slash is ./NAME when that file
 * exists, else dlopen's search of the library path) wrapped in the guard layer (guard.h). The plugin stays
 * loaded. On failure writes a message naming the library, the symbol or the factory's result (and the host's
 * HostMemLastError, when it exports one) into err and returns the failure. Inside an isolated child each step is
 * named as the call in flight (hm__isolate_enter). */
HRESULT hm__host_open(const char *library, const char *options, IHostMemoryManager **out, char *err, size_t err_len);

/* ---- Isolation ---------------------------------------------------------------------------------------------- */

typedef enum hm_isolated_end {
    HM_ISOLATED_REPORTED,  /* the work ran to its end in the child */
    HM_ISOLATED_FINDING,   /* the child stopped itself on a finding (hm__isolate_finding) */
    HM_ISOLATED_CRASHED,   /* the child was killed by a signal */
    HM_ISOLATED_EXITED,    /* the child ended (any status, even 0) before the work returned: the host ended it */
    HM_ISOLATED_TIMED_OUT, /* the timeout (or the watch) ran out; the child's process group was killed */
    HM_ISOLATED_TOO_SLOW,  /* with call_timeout_seconds: timeout_seconds ran out while the host kept returning (no
                            * call hung): the work is slow (a loaded machine, a slow host), not stuck; killed too */
    HM_ISOLATED_NO_CHILD,  /* no child could be started */
} hm_isolated_end;

typedef struct hm_isolated {
    hm_isolated_end end;
    int signal;              /* HM_ISOLATED_CRASHED */
    int status;              /* HM_ISOLATED_EXITED: the exit status */
    unsigned long long stdout_bytes; /* what the child wrote on stdout (captured and dropped unless pass_stdout) */
    char stdout_head[120];   /* the first of those bytes, for a note */
    char doing[96];          /* the call in flight when the child ended ("" when none) */
    char message[640];       /* every end but REPORTED: what happened, in one sentence */
} hm_isolated;

typedef struct hm_isolate_options {
    double timeout_seconds;  /* 0: none. The whole run's limit: a hang (TIMED_OUT), unless call_timeout_seconds */
    /* 0: none. A call to the host (hm__isolate_enter) still in flight after this long with no other call entering or
     * returning meanwhile: the host hangs (TIMED_OUT, naming the call). timeout_seconds running out while calls keep
     * returning is then TOO_SLOW: a slow machine is never taken for a hung host. */
    double call_timeout_seconds;
    bool pass_stdout;        /* the child's stdout is the tool's; otherwise it is drained, counted and dropped */
    /* Called in the parent about every 100 ms while the child runs (progress, hang detection). Returning true
     * kills the child: the end is HM_ISOLATED_TIMED_OUT with why (written by watch) as the message. */
    bool (*watch)(void *ctx, double elapsed, char *why, size_t why_len);
    void *watch_ctx;
} hm_isolate_options;

/* Runs work(ctx) in a forked child (its own process group, killed with the parent) and classifies how it ended.
 * The work returns its results through shared memory (hm__shared_alloc); they are complete only when the end is
 * HM_ISOLATED_REPORTED. Returns how->end. */
hm_isolated_end hm__isolate(void (*work)(void *ctx), void *ctx, const hm_isolate_options *o, hm_isolated *how);

/* In a child: names the call in flight (a string literal: the parent reads the pointer), so a crash, an exit or a
 * hang is reported against it. NULL: the tool's own code. Outside a child it does nothing. */
void hm__isolate_doing(const char *what);

/* In a child: a call into the host begins (named as by hm__isolate_doing; returns the name it replaces) and ends
 * (give that name back). Calls may nest (a callback calling back in) and overlap (threads): the parent counts the
 * calls in flight and every step, for call_timeout_seconds. Outside a child they do nothing. */
const char *hm__isolate_enter(const char *what);
void hm__isolate_leave(const char *previous);

/* A finding the child cannot go on from (a host writing past a buffer): in a child, ends it with the message as
 * an HM_ISOLATED_FINDING; outside one, prints "hostmem: FINDING: message" and exits 1. */
_Noreturn void hm__isolate_finding(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Memory the child and the parent share (zeroed); NULL when it cannot be mapped. */
void *hm__shared_alloc(size_t size);
void hm__shared_free(void *p, size_t size);

/* Says on f how many bytes the child wrote on stdout, when any (they were kept out of the tool's report). */
void hm__isolated_note_stdout(const hm_isolated *how, FILE *f);

#endif

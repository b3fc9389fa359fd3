/* hostmem bench: one table of measurements, each against a baseline measured in the same run. */
#ifndef HOSTMEM_BENCH_H
#define HOSTMEM_BENCH_H

#include "clock.h"

#include <stdbool.h>
#include <stdio.h>

typedef struct hm_bench {
    FILE *out;
    bool json;
    double scale;       /* 1.0 normal; --quick uses 0.1: every part scales its iteration counts by it */
    int rows;           /* rows printed so far */
    int goals_missed;   /* rows whose goal was not met (the exit status only with --check) */
    const struct hm_host_choice *host; /* --host: the plugin the stress part measures (NULL: the built-in one) */
    char temp_dir[4096]; /* "" until hm__bench_temp_path makes it */
} hm_bench;

/* One row: `value` of what we measure vs `baseline` of the reference, in `unit` (e.g. "ns/op", "Mops/s").
 * ratio = value / baseline, hostmem over the baseline as the README gives it: for a time (lower_is_better) below 1
 * is faster and goal_ratio is the most the goal allows; for a throughput above 1 is faster and goal_ratio is the
 * least the goal allows (0 for no goal). */
void hm__bench_row(hm_bench *b, const char *group, const char *name, double value, const char *baseline_name,
                  double baseline, const char *unit, bool lower_is_better, double goal_ratio);
/* A row without baseline (e.g. an absolute figure like "ns per VirtualQuery at 1M reservations"). goal is an
 * absolute bound in unit (0 for none). */
void hm__bench_value(hm_bench *b, const char *group, const char *name, double value, const char *unit,
                    bool lower_is_better, double goal);

/* DIR/name in a directory of this run's own (mkdtemp under $TMPDIR or /tmp, removed at the end of the run): no other
 * user can plant a file or a symlink under a name a part writes to. Exits when the directory cannot be made. The
 * part unlinks its files. */
void hm__bench_temp_path(hm_bench *b, const char *name, char *buf, size_t len);

/* Monotonic clock in nanoseconds. */

/* The parts (each in its own file). */
void hm__bench_vm(hm_bench *b);
void hm__bench_heap(hm_bench *b);   /* bench_heap.c */
void hm__bench_faults(hm_bench *b); /* bench_faults.c */
void hm__bench_trace(hm_bench *b);  /* bench_trace.c */
void hm__bench_stress(hm_bench *b); /* bench_stress.c */

#endif

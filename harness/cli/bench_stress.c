/* hostmem bench, stress part: what the stress harness's checks cost. The same workload (same seed, so the same
 * calls and the same writes into pages and blocks, on the same number of threads) runs against a fresh built-in
 * manager, interleaved: as `hostmem stress` runs it (every answer checked against the model, every call logged and
 * timed, the whole run recorded to a trace), and bare (no checks, no log, no clock, no recorder). The ratio is the
 * harness's share. The heap workload runs a third way, checked but not recorded (`--no-trace`), which splits that
 * share between the checks and the recorder. With --host, the plugin's manager stands in for the built-in one. */
#include "bench.h"
#include "cli.h"
#include "stress.h"

#include <stdlib.h>
#include <unistd.h>

typedef enum stress_way { BARE, CHECKED, RECORDED } stress_way; /* RECORDED: checked and recorded */

static double stress_ops_per_second(hm_bench *b, hm_stress_workload workload, stress_way way, unsigned threads,
                                    uint64_t ops, hm_stress_report *report)
{
    bool checked = way != BARE;
    const hm_host_choice *host = b->host;
    IHostMemoryManager *m, *recorded = NULL;
    if (host ? FAILED(hm__cli_open_host(host, &m)) : FAILED(HostMemCreateBuiltinManager("backend=os", &m))) {
        fprintf(stderr, "hostmem bench: cannot create the manager: %s\n", HostMemLastError());
        exit(HM_EXIT_FAIL);
    }
    char path[4200];
    hm__bench_temp_path(b, "stress.trace", path, sizeof path);
    if (way == RECORDED && FAILED(HostMemWrapRecorder(m, path, &recorded))) {
        fprintf(stderr, "hostmem bench: cannot record to %s: %s\n", path, HostMemLastError());
        exit(HM_EXIT_FAIL);
    }
    hm_stress_config config = {.threads = threads, .ops = ops, .seed = 7, .workload = workload, .verify = checked};
    HRESULT hr = hm__stress_run(recorded ? recorded : m, &config, report);
    if (recorded)
        IHostMemoryManager_Release(recorded);
    IHostMemoryManager_Release(m);
    unlink(path);
    /* Workload steps, not calls: a checked run makes extra VirtualQuery calls (after each refused call), and those
     * are part of what the checks cost. */
    uint64_t done = 0;
    for (unsigned t = 0; t < threads; t++)
        done += atomic_load(&report->thread[t].done);
    if (FAILED(hr) || atomic_load(&report->violations) || done != ops) {
        fprintf(stderr, "hostmem bench: the stress run failed (%s, %llu violations)\n", hm_hr_name(hr),
                (unsigned long long)atomic_load(&report->violations));
        exit(HM_EXIT_FAIL);
    }
    return (double)done / report->seconds;
}

void hm__bench_stress(hm_bench *b)
{
    hm_stress_report *report = aligned_alloc(_Alignof(hm_stress_report), sizeof *report); /* its lines its own */
    if (!report)
        exit(HM_EXIT_FAIL);
    /* The mixed workload on 1 and 2 threads; the heap workload (`--workload heap`, whose steps are ten times
     * cheaper, hence ten times as many) on 2 and 4 threads sharing one heap. */
    static const struct {
        hm_stress_workload workload;
        unsigned threads;
        uint64_t ops;
        const char *name;
    } runs[] = {{HM_STRESS_MIXED, 1, 100000, "stress"},
                {HM_STRESS_MIXED, 2, 100000, "stress"},
                {HM_STRESS_HEAP, 2, 1000000, "stress --workload heap"},
                {HM_STRESS_HEAP, 4, 1000000, "stress --workload heap"}};
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        unsigned threads = runs[i].threads;
        uint64_t ops = (uint64_t)((double)runs[i].ops * b->scale) + 1000;
        bool split = runs[i].workload == HM_STRESS_HEAP; /* the recorder's share shown apart */
        stress_ops_per_second(b, runs[i].workload, RECORDED, threads, ops / 10, report); /* warm up */
        double best[3] = {0, 0, 0};
        for (int round = 0; round < 3; round++) /* interleaved, best of three */
            for (stress_way way = BARE; way <= RECORDED; way++)
                if (way != CHECKED || split) {
                    double v = stress_ops_per_second(b, runs[i].workload, way, threads, ops, report);
                    best[way] = v > best[way] ? v : best[way];
                }
        const char *plural = threads > 1 ? "s" : "";
        char name[80];
        snprintf(name, sizeof name, "%s, %u thread%s, checked and recorded", runs[i].name, threads, plural);
        hm__bench_row(b, "stress", name, best[RECORDED] / 1e3, "same, bare", best[BARE] / 1e3, "ksteps/s", false,
                     1 / 1.5);
        if (split) {
            snprintf(name, sizeof name, "%s, %u thread%s, checked, --no-trace", runs[i].name, threads, plural);
            hm__bench_row(b, "stress", name, best[CHECKED] / 1e3, "same, bare", best[BARE] / 1e3, "ksteps/s", false,
                         1 / 1.5);
        }
    }
    free(report);
}

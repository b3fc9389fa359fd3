/* hostmem demo: the main job. Runs each stage against the built-in host (or --host) and ends with a one-screen
 * report. */
#include "cli.h"
#include "clock.h"
#include "options.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct stage {
    const char *name;
    const char *what;
    int status; /* its exit code */
    double seconds;
} stage;

static int run_stage(stage *s, hm_cmd_fn fn, int argc, char **argv)
{
    printf("\n---- %s: %s\n", s->name, s->what);
    fflush(stdout);
    double t0 = hm_now_seconds();
    s->status = fn(argc, argv);
    s->seconds = hm_now_seconds() - t0;
    fflush(stdout);
    return s->status;
}

/* A quick check of the contract on the built-in host that needs no other module: the manager, a heap, the budget. */
static int builtin_smoke(int argc, char **argv)
{
    (void)argc, (void)argv;
    IHostMemoryManager *m;
    if (HostMemCreateManager("limit=64M,backend=os", &m) != S_OK) {
        fprintf(stderr, "cannot create the built-in manager: %s\n", HostMemLastError());
        return HM_EXIT_FAIL;
    }
    int failed = 0, passed = 0;
#define EXPECT(desc, cond)                                                                                        \
    do {                                                                                                          \
        if (cond) {                                                                                               \
            passed++;                                                                                             \
        } else {                                                                                                  \
            failed++;                                                                                             \
            printf("  FAIL %s\n", desc);                                                                          \
        }                                                                                                         \
    } while (0)
    void *p = NULL, *c = NULL;
    MEMORY_BASIC_INFORMATION mbi;
    SIZE_T n;
    EXPECT("reserve 64 KiB", IHostMemoryManager_VirtualAlloc(m, NULL, 0x10000, MEM_RESERVE, PAGE_READWRITE,
                                                             eTaskCritical, &p) == S_OK);
    EXPECT("64 KiB aligned", ((uintptr_t)p & 0xFFFF) == 0);
    EXPECT("commit a page", IHostMemoryManager_VirtualAlloc(m, (char *)p + 0x1000, 0x1000, MEM_COMMIT, PAGE_READWRITE,
                                                            eTaskCritical, &c) == S_OK);
    EXPECT("fresh page reads zero", c && ((char *)c)[100] == 0);
    EXPECT("query splits regions", IHostMemoryManager_VirtualQuery(m, p, &mbi, sizeof mbi, &n) == S_OK &&
                                       mbi.State == MEM_RESERVE && mbi.RegionSize == 0x1000);
    EXPECT("release not at base fails", IHostMemoryManager_VirtualFree(m, c, 0, MEM_RELEASE) ==
                                            HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS));
    EXPECT("release", IHostMemoryManager_VirtualFree(m, p, 0, MEM_RELEASE) == S_OK);
    void *big = NULL;
    EXPECT("task-critical commit over the budget fails", IHostMemoryManager_VirtualAlloc(m, NULL, 63 << 20, MEM_COMMIT,
                                                             PAGE_READWRITE, eTaskCritical, &big) == E_OUTOFMEMORY);
    IHostMalloc *h = NULL;
    void *b = NULL;
    EXPECT("heap", IHostMemoryManager_CreateMalloc(m, MALLOC_THREADSAFE, &h) == S_OK &&
                       IHostMalloc_Alloc(h, 100, eTaskCritical, &b) == S_OK);
    EXPECT("double free refused", h && IHostMalloc_Free(h, b) == S_OK &&
                                      IHostMalloc_Free(h, b) == HOST_E_INVALIDOPERATION);
    if (h)
        IHostMalloc_Release(h);
    char msg[256];
    EXPECT("books consistent", HostMemCheckConsistency(m, msg, sizeof msg) == S_OK);
    IHostMemoryManager_Release(m);
    printf("  %d passed, %d failed\n", passed, failed);
    return failed ? HM_EXIT_FAIL : HM_EXIT_OK;
}

/* The recorded OOM trace: from the working directory when run in the source tree, else from the install's
 * share/hostmem next to bin/ (found from the executable, so a moved install works), else from where it was built. */
static void find_demo_trace(char *path, size_t size)
{
    static const char name[] = "oom-appdomain.trace";
    snprintf(path, size, "corpus/traces/%s", name);
    if (access(path, R_OK) == 0)
        return;
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            if ((size_t)snprintf(path, size, "%s/../%s/hostmem/%s", exe, HOSTMEM_INSTALL_DATADIR, name) < size &&
                access(path, R_OK) == 0)
                return;
        }
    }
#ifdef HOSTMEM_SOURCE_DIR
    snprintf(path, size, "%s/corpus/traces/%s", HOSTMEM_SOURCE_DIR, name);
#else
    snprintf(path, size, "corpus/traces/%s", name);
#endif
}

int hm__cmd_demo(int argc, char **argv)
{
    const hm_command_spec spec = {"demo", "", 0, 0,
                                  "The main job: conformance, a short stress with faults and an OOM replay against\n"
                                  "the built-in host, then a report. Exit 0 when every stage passed.\n",
                                  NULL, 0};
    size_t operand_count;
    int parsed = hm__cli_parse_options(&spec, argc, argv, NULL, &operand_count);
    if (parsed >= 0)
        return parsed;
    printf("hostmem %s: the built-in host, checked end to end\n", HOSTMEM_VERSION_STRING);
    stage stages[] = {
        {"smoke", "the contract's basics on the built-in host", 0, 0},
        {"conformance", "every rule of the contract and of Windows' virtual memory", 0, 0},
        {"stress", "2 threads for 3 s with injected faults, every answer verified", 0, 0},
        {"replay", "corpus/traces/oom-appdomain.trace: the recorded out-of-memory reproduces", 0, 0},
    };
    char *smoke_argv[] = {"smoke", NULL};
    char *conform_argv[] = {"conform", NULL};
    char *stress_argv[] = {"stress", "--threads", "2", "--seconds", "3", "--seed", "1", "--faults",
                           "VirtualAlloc,op=commit,probability=2%,seed=1;heap,probability=1%,seed=2", NULL};
    char trace[4096];
    find_demo_trace(trace, sizeof trace);
    char *replay_argv[] = {"replay", trace, NULL};
    run_stage(&stages[0], builtin_smoke, 1, smoke_argv);
    run_stage(&stages[1], hm__cmd_conform, 1, conform_argv);
    run_stage(&stages[2], hm__cmd_stress, 9, stress_argv);
    run_stage(&stages[3], hm__cmd_replay, 2, replay_argv);

    int failed = 0;
    printf("\n==== report ====\n");
    for (size_t i = 0; i < sizeof stages / sizeof stages[0]; i++) {
        const char *verdict = stages[i].status == 0 ? "passed" : "FAILED";
        printf("  %-12s %-10s %6.1f s  %s\n", stages[i].name, verdict, stages[i].seconds, stages[i].what);
        failed += stages[i].status != 0;
    }
    if (failed)
        printf("\n%d stage(s) failed: see their output above.\n", failed);
    else
        printf("\nEverything this build has passed.\n");
    return failed ? HM_EXIT_FAIL : HM_EXIT_OK;
}

/* hostmem record: records a program (HOSTMEM_TRACE set for it) or one of the built-in workloads, which are how
 * corpus/traces/ is made:
 *   basic     every method of the contract once or more, heaps and a notification callback included
 *   oom       commits at --level until the host (limit=2M) answers E_OUTOFMEMORY
 *   threads   four threads reserving, committing and allocating at once
 *   killed    a child records in a loop and is SIGKILLed after --calls calls (the trace it leaves behind) */
#include "cli.h"
#include "counting_callback.h"
#include "options.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096u

static const char description[] =
    "  hostmem record -o TRACE [--overwrite] -- PROGRAM [ARGS...]\n"
    "  hostmem record --workload basic|oom|threads|killed -o TRACE [--overwrite] [--host LIB.so]\n"
    "                 [--host-options S] [--faults SPEC] [--level task|appdomain|process] [--calls N] [--timeout S]\n"
    "Records every call a program (linked with libhostmem) or a built-in workload makes into TRACE.\n"
    "TRACE must not exist unless --overwrite is given (%p in it is the process id).\n";

static void workload_basic(IHostMemoryManager *m)
{
    static hm_counting_callback cb = HM_COUNTING_CALLBACK_INIT;
    IHostMemoryManager_RegisterMemoryNotificationCallback(m, &cb.iface);
    void *region = NULL, *commit = NULL;
    IHostMemoryManager_VirtualAlloc(m, NULL, 16 * PAGE, MEM_RESERVE, PAGE_NOACCESS, eTaskCritical, &region);
    /* With --faults the reservation may fail: then there is no inside to commit, query or decommit. */
    char *inside = region ? (char *)region + PAGE : NULL;
    if (inside)
        IHostMemoryManager_VirtualAlloc(m, inside, 2 * PAGE, MEM_COMMIT, PAGE_READWRITE, eAppDomainCritical, &commit);
    MEMORY_BASIC_INFORMATION mbi;
    SIZE_T got;
    if (inside)
        IHostMemoryManager_VirtualQuery(m, inside + 100, &mbi, sizeof mbi, &got);
    DWORD old;
    IHostMemoryManager_VirtualProtect(m, commit, PAGE, PAGE_READONLY, &old);
    IHostMemoryManager_VirtualProtect(m, commit, PAGE, PAGE_READWRITE | PAGE_GUARD, &old);
    DWORD load;
    SIZE_T available;
    IHostMemoryManager_GetMemoryLoad(m, &load, &available);
    static char stack_byte;
    IHostMemoryManager_VirtualQuery(m, &stack_byte, &mbi, sizeof mbi, &got); /* outside every region: raw */
    IHostMemoryManager_VirtualAlloc(m, NULL, PAGE, MEM_RESERVE | MEM_COMMIT, 0x12345, eTaskCritical, &commit);
    if (inside)
        IHostMemoryManager_VirtualFree(m, inside, PAGE, MEM_DECOMMIT);
    IHostMemoryManager_VirtualFree(m, region, 0, MEM_RELEASE);
    IHostMemoryManager_VirtualQuery(m, region, &mbi, sizeof mbi, &got); /* after release: still @1 */
    IHostMemoryManager_VirtualFree(m, region, 0, MEM_RELEASE);          /* twice: an error to replay */

    void *vas = (void *)(uintptr_t)0x7f0000000000ull;
    IHostMemoryManager_NeedsVirtualAddressSpace(m, vas, 64 * PAGE);
    IHostMemoryManager_AcquiredVirtualAddressSpace(m, vas, 64 * PAGE);
    IHostMemoryManager_ReleasedVirtualAddressSpace(m, vas);

    IHostMalloc *heap = NULL;
    if (SUCCEEDED(IHostMemoryManager_CreateMalloc(m, MALLOC_THREADSAFE, &heap))) {
        void *a = NULL, *b = NULL;
        IHostMalloc_Alloc(heap, 100, eTaskCritical, &a);
        IHostMalloc_DebugAlloc(heap, 200, eProcessCritical, (char *)"workload \"basic\".c", 42, &b);
        IHostMalloc_Free(heap, a);
        IHostMalloc_Free(heap, b);
        IHostMalloc_Release(heap);
    }
}

static int workload_oom(IHostMemoryManager *m, EMemoryCriticalLevel level)
{
    void *region = NULL;
    if (FAILED(IHostMemoryManager_VirtualAlloc(m, NULL, 64u << 20, MEM_RESERVE, PAGE_NOACCESS, level, &region)))
        return HM_EXIT_FAIL;
    for (size_t off = 0; off < (64u << 20); off += 16 * PAGE) {
        void *p = NULL;
        HRESULT hr = IHostMemoryManager_VirtualAlloc(m, (char *)region + off, 16 * PAGE, MEM_COMMIT, PAGE_READWRITE,
                                                     level, &p);
        if (FAILED(hr))
            return HM_EXIT_OK; /* the OOM the trace ends with */
    }
    return HM_EXIT_FAIL;
}

static void *thread_body(void *arg)
{
    IHostMemoryManager *m = arg;
    IHostMalloc *heap = NULL;
    IHostMemoryManager_CreateMalloc(m, MALLOC_THREADSAFE, &heap);
    for (int i = 0; i < 50; i++) {
        void *r = NULL, *c = NULL, *b = NULL;
        IHostMemoryManager_VirtualAlloc(m, NULL, 4 * PAGE, MEM_RESERVE, PAGE_NOACCESS, eTaskCritical, &r);
        IHostMemoryManager_VirtualAlloc(m, r, PAGE, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &c);
        if (heap)
            IHostMalloc_Alloc(heap, 64 + (size_t)i, eTaskCritical, &b);
        if (heap && b)
            IHostMalloc_Free(heap, b);
        IHostMemoryManager_VirtualFree(m, r, 0, MEM_RELEASE);
    }
    if (heap)
        IHostMalloc_Release(heap);
    return NULL;
}

static void workload_threads(IHostMemoryManager *m)
{
    pthread_t threads[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&threads[i], NULL, thread_body, m);
    for (int i = 0; i < 4; i++)
        pthread_join(threads[i], NULL);
}

/* The child of `killed`: records forever, telling the parent through fd how many calls have returned. */
static void loop_forever(IHostMemoryManager *m, int fd)
{
    for (unsigned long n = 0;; n++) {
        void *p = NULL;
        IHostMemoryManager_VirtualAlloc(m, NULL, PAGE, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p);
        IHostMemoryManager_VirtualFree(m, p, 0, MEM_RELEASE);
        unsigned long done = 2 * (n + 1);
        if (write(fd, &done, sizeof done) != (ssize_t)sizeof done)
            _exit(1);
    }
}

/* The chosen host, recording to path. Returns an exit code: a host that cannot be made and a trace that cannot be
 * created are both bad input (2), each said plainly. */
static int open_recorded(const hm_host_choice *host, const char *path, IHostMemoryManager **out)
{
    IHostMemoryManager *inner;
    if (FAILED(hm__cli_open_host(host, &inner))) /* says what went wrong */
        return HM_EXIT_USAGE;
    hm_trace_env env;
    char resolved[4096];
    hm__cli_host_env(host, &env, resolved, sizeof resolved);
    HRESULT hr = HostMemWrapRecorderEnv(inner, path, &env, out);
    IHostMemoryManager_Release(inner);
    if (FAILED(hr)) {
        fprintf(stderr, "hostmem record: %s\n", HostMemLastError());
        return HM_EXIT_USAGE;
    }
    return HM_EXIT_OK;
}

static int record_killed(const hm_host_choice *host, const char *spec, const char *path, unsigned long calls)
{
    int fds[2];
    if (pipe(fds) != 0)
        return HM_EXIT_FAIL;
    pid_t pid = fork();
    if (pid < 0)
        return HM_EXIT_FAIL;
    if (pid == 0) {
        close(fds[0]);
        IHostMemoryManager *m;
        int code = open_recorded(host, spec, &m);
        if (code != HM_EXIT_OK)
            _exit(code);
        loop_forever(m, fds[1]);
    }
    close(fds[1]);
    unsigned long done = 0;
    while (done < calls && read(fds[0], &done, sizeof done) == (ssize_t)sizeof done)
        ;
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    close(fds[0]);
    if (done < calls && WIFEXITED(status) && WEXITSTATUS(status) == HM_EXIT_USAGE)
        return HM_EXIT_USAGE; /* the child could not open the host or the trace, and said so */
    printf("%s: the recorder was killed after at least %lu calls had returned\n", path, done);
    return done >= calls ? HM_EXIT_OK : HM_EXIT_FAIL;
}

static int record_command(int argc, char **argv)
{
    const char *out = NULL, *workload = NULL;
    bool overwrite = false;
    hm_host_choice host = {0};
    const char *level_name = "task";
    unsigned long long calls = 1000, timeout = 0;
    const hm_option table[] = {
        {"-o", "TRACE", HM_OPTION_STRING, &out, 0, 0, "the trace to write (required)", NULL},
        {"--overwrite", NULL, HM_OPTION_FLAG, &overwrite, 0, 0, "replace TRACE when it exists", NULL},
        {"--workload", "NAME", HM_OPTION_STRING, &workload, 0, 0, "basic, oom, threads or killed, instead of a program",
         NULL},
        HM_HOST_OPTIONS(&host),
        HM_FAULTS_OPTION(&host),
        {"--level", "LEVEL", HM_OPTION_STRING, &level_name, 0, 0, "task, appdomain or process (default task)", NULL},
        {"--calls", "N", HM_OPTION_UINT, &calls, 1, 1000000000, "the killed workload's calls (default 1000)", NULL},
        /* read by hm__cli_isolated (its first pass of this parser), which runs a plugin in a child */
        {"--timeout", "SECONDS", HM_OPTION_UINT, &timeout, 1, 86400, "for a workload on a plugin (default: no limit)",
         NULL},
    };
    const hm_command_spec command = {"record", "[-- PROGRAM [ARGS...]]", 0, 0, description, table,
                                     sizeof table / sizeof table[0]};
    /* The program and its arguments, after "--", are its own: the options end there. */
    int i = 1;
    while (i < argc && strcmp(argv[i], "--") != 0)
        i++;
    size_t operand_count;
    int parsed = hm__cli_parse_options(&command, i, argv, NULL, &operand_count);
    if (parsed >= 0)
        return parsed;
    if (i < argc)
        i++; /* past "--" */
    if (!out || (!workload && i >= argc) || (workload && i < argc)) {
        fprintf(stderr, "hostmem record: %s\n", !out                   ? "-o TRACE is missing"
                                                 : !workload && i >= argc ? "no --workload and no -- PROGRAM to run"
                                                                          : "--workload and a program: give one");
        hm__cli_usage(&command, stderr, false);
        return HM_EXIT_USAGE;
    }
    char spec[4096];
    if (snprintf(spec, sizeof spec, "%s%s", out, overwrite ? ",overwrite" : "") >= (int)sizeof spec) {
        fprintf(stderr, "hostmem record: the trace's name is too long\n");
        return HM_EXIT_USAGE;
    }
    if (!workload && (host.library || host.options || host.faults)) {
        fprintf(stderr, "hostmem record: --host, --host-options and --faults choose the host of a --workload; a "
                        "program creates its own (HOSTMEM_FAULTS applies to it)\n");
        return HM_EXIT_USAGE;
    }
    if (!workload) {
        /* A program: the built-in factory (HostMemCreateManager) records when HOSTMEM_TRACE is set. */
        setenv("HOSTMEM_TRACE", spec, 1); /* the recorder's spec: PATH[,overwrite] */
        execvp(argv[i], argv + i);
        fprintf(stderr, "hostmem record: cannot run '%s': %s\n", argv[i], strerror(errno));
        return HM_EXIT_USAGE;
    }
    /* Everything is checked before the output is opened: a usage error never empties an existing file. */
    if (strcmp(workload, "basic") != 0 && strcmp(workload, "oom") != 0 && strcmp(workload, "threads") != 0 &&
        strcmp(workload, "killed") != 0) {
        fprintf(stderr, "hostmem record: unknown workload '%s' (basic, oom, threads, killed)\n", workload);
        return HM_EXIT_USAGE;
    }
    EMemoryCriticalLevel level = strcmp(level_name, "process") == 0     ? eProcessCritical
                                 : strcmp(level_name, "appdomain") == 0 ? eAppDomainCritical
                                                                        : eTaskCritical;
    if (level == eTaskCritical && strcmp(level_name, "task") != 0) {
        fprintf(stderr, "hostmem record: --level wants task, appdomain or process, not '%s'\n", level_name);
        return HM_EXIT_USAGE;
    }
    /* The built-in host runs deterministic on the simulated backend (the trace is the same on every machine); the
     * oom workload gives it a 2 MiB budget to run into. A plugin gets its options as given. */
    char *builtin_options = NULL;
    if (!host.library) {
        const char *fixed = strcmp(workload, "oom") == 0 ? "deterministic=1,backend=sim,limit=2M"
                                                         : "deterministic=1,backend=sim";
        size_t len = strlen(fixed) + (host.options ? 1 + strlen(host.options) : 0) + 1;
        builtin_options = malloc(len); /* as long as --host-options is: never cut */
        if (!builtin_options) {
            fprintf(stderr, "hostmem record: out of memory\n");
            return HM_EXIT_FAIL;
        }
        snprintf(builtin_options, len, "%s%s%s", fixed, host.options ? "," : "", host.options ? host.options : "");
        host.options = builtin_options;
    }
    int code = HM_EXIT_OK;
    if (strcmp(workload, "killed") == 0) {
        code = record_killed(&host, spec, out, (unsigned long)calls);
        free(builtin_options);
        return code;
    }
    IHostMemoryManager *m;
    code = open_recorded(&host, spec, &m);
    free(builtin_options); /* the factory has parsed them */
    if (code != HM_EXIT_OK)
        return code;
    if (strcmp(workload, "basic") == 0)
        workload_basic(m);
    else if (strcmp(workload, "oom") == 0)
        code = workload_oom(m, level);
    else
        workload_threads(m);
    uint64_t recorded = HostMemRecorderCalls(m);
    IHostMemoryManager_Release(m);
    if (code == HM_EXIT_OK)
        printf("%s: %llu calls recorded\n", out, (unsigned long long)recorded);
    return code;
}

/* A plugin host is run in an isolated child (hm__cli_isolated): its crash, exit or hang is a finding. */
int hm__cmd_record(int argc, char **argv) { return hm__cli_isolated("record", record_command, argc, argv); }

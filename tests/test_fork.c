/* fork() from a busy multi-threaded process: four threads hammer one manager (wrapped in the fault layer) with
 * VirtualAlloc, VirtualFree, VirtualQuery and heap Alloc/Free while the main thread forks; each child makes calls
 * on the same manager and exits. A child that inherited a lock held by another thread at the fork hangs on its
 * first call: the parent gives each child 5 seconds. Then the same with a recorder around it all. */
#include "clock.h"

#include <hostmem/faults.h>
#include <hostmem/hostmem.h>
#include <hostmem/trace.h>

#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define THREADS 4
#define FORKS 30

typedef struct shared {
    IHostMemoryManager *m;
    IHostMalloc *heap;
    atomic_bool stop;
} shared;

static void *hammer(void *arg)
{
    shared *s = arg;
    IHostMemoryManager *m = s->m;
    unsigned seed = (unsigned)(uintptr_t)pthread_self();
    while (!atomic_load(&s->stop)) {
        void *p = NULL, *block = NULL;
        MEMORY_BASIC_INFORMATION info;
        SIZE_T got;
        size_t size = ((size_t)(rand_r(&seed) % 8) + 1) << 16;
        if (m->lpVtbl->VirtualAlloc(m, NULL, size, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p) ==
            S_OK) {
            m->lpVtbl->VirtualQuery(m, p, &info, sizeof info, &got);
            m->lpVtbl->VirtualFree(m, p, 4096, MEM_DECOMMIT);
            m->lpVtbl->VirtualFree(m, p, 0, MEM_RELEASE);
        }
        /* Small blocks and large ones: the large ones take the heap's lock and call the manager under it. */
        size_t bytes = rand_r(&seed) % 2 ? 64 : (size_t)100 << 10;
        if (s->heap->lpVtbl->Alloc(s->heap, bytes, eTaskCritical, &block) == S_OK)
            s->heap->lpVtbl->Free(s->heap, block);
    }
    return NULL;
}

/* The child's calls: every lock the threads were taking must be free. */
static int child_calls(shared *s)
{
    IHostMemoryManager *m = s->m;
    void *p, *block;
    MEMORY_BASIC_INFORMATION info;
    SIZE_T got;
    if (m->lpVtbl->VirtualAlloc(m, NULL, 1 << 16, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p) != S_OK)
        return 1;
    *(volatile char *)p = 1;
    if (m->lpVtbl->VirtualQuery(m, p, &info, sizeof info, &got) != S_OK || info.State != MEM_COMMIT)
        return 2;
    if (m->lpVtbl->VirtualFree(m, p, 0, MEM_RELEASE) != S_OK)
        return 3;
    if (s->heap->lpVtbl->Alloc(s->heap, (size_t)100 << 10, eTaskCritical, &block) != S_OK)
        return 4;
    if (s->heap->lpVtbl->Free(s->heap, block) != S_OK)
        return 5;
    hm_stats stats;
    if (HostMemGetStats(m, &stats) != S_OK)
        return 6;
    DWORD load;
    SIZE_T available;
    if (m->lpVtbl->GetMemoryLoad(m, &load, &available) != S_OK)
        return 7;
    return 0;
}

/* The child's exit status, or -1 when it did not finish within `seconds` (it is killed). */
static int wait_for(pid_t pid, double seconds)
{
    double deadline = hm_now_seconds() + seconds;
    for (;;) {
        int status;
        pid_t done = waitpid(pid, &status, WNOHANG);
        if (done == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        if (hm_now_seconds() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        struct timespec pause = {0, 1000000};
        nanosleep(&pause, NULL);
    }
}

/* recorded: the calls also go through a recorder (outermost), writing a trace. */
static void fork_while_busy(const char *options, bool recorded)
{
    IHostMemoryManager *inner;
    shared s = {0};
    assert_int_equal(HostMemCreateBuiltinManager(options, &inner), S_OK);
    /* An armed rule (for a method nobody calls here): the fault layer then takes its lock on every call. */
    assert_int_equal(HostMemWrapFaults(inner, "NeedsVirtualAddressSpace,probability=1%,seed=1", &s.m), S_OK);
    inner->lpVtbl->Release(inner);
    char trace[] = "/tmp/hostmem-fork-XXXXXX";
    if (recorded) {
        int fd = mkstemp(trace);
        assert_true(fd >= 0);
        close(fd);
        IHostMemoryManager *faults = s.m;
        char spec[sizeof trace + 16];
        snprintf(spec, sizeof spec, "%s,overwrite", trace); /* the file mkstemp made is ours */
        assert_int_equal(HostMemWrapRecorder(faults, spec, &s.m), S_OK);
        faults->lpVtbl->Release(faults);
    }
    assert_int_equal(s.m->lpVtbl->CreateMalloc(s.m, MALLOC_THREADSAFE, &s.heap), S_OK);
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, hammer, &s), 0);
    int hung = 0, failed = 0, last_status = 0;
    for (int i = 0; i < FORKS; i++) {
        struct timespec pause = {0, 2000000}; /* let the threads get going between forks */
        nanosleep(&pause, NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0)
            _exit(child_calls(&s));
        int status = wait_for(pid, 5.0);
        if (status < 0) {
            hung++;
            break; /* one is enough: do not wait 5 s for each */
        } else if (status != 0)
            failed++, last_status = status;
    }
    atomic_store(&s.stop, true);
    for (int i = 0; i < THREADS; i++)
        pthread_join(threads[i], NULL);
    s.heap->lpVtbl->Release(s.heap);
    s.m->lpVtbl->Release(s.m);
    if (recorded)
        unlink(trace);
    if (hung || failed)
        print_error("%s%s: %d of %d children hung, %d failed (last status %d)\n", options,
                    recorded ? ", recorded" : "", hung, FORKS, failed, last_status);
    assert_int_equal(hung, 0);
    assert_int_equal(failed, 0);
}

static void test_fork_os(void **state)
{
    (void)state;
    fork_while_busy("backend=os", false);
}

static void test_fork_sim(void **state)
{
    (void)state;
    fork_while_busy("backend=sim", false);
}

static void test_fork_recorded(void **state)
{
    (void)state;
    fork_while_busy("backend=os", true);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fork_os),
        cmocka_unit_test(test_fork_sim),
        cmocka_unit_test(test_fork_recorded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* The built-in manager at the kernel's map limit (vm.max_map_count): a child process fragments its address space
 * until mprotect fails with ENOMEM, then asks the manager for changes that split a mapping. Each call must tell the
 * truth: S_OK with the change made, or E_OUTOFMEMORY with nothing changed; never S_OK for a change the kernel
 * refused (a decommitted page still readable and holding its bytes). Skipped when filling the map would take more
 * than 5 seconds. */
#include "clock.h"

#include <hostmem/hostmem.h>

#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define PAGE ((uintptr_t)4096)
#define SKIP 77

static sigjmp_buf probe_env;
static void probe_fault(int sig)
{
    (void)sig;
    siglongjmp(probe_env, 1);
}

/* Whether reading p faults. */
static bool faults(uintptr_t p)
{
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = probe_fault;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &old);
    volatile bool faulted = true;
    if (sigsetjmp(probe_env, 1) == 0) {
        (void)*(volatile uint8_t *)p;
        faulted = false;
    }
    sigaction(SIGSEGV, &old, NULL);
    return faulted;
}

/* The child's verdict goes out on stderr, written without allocating (malloc may need a mapping). */
static int child_fail(const char *msg)
{
    ssize_t ignored = write(2, msg, strlen(msg));
    (void)ignored;
    return 1;
}

static DWORD state_of(IHostMemoryManager *m, uintptr_t a, DWORD *protect)
{
    MEMORY_BASIC_INFORMATION info;
    SIZE_T got;
    if (m->lpVtbl->VirtualQuery(m, (void *)a, &info, sizeof info, &got) != S_OK)
        return 0;
    *protect = info.Protect;
    return info.State;
}

/* Fills the map, then checks decommit, protect and commit of one page in the middle of a mapping. */
static int child(void)
{
    long limit = 0;
    FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
    if (!f || fscanf(f, "%ld", &limit) != 1 || limit <= 0 || limit > 1000000) {
        fprintf(stderr, "skipped: vm.max_map_count unreadable or too large (%ld)\n", limit);
        return SKIP;
    }
    fclose(f);
    IHostMemoryManager *m;
    if (HostMemCreateBuiltinManager("backend=os", &m) != S_OK)
        return child_fail("manager creation failed\n");
    /* 16 pages: 0-11 committed read-write with a pattern, 12-15 reserved. */
    void *p;
    if (m->lpVtbl->VirtualAlloc(m, NULL, 16 * PAGE, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &p) != S_OK ||
        m->lpVtbl->VirtualAlloc(m, p, 12 * PAGE, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p) != S_OK)
        return child_fail("setup calls failed\n");
    uintptr_t base = (uintptr_t)p;
    for (uintptr_t i = 0; i < 12; i++)
        *(volatile uint8_t *)(base + i * PAGE) = (uint8_t)(i + 1);

    /* Every other page of a large area made readable: two more mappings each, until the kernel refuses. */
    size_t pages = (size_t)limit * 2 + 64;
    char *area = mmap(NULL, pages * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (area == MAP_FAILED)
        return child_fail("the fragmenting area could not be mapped\n");
    double start = hm_now_seconds();
    size_t i = 1;
    for (; i < pages; i += 2) {
        if (mprotect(area + i * PAGE, PAGE, PROT_READ) != 0)
            break;
        if ((i & 1023) == 1 && hm_now_seconds() - start > 5.0) {
            fprintf(stderr, "skipped: filling the map took more than 5 s\n");
            return SKIP;
        }
    }
    if (i >= pages || errno != ENOMEM)
        return child_fail("the kernel never refused a mapping\n");

    /* Decommit of page 5: inside the committed run's mapping, so it needs a split the kernel now refuses. */
    HRESULT hr = m->lpVtbl->VirtualFree(m, (void *)(base + 5 * PAGE), PAGE, MEM_DECOMMIT);
    DWORD protect = 0, state = state_of(m, base + 5 * PAGE, &protect);
    if (hr == S_OK) {
        if (state != MEM_RESERVE || !faults(base + 5 * PAGE))
            return child_fail("decommit said S_OK, but the page is not decommitted\n");
    } else if (hr != E_OUTOFMEMORY) {
        return child_fail("decommit failed with another error than E_OUTOFMEMORY\n");
    } else if (state != MEM_COMMIT || *(volatile uint8_t *)(base + 5 * PAGE) != 6) {
        return child_fail("decommit failed, but the page changed\n");
    }
    /* Protect of page 7 to read-only. */
    DWORD old;
    hr = m->lpVtbl->VirtualProtect(m, (void *)(base + 7 * PAGE), PAGE, PAGE_READONLY, &old);
    state = state_of(m, base + 7 * PAGE, &protect);
    if (hr == S_OK ? protect != PAGE_READONLY : hr != E_OUTOFMEMORY || protect != PAGE_READWRITE)
        return child_fail("VirtualProtect's result and the page's protection disagree\n");
    if (*(volatile uint8_t *)(base + 7 * PAGE) != 8)
        return child_fail("VirtualProtect changed the page's contents\n");
    /* Commit of page 13, inside the reserved tail. */
    hr = m->lpVtbl->VirtualAlloc(m, (void *)(base + 13 * PAGE), PAGE, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p);
    state = state_of(m, base + 13 * PAGE, &protect);
    if (hr == S_OK ? state != MEM_COMMIT || faults(base + 13 * PAGE)
                   : hr != E_OUTOFMEMORY || state != MEM_RESERVE || !faults(base + 13 * PAGE))
        return child_fail("commit's result and the page's state disagree\n");
    char msg[256];
    if (HostMemCheckConsistency(m, msg, sizeof msg) != S_OK)
        return child_fail("the books are unsound after the calls at the limit\n");
    /* Room again: the same decommit succeeds, and the page faults. */
    munmap(area, pages * PAGE);
    if (m->lpVtbl->VirtualFree(m, (void *)(base + 5 * PAGE), PAGE, MEM_DECOMMIT) != S_OK ||
        !faults(base + 5 * PAGE))
        return child_fail("decommit with room again did not take the page away\n");
    m->lpVtbl->Release(m);
    return 0;
}

static void test_decommit_at_map_limit(void **state)
{
    (void)state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(child());
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) == SKIP)
        skip();
    assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decommit_at_map_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* What the built-in manager does when the kernel refuses: every OS-layer primitive a method uses is made to fail in
 * turn (the nth call of each, as near vm.max_map_count), and the method must fail with E_OUTOFMEMORY and nothing
 * changed: VirtualQuery shows the same regions, the committed bytes and their contents are the same and still
 * readable, reserved pages still fault, the books are sound, and the same call succeeds once the OS agrees again.
 * test_map_limit.c does the same for real, at the kernel's limit. */
#include <hostmem/hostmem.h>

#include "manager.h" /* hm__manager_reset */
#include "os.h"

#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
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
#define MAX_RUNS 16

typedef struct fx {
    IHostMemoryManager *m;
    bool enforced; /* the os backend: reserved pages fault */
    uintptr_t base; /* the watched reservation (0: none yet) */
    size_t size;
    IHostMalloc *heap;
    uint8_t *block; /* a live heap block holding pattern(i) at each 4 KiB i */
} fx;

/* ---- The state a call starts from ------------------------------------------------------------------------- */

static uint8_t pattern(uintptr_t page_index) { return (uint8_t)(page_index * 7 + 1); }

/* A reservation of `size` bytes: pages 2-5 and 8-9 committed read-write, 6-7 read-only, the rest reserved; every
 * committed page starts with its pattern byte. */
static void mixed(fx *f, size_t size)
{
    void *p;
    assert_int_equal(f->m->lpVtbl->VirtualAlloc(f->m, NULL, size, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &p),
                     S_OK);
    f->base = (uintptr_t)p, f->size = size;
    assert_int_equal(f->m->lpVtbl->VirtualAlloc(f->m, (void *)(f->base + 2 * PAGE), 8 * PAGE, MEM_COMMIT,
                                                PAGE_READWRITE, eTaskCritical, &p), S_OK);
    for (uintptr_t i = 2; i < 10; i++)
        *(volatile uint8_t *)(f->base + i * PAGE) = pattern(i);
    DWORD old;
    assert_int_equal(f->m->lpVtbl->VirtualProtect(f->m, (void *)(f->base + 6 * PAGE), 2 * PAGE, PAGE_READONLY, &old),
                     S_OK);
}

static void prepare_nothing(fx *f) { (void)f; }
static void prepare_small(fx *f) { mixed(f, 64 << 10); }
static void prepare_dedicated(fx *f) { mixed(f, 20 << 20); } /* more than a quarter of a 64 MiB span */
static void prepare_heap(fx *f) { assert_int_equal(f->m->lpVtbl->CreateMalloc(f->m, 0, &f->heap), S_OK); }
static void prepare_heap_used(fx *f)
{
    prepare_heap(f);
    void *p;
    assert_int_equal(f->heap->lpVtbl->Alloc(f->heap, 100, eTaskCritical, &p), S_OK);
}

#define BLOCK_SIZE ((size_t)1 << 20)
static void prepare_heap_block(fx *f)
{
    prepare_heap(f);
    void *p;
    assert_int_equal(f->heap->lpVtbl->Alloc(f->heap, BLOCK_SIZE, eTaskCritical, &p), S_OK);
    f->block = p;
    for (size_t i = 0; i < BLOCK_SIZE / PAGE; i++)
        f->block[i * PAGE] = pattern(i);
}

/* ---- The calls ---------------------------------------------------------------------------------------------- */

static HRESULT alloc(fx *f, uintptr_t at, size_t size, DWORD type)
{
    void *p;
    return f->m->lpVtbl->VirtualAlloc(f->m, (void *)at, size, type, PAGE_READWRITE, eTaskCritical, &p);
}
static HRESULT act_reserve(fx *f) { return alloc(f, 0, 64 << 10, MEM_RESERVE); }
static HRESULT act_reserve_commit(fx *f) { return alloc(f, 0, 64 << 10, MEM_RESERVE | MEM_COMMIT); }
static HRESULT act_reserve_commit_dedicated(fx *f) { return alloc(f, 0, 20 << 20, MEM_RESERVE | MEM_COMMIT); }
static HRESULT act_reserve_at(fx *f)
{
    /* A free address: where the kernel just had room for 1 MiB. */
    void *hole = mmap(NULL, 1 << 20, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(hole != MAP_FAILED);
    munmap(hole, 1 << 20);
    uintptr_t at = ((uintptr_t)hole + 0xFFFF) & ~(uintptr_t)0xFFFF;
    return alloc(f, at, 64 << 10, MEM_RESERVE | MEM_COMMIT);
}
static HRESULT act_commit(fx *f) { return alloc(f, f->base, 16 * PAGE, MEM_COMMIT); }
static HRESULT act_reset(fx *f) { return alloc(f, f->base + 2 * PAGE, 8 * PAGE, MEM_RESET); }
static HRESULT act_decommit_page(fx *f)
{
    return f->m->lpVtbl->VirtualFree(f->m, (void *)(f->base + 3 * PAGE), PAGE, MEM_DECOMMIT);
}
static HRESULT act_decommit_all(fx *f) { return f->m->lpVtbl->VirtualFree(f->m, (void *)f->base, 0, MEM_DECOMMIT); }
static HRESULT act_release(fx *f) { return f->m->lpVtbl->VirtualFree(f->m, (void *)f->base, 0, MEM_RELEASE); }
static HRESULT act_protect(fx *f)
{
    DWORD old;
    return f->m->lpVtbl->VirtualProtect(f->m, (void *)(f->base + 3 * PAGE), 6 * PAGE, PAGE_EXECUTE_READ, &old);
}
static HRESULT act_heap_alloc(fx *f)
{
    void *p;
    return f->heap->lpVtbl->Alloc(f->heap, 100, eTaskCritical, &p);
}
static HRESULT act_heap_alloc_large(fx *f)
{
    void *p;
    return f->heap->lpVtbl->Alloc(f->heap, 1 << 20, eTaskCritical, &p);
}

static HRESULT act_heap_free_large(fx *f) { return f->heap->lpVtbl->Free(f->heap, f->block); }

typedef struct scenario {
    const char *name;
    void (*prepare)(fx *f);
    HRESULT (*act)(fx *f);
} scenario;

static const scenario scenarios[] = {
    {"VirtualAlloc MEM_RESERVE", prepare_nothing, act_reserve},
    {"VirtualAlloc MEM_RESERVE|MEM_COMMIT", prepare_nothing, act_reserve_commit},
    {"VirtualAlloc MEM_RESERVE|MEM_COMMIT, a span of its own", prepare_nothing, act_reserve_commit_dedicated},
    {"VirtualAlloc MEM_RESERVE|MEM_COMMIT at an address", prepare_nothing, act_reserve_at},
    {"VirtualAlloc MEM_COMMIT over mixed pages", prepare_small, act_commit},
    {"VirtualAlloc MEM_RESET", prepare_small, act_reset},
    {"VirtualFree MEM_DECOMMIT of one page inside a committed run", prepare_small, act_decommit_page},
    {"VirtualFree MEM_DECOMMIT of a reservation", prepare_small, act_decommit_all},
    {"VirtualFree MEM_RELEASE", prepare_small, act_release},
    {"VirtualFree MEM_RELEASE of a span of its own", prepare_dedicated, act_release},
    {"VirtualFree MEM_DECOMMIT of one page, a span of its own", prepare_dedicated, act_decommit_page},
    {"VirtualProtect across runs", prepare_small, act_protect},
    {"IHostMalloc::Alloc, the first chunk", prepare_heap, act_heap_alloc},
    {"IHostMalloc::Alloc of a large block", prepare_heap_used, act_heap_alloc_large},
    {"IHostMalloc::Free of a large block", prepare_heap_block, act_heap_free_large},
};

/* ---- What must not change ----------------------------------------------------------------------------------- */

typedef struct snapshot {
    hm_stats stats;
    size_t nruns;
    MEMORY_BASIC_INFORMATION runs[MAX_RUNS];
} snapshot;

static void take(fx *f, snapshot *s)
{
    memset(s, 0, sizeof *s);
    assert_int_equal(HostMemGetStats(f->m, &s->stats), S_OK);
    for (uintptr_t a = f->base; f->base && a < f->base + f->size && s->nruns < MAX_RUNS;) {
        SIZE_T got;
        MEMORY_BASIC_INFORMATION *info = &s->runs[s->nruns++];
        assert_int_equal(f->m->lpVtbl->VirtualQuery(f->m, (void *)a, info, sizeof *info, &got), S_OK);
        a = (uintptr_t)info->BaseAddress + info->RegionSize;
    }
}

static sigjmp_buf probe_env;
static void probe_fault(int sig)
{
    (void)sig;
    siglongjmp(probe_env, 1);
}

/* Whether reading p faults. */
static bool faults(uintptr_t p)
{
    struct sigaction sa, old_segv, old_bus;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = probe_fault;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &old_segv);
    sigaction(SIGBUS, &sa, &old_bus);
    volatile bool faulted = true;
    if (sigsetjmp(probe_env, 1) == 0) {
        (void)*(volatile uint8_t *)p;
        faulted = false;
    }
    sigaction(SIGSEGV, &old_segv, NULL);
    sigaction(SIGBUS, &old_bus, NULL);
    return faulted;
}

static void report(const char *what, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    print_error("%s: %s\n", what, msg);
    fail();
}

/* The state after the failed call is the state before it, in the books and in the pages. */
static void expect_unchanged(fx *f, const snapshot *before, const char *what)
{
    snapshot after;
    take(f, &after);
    if (after.stats.committed_bytes != before->stats.committed_bytes ||
        after.stats.reservations != before->stats.reservations ||
        after.stats.reserved_bytes != before->stats.reserved_bytes)
        report(what, "stats changed: committed %llu -> %llu, reservations %llu -> %llu",
                 (unsigned long long)before->stats.committed_bytes, (unsigned long long)after.stats.committed_bytes,
                 (unsigned long long)before->stats.reservations, (unsigned long long)after.stats.reservations);
    if (after.nruns != before->nruns || memcmp(after.runs, before->runs, sizeof after.runs) != 0)
        report(what, "VirtualQuery shows other regions than before the call (%zu runs, %zu before)", after.nruns,
                 before->nruns);
    char msg[256];
    if (HostMemCheckConsistency(f->m, msg, sizeof msg) != S_OK)
        report(what, "books unsound: %s", msg);
    for (size_t i = 0; f->block && i < BLOCK_SIZE / PAGE; i++)
        if (f->block[i * PAGE] != pattern(i))
            report(what, "the heap block lost its contents at %zu", i * PAGE);
    for (size_t i = 0; i < after.nruns; i++) {
        const MEMORY_BASIC_INFORMATION *r = &after.runs[i];
        uintptr_t a = (uintptr_t)r->BaseAddress, end = a + r->RegionSize;
        bool readable = r->State == MEM_COMMIT && r->Protect != PAGE_NOACCESS;
        for (uintptr_t p = a; p < end; p += PAGE) {
            uintptr_t index = (p - f->base) / PAGE;
            if (readable && *(volatile uint8_t *)p != pattern(index))
                report(what, "committed page %lu lost its contents", (unsigned long)index);
            /* Valgrind reports the probing read itself as an error: under it, the kernel's side goes unchecked. */
            if (!readable && f->enforced && !getenv("HOSTMEM_UNDER_VALGRIND") && !faults(p))
                report(what, "page %lu is accessible, but VirtualQuery says state %#lx protect %#lx",
                         (unsigned long)index, (unsigned long)r->State, (unsigned long)r->Protect);
            if (index >= 16)
                break; /* a large reservation's tail is one reserved run: its first page stands for it */
        }
    }
}

/* ---- The table ---------------------------------------------------------------------------------------------- */

static const char *const op_names[HM_OS_OPS] = {"map_span", "unmap_span", "commit", "decommit", "protect", "reset"};

static void open_fx(fx *f, const char *options, const scenario *sc)
{
    memset(f, 0, sizeof *f);
    /* A 64 MiB span: the smallest, so a refused span is not retried at half the size. */
    char opts[128];
    snprintf(opts, sizeof opts, "backend=%s,span=64M", options);
    assert_int_equal(HostMemCreateBuiltinManager(opts, &f->m), S_OK);
    f->enforced = strcmp(options, "os") == 0;
    sc->prepare(f);
}

static void close_fx(fx *f)
{
    if (f->heap)
        f->heap->lpVtbl->Release(f->heap);
    f->m->lpVtbl->Release(f->m);
}

static void run_backend(const char *backend)
{
    unsigned checked = 0;
    for (size_t k = 0; k < sizeof scenarios / sizeof *scenarios; k++) {
        const scenario *sc = &scenarios[k];
        /* A clean run counts the primitives the call makes. */
        fx f;
        open_fx(&f, backend, sc);
        hm__os_fail(HM_OS_MAP_SPAN, 0, 0, false);
        HRESULT hr = sc->act(&f);
        unsigned long calls[HM_OS_OPS], total = 0;
        for (int op = 0; op < HM_OS_OPS; op++)
            total += calls[op] = hm__os_calls((hm_os_op)op);
        hm__os_fail_off();
        close_fx(&f);
        if (hr != S_OK || total == 0)
            report(sc->name, "the clean call gave %#lx after %lu OS calls", (unsigned long)hr, total);
        for (int op = 0; op < HM_OS_OPS; op++) {
            for (unsigned long nth = 1; nth <= calls[op] && nth <= 4; nth++) {
                for (int partial = 0; partial <= (op == HM_OS_COMMIT || op == HM_OS_PROTECT); partial++) {
                    char what[200];
                    snprintf(what, sizeof what, "%s (backend=%s): %s call %lu fails%s", sc->name, backend,
                             op_names[op], nth, partial ? " part-way" : "");
                    open_fx(&f, backend, sc);
                    snapshot before;
                    take(&f, &before);
                    hm__os_fail((hm_os_op)op, nth, ENOMEM, partial);
                    hr = sc->act(&f);
                    hm__os_fail_off();
                    if (hr != E_OUTOFMEMORY)
                        report(what, "the call gave %#lx, not E_OUTOFMEMORY", (unsigned long)hr);
                    expect_unchanged(&f, &before, what);
                    /* The manager keeps working: the same call, the OS willing, succeeds. */
                    if ((hr = sc->act(&f)) != S_OK)
                        report(what, "the call once the OS agrees gave %#lx", (unsigned long)hr);
                    char msg[256];
                    if (HostMemCheckConsistency(f.m, msg, sizeof msg) != S_OK)
                        report(what, "books unsound after the retry: %s", msg);
                    close_fx(&f);
                    checked++;
                }
            }
        }
    }
    print_message("%u injected failures checked (backend=%s)\n", checked, backend);
}

static void test_each_primitive_fails_os(void **state)
{
    (void)state;
    run_backend("os");
}

static void test_each_primitive_fails_sim(void **state)
{
    (void)state;
    run_backend("sim");
}

/* hm__manager_reset cannot fail; a span whose pages it could not discard must not be kept for reuse: the same
 * reservation after the reset reads zero (a kept span would show the old contents). */
static void reset_after_refused_discard(const char *backend, bool dedicated)
{
    IHostMemoryManager *m;
    char opts[128];
    snprintf(opts, sizeof opts, "backend=%s,span=64M,deterministic=1", backend);
    assert_int_equal(HostMemCreateBuiltinManager(opts, &m), S_OK);
    size_t size = dedicated ? (size_t)20 << 20 : (size_t)64 << 10;
    void *p, *q;
    assert_int_equal(m->lpVtbl->VirtualAlloc(m, NULL, size, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, eTaskCritical,
                                             &p), S_OK);
    memset(p, 0xA5, 4 * PAGE);
    hm__os_fail(HM_OS_DECOMMIT, 1, ENOMEM, false);
    assert_int_equal(hm__manager_reset(m), S_OK);
    unsigned long refused = hm__os_calls(HM_OS_DECOMMIT);
    hm__os_fail_off();
    assert_int_equal(refused, 1);
    assert_int_equal(m->lpVtbl->VirtualAlloc(m, NULL, size, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, eTaskCritical,
                                             &q), S_OK);
    if (q != p) /* the test is about reusing that place */
        report(backend, "the reservation after the reset went to %p, not %p", q, p);
    for (size_t i = 0; i < 4 * PAGE; i++)
        if (((volatile uint8_t *)q)[i] != 0)
            report(backend, "after a reset whose discard failed, a new reservation at %p (was %p) reads %#x", q, p,
                   ((uint8_t *)q)[i]);
    char msg[256];
    assert_int_equal(HostMemCheckConsistency(m, msg, sizeof msg), S_OK);
    m->lpVtbl->Release(m);
}

static void test_reset_after_refused_discard(void **state)
{
    (void)state;
    for (int dedicated = 0; dedicated < 2; dedicated++) {
        reset_after_refused_discard("os", dedicated);
        reset_after_refused_discard("sim", dedicated);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_primitive_fails_os),
        cmocka_unit_test(test_each_primitive_fails_sim),
        cmocka_unit_test(test_reset_after_refused_discard),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

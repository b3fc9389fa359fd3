/* Host heaps (src/heap.c) over a test page source built on plain mmap, which counts what it hands out and can be
 * told to fail. Run with `--uaf` to use a freed block on purpose (registered under ASan, see test_heap.cmake). */
#include "heap.h"

#include <pthread.h>
#include <stdatomic.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <cmocka.h>

typedef struct test_source {
    size_t live_bytes, chunks;
    int fail_after;                 /* fail the allocation after this many more; -1: never */
    bool fail_release;              /* keep what the heap gives back (the OS refused), failing the release */
    EMemoryCriticalLevel last_level;
    int destroyed;
    hm_leak report[8];
    char report_files[8][64];
    size_t report_count;
} test_source;

static HRESULT source_alloc(void *ctx, size_t size, EMemoryCriticalLevel level, void **out)
{
    test_source *s = ctx;
    s->last_level = level;
    if (s->fail_after == 0) {
        *out = NULL;
        return E_OUTOFMEMORY;
    }
    if (s->fail_after > 0)
        s->fail_after--;
    /* 64 KiB alignment by over-mapping and trimming, as the manager guarantees. */
    char *p = mmap(NULL, size + 0x10000, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(p != MAP_FAILED);
    uintptr_t aligned = ((uintptr_t)p + 0xFFFF) & ~(uintptr_t)0xFFFF;
    if (aligned > (uintptr_t)p)
        munmap(p, aligned - (uintptr_t)p);
    size_t tail = (uintptr_t)p + size + 0x10000 - (aligned + size);
    if (tail)
        munmap((void *)(aligned + size), tail);
    s->live_bytes += size;
    s->chunks++;
    *out = (void *)aligned;
    return S_OK;
}

static HRESULT source_release(void *ctx, void *addr, size_t size)
{
    test_source *s = ctx;
    assert_int_equal((uintptr_t)addr & 0xFFFF, 0);
    if (s->fail_release)
        return E_OUTOFMEMORY;
    munmap(addr, size);
    s->live_bytes -= size;
    s->chunks--;
    return S_OK;
}

static void source_destroyed(void *ctx, const hm_leak *leaks, size_t n)
{
    test_source *s = ctx;
    s->destroyed++;
    assert_int_equal(s->live_bytes, 0); /* every chunk went back first */
    s->report_count = n;
    for (size_t i = 0; i < n && i < 8; i++) {
        s->report[i] = leaks[i];
        snprintf(s->report_files[i], sizeof s->report_files[i], "%s", leaks[i].file);
        s->report[i].file = s->report_files[i];
    }
}

/* Live blocks as the heap counts them. */
static int64_t live_blocks(IHostMalloc *h)
{
    uint64_t blocks, bytes;
    hm__heap_usage(h, &blocks, &bytes);
    return (int64_t)blocks;
}

static int64_t live_bytes(IHostMalloc *h)
{
    uint64_t blocks, bytes;
    hm__heap_usage(h, &blocks, &bytes);
    return (int64_t)bytes;
}

static IHostMalloc *make_heap(test_source *s, DWORD type)
{
    memset(s, 0, sizeof *s);
    s->fail_after = -1;
    hm_page_source src = {s, source_alloc, source_release, source_destroyed};
    IHostMalloc *h = NULL;
    assert_int_equal(hm__heap_create(&src, type, &h), S_OK);
    return h;
}

static void check(IHostMalloc *h)
{
    char msg[256];
    if (hm__heap_check(h, msg, sizeof msg) != 0)
        fail_msg("heap inconsistent: %s", msg);
}

/* Every size class: blocks are 16-aligned, never overlap, keep their contents, and free cleanly. */
/* A source that will not take a chunk back (the OS refused to discard its pages): a large block's Free fails with
 * the block still live and whole; emptied small chunks stay the heap's, as spares. Once the source agrees, all goes
 * back. */
static void test_source_refuses_release(void **state)
{
    (void)state;
    for (int threadsafe = 0; threadsafe < 2; threadsafe++) {
        test_source s;
        IHostMalloc *h = make_heap(&s, threadsafe ? MALLOC_THREADSAFE : 0);
        void *large;
        assert_int_equal(IHostMalloc_Alloc(h, 200000, eTaskCritical, &large), S_OK);
        memset(large, 0x5A, 200000);
        enum { SMALL = 200 };
        void *small[SMALL];
        for (int i = 0; i < SMALL; i++) {
            assert_int_equal(IHostMalloc_Alloc(h, 16000, eTaskCritical, &small[i]), S_OK);
            memset(small[i], i & 0xFF, 16000);
        }
        size_t chunks = s.chunks, bytes = s.live_bytes;
        s.fail_release = true;
        assert_int_equal(IHostMalloc_Free(h, large), E_OUTOFMEMORY);
        for (int i = 0; i < 200000; i += 4096)
            assert_int_equal(((unsigned char *)large)[i], 0x5A);
        for (int i = 0; i < SMALL; i++)
            assert_int_equal(IHostMalloc_Free(h, small[i]), S_OK);
        assert_int_equal(s.chunks, chunks); /* nothing went back */
        assert_int_equal(s.live_bytes, bytes);
        assert_int_equal(live_blocks(h), 1);
        check(h);
        s.fail_release = false;
        assert_int_equal(IHostMalloc_Free(h, large), S_OK);
        assert_int_equal(IHostMalloc_Free(h, large), HOST_E_INVALIDOPERATION);
        for (int i = 0; i < SMALL; i++) /* the kept chunks serve again */
            assert_int_equal(IHostMalloc_Alloc(h, 16000, eTaskCritical, &small[i]), S_OK);
        assert_int_equal(s.chunks, chunks - 1); /* only the large block went */
        check(h);
        for (int i = 0; i < SMALL; i++)
            assert_int_equal(IHostMalloc_Free(h, small[i]), S_OK);
        IHostMalloc_Release(h);
        assert_int_equal(s.destroyed, 1); /* and the source got every chunk back first (source_destroyed) */
    }
}

static void test_sizes_and_contents(void **state)
{
    static const size_t sizes[] = {0, 1, 7, 8, 15, 16, 17, 100, 1000, 1024, 1025, 4000, 4096, 20000, 32768, 32769,
                                   65536, 100000, 1 << 20};
    test_source s;
    IHostMalloc *h = make_heap(&s, MALLOC_THREADSAFE);
    enum { PER = 20 };
    void *blocks[sizeof sizes / sizeof sizes[0]][PER];
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        for (int k = 0; k < PER; k++) {
            assert_int_equal(IHostMalloc_Alloc(h, sizes[i], eTaskCritical, &blocks[i][k]), S_OK);
            assert_int_equal((uintptr_t)blocks[i][k] % 16, 0);
            memset(blocks[i][k], (int)(i * PER + k) & 0xFF, sizes[i] ? sizes[i] : 1);
        }
    check(h);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        for (int k = 0; k < PER; k++) {
            const unsigned char *b = blocks[i][k];
            size_t n = sizes[i] ? sizes[i] : 1;
            for (size_t j = 0; j < n; j += 1 + n / 64)
                if (b[j] != (unsigned char)((i * PER + k) & 0xFF))
                    fail_msg("size %zu block %d byte %zu overwritten", sizes[i], k, j);
        }
    assert_int_equal(live_blocks(h), (int64_t)(PER * (sizeof sizes / sizeof sizes[0])));
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        for (int k = 0; k < PER; k++)
            assert_int_equal(IHostMalloc_Free(h, blocks[i][k]), S_OK);
    check(h);
    assert_int_equal(live_blocks(h), 0);
    assert_int_equal(live_bytes(h), 0);
    assert_int_equal(IHostMalloc_Release(h), 0);
    assert_int_equal(s.destroyed, 1);
    assert_int_equal(s.report_count, 0);
    assert_int_equal(s.chunks, 0);
}

typedef enum { PTR_NULL, PTR_STACK, PTR_GLOBAL, PTR_INTERIOR, PTR_OTHER_HEAP, PTR_FREED, PTR_HEADER, PTR_PAST_END } ptr_kind;

typedef struct ownership_case {
    const char *what;
    ptr_kind kind;
    HRESULT expect;
} ownership_case;

static int a_global;

/* Free of anything that is not a live block of this heap is refused with HOST_E_INVALIDOPERATION and changes
 * nothing; Free(NULL) is S_OK. */
static void test_ownership_errors(void **state)
{
    static const ownership_case cases[] = {
        {"NULL", PTR_NULL, S_OK},
        {"a stack address", PTR_STACK, HOST_E_INVALIDOPERATION},
        {"a global", PTR_GLOBAL, HOST_E_INVALIDOPERATION},
        {"inside a block", PTR_INTERIOR, HOST_E_INVALIDOPERATION},
        {"another heap's block", PTR_OTHER_HEAP, HOST_E_INVALIDOPERATION},
        {"a freed block (double free)", PTR_FREED, HOST_E_INVALIDOPERATION},
        {"a block's header", PTR_HEADER, HOST_E_INVALIDOPERATION},
        {"a never-handed-out slot", PTR_PAST_END, HOST_E_INVALIDOPERATION},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        test_source s, s2;
        IHostMalloc *h = make_heap(&s, MALLOC_THREADSAFE);
        IHostMalloc *other = make_heap(&s2, 0);
        void *live, *freed, *foreign;
        int local;
        assert_int_equal(IHostMalloc_Alloc(h, 64, eTaskCritical, &live), S_OK);
        assert_int_equal(IHostMalloc_Alloc(h, 64, eTaskCritical, &freed), S_OK);
        assert_int_equal(IHostMalloc_Free(h, freed), S_OK);
        assert_int_equal(IHostMalloc_Alloc(other, 64, eTaskCritical, &foreign), S_OK);
        memset(live, 0x3C, 64);
        void *p = NULL;
        switch (cases[i].kind) {
        case PTR_NULL: p = NULL; break;
        case PTR_STACK: p = &local; break;
        case PTR_GLOBAL: p = &a_global; break;
        case PTR_INTERIOR: p = (char *)live + 16; break;
        case PTR_OTHER_HEAP: p = foreign; break;
        case PTR_FREED: p = freed; break;
        case PTR_HEADER: p = (char *)live - 16; break;
        case PTR_PAST_END: p = (char *)live + 64 * 80; break;
        }
        HRESULT hr = IHostMalloc_Free(h, p);
        if (hr != cases[i].expect)
            fail_msg("Free(%s): %s, expected %s", cases[i].what, hm_hr_name(hr), hm_hr_name(cases[i].expect));
        check(h);
        for (int k = 0; k < 64; k++)
            assert_int_equal(((unsigned char *)live)[k], 0x3C);
        assert_int_equal(live_blocks(h), 1);
        assert_int_equal(IHostMalloc_Free(h, live), S_OK);
        assert_int_equal(IHostMalloc_Free(other, foreign), S_OK);
        IHostMalloc_Release(h);
        IHostMalloc_Release(other);
    }
}

/* Every 8-byte step of a chunk that is not a live block's start (the chunk's header among its slots, the slots it
 * covers, free and never handed out slots, block interiors) is refused and changes nothing. */
static void test_every_offset_of_a_chunk(void **state)
{
    static const size_t sizes[] = {16, 48, 1024, 4097};
    for (int threadsafe = 0; threadsafe < 2; threadsafe++)
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            test_source s;
            IHostMalloc *h = make_heap(&s, threadsafe ? MALLOC_THREADSAFE : 0);
            void *live[3], *freed;
            for (int k = 0; k < 3; k++)
                assert_int_equal(IHostMalloc_Alloc(h, sizes[i], eTaskCritical, &live[k]), S_OK);
            assert_int_equal(IHostMalloc_Alloc(h, sizes[i], eTaskCritical, &freed), S_OK);
            assert_int_equal(IHostMalloc_Free(h, freed), S_OK);
            char *base = (char *)((uintptr_t)live[0] & ~(uintptr_t)0xFFFF);
            for (size_t off = 0; off < 0x10000; off += 8) {
                char *q = base + off;
                if (q == live[0] || q == live[1] || q == live[2])
                    continue;
                HRESULT hr = IHostMalloc_Free(h, q);
                if (hr != HOST_E_INVALIDOPERATION)
                    fail_msg("size %zu: Free(chunk + %#zx): %s", sizes[i], off, hm_hr_name(hr));
            }
            check(h);
            assert_int_equal(live_blocks(h), 3);
            assert_int_equal(live_bytes(h), (int64_t)(3 * sizes[i]));
            for (int k = 0; k < 3; k++)
                assert_int_equal(IHostMalloc_Free(h, live[k]), S_OK);
            check(h);
            IHostMalloc_Release(h);
            assert_int_equal(s.chunks, 0);
        }
}

/* Statistics and leak reports give the requested sizes exactly, whatever the slack in the slot (wide classes keep
 * their sizes aside). */
static void test_exact_sizes(void **state)
{
    static const size_t sizes[] = {0, 1, 15, 17, 1000, 1025, 1900, 2049, 4097, 4600, 20000, 28000, 32768, 40000};
    test_source s;
    IHostMalloc *h = make_heap(&s, MALLOC_THREADSAFE);
    void *blocks[sizeof sizes / sizeof sizes[0]];
    int64_t total = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        assert_int_equal(IHostMalloc_DebugAlloc(h, sizes[i], eTaskCritical, (char *)"s.c", (int)i + 1, &blocks[i]),
                         S_OK);
        total += sizes[i] ? (int64_t)sizes[i] : 1;
    }
    check(h);
    assert_int_equal(live_blocks(h), (int64_t)(sizeof sizes / sizeof sizes[0]));
    assert_int_equal(live_bytes(h), total);
    hm_leak leaks[16];
    size_t n = hm__heap_leaks(h, leaks, 16);
    assert_int_equal(n, sizeof sizes / sizeof sizes[0]);
    for (size_t k = 0; k < n; k++)
        assert_int_equal(leaks[k].bytes, sizes[leaks[k].line - 1] ? sizes[leaks[k].line - 1] : 1);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        assert_int_equal(IHostMalloc_Free(h, blocks[i]), S_OK);
    assert_int_equal(live_bytes(h), 0);
    IHostMalloc_Release(h);
}

/* The heap's source may set off a notification whose callback reads statistics (HostMemGetStats) while the heap
 * holds its lock for a new chunk: reading them must not wait for that lock. */
typedef struct reentrant_source {
    test_source counts;
    IHostMalloc *heap;
    uint64_t seen_blocks;
    int calls;
} reentrant_source;

static HRESULT reentrant_alloc(void *ctx, size_t size, EMemoryCriticalLevel level, void **out)
{
    reentrant_source *r = ctx;
    if (r->heap) {
        uint64_t bytes;
        hm__heap_usage(r->heap, &r->seen_blocks, &bytes);
        r->calls++;
    }
    return source_alloc(&r->counts, size, level, out);
}

static HRESULT reentrant_release(void *ctx, void *addr, size_t size)
{
    reentrant_source *r = ctx;
    if (r->heap) {
        uint64_t blocks, bytes;
        hm__heap_usage(r->heap, &blocks, &bytes);
    }
    return source_release(&r->counts, addr, size);
}

static void reentrant_destroyed(void *ctx, const hm_leak *leaks, size_t n) { ((reentrant_source *)ctx)->heap = NULL; }

static void test_statistics_from_inside_the_source(void **state)
{
    for (int threadsafe = 0; threadsafe < 2; threadsafe++) {
        reentrant_source r = {.counts = {.fail_after = -1}};
        hm_page_source src = {&r, reentrant_alloc, reentrant_release, reentrant_destroyed};
        IHostMalloc *h;
        assert_int_equal(hm__heap_create(&src, threadsafe ? MALLOC_THREADSAFE : 0, &h), S_OK);
        r.heap = h;
        void *small[2000], *big;
        for (int k = 0; k < 2000; k++)
            assert_int_equal(IHostMalloc_Alloc(h, 1000, eTaskCritical, &small[k]), S_OK);
        assert_int_equal(IHostMalloc_Alloc(h, 100000, eTaskCritical, &big), S_OK);
        assert_true(r.calls > 1);
        assert_int_equal(r.seen_blocks, 2000);
        for (int k = 0; k < 2000; k++)
            assert_int_equal(IHostMalloc_Free(h, small[k]), S_OK);
        assert_int_equal(IHostMalloc_Free(h, big), S_OK);
        check(h);
        IHostMalloc_Release(h);
    }
}

/* A failing page source gives E_OUTOFMEMORY with *ppMem NULL and nothing allocated; the level is passed through. */
static void test_source_failure_and_levels(void **state)
{
    static const EMemoryCriticalLevel levels[] = {eTaskCritical, eAppDomainCritical, eProcessCritical};
    for (size_t i = 0; i < 3; i++) {
        test_source s;
        IHostMalloc *h = make_heap(&s, 0);
        void *p = (void *)1;
        assert_int_equal(IHostMalloc_Alloc(h, 48, levels[i], &p), S_OK);
        assert_int_equal(s.last_level, levels[i]);
        s.fail_after = 0;
        void *big = (void *)1;
        assert_int_equal(IHostMalloc_Alloc(h, 100000, levels[i], &big), E_OUTOFMEMORY);
        assert_null(big);
        assert_int_equal(s.last_level, levels[i]);
        assert_int_equal(live_blocks(h), 1);
        check(h);
        assert_int_equal(IHostMalloc_Free(h, p), S_OK);
        IHostMalloc_Release(h);
    }
}

/* Argument errors: NULL out-pointer, invalid level, sizes that cannot be satisfied, bad heap types. */
static void test_argument_errors(void **state)
{
    test_source s;
    IHostMalloc *h = make_heap(&s, MALLOC_THREADSAFE);
    void *p = (void *)1;
    assert_int_equal(IHostMalloc_Alloc(h, 8, eTaskCritical, NULL), E_POINTER);
    assert_int_equal(IHostMalloc_Alloc(h, 8, (EMemoryCriticalLevel)3, &p), E_INVALIDARG);
    assert_null(p);
    p = (void *)1;
    assert_int_equal(IHostMalloc_Alloc(h, SIZE_MAX, eTaskCritical, &p), E_OUTOFMEMORY);
    assert_null(p);
    assert_int_equal(IHostMalloc_Alloc(h, (size_t)1 << 41, eTaskCritical, &p), E_OUTOFMEMORY);
    assert_int_equal(IHostMalloc_DebugAlloc(h, 8, eTaskCritical, NULL, 1, NULL), E_POINTER);
    IHostMalloc_Release(h);
    hm_page_source src = {&s, source_alloc, source_release, source_destroyed};
    IHostMalloc *bad = (IHostMalloc *)1;
    assert_int_equal(hm__heap_create(&src, 0x4, &bad), E_INVALIDARG);
    assert_null(bad);
    assert_int_equal(hm__heap_create(NULL, 0, &bad), E_INVALIDARG);
}

/* COM: QueryInterface gives IHostMalloc and IUnknown only; references count. */
static void test_refcounts(void **state)
{
    test_source s;
    IHostMalloc *h = make_heap(&s, MALLOC_THREADSAFE | MALLOC_EXECUTABLE);
    void *q = (void *)1;
    assert_int_equal(IHostMalloc_QueryInterface(h, &IID_IHostMalloc, &q), S_OK);
    assert_ptr_equal(q, h);
    assert_int_equal(IHostMalloc_QueryInterface(h, &IID_IUnknown, &q), S_OK);
    assert_int_equal(IHostMalloc_QueryInterface(h, &IID_IHostMemoryManager, &q), E_NOINTERFACE);
    assert_null(q);
    assert_int_equal(IHostMalloc_AddRef(h), 4);
    assert_int_equal(IHostMalloc_Release(h), 3);
    assert_int_equal(IHostMalloc_Release(h), 2);
    assert_int_equal(IHostMalloc_Release(h), 1);
    assert_int_equal(s.destroyed, 0);
    assert_true(hm__heap_is_builtin(h));
    assert_int_equal(IHostMalloc_Release(h), 0);
    assert_int_equal(s.destroyed, 1);
}

/* DebugAlloc remembers file and line (copying the name); the report groups live blocks by site, biggest first,
 * and is handed to the source once, when the last reference goes. */
static void test_leak_report(void **state)
{
    test_source s;
    IHostMalloc *h = make_heap(&s, MALLOC_THREADSAFE);
    char file[32];
    strcpy(file, "gc.cpp");
    void *p;
    for (int i = 0; i < 3; i++)
        assert_int_equal(IHostMalloc_DebugAlloc(h, 100, eTaskCritical, file, 10, &p), S_OK);
    strcpy(file, "clobbered"); /* the heap copied the name */
    assert_int_equal(IHostMalloc_DebugAlloc(h, 5000, eTaskCritical, (char *)"jit.cpp", 7, &p), S_OK);
    void *freed;
    assert_int_equal(IHostMalloc_DebugAlloc(h, 10, eTaskCritical, (char *)"freed.cpp", 1, &freed), S_OK);
    assert_int_equal(IHostMalloc_Free(h, freed), S_OK);
    assert_int_equal(IHostMalloc_Alloc(h, 1, eTaskCritical, &p), S_OK);
    hm_leak leaks[8];
    size_t n = hm__heap_leaks(h, leaks, 8);
    assert_int_equal(n, 3);
    assert_string_equal(leaks[0].file, "jit.cpp");
    assert_int_equal(leaks[0].line, 7);
    assert_int_equal(leaks[0].blocks, 1);
    assert_int_equal(leaks[0].bytes, 5000);
    assert_string_equal(leaks[1].file, "gc.cpp");
    assert_int_equal(leaks[1].blocks, 3);
    assert_int_equal(leaks[1].bytes, 300);
    assert_string_equal(leaks[2].file, "(Alloc)");
    assert_int_equal(IHostMalloc_Release(h), 0);
    assert_int_equal(s.destroyed, 1);
    assert_int_equal(s.report_count, 3);
    assert_string_equal(s.report[1].file, "gc.cpp");
    assert_int_equal(s.chunks, 0);
}

/* Four threads allocating, writing, checking and freeing on one thread-safe heap. */
static IHostMalloc *shared_heap;

static void *heap_worker(void *arg)
{
    uintptr_t id = (uintptr_t)arg;
    void *live[64] = {0};
    uint64_t seed = id * 7919;
    for (int i = 0; i < 20000; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        int slot = (int)((seed >> 33) % 64);
        if (live[slot]) {
            if (*(uintptr_t *)live[slot] != id + (uintptr_t)slot)
                return (void *)1;
            if (IHostMalloc_Free(shared_heap, live[slot]) != S_OK)
                return (void *)1;
            live[slot] = NULL;
        } else {
            size_t size = 8 + (size_t)((seed >> 20) % 1000);
            if (IHostMalloc_Alloc(shared_heap, size, eTaskCritical, &live[slot]) != S_OK)
                return (void *)1;
            *(uintptr_t *)live[slot] = id + (uintptr_t)slot;
        }
    }
    for (int s = 0; s < 64; s++)
        if (live[s] && IHostMalloc_Free(shared_heap, live[s]) != S_OK)
            return (void *)1;
    return NULL;
}

static void test_threads(void **state)
{
    test_source s;
    shared_heap = make_heap(&s, MALLOC_THREADSAFE);
    pthread_t t[4];
    for (uintptr_t i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, heap_worker, (void *)(i + 1)), 0);
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(t[i], &r);
        assert_null(r);
    }
    check(shared_heap);
    assert_int_equal(live_blocks(shared_heap), 0);
    IHostMalloc_Release(shared_heap);
}

/* Blocks freed by a thread that does not own them: a thread allocates and exits; the main thread frees half of
 * them (remote frees, as pending blocks); a double free of one is refused, by the remote thread and by the new
 * owner; a new thread adopts the dead thread's chunks, reuses the freed slots and frees the rest. */
enum { REMOTE_BLOCKS = 600 };
static void *remote_blocks[REMOTE_BLOCKS];
static IHostMalloc *remote_heap;

static size_t remote_size(int i) { return i == 7 ? 100000 : 8 + (size_t)(i * 37 % 1000); }

static void *remote_allocator(void *arg)
{
    (void)arg;
    for (int i = 0; i < REMOTE_BLOCKS; i++) {
        if (IHostMalloc_Alloc(remote_heap, remote_size(i), eTaskCritical, &remote_blocks[i]) != S_OK)
            return (void *)1;
        memset(remote_blocks[i], i & 0xFF, remote_size(i));
    }
    return NULL;
}

static void *remote_adopter(void *arg)
{
    test_source *s = arg;
    size_t chunks = s->chunks;
    /* Reuses the slots the main thread freed: same sizes, no new chunk. */
    for (int i = 0; i < REMOTE_BLOCKS; i += 2)
        if (i != 7 && IHostMalloc_Alloc(remote_heap, remote_size(i), eTaskCritical, &remote_blocks[i]) != S_OK)
            return (void *)1;
    if (s->chunks > chunks)
        return (void *)2;
    /* A block the main thread freed is pending or reused: freeing the old pointer twice is refused. */
    for (int i = 1; i < REMOTE_BLOCKS; i += 2) {
        const unsigned char *b = remote_blocks[i];
        if (b[0] != (i & 0xFF) || b[remote_size(i) - 1] != (i & 0xFF))
            return (void *)3;
        if (IHostMalloc_Free(remote_heap, remote_blocks[i]) != S_OK)
            return (void *)4;
    }
    for (int i = 0; i < REMOTE_BLOCKS; i += 2)
        if (i != 7 && IHostMalloc_Free(remote_heap, remote_blocks[i]) != S_OK)
            return (void *)5;
    return NULL;
}

static void test_remote_frees(void **state)
{
    test_source s;
    remote_heap = make_heap(&s, MALLOC_THREADSAFE);
    pthread_t t;
    void *r;
    assert_int_equal(pthread_create(&t, NULL, remote_allocator, NULL), 0);
    pthread_join(t, &r);
    assert_null(r);
    assert_int_equal(live_blocks(remote_heap), REMOTE_BLOCKS);
    void *freed_by_main = remote_blocks[0];
    for (int i = 0; i < REMOTE_BLOCKS; i += 2)
        assert_int_equal(IHostMalloc_Free(remote_heap, remote_blocks[i]), S_OK);
    assert_int_equal(IHostMalloc_Free(remote_heap, freed_by_main), HOST_E_INVALIDOPERATION);
    assert_int_equal(IHostMalloc_Free(remote_heap, (char *)remote_blocks[1] + 16), HOST_E_INVALIDOPERATION);
    assert_int_equal(live_blocks(remote_heap), REMOTE_BLOCKS / 2);
    check(remote_heap);
    hm_leak leaks[2];
    assert_int_equal(hm__heap_leaks(remote_heap, leaks, 2), 1);
    assert_int_equal(leaks[0].blocks, REMOTE_BLOCKS / 2); /* pending blocks are not leaks */
    assert_int_equal(pthread_create(&t, NULL, remote_adopter, &s), 0);
    pthread_join(t, &r);
    assert_null(r);
    check(remote_heap);
    assert_int_equal(live_blocks(remote_heap), 0);
    assert_int_equal(live_bytes(remote_heap), 0);
    IHostMalloc_Release(remote_heap);
    assert_int_equal(s.chunks, 0);
    assert_int_equal(s.report_count, 0);
}

/* The owner frees a block another thread freed first: refused, while the block is still pending. */
static void *free_one(void *p)
{
    return (void *)(uintptr_t)(IHostMalloc_Free(remote_heap, p) == S_OK);
}

static void test_double_free_across_threads(void **state)
{
    test_source s;
    remote_heap = make_heap(&s, MALLOC_THREADSAFE);
    void *keep, *p;
    assert_int_equal(IHostMalloc_Alloc(remote_heap, 40, eTaskCritical, &keep), S_OK);
    assert_int_equal(IHostMalloc_Alloc(remote_heap, 40, eTaskCritical, &p), S_OK);
    pthread_t t;
    void *r;
    assert_int_equal(pthread_create(&t, NULL, free_one, p), 0);
    pthread_join(t, &r);
    assert_int_equal((uintptr_t)r, 1);
    assert_int_equal(IHostMalloc_Free(remote_heap, p), HOST_E_INVALIDOPERATION);
    assert_int_equal(pthread_create(&t, NULL, free_one, p), 0);
    pthread_join(t, &r);
    assert_int_equal((uintptr_t)r, 0);
    check(remote_heap);
    assert_int_equal(live_blocks(remote_heap), 1);
    assert_int_equal(IHostMalloc_Free(remote_heap, keep), S_OK);
    IHostMalloc_Release(remote_heap);
    assert_int_equal(s.report_count, 0);
}

/* A large block belongs to the heap: freed by another thread while its allocator lives on, its chunk goes back to
 * the source at once; a second Free of it is refused. */
static void *alloc_large(void *out)
{
    return (void *)(uintptr_t)(IHostMalloc_DebugAlloc(remote_heap, 200000, eTaskCritical, (char *)"big.c", 3,
                                                      (void **)out) == S_OK);
}

static void test_large_block_freed_by_another_thread(void **state)
{
    test_source s;
    remote_heap = make_heap(&s, MALLOC_THREADSAFE);
    void *small, *big;
    assert_int_equal(IHostMalloc_Alloc(remote_heap, 100, eTaskCritical, &small), S_OK);
    size_t before = s.chunks;
    pthread_t t;
    void *r;
    assert_int_equal(pthread_create(&t, NULL, alloc_large, &big), 0);
    pthread_join(t, &r);
    assert_int_equal((uintptr_t)r, 1);
    assert_int_equal(s.chunks, before + 1);
    hm_leak leaks[2];
    assert_int_equal(hm__heap_leaks(remote_heap, leaks, 2), 2);
    assert_string_equal(leaks[0].file, "big.c");
    assert_int_equal(leaks[0].bytes, 200000);
    assert_int_equal(live_bytes(remote_heap), 200100);
    assert_int_equal(IHostMalloc_Free(remote_heap, big), S_OK);
    assert_int_equal(s.chunks, before);
    assert_int_equal(IHostMalloc_Free(remote_heap, big), HOST_E_INVALIDOPERATION);
    check(remote_heap);
    assert_int_equal(live_blocks(remote_heap), 1);
    assert_int_equal(IHostMalloc_Free(remote_heap, small), S_OK);
    IHostMalloc_Release(remote_heap);
    assert_int_equal(s.report_count, 0);
}

/* Threads passing blocks to each other through a shared table, so most frees are remote (for TSan). */
enum { EXCHANGE_SLOTS = 256 };
static _Atomic(void *) exchange[EXCHANGE_SLOTS];

static void *exchanger(void *arg)
{
    uint64_t seed = (uintptr_t)arg * 104729;
    for (int i = 0; i < 20000; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        _Atomic(void *) *slot = &exchange[(seed >> 33) % EXCHANGE_SLOTS];
        void *p = atomic_exchange(slot, NULL);
        if (p) {
            size_t size = *(size_t *)p;
            if (((unsigned char *)p)[size - 1] != (unsigned char)size || IHostMalloc_Free(shared_heap, p) != S_OK)
                return (void *)1;
        } else {
            size_t size = 16 + (size_t)((seed >> 20) % 3000);
            if (IHostMalloc_Alloc(shared_heap, size, eTaskCritical, &p) != S_OK)
                return (void *)1;
            *(size_t *)p = size;
            ((unsigned char *)p)[size - 1] = (unsigned char)size;
            void *expected = NULL;
            if (!atomic_compare_exchange_strong(slot, &expected, p) && IHostMalloc_Free(shared_heap, p) != S_OK)
                return (void *)1;
        }
    }
    return NULL;
}

static void test_threads_exchanging_blocks(void **state)
{
    test_source s;
    shared_heap = make_heap(&s, MALLOC_THREADSAFE);
    pthread_t t[4];
    for (uintptr_t i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, exchanger, (void *)(i + 1)), 0);
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(t[i], &r);
        assert_null(r);
    }
    check(shared_heap);
    for (int i = 0; i < EXCHANGE_SLOTS; i++) {
        void *p = atomic_exchange(&exchange[i], NULL);
        if (p)
            assert_int_equal(IHostMalloc_Free(shared_heap, p), S_OK);
    }
    check(shared_heap);
    assert_int_equal(live_blocks(shared_heap), 0);
    assert_int_equal(live_bytes(shared_heap), 0);
    IHostMalloc_Release(shared_heap);
    assert_int_equal(s.chunks, 0);
}

/* Emptied chunks are kept as spares (16, or half the peak in use, at most 256) and reused by other size classes;
 * the rest go back to the source. */
static void test_spare_chunks(void **state)
{
    test_source s;
    IHostMalloc *h = make_heap(&s, 0);
    enum { N = 40000 };
    static void *blocks[N];
    for (int i = 0; i < 2000; i++)
        assert_int_equal(IHostMalloc_Alloc(h, 1000, eTaskCritical, &blocks[i]), S_OK);
    size_t full = s.chunks;
    assert_true(full >= 30 && full <= 40);
    for (int i = 0; i < 2000; i++)
        assert_int_equal(IHostMalloc_Free(h, blocks[i]), S_OK);
    check(h);
    size_t kept = s.chunks;
    assert_true(kept >= 17 && kept <= 21); /* 16 or half the peak, and the 1000-byte class's current chunk */
    for (int i = 0; i < 2000; i++) {
        assert_int_equal(IHostMalloc_Alloc(h, 48, eTaskCritical, &blocks[i]), S_OK);
        memset(blocks[i], 0x5A, 48);
    }
    assert_int_equal(s.chunks, kept); /* the 48-byte blocks live in former 1000-byte chunks */
    check(h);
    for (int i = 0; i < 2000; i++)
        assert_int_equal(IHostMalloc_Free(h, blocks[i]), S_OK);
    /* A peak of about 640 chunks: 256 spares are kept, no more. */
    for (int i = 0; i < N; i++)
        assert_int_equal(IHostMalloc_Alloc(h, 1000, eTaskCritical, &blocks[i]), S_OK);
    assert_true(s.chunks >= 600);
    for (int i = 0; i < N; i++)
        assert_int_equal(IHostMalloc_Free(h, blocks[i]), S_OK);
    check(h);
    assert_true(s.chunks >= 256 && s.chunks <= 260);
    assert_int_equal(live_blocks(h), 0);
    IHostMalloc_Release(h);
    assert_int_equal(s.chunks, 0);
}

/* A slot's site is its current block's: a plain Alloc in a slot a DebugAlloc used before reports as (Alloc). */
static void test_sites_of_reused_slots(void **state)
{
    test_source s;
    IHostMalloc *h = make_heap(&s, MALLOC_THREADSAFE);
    void *p, *q, *r;
    assert_int_equal(IHostMalloc_DebugAlloc(h, 64, eTaskCritical, (char *)"a.cpp", 1, &p), S_OK);
    assert_int_equal(IHostMalloc_DebugAlloc(h, 64, eTaskCritical, (char *)"b.cpp", 2, &r), S_OK);
    assert_int_equal(IHostMalloc_Free(h, p), S_OK);
    assert_int_equal(IHostMalloc_Alloc(h, 60, eTaskCritical, &q), S_OK);
    assert_ptr_equal(p, q); /* the most recently freed slot is handed out first */
    hm_leak leaks[4];
    assert_int_equal(hm__heap_leaks(h, leaks, 4), 2);
    assert_string_equal(leaks[0].file, "b.cpp");
    assert_int_equal(leaks[0].bytes, 64);
    assert_string_equal(leaks[1].file, "(Alloc)");
    assert_int_equal(leaks[1].bytes, 60);
    IHostMalloc_Release(h);
    assert_int_equal(s.report_count, 2);
}

/* Deterministic placement: a page source handing out addresses in a fixed order (first fit in an arena) and the
 * same sequence of calls give the same block offsets, on a thread-safe and a single-threaded heap. */
typedef struct arena_source {
    test_source counts;
    char *base;
    size_t size;
    unsigned char used[1024]; /* per 64 KiB granule */
} arena_source;

static HRESULT arena_alloc(void *ctx, size_t size, EMemoryCriticalLevel level, void **out)
{
    arena_source *a = ctx;
    size_t need = size >> 16, run = 0;
    for (size_t g = 0; g < a->size >> 16; g++) {
        run = a->used[g] ? 0 : run + 1;
        if (run == need) {
            memset(&a->used[g + 1 - need], 1, need);
            *out = a->base + ((g + 1 - need) << 16);
            memset(*out, 0, size);
            a->counts.chunks++;
            return S_OK;
        }
    }
    *out = NULL;
    return E_OUTOFMEMORY;
}

static HRESULT arena_release(void *ctx, void *addr, size_t size)
{
    arena_source *a = ctx;
    memset(&a->used[((char *)addr - a->base) >> 16], 0, size >> 16);
    a->counts.chunks--;
    return S_OK;
}

static void arena_destroyed(void *ctx, const hm_leak *leaks, size_t n) { ((arena_source *)ctx)->counts.destroyed++; }

static void run_sequence(DWORD type, uintptr_t *offsets, size_t n)
{
    arena_source a = {.size = (size_t)64 << 20};
    char *raw = mmap(NULL, a.size + (1 << 20), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(raw != MAP_FAILED);
    a.base = (char *)(((uintptr_t)raw + (1 << 20) - 1) & ~(uintptr_t)((1 << 20) - 1)); /* same colours each run */
    hm_page_source src = {&a, arena_alloc, arena_release, arena_destroyed};
    IHostMalloc *h;
    assert_int_equal(hm__heap_create(&src, type, &h), S_OK);
    void *live[64] = {0};
    uint64_t seed = 42;
    for (size_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        void **slot = &live[(seed >> 33) % 64];
        if (*slot) {
            assert_int_equal(IHostMalloc_Free(h, *slot), S_OK);
            *slot = NULL;
            offsets[i] = 0;
        } else {
            size_t size = (seed >> 20) % 50 == 0 ? 70000 : 1 + (size_t)((seed >> 24) % 2000);
            HRESULT hr = (seed >> 40) % 3 == 0 ? IHostMalloc_DebugAlloc(h, size, eTaskCritical, (char *)"d.c", 1, slot)
                                               : IHostMalloc_Alloc(h, size, eTaskCritical, slot);
            assert_int_equal(hr, S_OK);
            offsets[i] = (uintptr_t)((char *)*slot - a.base);
        }
    }
    check(h);
    IHostMalloc_Release(h);
    assert_int_equal(a.counts.chunks, 0);
    munmap(raw, a.size + (1 << 20));
}

static void test_deterministic_addresses(void **state)
{
    enum { N = 5000 };
    static uintptr_t first[N], second[N];
    static const DWORD types[] = {MALLOC_THREADSAFE, 0};
    for (int t = 0; t < 2; t++) {
        run_sequence(types[t], first, N);
        run_sequence(types[t], second, N);
        assert_memory_equal(first, second, sizeof first);
    }
}

/* Deliberately uses a freed block, for the sanitizer test (the heap poisons free blocks). */
static int use_after_free(void)
{
    test_source s;
    IHostMalloc *h = make_heap(&s, MALLOC_THREADSAFE);
    void *keep, *p;
    IHostMalloc_Alloc(h, 64, eTaskCritical, &keep); /* keeps the chunk alive */
    IHostMalloc_Alloc(h, 64, eTaskCritical, &p);
    IHostMalloc_Free(h, p);
    volatile char c = ((volatile char *)p)[8];
    printf("read %d from a freed block: not caught\n", c);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--uaf") == 0)
        return use_after_free();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes_and_contents), cmocka_unit_test(test_ownership_errors),
        cmocka_unit_test(test_source_failure_and_levels), cmocka_unit_test(test_argument_errors),
        cmocka_unit_test(test_refcounts), cmocka_unit_test(test_leak_report),
        cmocka_unit_test(test_threads), cmocka_unit_test(test_remote_frees),
        cmocka_unit_test(test_double_free_across_threads), cmocka_unit_test(test_large_block_freed_by_another_thread),
        cmocka_unit_test(test_threads_exchanging_blocks),
        cmocka_unit_test(test_spare_chunks), cmocka_unit_test(test_sites_of_reused_slots),
        cmocka_unit_test(test_deterministic_addresses), cmocka_unit_test(test_every_offset_of_a_chunk),
        cmocka_unit_test(test_exact_sizes), cmocka_unit_test(test_statistics_from_inside_the_source),
        cmocka_unit_test(test_source_refuses_release),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Record and replay: the recorder, the encodings, the reader's errors, relocation, divergence, injected OOMs,
 * --emit-faults, the reducer, exploration's scenario and a recorder killed with SIGKILL. */
#include <hostmem/hostmem.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "counting_callback.h"
#include "support/support.h"

#include <pthread.h>
#include <semaphore.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096u

static IHostMemoryManager *builtin(const char *options)
{
    IHostMemoryManager *m = NULL;
    assert_int_equal(HostMemCreateBuiltinManager(options, &m), S_OK);
    return m;
}

static IHostMemoryManager *recorded(const char *options, const char *path)
{
    IHostMemoryManager *inner = builtin(options), *m = NULL;
    assert_int_equal(HostMemWrapRecorder(inner, path, &m), S_OK);
    IHostMemoryManager_Release(inner);
    return m;
}

/* Every method once or more; returns the number of calls made (notifications excluded). */
static void every_method(IHostMemoryManager *m, hm_counting_callback *cb)
{
    assert_int_equal(IHostMemoryManager_RegisterMemoryNotificationCallback(m, &cb->iface), S_OK);
    void *region = NULL, *commit = NULL;
    assert_int_equal(IHostMemoryManager_VirtualAlloc(m, NULL, 16 * PAGE, MEM_RESERVE, PAGE_NOACCESS, eTaskCritical,
                                                     &region), S_OK);
    assert_int_equal(IHostMemoryManager_VirtualAlloc(m, (char *)region + PAGE, 2 * PAGE, MEM_COMMIT, PAGE_READWRITE,
                                                     eAppDomainCritical, &commit), S_OK);
    MEMORY_BASIC_INFORMATION mbi;
    SIZE_T got;
    assert_int_equal(IHostMemoryManager_VirtualQuery(m, (char *)region + PAGE + 8, &mbi, sizeof mbi, &got), S_OK);
    DWORD old, load;
    SIZE_T available;
    assert_int_equal(IHostMemoryManager_VirtualProtect(m, commit, PAGE, PAGE_READONLY, &old), S_OK);
    assert_int_equal(IHostMemoryManager_GetMemoryLoad(m, &load, &available), S_OK);
    void *vas = (void *)(uintptr_t)0x7f0000000000ull;
    IHostMemoryManager_NeedsVirtualAddressSpace(m, vas, 16 * PAGE);
    IHostMemoryManager_AcquiredVirtualAddressSpace(m, vas, 16 * PAGE);
    IHostMemoryManager_ReleasedVirtualAddressSpace(m, vas);
    IHostMalloc *heap = NULL;
    assert_int_equal(IHostMemoryManager_CreateMalloc(m, MALLOC_THREADSAFE, &heap), S_OK);
    void *a = NULL, *b = NULL;
    assert_int_equal(IHostMalloc_Alloc(heap, 100, eTaskCritical, &a), S_OK);
    assert_int_equal(IHostMalloc_DebugAlloc(heap, 200, eProcessCritical, (char *)"file \"x\".c", 7, &b), S_OK);
    assert_int_equal(IHostMalloc_Free(heap, (char *)a), S_OK);
    assert_int_equal(IHostMalloc_Free(heap, b), S_OK);
    IHostMalloc_Release(heap);
    assert_int_equal(IHostMemoryManager_VirtualFree(m, region, 0, MEM_RELEASE), S_OK);
    assert_int_equal(IHostMemoryManager_VirtualQuery(m, region, &mbi, sizeof mbi, &got), S_OK);
}

static const char *record_every_method(const char *name)
{
    const char *path = tmp_path(name);
    IHostMemoryManager *m = recorded("deterministic=1,backend=sim", path);
    hm_counting_callback cb = HM_COUNTING_CALLBACK_INIT;
    every_method(m, &cb);
    IHostMemoryManager_Release(m);
    return path;
}

/* Every method is recorded with its arguments and results, relocatably. */
static void test_every_method_recorded(void **state)
{
    (void)state;
    hm_trace *t;
    assert_int_equal(hm_trace_load(record_every_method("every.raw"), &t), S_OK);
    static const int expected[] = {
        HM_METHOD_REGISTER_CALLBACK, HM_METHOD_VIRTUAL_ALLOC, HM_METHOD_VIRTUAL_ALLOC, HM_METHOD_VIRTUAL_QUERY,
        HM_METHOD_VIRTUAL_PROTECT, HM_METHOD_GET_MEMORY_LOAD, HM_METHOD_NEEDS_VAS, HM_METHOD_ACQUIRED_VAS,
        HM_METHOD_RELEASED_VAS, HM_METHOD_CREATE_MALLOC, HM_METHOD_HEAP_ALLOC, HM_METHOD_HEAP_DEBUG_ALLOC,
        HM_METHOD_HEAP_FREE, HM_METHOD_HEAP_FREE, HM_TRACE_HEAP_RELEASE, HM_METHOD_VIRTUAL_FREE,
        HM_METHOD_VIRTUAL_QUERY};
    size_t j = 0, notifications = 0;
    for (size_t i = 0; i < t->count; i++) {
        const hm_trace_call *c = &t->calls[i];
        assert_int_equal(c->seq, i + 1);
        assert_int_equal(c->thread, 1);
        if (c->method == HM_TRACE_ON_NOTIFICATION) { /* the built-in manager notifies on registration */
            assert_int_equal(c->callback, 1);
            notifications++;
            continue;
        }
        assert_true(j < sizeof expected / sizeof expected[0]);
        assert_int_equal(c->method, expected[j++]);
    }
    assert_int_equal(j, sizeof expected / sizeof expected[0]);
    assert_true(notifications >= 1);
    /* Spot checks: relocation and symbolic fields. */
    char line[1024];
    const hm_trace_call *c = NULL;
    for (size_t i = 0; i < t->count; i++) {
        hm_trace_format_call(&t->calls[i], line, sizeof line);
        if (t->calls[i].method == HM_METHOD_VIRTUAL_QUERY && !c) {
            c = &t->calls[i];
            assert_non_null(strstr(line, "addr=@1+0x1008 length=48 -> S_OK result=48 base=@1+0x1000 allocbase=@1 "
                                         "allocprot=PAGE_NOACCESS regionsize=0x2000 state=MEM_COMMIT"));
        }
        if (t->calls[i].method == HM_METHOD_HEAP_DEBUG_ALLOC)
            assert_non_null(strstr(line, "DebugAlloc heap=h1 size=0xc8 level=process file=\"file \\\"x\\\".c\" line=7 "
                                         "-> S_OK mem=#2"));
        if (t->calls[i].method == HM_METHOD_VIRTUAL_ALLOC && t->calls[i].type == MEM_COMMIT)
            assert_non_null(strstr(line, "type=MEM_COMMIT prot=PAGE_READWRITE level=appdomain -> S_OK mem=@1+0x1000"));
        if (t->calls[i].method == HM_METHOD_VIRTUAL_PROTECT)
            assert_non_null(strstr(line, "prot=PAGE_READONLY -> S_OK old=PAGE_READWRITE"));
        if (t->calls[i].method == HM_METHOD_HEAP_FREE && t->calls[i].addr.handle == 1)
            assert_non_null(strstr(line, "Free heap=h1 addr=#1 -> S_OK"));
    }
    /* The query after the release still names @1. */
    hm_trace_format_call(&t->calls[t->count - 1], line, sizeof line);
    assert_non_null(strstr(line, "VirtualQuery addr=@1 length=48 -> S_OK"));
    assert_non_null(strstr(line, "state=MEM_FREE"));
    hm_trace_free(t);
}

static void convert(const char *in, const char *out, hm_trace_encoding encoding)
{
    hm_trace_reader *r;
    hm_trace_writer *w;
    assert_int_equal(hm_trace_open(in, &r), S_OK);
    assert_int_equal(hm_trace_writer_open(out, encoding, &w), S_OK);
    hm_trace_call c;
    int got;
    while ((got = hm_trace_next(r, &c)) > 0)
        assert_int_equal(hm_trace_write(w, &c), S_OK);
    assert_int_equal(got, 0);
    assert_int_equal(hm_trace_writer_close(w), S_OK);
    hm_trace_close(r);
}

static void assert_same_file(const char *a, const char *b)
{
    size_t la, lb;
    char *x = read_file(a, &la), *y = read_file(b, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(x, y, la);
    free(x);
    free(y);
}

/* text -> binary -> text and binary -> text -> binary give back the same bytes; binary is smaller. */
static void test_text_binary_round_trip(void **state)
{
    (void)state;
    const char *raw = record_every_method("rt.raw");
    convert(raw, tmp_path("rt1.txt"), HM_TRACE_TEXT);
    convert(tmp_path("rt1.txt"), tmp_path("rt1.bin"), HM_TRACE_BINARY);
    convert(tmp_path("rt1.bin"), tmp_path("rt2.txt"), HM_TRACE_TEXT);
    assert_same_file(tmp_path("rt1.txt"), tmp_path("rt2.txt"));
    convert(tmp_path("rt2.txt"), tmp_path("rt2.bin"), HM_TRACE_BINARY);
    assert_same_file(tmp_path("rt1.bin"), tmp_path("rt2.bin"));
    size_t lt, lb;
    free(read_file(tmp_path("rt1.txt"), &lt));
    free(read_file(tmp_path("rt1.bin"), &lb));
    assert_true(lb * 2 < lt);
}

/* A critical level outside the enum is written as its number (-1 for one a binary or raw trace does not know), and
 * reads back from text and binary alike (the trace-parser fuzzer found a binary trace with level -1 whose text form the text
 * reader refused). */
static void test_unnamed_levels_round_trip(void **state)
{
    (void)state;
    static const char text[] = "hostmem-trace 1\n"
                               "1 t1 VirtualAlloc addr=0 size=0x10000 type=MEM_RESERVE prot=PAGE_READWRITE level=-1 -> S_OK mem=@1\n"
                               "2 t1 VirtualAlloc addr=0 size=0x10000 type=MEM_RESERVE prot=PAGE_READWRITE level=7 -> S_OK mem=@2\n"
                               "3 t1 VirtualAlloc addr=0 size=0x10000 type=MEM_RESERVE prot=PAGE_READWRITE level=2147483647 -> S_OK mem=@3\n";
    write_file(tmp_path("levels.txt"), text, strlen(text));
    convert(tmp_path("levels.txt"), tmp_path("levels.bin"), HM_TRACE_BINARY);
    convert(tmp_path("levels.bin"), tmp_path("levels2.txt"), HM_TRACE_TEXT);
    assert_same_file(tmp_path("levels.txt"), tmp_path("levels2.txt"));
}

static HRESULT factory_options(void *ctx, IHostMemoryManager **out) { return HostMemCreateBuiltinManager(ctx, out); }

/* A trace recorded at one base replays without divergence on a manager that places everything elsewhere. */
static void test_relocation(void **state)
{
    (void)state;
    const char *path = tmp_path("reloc.raw");
    IHostMemoryManager *m = recorded("deterministic=1,backend=sim,base=0x7ec000000000", path);
    hm_counting_callback cb = HM_COUNTING_CALLBACK_INIT;
    every_method(m, &cb);
    IHostMemoryManager_Release(m);
    hm_replay_options opts = {0};
    opts.factory = factory_options;
    opts.factory_ctx = (void *)"deterministic=1,backend=sim,base=0x7ee000000000";
    hm_replay_result res;
    assert_int_equal(HostMemReplay(path, &opts, &res), S_OK);
    assert_false(res.diverged);
    assert_int_equal(res.calls, 18);
    /* Replaying twice on the deterministic backend gives the same result, field for field. */
    hm_replay_result again;
    assert_int_equal(HostMemReplay(path, &opts, &again), S_OK);
    assert_int_equal(again.calls, res.calls);
    assert_int_equal(again.host_calls, res.host_calls);
    assert_int_equal(again.notifications_seen, res.notifications_seen);
}

/* ---- A host that answers differently at its N-th call ------------------------------------------------------ */
typedef struct liar {
    IHostMemoryManager iface;
    int refs;
    IHostMemoryManager *inner;
    unsigned calls, lie_at;
    void (*shape)(MEMORY_BASIC_INFORMATION *mbi); /* applied to every VirtualQuery answer when set */
    void (*before_free)(void);                     /* called by VirtualFree before the inner host's, when set */
} liar;
static inline liar *impl_from_IHostMemoryManager(IHostMemoryManager *iface)
{
    return HM_CONTAINER_OF(iface, liar, iface);
}
static unsigned liar_tick(IHostMemoryManager *i) { return ++impl_from_IHostMemoryManager(i)->calls; }
static bool lying(IHostMemoryManager *i) { return liar_tick(i) == impl_from_IHostMemoryManager(i)->lie_at; }
static HRESULT STDMETHODCALLTYPE l_qi(IHostMemoryManager *i, REFIID r, void **p)
{
    return IHostMemoryManager_QueryInterface(impl_from_IHostMemoryManager(i)->inner, r, p);
}
static ULONG STDMETHODCALLTYPE l_addref(IHostMemoryManager *i) { return (ULONG)++impl_from_IHostMemoryManager(i)->refs; }
static ULONG STDMETHODCALLTYPE l_release(IHostMemoryManager *i)
{
    liar *l = impl_from_IHostMemoryManager(i);
    if (--l->refs)
        return (ULONG)l->refs;
    IHostMemoryManager_Release(l->inner);
    free(l);
    return 0;
}
static HRESULT STDMETHODCALLTYPE l_create(IHostMemoryManager *i, DWORD t, IHostMalloc **pp)
{
    if (lying(i))
        return E_OUTOFMEMORY;
    return IHostMemoryManager_CreateMalloc(impl_from_IHostMemoryManager(i)->inner, t, pp);
}
static HRESULT STDMETHODCALLTYPE l_alloc(IHostMemoryManager *i, void *a, SIZE_T s, DWORD t, DWORD p,
                                         EMemoryCriticalLevel l, void **pp)
{
    bool lie = lying(i);
    HRESULT hr = IHostMemoryManager_VirtualAlloc(impl_from_IHostMemoryManager(i)->inner, a, s, t, p, l, pp);
    if (lie && SUCCEEDED(hr) && pp && !a) { /* a region, but somewhere else than asked */
        IHostMemoryManager_VirtualFree(impl_from_IHostMemoryManager(i)->inner, *pp, 0, MEM_RELEASE);
        return E_ACCESSDENIED;
    }
    return hr;
}
static HRESULT STDMETHODCALLTYPE l_free(IHostMemoryManager *i, LPVOID a, SIZE_T s, DWORD t)
{
    liar_tick(i);
    if (impl_from_IHostMemoryManager(i)->before_free)
        impl_from_IHostMemoryManager(i)->before_free();
    return IHostMemoryManager_VirtualFree(impl_from_IHostMemoryManager(i)->inner, a, s, t);
}
static HRESULT STDMETHODCALLTYPE l_query(IHostMemoryManager *i, void *a, void *b, SIZE_T n, SIZE_T *r)
{
    bool lie = lying(i);
    HRESULT hr = IHostMemoryManager_VirtualQuery(impl_from_IHostMemoryManager(i)->inner, a, b, n, r);
    if (lie && SUCCEEDED(hr) && b)
        ((MEMORY_BASIC_INFORMATION *)b)->Protect = PAGE_EXECUTE;
    if (impl_from_IHostMemoryManager(i)->shape && SUCCEEDED(hr) && b)
        impl_from_IHostMemoryManager(i)->shape(b);
    return hr;
}
static HRESULT STDMETHODCALLTYPE l_protect(IHostMemoryManager *i, void *a, SIZE_T s, DWORD p, DWORD *o)
{
    bool lie = lying(i);
    HRESULT hr = IHostMemoryManager_VirtualProtect(impl_from_IHostMemoryManager(i)->inner, a, s, p, o);
    if (lie && o)
        *o = PAGE_NOACCESS;
    return hr;
}
static HRESULT STDMETHODCALLTYPE l_load(IHostMemoryManager *i, DWORD *l, SIZE_T *a)
{
    liar_tick(i);
    return IHostMemoryManager_GetMemoryLoad(impl_from_IHostMemoryManager(i)->inner, l, a);
}
static HRESULT STDMETHODCALLTYPE l_register(IHostMemoryManager *i, ICLRMemoryNotificationCallback *c)
{
    liar_tick(i);
    return IHostMemoryManager_RegisterMemoryNotificationCallback(impl_from_IHostMemoryManager(i)->inner, c);
}
static HRESULT STDMETHODCALLTYPE l_needs(IHostMemoryManager *i, LPVOID a, SIZE_T s)
{
    liar_tick(i);
    return IHostMemoryManager_NeedsVirtualAddressSpace(impl_from_IHostMemoryManager(i)->inner, a, s);
}
static HRESULT STDMETHODCALLTYPE l_acquired(IHostMemoryManager *i, LPVOID a, SIZE_T s)
{
    liar_tick(i);
    return IHostMemoryManager_AcquiredVirtualAddressSpace(impl_from_IHostMemoryManager(i)->inner, a, s);
}
static HRESULT STDMETHODCALLTYPE l_released(IHostMemoryManager *i, LPVOID a)
{
    liar_tick(i);
    return IHostMemoryManager_ReleasedVirtualAddressSpace(impl_from_IHostMemoryManager(i)->inner, a);
}
static const IHostMemoryManagerVtbl liar_vtbl = {l_qi, l_addref, l_release, l_create, l_alloc, l_free, l_query,
                                                 l_protect, l_load, l_register, l_needs, l_acquired, l_released};

static HRESULT make_liar(void *ctx, IHostMemoryManager **out)
{
    liar *l = calloc(1, sizeof *l);
    if (!l)
        return E_OUTOFMEMORY;
    l->iface.lpVtbl = &liar_vtbl;
    l->refs = 1;
    l->lie_at = (unsigned)(uintptr_t)ctx;
    HRESULT hr = HostMemCreateBuiltinManager("deterministic=1,backend=sim", &l->inner);
    if (FAILED(hr)) {
        free(l);
        return hr;
    }
    *out = &l->iface;
    return S_OK;
}

/* A host answering differently at manager call N is caught at the trace line of that call, with the field and
 * both values named. Manager calls of every_method: 1 Register, 2-3 VirtualAlloc, 4 VirtualQuery, 5
 * VirtualProtect, ..., 10 CreateMalloc. */
static void test_divergence_detected(void **state)
{
    (void)state;
    const char *path = record_every_method("liar.raw");
    static const struct {
        unsigned lie_at;
        const char *method, *field, *message;
    } cases[] = {
        {2, "VirtualAlloc", "result", "field 'result': recorded S_OK, this host E_ACCESSDENIED"},
        {4, "VirtualQuery", "protect", "field 'protect': recorded 0x4, this host 0x10"},
        {5, "VirtualProtect", "old", "field 'old': recorded 0x4, this host 0x1"},
        {10, "CreateMalloc", "result", "field 'result': recorded S_OK, this host E_OUTOFMEMORY"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        hm_replay_options opts = {0};
        opts.factory = make_liar;
        opts.factory_ctx = (void *)(uintptr_t)cases[i].lie_at;
        hm_replay_result res;
        assert_int_equal(HostMemReplay(path, &opts, &res), S_OK);
        assert_true(res.diverged);
        assert_string_equal(hm_trace_method_name(res.divergence_method), cases[i].method);
        assert_string_equal(res.field, cases[i].field);
        assert_int_equal(res.host_calls, cases[i].lie_at);
        if (!strstr(res.report, cases[i].message))
            fail_msg("case %zu: report lacks \"%s\":\n%s", i, cases[i].message, res.report);
        assert_non_null(strstr(res.report, "\n> ")); /* the divergent line is marked, with context before it */
    }
}

/* ---- VirtualQuery answers in the raw encoding ---- */
static void shape_none(MEMORY_BASIC_INFORMATION *m) { (void)m; }
static void shape_free(MEMORY_BASIC_INFORMATION *m)
{
    m->State = MEM_FREE, m->AllocationBase = NULL, m->AllocationProtect = 0, m->Protect = PAGE_NOACCESS, m->Type = 0;
}
static void shape_image(MEMORY_BASIC_INFORMATION *m) { m->Type = MEM_IMAGE, m->Protect = PAGE_EXECUTE_READ; }
static void shape_odd_type(MEMORY_BASIC_INFORMATION *m) { m->Type = 0x123; }
static void shape_wide_protect(MEMORY_BASIC_INFORMATION *m) { m->Protect = PAGE_READWRITE | 0x40000000u; }
static void shape_other_base(MEMORY_BASIC_INFORMATION *m) { m->BaseAddress = (char *)m->BaseAddress + PAGE; }
static void shape_odd_size(MEMORY_BASIC_INFORMATION *m) { m->RegionSize += 1; }
static void shape_huge_free(MEMORY_BASIC_INFORMATION *m)
{
    shape_free(m);
    m->RegionSize = (SIZE_T)1 << 46; /* 64 TiB: more pages than 32 bits count */
}

/* Whatever a host answers to VirtualQuery reads back from the trace field for field: the usual answers in the
 * call's own slot (packed), the others in a second slot. */
static void test_query_answers_round_trip(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        void (*shape)(MEMORY_BASIC_INFORMATION *);
        unsigned slots; /* the query's slots in the raw trace */
    } cases[] = {
        {"a committed page", shape_none, 1},  {"free", shape_free, 1},
        {"an image", shape_image, 1},         {"an unknown type", shape_odd_type, 2},
        {"a 32-bit protection", shape_wide_protect, 2}, {"another base", shape_other_base, 2},
        {"a size in bytes", shape_odd_size, 2}, {"64 TiB free", shape_huge_free, 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *path = tmp_path("answers.raw");
        unlink(path); /* the previous case's: the recorder does not overwrite */
        IHostMemoryManager *host = NULL, *m = NULL;
        assert_int_equal(make_liar(NULL, &host), S_OK);
        impl_from_IHostMemoryManager(host)->shape = cases[i].shape;
        assert_int_equal(HostMemWrapRecorder(host, path, &m), S_OK);
        IHostMemoryManager_Release(host);
        void *region = NULL;
        assert_int_equal(IHostMemoryManager_VirtualAlloc(m, NULL, 16 * PAGE, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
                                                         eTaskCritical, &region), S_OK);
        MEMORY_BASIC_INFORMATION answer;
        SIZE_T got;
        assert_int_equal(IHostMemoryManager_VirtualQuery(m, (char *)region + 3 * PAGE + 5, &answer, sizeof answer,
                                                         &got), S_OK);
        IHostMemoryManager_Release(m);

        size_t len;
        char *file = read_file(path, &len);
        uint32_t env_size; /* the environment block between the header and the ring */
        memcpy(&env_size, file + 56, sizeof env_size); /* HM_RAW_ENV_FIELD */
        free(file);
        size_t slots = (len - 64 - env_size - 16384 * 64) / 64; /* a closed raw trace: header, ring, its slots */
        if (slots != 1 + cases[i].slots)
            fail_msg("case '%s': %zu slots, expected %u", cases[i].name, slots, 1 + cases[i].slots);
        hm_trace *t;
        assert_int_equal(hm_trace_load(path, &t), S_OK);
        assert_int_equal(t->count, 2);
        const hm_trace_call *q = &t->calls[1];
        assert_int_equal(q->method, HM_METHOD_VIRTUAL_QUERY);
        assert_true(q->has_mbi);
        assert_int_equal(q->query_result, got);
        /* Addresses inside the region come back relative to its handle; others raw. */
        uintptr_t base = (uintptr_t)answer.BaseAddress, alloc = (uintptr_t)answer.AllocationBase;
        assert_int_equal(q->mbi_base.kind == HM_REF_RAW ? q->mbi_base.value : (uintptr_t)region + q->mbi_base.value,
                         base);
        if (alloc)
            assert_int_equal(q->mbi_alloc_base.value, alloc - (uintptr_t)region);
        else
            assert_true(q->mbi_alloc_base.kind == HM_REF_RAW && q->mbi_alloc_base.value == 0);
        assert_int_equal(q->mbi_alloc_protect, answer.AllocationProtect);
        assert_int_equal(q->mbi_region_size, answer.RegionSize);
        assert_int_equal(q->mbi_state, answer.State);
        assert_int_equal(q->mbi_protect, answer.Protect);
        assert_int_equal(q->mbi_type, answer.Type);
        hm_trace_free(t);
    }
}

/* ---- A full ring ---- */
static sem_t free_entered, free_may_go;
static void block_in_free(void)
{
    sem_post(&free_entered);
    sem_wait(&free_may_go);
}

typedef struct free_call {
    IHostMemoryManager *manager;
    void *region;
    HRESULT result;
} free_call;

static void *free_region(void *arg)
{
    free_call *call = arg;
    call->result = IHostMemoryManager_VirtualFree(call->manager, call->region, 0, MEM_RELEASE);
    return NULL;
}

/* A call in flight holds back the copying of the recorder's ring (its slot is taken, its record not written): the
 * calls after it fill the ring, and those that find it full write their records to their places themselves. The
 * trace still holds every call, in order. */
static void test_full_ring(void **state)
{
    (void)state;
    enum { CALLS = 20000 }; /* more than the ring's 16384 slots */
    const char *path = tmp_path("full-ring.raw");
    IHostMemoryManager *host = NULL, *m = NULL;
    assert_int_equal(make_liar(NULL, &host), S_OK);
    assert_int_equal(HostMemWrapRecorder(host, path, &m), S_OK);
    IHostMemoryManager_Release(host);
    void *region = NULL;
    assert_int_equal(IHostMemoryManager_VirtualAlloc(m, NULL, 16 * PAGE, MEM_RESERVE, PAGE_READWRITE, eTaskCritical,
                                                     &region), S_OK);
    assert_int_equal(sem_init(&free_entered, 0, 0), 0);
    assert_int_equal(sem_init(&free_may_go, 0, 0), 0);
    impl_from_IHostMemoryManager(host)->before_free = block_in_free;
    free_call call = {m, region, E_FAIL};
    pthread_t freeing;
    assert_int_equal(pthread_create(&freeing, NULL, free_region, &call), 0);
    sem_wait(&free_entered); /* VirtualFree took its slot before calling the host: it is in flight now */
    for (unsigned n = 0; n < CALLS; n++) {
        DWORD load;
        SIZE_T available;
        assert_int_equal(IHostMemoryManager_GetMemoryLoad(m, &load, &available), S_OK);
    }
    sem_post(&free_may_go);
    assert_int_equal(pthread_join(freeing, NULL), 0);
    assert_int_equal(call.result, S_OK);
    IHostMemoryManager_Release(m);
    sem_destroy(&free_entered);
    sem_destroy(&free_may_go);

    hm_trace *t;
    assert_int_equal(hm_trace_load(path, &t), S_OK);
    assert_int_equal(t->count, 2 + CALLS);
    assert_int_equal(t->calls[0].method, HM_METHOD_VIRTUAL_ALLOC);
    assert_int_equal(t->calls[1].method, HM_METHOD_VIRTUAL_FREE);
    assert_int_equal(t->calls[1].result, S_OK);
    for (size_t i = 2; i < t->count; i++) {
        assert_int_equal(t->calls[i].method, HM_METHOD_GET_MEMORY_LOAD);
        assert_int_equal(t->calls[i].seq, i + 1);
    }
    hm_trace_free(t);
}

/* ---- OOMs ---- */
static const char *record_oom(const char *name)
{
    const char *path = tmp_path(name);
    IHostMemoryManager *m = recorded("deterministic=1,backend=sim,limit=2M", path);
    void *region = NULL;
    assert_int_equal(IHostMemoryManager_VirtualAlloc(m, NULL, 8u << 20, MEM_RESERVE, PAGE_NOACCESS, eAppDomainCritical,
                                                     &region), S_OK);
    HRESULT hr = S_OK;
    for (size_t off = 0; off < (8u << 20) && SUCCEEDED(hr); off += 65536) {
        void *p;
        hr = IHostMemoryManager_VirtualAlloc(m, (char *)region + off, 65536, MEM_COMMIT, PAGE_READWRITE,
                                             eAppDomainCritical, &p);
    }
    assert_int_equal(hr, E_OUTOFMEMORY);
    IHostMemoryManager_Release(m);
    return path;
}

/* An OOM recorded under a 2M budget replays on an unlimited manager: injected, no divergence; without injection
 * the same replay diverges at exactly that call. */
static void test_oom_reproduced(void **state)
{
    (void)state;
    const char *path = record_oom("oom.raw");
    hm_replay_options opts = {0};
    opts.emit_faults = 1;
    hm_replay_result res;
    assert_int_equal(HostMemReplay(path, &opts, &res), S_OK);
    assert_false(res.diverged);
    assert_int_equal(res.injected, 1);
    /* 1 reserve + 31 commits fit (limit 2M minus the process reserve 64K); the 32nd commit fails. */
    assert_string_equal(res.fault_spec, "VirtualAlloc,level=appdomain,op=commit,size=65536,nth=32");
    HostMemReplayFree(&res);

    opts.emit_faults = 0;
    opts.no_inject = 1;
    assert_int_equal(HostMemReplay(path, &opts, &res), S_OK);
    assert_true(res.diverged);
    assert_int_equal(res.divergence_seq, res.calls);
    assert_string_equal(res.expected, "E_OUTOFMEMORY");
    assert_string_equal(res.actual, "S_OK");
}

/* The spec --emit-faults prints, given to the fault layer, fails the same call of the same program. */
static void test_emit_faults_reproduces(void **state)
{
    (void)state;
    hm_replay_options opts = {0};
    opts.emit_faults = 1;
    hm_replay_result res;
    assert_int_equal(HostMemReplay(record_oom("oom2.raw"), &opts, &res), S_OK);
    IHostMemoryManager *inner = builtin("deterministic=1,backend=sim"), *m;
    assert_int_equal(HostMemWrapFaults(inner, res.fault_spec, &m), S_OK);
    IHostMemoryManager_Release(inner);
    HostMemReplayFree(&res);
    void *region = NULL, *p;
    IHostMemoryManager_VirtualAlloc(m, NULL, 8u << 20, MEM_RESERVE, PAGE_NOACCESS, eAppDomainCritical, &region);
    int failed_at = -1;
    for (int i = 0; i < 64 && failed_at < 0; i++)
        if (FAILED(IHostMemoryManager_VirtualAlloc(m, (char *)region + i * 65536, 65536, MEM_COMMIT, PAGE_READWRITE,
                                                   eAppDomainCritical, &p)))
            failed_at = i;
    assert_int_equal(failed_at, 31);
    IHostMemoryManager_Release(m);
}

/* ---- The reducer ---- */
static void put_call(hm_trace_writer *w, hm_trace_call *c, uint64_t *seq)
{
    c->seq = ++*seq;
    c->thread = 1;
    assert_int_equal(hm_trace_write(w, c), S_OK);
}

/* ~500 calls, of which 3 big commits (recorded as fitting) overflow a 2.5M budget on replay. */
static void test_reducer(void **state)
{
    (void)state;
    const char *path = tmp_path("reduce.txt");
    hm_trace_writer *w;
    assert_int_equal(hm_trace_writer_open(path, HM_TRACE_TEXT, &w), S_OK);
    assert_int_equal(hm_trace_write_env(w, &(hm_trace_env){.host = "built-in", .host_options = "limit=2560K"}), S_OK);
    uint64_t seq = 0;
    uint32_t handle = 0;
    for (int i = 0; i < 249; i++) {
        hm_trace_call c;
        memset(&c, 0, sizeof c);
        bool big = i == 40 || i == 130 || i == 200;
        c.method = HM_METHOD_VIRTUAL_ALLOC;
        c.size = big ? (1u << 20) : 65536;
        c.type = big ? MEM_RESERVE | MEM_COMMIT : MEM_RESERVE;
        c.prot = PAGE_READWRITE;
        c.level = eTaskCritical;
        c.mem = (hm_trace_ref){0, ++handle, HM_REF_ALLOC};
        put_call(w, &c, &seq);
        if (big)
            continue;
        memset(&c, 0, sizeof c);
        c.method = HM_METHOD_VIRTUAL_FREE;
        c.level = -1;
        c.addr = (hm_trace_ref){0, handle, HM_REF_ALLOC};
        c.type = MEM_RELEASE;
        put_call(w, &c, &seq);
    }
    assert_int_equal(hm_trace_writer_close(w), S_OK);
    assert_true(seq >= 490);

    hm_trace *t, *small;
    assert_int_equal(hm_trace_load(path, &t), S_OK);
    hm_replay_options opts = {0};
    opts.factory = factory_options;
    opts.factory_ctx = (void *)"deterministic=1,backend=sim,limit=2560K";
    hm_reduce_stats stats;
    assert_int_equal(HostMemReduce(t, &opts, &small, &stats), S_OK);
    assert_int_equal(stats.original_calls, seq);
    assert_int_equal(small->count, 3);
    /* The smaller trace keeps the recording's environment. */
    assert_string_equal(small->env.host, "built-in");
    assert_string_equal(small->env.host_options, "limit=2560K");
    for (size_t i = 0; i < small->count; i++)
        assert_int_equal(small->calls[i].size, 1u << 20);
    assert_non_null(strstr(stats.failure, "hr S_OK recorded, E_OUTOFMEMORY on this host"));
    hm_replay_result res;
    assert_int_equal(HostMemReplayTrace(small, &opts, &res), S_OK);
    assert_true(res.diverged);
    assert_string_equal(res.actual, "E_OUTOFMEMORY");
    hm_trace_free(small);
    hm_trace_free(t);
}

/* Exploration's scenario replays a trace and leaves nothing behind on the host, even when calls fail. */
static void test_scenario_cleans_up(void **state)
{
    (void)state;
    hm_trace *t;
    assert_int_equal(hm_trace_load(record_every_method("scenario.raw"), &t), S_OK);
    static const char *const specs[] = {"", "VirtualAlloc,nth=1", "heap,nth=1", "CreateMalloc,nth=1"};
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        IHostMemoryManager *inner = builtin("deterministic=1,backend=sim"), *m;
        assert_int_equal(HostMemWrapFaults(inner, specs[i], &m), S_OK);
        IHostMemoryManager_Release(inner);
        assert_int_equal(hm_trace_scenario(m, t), S_OK);
        hm_stats stats;
        assert_int_equal(HostMemGetStats(m, &stats), S_OK);
        assert_int_equal(stats.reservations, 0);
        assert_int_equal(stats.heap_count, 0);
        assert_int_equal(stats.heap_live_blocks, 0);
        assert_int_equal(stats.ledger_ranges, 0);
        IHostMemoryManager_Release(m);
    }
    hm_trace_free(t);
}

/* ---- Threads ---- */
static void *worker(void *arg)
{
    IHostMemoryManager *m = arg;
    for (int i = 0; i < 200; i++) {
        void *p = NULL;
        if (SUCCEEDED(IHostMemoryManager_VirtualAlloc(m, NULL, PAGE, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
                                                      eTaskCritical, &p)))
            IHostMemoryManager_VirtualFree(m, p, 0, MEM_RELEASE);
    }
    return NULL;
}

/* Four threads record at once: every call is there once, threads are numbered 1-4, and the serialised trace
 * replays without divergence. */
static void test_threads(void **state)
{
    (void)state;
    const char *path = tmp_path("threads.raw");
    IHostMemoryManager *m = recorded("deterministic=1,backend=sim", path);
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, worker, m);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(HostMemRecorderCalls(m), 1600);
    IHostMemoryManager_Release(m);
    hm_trace *t;
    assert_int_equal(hm_trace_load(path, &t), S_OK);
    assert_int_equal(t->count, 1600);
    uint32_t max_thread = 0;
    for (size_t i = 0; i < t->count; i++)
        max_thread = t->calls[i].thread > max_thread ? t->calls[i].thread : max_thread;
    assert_int_equal(max_thread, 4);
    hm_replay_result res;
    assert_int_equal(HostMemReplayTrace(t, NULL, &res), S_OK);
    assert_false(res.diverged);
    hm_trace_free(t);
}

/* What a recording child does until it is killed: calls into m, writing its count of returned calls to fd after
 * each. */
typedef void (*recording_loop)(IHostMemoryManager *m, int fd);

/* Forks a child that records a sim-backed manager into path and runs loop, reads the calls-done count it reports
 * until it reaches target, kills it with SIGKILL and returns the last count it reported before it died. */
static unsigned long record_then_kill(const char *path, recording_loop loop, unsigned long target)
{
    int fd;
    pid_t pid = fork_with_pipe(&fd);
    if (pid == 0) {
        IHostMemoryManager *inner, *m;
        if (FAILED(HostMemCreateBuiltinManager("deterministic=1,backend=sim", &inner)) ||
            FAILED(HostMemWrapRecorder(inner, path, &m)))
            _exit(3);
        loop(m, fd);
        _exit(5); /* the loops never return */
    }
    unsigned long done = 0;
    while (done < target && read(fd, &done, sizeof done) == (ssize_t)sizeof done)
        ;
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    while (read(fd, &done, sizeof done) == (ssize_t)sizeof done)
        ;
    close(fd);
    assert_true(WIFSIGNALED(status));
    return done;
}

static void load_loop(IHostMemoryManager *m, int fd)
{
    for (unsigned long n = 1;; n++) {
        DWORD load;
        SIZE_T available;
        IHostMemoryManager_GetMemoryLoad(m, &load, &available);
        if (write(fd, &n, sizeof n) != (ssize_t)sizeof n)
            _exit(4);
    }
}

static char multislot_file[] = "a/file/name/long/enough/for/two/extra/slots/of/the/raw/trace/sixty-four/bytes/each.cpp";
static char twoslot_file[] = "one/extra/slot.cpp";

/* Calls of 1, 2 and 3 slots: GetMemoryLoad, VirtualQuery (packed: 1), DebugAlloc with a short file name (2), Free,
 * DebugAlloc with a long one (3), Free. */
static void multislot_loop(IHostMemoryManager *m, int fd)
{
    IHostMalloc *heap;
    void *region = NULL;
    if (FAILED(IHostMemoryManager_CreateMalloc(m, MALLOC_THREADSAFE, &heap)) ||
        FAILED(IHostMemoryManager_VirtualAlloc(m, NULL, 65536, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, eTaskCritical,
                                               &region)))
        _exit(3);
    for (unsigned long n = 1;; n++) {
        DWORD load;
        SIZE_T available, got;
        MEMORY_BASIC_INFORMATION mbi;
        void *p = NULL, *q = NULL;
        IHostMemoryManager_GetMemoryLoad(m, &load, &available);
        IHostMemoryManager_VirtualQuery(m, region, &mbi, sizeof mbi, &got);
        IHostMalloc_DebugAlloc(heap, 16, eTaskCritical, twoslot_file, (int)n, &q);
        IHostMalloc_Free(heap, q);
        IHostMalloc_DebugAlloc(heap, 16, eTaskCritical, multislot_file, (int)n, &p);
        IHostMalloc_Free(heap, p);
        if (write(fd, &n, sizeof n) != (ssize_t)sizeof n)
            _exit(4);
    }
}

/* A child records in a loop and is killed with SIGKILL: the trace parses and holds every call the child said
 * had returned. */
static void test_survives_sigkill(void **state)
{
    (void)state;
    const char *path = tmp_path("killed.raw");
    unsigned long done = record_then_kill(path, load_loop, 20000);
    hm_trace *t;
    assert_int_equal(hm_trace_load(path, &t), S_OK);
    assert_true(t->count >= done);
    assert_true(t->count <= done + 1); /* at most the call in flight more */
    for (size_t i = 0; i < t->count; i++)
        assert_int_equal(t->calls[i].method, HM_METHOD_GET_MEMORY_LOAD);
    hm_trace_free(t);
}

/* The same with calls of 1, 2 and 3 slots, so records wrap around the end of the recorder's ring: the trace holds
 * every call in order, whether it was copied to its place or read back from the ring. */
static void test_survives_sigkill_multislot(void **state)
{
    (void)state;
    const char *path = tmp_path("killed-multi.raw");
    unsigned long done = record_then_kill(path, multislot_loop, 6000);
    hm_trace *t;
    assert_int_equal(hm_trace_load(path, &t), S_OK);
    assert_true(t->count >= 2 + 6 * done);
    assert_true(t->count <= 2 + 6 * done + 6);
    static const int pattern[] = {HM_METHOD_GET_MEMORY_LOAD, HM_METHOD_VIRTUAL_QUERY, HM_METHOD_HEAP_DEBUG_ALLOC,
                                  HM_METHOD_HEAP_FREE, HM_METHOD_HEAP_DEBUG_ALLOC, HM_METHOD_HEAP_FREE};
    for (size_t i = 2; i < t->count; i++) {
        const hm_trace_call *c = &t->calls[i];
        assert_int_equal(c->seq, i + 1);
        assert_int_equal(c->method, pattern[(i - 2) % 6]);
        if (c->method == HM_METHOD_VIRTUAL_QUERY)
            assert_true(c->has_mbi && c->mbi_region_size == 65536);
        if (c->method == HM_METHOD_HEAP_DEBUG_ALLOC) {
            assert_string_equal(c->file, (i - 2) % 6 == 2 ? twoslot_file : multislot_file);
            assert_int_equal(c->line, (int)((i - 2) / 6 + 1));
        }
    }
    hm_trace_free(t);
}

/* Case i's file at path must be refused by hm_trace_load with E_INVALIDARG and an error "PATH<message>". */
static void expect_load_refused(const char *path, size_t i, const char *message)
{
    hm_trace *t = NULL;
    HRESULT hr = hm_trace_load(path, &t);
    if (hr != E_INVALIDARG)
        fail_msg("case %zu: expected E_INVALIDARG, got 0x%08x", i, (unsigned)hr);
    char want[256];
    snprintf(want, sizeof want, "%s%s", path, message);
    if (!strstr(HostMemLastError(), want))
        fail_msg("case %zu: expected \"%s\" in \"%s\"", i, want, HostMemLastError());
}

/* ---- The reader's errors ---- */
static const char header[] = "hostmem-trace 1\n";
#define VA "VirtualAlloc addr=0 size=0x10000 type=MEM_RESERVE prot=PAGE_READWRITE level=task"
/* A value too long to quote whole: its first 80 bytes (A...) are shown, marked cut; the rest (Z...) is not. */
#define A10 "AAAAAAAAAA"
#define Z10 "ZZZZZZZZZZ"
#define E_A78 "E_" A10 A10 A10 A10 A10 A10 A10 "AAAAAAAA"

static void test_parser_errors(void **state)
{
    (void)state;
    static const struct {
        const char *text, *message;
    } cases[] = {
        {"hostmem-trace 2\n", ":1: field 'version': unsupported version '2'"},
        {"hello world\n", ":1: field 'version': not a hostmem trace"},
        {"1 t1 VirtualAlloc addr=0 size=0x1g type=MEM_RESERVE prot=PAGE_READWRITE level=task -> S_OK mem=@1\n",
         ":2: field 'size': bad number '0x1g'"},
        {"1 t1 VirtualAllok addr=0 -> S_OK\n", ":2: field 'method': unknown method 'VirtualAllok'"},
        {"# a comment\n\n1 t1 VirtualFree addr=@7 size=0 type=MEM_RELEASE -> S_OK\n",
         ":4: field 'addr': unknown handle '@7'"},
        {"1 t1 " VA " -> E_WHATEVER mem=0\n", ":2: field 'result': unknown HRESULT 'E_WHATEVER'"},
        /* A name past 40 bytes is quoted whole (up to 80), a longer one cut with a mark and its length. */
        {"1 t1 " VA " -> HRESULT_FROM_WIN32(ERROR_NOT_ENOUGH_MEMORY_TYPO_AT_THE_END) mem=0\n",
         ":2: field 'result': unknown HRESULT 'HRESULT_FROM_WIN32(ERROR_NOT_ENOUGH_MEMORY_TYPO_AT_THE_END)'"},
        {"1 t1 " VA " -> " E_A78 Z10 Z10 " mem=0\n", ":2: field 'result': unknown HRESULT '" E_A78 "...' (100 bytes)"},
        {"1 t1 VirtualAllocWithAVeryLongNameThatIsNotAMethodAtAll addr=0 -> S_OK\n",
         ":2: field 'method': unknown method 'VirtualAllocWithAVeryLongNameThatIsNotAMethodAtAll'"},
        {"1 t1 VirtualFree addr=0 size=0 -> S_OK\n", ":2: field 'type': missing"},
        {"1 t1 VirtualFree addr=0 size=0 type=MEM_BOGUS -> S_OK\n", ":2: field 'type': unknown flag 'MEM_BOGUS'"},
        {"1 t1 VirtualAlloc addr=0 size=1 type=MEM_RESERVE prot=PAGE_READWRITE level=urgent -> S_OK mem=@1\n",
         ":2: field 'level': unknown level 'urgent'"},
        {"2 t1 " VA " -> S_OK mem=@1\n1 t1 GetMemoryLoad -> S_OK load=1 available=0\n",
         ":3: field 'seq': 1 does not follow 2"},
        {"1 t1 " VA " size=0x2000 -> S_OK mem=@1\n", ":2: field 'size': given twice"},
        {"1 t1 CreateMalloc type=0 -> S_OK heap=h1\n2 t1 Alloc heap=h1 size=1 level=task -> S_OK mem=#1\n"
         "3 t1 Alloc heap=h1 size=1 level=task -> S_OK mem=#1\n",
         ":4: field 'mem': heap block '#1' returned twice"},
        {"1 t1 CreateMalloc type=0 -> S_OK heap=h1\n2 t1 CreateMalloc type=0 -> S_OK heap=h1\n",
         ":3: field 'heap': handle 'h1' created twice"},
        {"1 t0 GetMemoryLoad -> S_OK\n", ":2: field 'thread': bad thread 't0'"},
        {"1 t1 Free heap=h3 addr=0 -> S_OK\n", ":2: field 'heap': unknown handle 'h3'"},
        {"1 t1 GetMemoryLoad -> S_OK load=99999999999\n", ":2: field 'load': bad number '99999999999'"},
        {"1 t1 DebugAlloc heap=h1 size=1 level=task file=\"x\\q\" line=1 -> S_OK\n", ":2: field 'file': bad escape"},
        {"1 t1 VirtualQuery addr=0 length=48 -> S_OK result=48 base=0\n", ":2: field 'base': a VirtualQuery result"},
        {"1 t1 GetMemoryLoad\n2 t1 GetMemoryLoad -> S_OK\n", ":2: field 'result': missing"},
    };
    const char *path = tmp_path("bad.txt");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[1024];
        bool has_header = strncmp(cases[i].text, "hostmem-trace", 13) == 0 || strncmp(cases[i].text, "hello", 5) == 0;
        snprintf(text, sizeof text, "%s%s", has_header ? "" : header, cases[i].text);
        write_file(path, text, strlen(text));
        expect_load_refused(path, i, cases[i].message);
    }
}

/* A 1 MB line is refused, not read. */
static void test_huge_line(void **state)
{
    (void)state;
    size_t n = 1 << 20;
    char *text = malloc(n + 64);
    assert_non_null(text);
    strcpy(text, header);
    memset(text + strlen(header), 'x', n);
    text[strlen(header) + n] = '\n';
    const char *path = tmp_path("huge.txt");
    write_file(path, text, strlen(header) + n + 1);
    free(text);
    hm_trace *t;
    assert_int_equal(hm_trace_load(path, &t), E_INVALIDARG);
    assert_non_null(strstr(HostMemLastError(), ":2: field 'line': longer than 4096 bytes"));
}

/* Cut traces: a text trace whose last line was cut reads up to the line before; a binary trace cut inside a
 * record is an error naming the record; random bytes after a valid header never crash the reader. */
static void test_truncated_and_hostile(void **state)
{
    (void)state;
    const char *txt = tmp_path("cut.txt");
    char text[512];
    snprintf(text, sizeof text, "%s1 t1 GetMemoryLoad -> S_OK load=1 available=0x10\n2 t1 GetMemoryLoad -> S_O",
             header);
    write_file(txt, text, strlen(text));
    hm_trace *t;
    assert_int_equal(hm_trace_load(txt, &t), S_OK);
    assert_int_equal(t->count, 1);
    hm_trace_free(t);

    convert(record_every_method("cut.raw"), tmp_path("cut.bin"), HM_TRACE_BINARY);
    size_t len;
    char *bin = read_file(tmp_path("cut.bin"), &len);
    write_file(tmp_path("cut2.bin"), bin, len - 3);
    assert_int_equal(hm_trace_load(tmp_path("cut2.bin"), &t), E_INVALIDARG);
    assert_non_null(strstr(HostMemLastError(), "cut2.bin: record "));
    /* Flip bytes of the body one at a time: each load succeeds or fails cleanly. */
    srand(7);
    for (int round = 0; round < 200; round++) {
        char *copy = malloc(len);
        memcpy(copy, bin, len);
        size_t at = 20 + (size_t)rand() % (len - 20);
        copy[at] = (char)rand();
        write_file(tmp_path("fuzz.bin"), copy, len);
        free(copy);
        if (SUCCEEDED(hm_trace_load(tmp_path("fuzz.bin"), &t)))
            hm_trace_free(t);
    }
    free(bin);
}

/* ---- The recording's environment in the header ---- */
/* Raw version 4's layout (trace_internal.h): the environment block's size at byte 56, the block after the 64-byte
 * header, then the ring of 16384 slots of 64 bytes. */
#define RAW_ENV_FIELD 56
#define RAW_RING_BYTES (16384u * 64u)

static const char *env_value(const hm_trace_env *env, int i)
{
    const char *v[] = {env->version, env->host, env->host_path, env->host_options,
                       env->faults,  env->time, env->os,        env->pid};
    return v[i];
}

/* Every field of a and b equal (NULL and "" alike). */
static void assert_same_env(const hm_trace_env *a, const hm_trace_env *b, const char *what)
{
    for (int i = 0; i < 8; i++) {
        const char *x = env_value(a, i) ? env_value(a, i) : "", *y = env_value(b, i) ? env_value(b, i) : "";
        if (strcmp(x, y) != 0)
            fail_msg("%s: field %d: '%s' became '%s'", what, i, x, y);
    }
}

/* convert, carrying the environment over as `hostmem trace convert` does. */
static void convert_with_env(const char *in, const char *out, hm_trace_encoding encoding)
{
    hm_trace_reader *r;
    hm_trace_writer *w;
    assert_int_equal(hm_trace_open(in, &r), S_OK);
    assert_int_equal(hm_trace_writer_open(out, encoding, &w), S_OK);
    assert_int_equal(hm_trace_write_env(w, hm_trace_reader_env(r)), S_OK);
    hm_trace_call c;
    int got;
    while ((got = hm_trace_next(r, &c)) > 0)
        assert_int_equal(hm_trace_write(w, &c), S_OK);
    assert_int_equal(got, 0);
    assert_int_equal(hm_trace_writer_close(w), S_OK);
    hm_trace_close(r);
}

static const hm_trace_env recorded_env = {
    .host = "./libmyhost.so",
    .host_path = "/opt/hosts/libmyhost.so",
    .host_options = "limit=64M,zero=all",
    .faults = "VirtualAlloc,level=appdomain,nth=3;heap,p=0.5,seed=7",
};

/* The recorder writes every field; the raw, text and binary forms carry each one unchanged, both ways. */
static void test_env_round_trip(void **state)
{
    (void)state;
    const char *raw = tmp_path("env.raw");
    IHostMemoryManager *inner = builtin("deterministic=1,backend=sim"), *m = NULL;
    assert_int_equal(HostMemWrapRecorderEnv(inner, raw, &recorded_env, &m), S_OK);
    IHostMemoryManager_Release(inner);
    hm_counting_callback cb = HM_COUNTING_CALLBACK_INIT;
    every_method(m, &cb);
    IHostMemoryManager_Release(m);

    hm_trace_reader *r;
    assert_int_equal(hm_trace_open(raw, &r), S_OK);
    const hm_trace_env *env = hm_trace_reader_env(r);
    hm_trace_env want = recorded_env;
    char pid[24];
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    want.version = HOSTMEM_VERSION_STRING;
    want.os = "linux";
    want.pid = pid;
    want.time = env->time; /* its shape is checked below */
    assert_same_env(&want, env, "raw");
    assert_int_equal(strlen(env->time), 20);
    assert_true(env->time[4] == '-' && env->time[10] == 'T' && env->time[19] == 'Z');
    hm_trace_env raw_env = *env;
    char time[32];
    snprintf(time, sizeof time, "%s", env->time);
    raw_env.time = time;
    raw_env.version = HOSTMEM_VERSION_STRING;
    raw_env.os = "linux";
    raw_env.pid = pid;
    raw_env.host = recorded_env.host;
    raw_env.host_path = recorded_env.host_path;
    raw_env.host_options = recorded_env.host_options;
    raw_env.faults = recorded_env.faults;
    hm_trace_close(r);

    convert_with_env(raw, tmp_path("env1.txt"), HM_TRACE_TEXT);
    convert_with_env(tmp_path("env1.txt"), tmp_path("env1.bin"), HM_TRACE_BINARY);
    convert_with_env(tmp_path("env1.bin"), tmp_path("env2.txt"), HM_TRACE_TEXT);
    convert_with_env(tmp_path("env2.txt"), tmp_path("env2.bin"), HM_TRACE_BINARY);
    assert_same_file(tmp_path("env1.txt"), tmp_path("env2.txt"));
    assert_same_file(tmp_path("env1.bin"), tmp_path("env2.bin"));
    const char *forms[] = {"env1.txt", "env1.bin", "env2.txt", "env2.bin"};
    for (size_t i = 0; i < 4; i++) {
        hm_trace *t;
        assert_int_equal(hm_trace_load(tmp_path(forms[i]), &t), S_OK);
        assert_same_env(&raw_env, &t->env, forms[i]);
        assert_int_equal(t->count, 18); /* the calls as well */
        hm_trace_free(t);
    }
    /* The text form says it in the header, before the first call. */
    size_t len;
    char *text = read_file(tmp_path("env1.txt"), &len);
    assert_non_null(strstr(text, "hostmem-trace 1\n#! version: " HOSTMEM_VERSION_STRING "\n#! host: ./libmyhost.so\n"));
    assert_true(strstr(text, "#! faults: ") < strstr(text, "\n1 t1 "));
    free(text);
}

/* Traces from before the header carried the environment (text without the lines, binary version 1, raw version
 * 3) read as before, with every field empty. */
static void test_env_old_traces_read_empty(void **state)
{
    (void)state;
    const char *raw = record_every_method("old.raw");
    convert(raw, tmp_path("old.txt"), HM_TRACE_TEXT);  /* no environment written: no lines */
    convert(raw, tmp_path("new.bin"), HM_TRACE_BINARY); /* version 2 with an empty environment */
    size_t len;
    char *bin = read_file(tmp_path("new.bin"), &len);
    const char magic2[] = "hostmem-trace-bin 2\n";
    assert_memory_equal(bin, magic2, strlen(magic2));
    assert_int_equal(bin[strlen(magic2)], 0); /* the environment's length */
    /* Version 1: the same records right after its magic. */
    char *v1 = malloc(len);
    memcpy(v1, "hostmem-trace-bin 1\n", strlen(magic2));
    memcpy(v1 + strlen(magic2), bin + strlen(magic2) + 1, len - strlen(magic2) - 1);
    write_file(tmp_path("old.bin"), v1, len - 1);
    free(v1);
    free(bin);
    /* Raw version 3: no environment block between the header and the ring. */
    char *r4 = read_file(raw, &len);
    uint32_t env_size;
    memcpy(&env_size, r4 + RAW_ENV_FIELD, sizeof env_size);
    assert_true(env_size > 0 && env_size % 64 == 0);
    char *r3 = calloc(1, len);
    memcpy(r3, r4, 64);
    memcpy(r3, "hostmem-trace-raw 3\n", 20);
    memset(r3 + RAW_ENV_FIELD, 0, 4);
    memcpy(r3 + 64, r4 + 64 + env_size, len - 64 - env_size);
    write_file(tmp_path("old.raw"), r3, len - env_size);
    free(r3);
    free(r4);

    const char *old[] = {"old.txt", "old.bin", "old.raw"};
    for (size_t i = 0; i < 3; i++) {
        hm_trace *t;
        if (hm_trace_load(tmp_path(old[i]), &t) != S_OK)
            fail_msg("%s: %s", old[i], HostMemLastError());
        assert_int_equal(t->count, 18);
        static const hm_trace_env none;
        assert_same_env(&none, &t->env, old[i]);
        hm_trace_free(t);
        hm_trace_reader *r;
        assert_int_equal(hm_trace_open(tmp_path(old[i]), &r), S_OK);
        const hm_trace_env *env = hm_trace_reader_env(r);
        for (int f = 0; f < 8; f++) /* never NULL: "" */
            assert_string_equal(env_value(env, f), "");
        hm_trace_close(r);
    }
}

/* A malformed, overlong or misplaced field is refused with the file, the line (record or slot) and the field. */
static void test_env_malformed(void **state)
{
    (void)state;
    static char overlong[64 + 4001 + 2];
    snprintf(overlong, sizeof overlong, "#! faults: %4001d\n", 1);
    static const struct {
        const char *text, *message;
    } cases[] = {
        {"#! pid: 12a\n", ":2: field 'pid': bad process id '12a'"},
        {"#! pid: 12345678901\n", ":2: field 'pid': bad process id"},
        {"#! time: yesterday\n", ":2: field 'time': bad time 'yesterday'"},
        {"#! time: 2026-12-07 15:41:28\n", ":2: field 'time': bad time"},
        {"#! os: Linux\n", ":2: field 'os': bad OS name 'Linux'"},
        {"#! os: " E_A78 Z10 Z10 Z10 "\n", ":2: field 'os': bad OS name '" E_A78 "...' (110 bytes) (lower-case"},
        {"# a comment\n#! host: a\n#! host: b\n", ":4: field 'host': given twice"},
        {"#! host-options: a\x01" "b\n", ":2: field 'host-options': control character 0x01"},
        {overlong, ":2: field 'faults': longer than 4000 bytes"},
        {"1 t1 GetMemoryLoad -> S_OK load=1 available=0x10\n#! host: late\n",
         ":3: field 'env': a line of the environment after the first call"},
    };
    const char *path = tmp_path("badenv.txt");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[8192];
        snprintf(text, sizeof text, "%s%s", header, cases[i].text);
        write_file(path, text, strlen(text));
        expect_load_refused(path, i, cases[i].message);
    }
    /* An unknown "#! KEY:" line is a field a later hostmem added: a comment. */
    char text[256];
    snprintf(text, sizeof text, "%s#! colour: blue\n#! host: ok\n", header);
    write_file(path, text, strlen(text));
    hm_trace *t;
    assert_int_equal(hm_trace_load(path, &t), S_OK);
    assert_string_equal(t->env.host, "ok");
    hm_trace_free(t);

    /* Binary and raw: the same checks, and the block's own size. */
    static const struct {
        const char *name;
        const char *bytes;
        size_t len;
        const char *message;
    } blocks[] = {
        {"bad.bin", "hostmem-trace-bin 2\n\x0a#! pid: x\n", 31, ": record 0: field 'pid': bad process id 'x'"},
        {"big.bin", "hostmem-trace-bin 2\n\x81\x80\x08", 23, ": record 0: field 'env': bad size"},
        {"cut.bin", "hostmem-trace-bin 2\n\x20#! host", 29, ": record 0: field 'env': the environment is cut short"},
        {"nonl.bin", "hostmem-trace-bin 2\n\x07#! os: ", 28, ": record 0: field 'env': the environment's last line"},
    };
    for (size_t i = 0; i < sizeof blocks / sizeof blocks[0]; i++) {
        write_file(tmp_path(blocks[i].name), blocks[i].bytes, blocks[i].len);
        assert_int_equal(hm_trace_load(tmp_path(blocks[i].name), &t), E_INVALIDARG);
        char want[256];
        snprintf(want, sizeof want, "%s%s", tmp_path(blocks[i].name), blocks[i].message);
        if (!strstr(HostMemLastError(), want))
            fail_msg("%s: expected \"%s\" in \"%s\"", blocks[i].name, want, HostMemLastError());
    }
    size_t len;
    char *raw = read_file(record_every_method("env-bad.raw"), &len);
    uint32_t odd = 100;
    memcpy(raw + RAW_ENV_FIELD, &odd, sizeof odd);
    write_file(tmp_path("env-bad.raw"), raw, len);
    assert_int_equal(hm_trace_load(tmp_path("env-bad.raw"), &t), E_INVALIDARG);
    assert_non_null(strstr(HostMemLastError(), "env-bad.raw: slot 0: field 'env': bad size 100"));
    uint32_t size;
    memcpy(&odd, (uint32_t[]){64}, sizeof odd);
    memcpy(&size, raw + RAW_ENV_FIELD, sizeof size);
    memcpy(raw + RAW_ENV_FIELD, &odd, sizeof odd);
    memcpy(raw + 64, "#! pid: 1x\n", 11);
    write_file(tmp_path("env-bad.raw"), raw, len);
    assert_int_equal(hm_trace_load(tmp_path("env-bad.raw"), &t), E_INVALIDARG);
    assert_non_null(strstr(HostMemLastError(), "env-bad.raw: slot 0: field 'pid': bad process id '1x'"));
    free(raw);
}

/* The writer refuses what a reader would refuse, and an environment after the first call; the recorder never
 * refuses a recording for its environment: a control character becomes '?', an overlong value is left out. */
static void test_env_writer_and_recorder_checks(void **state)
{
    (void)state;
    hm_trace_writer *w;
    assert_int_equal(hm_trace_writer_open(tmp_path("w.txt"), HM_TRACE_TEXT, &w), S_OK);
    assert_int_equal(hm_trace_write_env(w, &(hm_trace_env){.pid = "12ab"}), E_INVALIDARG);
    assert_non_null(strstr(HostMemLastError(), "field 'pid'"));
    assert_int_equal(hm_trace_write_env(w, &(hm_trace_env){.host = "a\nb"}), E_INVALIDARG);
    assert_non_null(strstr(HostMemLastError(), "field 'host': control character 0x0a"));
    hm_trace_call c;
    memset(&c, 0, sizeof c);
    c.seq = 1;
    c.thread = 1;
    c.method = HM_METHOD_GET_MEMORY_LOAD;
    c.level = -1;
    assert_int_equal(hm_trace_write(w, &c), S_OK);
    assert_int_equal(hm_trace_write_env(w, &recorded_env), E_INVALIDARG);
    assert_non_null(strstr(HostMemLastError(), "before the first call"));
    assert_int_equal(hm_trace_writer_close(w), S_OK);

    char *faults = malloc(5001);
    memset(faults, 'f', 5000);
    faults[5000] = '\0';
    hm_trace_env odd = {.host = "built-in", .host_options = "limit=1M\nzero=all", .faults = faults};
    IHostMemoryManager *inner = builtin("deterministic=1,backend=sim"), *m = NULL;
    assert_int_equal(HostMemWrapRecorderEnv(inner, tmp_path("odd.raw"), &odd, &m), S_OK);
    IHostMemoryManager_Release(inner);
    DWORD load;
    SIZE_T available;
    IHostMemoryManager_GetMemoryLoad(m, &load, &available);
    IHostMemoryManager_Release(m);
    free(faults);
    hm_trace *t;
    assert_int_equal(hm_trace_load(tmp_path("odd.raw"), &t), S_OK);
    assert_int_equal(t->count, 1);
    assert_string_equal(t->env.host, "built-in");
    assert_string_equal(t->env.host_options, "limit=1M?zero=all");
    assert_null(t->env.faults);
    hm_trace_free(t);
}

static int setup(void **state)
{
    (void)state;
    return tmp_dir_create("hostmem-test-trace");
}

static int teardown(void **state)
{
    (void)state;
    return tmp_dir_remove();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_method_recorded),
        cmocka_unit_test(test_text_binary_round_trip),
        cmocka_unit_test(test_unnamed_levels_round_trip),
        cmocka_unit_test(test_relocation),
        cmocka_unit_test(test_divergence_detected),
        cmocka_unit_test(test_query_answers_round_trip),
        cmocka_unit_test(test_full_ring),
        cmocka_unit_test(test_oom_reproduced),
        cmocka_unit_test(test_emit_faults_reproduces),
        cmocka_unit_test(test_reducer),
        cmocka_unit_test(test_scenario_cleans_up),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_survives_sigkill),
        cmocka_unit_test(test_survives_sigkill_multislot),
        cmocka_unit_test(test_parser_errors),
        cmocka_unit_test(test_huge_line),
        cmocka_unit_test(test_truncated_and_hostile),
        cmocka_unit_test(test_env_round_trip),
        cmocka_unit_test(test_env_old_traces_read_empty),
        cmocka_unit_test(test_env_malformed),
        cmocka_unit_test(test_env_writer_and_recorder_checks),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

/* Trace files: what the recorder does with the file system (a full disk, an existing trace, a second recorder, a
 * symbolic link, fork) and what the reader does with any prefix of a trace, or with a file that is not one. */
#include "trace_internal.h"

#include <hostmem/hostmem.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "support/support.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* Under ASan a read past the end of a cut trace must be caught: the bytes after the cut are poisoned. */
#if defined(__SANITIZE_ADDRESS__)
#define HM_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HM_TEST_ASAN 1
#endif
#endif
#ifdef HM_TEST_ASAN
#include <sanitizer/asan_interface.h>
#else
#define ASAN_POISON_MEMORY_REGION(addr, size) ((void)(addr), (void)(size))
#define ASAN_UNPOISON_MEMORY_REGION(addr, size) ((void)(addr), (void)(size))
#endif

#define PAGE 4096u
#define RING_END ((size_t)HM_RAW_HEADER + (size_t)HM_RAW_RING_SLOTS * HM_RAW_SLOT)

static IHostMemoryManager *recorded(const char *spec)
{
    IHostMemoryManager *inner = NULL, *m = NULL;
    assert_int_equal(HostMemCreateBuiltinManager("deterministic=1,backend=sim", &inner), S_OK);
    assert_int_equal(HostMemWrapRecorder(inner, spec, &m), S_OK);
    IHostMemoryManager_Release(inner);
    return m;
}

/* A few calls of every shape: one slot, a packed and an unpacked query, a DebugAlloc name over three slots. */
static void some_calls(IHostMemoryManager *m)
{
    void *region = NULL;
    assert_int_equal(IHostMemoryManager_VirtualAlloc(m, NULL, 16 * PAGE, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
                                                     eTaskCritical, &region), S_OK);
    MEMORY_BASIC_INFORMATION mbi;
    SIZE_T got;
    assert_int_equal(IHostMemoryManager_VirtualQuery(m, (char *)region + 8, &mbi, sizeof mbi, &got), S_OK);
    IHostMalloc *heap = NULL;
    assert_int_equal(IHostMemoryManager_CreateMalloc(m, MALLOC_THREADSAFE, &heap), S_OK);
    char name[180];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    void *a = NULL, *b = NULL;
    assert_int_equal(IHostMalloc_DebugAlloc(heap, 200, eProcessCritical, name, 7, &a), S_OK);
    assert_int_equal(IHostMalloc_Alloc(heap, 100, eTaskCritical, &b), S_OK);
    assert_int_equal(IHostMalloc_Free(heap, a), S_OK);
    assert_int_equal(IHostMalloc_Free(heap, b), S_OK);
    IHostMalloc_Release(heap);
    DWORD load;
    SIZE_T available;
    assert_int_equal(IHostMemoryManager_GetMemoryLoad(m, &load, &available), S_OK);
    assert_int_equal(IHostMemoryManager_VirtualFree(m, region, 0, MEM_RELEASE), S_OK);
}
enum { SOME_CALLS = 10 };

/* Reads a trace in memory to its end: returns the calls read, or -1 after an error (which must name the trace). */
static long read_memory(const void *data, size_t len, const char *name)
{
    hm_trace_reader *r;
    if (FAILED(hm__trace_open_memory(data, len, name, &r))) {
        assert_non_null(strstr(HostMemLastError(), name));
        return -1;
    }
    hm_trace_call c;
    long n = 0;
    int got;
    while ((got = hm_trace_next(r, &c)) > 0)
        n++;
    if (got < 0)
        assert_non_null(strstr(hm_trace_error(r), name));
    hm_trace_close(r);
    return got < 0 ? -1 : n;
}

/* ---- B: the reader and cut files ---- */

/* A text header without its newline (the 15 bytes "hostmem-trace 1") is an empty trace; it was read past the end
 * of the buffer. Each case through a file, as every tool reads it, and from memory. */
static void test_header_without_newline(void **state)
{
    (void)state;
    static const struct {
        const char *bytes;
        HRESULT open;
        int calls; /* -1: the reader fails */
    } cases[] = {
        {"hostmem-trace 1", S_OK, 0},
        {"hostmem-trace 1\n", S_OK, 0},
        {"hostmem-trace 1\r", E_INVALIDARG, 0},
        {"hostmem-trace 2", E_INVALIDARG, 0},
        {"hostmem-trace", E_INVALIDARG, 0},
        {"hostmem-trace ", E_INVALIDARG, 0},
        {"", E_INVALIDARG, 0},
        {"hostmem-trace 1\n1 t1 GetMemoryLoad -> S_OK", S_OK, 1},
        {"hostmem-trace-bin 1", E_INVALIDARG, 0},
        {"hostmem-trace-bin 1\n", S_OK, 0},
        {"hostmem-trace-raw 3\n", E_INVALIDARG, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *path = tmp_path("header.trace");
        size_t len = strlen(cases[i].bytes);
        write_file(path, cases[i].bytes, len);
        /* A copy of exactly len bytes on the heap: a read past it is a sanitizer error. */
        char *exact = malloc(len ? len : 1);
        memcpy(exact, cases[i].bytes, len);
        for (int in_memory = 0; in_memory < 2; in_memory++) {
            hm_trace_reader *r = NULL;
            HRESULT hr = in_memory ? hm__trace_open_memory(exact, len, "mem.trace", &r) : hm_trace_open(path, &r);
            if (hr != cases[i].open)
                fail_msg("case %zu '%s' (%s): open gave 0x%08x", i, cases[i].bytes, in_memory ? "memory" : "file",
                         (unsigned)hr);
            if (FAILED(hr))
                continue;
            hm_trace_call c;
            int n = 0, got;
            while ((got = hm_trace_next(r, &c)) > 0)
                n++;
            if (got != 0 || n != cases[i].calls)
                fail_msg("case %zu '%s': %d calls, end %d: %s", i, cases[i].bytes, n, got, hm_trace_error(r));
            hm_trace_close(r);
        }
        free(exact);
    }
}

/* Every prefix of a text, a binary and a raw trace (one closed properly, one left in its ring by a killed
 * recorder, one of version 1) is read cleanly: an error naming it or fewer calls, never a crash (the sanitizer
 * builds run this) and never more calls than the whole. */
static void test_every_truncation(void **state)
{
    (void)state;
    const char *raw = tmp_path("whole.raw");
    IHostMemoryManager *m = recorded(raw);
    some_calls(m);
    IHostMemoryManager_Release(m);
    hm_trace_writer *w;
    hm_trace_reader *r;
    const char *txt = tmp_path("whole.txt"), *bin = tmp_path("whole.bin");
    for (int e = 0; e < 2; e++) {
        assert_int_equal(hm_trace_open(raw, &r), S_OK);
        assert_int_equal(hm_trace_writer_open(e ? bin : txt, e ? HM_TRACE_BINARY : HM_TRACE_TEXT, &w), S_OK);
        hm_trace_call c;
        while (hm_trace_next(r, &c) > 0)
            assert_int_equal(hm_trace_write(w, &c), S_OK);
        assert_int_equal(hm_trace_writer_close(w), S_OK);
        hm_trace_close(r);
    }
    size_t raw_len, txt_len, bin_len;
    uint8_t *closed = (uint8_t *)read_file(raw, &raw_len);
    /* Version 4: the environment block between the 64-byte header and the ring. */
    uint32_t env_size;
    memcpy(&env_size, closed + HM_RAW_ENV_FIELD, sizeof env_size);
    size_t head = HM_RAW_HEADER + env_size, ring_end = RING_END + env_size;
    assert_true(env_size > 0 && raw_len > ring_end);
    size_t body = raw_len - ring_end; /* the calls' slots */
    /* A recorder killed before copying: the same slots in the ring, nothing in their place. */
    size_t killed_len = head + body;
    uint8_t *killed = calloc(1, killed_len);
    memcpy(killed, closed, head);
    memcpy(killed + head, closed + ring_end, body);
    /* Version 1: no ring and no environment, the slots right after the header. */
    size_t v1_len = HM_RAW_HEADER + body;
    uint8_t *v1 = calloc(1, v1_len);
    memcpy(v1, closed, HM_RAW_HEADER);
    memcpy(v1 + HM_RAW_HEADER, closed + ring_end, body);
    memcpy(v1, HM_TRACE_RAW1_MAGIC, strlen(HM_TRACE_RAW1_MAGIC));
    memset(v1 + HM_RAW_RING_FIELD, 0, 8);
    memset(v1 + HM_RAW_ENV_FIELD, 0, 4);

    const struct {
        const char *name;
        const uint8_t *data;
        size_t len;
        size_t from, to; /* prefixes cut in [from, to]; the rest of the lengths in steps of a page */
    } cases[] = {
        {"text", (const uint8_t *)read_file(txt, &txt_len), txt_len, 0, txt_len},
        {"binary", (const uint8_t *)read_file(bin, &bin_len), bin_len, 0, bin_len},
        {"raw killed", killed, killed_len, 0, killed_len},
        {"raw v1", v1, v1_len, 0, v1_len},
        {"raw closed", closed, raw_len, ring_end - 2 * HM_RAW_SLOT, raw_len},
    };
    /* Every cut; under Valgrind (which cannot see a read past a cut inside a block anyway) every 13th. */
    size_t step = getenv("HOSTMEM_UNDER_VALGRIND") ? 13 : 1;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        long whole = read_memory(cases[i].data, cases[i].len, cases[i].name);
        if (whole != SOME_CALLS)
            fail_msg("%s: the whole trace gave %ld calls", cases[i].name, whole);
        /* Eight copies, the k-th starting k bytes into its block, so that every cut can end on an 8-byte granule
         * (what ASan can poison): the bytes after the cut are poisoned while it is read, no copy per cut. */
        uint8_t *blocks[8];
        for (size_t k = 0; k < 8; k++) {
            blocks[k] = malloc(cases[i].len + 8);
            assert_non_null(blocks[k]);
            memcpy(blocks[k] + k, cases[i].data, cases[i].len);
        }
        for (size_t len = 0; len <= cases[i].len; len += len < cases[i].from ? PAGE : step) {
            size_t k = (8 - len % 8) % 8;
            uint8_t *cut = blocks[k] + k, *block_end = blocks[k] + cases[i].len + 8;
            ASAN_POISON_MEMORY_REGION(cut + len, (size_t)(block_end - (cut + len)));
            long n = read_memory(cut, len, cases[i].name);
            ASAN_UNPOISON_MEMORY_REGION(cut + len, (size_t)(block_end - (cut + len)));
            if (n > whole)
                fail_msg("%s cut to %zu bytes: %ld calls, more than the whole", cases[i].name, len, n);
        }
        for (size_t k = 0; k < 8; k++)
            free(blocks[k]);
        if (i < 2)
            free((void *)cases[i].data);
    }
    free(closed);
    free(killed);
    free(v1);
}

/* ---- A: a file system that cannot take the trace ---- */

/* In a child whose files may not grow past `limit` bytes (RLIMIT_FSIZE: writes fail with EFBIG as they fail with
 * ENOSPC on a full disk): records `calls` calls, checks that every call still succeeded, releases the recorder or
 * not, and exits 0. Returns the child's HostMemRecorderCalls through its exit status / 8 (calls are multiples of
 * 8 in these tests), or -1 when the child failed. */
static int record_limited(const char *path, off_t limit, unsigned calls, bool release)
{
    int fd;
    pid_t pid = fork_with_pipe(&fd);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {(rlim_t)limit, (rlim_t)limit};
        if (setrlimit(RLIMIT_FSIZE, &rl) != 0)
            _exit(10);
        IHostMemoryManager *inner, *m;
        if (FAILED(HostMemCreateBuiltinManager("deterministic=1,backend=sim", &inner)))
            _exit(11);
        HRESULT hr = HostMemWrapRecorder(inner, path, &m);
        IHostMemoryManager_Release(inner);
        uint64_t recorded = UINT64_MAX;
        if (SUCCEEDED(hr)) {
            for (unsigned i = 0; i < calls; i++) {
                DWORD load;
                SIZE_T available;
                if (IHostMemoryManager_GetMemoryLoad(m, &load, &available) != S_OK)
                    _exit(12); /* the program must go on */
            }
            recorded = HostMemRecorderCalls(m);
            if (release)
                IHostMemoryManager_Release(m);
        }
        if (write(fd, &recorded, sizeof recorded) != (ssize_t)sizeof recorded)
            _exit(13);
        _exit(0);
    }
    uint64_t recorded = 0;
    ssize_t got = read(fd, &recorded, sizeof recorded);
    close(fd);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || got != (ssize_t)sizeof recorded)
        fail_msg("the recording child failed: status 0x%x", (unsigned)status);
    return recorded == UINT64_MAX ? -1 : (int)recorded;
}

/* Checks that the trace at path reads as `calls` calls and says it is incomplete; so do its text and binary
 * conversions, and a replay says so. */
static void assert_incomplete(const char *path, uint64_t calls)
{
    const char *copies[2] = {tmp_path("stopped.txt"), tmp_path("stopped.bin")};
    for (int pass = 0; pass < 3; pass++) {
        hm_trace_reader *r;
        assert_int_equal(hm_trace_open(pass ? copies[pass - 1] : path, &r), S_OK);
        hm_trace_writer *w = NULL;
        if (!pass)
            assert_int_equal(hm_trace_writer_open(copies[0], HM_TRACE_TEXT, &w), S_OK);
        hm_trace_writer *wb = NULL;
        if (!pass)
            assert_int_equal(hm_trace_writer_open(copies[1], HM_TRACE_BINARY, &wb), S_OK);
        hm_trace_call c;
        uint64_t n = 0;
        int got;
        while ((got = hm_trace_next(r, &c)) > 0) {
            n++;
            if (w) {
                assert_int_equal(hm_trace_write(w, &c), S_OK);
                assert_int_equal(hm_trace_write(wb, &c), S_OK);
            }
        }
        assert_int_equal(got, 0);
        assert_int_equal(n, calls);
        uint64_t said = 0;
        const char *why = NULL;
        assert_int_equal(hm_trace_reader_incomplete(r, &said, &why), 1);
        assert_int_equal(said, calls);
        if (!strstr(why, "File too large"))
            fail_msg("pass %d: reason '%s'", pass, why);
        if (w) {
            assert_int_equal(hm_trace_write_incomplete(w, said, why), S_OK);
            assert_int_equal(hm_trace_write_incomplete(wb, said, why), S_OK);
            assert_int_equal(hm_trace_writer_close(w), S_OK);
            assert_int_equal(hm_trace_writer_close(wb), S_OK);
        }
        hm_trace_close(r);
    }
    hm_replay_result res;
    assert_int_equal(HostMemReplay(path, NULL, &res), S_OK);
    assert_false(res.diverged);
    assert_int_equal(res.calls, calls);
    assert_int_equal(res.incomplete, 1);
    assert_int_equal(res.incomplete_calls, calls);
    HostMemReplayFree(&res);
}

/* The disk fills while recording: the program's calls all go through, the recorder stops at the last batch it
 * could write, and the trace says it is incomplete and holds exactly the calls counted; whether or not the
 * recorder was released (a program that exits without releasing its manager leaves later calls in the ring). */
static void test_full_disk_stops_cleanly(void **state)
{
    (void)state;
    for (int release = 0; release < 2; release++) {
        const char *path = tmp_path(release ? "full-released.raw" : "full-kept.raw");
        /* Room for the first batch of 1024 calls after the ring, not the second. */
        int recorded = record_limited(path, (off_t)RING_END + 1500 * HM_RAW_SLOT, 5000, release);
        assert_int_equal(recorded, 1024);
        assert_incomplete(path, 1024);
    }
    /* A trace that did not fill the disk is complete. */
    const char *path = tmp_path("room.raw");
    assert_int_equal(record_limited(path, (off_t)RING_END + 8000 * HM_RAW_SLOT, 5000, true), 5000);
    hm_trace_reader *r;
    assert_int_equal(hm_trace_open(path, &r), S_OK);
    assert_int_equal(hm_trace_reader_incomplete(r, NULL, NULL), 0);
    hm_trace_close(r);
}

/* No room for the ring: the recorder is refused at once with a message (it used to map the file anyway, and the
 * program died of SIGBUS on a full disk), and leaves no file behind. */
static void test_no_room_for_the_ring(void **state)
{
    (void)state;
    const char *path = tmp_path("no-room.raw");
    assert_int_equal(record_limited(path, 512 * 1024, 100, true), -1);
    struct stat st;
    assert_int_equal(stat(path, &st), -1);
}

/* ---- C: whose file it is ---- */

/* The recorder creates a new trace: an existing file is kept unless ",overwrite" is given, a symbolic link is never
 * followed, a file another recorder writes is refused even with ",overwrite", and %p is the process id. */
static void test_existing_trace_kept(void **state)
{
    (void)state;
    const char *kept = tmp_path("kept.raw");
    write_file(kept, "precious", 8);
    const char *link = tmp_path("link.raw");
    assert_int_equal(symlink(kept, link), 0);
    char kept_overwrite[200], link_overwrite[200];
    snprintf(kept_overwrite, sizeof kept_overwrite, "%s,overwrite", kept);
    snprintf(link_overwrite, sizeof link_overwrite, "%s,overwrite", link);
    static const struct {
        int which; /* 0 kept, 1 kept,overwrite, 2 link, 3 link,overwrite */
        HRESULT hr;
        const char *error;
    } cases[] = {
        {0, E_FAIL, "exists: hostmem does not overwrite a trace"},
        {2, E_FAIL, "exists"},
        {3, E_FAIL, "symbolic link"},
        {1, S_OK, NULL},
    };
    const char *specs[4] = {kept, kept_overwrite, link, link_overwrite};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        IHostMemoryManager *inner = NULL, *m = NULL;
        assert_int_equal(HostMemCreateBuiltinManager("deterministic=1,backend=sim", &inner), S_OK);
        HRESULT hr = HostMemWrapRecorder(inner, specs[cases[i].which], &m);
        IHostMemoryManager_Release(inner);
        if (hr != cases[i].hr)
            fail_msg("case %zu: 0x%08x (%s)", i, (unsigned)hr, HostMemLastError());
        if (FAILED(hr)) {
            if (!strstr(HostMemLastError(), cases[i].error))
                fail_msg("case %zu: '%s'", i, HostMemLastError());
            size_t len;
            char *text = read_file(kept, &len);
            assert_string_equal(text, "precious");
            free(text);
            continue;
        }
        /* While it records, no second recorder may write the file, overwrite or not. */
        IHostMemoryManager *second = NULL;
        assert_int_equal(HostMemCreateBuiltinManager("deterministic=1,backend=sim", &inner), S_OK);
        assert_int_equal(HostMemWrapRecorder(inner, kept_overwrite, &second), E_FAIL);
        IHostMemoryManager_Release(inner);
        assert_non_null(strstr(HostMemLastError(), "another process is recording into it"));
        some_calls(m);
        IHostMemoryManager_Release(m);
        hm_trace *t;
        assert_int_equal(hm_trace_load(kept, &t), S_OK);
        assert_int_equal(t->count, SOME_CALLS);
        hm_trace_free(t);
    }
    /* %p: the process id; %%: a percent sign. */
    char spec[200], expect[200];
    snprintf(spec, sizeof spec, "%s/pid-%%p-%%%%.raw", tmp_dir());
    snprintf(expect, sizeof expect, "%s/pid-%ld-%%.raw", tmp_dir(), (long)getpid());
    IHostMemoryManager *m = recorded(spec);
    IHostMemoryManager_Release(m);
    struct stat st;
    if (stat(expect, &st) != 0)
        fail_msg("no trace at %s", expect);
}

/* A FIFO given as a trace to read is refused at once (it used to block the reader forever), and so is a
 * directory. The alarm turns a hang into a failure. */
static void test_reader_refuses_fifo(void **state)
{
    (void)state;
    const char *fifo = tmp_path("fifo.trace");
    assert_int_equal(mkfifo(fifo, 0600), 0);
    alarm(10);
    hm_trace_reader *r = NULL;
    assert_int_equal(hm_trace_open(fifo, &r), E_FAIL);
    assert_non_null(strstr(HostMemLastError(), "FIFO"));
    assert_int_equal(hm_trace_open(tmp_dir(), &r), E_FAIL);
    assert_non_null(strstr(HostMemLastError(), "directory"));
    hm_replay_result res;
    assert_int_equal(HostMemReplay(fifo, NULL, &res), E_FAIL);
    assert_non_null(strstr(res.error, "FIFO"));
    alarm(0);
}

/* ---- D: fork ---- */

/* A host without locks (so only the recorder's locks are at stake in a forked child): every VirtualAlloc gets a
 * fresh address, every call succeeds. */
typedef struct lockless_host {
    IHostMemoryManager iface;
    atomic_uintptr_t next;
} lockless_host;
static inline lockless_host *impl_from_IHostMemoryManager(IHostMemoryManager *iface)
{
    return HM_CONTAINER_OF(iface, lockless_host, iface);
}
static HRESULT STDMETHODCALLTYPE ll_qi(IHostMemoryManager *m, REFIID r, void **p)
{
    (void)m, (void)r;
    *p = NULL;
    return E_NOINTERFACE;
}
static ULONG STDMETHODCALLTYPE ll_ref(IHostMemoryManager *m)
{
    (void)m;
    return 1;
}
static HRESULT STDMETHODCALLTYPE ll_create_malloc(IHostMemoryManager *m, DWORD t, IHostMalloc **pp)
{
    (void)m, (void)t, (void)pp;
    return E_NOTIMPL;
}
static HRESULT STDMETHODCALLTYPE ll_alloc(IHostMemoryManager *m, void *a, SIZE_T s, DWORD t, DWORD p,
                                          EMemoryCriticalLevel l, void **pp)
{
    (void)a, (void)t, (void)p, (void)l;
    *pp = (void *)atomic_fetch_add(&impl_from_IHostMemoryManager(m)->next, (s + 0xffff) & ~(SIZE_T)0xffff);
    return S_OK;
}
static HRESULT STDMETHODCALLTYPE ll_free(IHostMemoryManager *m, void *a, SIZE_T s, DWORD t)
{
    (void)m, (void)a, (void)s, (void)t;
    return S_OK;
}
static HRESULT STDMETHODCALLTYPE ll_query(IHostMemoryManager *m, void *a, void *b, SIZE_T l, SIZE_T *r)
{
    (void)m, (void)a, (void)b, (void)l, (void)r;
    return E_NOTIMPL;
}
static HRESULT STDMETHODCALLTYPE ll_protect(IHostMemoryManager *m, void *a, SIZE_T s, DWORD p, DWORD *o)
{
    (void)m, (void)a, (void)s, (void)p, (void)o;
    return E_NOTIMPL;
}
static HRESULT STDMETHODCALLTYPE ll_load(IHostMemoryManager *m, DWORD *l, SIZE_T *a)
{
    (void)m;
    *l = 0;
    *a = 0;
    return S_OK;
}
static HRESULT STDMETHODCALLTYPE ll_register(IHostMemoryManager *m, ICLRMemoryNotificationCallback *c)
{
    (void)m, (void)c;
    return S_OK;
}
static HRESULT STDMETHODCALLTYPE ll_range(IHostMemoryManager *m, LPVOID a, SIZE_T s)
{
    (void)m, (void)a, (void)s;
    return S_OK;
}
static HRESULT STDMETHODCALLTYPE ll_released(IHostMemoryManager *m, LPVOID a)
{
    (void)m, (void)a;
    return S_OK;
}
static const IHostMemoryManagerVtbl lockless_vtbl = {
    ll_qi, ll_ref, ll_ref, ll_create_malloc, ll_alloc, ll_free, ll_query, ll_protect, ll_load, ll_register,
    ll_range, ll_range, ll_released,
};

enum { FORK_WORKERS = 3, WORKER_PAIRS = 3000, FORKS = 8, CHILD_PAIRS = 200 };

static void *fork_worker(void *arg)
{
    IHostMemoryManager *m = arg;
    for (int i = 0; i < WORKER_PAIRS; i++) {
        void *p = NULL;
        IHostMemoryManager_VirtualAlloc(m, NULL, PAGE, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p);
        IHostMemoryManager_VirtualFree(m, p, 0, MEM_RELEASE);
    }
    return NULL;
}

/* Threads record while the process forks: each child makes calls through the recorder (they go through,
 * unrecorded: the child must not write into its parent's trace), counts, records a trace of its own and exits,
 * all within the alarm (no lock held across fork). The parent's trace has exactly its own
 * calls and replays without divergence. */
static void test_fork_while_recording(void **state)
{
    (void)state;
    lockless_host host = {{&lockless_vtbl}, 0x10000000};
    const char *path = tmp_path("forked.raw");
    IHostMemoryManager *m = NULL;
    assert_int_equal(HostMemWrapRecorder(&host.iface, path, &m), S_OK);
    pthread_t th[FORK_WORKERS];
    for (int i = 0; i < FORK_WORKERS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, fork_worker, m), 0);
    char own_spec[200];
    snprintf(own_spec, sizeof own_spec, "%s/child-%%p.raw", tmp_dir());
    for (int f = 0; f < FORKS; f++) {
        usleep(2000);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            alarm(10);
            uint64_t before = HostMemRecorderCalls(m);
            for (int i = 0; i < CHILD_PAIRS; i++) {
                void *p = NULL;
                if (IHostMemoryManager_VirtualAlloc(m, NULL, PAGE, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
                                                    eTaskCritical, &p) != S_OK ||
                    IHostMemoryManager_VirtualFree(m, p, 0, MEM_RELEASE) != S_OK)
                    _exit(20);
            }
            if (HostMemRecorderCalls(m) != before)
                _exit(21); /* the child recorded into its parent's trace */
            IHostMemoryManager *own = NULL;
            if (FAILED(HostMemWrapRecorder(&host.iface, own_spec, &own)))
                _exit(22);
            void *p = NULL;
            IHostMemoryManager_VirtualAlloc(own, NULL, PAGE, MEM_RESERVE, PAGE_NOACCESS, eTaskCritical, &p);
            uint64_t own_calls = HostMemRecorderCalls(own);
            IHostMemoryManager_Release(own);
            /* m is not released here: freeing what the parent's threads were using when it forked is right in the
             * child (those threads do not exist there), but ThreadSanitizer reports it as a race with them; and the
             * child leaves by the system call, which ThreadSanitizer does not see (it would report the parent's
             * threads as leaked by the child). */
            syscall(SYS_exit_group, own_calls == 1 ? 0 : 23);
        }
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            fail_msg("fork %d: child status 0x%x%s", f, (unsigned)status,
                     WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM ? " (hung: a lock held across fork)" : "");
        char own[200];
        snprintf(own, sizeof own, "%s/child-%ld.raw", tmp_dir(), (long)pid);
        hm_trace *t;
        assert_int_equal(hm_trace_load(own, &t), S_OK);
        assert_int_equal(t->count, 1);
        hm_trace_free(t);
    }
    for (int i = 0; i < FORK_WORKERS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    assert_int_equal(HostMemRecorderCalls(m), FORK_WORKERS * WORKER_PAIRS * 2);
    IHostMemoryManager_Release(m);
    hm_trace *t;
    assert_int_equal(hm_trace_load(path, &t), S_OK);
    assert_int_equal(t->count, FORK_WORKERS * WORKER_PAIRS * 2);
    hm_replay_result res;
    assert_int_equal(HostMemReplayTrace(t, NULL, &res), S_OK);
    if (res.diverged)
        fail_msg("%s", res.report);
    hm_trace_free(t);
}

static int setup(void **state)
{
    (void)state;
    return tmp_dir_create("hostmem-test-files");
}

static int teardown(void **state)
{
    (void)state;
    return tmp_dir_remove();
}

int main(int argc, char **argv)
{
    if (argc > 1)
        cmocka_set_test_filter(argv[1]); /* one test by name, for timing */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_without_newline),
        cmocka_unit_test(test_every_truncation),
        cmocka_unit_test(test_full_disk_stops_cleanly),
        cmocka_unit_test(test_no_room_for_the_ring),
        cmocka_unit_test(test_existing_trace_kept),
        cmocka_unit_test(test_reader_refuses_fifo),
        cmocka_unit_test(test_fork_while_recording),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

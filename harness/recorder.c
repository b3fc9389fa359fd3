/* The recorder: a decorator that writes every call to a raw trace (trace_internal.h has the layout).
 *
 * Why a shared mapping: a record copied into a MAP_SHARED file mapping is in the page cache the moment the copy
 * ends, so it survives SIGKILL of the process (not a power cut) at the cost of a memcpy; one write(2) per call
 * would cost about a microsecond. The file grows in chunks that are mapped once and never move, so writers need
 * no lock: a call reserves its slots with one atomic add, fills them, and publishes them by storing the first
 * slot's commit word last. Slot order is the trace's order; the reader skips slots never committed.
 *
 * Ordering across threads: a call that ends something (VirtualFree, Free, ReleasedVirtualAddressSpace, a heap's
 * last Release) takes its slot before calling the host, every other call after the host returned. So when the
 * host hands an address freed by one thread to another, the free always comes first in the trace. */
#include "error.h"
#include "com.h"
#include "manager.h"
#include "trace_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* The file is mapped in chunks that double from 64 KiB (so a short trace, or one cut by a kill, is a small file)
 * up to 16 MiB, then stay at 16 MiB. */
#define FIRST_CHUNK_SLOTS ((uint64_t)1024)
#define GROWING_CHUNKS 9 /* 1024 << 8 slots = 16 MiB */
#define BIG_CHUNK_SLOTS (FIRST_CHUNK_SLOTS << (GROWING_CHUNKS - 1))
#define GROWING_SLOTS (FIRST_CHUNK_SLOTS * ((1u << GROWING_CHUNKS) - 1))
#define MAX_CHUNKS 65536 /* about 1 TiB of trace */

typedef struct recorder_log {
    atomic_uint refs;
    int fd;
    uint64_t serial;         /* tells this log's thread numbers apart from another log's in the thread cache */
    unsigned fork_generation;
    atomic_uint_fast64_t next_slot; /* file slot 0 is the header */
    atomic_uint next_thread;
    atomic_uint next_heap, next_callback;
    atomic_uint_fast64_t calls;
    pthread_mutex_t grow_lock;
    /* A helper thread maps and write-faults the next chunk before the writers reach it, so the page faults of a
     * shared file mapping (one per page, and block allocation on a disk file system) stay off the callers. */
    pthread_cond_t wake;
    pthread_t prefetcher;
    bool has_prefetcher, stop;
    size_t want_chunk; /* the chunk the helper should prepare, or SIZE_MAX */
    _Atomic(uint8_t *) chunks[MAX_CHUNKS];
    atomic_bool broken; /* a chunk could not be mapped (disk full): calls still go through, unrecorded */
} recorder_log;

typedef struct recorder {
    IHostMemoryManager iface;
    atomic_uint refs;
    IHostMemoryManager *inner;
    recorder_log *log;
} recorder;

typedef struct recorded_heap {
    IHostMalloc iface;
    atomic_uint refs;
    IHostMalloc *inner;
    recorder_log *log;
    uint32_t id;
} recorded_heap;

typedef struct recorded_callback {
    ICLRMemoryNotificationCallback iface;
    atomic_uint refs;
    ICLRMemoryNotificationCallback *inner;
    recorder_log *log;
    uint32_t id;
} recorded_callback;

/* ---- The log ------------------------------------------------------------------------------------------------ */
static atomic_uint_fast64_t log_serials;
static atomic_uint fork_generation;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* A forked child shares the file but not the slot counter: it must not write, or it would overwrite the
 * parent's records. Its calls go through unrecorded. */
static void after_fork_in_child(void) { atomic_fetch_add(&fork_generation, 1); }
static void install_atfork(void) { pthread_atfork(NULL, NULL, after_fork_in_child); }

/* Which chunk holds file slot s, the chunk's first slot and its size in slots. */
static inline size_t chunk_of(uint64_t s, uint64_t *first, uint64_t *slots)
{
    if (s < GROWING_SLOTS) {
        unsigned k = 63u - (unsigned)__builtin_clzll(s / FIRST_CHUNK_SLOTS + 1);
        *first = FIRST_CHUNK_SLOTS * ((1ull << k) - 1);
        *slots = FIRST_CHUNK_SLOTS << k;
        return k;
    }
    uint64_t k = (s - GROWING_SLOTS) / BIG_CHUNK_SLOTS;
    *first = GROWING_SLOTS + k * BIG_CHUNK_SLOTS;
    *slots = BIG_CHUNK_SLOTS;
    return (size_t)(GROWING_CHUNKS + k);
}

static size_t chunk_bytes(size_t chunk)
{
    return (size_t)((chunk < GROWING_CHUNKS ? FIRST_CHUNK_SLOTS << chunk : BIG_CHUNK_SLOTS) * HM_RAW_SLOT);
}

/* Maps a chunk (grow_lock held). touch: write-fault every page now. */
static uint8_t *map_chunk_locked(recorder_log *log, size_t chunk, bool touch)
{
    uint8_t *p = atomic_load(&log->chunks[chunk]);
    if (p || atomic_load(&log->broken))
        return p;
    uint64_t first = chunk < GROWING_CHUNKS ? FIRST_CHUNK_SLOTS * ((1ull << chunk) - 1)
                                            : GROWING_SLOTS + (chunk - GROWING_CHUNKS) * BIG_CHUNK_SLOTS;
    size_t bytes = chunk_bytes(chunk);
    if (ftruncate(log->fd, (off_t)(first * HM_RAW_SLOT + bytes)) == 0) {
        void *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, log->fd, (off_t)(first * HM_RAW_SLOT));
        if (m != MAP_FAILED)
            p = m;
    }
    if (!p) {
        atomic_store(&log->broken, true);
        return NULL;
    }
    if (touch) /* the pages hold zeros: writing zeros changes nothing but makes them present and writable */
        for (size_t off = 0; off < bytes; off += 4096)
            *(volatile uint8_t *)(p + off) = 0;
    atomic_store_explicit(&log->chunks[chunk], p, memory_order_release);
    return p;
}

static void *prefetch_main(void *arg)
{
    recorder_log *log = arg;
    pthread_mutex_lock(&log->grow_lock);
    while (!log->stop) {
        if (log->want_chunk == SIZE_MAX) {
            pthread_cond_wait(&log->wake, &log->grow_lock);
            continue;
        }
        size_t chunk = log->want_chunk;
        log->want_chunk = SIZE_MAX;
        if (chunk < MAX_CHUNKS)
            map_chunk_locked(log, chunk, true);
    }
    pthread_mutex_unlock(&log->grow_lock);
    return NULL;
}

/* A writer reached an unmapped chunk: map it (the helper was not quick enough) and ask for the next one. */
static uint8_t *map_chunk(recorder_log *log, size_t chunk)
{
    pthread_mutex_lock(&log->grow_lock);
    uint8_t *p = map_chunk_locked(log, chunk, false);
    if (log->has_prefetcher) {
        log->want_chunk = chunk + 1;
        pthread_cond_signal(&log->wake);
    }
    pthread_mutex_unlock(&log->grow_lock);
    return p;
}

static inline uint8_t *slot_address(recorder_log *log, uint64_t file_slot)
{
    uint64_t first, slots;
    size_t chunk = chunk_of(file_slot, &first, &slots);
    (void)slots;
    if (chunk >= MAX_CHUNKS)
        return NULL;
    uint8_t *p = atomic_load_explicit(&log->chunks[chunk], memory_order_acquire);
    if (__builtin_expect(!p, 0) && !(p = map_chunk(log, chunk)))
        return NULL;
    return p + (file_slot - first) * HM_RAW_SLOT;
}

static void log_release(recorder_log *log)
{
    if (atomic_fetch_sub(&log->refs, 1) != 1)
        return;
    bool same_process = atomic_load(&fork_generation) == log->fork_generation;
    if (log->has_prefetcher && same_process) { /* a forked child has no helper thread to join */
        pthread_mutex_lock(&log->grow_lock);
        log->stop = true;
        pthread_cond_signal(&log->wake);
        pthread_mutex_unlock(&log->grow_lock);
        pthread_join(log->prefetcher, NULL);
    }
    uint64_t slots = atomic_load(&log->next_slot);
    for (size_t i = 0; i < MAX_CHUNKS; i++) {
        uint8_t *p = atomic_load(&log->chunks[i]);
        if (p)
            munmap(p, chunk_bytes(i));
    }
    /* Cut the zeros of the last chunk: a trace closed properly is exactly its records long. */
    if (same_process && ftruncate(log->fd, (off_t)(slots * HM_RAW_SLOT)) != 0)
        (void)0; /* the reader treats trailing zeros as the end anyway */
    close(log->fd);
    pthread_cond_destroy(&log->wake);
    pthread_mutex_destroy(&log->grow_lock);
    free(log);
}

static recorder_log *log_open(const char *path)
{
    pthread_once(&atfork_once, install_atfork);
    recorder_log *log = calloc(1, sizeof *log);
    if (!log) {
        hm_set_error("out of memory creating the recorder");
        return NULL;
    }
    log->fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (log->fd < 0) {
        hm_set_error("cannot create trace '%s': %s", path, strerror(errno));
        free(log);
        return NULL;
    }
    pthread_mutex_init(&log->grow_lock, NULL);
    pthread_cond_init(&log->wake, NULL);
    log->want_chunk = 1;
    atomic_init(&log->refs, 1);
    atomic_init(&log->next_slot, 1);
    log->serial = atomic_fetch_add(&log_serials, 1) + 1;
    log->fork_generation = atomic_load(&fork_generation);
    uint8_t *header = slot_address(log, 0);
    if (!header) {
        hm_set_error("cannot map trace '%s': %s", path, strerror(errno));
        log_release(log);
        return NULL;
    }
    memcpy(header, HM_TRACE_RAW_MAGIC, strlen(HM_TRACE_RAW_MAGIC));
    /* Without the helper (no threads left?) writers map chunks themselves: slower, not wrong. */
    log->has_prefetcher = pthread_create(&log->prefetcher, NULL, prefetch_main, log) == 0;
    return log;
}

/* This thread's number in the log: 1, 2, ... in order of first call. A small per-thread cache covers a thread
 * that uses a few recorders in turn. */
static uint32_t thread_id(recorder_log *log)
{
    static _Thread_local struct {
        uint64_t serial;
        uint32_t id;
    } cache[4];
    static _Thread_local unsigned next_victim;
    for (int i = 0; i < 4; i++)
        if (cache[i].serial == log->serial)
            return cache[i].id;
    unsigned v = next_victim++ & 3;
    cache[v].serial = log->serial;
    cache[v].id = atomic_fetch_add(&log->next_thread, 1) + 1;
    return cache[v].id;
}

static inline bool log_enabled(recorder_log *log)
{
    return atomic_load_explicit(&fork_generation, memory_order_relaxed) == log->fork_generation;
}

/* Reserves the slots of one call: returns the first record slot (0-based, file slot - 1). */
static inline uint64_t reserve(recorder_log *log, unsigned nslots)
{
    return atomic_fetch_add_explicit(&log->next_slot, nslots, memory_order_relaxed) - 1;
}

/* Copies rec (and the extra slots) into the reserved slots, then publishes the call. */
static void commit(recorder_log *log, uint64_t slot, hm_raw_record *rec, const void *extra, size_t extra_len)
{
    uint8_t *first = slot_address(log, slot + 1);
    if (!first)
        return;
    rec->thread = thread_id(log);
    rec->commit = 0;
    memcpy(first, rec, sizeof *rec);
    for (unsigned i = 1; i < rec->nslots; i++) {
        uint8_t *p = slot_address(log, slot + 1 + i);
        if (!p)
            return; /* never committed: the reader skips it */
        size_t off = (size_t)(i - 1) * HM_RAW_SLOT;
        size_t n = extra_len > off ? extra_len - off : 0;
        memcpy(p, (const uint8_t *)extra + off, n > HM_RAW_SLOT ? HM_RAW_SLOT : n);
    }
    atomic_store_explicit((_Atomic uint64_t *)(void *)first, HM_RAW_COMMIT_TAG | ((slot + 1) & HM_RAW_COMMIT_MASK),
                          memory_order_release);
    atomic_fetch_add_explicit(&log->calls, 1, memory_order_relaxed);
}

static inline void record_simple(recorder_log *log, hm_raw_record *rec)
{
    rec->nslots = 1;
    commit(log, reserve(log, 1), rec, NULL, 0);
}

static inline hm_raw_record record_start(int method, HRESULT hr)
{
    hm_raw_record rec;
    memset(&rec, 0, sizeof rec);
    rec.method = (uint8_t)method;
    rec.level = HM_RAW_NO_LEVEL;
    rec.result = hr;
    return rec;
}

/* ---- Callbacks ---------------------------------------------------------------------------------------------- */
static recorded_callback *callback_of(ICLRMemoryNotificationCallback *iface)
{
    return HM_CONTAINER_OF(iface, recorded_callback, iface);
}

static HRESULT STDMETHODCALLTYPE callback_QueryInterface(ICLRMemoryNotificationCallback *iface, REFIID riid, void **ppv)
{
    return hm_com_query(iface, &IID_ICLRMemoryNotificationCallback, riid, ppv);
}

static ULONG STDMETHODCALLTYPE callback_AddRef(ICLRMemoryNotificationCallback *iface)
{
    return atomic_fetch_add(&callback_of(iface)->refs, 1) + 1;
}

static ULONG STDMETHODCALLTYPE callback_Release(ICLRMemoryNotificationCallback *iface)
{
    recorded_callback *cb = callback_of(iface);
    ULONG refs = atomic_fetch_sub(&cb->refs, 1) - 1;
    if (refs == 0) {
        ICLRMemoryNotificationCallback_Release(cb->inner);
        log_release(cb->log);
        free(cb);
    }
    return refs;
}

static HRESULT STDMETHODCALLTYPE callback_OnMemoryNotification(ICLRMemoryNotificationCallback *iface,
                                                               EMemoryAvailable available)
{
    recorded_callback *cb = callback_of(iface);
    HRESULT hr = ICLRMemoryNotificationCallback_OnMemoryNotification(cb->inner, available);
    if (log_enabled(cb->log)) {
        hm_raw_record rec = record_start(HM_TRACE_ON_NOTIFICATION, hr);
        rec.id = cb->id;
        rec.a32 = (uint32_t)available;
        record_simple(cb->log, &rec);
    }
    return hr;
}

static const ICLRMemoryNotificationCallbackVtbl callback_vtbl = {
    callback_QueryInterface,
    callback_AddRef,
    callback_Release,
    callback_OnMemoryNotification,
};

/* ---- Heaps -------------------------------------------------------------------------------------------------- */
static recorded_heap *heap_of(IHostMalloc *iface) { return HM_CONTAINER_OF(iface, recorded_heap, iface); }

static HRESULT STDMETHODCALLTYPE heap_QueryInterface(IHostMalloc *iface, REFIID riid, void **ppv)
{
    return hm_com_query(iface, &IID_IHostMalloc, riid, ppv);
}

static ULONG STDMETHODCALLTYPE heap_AddRef(IHostMalloc *iface) { return atomic_fetch_add(&heap_of(iface)->refs, 1) + 1; }

static ULONG STDMETHODCALLTYPE heap_Release(IHostMalloc *iface)
{
    recorded_heap *heap = heap_of(iface);
    ULONG refs = atomic_fetch_sub(&heap->refs, 1) - 1;
    if (refs == 0) {
        if (log_enabled(heap->log)) {
            uint64_t slot = reserve(heap->log, 1); /* before: the heap's memory may be reused at once */
            IHostMalloc_Release(heap->inner);
            hm_raw_record rec = record_start(HM_TRACE_HEAP_RELEASE, S_OK);
            rec.id = heap->id;
            rec.nslots = 1;
            commit(heap->log, slot, &rec, NULL, 0);
        } else {
            IHostMalloc_Release(heap->inner);
        }
        log_release(heap->log);
        free(heap);
    }
    return refs;
}

static HRESULT STDMETHODCALLTYPE heap_Alloc(IHostMalloc *iface, SIZE_T size, EMemoryCriticalLevel level, void **ppMem)
{
    recorded_heap *heap = heap_of(iface);
    HRESULT hr = IHostMalloc_Alloc(heap->inner, size, level, ppMem);
    if (log_enabled(heap->log)) {
        hm_raw_record rec = record_start(HM_METHOD_HEAP_ALLOC, hr);
        rec.id = heap->id;
        rec.size = size;
        rec.level = (uint8_t)level;
        if (ppMem)
            rec.out = (uint64_t)(uintptr_t)*ppMem;
        else
            rec.nulls = HM_TRACE_NULL_OUT1;
        record_simple(heap->log, &rec);
    }
    return hr;
}

static HRESULT STDMETHODCALLTYPE heap_DebugAlloc(IHostMalloc *iface, SIZE_T size, EMemoryCriticalLevel level,
                                                 char *file, int line, void **ppMem)
{
    recorded_heap *heap = heap_of(iface);
    HRESULT hr = IHostMalloc_DebugAlloc(heap->inner, size, level, file, line, ppMem);
    if (log_enabled(heap->log)) {
        hm_raw_record rec = record_start(HM_METHOD_HEAP_DEBUG_ALLOC, hr);
        rec.id = heap->id;
        rec.size = size;
        rec.level = (uint8_t)level;
        rec.a32 = (uint32_t)line;
        if (ppMem)
            rec.out = (uint64_t)(uintptr_t)*ppMem;
        else
            rec.nulls = HM_TRACE_NULL_OUT1;
        size_t flen = 0;
        if (file) {
            flen = strnlen(file, HM_TRACE_FILE_MAX - 1) + 1; /* with its NUL (names longer are cut) */
            rec.flags |= HM_RAW_HAS_FILE;
        }
        char name[HM_TRACE_FILE_MAX];
        if (file) {
            memcpy(name, file, flen - 1);
            name[flen - 1] = '\0';
        }
        rec.nslots = (uint8_t)(1 + (flen + HM_RAW_SLOT - 1) / HM_RAW_SLOT);
        commit(heap->log, reserve(heap->log, rec.nslots), &rec, name, flen);
    }
    return hr;
}

static HRESULT STDMETHODCALLTYPE heap_Free(IHostMalloc *iface, void *mem)
{
    recorded_heap *heap = heap_of(iface);
    if (!log_enabled(heap->log))
        return IHostMalloc_Free(heap->inner, mem);
    uint64_t slot = reserve(heap->log, 1);
    HRESULT hr = IHostMalloc_Free(heap->inner, mem);
    hm_raw_record rec = record_start(HM_METHOD_HEAP_FREE, hr);
    rec.id = heap->id;
    rec.addr = (uint64_t)(uintptr_t)mem;
    rec.nslots = 1;
    commit(heap->log, slot, &rec, NULL, 0);
    return hr;
}

static const IHostMallocVtbl heap_vtbl = {
    heap_QueryInterface, heap_AddRef, heap_Release, heap_Alloc, heap_DebugAlloc, heap_Free,
};

/* ---- The manager -------------------------------------------------------------------------------------------- */
static recorder *recorder_of(IHostMemoryManager *iface) { return HM_CONTAINER_OF(iface, recorder, iface); }

static HRESULT STDMETHODCALLTYPE rec_QueryInterface(IHostMemoryManager *iface, REFIID riid, void **ppv)
{
    return hm_com_query(iface, &IID_IHostMemoryManager, riid, ppv);
}

static ULONG STDMETHODCALLTYPE rec_AddRef(IHostMemoryManager *iface)
{
    return atomic_fetch_add(&recorder_of(iface)->refs, 1) + 1;
}

static ULONG STDMETHODCALLTYPE rec_Release(IHostMemoryManager *iface)
{
    recorder *r = recorder_of(iface);
    ULONG refs = atomic_fetch_sub(&r->refs, 1) - 1;
    if (refs == 0) {
        IHostMemoryManager_Release(r->inner); /* releases callbacks it holds, which release the log */
        log_release(r->log);
        free(r);
    }
    return refs;
}

static HRESULT STDMETHODCALLTYPE rec_CreateMalloc(IHostMemoryManager *iface, DWORD type, IHostMalloc **ppMalloc)
{
    recorder *r = recorder_of(iface);
    HRESULT hr = IHostMemoryManager_CreateMalloc(r->inner, type, ppMalloc);
    uint32_t id = 0;
    if (SUCCEEDED(hr) && ppMalloc && *ppMalloc) {
        recorded_heap *heap = malloc(sizeof *heap);
        if (!heap) {
            IHostMalloc_Release(*ppMalloc);
            *ppMalloc = NULL;
            hr = E_OUTOFMEMORY;
        } else {
            heap->iface.lpVtbl = &heap_vtbl;
            atomic_init(&heap->refs, 1);
            heap->inner = *ppMalloc;
            heap->log = r->log;
            atomic_fetch_add(&r->log->refs, 1);
            heap->id = id = atomic_fetch_add(&r->log->next_heap, 1) + 1;
            *ppMalloc = &heap->iface;
        }
    }
    if (log_enabled(r->log)) {
        hm_raw_record rec = record_start(HM_METHOD_CREATE_MALLOC, hr);
        rec.a32 = type;
        rec.id = id;
        if (!ppMalloc)
            rec.nulls = HM_TRACE_NULL_OUT1;
        record_simple(r->log, &rec);
    }
    return hr;
}

static HRESULT STDMETHODCALLTYPE rec_VirtualAlloc(IHostMemoryManager *iface, void *addr, SIZE_T size, DWORD type,
                                                  DWORD prot, EMemoryCriticalLevel level, void **ppMem)
{
    recorder *r = recorder_of(iface);
    HRESULT hr = IHostMemoryManager_VirtualAlloc(r->inner, addr, size, type, prot, level, ppMem);
    if (log_enabled(r->log)) {
        hm_raw_record rec = record_start(HM_METHOD_VIRTUAL_ALLOC, hr);
        rec.addr = (uint64_t)(uintptr_t)addr;
        rec.size = size;
        rec.a32 = type;
        rec.b32 = prot;
        rec.level = (uint8_t)level;
        if (ppMem)
            rec.out = (uint64_t)(uintptr_t)*ppMem;
        else
            rec.nulls = HM_TRACE_NULL_OUT1;
        record_simple(r->log, &rec);
    }
    return hr;
}

static HRESULT STDMETHODCALLTYPE rec_VirtualFree(IHostMemoryManager *iface, LPVOID addr, SIZE_T size, DWORD type)
{
    recorder *r = recorder_of(iface);
    if (!log_enabled(r->log))
        return IHostMemoryManager_VirtualFree(r->inner, addr, size, type);
    uint64_t slot = reserve(r->log, 1);
    HRESULT hr = IHostMemoryManager_VirtualFree(r->inner, addr, size, type);
    hm_raw_record rec = record_start(HM_METHOD_VIRTUAL_FREE, hr);
    rec.addr = (uint64_t)(uintptr_t)addr;
    rec.size = size;
    rec.a32 = type;
    rec.nslots = 1;
    commit(r->log, slot, &rec, NULL, 0);
    return hr;
}

static HRESULT STDMETHODCALLTYPE rec_VirtualQuery(IHostMemoryManager *iface, void *addr, void *buffer, SIZE_T length,
                                                  SIZE_T *pResult)
{
    recorder *r = recorder_of(iface);
    HRESULT hr = IHostMemoryManager_VirtualQuery(r->inner, addr, buffer, length, pResult);
    if (log_enabled(r->log)) {
        hm_raw_record rec = record_start(HM_METHOD_VIRTUAL_QUERY, hr);
        rec.addr = (uint64_t)(uintptr_t)addr;
        rec.size = length;
        rec.nulls = (buffer ? 0 : HM_TRACE_NULL_OUT1) | (pResult ? 0 : HM_TRACE_NULL_OUT2);
        if (pResult)
            rec.out = *pResult;
        bool mbi = SUCCEEDED(hr) && buffer && length >= sizeof(MEMORY_BASIC_INFORMATION);
        rec.nslots = mbi ? 2 : 1;
        if (mbi)
            rec.flags |= HM_RAW_HAS_MBI;
        commit(r->log, reserve(r->log, rec.nslots), &rec, buffer, mbi ? sizeof(MEMORY_BASIC_INFORMATION) : 0);
    }
    return hr;
}

static HRESULT STDMETHODCALLTYPE rec_VirtualProtect(IHostMemoryManager *iface, void *addr, SIZE_T size, DWORD prot,
                                                    DWORD *pOld)
{
    recorder *r = recorder_of(iface);
    HRESULT hr = IHostMemoryManager_VirtualProtect(r->inner, addr, size, prot, pOld);
    if (log_enabled(r->log)) {
        hm_raw_record rec = record_start(HM_METHOD_VIRTUAL_PROTECT, hr);
        rec.addr = (uint64_t)(uintptr_t)addr;
        rec.size = size;
        rec.b32 = prot;
        if (pOld)
            rec.out = *pOld;
        else
            rec.nulls = HM_TRACE_NULL_OUT1;
        record_simple(r->log, &rec);
    }
    return hr;
}

static HRESULT STDMETHODCALLTYPE rec_GetMemoryLoad(IHostMemoryManager *iface, DWORD *pLoad, SIZE_T *pAvailable)
{
    recorder *r = recorder_of(iface);
    HRESULT hr = IHostMemoryManager_GetMemoryLoad(r->inner, pLoad, pAvailable);
    if (log_enabled(r->log)) {
        hm_raw_record rec = record_start(HM_METHOD_GET_MEMORY_LOAD, hr);
        rec.nulls = (pLoad ? 0 : HM_TRACE_NULL_OUT1) | (pAvailable ? 0 : HM_TRACE_NULL_OUT2);
        if (pLoad)
            rec.b32 = *pLoad;
        if (pAvailable)
            rec.out = *pAvailable;
        record_simple(r->log, &rec);
    }
    return hr;
}

static HRESULT STDMETHODCALLTYPE rec_RegisterMemoryNotificationCallback(IHostMemoryManager *iface,
                                                                        ICLRMemoryNotificationCallback *callback)
{
    recorder *r = recorder_of(iface);
    recorded_callback *wrapper = NULL;
    if (callback) {
        wrapper = malloc(sizeof *wrapper);
        if (!wrapper)
            return E_OUTOFMEMORY;
        wrapper->iface.lpVtbl = &callback_vtbl;
        atomic_init(&wrapper->refs, 1);
        wrapper->inner = callback;
        ICLRMemoryNotificationCallback_AddRef(callback);
        wrapper->log = r->log;
        atomic_fetch_add(&r->log->refs, 1);
        wrapper->id = atomic_fetch_add(&r->log->next_callback, 1) + 1;
    }
    HRESULT hr = IHostMemoryManager_RegisterMemoryNotificationCallback(r->inner, wrapper ? &wrapper->iface : NULL);
    uint32_t id = wrapper ? wrapper->id : 0;
    if (wrapper)
        callback_Release(&wrapper->iface); /* the host holds its own reference when it kept it */
    if (log_enabled(r->log)) {
        hm_raw_record rec = record_start(HM_METHOD_REGISTER_CALLBACK, hr);
        rec.id = id;
        record_simple(r->log, &rec);
    }
    return hr;
}

static HRESULT record_range(recorder *r, int method, HRESULT hr, LPVOID start, SIZE_T size)
{
    hm_raw_record rec = record_start(method, hr);
    rec.addr = (uint64_t)(uintptr_t)start;
    rec.size = size;
    record_simple(r->log, &rec);
    return hr;
}

static HRESULT STDMETHODCALLTYPE rec_NeedsVirtualAddressSpace(IHostMemoryManager *iface, LPVOID start, SIZE_T size)
{
    recorder *r = recorder_of(iface);
    HRESULT hr = IHostMemoryManager_NeedsVirtualAddressSpace(r->inner, start, size);
    return log_enabled(r->log) ? record_range(r, HM_METHOD_NEEDS_VAS, hr, start, size) : hr;
}

static HRESULT STDMETHODCALLTYPE rec_AcquiredVirtualAddressSpace(IHostMemoryManager *iface, LPVOID start, SIZE_T size)
{
    recorder *r = recorder_of(iface);
    HRESULT hr = IHostMemoryManager_AcquiredVirtualAddressSpace(r->inner, start, size);
    return log_enabled(r->log) ? record_range(r, HM_METHOD_ACQUIRED_VAS, hr, start, size) : hr;
}

static HRESULT STDMETHODCALLTYPE rec_ReleasedVirtualAddressSpace(IHostMemoryManager *iface, LPVOID start)
{
    recorder *r = recorder_of(iface);
    if (!log_enabled(r->log))
        return IHostMemoryManager_ReleasedVirtualAddressSpace(r->inner, start);
    uint64_t slot = reserve(r->log, 1);
    HRESULT hr = IHostMemoryManager_ReleasedVirtualAddressSpace(r->inner, start);
    hm_raw_record rec = record_start(HM_METHOD_RELEASED_VAS, hr);
    rec.addr = (uint64_t)(uintptr_t)start;
    rec.nslots = 1;
    commit(r->log, slot, &rec, NULL, 0);
    return hr;
}

static const IHostMemoryManagerVtbl recorder_vtbl = {
    rec_QueryInterface,
    rec_AddRef,
    rec_Release,
    rec_CreateMalloc,
    rec_VirtualAlloc,
    rec_VirtualFree,
    rec_VirtualQuery,
    rec_VirtualProtect,
    rec_GetMemoryLoad,
    rec_RegisterMemoryNotificationCallback,
    rec_NeedsVirtualAddressSpace,
    rec_AcquiredVirtualAddressSpace,
    rec_ReleasedVirtualAddressSpace,
};

HM_API IHostMemoryManager *HostMemRecorderInner(IHostMemoryManager *outer)
{
    return outer && outer->lpVtbl == &recorder_vtbl ? recorder_of(outer)->inner : NULL;
}

HM_API uint64_t HostMemRecorderCalls(IHostMemoryManager *outer)
{
    return outer && outer->lpVtbl == &recorder_vtbl ? atomic_load(&recorder_of(outer)->log->calls) : 0;
}

HM_API HRESULT HostMemWrapRecorder(IHostMemoryManager *inner, const char *path, IHostMemoryManager **ppOuter)
{
    if (!ppOuter)
        return E_POINTER;
    *ppOuter = NULL;
    if (!inner || !path || !*path) {
        hm_set_error("HostMemWrapRecorder needs a manager and a trace path");
        return E_INVALIDARG;
    }
    hm_decorator_register(&recorder_vtbl, HostMemRecorderInner);
    recorder *r = malloc(sizeof *r);
    if (!r) {
        hm_set_error("out of memory creating the recorder");
        return E_OUTOFMEMORY;
    }
    r->log = log_open(path);
    if (!r->log) {
        free(r);
        return E_FAIL;
    }
    r->iface.lpVtbl = &recorder_vtbl;
    atomic_init(&r->refs, 1);
    r->inner = inner;
    IHostMemoryManager_AddRef(inner);
    *ppOuter = &r->iface;
    return S_OK;
}

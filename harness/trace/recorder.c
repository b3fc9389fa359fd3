/* The recorder: a decorator that writes every call to a raw trace (trace_internal.h has the layout).
 *
 * Why a shared mapping: a record copied into a MAP_SHARED file mapping (a view from MapViewOfFile on Windows; the
 * file operations are trace_file.h's) is in the page cache the moment the copy ends, so it survives SIGKILL or
 * TerminateProcess of the process (not a power cut) at the cost of a memcpy; one write(2) per call
 * would cost about a microsecond. The mapping is a ring near the start of the file, mapped once (see the log
 * below), so writers need no lock: a call reserves its slots with one atomic add, fills them, and publishes them
 * by storing the first slot's commit word last. Slot order is the trace's order; the reader skips slots never
 * committed.
 *
 * Ordering across threads: the trace's order must be one in which the calls' effects happened, or a replay blames a
 * correct host. Three rules give that:
 *  - the calls that change the address space (VirtualAlloc, VirtualFree, VirtualProtect and the three
 *    *VirtualAddressSpace calls) run one at a time, each with its record, under the log's space lock: their order
 *    in the trace is the host's order, also among threads working on one reservation;
 *  - a call that ends something (VirtualFree, Free, ReleasedVirtualAddressSpace, a heap's last Release) takes its
 *    slot before calling the host, and so does RegisterMemoryNotificationCallback (the host may notify the new
 *    callback before the call returns); every other call takes it after the host returned. So when the host hands an address
 *    one thread freed to another (a region, a heap block, or a heap's memory reused for a region), the free
 *    comes first; heap calls need no lock for that;
 *  - a VirtualQuery does not take the lock (it must stay cheap): it reads the space epoch (odd while a locked
 *    call is in progress) before calling the host and after taking its slot, and when a locked call overlapped
 *    it, its record says so (HM_RAW_CONCURRENT) and replay does not compare its answer, which may describe the
 *    state before or after that call. */
#include "trace_internal.h"

#include "fork.h"
#include "trace_file.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The log: a ring of HM_RAW_RING_SLOTS slots mapped once, near the start of the file, takes every record; every
 * COPY_BATCH slots the call that fills them copies the committed records, in order, to their place after the
 * ring with a positioned write (pwrite(2), WriteFile; one thread at a time: the others go on), and a ring slot is reused once its record was
 * copied. Why not map the whole file: the first touch of each fresh page of a shared file mapping costs
 * microseconds (page-cache allocation, and on virtual machines the page-table work), far more than the records on
 * it; the ring's pages stay mapped and hot, and pwrite fills the page cache for a fraction of that, while the
 * records are still in the writer's cache. A record is in the page cache, in the ring or in its place, from the
 * moment it is committed, so a SIGKILL still loses only the calls in flight. When the ring is full (a call in
 * flight holds back the copying) a writer writes its record to its place itself. */
#define RING_SLOTS ((uint64_t)HM_RAW_RING_SLOTS)
/* Where the records start without the environment block (each log adds its block's size: log->main_offset). */
#define MAIN_OFFSET ((int64_t)HM_RAW_HEADER + (int64_t)HM_RAW_RING_SLOTS * HM_RAW_SLOT)
#define COPY_BATCH 1024 /* a writer copies every this many slots, at most this many per pwrite */

typedef struct recorder_log {
    atomic_uint refs;
    hm_trace_file *file;
    char *path;
    hm_fork_entry fork_entry; /* copy_lock across fork() */
    atomic_bool forked;       /* this is a forked child's copy of the log: it must not write */
    uint64_t serial;          /* tells this log's thread numbers apart from another log's in the thread cache */
    atomic_uint next_thread;
    atomic_uint next_heap, next_callback;
    uint8_t *map;  /* header + ring */
    uint8_t *ring; /* map + HM_RAW_HEADER + env_size */
    size_t env_size;     /* the environment block between the header and the ring (a multiple of HM_RAW_SLOT) */
    int64_t main_offset; /* where record slot 0 is: MAIN_OFFSET + env_size */
    pthread_mutex_t copy_lock; /* one thread copies at a time */
    /* The file could not be written (disk full): calls still go through, unrecorded; the header says the trace
     * ends after the calls in their place (log_stop). */
    atomic_bool broken;
    int64_t max_size; /* ",max=SIZE": recording stops (as on a full disk) rather than grow the file past it; 0: none */
    pthread_mutex_t space_lock; /* held by a call that changes the address space, with its record */
    /* Written by every call: a line of its own. */
    _Alignas(64) atomic_uint_fast64_t next_slot; /* records reserved so far (0-based record slots) */
    atomic_uint_fast64_t space_epoch; /* 2 per locked call: odd while one is in progress (queries read it) */
    atomic_uint_fast64_t calls;
    /* Written by the copying thread, read by every call. */
    _Alignas(64) atomic_uint_fast64_t copied; /* records [0, copied) are in their place */
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

/* fork(): a forked child shares the file but not the slot counter: it must not write, or it would overwrite the
 * parent's records, so its calls go through unrecorded (it may record to a trace of its own: a new recorder).
 * The copy lock is taken around fork() (src/fork.h) so that no copy is half done in the child's image and the lock
 * the child inherits is free. */
static void fork_lock(void *obj) { pthread_mutex_lock(&((recorder_log *)obj)->copy_lock); }
static void fork_unlock(void *obj) { pthread_mutex_unlock(&((recorder_log *)obj)->copy_lock); }
static void fork_child(void *obj)
{
    recorder_log *log = obj;
    atomic_store(&log->forked, true);
    pthread_mutex_unlock(&log->copy_lock);
}
static inline bool log_enabled(recorder_log *log) { return !atomic_load_explicit(&log->forked, memory_order_relaxed); }

static inline uint64_t commit_word(uint64_t slot) { return HM_RAW_COMMIT_TAG | ((slot + 1) & HM_RAW_COMMIT_MASK); }
#define main_offset(slot) (log->main_offset + (int64_t)(slot) * HM_RAW_SLOT) /* in a function with `log` */
static inline uint8_t *ring_slot(recorder_log *log, uint64_t slot)
{
    return log->ring + (size_t)(slot & (RING_SLOTS - 1)) * HM_RAW_SLOT;
}

/* Writes buf at offset within the log's ",max=SIZE": 0, or the errno value of the failure (ENOSPC: the file system
 * is full; EFBIG: past max). */
static int write_record(recorder_log *log, const void *buf, size_t len, int64_t offset)
{
    if (log->max_size && offset + (int64_t)len > log->max_size)
        return EFBIG;
    return hm__trace_file_write(log->file, buf, len, (uint64_t)offset);
}

/* The trace cannot be written (err: the failed write's errno): recording stops here, cleanly. The trace is the
 * calls already in their place, in order; the header says so (the reader ends there and reports why) and stderr
 * tells the user. The program goes on, unrecorded. copy_lock held. */
static void log_stop(recorder_log *log, int err)
{
    if (atomic_exchange(&log->broken, true))
        return;
    uint64_t calls = atomic_load(&log->calls);
    int32_t e = err;
    uint32_t stopped = HM_RAW_STOPPED;
    /* The header is in the mapping, whose blocks were reserved when the trace was created: this cannot fail. */
    memcpy(log->map + HM_RAW_STOPPED_CALLS_FIELD, &calls, sizeof calls);
    memcpy(log->map + HM_RAW_STOPPED_ERRNO_FIELD, &e, sizeof e);
    atomic_store_explicit((_Atomic uint32_t *)(void *)(log->map + HM_RAW_STOPPED_FIELD), stopped,
                          memory_order_release);
    if (err == EFBIG && log->max_size)
        fprintf(stderr,
                "hostmem: recording to '%s' stopped after %" PRIu64 " calls: the trace reached its max=%lld bytes. "
                "The program goes on unrecorded; the trace holds those calls and says it is incomplete.\n",
                log->path, calls, (long long)log->max_size);
    else
        fprintf(stderr,
                "hostmem: recording to '%s' stopped after %" PRIu64 " calls: writing the trace failed: %s. The "
                "program goes on unrecorded; the trace holds those %" PRIu64 " calls and says it is incomplete.\n",
                log->path, calls, strerror(err), calls);
}

/* The slots a committed call's first slot says it takes (1 when the count is out of range). */
static inline unsigned call_slots(const uint8_t *first)
{
    unsigned n = first[offsetof(hm_raw_record, nslots)];
    return n >= 1 && n <= 4 ? n : 1;
}

/* Publishes that the calls before slot c (calls of them) are in their place. */
static inline void mark_copied(recorder_log *log, uint64_t c, uint64_t calls)
{
    atomic_store_explicit(&log->calls, calls, memory_order_relaxed);
    atomic_store_explicit(&log->copied, c, memory_order_release);
}

/* Copies the committed records from `copied` up to `reserved` to their place, in order, stopping at a call in
 * flight, and counts them. Returns how many slots it moved past. copy_lock held. */
static uint64_t copy_out(recorder_log *log, uint64_t reserved)
{
    uint64_t from = atomic_load_explicit(&log->copied, memory_order_relaxed), c = from;
    uint64_t calls = atomic_load_explicit(&log->calls, memory_order_relaxed);
    while (c < reserved && !atomic_load_explicit(&log->broken, memory_order_relaxed)) {
        /* The committed calls from c on, contiguous in the ring (not across its end), up to a batch. */
        uint64_t end = c;
        while (end < reserved && end - c < COPY_BATCH && (end == c || (end & (RING_SLOTS - 1)))) {
            const uint8_t *p = ring_slot(log, end);
            uint64_t word = atomic_load_explicit((_Atomic uint64_t *)(const void *)p, memory_order_acquire);
            if (word != commit_word(end))
                break;
            unsigned n = p[offsetof(hm_raw_record, nslots)];
            if (n < 1 || n > 4 || ((end + n - 1) & (RING_SLOTS - 1)) < (end & (RING_SLOTS - 1)))
                break; /* wraps: the next round copies it by itself */
            end += n;
            calls++;
        }
        if (end == c) {
            const uint8_t *p = ring_slot(log, c);
            uint64_t word = atomic_load_explicit((_Atomic uint64_t *)(const void *)p, memory_order_acquire);
            if (word == commit_word(c)) { /* a call whose slots wrap around the ring's end */
                unsigned n = call_slots(p);
                size_t head = (size_t)(RING_SLOTS - (c & (RING_SLOTS - 1)));
                if (head > n)
                    head = n;
                int err = write_record(log, p, head * HM_RAW_SLOT, main_offset(c));
                if (!err && n > head)
                    err = write_record(log, log->ring, (n - head) * HM_RAW_SLOT, main_offset(c + head));
                if (err) {
                    log_stop(log, err);
                    break;
                }
                c += n;
                mark_copied(log, c, ++calls);
                continue;
            }
            /* Not in the ring: written to its place by its writer (the ring was full), or still in flight. */
            uint8_t rec[HM_RAW_SLOT];
            if (hm__trace_file_read(log->file, rec, sizeof rec, (uint64_t)main_offset(c)) == 0) {
                uint64_t w;
                memcpy(&w, rec, sizeof w);
                if (w == commit_word(c)) {
                    c += call_slots(rec);
                    mark_copied(log, c, ++calls);
                    continue;
                }
            }
            break; /* in flight */
        }
        int err = write_record(log, ring_slot(log, c), (size_t)(end - c) * HM_RAW_SLOT, main_offset(c));
        if (err) {
            log_stop(log, err);
            break;
        }
        c = end;
        mark_copied(log, c, calls);
    }
    return c - from;
}

/* Copies what is committed, if no other thread is copying (try) or waiting for the copy to be done. */
static void copy_pending(recorder_log *log, bool wait)
{
    if (wait)
        pthread_mutex_lock(&log->copy_lock);
    else if (pthread_mutex_trylock(&log->copy_lock) != 0)
        return;
    copy_out(log, atomic_load(&log->next_slot));
    pthread_mutex_unlock(&log->copy_lock);
}

static void log_release(recorder_log *log)
{
    if (atomic_fetch_sub(&log->refs, 1) != 1)
        return;
    hm__fork_unregister(&log->fork_entry);
    int64_t size = -1; /* a forked child must not write */
    if (log_enabled(log)) {
        /* Every call has returned: copy what is left, then empty the ring (a hole where the file system can). A
         * stopped log ends with the calls in their place (log_stop): the ring's are not the trace's. */
        uint64_t reserved = atomic_load(&log->next_slot);
        copy_pending(log, true);
        bool broken = atomic_load(&log->broken);
        if (broken || atomic_load(&log->copied) == reserved)
            hm__trace_file_zero_mapped(log->file, HM_RAW_HEADER + log->env_size, (size_t)RING_SLOTS * HM_RAW_SLOT);
        /* A trace closed properly is exactly its records long. */
        size = main_offset(broken ? atomic_load(&log->copied) : reserved);
    }
    hm__trace_file_close(log->file, size);
    pthread_mutex_destroy(&log->copy_lock);
    free(log->path);
    pthread_mutex_destroy(&log->space_lock);
    free(log);
}

/* HOSTMEM_TRACE's and HostMemWrapRecorder's spec: PATH[,overwrite], with %p in PATH the process id and %% a %.
 * Returns the path (malloc'd) or NULL with the error set. */
static char *parse_spec(const char *spec, bool *overwrite, int64_t *max_size)
{
    size_t len = strlen(spec);
    static const char suffix[] = ",overwrite";
    *overwrite = len > sizeof suffix - 1 && strcmp(spec + len - (sizeof suffix - 1), suffix) == 0;
    if (*overwrite)
        len -= sizeof suffix - 1;
    /* ",max=SIZE" (K, M or G: 1024, 1024^2, 1024^3), before ",overwrite"; at least the header and the ring. */
    *max_size = 0;
    const char *max = NULL;
    for (size_t i = len; i-- > 0;)
        if (spec[i] == ',') {
            if (strncmp(spec + i, ",max=", 5) == 0)
                max = spec + i;
            break;
        }
    if (max) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(max + 5, &end, 10);
        unsigned shift = *end == 'K' ? 10 : *end == 'M' ? 20 : *end == 'G' ? 30 : 0;
        if (shift)
            end++;
        if (errno || end != spec + len || end == max + 5 || v > (1ull << 62) >> shift ||
            (int64_t)(v << shift) <= MAIN_OFFSET) {
            hm__set_error("trace spec '%s': max='%.*s' is not a size above the trace's first %lld bytes (a number "
                         "with K, M or G)",
                         spec, (int)(spec + len - max - 5), max + 5, (long long)MAIN_OFFSET);
            return NULL;
        }
        *max_size = (int64_t)(v << shift);
        len = (size_t)(max - spec);
    }
    char pid[24];
    int pid_len = snprintf(pid, sizeof pid, "%lu", hm__trace_process_id());
    size_t cap = len * (size_t)pid_len + 1, n = 0;
    char *path = malloc(cap);
    if (!path) {
        hm__set_error("out of memory creating the recorder");
        return NULL;
    }
    for (size_t i = 0; i < len; i++) {
        if (spec[i] == '%' && i + 1 < len && spec[i + 1] == 'p') {
            memcpy(path + n, pid, (size_t)pid_len);
            n += (size_t)pid_len;
            i++;
        } else if (spec[i] == '%' && i + 1 < len && spec[i + 1] == '%') {
            path[n++] = '%';
            i++;
        } else {
            path[n++] = spec[i];
        }
    }
    path[n] = '\0';
    return path;
}

/* The environment block of a new trace: the caller's host fields, and the recorder's own version, time, OS and
 * process id. A value a reader would refuse is not worth losing the recording for: a control character becomes
 * '?', an overlong value is left out (stderr says so). Returns the malloc'd lines (*len bytes) or NULL. */
static char *environment_block(const char *path, const hm_trace_env *given, size_t *len)
{
    char *values[HM_TRACE_ENV_FIELDS] = {0};
    hm_trace_env env = {0};
    if (given)
        env = *given;
    char now[32] = "", pid[24];
    hm__trace_utc_time(now, sizeof now);
    snprintf(pid, sizeof pid, "%lu", hm__trace_process_id());
    env.version = HOSTMEM_VERSION_STRING;
    env.time = now;
    env.os = hm__trace_os_name();
    env.pid = pid;
    for (int i = 0; i < HM_TRACE_ENV_FIELDS; i++) {
        const char *v = hm__trace_env_get(&env, i);
        const char **field = hm__trace_env_field(&env, i);
        if (!v || !*v)
            continue;
        if (strlen(v) > HM_TRACE_ENV_VALUE_MAX) {
            fprintf(stderr, "hostmem: trace '%s': the header's field '%s' is longer than %d bytes: left out\n",
                    path, hm__trace_env_key(i), HM_TRACE_ENV_VALUE_MAX);
            *field = NULL;
            continue;
        }
        if (!(values[i] = strdup(v)))
            goto fail;
        for (char *c = values[i]; *c; c++)
            if ((unsigned char)*c < 0x20 || *c == 0x7f)
                *c = '?';
        *field = values[i];
    }
    char err[256];
    char *block = hm__trace_env_format(&env, len, err, sizeof err);
    for (int i = 0; i < HM_TRACE_ENV_FIELDS; i++)
        free(values[i]);
    if (!block)
        hm__set_error("cannot record to trace '%s': its environment: %s", path, err);
    return block;
fail:
    for (int i = 0; i < HM_TRACE_ENV_FIELDS; i++)
        free(values[i]);
    hm__set_error("out of memory creating the recorder");
    return NULL;
}

static recorder_log *log_open(const char *spec, const hm_trace_env *given)
{
    recorder_log *log = calloc(1, sizeof *log);
    if (!log) {
        hm__set_error("out of memory creating the recorder");
        return NULL;
    }
    bool overwrite;
    size_t env_len = 0;
    char *env = NULL;
    if (!(log->path = parse_spec(spec, &overwrite, &log->max_size)) ||
        !(env = environment_block(log->path, given, &env_len))) {
        free(log->path);
        free(log);
        return NULL;
    }
    log->env_size = (env_len + HM_RAW_SLOT - 1) / HM_RAW_SLOT * HM_RAW_SLOT;
    log->main_offset = MAIN_OFFSET + (int64_t)log->env_size;
    if (!(log->file = hm__trace_file_create(log->path, overwrite, (size_t)log->main_offset))) {
        free(env);
        free(log->path);
        free(log);
        return NULL;
    }
    log->map = hm__trace_file_map(log->file);
    log->ring = log->map + HM_RAW_HEADER + log->env_size;
    atomic_init(&log->refs, 1);
    atomic_init(&log->forked, false);
    log->serial = atomic_fetch_add(&log_serials, 1) + 1;
    /* The environment before the magic: a reader never sees a version-4 header without its block. */
    memcpy(log->map + HM_RAW_HEADER, env, env_len);
    free(env);
    uint32_t env_size = (uint32_t)log->env_size;
    memcpy(log->map + HM_RAW_ENV_FIELD, &env_size, sizeof env_size);
    memcpy(log->map, HM_TRACE_RAW_MAGIC, strlen(HM_TRACE_RAW_MAGIC));
    uint64_t ring_slots = RING_SLOTS;
    memcpy(log->map + HM_RAW_RING_FIELD, &ring_slots, sizeof ring_slots);
    pthread_mutex_init(&log->copy_lock, NULL);
    pthread_mutex_init(&log->space_lock, NULL);
    log->fork_entry = (hm_fork_entry){
        .rank = HM_FORK_RECORDER, .obj = log, .lock = fork_lock, .unlock = fork_unlock, .child = fork_child};
    hm__fork_register(&log->fork_entry);
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

/* Reserves the slots of one call: returns its first record slot. acq_rel (free on x86, where every atomic add is a
 * full barrier): a query that takes a slot after a locked call's slot sees that call's epoch change. */
static inline uint64_t reserve(recorder_log *log, unsigned nslots)
{
    return atomic_fetch_add_explicit(&log->next_slot, nslots, memory_order_acq_rel);
}

/* The space lock around a call that changes the address space. A call the host makes back into the recorder on
 * the same thread (a callback calling VirtualFree, say) already holds it and does not take it again. */
static _Thread_local recorder_log *space_holder;

static bool space_enter(recorder_log *log)
{
    if (space_holder == log)
        return false;
    pthread_mutex_lock(&log->space_lock);
    space_holder = log;
    atomic_fetch_add_explicit(&log->space_epoch, 1, memory_order_seq_cst); /* odd: a change in progress */
    return true;
}

static void space_leave(recorder_log *log, bool entered)
{
    if (!entered)
        return;
    atomic_fetch_add_explicit(&log->space_epoch, 1, memory_order_release);
    space_holder = NULL;
    pthread_mutex_unlock(&log->space_lock);
}

/* Extra slot i (1-based) of a call: its part of extra, zeros after. */
static inline void put_extra(uint8_t *dst, const void *extra, size_t extra_len, unsigned i)
{
    size_t off = (size_t)(i - 1) * HM_RAW_SLOT;
    size_t k = extra_len > off ? extra_len - off : 0;
    if (k > HM_RAW_SLOT)
        k = HM_RAW_SLOT;
    memcpy(dst, (const uint8_t *)extra + off, k);
    memset(dst + k, 0, HM_RAW_SLOT - k);
}

/* Writes rec (and the extra slots) to the reserved slots, then publishes the call by storing its commit word. */
static void commit(recorder_log *log, uint64_t slot, hm_raw_record *rec, const void *extra, size_t extra_len)
{
    if (atomic_load_explicit(&log->broken, memory_order_relaxed))
        return;
    unsigned n = rec->nslots;
    rec->thread = thread_id(log);
    rec->commit = 0;
    if (__builtin_expect(slot + n > atomic_load_explicit(&log->copied, memory_order_acquire) + RING_SLOTS, 0)) {
        /* The ring is full: to its place directly, the commit word last. */
        uint8_t buf[4 * HM_RAW_SLOT];
        memcpy(buf, rec, sizeof *rec);
        for (unsigned i = 1; i < n; i++)
            put_extra(buf + (size_t)i * HM_RAW_SLOT, extra, extra_len, i);
        uint64_t word = commit_word(slot);
        int err = write_record(log, buf, (size_t)n * HM_RAW_SLOT, main_offset(slot));
        if (!err)
            err = write_record(log, &word, sizeof word, main_offset(slot));
        if (err) {
            pthread_mutex_lock(&log->copy_lock);
            log_stop(log, err);
            pthread_mutex_unlock(&log->copy_lock);
            return;
        }
    } else {
        /* All but the commit word, which a copying thread may be reading (atomically) meanwhile. */
        uint8_t *first = ring_slot(log, slot);
        size_t skip = sizeof rec->commit;
        memcpy(first + skip, (const uint8_t *)rec + skip, sizeof *rec - skip);
        for (unsigned i = 1; i < n; i++)
            put_extra(ring_slot(log, slot + i), extra, extra_len, i);
        atomic_store_explicit((_Atomic uint64_t *)(void *)first, commit_word(slot), memory_order_release);
    }
    /* The call that fills a batch copies the batches committed so far to their place (while its data is hot),
     * unless another thread is at it. */
    if (__builtin_expect(((slot + n) & (COPY_BATCH - 1)) < n, 0))
        copy_pending(log, false);
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
static inline recorded_callback *impl_from_ICLRMemoryNotificationCallback(ICLRMemoryNotificationCallback *iface)
{
    return HM_CONTAINER_OF(iface, recorded_callback, iface);
}

static HRESULT STDMETHODCALLTYPE callback_QueryInterface(ICLRMemoryNotificationCallback *iface, REFIID riid, void **ppv)
{
    return hm_com_query(iface, &IID_ICLRMemoryNotificationCallback, riid, ppv);
}

static ULONG STDMETHODCALLTYPE callback_AddRef(ICLRMemoryNotificationCallback *iface)
{
    return atomic_fetch_add(&impl_from_ICLRMemoryNotificationCallback(iface)->refs, 1) + 1;
}

static ULONG STDMETHODCALLTYPE callback_Release(ICLRMemoryNotificationCallback *iface)
{
    recorded_callback *cb = impl_from_ICLRMemoryNotificationCallback(iface);
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
    recorded_callback *cb = impl_from_ICLRMemoryNotificationCallback(iface);
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
static inline recorded_heap *impl_from_IHostMalloc(IHostMalloc *iface)
{
    return HM_CONTAINER_OF(iface, recorded_heap, iface);
}

static HRESULT STDMETHODCALLTYPE heap_QueryInterface(IHostMalloc *iface, REFIID riid, void **ppv)
{
    return hm_com_query(iface, &IID_IHostMalloc, riid, ppv);
}

static ULONG STDMETHODCALLTYPE heap_AddRef(IHostMalloc *iface) { return atomic_fetch_add(&impl_from_IHostMalloc(iface)->refs, 1) + 1; }

static ULONG STDMETHODCALLTYPE heap_Release(IHostMalloc *iface)
{
    recorded_heap *heap = impl_from_IHostMalloc(iface);
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
    recorded_heap *heap = impl_from_IHostMalloc(iface);
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
    recorded_heap *heap = impl_from_IHostMalloc(iface);
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
    recorded_heap *heap = impl_from_IHostMalloc(iface);
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
static inline recorder *impl_from_IHostMemoryManager(IHostMemoryManager *iface)
{
    return HM_CONTAINER_OF(iface, recorder, iface);
}

static HRESULT STDMETHODCALLTYPE rec_QueryInterface(IHostMemoryManager *iface, REFIID riid, void **ppv)
{
    return hm_com_query(iface, &IID_IHostMemoryManager, riid, ppv);
}

static ULONG STDMETHODCALLTYPE rec_AddRef(IHostMemoryManager *iface)
{
    return atomic_fetch_add(&impl_from_IHostMemoryManager(iface)->refs, 1) + 1;
}

static ULONG STDMETHODCALLTYPE rec_Release(IHostMemoryManager *iface)
{
    recorder *r = impl_from_IHostMemoryManager(iface);
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
    recorder *r = impl_from_IHostMemoryManager(iface);
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
    recorder *r = impl_from_IHostMemoryManager(iface);
    if (!log_enabled(r->log))
        return IHostMemoryManager_VirtualAlloc(r->inner, addr, size, type, prot, level, ppMem);
    bool locked = space_enter(r->log);
    HRESULT hr = IHostMemoryManager_VirtualAlloc(r->inner, addr, size, type, prot, level, ppMem);
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
    space_leave(r->log, locked);
    return hr;
}

static HRESULT STDMETHODCALLTYPE rec_VirtualFree(IHostMemoryManager *iface, LPVOID addr, SIZE_T size, DWORD type)
{
    recorder *r = impl_from_IHostMemoryManager(iface);
    if (!log_enabled(r->log))
        return IHostMemoryManager_VirtualFree(r->inner, addr, size, type);
    bool locked = space_enter(r->log);
    uint64_t slot = reserve(r->log, 1);
    HRESULT hr = IHostMemoryManager_VirtualFree(r->inner, addr, size, type);
    hm_raw_record rec = record_start(HM_METHOD_VIRTUAL_FREE, hr);
    rec.addr = (uint64_t)(uintptr_t)addr;
    rec.size = size;
    rec.a32 = type;
    rec.nslots = 1;
    commit(r->log, slot, &rec, NULL, 0);
    space_leave(r->log, locked);
    return hr;
}

static HRESULT STDMETHODCALLTYPE rec_VirtualQuery(IHostMemoryManager *iface, void *addr, void *buffer, SIZE_T length,
                                                  SIZE_T *pResult)
{
    recorder *r = impl_from_IHostMemoryManager(iface);
    if (!log_enabled(r->log))
        return IHostMemoryManager_VirtualQuery(r->inner, addr, buffer, length, pResult);
    uint64_t epoch = atomic_load_explicit(&r->log->space_epoch, memory_order_acquire);
    HRESULT hr = IHostMemoryManager_VirtualQuery(r->inner, addr, buffer, length, pResult);
    hm_raw_record rec = record_start(HM_METHOD_VIRTUAL_QUERY, hr);
    rec.addr = (uint64_t)(uintptr_t)addr;
    rec.size = length;
    rec.nulls = (buffer ? 0 : HM_TRACE_NULL_OUT1) | (pResult ? 0 : HM_TRACE_NULL_OUT2);
    if (pResult)
        rec.out = *pResult;
    bool mbi = SUCCEEDED(hr) && buffer && length >= sizeof(MEMORY_BASIC_INFORMATION);
    if (mbi && hm_raw_pack_mbi(&rec, rec.addr, buffer))
        mbi = false; /* in the record's own slot */
    rec.nslots = mbi ? 2 : 1;
    if (mbi)
        rec.flags |= HM_RAW_HAS_MBI;
    uint64_t slot = reserve(r->log, rec.nslots);
    /* A change of the address space overlapped the query: its place in the trace is not exact. */
    if ((epoch & 1) || atomic_load_explicit(&r->log->space_epoch, memory_order_relaxed) != epoch)
        rec.flags |= HM_RAW_CONCURRENT;
    commit(r->log, slot, &rec, buffer, mbi ? sizeof(MEMORY_BASIC_INFORMATION) : 0);
    return hr;
}

static HRESULT STDMETHODCALLTYPE rec_VirtualProtect(IHostMemoryManager *iface, void *addr, SIZE_T size, DWORD prot,
                                                    DWORD *pOld)
{
    recorder *r = impl_from_IHostMemoryManager(iface);
    if (!log_enabled(r->log))
        return IHostMemoryManager_VirtualProtect(r->inner, addr, size, prot, pOld);
    bool locked = space_enter(r->log);
    HRESULT hr = IHostMemoryManager_VirtualProtect(r->inner, addr, size, prot, pOld);
    hm_raw_record rec = record_start(HM_METHOD_VIRTUAL_PROTECT, hr);
    rec.addr = (uint64_t)(uintptr_t)addr;
    rec.size = size;
    rec.b32 = prot;
    if (pOld)
        rec.out = *pOld;
    else
        rec.nulls = HM_TRACE_NULL_OUT1;
    record_simple(r->log, &rec);
    space_leave(r->log, locked);
    return hr;
}

static HRESULT STDMETHODCALLTYPE rec_GetMemoryLoad(IHostMemoryManager *iface, DWORD *pLoad, SIZE_T *pAvailable)
{
    recorder *r = impl_from_IHostMemoryManager(iface);
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
    recorder *r = impl_from_IHostMemoryManager(iface);
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
    /* The slot before the call: the host may notify the callback (on this thread or another) before the call
     * returns, and a notification must not come before the registration that names its callback. */
    bool recording = log_enabled(r->log);
    uint64_t slot = recording ? reserve(r->log, 1) : 0;
    HRESULT hr = IHostMemoryManager_RegisterMemoryNotificationCallback(r->inner, wrapper ? &wrapper->iface : NULL);
    uint32_t id = wrapper ? wrapper->id : 0;
    if (wrapper)
        callback_Release(&wrapper->iface); /* the host holds its own reference when it kept it */
    if (recording) {
        hm_raw_record rec = record_start(HM_METHOD_REGISTER_CALLBACK, hr);
        rec.id = id;
        rec.nslots = 1;
        commit(r->log, slot, &rec, NULL, 0);
    }
    return hr;
}

/* Needs and Acquired: under the space lock with their records (the ledger is address-space state too). */
static HRESULT record_range(recorder *r, int method, LPVOID start, SIZE_T size)
{
    bool locked = space_enter(r->log);
    HRESULT hr = method == HM_METHOD_NEEDS_VAS ? IHostMemoryManager_NeedsVirtualAddressSpace(r->inner, start, size)
                                               : IHostMemoryManager_AcquiredVirtualAddressSpace(r->inner, start, size);
    hm_raw_record rec = record_start(method, hr);
    rec.addr = (uint64_t)(uintptr_t)start;
    rec.size = size;
    record_simple(r->log, &rec);
    space_leave(r->log, locked);
    return hr;
}

static HRESULT STDMETHODCALLTYPE rec_NeedsVirtualAddressSpace(IHostMemoryManager *iface, LPVOID start, SIZE_T size)
{
    recorder *r = impl_from_IHostMemoryManager(iface);
    if (!log_enabled(r->log))
        return IHostMemoryManager_NeedsVirtualAddressSpace(r->inner, start, size);
    return record_range(r, HM_METHOD_NEEDS_VAS, start, size);
}

static HRESULT STDMETHODCALLTYPE rec_AcquiredVirtualAddressSpace(IHostMemoryManager *iface, LPVOID start, SIZE_T size)
{
    recorder *r = impl_from_IHostMemoryManager(iface);
    if (!log_enabled(r->log))
        return IHostMemoryManager_AcquiredVirtualAddressSpace(r->inner, start, size);
    return record_range(r, HM_METHOD_ACQUIRED_VAS, start, size);
}

static HRESULT STDMETHODCALLTYPE rec_ReleasedVirtualAddressSpace(IHostMemoryManager *iface, LPVOID start)
{
    recorder *r = impl_from_IHostMemoryManager(iface);
    if (!log_enabled(r->log))
        return IHostMemoryManager_ReleasedVirtualAddressSpace(r->inner, start);
    bool locked = space_enter(r->log);
    uint64_t slot = reserve(r->log, 1);
    HRESULT hr = IHostMemoryManager_ReleasedVirtualAddressSpace(r->inner, start);
    hm_raw_record rec = record_start(HM_METHOD_RELEASED_VAS, hr);
    rec.addr = (uint64_t)(uintptr_t)start;
    rec.nslots = 1;
    commit(r->log, slot, &rec, NULL, 0);
    space_leave(r->log, locked);
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
    return outer && outer->lpVtbl == &recorder_vtbl ? impl_from_IHostMemoryManager(outer)->inner : NULL;
}

HM_API uint64_t HostMemRecorderCalls(IHostMemoryManager *outer)
{
    if (!outer || outer->lpVtbl != &recorder_vtbl)
        return 0;
    recorder_log *log = impl_from_IHostMemoryManager(outer)->log;
    /* Calls are counted as they are copied to their place (not in a forked child: it must not write). */
    if (log_enabled(log))
        copy_pending(log, true);
    return atomic_load(&log->calls);
}

HM_API HRESULT HostMemWrapRecorder(IHostMemoryManager *inner, const char *path, IHostMemoryManager **ppOuter)
{
    return HostMemWrapRecorderEnv(inner, path, NULL, ppOuter);
}

HM_API HRESULT HostMemWrapRecorderEnv(IHostMemoryManager *inner, const char *path, const hm_trace_env *env,
                                      IHostMemoryManager **ppOuter)
{
    if (!ppOuter)
        return E_POINTER;
    *ppOuter = NULL;
    if (!inner || !path || !*path) {
        hm__set_error("HostMemWrapRecorder needs a manager and a trace path");
        return E_INVALIDARG;
    }
    hm__decorator_register(&recorder_vtbl, HostMemRecorderInner);
    recorder *r = malloc(sizeof *r);
    if (!r) {
        hm__set_error("out of memory creating the recorder");
        return E_OUTOFMEMORY;
    }
    r->log = log_open(path, env);
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

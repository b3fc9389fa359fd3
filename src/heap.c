/* Host heaps (IHostMalloc): see heap.h.
 *
 * Small blocks (up to 32 KiB) come from 64 KiB chunks that each serve one size class; larger blocks get a chunk of
 * their own. The bookkeeping lives in the chunk header, out of the user's reach. A small chunk's header takes the
 * place of a few of its slots, at an offset that depends on the chunk's address, so that the headers of many
 * chunks do not all fall into the same cache sets. It holds a byte per slot (its mark): 0 while the slot is free,
 * else the block's requested size relative to the slot size (one byte load tells Free whether the block is live;
 * classes whose requests can fall 253 bytes or more short of the slot keep those sizes in a 16-bit side array),
 * and, once a DebugAlloc lands in the chunk, each slot's allocation site. Free slots are handed out most recently
 * freed first, through a list threaded through the free blocks, so a new block is usually still in the cache. Free
 * masks the pointer down to its 64 KiB granule and looks that base up in a hash set of the thread's own chunks
 * before touching anything (hashed by granule number: neighbouring chunks sit at their home entries, where the
 * fast path looks), then checks the pointer is a block start (one multiplication) and that its slot is live:
 * foreign pointers, interior pointers and double frees are refused, changing nothing. No counters are kept on the
 * way: statistics count the live blocks by walking the chunks (hm__heap_usage).
 *
 * Threads. A heap's chunks are divided among "locals": a single-threaded heap has one; a thread-safe heap gives
 * each thread that uses it a local of its own (found through a small thread-local cache keyed by heap id), so
 * Alloc, and Free of the thread's own blocks, take no lock and no locked instruction: only the owner thread writes
 * a chunk's marks and free list. Free of a block another local owns (a "remote" free) takes the heap lock,
 * validates the block against the heap-wide chunk set and sets the slot's bit in the chunk's pending bitmap; the
 * owner folds pending blocks back into its free lists (under the heap lock) before it next asks for a new chunk. A
 * pending block counts as freed (Free refuses it, leak reports skip it). When a thread exits, its locals are
 * abandoned and the next thread that starts using the heap adopts one of them, chunks and all. Large blocks belong
 * to the heap, not to a local: any thread frees them at once, under the heap lock. Emptied chunks are kept as
 * spares for any thread and size class (SPARE_MIN). A chunk that filled up leaves its class's list and comes back
 * when an eighth of it is free again, so the class's Allocs do not switch chunks at every Free.
 *
 * Alloc and Free have a fast path each, inline and without calls, for the common case; everything else (first use
 * by a thread, a full chunk, a chunk with pending blocks or sites, a tool watching, bad arguments) is a tail call to
 * a slow path with the same arguments, so the fast paths save no registers. There is one vtable for
 * single-threaded heaps and one for thread-safe ones, so the fast paths find the local without a test. */
#include "internal.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK_SIZE ((size_t)64 << 10)
#define SMALL_LIMIT ((size_t)32 << 10)
#define CHUNK_MAGIC 0x4B4E484348504548ull /* "HEPHCHNK" */
#define LARGE_CLASS 0xFFFFu
#define NO_SLOT UINT32_MAX
#define MAX_REQUEST ((size_t)1 << 40)
#define LOCAL_CACHE_SIZE 8 /* heaps a thread can alternate between without taking the slow path */
/* Emptied chunks a heap keeps for reuse rather than unmapping them and mapping new ones (whose pages fault again):
 * 16 (1 MiB), or half the most it ever had in use, up to 256 (16 MiB). A count, not a time: placement stays
 * deterministic. */
#define SPARE_MIN 16
#define SPARE_MAX 256
#define CACHE_LINE 64

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

#if defined(HM_TRACK_VALGRIND)
bool hm__track_valgrind;
#endif

/* Size classes (slot sizes): 16..1024 by 16, then by 12.5% steps up to 32 KiB. Slots are multiples of 16 and
 * chunks' first slots 16-aligned, so every block is 16-aligned. */
#define CLASS_COUNT 96
static uint32_t class_size[CLASS_COUNT];
/* (request - 1) / 16 -> the smallest class that fits (request - 1: the fast path has it from its range check). */
static uint8_t class_of_request[SMALL_LIMIT >> 4];
static pthread_once_t classes_once = PTHREAD_ONCE_INIT;

static void build_classes(void)
{
    uint32_t n = 0;
    for (uint32_t s = 16; s <= 1024; s += 16)
        class_size[n++] = s;
    for (uint32_t s = 1024; s < SMALL_LIMIT;) {
        s += (s / 8 + 15) & ~15u;
        class_size[n++] = s < SMALL_LIMIT ? s : (uint32_t)SMALL_LIMIT;
    }
    for (uint32_t i = 0, c = 0; i < (SMALL_LIMIT >> 4); i++) {
        while (class_size[c] < (i + 1) * 16)
            c++;
        class_of_request[i] = (uint8_t)c;
    }
    hm_track_init();
}

typedef struct heap heap;
typedef struct local local;

typedef struct chunk {
    /* The first cache line holds everything the fast paths read. */
    char *first_slot;
    uint32_t slot_size;    /* large chunks: CHUNK_SIZE, so only offset 0 is a block start */
    /* slot_size is odd * 2^slot_shift; slot_inv is the inverse of odd modulo 2^32: see slot_of_block. */
    uint32_t slot_inv;
    uint32_t slots;        /* slot numbers: those of the header's slots (reserved) included */
    uint32_t live;         /* slots with a block (pending ones included) */
    /* Free calls free_finish when live drops to this: 0 while the chunk is on its class's list (it emptied), else
     * relist_level(c) (it has room enough to go back on the list: not at its first free slot, which would make
     * every Alloc of the class switch chunks). */
    uint32_t relist_at;
    uint32_t free_head;    /* the most recently freed slot; each free slot's first 4 bytes name the next */
    uint32_t bump;         /* slots ever handed out: those past it are free and on no list */
    uint16_t cls;          /* size class, or LARGE_CLASS */
    bool in_partial;
    uint8_t slot_shift;
    /* Free takes its slow path: the chunk has pending blocks or a site array (whose entry Free clears, so that
     * Alloc need not write it). Set by remote frees (heap lock) and by the owner; cleared by the owner's drain. */
    atomic_bool free_slow;
    atomic_bool has_pending; /* pending bits are set (written under the heap lock) */
    /* Per-slot DebugAlloc site (0 = plain Alloc), malloc'd by the first DebugAlloc that lands here; NULL: all 0.
     * Only the owner writes it; reports read it under the heap lock, which chunk reuse and release take. */
    _Atomic(_Atomic uint32_t *) sites;
    /* Wide classes only (see marks): the requested sizes of the blocks marked MARK_WIDE. */
    _Atomic uint16_t *wide_sizes;
    /* The rest. */
    uint64_t magic;
    uint32_t span;         /* slots * slot_size */
    uint32_t capacity;     /* slots less the reserved ones */
    uint32_t reserved_lo, reserved_hi; /* the slots the header covers: never handed out (bump skips them) */
    heap *heap;
    local *owner;          /* the local that hands out and frees its blocks; NULL for large chunks (the heap's) */
    struct chunk *next_partial, *prev_partial; /* next_partial also links the heap's spare chunks */
    struct chunk *next_pending; /* the owner's list of chunks with pending blocks (heap lock) */
    size_t bytes;          /* the chunk's size as the source gave it */
    size_t large_size;     /* large chunks: the requested size */
    uint64_t pending_blocks; /* the pending blocks' count (heap lock) */
    bool spare;            /* among the heap's spares, out of service */
    /* One bit per slot: freed by another thread, not yet back on the free list (set and cleared under the heap
     * lock). After marks; followed by wide_sizes, if any. */
    _Atomic uint64_t *pending;
    /* One byte per slot, right after the header's fields (no pointer to load): 0 while the slot is free, else the
     * block's requested size as slot_size + 1 - mark, or MARK_WIDE: the size is in wide_sizes (only classes
     * whose requests can fall 253 bytes or more short of the slot have those). One load tells Free whether the
     * block is live, and a byte per slot keeps the marks of a chunk's slots on few cache lines. Written by the
     * owner only, with plain loads and stores; read by remote frees, statistics and reports, which is why they
     * are atomics (relaxed: no locked instruction). Large chunks: 1 while the block lives (its size: large_size). */
    _Atomic uint8_t marks[];
} chunk;
_Static_assert(offsetof(chunk, magic) == CACHE_LINE, "the fast paths' fields fill the chunk's first cache line");

static inline bool slot_pending(chunk *c, uint32_t slot)
{
    return (atomic_load_explicit(&c->pending[slot >> 6], memory_order_relaxed) >> (slot & 63)) & 1;
}

#define MARK_WIDE 255u

/* The slot's requested size, 0 when it is free (large chunks: not the size, see block_size). Acquire: a reader
 * that sees a block also sees its size and site. */
static inline uint32_t slot_size_of(chunk *c, uint32_t slot)
{
    uint32_t mark = atomic_load_explicit(&c->marks[slot], memory_order_acquire);
    if (mark == 0)
        return 0;
    if (mark == MARK_WIDE)
        return atomic_load_explicit(&c->wide_sizes[slot], memory_order_relaxed);
    return c->slot_size + 1 - mark;
}

/* Marks small chunk c's slot live with a block of `size` bytes. By the owner. */
static inline void slot_set(chunk *c, uint32_t slot, uint32_t size)
{
    uint32_t mark = c->slot_size + 1 - size;
    if (unlikely(mark >= MARK_WIDE)) {
        atomic_store_explicit(&c->wide_sizes[slot], (uint16_t)size, memory_order_relaxed);
        mark = MARK_WIDE;
    }
    atomic_store_explicit(&c->marks[slot], (uint8_t)mark, memory_order_release);
}

static inline void slot_clear(chunk *c, uint32_t slot)
{
    atomic_store_explicit(&c->marks[slot], 0, memory_order_relaxed);
}

/* Size of the live block in slot. */
static inline uint64_t block_size(chunk *c, uint32_t slot)
{
    return c->cls == LARGE_CLASS ? c->large_size : slot_size_of(c, slot);
}

/* An open-addressing hash set of chunk headers, by chunk base (linear probing, at most a quarter full). The hash is
 * the granule number itself: a heap's chunks are mostly neighbours in the address space (the manager places them
 * so), so they land in distinct entries, each at its home, where Free's fast path looks (and only there). A quarter
 * full: the chunks of a thread that shares the address space with up to three others still find their homes. */
#define CHUNK_SET_FIRST_BITS 6
typedef struct chunk_set {
    chunk **slots; /* first_slots until the set outgrows them, then a malloc'd array */
    size_t mask, count;
    unsigned bits;
    /* In the set's owner (heap or local): a heap is one allocation, not five (each one costs a fuzz run a
     * microsecond under ASan). */
    chunk *first_slots[(size_t)1 << CHUNK_SET_FIRST_BITS];
} chunk_set;

typedef struct thread_locals thread_locals;

/* Cache-line aligned, so two threads' locals never share a line. */
struct local {
    /* Chunks of each class with free slots, current one first (a chunk that just filled up stays first until the
     * next Alloc of its class finds it full and takes it off). */
    _Alignas(CACHE_LINE) chunk *partial[CLASS_COUNT];
    chunk_set chunks;            /* this local's chunks: Free's ownership check, read without the heap lock */
    heap *heap;
    atomic_bool has_pending;     /* set by remote frees: the owner should drain pending_chunks */
    chunk *pending_chunks;       /* chunks with pending blocks (heap lock) */
    local *next_in_heap;         /* the heap's list of locals, append-only until the heap dies */
    local *next_abandoned;       /* heap lock */
    thread_locals *thread;       /* the owner thread's list, NULL when abandoned (threads_lock) */
    local *next_in_thread, **prev_in_thread;
};

typedef struct site {
    char *file;
    int line;
} site;

struct heap {
    IHostMalloc IHostMalloc_iface;
    _Atomic ULONG ref;
    uint64_t id; /* never reused: thread-local caches keyed by it cannot mistake a new heap for a dead one */
    hm_page_source source;
    DWORD type;
    bool threadsafe;
    local *only; /* single-threaded heaps: their one local */
    local *fast_only; /* the same for the fast paths; no_local while a tool watches */
    /* A spin lock, for the rare paths only (new chunks, remote frees, reports); on a line of its own, apart from
     * what every Alloc and Free reads above. */
    _Alignas(CACHE_LINE) atomic_int lock;
    _Atomic(local *) locals;
    local *abandoned; /* locals whose thread exited, for the next thread to adopt */
    chunk_set all;    /* every chunk, spares included (heap lock): for remote frees, reports and the end */
    chunk *spares;    /* empty chunks kept for reuse by any thread and class (heap lock) */
    size_t spare_count;
    size_t chunks_in_use, peak_chunks_in_use; /* small chunks serving a local (heap lock) */
    site *sites; /* first_sites until a ninth site, then a malloc'd array */
    size_t nsites, cap_sites;
    /* Taken, inside the heap lock, where a chunk joins or leaves `all` or is laid out anew, and by hm__heap_usage,
     * which counts the live blocks by walking the chunks (no counters for Alloc and Free to keep) without the heap
     * lock: a notification callback may ask for statistics from inside the heap's call to its source. A real lock
     * for single-threaded heaps too: statistics may be read from any thread. */
    pthread_mutex_t chunks_lock;
    hm_fork_entry fork_lock, fork_chunks; /* lock and chunks_lock, held across fork() */
    bool dying; /* chunks_lock: the heap is giving its chunks back */
    bool first_local_taken; /* heap lock */
    site first_sites[8];
    /* The first local (a single-threaded heap's only one) lives in the heap: one allocation, not two. */
    local first_local;
};

static inline uint64_t relaxed(_Atomic uint64_t *word) { return atomic_load_explicit(word, memory_order_relaxed); }

static inline heap *impl_from_IHostMalloc(IHostMalloc *iface) { return HM_CONTAINER_OF(iface, heap, IHostMalloc_iface); }

static void heap_lock(heap *h)
{
    if (!h->threadsafe)
        return;
    for (unsigned spins = 0;; spins++) {
        if (atomic_load_explicit(&h->lock, memory_order_relaxed) == 0 &&
            atomic_exchange_explicit(&h->lock, 1, memory_order_acquire) == 0)
            return;
        if (spins < 64)
            __builtin_ia32_pause();
        else
            sched_yield(); /* the holder may be descheduled: let it run */
    }
}

static void heap_unlock(heap *h)
{
    if (h->threadsafe)
        atomic_store_explicit(&h->lock, 0, memory_order_release);
}

static inline char *block_at(const chunk *c, uint32_t slot) { return c->first_slot + (size_t)slot * c->slot_size; }

/* The slot whose block starts at p, or false when p is no block start of chunk c; p lies in c's first 64 KiB.
 * One multiplication (Granlund and Montgomery's divisibility test): with slot_size = odd * 2^k, the offset times
 * odd's inverse, rotated right by k, is offset / slot_size when slot_size divides the offset, and more than
 * 2^32 / slot_size (more than any slot count) when it does not. An offset before the first slot wraps to at least
 * 2^32 - 64 Ki, a multiple of slot_size only with a quotient far beyond the slot count. */
static inline bool slot_of_block(const chunk *c, uintptr_t p, uint32_t *out)
{
    uint32_t x = (uint32_t)(p - (uintptr_t)c->first_slot) * c->slot_inv;
    unsigned k = c->slot_shift;
    uint32_t slot = (x >> k) | (x << (32 - k)); /* k is 4 to 16 */
    *out = slot;
    return slot < c->slots;
}

/* ---- Chunk sets -------------------------------------------------------------------------------------------- */

/* The 64 KiB granule a chunk starts at: its header lies in the chunk's first 64 KiB. */
static inline uintptr_t chunk_base(const chunk *c) { return (uintptr_t)c & ~(uintptr_t)(CHUNK_SIZE - 1); }

static inline size_t granule_home(uintptr_t base, size_t mask) { return (size_t)(base >> 16) & mask; }

static inline size_t chunk_set_home(const chunk_set *s, uintptr_t base) { return granule_home(base, s->mask); }

/* An empty set on its first slots (the owner was zeroed). */
static void chunk_set_init(chunk_set *s)
{
    s->slots = s->first_slots;
    s->bits = CHUNK_SET_FIRST_BITS;
    s->mask = ((size_t)1 << s->bits) - 1;
    s->count = 0;
}

static void chunk_set_free(chunk_set *s)
{
    if (s->slots != s->first_slots)
        free(s->slots);
}

static void slots_put(chunk **slots, size_t mask, chunk *c)
{
    size_t k = granule_home(chunk_base(c), mask);
    while (slots[k])
        k = (k + 1) & mask;
    slots[k] = c;
}

static void chunk_set_put(chunk_set *s, chunk *c)
{
    slots_put(s->slots, s->mask, c);
    s->count++;
}

/* Makes room for one more chunk (keeping the set at most a quarter full); -1 when memory is short. */
static int chunk_set_reserve(chunk_set *s)
{
    if ((s->count + 1) * 4 <= s->mask + 1)
        return 0;
    size_t mask = s->mask * 2 + 1;
    chunk **grown = calloc(mask + 1, sizeof *grown);
    if (!grown)
        return -1;
    for (size_t i = 0; i <= s->mask; i++)
        if (s->slots[i])
            slots_put(grown, mask, s->slots[i]);
    chunk_set_free(s);
    s->slots = grown;
    s->mask = mask;
    s->bits++;
    return 0;
}

/* The chunk based at `base`, or NULL: reads only the set, never the address. */
static inline chunk *chunk_set_find(const chunk_set *s, uintptr_t base)
{
    for (size_t k = chunk_set_home(s, base);; k = (k + 1) & s->mask) {
        chunk *c = s->slots[k];
        if (chunk_base(c) == base) /* a NULL entry masks to 0, which is no chunk's base */
            return c;
        if (!c)
            return NULL;
    }
}

/* Linear-probing removal by shifting later entries back, so lookups never need tombstones. */
static void chunk_set_remove(chunk_set *s, chunk *c)
{
    size_t k = chunk_set_home(s, chunk_base(c));
    while (s->slots[k] != c)
        k = (k + 1) & s->mask;
    s->slots[k] = NULL;
    s->count--;
    for (size_t j = (k + 1) & s->mask; s->slots[j]; j = (j + 1) & s->mask) {
        size_t want = chunk_set_home(s, chunk_base(s->slots[j]));
        /* Move entry j into the hole at k if its home is not in (k, j]. */
        if ((j > k && (want <= k || want > j)) || (j < k && (want <= k && want > j))) {
            s->slots[k] = s->slots[j];
            s->slots[j] = NULL;
            k = j;
        }
    }
}

/* ---- Chunks --------------------------------------------------------------------------------------------- */

/* Whether some request of small class cls leaves MARK_WIDE - 1 bytes or more of its slot unused. */
static bool class_is_wide(uint32_t cls)
{
    uint32_t least = cls ? class_size[cls - 1] + 1 : 1;
    return class_size[cls] + 1 - least >= MARK_WIDE;
}

static size_t marks_end(uint32_t slots) { return (sizeof(chunk) + slots + 7) & ~(size_t)7; }

static size_t chunk_header_size(uint32_t slots, bool wide)
{
    size_t end = marks_end(slots) + (slots + 63) / 64 * sizeof(uint64_t) + (wide ? slots * sizeof(uint16_t) : 0);
    return (end + 15) & ~(size_t)15;
}

/* A chunk off its class's list goes back on it when this many slots are live: one eighth of its slots free. */
static inline uint32_t relist_level(const chunk *c)
{
    uint32_t room = c->capacity / 8;
    return c->capacity - (room ? room : 1);
}

static void partial_push(local *l, chunk *c)
{
    c->relist_at = 0;
    c->prev_partial = NULL;
    c->next_partial = l->partial[c->cls];
    if (c->next_partial)
        c->next_partial->prev_partial = c;
    l->partial[c->cls] = c;
    c->in_partial = true;
}

static void partial_remove(local *l, chunk *c)
{
    if (c->prev_partial)
        c->prev_partial->next_partial = c->next_partial;
    else
        l->partial[c->cls] = c->next_partial;
    if (c->next_partial)
        c->next_partial->prev_partial = c->prev_partial;
    c->in_partial = false;
    c->relist_at = relist_level(c);
}

/* Drops chunk c's pending blocks, when it leaves service: it can have some only after a double free raced with
 * another thread's Free of the same block (the owner emptied the chunk meanwhile). Heap lock held. */
static void chunk_forget_pending(heap *h, chunk *c)
{
    if (!atomic_load_explicit(&c->has_pending, memory_order_relaxed))
        return;
    chunk **link = &c->owner->pending_chunks;
    while (*link && *link != c)
        link = &(*link)->next_pending;
    if (*link)
        *link = c->next_pending;
    c->next_pending = NULL;
    c->pending_blocks = 0;
    for (uint32_t w = 0; w < (c->slots + 63) / 64; w++)
        atomic_store_explicit(&c->pending[w], 0, memory_order_relaxed);
    atomic_store_explicit(&c->has_pending, false, memory_order_relaxed);
    atomic_store_explicit(&c->free_slow, atomic_load_explicit(&c->sites, memory_order_relaxed) != NULL,
                          memory_order_relaxed);
}

/* Lays the chunk at base (bytes long, zeroed or an empty spare) out for class cls, every slot free, for local l;
 * returns its header. Heap lock held: remote frees may read the fields of a spare being reused. */
static chunk *chunk_format(heap *h, local *l, char *base, size_t bytes, uint32_t cls, size_t large_size)
{
    uint32_t slot_size, slots, reserved_lo, reserved_hi;
    bool wide = cls != LARGE_CLASS && class_is_wide(cls);
    size_t header, offset;
    if (cls != LARGE_CLASS) {
        /* Slots from offset 0 to the end; the header takes the place of a few of them, somewhere in the chunk
         * (chosen by the chunk's address): at one offset for all, the headers and marks of every chunk would fall
         * into the same few cache sets (a 64 KiB stride), and evict each other. Never at offset 0, so that Free's
         * ownership test is one comparison (free_fast); at a multiple of 64 when the slot size allows. */
        slot_size = class_size[cls];
        slots = (uint32_t)(CHUNK_SIZE / slot_size);
        header = chunk_header_size(slots, wide);
        uint32_t reserved = (uint32_t)((header + slot_size - 1) / slot_size);
        uint32_t align = slot_size % 64 == 0 ? 1 : slot_size % 32 == 0 ? 2 : 4; /* slots per 64-byte multiple */
        uint32_t choices = (slots - reserved) / align, granule = (uint32_t)((uintptr_t)base / CHUNK_SIZE);
        reserved_lo = choices ? align * (1 + ((granule * 2654435761u) >> 8) % choices) : 1;
        reserved_hi = reserved_lo + reserved;
        offset = (size_t)reserved_lo * slot_size;
    } else {
        slot_size = (uint32_t)CHUNK_SIZE;
        slots = 1;
        header = chunk_header_size(slots, wide);
        reserved_lo = reserved_hi = 1;
        offset = 0;
    }
    chunk *c = (chunk *)(base + offset);
    hm_track_unpoison(c, header);
    hm_track_defined(c, header);
    memset(c, 0, header);
    c->magic = CHUNK_MAGIC;
    c->heap = h;
    c->owner = l;
    c->bytes = bytes;
    c->large_size = large_size;
    c->cls = cls;
    c->slot_size = slot_size;
    c->slot_shift = (uint8_t)__builtin_ctz(slot_size);
    uint32_t odd = slot_size >> c->slot_shift, inv = odd; /* Newton's iteration: each step doubles the bits */
    for (int i = 0; i < 5; i++)
        inv *= 2 - odd * inv;
    c->slot_inv = inv;
    c->slots = slots;
    c->span = slots * slot_size;
    c->capacity = slots - (reserved_hi - reserved_lo);
    c->reserved_lo = reserved_lo;
    c->reserved_hi = reserved_hi;
    c->free_head = NO_SLOT;
    c->pending = (_Atomic uint64_t *)((char *)c + marks_end(slots));
    c->wide_sizes = wide ? (_Atomic uint16_t *)(c->pending + (slots + 63) / 64) : NULL;
    c->first_slot = cls != LARGE_CLASS ? base : (char *)c + header;
    /* Around the header, the slots are nobody's until handed out. */
    hm_track_poison(base, offset);
    hm_track_noaccess(base, offset);
    hm_track_poison((char *)c + header, bytes - offset - header);
    hm_track_noaccess((char *)c + header, bytes - offset - header);
    return c;
}

/* A new chunk of small class cls for local l: a spare one if the heap has one, else from the source. The source
 * is called under the heap lock, so sources need not be thread-safe. */
static HRESULT chunk_new(heap *h, local *l, uint32_t cls, EMemoryCriticalLevel level, chunk **out)
{
    if (chunk_set_reserve(&l->chunks) != 0)
        return E_OUTOFMEMORY;
    heap_lock(h);
    chunk *c = h->spares;
    if (c) {
        h->spares = c->next_partial;
        h->spare_count--;
        pthread_mutex_lock(&h->chunks_lock);
        chunk_set_remove(&h->all, c); /* its header moves with its class */
        c = chunk_format(h, l, (char *)chunk_base(c), c->bytes, cls, 0);
        chunk_set_put(&h->all, c);
        pthread_mutex_unlock(&h->chunks_lock);
    } else {
        if (chunk_set_reserve(&h->all) != 0) {
            heap_unlock(h);
            return E_OUTOFMEMORY;
        }
        void *mem = NULL;
        HRESULT hr = h->source.alloc(h->source.ctx, CHUNK_SIZE, level, &mem);
        if (FAILED(hr) || !mem) {
            heap_unlock(h);
            return FAILED(hr) ? hr : E_OUTOFMEMORY;
        }
        c = chunk_format(h, l, mem, CHUNK_SIZE, cls, 0);
        pthread_mutex_lock(&h->chunks_lock);
        chunk_set_put(&h->all, c); /* remote frees and statistics see it only from here, complete */
        pthread_mutex_unlock(&h->chunks_lock);
    }
    if (++h->chunks_in_use > h->peak_chunks_in_use)
        h->peak_chunks_in_use = h->chunks_in_use;
    heap_unlock(h);
    chunk_set_put(&l->chunks, c);
    *out = c;
    return S_OK;
}

/* Gives chunk c back to the source. Heap lock held. False when the source kept it (the OS would not take the pages
 * back): c is then the heap's still, as it was, its space outside the header and the live block (large chunks)
 * nobody's again for the tools. */
static bool chunk_release_locked(heap *h, chunk *c)
{
    pthread_mutex_lock(&h->chunks_lock);
    chunk_set_remove(&h->all, c);
    pthread_mutex_unlock(&h->chunks_lock);
    void *sites = atomic_load_explicit(&c->sites, memory_order_relaxed); /* c lives in the chunk: read it first */
    char *base = (char *)chunk_base(c);
    size_t bytes = c->bytes;
    /* The memory goes back to the manager, which may hand it out again as plain pages. */
    hm_track_unpoison(base, bytes);
    hm_track_defined(base, bytes);
    if (SUCCEEDED(h->source.release(h->source.ctx, base, bytes))) {
        free(sites);
        return true;
    }
    size_t offset = (size_t)((char *)c - base), header = chunk_header_size(c->slots, c->wide_sizes != NULL);
    hm_track_poison(base, offset);
    hm_track_noaccess(base, offset);
    hm_track_poison((char *)c + header, bytes - offset - header);
    hm_track_noaccess((char *)c + header, bytes - offset - header);
    pthread_mutex_lock(&h->chunks_lock);
    chunk_set_put(&h->all, c); /* where it was: the set needs no room */
    pthread_mutex_unlock(&h->chunks_lock);
    return false;
}

/* Takes empty small chunk c out of local l's service: into the heap's spares while there are few, else back to
 * the source. Heap lock held. */
static void chunk_retire_locked(heap *h, local *l, chunk *c)
{
    chunk_forget_pending(h, c);
    chunk_set_remove(&l->chunks, c);
    if (c->in_partial)
        partial_remove(l, c);
    h->chunks_in_use--;
    size_t keep = h->peak_chunks_in_use / 2;
    /* Kept while there are few spares, or when the source will not take it back. */
    if (h->spare_count < (keep < SPARE_MIN ? SPARE_MIN : keep > SPARE_MAX ? SPARE_MAX : keep) ||
        !chunk_release_locked(h, c)) {
        free(atomic_load_explicit(&c->sites, memory_order_relaxed)); /* a spare has no blocks, so no sites */
        atomic_store_explicit(&c->sites, NULL, memory_order_relaxed);
        c->next_partial = h->spares;
        c->spare = true;
        h->spares = c;
        h->spare_count++;
    }
}

/* An empty chunk (live == 0) stays its class's current chunk when it is the only one with room (avoids
 * thrashing); else it is retired. Heap lock held when `locked`. */
static void chunk_emptied(heap *h, local *l, chunk *c, bool locked)
{
    if (c->in_partial && !c->next_partial && !c->prev_partial)
        return;
    if (!locked)
        heap_lock(h);
    chunk_retire_locked(h, l, c);
    if (!locked)
        heap_unlock(h);
}

/* Free slot list: each free block's first 4 bytes name the next free slot. Under ASan or Valgrind those bytes are
 * made accessible around the access, and poisoned again. */
static void __attribute__((noinline)) free_list_push_tracked(chunk *c, uint32_t slot)
{
    char *block = block_at(c, slot);
    hm_track_unpoison(block, sizeof(uint32_t));
    hm_track_defined(block, sizeof(uint32_t));
    memcpy(block, &c->free_head, sizeof(uint32_t));
    hm_track_poison(block, c->slot_size);
    hm_track_noaccess(block, c->slot_size);
    c->free_head = slot;
}

static inline void free_list_push(chunk *c, uint32_t slot)
{
    if (hm_tracking()) {
        free_list_push_tracked(c, slot);
        return;
    }
    memcpy(block_at(c, slot), &c->free_head, sizeof(uint32_t));
    c->free_head = slot;
}

static void __attribute__((noinline)) free_list_next_tracked(chunk *c, char *block)
{
    hm_track_unpoison(block, sizeof(uint32_t));
    hm_track_defined(block, sizeof(uint32_t));
    memcpy(&c->free_head, block, sizeof(uint32_t));
    hm_track_poison(block, sizeof(uint32_t));
    hm_track_noaccess(block, sizeof(uint32_t));
}

/* Takes the next never used slot of c (bump < slots). */
static inline uint32_t bump_take(chunk *c)
{
    uint32_t slot = c->bump, next = slot + 1;
    c->bump = next == c->reserved_lo ? c->reserved_hi : next; /* over the header's slots */
    return slot;
}

/* The next slot to hand out of c, which has room. */
static inline uint32_t free_list_pop(chunk *c)
{
    uint32_t slot = c->free_head;
    if (slot == NO_SLOT)
        return bump_take(c);
    if (hm_tracking())
        free_list_next_tracked(c, block_at(c, slot));
    else
        memcpy(&c->free_head, block_at(c, slot), sizeof(uint32_t));
    return slot;
}

/* Folds the blocks other threads freed back into l's chunks. By l's owner, with the heap lock held. */
static void local_drain(heap *h, local *l)
{
    while (l->pending_chunks) {
        chunk *c = l->pending_chunks;
        l->pending_chunks = c->next_pending;
        c->next_pending = NULL;
        atomic_store_explicit(&c->has_pending, false, memory_order_relaxed);
        _Atomic uint32_t *sites = atomic_load_explicit(&c->sites, memory_order_relaxed);
        atomic_store_explicit(&c->free_slow, sites != NULL, memory_order_relaxed);
        c->pending_blocks = 0;
        for (uint32_t w = 0; w < (c->slots + 63) / 64; w++) {
            uint64_t pending = relaxed(&c->pending[w]);
            atomic_store_explicit(&c->pending[w], 0, memory_order_relaxed);
            for (; pending; pending &= pending - 1) {
                uint32_t slot = w * 64 + (uint32_t)__builtin_ctzll(pending);
                /* Free already: the owner freed it too, racing the remote Free (a double free in the user's
                 * program), and counted it out. (Had the owner handed the slot out again meanwhile, the remote Free
                 * frees the new block: no allocator can tell that order of events from the racy one.) */
                if (!slot_size_of(c, slot))
                    continue;
                if (sites)
                    atomic_store_explicit(&sites[slot], 0, memory_order_relaxed);
                slot_clear(c, slot);
                c->live--;
                free_list_push(c, slot);
            }
        }
        if (!c->in_partial && c->live < c->capacity)
            partial_push(l, c);
        if (c->live == 0)
            chunk_emptied(h, l, c, true);
    }
    atomic_store_explicit(&l->has_pending, false, memory_order_relaxed);
}

static void local_drain_if_pending(heap *h, local *l)
{
    if (atomic_load_explicit(&l->has_pending, memory_order_relaxed)) {
        heap_lock(h);
        local_drain(h, l);
        heap_unlock(h);
    }
}

/* ---- Locals and threads ------------------------------------------------------------------------------------ */

/* The locals a thread owns, so its exit can abandon them. Guarded by threads_lock, which also orders a thread's
 * exit against the destruction of a heap it used (lock order: threads_lock, then a heap's lock). */
struct thread_locals {
    local *first;
};

static pthread_mutex_t threads_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_key_t thread_key;
static pthread_once_t thread_key_once = PTHREAD_ONCE_INIT;
static _Atomic uint64_t next_heap_id = 1;

/* This thread's local of recently used heaps, by heap id. Entries of dead heaps never match again. */
typedef struct local_cache_entry {
    uint64_t heap_id;
    local *local;
} local_cache_entry;
/* The TLS model: see CMakeLists.txt. Initial-exec in the static library: a plain %fs-relative load, where the
 * default model's call to __tls_get_addr would make the fast paths save registers around it. The shared library
 * keeps the default model (it may be dlopen'ed, so it asks for no static TLS), with TLS descriptors where the
 * compiler has them. */
#if defined(HM_HEAP_TLS_INITIAL_EXEC)
#define HM_TLS_MODEL __attribute__((tls_model("initial-exec")))
#else
#define HM_TLS_MODEL
#endif
static _Thread_local local_cache_entry local_cache[LOCAL_CACHE_SIZE] HM_TLS_MODEL;
/* The entry the thread used last, at a fixed address: the fast paths compare and load it without computing an
 * index. */
static _Thread_local local_cache_entry local_last HM_TLS_MODEL;

static void thread_exit(void *arg)
{
    thread_locals *t = arg;
    pthread_mutex_lock(&threads_lock);
    for (local *l = t->first, *next; l; l = next) {
        next = l->next_in_thread;
        heap *h = l->heap;
        heap_lock(h);
        l->thread = NULL;
        l->next_abandoned = h->abandoned;
        h->abandoned = l;
        heap_unlock(h);
    }
    pthread_mutex_unlock(&threads_lock);
    free(t);
    memset(local_cache, 0, sizeof local_cache);
    memset(&local_last, 0, sizeof local_last);
}

static void make_thread_key(void) { pthread_key_create(&thread_key, thread_exit); }

/* fork(): threads_lock, and each heap's spin lock (the forking thread took it, so the child's unlock is its own). */
static hm_fork_entry threads_fork;
static pthread_once_t threads_fork_once = PTHREAD_ONCE_INIT;
static void threads_fork_register(void) { hm__fork_register_mutex(&threads_fork, &threads_lock, HM_FORK_HEAP_THREADS); }
static void fork_lock(void *obj) { heap_lock(obj); }
static void fork_unlock(void *obj) { heap_unlock(obj); }

/* A new local of h: the heap's own first_local the first time. Heap lock held, or no other user yet. */
static local *local_new(heap *h)
{
    local *l = &h->first_local; /* zeroed with the heap */
    if (h->first_local_taken) {
        if (!(l = hm__os_aligned_alloc(CACHE_LINE, sizeof *l)))
            return NULL;
        memset(l, 0, sizeof *l);
    }
    h->first_local_taken = true;
    chunk_set_init(&l->chunks);
    l->heap = h;
    return l;
}

static void local_free(heap *h, local *l)
{
    chunk_set_free(&l->chunks);
    if (l != &h->first_local)
        hm__os_aligned_free(l);
}

/* Publishes l in the heap's list (read by statistics without the lock). Heap lock held, or no other user yet. */
static void local_publish(heap *h, local *l)
{
    l->next_in_heap = atomic_load_explicit(&h->locals, memory_order_relaxed);
    atomic_store_explicit(&h->locals, l, memory_order_release);
}

/* This thread's local of thread-safe heap h, adopting an abandoned one or making one when `create`; NULL when
 * there is none (or no memory for one). */
static local *local_attach(heap *h, bool create)
{
    pthread_once(&thread_key_once, make_thread_key);
    thread_locals *t = pthread_getspecific(thread_key);
    if (!t) {
        if (!create || !(t = calloc(1, sizeof *t)))
            return NULL;
        if (pthread_setspecific(thread_key, t) != 0) {
            free(t);
            return NULL;
        }
    }
    pthread_mutex_lock(&threads_lock);
    local *l = t->first;
    while (l && l->heap != h)
        l = l->next_in_thread;
    if (!l && create) {
        heap_lock(h);
        if ((l = h->abandoned) != NULL)
            h->abandoned = l->next_abandoned;
        else if ((l = local_new(h)) != NULL)
            local_publish(h, l);
        if (l)
            l->thread = t;
        heap_unlock(h);
        if (l) {
            l->next_in_thread = t->first;
            if (t->first)
                t->first->prev_in_thread = &l->next_in_thread;
            t->first = l;
            l->prev_in_thread = &t->first;
        }
    }
    pthread_mutex_unlock(&threads_lock);
    if (l && !hm_tracking()) /* while a tool watches, every call takes the slow path */
        local_cache[h->id % LOCAL_CACHE_SIZE] = (local_cache_entry){h->id, l};
    return l;
}

/* This thread's local of h when the thread-local cache has it (always for single-threaded heaps), else NULL. */
static inline local *local_cached_safe(heap *h)
{
    uint64_t id = h->id;
    if (likely(local_last.heap_id == id))
        return local_last.local;
    local_cache_entry *e = &local_cache[id % LOCAL_CACHE_SIZE];
    if (e->heap_id != id)
        return NULL;
    local_last = *e; /* a thread alternating between heaps pays this copy, not the slow path */
    return e->local;
}

static inline local *local_cached(heap *h) { return h->threadsafe ? local_cached_safe(h) : h->only; }

/* What the fast paths get for a thread without a cached local (and, for every thread, while a tool watches): no
 * chunk of any class, an empty chunk set, so that they take their slow path without testing for it. */
static chunk *const no_chunk_slots[1];
static local no_local = {.chunks = {.slots = (chunk **)no_chunk_slots}};

static inline local *local_fast_safe(heap *h)
{
    if (likely(local_last.heap_id == h->id))
        return local_last.local; /* never NULL: ids start at 1, and an entry is only ever set to a local */
    local *l = local_cached_safe(h);
    return l ? l : &no_local;
}

static inline local *local_of(heap *h, bool create)
{
    local *l = local_cached(h);
    return l ? l : local_attach(h, create);
}

/* ---- Sites (DebugAlloc's file and line) ------------------------------------------------------------------ */

/* Under the heap lock. */
static uint32_t site_intern(heap *h, const char *file, int line)
{
    const char *name = file ? file : "(null)";
    for (size_t i = 1; i < h->nsites; i++)
        if (h->sites[i].line == line && strcmp(h->sites[i].file, name) == 0)
            return (uint32_t)i;
    if (h->nsites == h->cap_sites) {
        size_t cap = h->cap_sites * 2;
        site *grown = realloc(h->sites == h->first_sites ? NULL : h->sites, cap * sizeof *grown);
        if (!grown)
            return 0;
        if (h->sites == h->first_sites)
            memcpy(grown, h->first_sites, sizeof h->first_sites);
        h->sites = grown;
        h->cap_sites = cap;
    }
    char *copy = strdup(name);
    if (!copy)
        return 0;
    h->sites[h->nsites] = (site){copy, line};
    return (uint32_t)h->nsites++;
}

/* Records slot's site in c's site array, making the array on the first DebugAlloc (without memory for it, the
 * block is reported as a plain Alloc). By the owner. */
static void site_record(chunk *c, uint32_t slot, uint32_t site_id)
{
    _Atomic uint32_t *sites = atomic_load_explicit(&c->sites, memory_order_relaxed);
    if (!sites) {
        if (!site_id || !(sites = calloc(c->slots, sizeof *sites)))
            return;
        atomic_store_explicit(&c->sites, sites, memory_order_release);
        atomic_store_explicit(&c->free_slow, true, memory_order_relaxed);
    }
    atomic_store_explicit(&sites[slot], site_id, memory_order_relaxed);
}

static uint32_t block_site(chunk *c, uint32_t slot)
{
    _Atomic uint32_t *sites = atomic_load_explicit(&c->sites, memory_order_acquire);
    return sites ? atomic_load_explicit(&sites[slot], memory_order_relaxed) : 0;
}

/* ---- Alloc ----------------------------------------------------------------------------------------------------- */

/* Hands out free slot `slot` of small chunk c for a block of `request` bytes. The site is stored before the size
 * (release), for reports reading from other threads. */
static void *hand_out(local *l, chunk *c, uint32_t slot, size_t request, uint32_t site_id)
{
    if (site_id || atomic_load_explicit(&c->sites, memory_order_relaxed))
        site_record(c, slot, site_id);
    slot_set(c, slot, (uint32_t)request);
    if (++c->live == c->capacity && c->in_partial)
        partial_remove(l, c); /* full: the next Alloc of this class goes straight to the next chunk */
    void *p = block_at(c, slot);
    hm_track_unpoison(p, request);
    hm_track_malloc(p, request);
    return p;
}

/* Large blocks (a chunk each) belong to the heap, not to a thread's local, so any thread frees them at once; all
 * their bookkeeping is under the heap lock (they cost a call to the source anyway). */
static HRESULT allocate_large(heap *h, size_t request, EMemoryCriticalLevel level, uint32_t site_id, void **ppMem)
{
    size_t bytes = (chunk_header_size(1, false) + request + CHUNK_SIZE - 1) & ~(CHUNK_SIZE - 1);
    void *mem = NULL;
    heap_lock(h);
    HRESULT hr = chunk_set_reserve(&h->all) != 0 ? E_OUTOFMEMORY : h->source.alloc(h->source.ctx, bytes, level, &mem);
    if (FAILED(hr) || !mem) {
        heap_unlock(h);
        return FAILED(hr) ? hr : E_OUTOFMEMORY;
    }
    chunk *c = chunk_format(h, NULL, mem, bytes, LARGE_CLASS, request);
    if (site_id)
        site_record(c, 0, site_id);
    atomic_store_explicit(&c->marks[0], 1, memory_order_release); /* live (the size is large_size) */
    c->bump = c->live = 1;
    pthread_mutex_lock(&h->chunks_lock);
    chunk_set_put(&h->all, c);
    pthread_mutex_unlock(&h->chunks_lock);
    heap_unlock(h);
    hm_track_unpoison(c->first_slot, request);
    hm_track_malloc(c->first_slot, request);
    *ppMem = c->first_slot;
    return S_OK;
}

/* Everything: the thread's first use of the heap, full chunks, pending remote frees, new chunks, large blocks,
 * sites, tracking. */
static HRESULT __attribute__((noinline)) allocate_slow(heap *h, size_t request, EMemoryCriticalLevel level,
                                                       uint32_t site_id, void **ppMem)
{
    if (request > SMALL_LIMIT)
        return allocate_large(h, request, level, site_id, ppMem);
    local *l = local_of(h, true);
    if (!l)
        return E_OUTOFMEMORY;
    chunk *c;
    HRESULT hr;
    uint32_t cls = class_of_request[(request - 1) >> 4];
    /* The fast path leaves a chunk that filled up at the head of its list: take it off here. */
    while ((c = l->partial[cls]) != NULL && c->free_head == NO_SLOT && c->bump == c->slots)
        partial_remove(l, c);
    if (!c) {
        local_drain_if_pending(h, l);
        while ((c = l->partial[cls]) != NULL && c->free_head == NO_SLOT && c->bump == c->slots)
            partial_remove(l, c);
    }
    if (!c) {
        if (FAILED(hr = chunk_new(h, l, cls, level, &c)))
            return hr;
        partial_push(l, c);
    }
    *ppMem = hand_out(l, c, free_list_pop(c), request, site_id);
    return S_OK;
}

static inline HRESULT check_alloc_args(SIZE_T size, EMemoryCriticalLevel level, void **ppMem)
{
    if (!ppMem)
        return E_POINTER;
    *ppMem = NULL;
    if ((unsigned)level > (unsigned)eProcessCritical)
        return E_INVALIDARG;
    if (size > MAX_REQUEST)
        return E_OUTOFMEMORY;
    return S_OK;
}

/* Alloc when the fast path does not apply: checks the arguments, then everything. */
static HRESULT __attribute__((noinline)) heap_Alloc_slow(IHostMalloc *iface, SIZE_T cbSize,
                                                         EMemoryCriticalLevel eCriticalLevel, void **ppMem)
{
    HRESULT hr = check_alloc_args(cbSize, eCriticalLevel, ppMem);
    if (hr != S_OK)
        return hr;
    return allocate_slow(impl_from_IHostMalloc(iface), cbSize ? cbSize : 1, eCriticalLevel, 0, ppMem);
}

/* The common case: valid arguments, a small block from the current chunk of its class, l this thread's local
 * (no_local when not known yet, and always while a tool watches). A free slot's site is 0 already. Everything else
 * is a tail call to heap_Alloc_slow with the same arguments, so this path saves no registers. */
static inline __attribute__((always_inline)) HRESULT alloc_fast(IHostMalloc *iface, SIZE_T size,
                                                                EMemoryCriticalLevel level, void **ppMem, local *l)
{
    chunk *c;
    if (unlikely(!ppMem || (unsigned)level > (unsigned)eProcessCritical || size - 1 >= SMALL_LIMIT ||
                 !(c = l->partial[class_of_request[(size - 1) >> 4]])))
        return heap_Alloc_slow(iface, size, level, ppMem);
    /* free_list_pop and hand_out, less what the test above ruled out. */
    uint32_t slot = c->free_head;
    char *p;
    if (likely(slot != NO_SLOT)) {
        p = block_at(c, slot);
        memcpy(&c->free_head, p, sizeof(uint32_t));
    } else {
        if (unlikely(c->bump == c->slots))
            return heap_Alloc_slow(iface, size, level, ppMem); /* full: off the list, on to the next chunk */
        slot = bump_take(c);
        p = block_at(c, slot);
    }
    slot_set(c, slot, (uint32_t)size);
    c->live++;
    *ppMem = p;
    return S_OK;
}

static HRESULT STDMETHODCALLTYPE heap_Alloc_single(IHostMalloc *iface, SIZE_T cbSize,
                                                   EMemoryCriticalLevel eCriticalLevel, void **ppMem)
{
    return alloc_fast(iface, cbSize, eCriticalLevel, ppMem, impl_from_IHostMalloc(iface)->fast_only);
}

static HRESULT STDMETHODCALLTYPE heap_Alloc_safe(IHostMalloc *iface, SIZE_T cbSize,
                                                 EMemoryCriticalLevel eCriticalLevel, void **ppMem)
{
    return alloc_fast(iface, cbSize, eCriticalLevel, ppMem, local_fast_safe(impl_from_IHostMalloc(iface)));
}

static HRESULT STDMETHODCALLTYPE heap_DebugAlloc(IHostMalloc *iface, SIZE_T cbSize, EMemoryCriticalLevel eCriticalLevel,
                                                 char *pszFileName, int iLineNo, void **ppMem)
{
    heap *h = impl_from_IHostMalloc(iface);
    HRESULT hr = check_alloc_args(cbSize, eCriticalLevel, ppMem);
    if (hr != S_OK)
        return hr;
    heap_lock(h); /* sites are the heap's, shared by its threads */
    uint32_t site_id = site_intern(h, pszFileName, iLineNo);
    heap_unlock(h);
    return allocate_slow(h, cbSize ? cbSize : 1, eCriticalLevel, site_id, ppMem);
}

/* ---- Free ------------------------------------------------------------------------------------------------------ */

/* Free of a block that is not in the calling thread's local: a large block, another thread's block (a remote
 * free), or none of this heap's. */
static HRESULT __attribute__((noinline)) free_shared(heap *h, void *pMem)
{
    uintptr_t a = (uintptr_t)pMem;
    HRESULT hr = HOST_E_INVALIDOPERATION;
    heap_lock(h);
    chunk *c = chunk_set_find(&h->all, a & ~(uintptr_t)(CHUNK_SIZE - 1));
    uint32_t slot;
    if (c && slot_of_block(c, a, &slot) && slot_size_of(c, slot) && !slot_pending(c, slot)) {
        hm_track_free(pMem);
        if (c->cls == LARGE_CLASS) {
            if (!chunk_release_locked(h, c)) { /* the block lives on: Free fails with nothing changed */
                hm_track_unpoison(pMem, c->large_size);
                hm_track_malloc(pMem, c->large_size);
                hm_track_defined(pMem, c->large_size); /* its contents are what they were */
                heap_unlock(h);
                return E_OUTOFMEMORY;
            }
        } else {
            /* Another thread's block (the only local of a single-threaded heap has all in-service small chunks).
             * Its owner may be handing out or freeing other blocks of c right now: write only what it leaves to
             * the heap lock (the pending bits, counts and list). */
            uint64_t word = relaxed(&c->pending[slot >> 6]);
            atomic_store_explicit(&c->pending[slot >> 6], word | (uint64_t)1 << (slot & 63), memory_order_relaxed);
            c->pending_blocks++;
            local *owner = c->owner;
            if (!atomic_load_explicit(&c->has_pending, memory_order_relaxed)) {
                c->next_pending = owner->pending_chunks;
                owner->pending_chunks = c;
                atomic_store_explicit(&c->has_pending, true, memory_order_relaxed);
                atomic_store_explicit(&c->free_slow, true, memory_order_relaxed);
            }
            atomic_store_explicit(&owner->has_pending, true, memory_order_relaxed);
            hm_track_poison(pMem, c->slot_size);
        }
        hr = S_OK;
    }
    heap_unlock(h);
    return hr;
}

/* The slot of p if p is a live block of chunk c (this thread's), its requested size in *size; else false (a
 * foreign, interior, freed or never handed out pointer). */
static inline bool live_slot(chunk *c, uintptr_t p, uint32_t *slot, uint32_t *size)
{
    if (unlikely(!slot_of_block(c, p, slot)))
        return false;
    *size = slot_size_of(c, *slot);
    /* 0: freed already, or never handed out. Pending: freed already, by another thread. */
    return *size != 0 && !(atomic_load_explicit(&c->has_pending, memory_order_relaxed) && slot_pending(c, *slot));
}

/* Everything: a thread without a cached local, blocks not in its local (large ones, other threads'), tracking,
 * pending blocks in the chunk. */
static HRESULT __attribute__((noinline)) heap_Free_slow(IHostMalloc *iface, void *pMem)
{
    heap *h = impl_from_IHostMalloc(iface);
    if (!pMem)
        return S_OK; /* the CLR passes Free(NULL) through */
    local *l = local_of(h, false);
    uintptr_t a = (uintptr_t)pMem;
    chunk *c = l ? chunk_set_find(&l->chunks, a & ~(uintptr_t)(CHUNK_SIZE - 1)) : NULL;
    if (!c)
        return free_shared(h, pMem);
    uint32_t slot, size;
    if (!live_slot(c, a, &slot, &size))
        return HOST_E_INVALIDOPERATION;
    hm_track_free(pMem);
    _Atomic uint32_t *sites = atomic_load_explicit(&c->sites, memory_order_relaxed);
    if (sites)
        atomic_store_explicit(&sites[slot], 0, memory_order_relaxed); /* a free slot's site is 0 */
    slot_clear(c, slot);
    free_list_push(c, slot);
    if (!c->in_partial)
        partial_push(l, c);
    if (--c->live == 0)
        chunk_emptied(h, l, c, false);
    return S_OK;
}

/* The end of a fast Free whose chunk has room again (back on its class's list) or is now empty. */
static HRESULT __attribute__((noinline)) free_finish(heap *h, local *l, chunk *c)
{
    if (!c->in_partial)
        partial_push(l, c);
    if (c->live == 0)
        chunk_emptied(h, l, c, false);
    return S_OK;
}

/* The common case: a live block of this thread's (l: its local; no_local when not known yet, and always while a
 * tool watches), in a chunk at its home in l's set, without pending blocks or sites. */
static inline __attribute__((always_inline)) HRESULT free_fast(IHostMalloc *iface, void *pMem, local *l)
{
    uintptr_t a = (uintptr_t)pMem, base = a & ~(uintptr_t)(CHUNK_SIZE - 1);
    chunk *c = l->chunks.slots[chunk_set_home(&l->chunks, base)];
    /* c is the chunk based at `base` when it lies in (base, base + 64 KiB): a small chunk's header is never at
     * offset 0, and a NULL entry fails the test even for base 0. */
    if (unlikely((uintptr_t)c - base - 1 >= CHUNK_SIZE - 1 ||
                 atomic_load_explicit(&c->free_slow, memory_order_relaxed)))
        return heap_Free_slow(iface, pMem); /* also Free(NULL), and a chunk away from its home */
    /* slot_of_block, with the offset in the granule: a small chunk's first slot is at its base. */
    uint32_t x = (uint32_t)(a & (CHUNK_SIZE - 1)) * c->slot_inv, k = c->slot_shift;
    uint32_t slot = (x >> k) | (x << (32 - k));
    if (unlikely(slot >= c->slots || !atomic_load_explicit(&c->marks[slot], memory_order_relaxed)))
        return HOST_E_INVALIDOPERATION; /* interior, freed or never handed out */
    slot_clear(c, slot);
    memcpy(pMem, &c->free_head, sizeof(uint32_t));
    c->free_head = slot;
    if (unlikely(--c->live == c->relist_at))
        return free_finish(impl_from_IHostMalloc(iface), l, c);
    return S_OK;
}

static HRESULT STDMETHODCALLTYPE heap_Free_single(IHostMalloc *iface, void *pMem)
{
    return free_fast(iface, pMem, impl_from_IHostMalloc(iface)->fast_only);
}

static HRESULT STDMETHODCALLTYPE heap_Free_safe(IHostMalloc *iface, void *pMem)
{
    return free_fast(iface, pMem, local_fast_safe(impl_from_IHostMalloc(iface)));
}

/* ---- Leaks --------------------------------------------------------------------------------------------------- */

typedef struct site_total {
    uint64_t blocks, bytes;
} site_total;

static int compare_leaks(const void *a, const void *b)
{
    const hm_leak *x = a, *y = b;
    return x->bytes < y->bytes ? 1 : x->bytes > y->bytes ? -1 : 0;
}

/* A live block of the user's: handed out, not freed, not pending (freed by another thread). */
static bool slot_in_use(chunk *c, uint32_t slot) { return slot_size_of(c, slot) && !slot_pending(c, slot); }

/* The live blocks totalled by site, biggest first; returns the count. Called with the lock held. quiescent: nobody
 * else uses the heap (its destruction), so the owners' plain counters may be read: slots past `bump` were never
 * handed out, and a chunk with no live slot has nothing to report. */
static size_t collect_leaks(heap *h, hm_leak **out, bool quiescent)
{
    *out = NULL;
    chunk_set *all = &h->all;
    if (quiescent) { /* most heaps die empty: then no table to total into is needed */
        size_t i = 0;
        while (i <= all->mask && !(all->slots[i] && all->slots[i]->live))
            i++;
        if (i > all->mask)
            return 0;
    }
    site_total *totals = calloc(h->nsites, sizeof *totals);
    if (!totals)
        return 0;
    for (size_t i = 0; i <= all->mask; i++) {
        chunk *c = all->slots[i];
        uint32_t limit = !c ? 0 : !quiescent ? c->slots : !c->live ? 0 : c->bump < c->slots ? c->bump : c->slots;
        for (uint32_t slot = 0; slot < limit; slot++)
            if (slot_in_use(c, slot)) {
                uint32_t site_id = block_site(c, slot);
                if (site_id >= h->nsites)
                    site_id = 0; /* cannot happen: sites are interned before their blocks are handed out */
                totals[site_id].blocks++;
                totals[site_id].bytes += block_size(c, slot);
            }
    }
    size_t n = 0;
    for (size_t i = 0; i < h->nsites; i++)
        n += totals[i].blocks != 0;
    hm_leak *leaks = n ? calloc(n, sizeof *leaks) : NULL;
    size_t k = 0;
    for (size_t i = 0; leaks && i < h->nsites; i++)
        if (totals[i].blocks)
            leaks[k++] = (hm_leak){h->sites[i].file, h->sites[i].line, totals[i].blocks, totals[i].bytes};
    free(totals);
    if (leaks)
        qsort(leaks, k, sizeof *leaks, compare_leaks);
    *out = leaks;
    return leaks ? k : 0;
}

size_t hm__heap_leaks(IHostMalloc *iface, hm_leak *out, size_t max)
{
    heap *h = impl_from_IHostMalloc(iface);
    heap_lock(h);
    hm_leak *leaks;
    size_t n = collect_leaks(h, &leaks, false);
    heap_unlock(h);
    for (size_t i = 0; i < n && i < max; i++)
        out[i] = leaks[i]; /* file names stay valid while the heap lives */
    free(leaks);
    return n;
}

/* ---- Life ---------------------------------------------------------------------------------------------------- */

static void heap_destroy(heap *h)
{
    hm__fork_unregister(&h->fork_lock);
    hm__fork_unregister(&h->fork_chunks);
    /* First, so no exiting thread reaches this heap through its locals any more. */
    pthread_mutex_lock(&threads_lock);
    for (local *l = atomic_load(&h->locals); l; l = l->next_in_heap)
        if (l->thread) {
            *l->prev_in_thread = l->next_in_thread;
            if (l->next_in_thread)
                l->next_in_thread->prev_in_thread = l->prev_in_thread;
            l->thread = NULL;
        }
    pthread_mutex_unlock(&threads_lock);
    pthread_mutex_lock(&h->chunks_lock);
    h->dying = true; /* statistics read from here on find no block */
    pthread_mutex_unlock(&h->chunks_lock);
    hm_leak *leaks;
    size_t n = collect_leaks(h, &leaks, true);
    /* Blocks still live die with the heap: tell Valgrind, so they are reported by our leak report, not as its own. */
    chunk_set *all = &h->all;
    for (size_t i = 0; i <= all->mask; i++) {
        chunk *c = all->slots[i];
        if (!c)
            continue;
#if defined(HM_TRACK_VALGRIND)
        if (hm__track_valgrind) /* (a walk of every slot, for nothing when Valgrind is not watching) */
            for (uint32_t slot = 0; slot < c->slots; slot++)
                if (slot_in_use(c, slot))
                    hm_track_free(block_at(c, slot));
#endif
        free(atomic_load_explicit(&c->sites, memory_order_relaxed));
        hm_track_unpoison((void *)chunk_base(c), c->bytes);
        hm_track_defined((void *)chunk_base(c), c->bytes);
        /* A chunk the source cannot take back stays reserved and committed in it (and in its statistics): the
         * heap is going, there is no one to give it to. */
        h->source.release(h->source.ctx, (void *)chunk_base(c), c->bytes);
    }
    for (local *l = atomic_load(&h->locals), *next; l; l = next) {
        next = l->next_in_heap;
        local_free(h, l);
    }
    hm_page_source source = h->source;
    /* The report outlives the heap's strings only for the duration of the call below. */
    source.on_destroy(source.ctx, leaks, n);
    free(leaks);
    for (size_t i = 1; i < h->nsites; i++)
        free(h->sites[i].file);
    if (h->sites != h->first_sites)
        free(h->sites);
    chunk_set_free(&h->all);
    pthread_mutex_destroy(&h->chunks_lock);
    hm__os_aligned_free(h);
}

static HRESULT STDMETHODCALLTYPE heap_QueryInterface(IHostMalloc *iface, REFIID riid, void **ppv)
{
    return hm_com_query(iface, &IID_IHostMalloc, riid, ppv);
}

static ULONG STDMETHODCALLTYPE heap_AddRef(IHostMalloc *iface)
{
    return atomic_fetch_add(&impl_from_IHostMalloc(iface)->ref, 1) + 1;
}

static ULONG STDMETHODCALLTYPE heap_Release(IHostMalloc *iface)
{
    heap *h = impl_from_IHostMalloc(iface);
    ULONG left = atomic_fetch_sub(&h->ref, 1) - 1;
    if (left == 0)
        heap_destroy(h);
    return left;
}

/* One vtable each for single-threaded and thread-safe heaps: the fast paths find the local without a test. */
static const IHostMallocVtbl heap_vtbl_single = {heap_QueryInterface, heap_AddRef,     heap_Release,
                                                 heap_Alloc_single,   heap_DebugAlloc, heap_Free_single};
static const IHostMallocVtbl heap_vtbl_safe = {heap_QueryInterface, heap_AddRef,     heap_Release,
                                               heap_Alloc_safe,     heap_DebugAlloc, heap_Free_safe};

HRESULT hm__heap_create(const hm_page_source *source, DWORD malloc_type, IHostMalloc **out)
{
    if (!out)
        return E_POINTER;
    *out = NULL;
    if (!source || !source->alloc || !source->release || !source->on_destroy)
        return E_INVALIDARG;
    if (malloc_type & ~(DWORD)(MALLOC_THREADSAFE | MALLOC_EXECUTABLE))
        return E_INVALIDARG;
    pthread_once(&classes_once, build_classes);
    heap *h = hm__os_aligned_alloc(CACHE_LINE, sizeof(heap));
    if (!h)
        return E_OUTOFMEMORY;
    memset(h, 0, sizeof *h);
    bool threadsafe = (malloc_type & MALLOC_THREADSAFE) != 0;
    chunk_set_init(&h->all);
    local *only = threadsafe ? NULL : local_new(h); /* the heap's first_local: cannot fail */
    pthread_mutex_init(&h->chunks_lock, NULL);
    hm__fork_register_mutex(&h->fork_chunks, &h->chunks_lock, HM_FORK_HEAP_CHUNKS);
    h->IHostMalloc_iface.lpVtbl = threadsafe ? &heap_vtbl_safe : &heap_vtbl_single;
    atomic_init(&h->ref, 1);
    h->id = atomic_fetch_add(&next_heap_id, 1);
    h->source = *source;
    h->type = malloc_type;
    h->threadsafe = threadsafe;
    pthread_once(&threads_fork_once, threads_fork_register);
    h->fork_lock = (hm_fork_entry){.rank = HM_FORK_HEAP, .obj = h, .lock = fork_lock, .unlock = fork_unlock,
                                   .child = fork_unlock};
    hm__fork_register(&h->fork_lock);
    if (only) {
        h->only = only;
        h->fast_only = hm_tracking() ? &no_local : only;
        local_publish(h, only);
    }
    h->sites = h->first_sites;
    h->cap_sites = sizeof h->first_sites / sizeof h->first_sites[0];
    h->sites[0] = (site){(char *)"(Alloc)", 0};
    h->nsites = 1;
    *out = &h->IHostMalloc_iface;
    return S_OK;
}

bool hm__heap_is_builtin(IHostMalloc *iface)
{
    return iface && (iface->lpVtbl == &heap_vtbl_safe || iface->lpVtbl == &heap_vtbl_single);
}

void hm__heap_usage(IHostMalloc *iface, uint64_t *blocks, uint64_t *bytes)
{
    heap *h = impl_from_IHostMalloc(iface);
    uint64_t n = 0, total = 0;
    pthread_mutex_lock(&h->chunks_lock);
    chunk_set *all = &h->all;
    for (size_t i = 0; !h->dying && i <= all->mask; i++) {
        chunk *c = all->slots[i];
        for (uint32_t slot = 0; c && slot < c->slots; slot++) {
            /* Relaxed reads of what the owners write as they go: each block is seen live or free. */
            uint32_t size = slot_size_of(c, slot);
            if (size && !slot_pending(c, slot)) {
                n++;
                total += c->cls == LARGE_CLASS ? c->large_size : size;
            }
        }
    }
    pthread_mutex_unlock(&h->chunks_lock);
    *blocks = n;
    *bytes = total;
}

static int compare_addresses(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)*(chunk *const *)a, y = (uintptr_t)*(chunk *const *)b;
    return x < y ? -1 : x > y;
}

/* One chunk's invariants; adds its live and pending blocks to the totals. */
static int check_chunk(heap *h, chunk *c, uint64_t *live_total, uint64_t *pending_total, char *msg, size_t msglen)
{
    if (c->magic != CHUNK_MAGIC || c->heap != h ||
        (c->spare                 ? c->live != 0 || c->in_partial
         : c->cls == LARGE_CLASS ? c->owner != NULL || c->live != 1
                                 : chunk_set_find(&c->owner->chunks, chunk_base(c)) != c)) {
        snprintf(msg, msglen, "chunk %p: bad magic, heap or owner, or a spare in use", (void *)c);
        return -1;
    }
    uint32_t reserved = c->reserved_hi - c->reserved_lo, handed = c->bump - (c->bump >= c->reserved_hi ? reserved : 0);
    if (c->span != c->slots * c->slot_size || c->bump > c->slots || c->live > c->capacity ||
        (c->cls != LARGE_CLASS && (uintptr_t)c->first_slot != chunk_base(c)) ||
        c->capacity != c->slots - reserved || (c->bump > c->reserved_lo && c->bump < c->reserved_hi) ||
        (c->cls != LARGE_CLASS && !c->spare &&
         (c->in_partial ? c->relist_at != 0 : c->relist_at != relist_level(c) || c->live <= c->relist_at))) {
        snprintf(msg, msglen, "chunk %p: bad geometry", (void *)c);
        return -1;
    }
    uint32_t live = 0, pending = 0;
    for (uint32_t s = 0; s < c->slots; s++) {
        bool is_live = slot_size_of(c, s) != 0, is_pending = slot_pending(c, s);
        if ((is_live && (s >= c->bump || (s >= c->reserved_lo && s < c->reserved_hi))) || (is_pending && !is_live) ||
            (!is_live && block_site(c, s) != 0) ||
            (c->cls != LARGE_CLASS && slot_size_of(c, s) > c->slot_size)) {
            snprintf(msg, msglen, "chunk %p: slot %u size %u pending %d, %u handed out", (void *)c, s,
                     slot_size_of(c, s), is_pending, c->bump);
            return -1;
        }
        live += is_live;
        pending += is_pending;
    }
    if (pending != c->pending_blocks || (pending != 0) != atomic_load(&c->has_pending) ||
        atomic_load(&c->free_slow) != (pending != 0 || atomic_load(&c->sites) != NULL)) {
        snprintf(msg, msglen, "chunk %p: %u pending blocks, %llu counted", (void *)c, pending,
                 (unsigned long long)c->pending_blocks);
        return -1;
    }
    uint32_t listed = 0;
    for (uint32_t s = c->free_head; s != NO_SLOT; listed++) {
        if (s >= c->bump || (s >= c->reserved_lo && s < c->reserved_hi) || slot_size_of(c, s) || listed > c->slots) {
            snprintf(msg, msglen, "chunk %p: free list holds slot %u, live, repeated or out of range", (void *)c, s);
            return -1;
        }
        char *block = block_at(c, s);
        hm_track_unpoison(block, sizeof s);
        hm_track_defined(block, sizeof s);
        memcpy(&s, block, sizeof s);
        hm_track_poison(block, sizeof s);
        hm_track_noaccess(block, sizeof s);
    }
    if (live != c->live || (c->cls != LARGE_CLASS && listed + live != handed)) {
        snprintf(msg, msglen, "chunk %p: %u live slots, %u counted, %u listed free, %u handed out", (void *)c, live,
                 c->live, listed, c->bump);
        return -1;
    }
    *live_total += live;
    *pending_total += pending;
    return 0;
}

int hm__heap_check(IHostMalloc *iface, char *msg, size_t msglen)
{
    heap *h = impl_from_IHostMalloc(iface);
    int bad = 0;
    uint64_t live_total = 0, pending_total = 0;
    heap_lock(h);
    chunk_set *all = &h->all;
    chunk **sorted = calloc(all->count + 1, sizeof *sorted);
    size_t n = 0;
    for (size_t i = 0; i <= all->mask && sorted; i++)
        if (all->slots[i])
            sorted[n++] = all->slots[i];
    if (!sorted) {
        snprintf(msg, msglen, "out of memory");
        bad = 1;
    } else {
        qsort(sorted, n, sizeof *sorted, compare_addresses);
    }
    for (size_t i = 0; i < n && !bad; i++) {
        if (i > 0 && chunk_base(sorted[i - 1]) + sorted[i - 1]->bytes > chunk_base(sorted[i])) {
            snprintf(msg, msglen, "chunks %p and %p overlap", (void *)sorted[i - 1], (void *)sorted[i]);
            bad = 1;
        } else {
            bad = check_chunk(h, sorted[i], &live_total, &pending_total, msg, msglen) != 0;
        }
    }
    uint64_t blocks, bytes;
    hm__heap_usage(iface, &blocks, &bytes);
    if (!bad && blocks != live_total - pending_total) {
        snprintf(msg, msglen, "%llu live blocks (%llu pending) found, %llu counted", (unsigned long long)live_total,
                 (unsigned long long)pending_total, (unsigned long long)blocks);
        bad = 1;
    }
    heap_unlock(h);
    free(sorted);
    return bad ? -1 : 0;
}

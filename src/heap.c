/* Host heaps (IHostMalloc): see heap.h.
 *
 * Small blocks (up to 32 KiB) come from 64 KiB chunks that each serve one size class; larger blocks get a chunk of
 * their own. The bookkeeping lives in the chunk header, out of the user's reach: each slot's requested size, 0
 * while the slot is free (one 16-bit load tells Free both whether the block is live and how big it is), and, once a
 * DebugAlloc lands in the chunk, each slot's allocation site. Free slots are handed out most recently freed first,
 * through a list threaded through the free blocks, so a new block is usually still in the cache. Free masks the
 * pointer down to its 64 KiB granule and looks that base up in a hash set of the heap's own chunks before touching
 * anything, then checks the pointer is a block start and that its slot is live: foreign pointers, interior
 * pointers and double frees are refused, changing nothing.
 *
 * Threads. A heap's chunks are divided among "locals": a single-threaded heap has one; a thread-safe heap gives
 * each thread that uses it a local of its own (found through a small thread-local cache keyed by heap id), so
 * Alloc, and Free of the thread's own blocks, take no lock and no locked instruction: only the owner thread writes
 * a chunk's sizes, free list and counters. Free of a block another local owns (a "remote" free) takes the heap
 * lock, validates the block against the heap-wide chunk set and sets the slot's bit in the chunk's pending bitmap;
 * the owner folds pending blocks back into its free lists (under the heap lock) before it next asks for a new
 * chunk. A pending block counts as freed (Free refuses it, leak reports skip it). When a thread exits, its locals
 * are abandoned and the next thread that starts using the heap adopts one of them, chunks and all. Large blocks
 * belong to the heap, not to a local: any thread frees them at once, under the heap lock. Emptied chunks are kept
 * as spares for any thread and size class (SPARE_MIN).
 *
 * Alloc and Free have a fast path each, inline and without calls (a call would make every Alloc save registers),
 * for the common case, and a slow path for everything else. */
#include "heap.h"
#include "com.h"

#include "track.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK_SIZE ((size_t)64 << 10)
#define SMALL_LIMIT ((size_t)32 << 10)
#define CHUNK_MAGIC 0x4B4E484348504548ull /* "HEPHCHNK" */
#define LARGE_CLASS UINT32_MAX
#define NO_SLOT UINT32_MAX
#define MAX_REQUEST ((size_t)1 << 40)
#define LOCAL_CACHE_SIZE 8 /* heaps a thread can alternate between without taking the slow path */
/* Emptied chunks a heap keeps for reuse rather than unmapping them and mapping new ones (whose pages fault again):
 * 16 (1 MiB), or half the most it ever had in use, up to 256 (16 MiB). A count, not a time: placement stays
 * deterministic. */
#define SPARE_MIN 16
#define SPARE_MAX 256
/* A small chunk's header starts (base / 64 KiB) % CHUNK_COLORS cache lines into the chunk: at offset 0 every
 * header would fall into the same few cache sets (64 KiB apart), and with a few dozen chunks in use they would
 * keep evicting each other. */
#define CHUNK_COLORS 16
#define CACHE_LINE 64

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

#if defined(HM_TRACK_VALGRIND)
bool hm_track_valgrind;
#endif

/* Size classes (slot sizes): 16..1024 by 16, then by 12.5% steps up to 32 KiB. Slots are multiples of 16 and
 * chunks' first slots 16-aligned, so every block is 16-aligned. */
#define CLASS_COUNT 96
static uint32_t class_size[CLASS_COUNT];
static uint8_t class_of_request[(SMALL_LIMIT >> 4) + 1]; /* (request + 15) / 16 -> the smallest class that fits */
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
    for (uint32_t i = 0, c = 0; i <= (SMALL_LIMIT >> 4); i++) {
        while (class_size[c] < i * 16)
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
    uint32_t slot_recip;   /* ceil(2^32 / slot_size): slot = offset * slot_recip >> 32, exact for offsets < 64 KiB */
    uint32_t span;         /* slots * slot_size: offsets past it are no block */
    uint32_t cls;          /* size class, or LARGE_CLASS */
    uint32_t slots;
    uint32_t live;         /* slots with a block (pending ones included) */
    uint32_t free_head;    /* the most recently freed slot; each free slot's first 4 bytes name the next */
    uint32_t bump;         /* slots ever handed out: those past it are free and on no list */
    bool in_partial;
    atomic_bool has_pending; /* pending bits are set (written under the heap lock) */
    /* Each slot's requested size (large chunks: 1), 0 while free. Written by the owner only, with plain loads and
     * stores; read by remote frees and reports, which is why they are atomics (relaxed: no locked instruction). */
    _Atomic uint16_t *sizes;
    /* Per-slot DebugAlloc site (0 = plain Alloc), malloc'd by the first DebugAlloc that lands here; NULL: all 0.
     * Only the owner writes it; reports read it under the heap lock, which chunk reuse and release take. */
    _Atomic(_Atomic uint32_t *) sites;
    /* The rest. */
    uint64_t magic;
    heap *heap;
    local *owner;          /* the local that hands out and frees its blocks; NULL for large chunks (the heap's) */
    struct chunk *next_partial, *prev_partial; /* next_partial also links the heap's spare chunks */
    struct chunk *next_pending; /* the owner's list of chunks with pending blocks (heap lock) */
    size_t bytes;          /* the chunk's size as the source gave it */
    size_t large_size;     /* large chunks: the requested size */
    uint64_t pending_blocks, pending_bytes; /* the pending blocks' count and sizes (heap lock) */
    bool spare;            /* among the heap's spares, out of service */
    /* One bit per slot: freed by another thread, not yet back on the free list (set and cleared under the heap
     * lock). Followed by sizes. */
    _Atomic uint64_t pending[];
} chunk;
_Static_assert(offsetof(chunk, magic) == CACHE_LINE, "the fast paths' fields fill the chunk's first cache line");

static inline bool slot_pending(chunk *c, uint32_t slot)
{
    return (atomic_load_explicit(&c->pending[slot >> 6], memory_order_relaxed) >> (slot & 63)) & 1;
}

/* The slot's requested size, 0 when it is free. Acquire: a reader that sees a block also sees its site. */
static inline uint32_t slot_size_of(chunk *c, uint32_t slot)
{
    return atomic_load_explicit(&c->sizes[slot], memory_order_acquire);
}

/* Size of the live block in slot. */
static inline uint64_t block_size(chunk *c, uint32_t slot)
{
    return c->cls == LARGE_CLASS ? c->large_size : slot_size_of(c, slot);
}

/* An open-addressing hash set of chunk headers, by chunk base (linear probing, at most half full). */
typedef struct chunk_set {
    chunk **slots;
    size_t mask, count;
    unsigned shift;
} chunk_set;

typedef struct thread_locals thread_locals;

/* Cache-line aligned, so two threads' locals never share a line. */
struct local {
    _Alignas(CACHE_LINE) chunk *partial[CLASS_COUNT]; /* chunks of each class with free slots, current one first */
    chunk_set chunks;            /* this local's chunks: Free's ownership check, read without the heap lock */
    heap *heap;
    /* Written by the owner only, read by statistics from anywhere: relaxed atomics cost no locked instruction. */
    _Atomic uint64_t blocks, bytes;
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
    /* A spin lock, for the rare paths only (new chunks, remote frees, reports); on a line of its own, apart from
     * what every Alloc and Free reads above. */
    _Alignas(CACHE_LINE) atomic_int lock;
    _Atomic(local *) locals;
    local *abandoned; /* locals whose thread exited, for the next thread to adopt */
    chunk_set all;    /* every chunk, spares included (heap lock): for remote frees, reports and the end */
    chunk *spares;    /* empty chunks kept for reuse by any thread and class (heap lock) */
    size_t spare_count;
    size_t chunks_in_use, peak_chunks_in_use; /* small chunks serving a local (heap lock) */
    site *sites;
    size_t nsites, cap_sites;
    /* Blocks freed remotely and not yet drained by their owner, and large blocks (heap lock; read by statistics). */
    _Atomic uint64_t remote_blocks, remote_bytes;
    _Atomic uint64_t large_blocks, large_bytes;
};

/* Only one thread writes: a relaxed load and store, no locked instruction. */
static inline void counter_add(_Atomic uint64_t *counter, uint64_t delta)
{
    atomic_store_explicit(counter, atomic_load_explicit(counter, memory_order_relaxed) + delta, memory_order_relaxed);
}

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

/* The slot whose block starts at p, or false when p is no block start of chunk c. */
static inline bool slot_of_block(const chunk *c, uintptr_t p, uint32_t *out)
{
    uintptr_t offset = p - (uintptr_t)c->first_slot; /* wraps to huge when p is before the first slot */
    if (offset >= c->span)
        return false;
    uint32_t slot = (uint32_t)((offset * c->slot_recip) >> 32);
    if ((uintptr_t)slot * c->slot_size != offset)
        return false;
    *out = slot;
    return true;
}

/* ---- Chunk sets -------------------------------------------------------------------------------------------- */

/* The 64 KiB granule a chunk starts at: its header lies in the chunk's first 64 KiB. */
static inline uintptr_t chunk_base(const chunk *c) { return (uintptr_t)c & ~(uintptr_t)(CHUNK_SIZE - 1); }

static inline size_t chunk_set_home(const chunk_set *s, uintptr_t base)
{
    return (size_t)(((base >> 16) * 0x9E3779B97F4A7C15ull) >> s->shift);
}

static int chunk_set_init(chunk_set *s, unsigned bits)
{
    s->slots = calloc((size_t)1 << bits, sizeof *s->slots);
    s->mask = ((size_t)1 << bits) - 1;
    s->shift = 64 - bits;
    s->count = 0;
    return s->slots ? 0 : -1;
}

static void chunk_set_put(chunk_set *s, chunk *c)
{
    size_t k = chunk_set_home(s, chunk_base(c));
    while (s->slots[k])
        k = (k + 1) & s->mask;
    s->slots[k] = c;
    s->count++;
}

/* Makes room for one more chunk (keeping the set at most half full); -1 when memory is short. */
static int chunk_set_reserve(chunk_set *s)
{
    if ((s->count + 1) * 2 <= s->mask + 1)
        return 0;
    chunk_set grown;
    if (chunk_set_init(&grown, 64 - s->shift + 1) != 0)
        return -1;
    for (size_t i = 0; i <= s->mask; i++)
        if (s->slots[i])
            chunk_set_put(&grown, s->slots[i]);
    free(s->slots);
    *s = grown;
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

static size_t chunk_header_size(uint32_t slots)
{
    return (sizeof(chunk) + (slots + 63) / 64 * sizeof(uint64_t) + slots * sizeof(uint16_t) + 15) & ~(size_t)15;
}

static void partial_push(local *l, chunk *c)
{
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
    counter_add(&h->remote_blocks, 0 - c->pending_blocks);
    counter_add(&h->remote_bytes, 0 - c->pending_bytes);
    c->pending_blocks = c->pending_bytes = 0;
    for (uint32_t w = 0; w < (c->slots + 63) / 64; w++)
        atomic_store_explicit(&c->pending[w], 0, memory_order_relaxed);
    atomic_store_explicit(&c->has_pending, false, memory_order_relaxed);
}

/* Lays the chunk at base (bytes long, zeroed or an empty spare) out for class cls, every slot free, for local l;
 * returns its header. Heap lock held: remote frees may read the fields of a spare being reused. */
static chunk *chunk_format(heap *h, local *l, char *base, size_t bytes, uint32_t cls, size_t large_size)
{
    uint32_t slot_size, slots;
    size_t color = cls != LARGE_CLASS ? (((uintptr_t)base / CHUNK_SIZE) % CHUNK_COLORS) * CACHE_LINE : 0;
    chunk *c = (chunk *)(base + color);
    if (cls != LARGE_CLASS) {
        size_t room = CHUNK_SIZE - color;
        slot_size = class_size[cls];
        slots = (uint32_t)((room - sizeof(chunk)) / slot_size);
        while (chunk_header_size(slots) + (size_t)slots * slot_size > room)
            slots--;
    } else {
        slot_size = (uint32_t)CHUNK_SIZE;
        slots = 1;
    }
    size_t header = chunk_header_size(slots);
    hm_track_unpoison(c, header);
    hm_track_defined(c, header);
    free(atomic_load_explicit(&c->sites, memory_order_relaxed));
    memset(c, 0, header);
    c->magic = CHUNK_MAGIC;
    c->heap = h;
    c->owner = l;
    c->bytes = bytes;
    c->large_size = large_size;
    c->cls = cls;
    c->slot_size = slot_size;
    c->slot_recip = (uint32_t)(((uint64_t)1 << 32) / slot_size + ((((uint64_t)1 << 32) % slot_size) != 0));
    c->slots = slots;
    c->span = slots * slot_size;
    c->free_head = NO_SLOT;
    c->sizes = (_Atomic uint16_t *)(c->pending + (slots + 63) / 64);
    c->first_slot = (char *)c + header;
    /* The colour's gap and the slots are nobody's until handed out. */
    hm_track_poison(base, color);
    hm_track_noaccess(base, color);
    hm_track_poison(c->first_slot, bytes - color - header);
    hm_track_noaccess(c->first_slot, bytes - color - header);
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
        c = chunk_format(h, l, (char *)chunk_base(c), c->bytes, cls, 0); /* same colour, same header address */
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
        chunk_set_put(&h->all, c); /* remote frees see it only from here, complete */
    }
    if (++h->chunks_in_use > h->peak_chunks_in_use)
        h->peak_chunks_in_use = h->chunks_in_use;
    heap_unlock(h);
    chunk_set_put(&l->chunks, c);
    *out = c;
    return S_OK;
}

/* Gives chunk c back to the source. Heap lock held. */
static void chunk_release_locked(heap *h, chunk *c)
{
    chunk_set_remove(&h->all, c);
    free(atomic_load_explicit(&c->sites, memory_order_relaxed));
    /* The memory goes back to the manager, which may hand it out again as plain pages. */
    hm_track_unpoison((void *)chunk_base(c), c->bytes);
    hm_track_defined((void *)chunk_base(c), c->bytes);
    h->source.release(h->source.ctx, (void *)chunk_base(c), c->bytes);
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
    if (h->spare_count < (keep < SPARE_MIN ? SPARE_MIN : keep > SPARE_MAX ? SPARE_MAX : keep)) {
        c->next_partial = h->spares;
        c->spare = true;
        h->spares = c;
        h->spare_count++;
        return;
    }
    chunk_release_locked(h, c);
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

/* The next slot to hand out of c, which has room. */
static inline uint32_t free_list_pop(chunk *c)
{
    uint32_t slot = c->free_head;
    if (slot == NO_SLOT)
        return c->bump++;
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
        counter_add(&h->remote_blocks, 0 - c->pending_blocks);
        counter_add(&h->remote_bytes, 0 - c->pending_bytes);
        c->pending_blocks = c->pending_bytes = 0;
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
                counter_add(&l->blocks, (uint64_t)-1);
                counter_add(&l->bytes, 0 - (uint64_t)slot_size_of(c, slot));
                atomic_store_explicit(&c->sizes[slot], 0, memory_order_relaxed);
                c->live--;
                free_list_push(c, slot);
            }
        }
        if (!c->in_partial && c->live < c->slots)
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
static _Thread_local local_cache_entry local_cache[LOCAL_CACHE_SIZE];

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
}

static void make_thread_key(void) { pthread_key_create(&thread_key, thread_exit); }

static local *local_new(heap *h)
{
    local *l = aligned_alloc(CACHE_LINE, sizeof *l);
    if (l)
        memset(l, 0, sizeof *l);
    if (!l || chunk_set_init(&l->chunks, 6) != 0) {
        free(l);
        return NULL;
    }
    l->heap = h;
    return l;
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
    if (l)
        local_cache[h->id % LOCAL_CACHE_SIZE] = (local_cache_entry){h->id, l};
    return l;
}

/* This thread's local of h when the thread-local cache has it (always for single-threaded heaps), else NULL. */
static inline local *local_cached(heap *h)
{
    if (!h->threadsafe)
        return h->only;
    local_cache_entry *e = &local_cache[h->id % LOCAL_CACHE_SIZE];
    return likely(e->heap_id == h->id) ? e->local : NULL;
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
        site *grown = realloc(h->sites, cap * sizeof *grown);
        if (!grown)
            return 0;
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
    atomic_store_explicit(&c->sizes[slot], (uint16_t)request, memory_order_release);
    if (++c->live == c->slots && c->in_partial)
        partial_remove(l, c); /* full: the next Alloc of this class goes straight to the next chunk */
    counter_add(&l->blocks, 1);
    counter_add(&l->bytes, request);
    void *p = block_at(c, slot);
    hm_track_unpoison(p, request);
    hm_track_malloc(p, request);
    return p;
}

/* Large blocks (a chunk each) belong to the heap, not to a thread's local, so any thread frees them at once; all
 * their bookkeeping is under the heap lock (they cost a call to the source anyway). */
static HRESULT allocate_large(heap *h, size_t request, EMemoryCriticalLevel level, uint32_t site_id, void **ppMem)
{
    size_t bytes = (chunk_header_size(1) + request + CHUNK_SIZE - 1) & ~(CHUNK_SIZE - 1);
    void *mem = NULL;
    heap_lock(h);
    HRESULT hr = chunk_set_reserve(&h->all) != 0 ? E_OUTOFMEMORY : h->source.alloc(h->source.ctx, bytes, level, &mem);
    if (FAILED(hr) || !mem) {
        heap_unlock(h);
        return FAILED(hr) ? hr : E_OUTOFMEMORY;
    }
    chunk *c = chunk_format(h, NULL, mem, bytes, LARGE_CLASS, request);
    chunk_set_put(&h->all, c);
    if (site_id)
        site_record(c, 0, site_id);
    atomic_store_explicit(&c->sizes[0], 1, memory_order_release); /* live (the size is large_size) */
    c->bump = c->live = 1;
    counter_add(&h->large_blocks, 1);
    counter_add(&h->large_bytes, request);
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
    uint32_t cls = class_of_request[(request + 15) >> 4];
    /* Chunks leave the list when they fill up, so the first one, if any, has room. */
    if (!l->partial[cls])
        local_drain_if_pending(h, l);
    if (!(c = l->partial[cls])) {
        if (FAILED(hr = chunk_new(h, l, cls, level, &c)))
            return hr;
        partial_push(l, c);
    }
    *ppMem = hand_out(l, c, free_list_pop(c), request, site_id);
    return S_OK;
}

/* The common case: a small block from the current chunk of its class, no site, no tool watching. */
static inline __attribute__((always_inline)) HRESULT allocate(heap *h, SIZE_T size, EMemoryCriticalLevel level,
                                                                uint32_t site_id, void **ppMem)
{
    local *l = local_cached(h);
    size_t request = size ? size : 1; /* malloc(0)-like: a unique, valid block */
    chunk *c;
    if (unlikely(!l || request > SMALL_LIMIT || site_id || hm_tracking() ||
                 !(c = l->partial[class_of_request[(request + 15) >> 4]]) ||
                 atomic_load_explicit(&c->sites, memory_order_relaxed)))
        return allocate_slow(h, request, level, site_id, ppMem);
    /* free_list_pop and hand_out, less what the test above ruled out. */
    uint32_t slot = c->free_head;
    if (slot == NO_SLOT)
        slot = c->bump++;
    else
        memcpy(&c->free_head, block_at(c, slot), sizeof(uint32_t));
    atomic_store_explicit(&c->sizes[slot], (uint16_t)request, memory_order_release);
    if (unlikely(++c->live == c->slots))
        partial_remove(l, c);
    counter_add(&l->blocks, 1);
    counter_add(&l->bytes, request);
    *ppMem = block_at(c, slot);
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

static HRESULT STDMETHODCALLTYPE heap_Alloc(IHostMalloc *iface, SIZE_T cbSize, EMemoryCriticalLevel eCriticalLevel,
                                            void **ppMem)
{
    HRESULT hr = check_alloc_args(cbSize, eCriticalLevel, ppMem);
    if (unlikely(hr != S_OK))
        return hr;
    return allocate(impl_from_IHostMalloc(iface), cbSize, eCriticalLevel, 0, ppMem);
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
    return allocate(h, cbSize, eCriticalLevel, site_id, ppMem);
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
        uint64_t size = block_size(c, slot);
        hm_track_free(pMem);
        if (c->cls == LARGE_CLASS) {
            counter_add(&h->large_blocks, (uint64_t)-1);
            counter_add(&h->large_bytes, 0 - size);
            chunk_release_locked(h, c);
        } else {
            /* Another thread's block (the only local of a single-threaded heap has all in-service small chunks).
             * Its owner may be handing out or freeing other blocks of c right now: write only what it leaves to
             * the heap lock (the pending bits, counts and list). */
            uint64_t word = relaxed(&c->pending[slot >> 6]);
            atomic_store_explicit(&c->pending[slot >> 6], word | (uint64_t)1 << (slot & 63), memory_order_relaxed);
            c->pending_blocks++;
            c->pending_bytes += size;
            local *owner = c->owner;
            if (!atomic_load_explicit(&c->has_pending, memory_order_relaxed)) {
                c->next_pending = owner->pending_chunks;
                owner->pending_chunks = c;
                atomic_store_explicit(&c->has_pending, true, memory_order_relaxed);
            }
            atomic_store_explicit(&owner->has_pending, true, memory_order_relaxed);
            counter_add(&h->remote_blocks, 1);
            counter_add(&h->remote_bytes, size);
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
    *size = atomic_load_explicit(&c->sizes[*slot], memory_order_relaxed);
    /* 0: freed already, or never handed out. Pending: freed already, by another thread. */
    return *size != 0 && !(atomic_load_explicit(&c->has_pending, memory_order_relaxed) && slot_pending(c, *slot));
}

/* Everything: a thread without a cached local, blocks not in its local (large ones, other threads'), tracking. */
static HRESULT __attribute__((noinline)) free_slow(heap *h, void *pMem)
{
    local *l = local_of(h, false);
    uintptr_t a = (uintptr_t)pMem;
    chunk *c = l ? chunk_set_find(&l->chunks, a & ~(uintptr_t)(CHUNK_SIZE - 1)) : NULL;
    if (!c)
        return free_shared(h, pMem);
    uint32_t slot, size;
    if (!live_slot(c, a, &slot, &size))
        return HOST_E_INVALIDOPERATION;
    hm_track_free(pMem);
    atomic_store_explicit(&c->sizes[slot], 0, memory_order_relaxed);
    free_list_push(c, slot);
    counter_add(&l->blocks, (uint64_t)-1);
    counter_add(&l->bytes, 0 - (uint64_t)size);
    if (!c->in_partial)
        partial_push(l, c);
    if (--c->live == 0)
        chunk_emptied(h, l, c, false);
    return S_OK;
}

static HRESULT __attribute__((noinline)) free_emptied(heap *h, local *l, chunk *c)
{
    chunk_emptied(h, l, c, false);
    return S_OK;
}

/* The common case: a block of this thread's, no tool watching. */
static HRESULT STDMETHODCALLTYPE heap_Free(IHostMalloc *iface, void *pMem)
{
    heap *h = impl_from_IHostMalloc(iface);
    if (!pMem)
        return S_OK; /* the CLR passes Free(NULL) through */
    local *l = local_cached(h);
    uintptr_t a = (uintptr_t)pMem;
    chunk *c;
    if (unlikely(!l || hm_tracking() || !(c = chunk_set_find(&l->chunks, a & ~(uintptr_t)(CHUNK_SIZE - 1)))))
        return free_slow(h, pMem);
    uint32_t slot, size;
    if (unlikely(!live_slot(c, a, &slot, &size)))
        return HOST_E_INVALIDOPERATION;
    /* free_slow, less what the test above ruled out. */
    atomic_store_explicit(&c->sizes[slot], 0, memory_order_relaxed);
    memcpy(pMem, &c->free_head, sizeof(uint32_t));
    c->free_head = slot;
    counter_add(&l->blocks, (uint64_t)-1);
    counter_add(&l->bytes, 0 - (uint64_t)size);
    if (unlikely(!c->in_partial))
        partial_push(l, c);
    if (unlikely(--c->live == 0))
        return free_emptied(h, l, c);
    return S_OK;
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
    site_total *totals = calloc(h->nsites, sizeof *totals);
    *out = NULL;
    if (!totals)
        return 0;
    chunk_set *all = &h->all;
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

size_t hm_heap_leaks(IHostMalloc *iface, hm_leak *out, size_t max)
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
    hm_leak *leaks;
    size_t n = collect_leaks(h, &leaks, true);
    /* Blocks still live die with the heap: tell Valgrind, so they are reported by our leak report, not as its own. */
    chunk_set *all = &h->all;
    for (size_t i = 0; i <= all->mask; i++) {
        chunk *c = all->slots[i];
        if (!c)
            continue;
#if defined(HM_TRACK_VALGRIND)
        if (hm_track_valgrind) /* (a walk of every slot, for nothing when Valgrind is not watching) */
            for (uint32_t slot = 0; slot < c->slots; slot++)
                if (slot_in_use(c, slot))
                    hm_track_free(block_at(c, slot));
#endif
        free(atomic_load_explicit(&c->sites, memory_order_relaxed));
        hm_track_unpoison((void *)chunk_base(c), c->bytes);
        hm_track_defined((void *)chunk_base(c), c->bytes);
        h->source.release(h->source.ctx, (void *)chunk_base(c), c->bytes);
    }
    for (local *l = atomic_load(&h->locals), *next; l; l = next) {
        next = l->next_in_heap;
        free(l->chunks.slots);
        free(l);
    }
    hm_page_source source = h->source;
    /* The report outlives the heap's strings only for the duration of the call below. */
    source.on_destroy(source.ctx, leaks, n);
    free(leaks);
    for (size_t i = 1; i < h->nsites; i++)
        free(h->sites[i].file);
    free(h->sites);
    free(h->all.slots);
    free(h);
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

static const IHostMallocVtbl heap_vtbl = {heap_QueryInterface, heap_AddRef,     heap_Release,
                                          heap_Alloc,          heap_DebugAlloc, heap_Free};

HRESULT hm_heap_create(const hm_page_source *source, DWORD malloc_type, IHostMalloc **out)
{
    if (!out)
        return E_POINTER;
    *out = NULL;
    if (!source || !source->alloc || !source->release || !source->on_destroy)
        return E_INVALIDARG;
    if (malloc_type & ~(DWORD)(MALLOC_THREADSAFE | MALLOC_EXECUTABLE))
        return E_INVALIDARG;
    pthread_once(&classes_once, build_classes);
    heap *h = aligned_alloc(CACHE_LINE, sizeof(heap));
    site *sites = calloc(8, sizeof *sites);
    if (h)
        memset(h, 0, sizeof *h);
    bool threadsafe = (malloc_type & MALLOC_THREADSAFE) != 0;
    local *only = h && !threadsafe ? local_new(h) : NULL;
    if (!h || !sites || chunk_set_init(&h->all, 6) != 0 || (!threadsafe && !only)) {
        if (only)
            free(only->chunks.slots);
        free(only);
        if (h)
            free(h->all.slots);
        free(h);
        free(sites);
        return E_OUTOFMEMORY;
    }
    h->IHostMalloc_iface.lpVtbl = &heap_vtbl;
    atomic_init(&h->ref, 1);
    h->id = atomic_fetch_add(&next_heap_id, 1);
    h->source = *source;
    h->type = malloc_type;
    h->threadsafe = threadsafe;
    if (only) {
        h->only = only;
        local_publish(h, only);
    }
    h->sites = sites;
    h->cap_sites = 8;
    h->sites[0] = (site){(char *)"(Alloc)", 0};
    h->nsites = 1;
    *out = &h->IHostMalloc_iface;
    return S_OK;
}

bool hm_heap_is_builtin(IHostMalloc *iface) { return iface && iface->lpVtbl == &heap_vtbl; }

void hm_heap_usage(IHostMalloc *iface, uint64_t *blocks, uint64_t *bytes)
{
    heap *h = impl_from_IHostMalloc(iface);
    /* Remote frees first: a block freed by another thread after this read is still counted, never twice gone. */
    uint64_t freed_blocks = relaxed(&h->remote_blocks), freed_bytes = relaxed(&h->remote_bytes);
    uint64_t total_blocks = relaxed(&h->large_blocks), total_bytes = relaxed(&h->large_bytes);
    for (local *l = atomic_load_explicit(&h->locals, memory_order_acquire); l; l = l->next_in_heap) {
        total_blocks += relaxed(&l->blocks);
        total_bytes += relaxed(&l->bytes);
    }
    /* A drain between the two reads can make the difference dip below zero for a moment. */
    *blocks = total_blocks > freed_blocks ? total_blocks - freed_blocks : 0;
    *bytes = total_bytes > freed_bytes ? total_bytes - freed_bytes : 0;
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
    if (c->span != c->slots * c->slot_size || c->bump > c->slots || c->live > c->slots) {
        snprintf(msg, msglen, "chunk %p: bad geometry", (void *)c);
        return -1;
    }
    uint32_t live = 0, pending = 0;
    for (uint32_t s = 0; s < c->slots; s++) {
        bool is_live = slot_size_of(c, s) != 0, is_pending = slot_pending(c, s);
        if ((is_live && s >= c->bump) || (is_pending && !is_live) ||
            (c->cls != LARGE_CLASS && slot_size_of(c, s) > c->slot_size)) {
            snprintf(msg, msglen, "chunk %p: slot %u size %u pending %d, %u handed out", (void *)c, s,
                     slot_size_of(c, s), is_pending, c->bump);
            return -1;
        }
        live += is_live;
        pending += is_pending;
    }
    if (pending != c->pending_blocks || (pending != 0) != atomic_load(&c->has_pending)) {
        snprintf(msg, msglen, "chunk %p: %u pending blocks, %llu counted", (void *)c, pending,
                 (unsigned long long)c->pending_blocks);
        return -1;
    }
    uint32_t listed = 0;
    for (uint32_t s = c->free_head; s != NO_SLOT; listed++) {
        if (s >= c->bump || slot_size_of(c, s) || listed > c->slots) {
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
    if (live != c->live || (c->cls != LARGE_CLASS && listed + live != c->bump)) {
        snprintf(msg, msglen, "chunk %p: %u live slots, %u counted, %u listed free, %u handed out", (void *)c, live,
                 c->live, listed, c->bump);
        return -1;
    }
    *live_total += live;
    *pending_total += pending;
    return 0;
}

int hm_heap_check(IHostMalloc *iface, char *msg, size_t msglen)
{
    heap *h = impl_from_IHostMalloc(iface);
    int bad = 0;
    uint64_t live_total = 0, pending_total = 0, counted = relaxed(&h->large_blocks);
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
    for (local *l = atomic_load(&h->locals); l; l = l->next_in_heap)
        counted += relaxed(&l->blocks);
    if (!bad && (live_total != counted || pending_total != relaxed(&h->remote_blocks))) {
        snprintf(msg, msglen, "%llu live blocks (%llu pending) found, %llu (%llu) counted",
                 (unsigned long long)live_total, (unsigned long long)pending_total, (unsigned long long)counted,
                 (unsigned long long)relaxed(&h->remote_blocks));
        bad = 1;
    }
    heap_unlock(h);
    free(sorted);
    return bad ? -1 : 0;
}

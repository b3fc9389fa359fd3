/* Host heaps (IHostMalloc): see heap.h.
 *
 * Small blocks (up to 32 KiB) come from 64 KiB chunks that each serve one size class; larger blocks get a chunk of
 * their own. Every block has a 16-byte header in front (requested size, allocation site) and a bit in its chunk's
 * live bitmap, kept out of the user's reach in the chunk header: Free finds the chunk by binary search over the
 * heap's own chunks, checks the pointer is a block start and that its bit is set, so foreign pointers, interior
 * pointers and double frees are refused without touching anything. */
#include "heap.h"
#include "com.h"

#include "track.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK_SIZE ((size_t)64 << 10)
#define BLOCK_HEADER 16u
#define SMALL_LIMIT ((size_t)32 << 10)
#define CHUNK_MAGIC 0x4B4E484348504548ull /* "HEPHCHNK" */
#define LARGE_CLASS UINT32_MAX
#define NO_SLOT UINT32_MAX
#define MAX_REQUEST ((size_t)1 << 40)

/* Size classes (slot sizes, header included): 32..1024 by 16, then by 12.5% steps up to 32 KiB + header. */
#define CLASS_COUNT 96
static uint32_t class_size[CLASS_COUNT];
static uint32_t class_count;
static uint8_t class_of_small[(1024 >> 4) + 1]; /* slot size / 16 -> class, for slots up to 1024 */
static pthread_once_t classes_once = PTHREAD_ONCE_INIT;

static void build_classes(void)
{
    uint32_t n = 0;
    for (uint32_t s = 32; s <= 1024; s += 16)
        class_size[n++] = s;
    for (uint32_t s = 1024; s < SMALL_LIMIT + BLOCK_HEADER;) {
        s += (s / 8 + 15) & ~15u;
        if (s > SMALL_LIMIT + BLOCK_HEADER)
            s = (uint32_t)(SMALL_LIMIT + BLOCK_HEADER);
        class_size[n++] = s;
    }
    class_count = n;
    for (uint32_t i = 0, c = 0; i <= (1024 >> 4); i++) {
        while (class_size[c] < i * 16)
            c++;
        class_of_small[i] = (uint8_t)c;
    }
}

static uint32_t class_for(size_t slot)
{
    if (slot <= 1024)
        return class_of_small[(slot + 15) >> 4];
    uint32_t lo = (1024 - 32) / 16, hi = class_count - 1;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (class_size[mid] >= slot)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

typedef struct block_header {
    uint32_t size;      /* requested size (large blocks: low 32 bits; the chunk has the rest) */
    uint32_t site;      /* index into the heap's sites; 0 = plain Alloc */
    uint32_t next_free; /* while free: the next free slot of the chunk */
    uint32_t unused;
} block_header;

typedef struct heap heap;

typedef struct chunk {
    uint64_t magic;
    heap *owner;
    size_t bytes;            /* the chunk's size as the source gave it */
    size_t large_size;       /* large chunks: the requested size */
    uint32_t cls;            /* size class, or LARGE_CLASS */
    uint32_t slot_size, slots, used_slots; /* used_slots: slots ever handed out (the bump pointer) */
    uint32_t live, free_head;
    struct chunk *next_partial, *prev_partial;
    bool in_partial;
    char *first_slot;
    uint64_t live_bits[]; /* one bit per slot */
} chunk;

typedef struct site {
    char *file;
    int line;
} site;

struct heap {
    IHostMalloc IHostMalloc_iface;
    _Atomic ULONG ref;
    hm_page_source source;
    DWORD type;
    bool threadsafe;
    atomic_int lock; /* a spin lock: critical sections are a few dozen instructions, and a futex convoy under
                        contention costs far more than spinning on them */
    chunk *partial[CLASS_COUNT]; /* chunks of each class with free slots */
    chunk **chunks;              /* every chunk, sorted by address */
    size_t nchunks, cap_chunks;
    chunk **table;               /* open-addressing hash of chunk bases >> 16, for O(1) ownership checks */
    size_t table_mask;           /* table size - 1 (a power of two, at least twice the chunk count) */
    site *sites;
    size_t nsites, cap_sites;
    /* Written only under the heap's lock (or by its one user), read by statistics from anywhere: relaxed atomics
     * cost no locked instruction. */
    _Atomic uint64_t live_blocks, live_bytes;
};

/* Only the lock holder writes: a relaxed load and store, no locked instruction. */
static inline void counter_add(_Atomic uint64_t *counter, uint64_t delta)
{
    atomic_store_explicit(counter, atomic_load_explicit(counter, memory_order_relaxed) + delta, memory_order_relaxed);
}

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

static block_header *header_of(chunk *c, uint32_t slot)
{
    return (block_header *)(c->first_slot + (size_t)slot * c->slot_size);
}

static bool bit_get(const chunk *c, uint32_t i) { return (c->live_bits[i >> 6] >> (i & 63)) & 1; }
static void bit_flip(chunk *c, uint32_t i) { c->live_bits[i >> 6] ^= (uint64_t)1 << (i & 63); }

/* ---- Chunks --------------------------------------------------------------------------------------------- */

static size_t chunk_header_size(uint32_t slots)
{
    return (sizeof(chunk) + ((slots + 63) / 64) * sizeof(uint64_t) + 15) & ~(size_t)15;
}

static size_t slot_of(const heap *h, uintptr_t base) { return (size_t)((base >> 16) * 0x9E3779B97F4A7C15ull >> 7) & h->table_mask; }

static int table_grow(heap *h)
{
    size_t size = h->table ? (h->table_mask + 1) * 2 : 64;
    chunk **table = calloc(size, sizeof *table);
    if (!table)
        return -1;
    chunk **old = h->table;
    size_t old_size = old ? h->table_mask + 1 : 0;
    h->table = table;
    h->table_mask = size - 1;
    for (size_t i = 0; i < old_size; i++)
        if (old[i]) {
            size_t k = slot_of(h, (uintptr_t)old[i]);
            while (h->table[k])
                k = (k + 1) & h->table_mask;
            h->table[k] = old[i];
        }
    free(old);
    return 0;
}

static void table_insert(heap *h, chunk *c)
{
    size_t k = slot_of(h, (uintptr_t)c);
    while (h->table[k])
        k = (k + 1) & h->table_mask;
    h->table[k] = c;
}

/* Linear-probing removal by shifting later entries back, so lookups never need tombstones. */
static void table_remove(heap *h, chunk *c)
{
    size_t k = slot_of(h, (uintptr_t)c);
    while (h->table[k] != c)
        k = (k + 1) & h->table_mask;
    h->table[k] = NULL;
    for (size_t j = (k + 1) & h->table_mask; h->table[j]; j = (j + 1) & h->table_mask) {
        size_t want = slot_of(h, (uintptr_t)h->table[j]);
        /* Move entry j into the hole at k if its home is not in (k, j]. */
        if ((j > k && (want <= k || want > j)) || (j < k && (want <= k && want > j))) {
            h->table[k] = h->table[j];
            h->table[j] = NULL;
            k = j;
        }
    }
}

static int chunk_index_insert(heap *h, chunk *c)
{
    if ((h->nchunks + 1) * 2 > (h->table ? h->table_mask + 1 : 0) && table_grow(h) != 0)
        return -1;
    if (h->nchunks == h->cap_chunks) {
        size_t cap = h->cap_chunks ? h->cap_chunks * 2 : 16;
        chunk **grown = realloc(h->chunks, cap * sizeof *grown);
        if (!grown)
            return -1;
        h->chunks = grown;
        h->cap_chunks = cap;
    }
    size_t i = h->nchunks;
    while (i > 0 && (uintptr_t)h->chunks[i - 1] > (uintptr_t)c) {
        h->chunks[i] = h->chunks[i - 1];
        i--;
    }
    h->chunks[i] = c;
    h->nchunks++;
    table_insert(h, c);
    return 0;
}

/* The chunk of this heap that holds block pointer p, or NULL. Every block starts in the first 64 KiB of its chunk
 * (chunks are 64 KiB-aligned), so p's granule is the chunk's base when p is a block of ours; anything else misses. */
static chunk *chunk_find(heap *h, uintptr_t p)
{
    if (!h->table)
        return NULL;
    uintptr_t base = p & ~(uintptr_t)(CHUNK_SIZE - 1);
    for (size_t k = slot_of(h, base); h->table[k]; k = (k + 1) & h->table_mask)
        if ((uintptr_t)h->table[k] == base)
            return h->table[k];
    return NULL;
}

static void partial_push(heap *h, chunk *c)
{
    c->prev_partial = NULL;
    c->next_partial = h->partial[c->cls];
    if (c->next_partial)
        c->next_partial->prev_partial = c;
    h->partial[c->cls] = c;
    c->in_partial = true;
}

static void partial_remove(heap *h, chunk *c)
{
    if (c->prev_partial)
        c->prev_partial->next_partial = c->next_partial;
    else
        h->partial[c->cls] = c->next_partial;
    if (c->next_partial)
        c->next_partial->prev_partial = c->prev_partial;
    c->in_partial = false;
}

static HRESULT chunk_new(heap *h, uint32_t cls, size_t large_size, EMemoryCriticalLevel level, chunk **out)
{
    size_t bytes = CHUNK_SIZE;
    uint32_t slot_size, slots;
    if (cls == LARGE_CLASS) {
        size_t need = chunk_header_size(1) + BLOCK_HEADER + large_size;
        bytes = (need + CHUNK_SIZE - 1) & ~(CHUNK_SIZE - 1);
        slot_size = 0;
        slots = 1;
    } else {
        slot_size = class_size[cls];
        slots = (uint32_t)((CHUNK_SIZE - sizeof(chunk)) / slot_size);
        while (chunk_header_size(slots) + (size_t)slots * slot_size > CHUNK_SIZE)
            slots--;
    }
    void *mem = NULL;
    HRESULT hr = h->source.alloc(h->source.ctx, bytes, level, &mem);
    if (FAILED(hr) || !mem)
        return FAILED(hr) ? hr : E_OUTOFMEMORY;
    chunk *c = mem;
    c->magic = CHUNK_MAGIC;
    c->owner = h;
    c->bytes = bytes;
    c->large_size = large_size;
    c->cls = cls;
    c->slot_size = slot_size;
    c->slots = slots;
    c->free_head = NO_SLOT;
    c->first_slot = (char *)c + chunk_header_size(slots);
    if (chunk_index_insert(h, c) != 0) {
        h->source.release(h->source.ctx, mem, bytes);
        return E_OUTOFMEMORY;
    }
    /* The slots are nobody's until handed out. */
    hm_track_poison(c->first_slot, bytes - chunk_header_size(slots));
    hm_track_noaccess(c->first_slot, bytes - chunk_header_size(slots));
    *out = c;
    return S_OK;
}

static void chunk_release(heap *h, chunk *c)
{
    size_t i = 0;
    while (i < h->nchunks && h->chunks[i] != c)
        i++;
    memmove(&h->chunks[i], &h->chunks[i + 1], (h->nchunks - i - 1) * sizeof *h->chunks);
    h->nchunks--;
    table_remove(h, c);
    if (c->in_partial)
        partial_remove(h, c);
    size_t bytes = c->bytes;
    /* The memory goes back to the manager, which may hand it out again as plain pages. */
    hm_track_unpoison(c, bytes);
    hm_track_defined(c, bytes);
    h->source.release(h->source.ctx, c, bytes);
}

/* ---- Sites (DebugAlloc's file and line) ------------------------------------------------------------------ */

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

/* ---- IHostMalloc -------------------------------------------------------------------------------------------- */

static HRESULT heap_allocate(heap *h, SIZE_T size, EMemoryCriticalLevel level, const char *file, int line, bool debug,
                             void **ppMem)
{
    if (!ppMem)
        return E_POINTER;
    *ppMem = NULL;
    if ((unsigned)level > (unsigned)eProcessCritical)
        return E_INVALIDARG;
    if (size > MAX_REQUEST)
        return E_OUTOFMEMORY;
    size_t request = size ? size : 1; /* malloc(0)-like: a unique, valid block */
    size_t slot = request + BLOCK_HEADER;
    heap_lock(h);
    uint32_t site_id = debug ? site_intern(h, file, line) : 0;
    chunk *c;
    uint32_t index;
    HRESULT hr = S_OK;
    if (slot > SMALL_LIMIT + BLOCK_HEADER) {
        hr = chunk_new(h, LARGE_CLASS, request, level, &c);
        index = 0;
    } else {
        uint32_t cls = class_for(slot);
        c = h->partial[cls];
        if (!c) {
            hr = chunk_new(h, cls, 0, level, &c);
            if (SUCCEEDED(hr))
                partial_push(h, c);
        }
        if (SUCCEEDED(hr)) {
            if (c->free_head != NO_SLOT) {
                index = c->free_head;
                block_header *hdr = header_of(c, index);
                hm_track_unpoison(hdr, BLOCK_HEADER);
                hm_track_defined(hdr, BLOCK_HEADER);
                c->free_head = hdr->next_free;
            } else {
                index = c->used_slots++;
            }
            if (c->live + 1 == c->slots)
                partial_remove(h, c);
        }
    }
    if (FAILED(hr)) {
        heap_unlock(h);
        return hr;
    }
    block_header *hdr = (block_header *)(c->cls == LARGE_CLASS ? c->first_slot : (char *)header_of(c, index));
    if (c->cls == LARGE_CLASS)
        c->used_slots = 1;
    hm_track_unpoison(hdr, BLOCK_HEADER);
    hm_track_defined(hdr, BLOCK_HEADER);
    hdr->size = (uint32_t)request;
    hdr->site = site_id;
    hdr->next_free = NO_SLOT;
    bit_flip(c, index);
    c->live++;
    counter_add(&h->live_blocks, 1);
    counter_add(&h->live_bytes, request);
    heap_unlock(h);
    void *p = (char *)hdr + BLOCK_HEADER;
    hm_track_unpoison(p, request);
    hm_track_malloc(p, request);
    *ppMem = p;
    return S_OK;
}

static HRESULT STDMETHODCALLTYPE heap_Alloc(IHostMalloc *iface, SIZE_T cbSize, EMemoryCriticalLevel eCriticalLevel,
                                            void **ppMem)
{
    return heap_allocate(impl_from_IHostMalloc(iface), cbSize, eCriticalLevel, NULL, 0, false, ppMem);
}

static HRESULT STDMETHODCALLTYPE heap_DebugAlloc(IHostMalloc *iface, SIZE_T cbSize, EMemoryCriticalLevel eCriticalLevel,
                                                 char *pszFileName, int iLineNo, void **ppMem)
{
    return heap_allocate(impl_from_IHostMalloc(iface), cbSize, eCriticalLevel, pszFileName, iLineNo, true, ppMem);
}

/* The block at p, if p is exactly a live block of this heap: its chunk and slot. */
static bool locate_live(heap *h, void *p, chunk **out_chunk, uint32_t *out_slot)
{
    uintptr_t a = (uintptr_t)p;
    chunk *c = chunk_find(h, a);
    if (!c || a < (uintptr_t)c->first_slot + BLOCK_HEADER)
        return false;
    uintptr_t offset = a - BLOCK_HEADER - (uintptr_t)c->first_slot;
    uint32_t slot;
    if (c->cls == LARGE_CLASS) {
        if (offset != 0)
            return false;
        slot = 0;
    } else {
        if (offset % c->slot_size != 0 || offset / c->slot_size >= c->used_slots)
            return false;
        slot = (uint32_t)(offset / c->slot_size);
    }
    if (!bit_get(c, slot))
        return false; /* freed already (or never handed out) */
    *out_chunk = c;
    *out_slot = slot;
    return true;
}

static HRESULT STDMETHODCALLTYPE heap_Free(IHostMalloc *iface, void *pMem)
{
    heap *h = impl_from_IHostMalloc(iface);
    if (!pMem)
        return S_OK; /* the CLR passes Free(NULL) through */
    heap_lock(h);
    chunk *c;
    uint32_t slot;
    if (!locate_live(h, pMem, &c, &slot)) {
        heap_unlock(h);
        return HOST_E_INVALIDOPERATION;
    }
    block_header *hdr = (block_header *)((char *)pMem - BLOCK_HEADER);
    size_t size = c->cls == LARGE_CLASS ? c->large_size : hdr->size;
    hm_track_free(pMem);
    bit_flip(c, slot);
    c->live--;
    counter_add(&h->live_blocks, (uint64_t)-1);
    counter_add(&h->live_bytes, (uint64_t)0 - size);
    if (c->cls == LARGE_CLASS) {
        chunk_release(h, c);
    } else {
        hdr->next_free = c->free_head;
        c->free_head = slot;
        hm_track_poison(hdr, c->slot_size);
        hm_track_noaccess(hdr, c->slot_size);
        if (!c->in_partial)
            partial_push(h, c);
        /* An empty chunk goes back unless it is the only one of its class with room (avoids thrashing). */
        if (c->live == 0 && (c->next_partial || c->prev_partial))
            chunk_release(h, c);
    }
    heap_unlock(h);
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

/* Fills leaks (allocated with n entries) from the live blocks; returns the count. Called with the lock held. */
static size_t collect_leaks(heap *h, hm_leak **out)
{
    site_total *totals = calloc(h->nsites, sizeof *totals);
    *out = NULL;
    if (!totals)
        return 0;
    for (size_t i = 0; i < h->nchunks; i++) {
        chunk *c = h->chunks[i];
        for (uint32_t s = 0; s < c->used_slots; s++) {
            if (!bit_get(c, s))
                continue;
            block_header *hdr = c->cls == LARGE_CLASS ? (block_header *)c->first_slot : header_of(c, s);
            totals[hdr->site].blocks++;
            totals[hdr->site].bytes += c->cls == LARGE_CLASS ? c->large_size : hdr->size;
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
    size_t n = collect_leaks(h, &leaks);
    heap_unlock(h);
    for (size_t i = 0; i < n && i < max; i++)
        out[i] = leaks[i]; /* file names stay valid while the heap lives */
    free(leaks);
    return n;
}

/* ---- Life ---------------------------------------------------------------------------------------------------- */

static void heap_destroy(heap *h)
{
    hm_leak *leaks;
    size_t n = collect_leaks(h, &leaks);
    /* Blocks still live die with the heap: tell Valgrind, so they are reported by our leak report, not as its own. */
    for (size_t i = 0; i < h->nchunks; i++) {
        chunk *c = h->chunks[i];
        for (uint32_t s = 0; s < c->used_slots; s++)
            if (bit_get(c, s))
                hm_track_free((char *)(c->cls == LARGE_CLASS ? (block_header *)c->first_slot : header_of(c, s)) +
                              BLOCK_HEADER);
    }
    while (h->nchunks)
        chunk_release(h, h->chunks[h->nchunks - 1]);
    hm_page_source source = h->source;
    /* The report outlives the heap's strings only for the duration of the call below. */
    source.on_destroy(source.ctx, leaks, n);
    free(leaks);
    for (size_t i = 1; i < h->nsites; i++)
        free(h->sites[i].file);
    free(h->sites);
    free(h->chunks);
    free(h->table);
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
    heap *h = calloc(1, sizeof *h);
    site *sites = calloc(8, sizeof *sites);
    if (!h || !sites) {
        free(h);
        free(sites);
        return E_OUTOFMEMORY;
    }
    h->IHostMalloc_iface.lpVtbl = &heap_vtbl;
    atomic_init(&h->ref, 1);
    h->source = *source;
    h->type = malloc_type;
    h->threadsafe = (malloc_type & MALLOC_THREADSAFE) != 0;

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
    *blocks = atomic_load_explicit(&h->live_blocks, memory_order_relaxed);
    *bytes = atomic_load_explicit(&h->live_bytes, memory_order_relaxed);
}

int hm_heap_check(IHostMalloc *iface, char *msg, size_t msglen)
{
    heap *h = impl_from_IHostMalloc(iface);
    int bad = 0;
    uint64_t blocks = 0;
    heap_lock(h);
    for (size_t i = 0; i < h->nchunks && !bad; i++) {
        chunk *c = h->chunks[i];
        uint32_t live = 0, free_count = 0;
        if (c->magic != CHUNK_MAGIC || c->owner != h) {
            snprintf(msg, msglen, "chunk %p: bad magic or owner", (void *)c);
            bad = 1;
            break;
        }
        if (i > 0 && (uintptr_t)h->chunks[i - 1] + h->chunks[i - 1]->bytes > (uintptr_t)c) {
            snprintf(msg, msglen, "chunks %p and %p overlap", (void *)h->chunks[i - 1], (void *)c);
            bad = 1;
            break;
        }
        for (uint32_t s = 0; s < c->used_slots; s++)
            live += bit_get(c, s);
        for (uint32_t s = c->free_head; s != NO_SLOT && !bad; free_count++) {
            if (s >= c->used_slots || bit_get(c, s) || free_count > c->slots) {
                snprintf(msg, msglen, "chunk %p: free list holds slot %u, live or out of range", (void *)c, s);
                bad = 1;
                break;
            }
            block_header *hdr = header_of(c, s);
            hm_track_unpoison(hdr, BLOCK_HEADER);
            hm_track_defined(hdr, BLOCK_HEADER);
            s = hdr->next_free;
            hm_track_poison(hdr, BLOCK_HEADER);
            hm_track_noaccess(hdr, BLOCK_HEADER);
        }
        if (!bad && (live != c->live || (c->cls != LARGE_CLASS && live + free_count != c->used_slots))) {
            snprintf(msg, msglen, "chunk %p: %u live bits, %u counted, %u free, %u handed out", (void *)c, live,
                     c->live, free_count, c->used_slots);
            bad = 1;
        }
        blocks += live;
    }
    if (!bad && blocks != atomic_load_explicit(&h->live_blocks, memory_order_relaxed)) {
        snprintf(msg, msglen, "%llu live blocks found, %llu counted", (unsigned long long)blocks,
                 (unsigned long long)atomic_load_explicit(&h->live_blocks, memory_order_relaxed));
        bad = 1;
    }
    heap_unlock(h);
    return bad ? -1 : 0;
}

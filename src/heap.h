/* Host heaps (IHostMalloc) of the built-in manager. Internal to hostmem.
 *
 * A heap draws its memory from a page source (the manager's own VirtualAlloc in practice, so the budget and the
 * critical level of each request cover heap memory too) and never from malloc for user blocks. It keeps emptied
 * chunks for reuse (1 MiB, or half the most it ever used, up to 16 MiB), which draws nothing more from the budget.
 *
 * Thread-safe heaps serve each thread from chunks of its own, without locks; a block may be freed by any thread.
 * The same sequence of calls from one thread gives the same addresses when the source does (deterministic mode). */
#ifndef HOSTMEM_SRC_HEAP_H
#define HOSTMEM_SRC_HEAP_H

#include <hostmem/hostmem.h>

#include <stdbool.h>
#include <stddef.h>

typedef struct hm_page_source {
    void *ctx;
    /* size: a multiple of 64 KiB. On success *out is 64 KiB-aligned, committed PAGE_READWRITE and zeroed.
     * Fails with E_OUTOFMEMORY (budget, critical level) or another HRESULT; then *out is NULL. The heap calls
     * alloc and release under its lock: a source used by one heap need not be thread-safe. */
    HRESULT (*alloc)(void *ctx, size_t size, EMemoryCriticalLevel level, void **out);
    /* Returns what alloc gave (same address and size). A failure (the OS would not take the pages back) means the
     * source kept the memory as it was: still the heap's, committed, with its contents. */
    HRESULT (*release)(void *ctx, void *addr, size_t size);
    /* Tells the source the heap is gone, with its leak report (n entries, possibly 0). The entries' strings
     * are valid only during the call. Called once, from the heap's last Release, as the very last use of the
     * source: AFTER every chunk has been returned with release() (the source may free ctx here). */
    void (*on_destroy)(void *ctx, const hm_leak *leaks, size_t n);
} hm_page_source;

/* Creates a heap with one reference. malloc_type: MALLOC_THREADSAFE (1) and/or MALLOC_EXECUTABLE (2); other bits
 * give E_INVALIDARG. A single-threaded heap takes no locks (the caller serializes, as the contract says); a
 * thread-safe one takes its lock only for new chunks, frees of another thread's blocks, large blocks and reports. */
HRESULT hm__heap_create(const hm_page_source *source, DWORD malloc_type, IHostMalloc **out);

/* True when heap is one of ours (its vtable is the built-in heap's). */
bool hm__heap_is_builtin(IHostMalloc *heap);

/* Live blocks and their requested bytes, counted by walking the heap's chunks without stopping its users (their
 * marks are read with relaxed loads) and without the heap lock (only a lock that chunk changes take): callable
 * from a notification callback that the heap's call to its source set off. */
void hm__heap_usage(IHostMalloc *heap, uint64_t *blocks, uint64_t *bytes);

/* Live blocks by (file, line); see HostMemHeapLeaks. */
size_t hm__heap_leaks(IHostMalloc *heap, hm_leak *out, size_t max);

/* Checks the heap's invariants (free lists, marks, pending frees, chunk sets, no overlaps); 0 when sound, else -1 and
 * a message. Reads every thread's bookkeeping: call it while no other thread uses the heap. */
int hm__heap_check(IHostMalloc *heap, char *msg, size_t msglen);

#endif

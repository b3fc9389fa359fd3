/* Virtual memory with Windows' semantics: reservations, page states, regions, protections. Internal to hostmem.
 *
 * Address space comes from the OS layer in spans (large reserved mappings); reservations are carved from them
 * at 64 KiB granularity without a system call, so a million reservations cost no kernel mappings. A request at
 * an address outside every span (or larger than a span) gets a dedicated span of its own.
 *
 * Books: spans sorted by address; in each shared span, one owner pointer per 64 KiB granule (O(1) lookup of the
 * reservation holding an address) and a bitmap of used granules (placement); per reservation, its pages as
 * runs of equal protection (0 = reserved, else the committed protection, PAGE_GUARD included), so VirtualQuery
 * is two lookups and a binary search, with no system call.
 *
 * Every function is thread-safe (one read-write lock per vm; queries share it). A function that fails changes
 * nothing: neither the books nor the mappings. Results are HRESULTs as the contract wants them. */
#ifndef HOSTMEM_SRC_VM_H
#define HOSTMEM_SRC_VM_H

#include "budget.h"
#include "os.h"

#include <hostmem/hostmem.h>

#include <stdbool.h>
#include <stdint.h>

typedef struct hm_vm hm_vm;

typedef struct hm_vm_config {
    const hm_os *os;          /* &hm__os_linux or &hm__os_sim (hm__os_backend); on Windows &hm__os_win32 */
    hm_budget *budget;        /* commits are charged here at the caller's critical level; NULL: no budget */
    size_t span_size;         /* bytes per shared span (rounded to 64 KiB); 0: 16 GiB */
    uintptr_t base;           /* where the first span should go (0: anywhere; the kernel decides) */
    bool deterministic;       /* spans at `base` (a fixed default when 0) and next to each other, so the same
                                 calls give the same addresses on every run */
} hm_vm_config;

/* The address deterministic mode uses when no base is given: far from where Linux puts libraries, heaps and
 * stacks, and inside the application range of ASan and TSan. */
#define HM_VM_DETERMINISTIC_BASE ((uintptr_t)0x7e9000000000)

HRESULT hm__vm_create(const hm_vm_config *config, hm_vm **out);
/* Releases every reservation and span. */
void hm__vm_destroy(hm_vm *vm);
/* Puts the vm back to its state just after hm__vm_create: every reservation released (its commit uncharged), every
 * statistic zero, spans placed as a new vm would place them. Cheaper than destroy and create: spans stay mapped as
 * spares (their committed pages are decommitted, so they read as zero again; dedicated ones only up to 16 of at most
 * 256 MiB, and only until the next reset if unused) and are reused where a new vm would map a span of that kind and
 * size. See hm__vm_spare for answering queries about them. Not while another thread uses the vm. */
void hm__vm_reset(hm_vm *vm);

/* VirtualAlloc: *out gets the reservation base (reserve) or the page-rounded address (commit, reset). */
HRESULT hm__vm_alloc(hm_vm *vm, uintptr_t address, size_t size, DWORD type, DWORD protect, EMemoryCriticalLevel level,
                    uintptr_t *out);
/* VirtualFree. `zero`: the freed pages must read as zero when committed again. false is the caller vouching that
 * it never wrote them: a backend that does not enforce protections (sim) then leaves them as they are. */
HRESULT hm__vm_free(hm_vm *vm, uintptr_t address, size_t size, DWORD type, bool zero);
/* VirtualProtect. On failure *old is PAGE_NOACCESS (as current Windows writes). */
HRESULT hm__vm_protect(hm_vm *vm, uintptr_t address, size_t size, DWORD protect, DWORD *old);
/* VirtualQuery for an address inside one of the vm's spans: S_OK with *info filled. S_FALSE when the address is
 * in none of them (the caller answers from the process map). */
HRESULT hm__vm_query(hm_vm *vm, uintptr_t address, MEMORY_BASIC_INFORMATION *info);
/* Whether address lies in one of the vm's spans. */
bool hm__vm_owns(hm_vm *vm, uintptr_t address);
/* Whether address lies in a spare span (mapped, but out of the books since hm__vm_reset: free space as far as the
 * vm's users can tell); if so, its bounds. */
bool hm__vm_spare(hm_vm *vm, uintptr_t address, uintptr_t *start, uintptr_t *end);

/* A fault at address: if it is a PAGE_GUARD page of this vm, clears the guard on that page, restores its
 * protection and returns true (the access can be retried); false otherwise. Called from the SIGSEGV handler. */
bool hm__vm_handle_guard_fault(hm_vm *vm, uintptr_t address);

typedef struct hm_vm_stats {
    uint64_t reservations, reserved_bytes, committed_bytes, peak_committed_bytes, guard_trips;
    uint32_t spans;
} hm_vm_stats;
void hm__vm_get_stats(hm_vm *vm, hm_vm_stats *out);

/* Checks every invariant of the books; 0 when sound, else -1 with a message. */
int hm__vm_check(hm_vm *vm, char *msg, size_t msglen);

/* Win32 protections as Linux's (hm__protect_is_valid, which checks them, is in vm_args.h). */
int hm__protect_to_unix(DWORD protect); /* HM_PROT_* bits; PAGE_GUARD pages are HM_PROT_NONE */

#endif

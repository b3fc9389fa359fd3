/* The address-space ledger: memory the runtime takes from the OS itself (Needs/Acquired/Released
 * VirtualAddressSpace). Internal to hostmem.
 *
 * The CLR calls NeedsVirtualAddressSpace only after a MapViewOfFile failed (asking the host to make room),
 * AcquiredVirtualAddressSpace after each successful map, and ReleasedVirtualAddressSpace after each unmap
 * (the CLR's own MapViewOfFile wrappers in SSCLI 2.0 and CoreCLR). The ledger records acquired ranges (they charge the budget) and checks the calls
 * for consistency; every inconsistency is logged (kept in a bounded list, and printed to stderr when the
 * HOSTMEM_LOG environment variable is set) and answered as below. */
#ifndef HOSTMEM_SRC_LEDGER_H
#define HOSTMEM_SRC_LEDGER_H

#include "budget.h"

#include <hostmem/hostmem.h>

#include <stdint.h>

typedef struct hm_ledger hm_ledger;

hm_ledger *hm__ledger_create(hm_budget *budget);
void hm__ledger_destroy(hm_ledger *l); /* uncharges what is left */
/* Back to the state hm__ledger_create gave (what is left uncharged, nothing recorded or logged), keeping its memory. */
void hm__ledger_reset(hm_ledger *l);

/* Needs: size 0 means unknown (whole file): S_OK. Otherwise S_OK when size fits the budget at
 * eAppDomainCritical's ceiling, else E_OUTOFMEMORY. */
HRESULT hm__ledger_needs(hm_ledger *l, uintptr_t start, uint64_t size);
/* Acquired: start NULL or size 0 -> E_INVALIDARG (logged); overlap with an acquired range -> HOST_E_INVALIDOPERATION
 * (logged, nothing recorded). Otherwise recorded and charged (eProcessCritical: the memory is already taken,
 * so it is charged even over the limit). Acquired without a preceding Needs is normal for the CLR: S_OK. */
HRESULT hm__ledger_acquired(hm_ledger *l, uintptr_t start, uint64_t size);
/* (Size 0, as SSCLI passes for a whole-file view, is measured from the process map: the mapped run at start.) */
/* Released: unknown start -> HOST_E_INVALIDOPERATION (logged); else removes and uncharges: S_OK. */
HRESULT hm__ledger_released(hm_ledger *l, uintptr_t start);

uint64_t hm__ledger_ranges(hm_ledger *l);
uint64_t hm__ledger_bytes(hm_ledger *l);
/* The last `max` inconsistencies as text lines, oldest first; returns how many were logged in all. */
size_t hm__ledger_problems(hm_ledger *l, char (*out)[160], size_t max);
/* Invariants (sorted, disjoint, totals match); 0 or -1 with a message. */
int hm__ledger_check(hm_ledger *l, char *msg, size_t msglen);

#endif

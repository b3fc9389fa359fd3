/* The VM of the Windows manager (vm.h), passing every call through to the system: VirtualAlloc, VirtualFree,
 * VirtualProtect and VirtualQuery do the work, hostmem keeps its policy on top.
 *
 * Books: the reservations made through this vm, sorted by base, each with the bytes committed in it. A commit is
 * charged to the budget (at the caller's critical level, before the system call: a refusal is E_OUTOFMEMORY and
 * the system never sees the call) for the pages that change state only, which VirtualQuery tells first; a decommit
 * or release uncharges what it frees. Commits, decommits, resets and protections of memory this vm did not reserve
 * are refused with ERROR_INVALID_ADDRESS, as the Linux manager refuses them (its books know only its own
 * reservations; the manager turns a VirtualFree of someone else's mapping into HOST_E_INVALIDOPERATION), so the
 * books and the budget stay those of the memory the host was asked for. Queries go to the system for any address.
 *
 * Errors: the system's (HRESULT_FROM_WIN32 of its last error), out of memory and the commitment limit as
 * E_OUTOFMEMORY; the checks made before the system call give what the Linux manager gives. The options that place
 * memory (backend=sim, deterministic, base) do not exist here: the system places it. Changes are serialized by one
 * lock, which the system call dominates; queries of the books share it, VirtualQuery takes none. */
#define WIN32_LEAN_AND_MEAN
#include <windows.h>

#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct reservation {
    uintptr_t base, end; /* [the base VirtualAlloc returned, the end of the last page asked for) */
    uint64_t committed;  /* bytes committed through this vm */
} reservation;

struct hm_vm {
    SRWLOCK lock;
    hm_budget *budget;
    reservation *res; /* sorted by base, disjoint */
    size_t n, cap;
    uint64_t reserved_bytes, committed_bytes, peak_committed_bytes;
};

/* The HRESULT of the system call that just failed. */
static HRESULT last_error(void)
{
    DWORD err = GetLastError();
    switch (err) {
    case ERROR_NOT_ENOUGH_MEMORY:
    case ERROR_OUTOFMEMORY:
    case ERROR_COMMITMENT_LIMIT:
        return E_OUTOFMEMORY; /* the contract's out-of-memory answer, as the Linux manager gives for ENOMEM */
    case ERROR_SUCCESS:
        return E_FAIL; /* a failure that did not say why */
    default:
        return HRESULT_FROM_WIN32(err);
    }
}

/* The reservation holding address, or NULL. */
static reservation *find(hm_vm *vm, uintptr_t address)
{
    size_t lo = 0, hi = vm->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (vm->res[mid].base <= address)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo && address < vm->res[lo - 1].end ? &vm->res[lo - 1] : NULL;
}

/* Room for one more reservation, made before the system call so that recording it cannot fail after it. */
static bool room(hm_vm *vm)
{
    if (vm->n < vm->cap)
        return true;
    size_t cap = vm->cap ? vm->cap * 2 : 64;
    reservation *grown = realloc(vm->res, cap * sizeof *grown);
    if (!grown)
        return false;
    vm->res = grown;
    vm->cap = cap;
    return true;
}

static void insert(hm_vm *vm, reservation r)
{
    size_t i = vm->n;
    while (i > 0 && vm->res[i - 1].base > r.base)
        i--;
    memmove(&vm->res[i + 1], &vm->res[i], (vm->n - i) * sizeof *vm->res);
    vm->res[i] = r;
    vm->n++;
    vm->reserved_bytes += r.end - r.base;
}

static void erase(hm_vm *vm, reservation *r)
{
    vm->reserved_bytes -= r->end - r->base;
    size_t i = (size_t)(r - vm->res);
    memmove(&vm->res[i], &vm->res[i + 1], (vm->n - i - 1) * sizeof *vm->res);
    vm->n--;
}

static void account(hm_vm *vm, reservation *r, uint64_t committed, uint64_t decommitted);

/* The system just gave [base, end) to a new reservation: any of the books' reservations there was released behind
 * the vm's back, and goes (uncharged), so the books never hold two reservations at one address. */
static void forget_stale(hm_vm *vm, uintptr_t base, uintptr_t end)
{
    for (size_t i = 0; i < vm->n;) {
        reservation *r = &vm->res[i];
        if (r->base < end && base < r->end) {
            account(vm, r, 0, r->committed);
            erase(vm, r);
        } else {
            i++;
        }
    }
}

static void uncharge(hm_vm *vm, uint64_t bytes);

/* Books bytes newly committed in r (charged before the system call) or decommitted (uncharged here). */
static void account(hm_vm *vm, reservation *r, uint64_t committed, uint64_t decommitted)
{
    r->committed = r->committed + committed - decommitted;
    vm->committed_bytes = vm->committed_bytes + committed - decommitted;
    if (vm->committed_bytes > vm->peak_committed_bytes)
        vm->peak_committed_bytes = vm->committed_bytes;
    uncharge(vm, decommitted);
}

/* Bytes of [first, end) (whole pages) in `state`, as the system says. */
static uint64_t bytes_in_state(uintptr_t first, uintptr_t end, DWORD state)
{
    uint64_t bytes = 0;
    for (uintptr_t p = first; p < end;) {
        MEMORY_BASIC_INFORMATION mbi;
        if (VirtualQuery((const void *)p, &mbi, sizeof mbi) != sizeof mbi)
            break;
        uintptr_t stop = (uintptr_t)mbi.BaseAddress + mbi.RegionSize;
        if (stop <= p)
            break;
        if (stop > end)
            stop = end;
        if (mbi.State == state)
            bytes += stop - p;
        p = stop;
    }
    return bytes;
}

static bool charge(hm_vm *vm, EMemoryCriticalLevel level, uint64_t bytes)
{
    return !bytes || !vm->budget || hm__budget_charge(vm->budget, level, bytes);
}

static void uncharge(hm_vm *vm, uint64_t bytes)
{
    if (bytes && vm->budget)
        hm__budget_uncharge(vm->budget, bytes);
}

HRESULT hm__vm_create(const hm_vm_config *config, hm_vm **out)
{
    *out = NULL;
    if (!config->os) {
        hm__set_error("option backend=sim is not available on Windows: the manager passes every call to the system");
        return E_INVALIDARG;
    }
    if (config->deterministic || config->base) {
        hm__set_error("options deterministic and base are not available on Windows: reservations go where the "
                      "system's VirtualAlloc puts them");
        return E_INVALIDARG;
    }
    hm_vm *vm = calloc(1, sizeof *vm);
    if (!vm)
        return E_OUTOFMEMORY;
    InitializeSRWLock(&vm->lock);
    vm->budget = config->budget;
    *out = vm;
    return S_OK;
}

/* Releases every reservation, uncharging its commit. */
static void release_all(hm_vm *vm)
{
    for (size_t i = 0; i < vm->n; i++) {
        VirtualFree((void *)vm->res[i].base, 0, MEM_RELEASE);
        uncharge(vm, vm->res[i].committed);
    }
    vm->n = 0;
    vm->reserved_bytes = vm->committed_bytes = 0;
}

void hm__vm_destroy(hm_vm *vm)
{
    if (!vm)
        return;
    release_all(vm);
    free(vm->res);
    free(vm);
}

void hm__vm_reset(hm_vm *vm)
{
    AcquireSRWLockExclusive(&vm->lock);
    release_all(vm);
    vm->peak_committed_bytes = 0;
    ReleaseSRWLockExclusive(&vm->lock);
}

/* ---- VirtualAlloc ------------------------------------------------------------------------------------------ */

/* Charges `bytes` at `level`, then calls the real VirtualAlloc; a refusal of either changes nothing. */
static HRESULT charged_alloc(hm_vm *vm, EMemoryCriticalLevel level, uint64_t bytes, uintptr_t address, size_t size,
                             DWORD type, DWORD protect, void **out)
{
    if (!charge(vm, level, bytes))
        return E_OUTOFMEMORY;
    *out = VirtualAlloc((void *)address, size, type, protect);
    if (!*out) {
        HRESULT hr = last_error();
        uncharge(vm, bytes);
        return hr;
    }
    return S_OK;
}

/* A new reservation of [first, end) (first 0: anywhere, end - first bytes), committed too when type says so. */
static HRESULT reserve(hm_vm *vm, uintptr_t address, size_t size, DWORD type, DWORD protect,
                       EMemoryCriticalLevel level, uintptr_t first, uintptr_t end, uintptr_t *out)
{
    uint64_t bytes = (type & MEM_COMMIT) ? end - first : 0;
    if (!room(vm))
        return E_OUTOFMEMORY;
    void *p;
    HRESULT hr = charged_alloc(vm, level, bytes, address, size, type, protect, &p);
    if (FAILED(hr))
        return hr;
    uintptr_t base = (uintptr_t)p, stop = address ? end : base + (end - first);
    forget_stale(vm, base, stop);
    insert(vm, (reservation){base, stop, 0});
    account(vm, find(vm, base), bytes, 0);
    *out = base;
    return S_OK;
}

/* A commit or a reset inside a reservation of this vm. */
static HRESULT change(hm_vm *vm, uintptr_t address, size_t size, DWORD type, DWORD protect,
                      EMemoryCriticalLevel level, uintptr_t first, uintptr_t end, uintptr_t *out)
{
    reservation *r = find(vm, first);
    if (!r || end > r->end)
        return HM_E_INVALID_ADDRESS;
    uint64_t bytes = (type & MEM_COMMIT) ? bytes_in_state(first, end, MEM_RESERVE) : 0;
    void *p;
    HRESULT hr = charged_alloc(vm, level, bytes, address, size, type, protect, &p);
    if (FAILED(hr))
        return hr;
    account(vm, r, bytes, 0);
    *out = (uintptr_t)p;
    return S_OK;
}

HRESULT hm__vm_alloc(hm_vm *vm, uintptr_t address, size_t size, DWORD type, DWORD protect, EMemoryCriticalLevel level,
                     uintptr_t *out)
{
    *out = 0;
    uintptr_t first, end;
    HRESULT hr = hm__vm_check_alloc_type(size, type);
    if (SUCCEEDED(hr))
        hr = hm__vm_page_range(address, size, &first, &end);
    if (FAILED(hr))
        return hr;
    bool new_reservation = (type & MEM_RESERVE) || ((type & MEM_COMMIT) && !address);
    AcquireSRWLockExclusive(&vm->lock);
    hr = new_reservation ? reserve(vm, address, size, type, protect, level, first, end, out)
                         : change(vm, address, size, type, protect, level, first, end, out);
    ReleaseSRWLockExclusive(&vm->lock);
    return hr;
}

/* ---- VirtualFree ------------------------------------------------------------------------------------------- */

HRESULT hm__vm_free(hm_vm *vm, uintptr_t address, size_t size, DWORD type, bool zero)
{
    (void)zero; /* the system always gives decommitted pages back as zero */
    uintptr_t first, end;
    HRESULT hr = hm__vm_check_free(address, size, type, &first, &end);
    if (FAILED(hr))
        return hr;

    AcquireSRWLockExclusive(&vm->lock);
    reservation *r = find(vm, first);
    if (!r) {
        hr = HM_E_INVALID_ADDRESS;
    } else if (type == MEM_RELEASE) {
        if (first != r->base) {
            hr = HM_E_INVALID_ADDRESS;
        } else if (!VirtualFree((void *)address, 0, MEM_RELEASE)) {
            hr = last_error();
        } else {
            account(vm, r, 0, r->committed);
            erase(vm, r);
        }
    } else {
        if (size == 0 && first != r->base)
            hr = HM_E_INVALID_ADDRESS;
        else if (size && end > r->end)
            hr = HM_E_INVALID_PARAMETER;
        if (SUCCEEDED(hr)) {
            uintptr_t stop = size ? end : r->end;
            uint64_t bytes = bytes_in_state(first, stop, MEM_COMMIT);
            if (bytes > r->committed) /* committed behind the vm's back: only what it charged is uncharged */
                bytes = r->committed;
            if (!VirtualFree((void *)address, size, MEM_DECOMMIT))
                hr = last_error();
            else
                account(vm, r, 0, bytes);
        }
    }
    ReleaseSRWLockExclusive(&vm->lock);
    return hr;
}

/* ---- VirtualProtect, VirtualQuery ------------------------------------------------------------------------- */

HRESULT hm__vm_protect(hm_vm *vm, uintptr_t address, size_t size, DWORD protect, DWORD *old)
{
    *old = PAGE_NOACCESS;
    uintptr_t first, end;
    HRESULT hr = hm__vm_page_range(address, size, &first, &end);
    if (FAILED(hr))
        return hr;
    if (end == first) /* an empty range still looks at its page */
        end = first + HM_PAGE_SIZE;
    /* Shared: a release (exclusive) cannot take the pages away between the check and the call. */
    AcquireSRWLockShared(&vm->lock);
    reservation *r = find(vm, first);
    DWORD previous = PAGE_NOACCESS;
    if (!r || end > r->end)
        hr = HM_E_INVALID_ADDRESS;
    else if (!VirtualProtect((void *)address, size, protect, &previous))
        hr = last_error();
    ReleaseSRWLockShared(&vm->lock);
    if (SUCCEEDED(hr))
        *old = previous;
    return hr;
}

HRESULT hm__vm_query(hm_vm *vm, uintptr_t address, MEMORY_BASIC_INFORMATION *info)
{
    (void)vm;
    if (VirtualQuery((const void *)address, info, sizeof *info) != sizeof *info)
        return last_error();
    return S_OK;
}

bool hm__vm_owns(hm_vm *vm, uintptr_t address)
{
    AcquireSRWLockShared(&vm->lock);
    bool owns = find(vm, address) != NULL;
    ReleaseSRWLockShared(&vm->lock);
    return owns;
}

bool hm__vm_spare(hm_vm *vm, uintptr_t address, uintptr_t *start, uintptr_t *end)
{
    (void)vm, (void)address, (void)start, (void)end;
    return false; /* nothing is kept mapped out of the books */
}

bool hm__vm_handle_guard_fault(hm_vm *vm, uintptr_t address)
{
    (void)vm, (void)address;
    return false; /* the system clears PAGE_GUARD itself */
}

/* ---- Statistics and checks ---------------------------------------------------------------------------------- */

void hm__vm_get_stats(hm_vm *vm, hm_vm_stats *out)
{
    AcquireSRWLockShared(&vm->lock);
    *out = (hm_vm_stats){
        .reservations = vm->n,
        .reserved_bytes = vm->reserved_bytes,
        .committed_bytes = vm->committed_bytes,
        .peak_committed_bytes = vm->peak_committed_bytes,
    };
    ReleaseSRWLockShared(&vm->lock);
}

/* The books against themselves and against what the system says of each reservation. */
static int check_locked(hm_vm *vm, char *msg, size_t msglen)
{
    uint64_t reserved = 0, committed = 0;
    for (size_t i = 0; i < vm->n; i++) {
        const reservation *r = &vm->res[i];
        if (r->base >= r->end || (i && r->base < vm->res[i - 1].end)) {
            snprintf(msg, msglen, "reservation %zu at %p is empty or overlaps the one before", i, (void *)r->base);
            return -1;
        }
        reserved += r->end - r->base;
        committed += r->committed;
        uint64_t system_committed = 0;
        for (uintptr_t p = r->base; p < r->end;) {
            MEMORY_BASIC_INFORMATION mbi;
            if (VirtualQuery((const void *)p, &mbi, sizeof mbi) != sizeof mbi || mbi.State == MEM_FREE ||
                (uintptr_t)mbi.AllocationBase != r->base) {
                snprintf(msg, msglen, "the system no longer has the reservation at %p (page %p released behind the "
                         "manager's back?)", (void *)r->base, (void *)p);
                return -1;
            }
            uintptr_t stop = (uintptr_t)mbi.BaseAddress + mbi.RegionSize;
            if (stop > r->end)
                stop = r->end;
            if (mbi.State == MEM_COMMIT)
                system_committed += stop - p;
            p = stop;
        }
        if (system_committed != r->committed) {
            snprintf(msg, msglen, "reservation at %p: the manager counts %llu committed bytes, the system %llu "
                     "(committed or decommitted behind its back?)", (void *)r->base,
                     (unsigned long long)r->committed, (unsigned long long)system_committed);
            return -1;
        }
    }
    if (reserved != vm->reserved_bytes || committed != vm->committed_bytes) {
        snprintf(msg, msglen, "totals: %llu reserved and %llu committed bytes counted, the reservations hold %llu and "
                 "%llu", (unsigned long long)vm->reserved_bytes, (unsigned long long)vm->committed_bytes,
                 (unsigned long long)reserved, (unsigned long long)committed);
        return -1;
    }
    return 0;
}

int hm__vm_check(hm_vm *vm, char *msg, size_t msglen)
{
    AcquireSRWLockShared(&vm->lock);
    int result = check_locked(vm, msg, msglen);
    ReleaseSRWLockShared(&vm->lock);
    return result;
}

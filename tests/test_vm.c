/* The virtual-memory half of the built-in manager, rule by rule (docs/semantics.md numbers them).
 *
 * Each scenario is a table of steps run through the COM interface, on both backends (os: real protections;
 * sim: bookkeeping only). Addresses are written relative to "slots": results of earlier steps. After every
 * step the manager's books must be consistent, and after every failing step nothing may have changed. */
#include <hostmem/hostmem.h>

#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#define KB(x) ((size_t)(x) << 10)
#define INVALID_PARAMETER HRESULT_FROM_WIN32(ERROR_INVALID_PARAMETER)
#define INVALID_ADDRESS HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS)
#define BAD_LENGTH HRESULT_FROM_WIN32(ERROR_BAD_LENGTH)
#define NO_SLOT (-1)
#define ABSOLUTE (-2)
#define ANY (0xFFFFFFFFu)

typedef enum { ALLOC, FREE, PROTECT, QUERY, WRITE, EXPECT_BYTE, END } op_kind;

typedef struct step {
    const char *what;
    op_kind op;
    int slot;          /* address = slots[slot] + offset; ABSOLUTE: offset is the address; NO_SLOT: NULL */
    uintptr_t offset;
    size_t size;
    DWORD type;        /* ALLOC: allocation type; FREE: free type */
    DWORD protect;     /* ALLOC/PROTECT: protection; WRITE/EXPECT_BYTE: the byte */
    HRESULT expect;
    /* ALLOC: slot to save the result in, and the expected result relative to a slot (result_slot, result_offset)
     * when result_slot != NO_SLOT. PROTECT: old protection expected (ANY: not checked). QUERY: expected fields. */
    int save;
    int result_slot;
    uintptr_t result_offset;
    DWORD old_protect;
    DWORD state, query_protect, alloc_protect, type_field;
    size_t region_size;
    int alloc_base_slot; /* NO_SLOT: AllocationBase must be NULL */
} step;

#define STEP_END {.what = NULL, .op = END}

/* Shorthands that keep the tables readable. */
#define RESERVE(desc, at_slot, off, sz, typ, prot, hr, save_to) \
    {.what = desc, .op = ALLOC, .slot = at_slot, .offset = off, .size = sz, .type = typ, .protect = prot, \
     .expect = hr, .save = save_to, .result_slot = NO_SLOT}
#define COMMIT_AT(desc, at_slot, off, sz, prot, hr, rslot, roff) \
    {.what = desc, .op = ALLOC, .slot = at_slot, .offset = off, .size = sz, .type = MEM_COMMIT, .protect = prot, \
     .expect = hr, .save = NO_SLOT, .result_slot = rslot, .result_offset = roff}
#define FREE_AT(desc, at_slot, off, sz, typ, hr) \
    {.what = desc, .op = FREE, .slot = at_slot, .offset = off, .size = sz, .type = typ, .expect = hr}
#define PROTECT_AT(desc, at_slot, off, sz, prot, hr, old) \
    {.what = desc, .op = PROTECT, .slot = at_slot, .offset = off, .size = sz, .protect = prot, .expect = hr, \
     .old_protect = old}
#define QUERY_AT(desc, at_slot, off, st, prot, aprot, typ, rsize, abase) \
    {.what = desc, .op = QUERY, .slot = at_slot, .offset = off, .expect = S_OK, .state = st, \
     .query_protect = prot, .alloc_protect = aprot, .type_field = typ, .region_size = rsize, \
     .alloc_base_slot = abase}
#define WRITE_AT(desc, at_slot, off, byte) \
    {.what = desc, .op = WRITE, .slot = at_slot, .offset = off, .protect = byte, .expect = S_OK}
#define EXPECT_AT(desc, at_slot, off, byte) \
    {.what = desc, .op = EXPECT_BYTE, .slot = at_slot, .offset = off, .protect = byte, .expect = S_OK}

typedef struct fixture {
    IHostMemoryManager *m;
    const char *options;
    uintptr_t slots[8];
} fixture;

static void failf(const step *s, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fail_msg("step '%s': %s", s->what, buf);
}

static uintptr_t address_of(fixture *f, const step *s)
{
    if (s->slot == NO_SLOT)
        return 0;
    if (s->slot == ABSOLUTE)
        return s->offset;
    return f->slots[s->slot] + s->offset;
}

static void snapshot(fixture *f, hm_stats *out) { assert_int_equal(HostMemGetStats(f->m, out), S_OK); }

static void run_steps(fixture *f, const step *steps)
{
    for (const step *s = steps; s->op != END; s++) {
        uintptr_t a = address_of(f, s);
        hm_stats before, after;
        snapshot(f, &before);
        HRESULT hr = S_OK;
        switch (s->op) {
        case ALLOC: {
            void *p = (void *)0x1;
            hr = IHostMemoryManager_VirtualAlloc(f->m, (void *)a, s->size, s->type, s->protect, eTaskCritical, &p);
            if (FAILED(hr) && p != NULL)
                failf(s, "failed VirtualAlloc left *ppMem = %p, not NULL", p);
            if (SUCCEEDED(hr)) {
                if (s->save != NO_SLOT)
                    f->slots[s->save] = (uintptr_t)p;
                if (s->result_slot != NO_SLOT && (uintptr_t)p != f->slots[s->result_slot] + s->result_offset)
                    failf(s, "returned %p, expected slot %d + %#lx", p, s->result_slot,
                          (unsigned long)s->result_offset);
                if ((s->type & MEM_RESERVE) && ((uintptr_t)p % KB(64)) != 0)
                    failf(s, "reservation %p is not 64 KiB aligned", p);
            }
            break;
        }
        case FREE:
            hr = IHostMemoryManager_VirtualFree(f->m, (void *)a, s->size, s->type);
            break;
        case PROTECT: {
            DWORD old = 0xDEAD;
            hr = IHostMemoryManager_VirtualProtect(f->m, (void *)a, s->size, s->protect, &old);
            if (s->old_protect != ANY && old != s->old_protect)
                failf(s, "old protection %#x, expected %#x", old, s->old_protect);
            break;
        }
        case QUERY: {
            MEMORY_BASIC_INFORMATION mbi;
            SIZE_T n = 0;
            memset(&mbi, 0xAB, sizeof mbi);
            hr = IHostMemoryManager_VirtualQuery(f->m, (void *)a, &mbi, sizeof mbi, &n);
            if (hr != S_OK || n != sizeof mbi)
                failf(s, "VirtualQuery gave %s, %zu bytes", hm_hr_name(hr), (size_t)n);
            uintptr_t expect_base = s->alloc_base_slot == NO_SLOT ? 0 : f->slots[s->alloc_base_slot];
            if ((uintptr_t)mbi.BaseAddress != (a & ~(uintptr_t)0xFFF))
                failf(s, "BaseAddress %p, expected %#lx", mbi.BaseAddress, (unsigned long)(a & ~(uintptr_t)0xFFF));
            if ((uintptr_t)mbi.AllocationBase != expect_base)
                failf(s, "AllocationBase %p, expected %#lx", mbi.AllocationBase, (unsigned long)expect_base);
            if (mbi.State != s->state)
                failf(s, "State %#x, expected %#x", mbi.State, s->state);
            if (mbi.Protect != s->query_protect)
                failf(s, "Protect %#x, expected %#x", mbi.Protect, s->query_protect);
            if (mbi.AllocationProtect != s->alloc_protect)
                failf(s, "AllocationProtect %#x, expected %#x", mbi.AllocationProtect, s->alloc_protect);
            if (mbi.Type != s->type_field)
                failf(s, "Type %#x, expected %#x", mbi.Type, s->type_field);
            if (s->region_size != ANY && mbi.RegionSize != s->region_size)
                failf(s, "RegionSize %#zx, expected %#zx", (size_t)mbi.RegionSize, s->region_size);
            if (mbi.PartitionId != 0)
                failf(s, "PartitionId %u, expected 0", mbi.PartitionId);
            break;
        }
        case WRITE:
            memset((void *)a, (int)s->protect, 64);
            break;
        case EXPECT_BYTE:
            for (int i = 0; i < 64; i++)
                if (((unsigned char *)a)[i] != (unsigned char)s->protect)
                    failf(s, "byte %d at %#lx is %#x, expected %#x", i, (unsigned long)a, ((unsigned char *)a)[i],
                          s->protect);
            break;
        case END:
            break;
        }
        if (hr != s->expect)
            failf(s, "returned %s, expected %s", hm_hr_name(hr), hm_hr_name(s->expect));
        char msg[256];
        if (HostMemCheckConsistency(f->m, msg, sizeof msg) != S_OK)
            failf(s, "books inconsistent afterwards: %s", msg);
        snapshot(f, &after);
        if (FAILED(hr) && (before.reservations != after.reservations ||
                           before.committed_bytes != after.committed_bytes ||
                           before.reserved_bytes != after.reserved_bytes))
            failf(s, "a failed call changed the books (reservations %llu->%llu, committed %llu->%llu)",
                  (unsigned long long)before.reservations, (unsigned long long)after.reservations,
                  (unsigned long long)before.committed_bytes, (unsigned long long)after.committed_bytes);
    }
}

static int setup_os(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->options = "backend=os";
    assert_int_equal(HostMemCreateBuiltinManager(f->options, &f->m), S_OK);
    *state = f;
    return 0;
}

static int setup_sim(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->options = "backend=sim,deterministic=1";
    assert_int_equal(HostMemCreateBuiltinManager(f->options, &f->m), S_OK);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    assert_int_equal(IHostMemoryManager_Release(f->m), 0);
    free(f);
    return 0;
}

/* ---- VirtualAlloc argument validation (rules 1-15) -------------------------------------------------------- */
static const step validation_steps[] = {
    RESERVE("size 0 fails", NO_SLOT, 0, 0, MEM_RESERVE, PAGE_READWRITE, INVALID_PARAMETER, NO_SLOT),
    RESERVE("type 0 fails", NO_SLOT, 0, KB(4), 0, PAGE_READWRITE, INVALID_PARAMETER, NO_SLOT),
    RESERVE("MEM_DECOMMIT is not an allocation type", NO_SLOT, 0, KB(4), MEM_DECOMMIT, PAGE_READWRITE,
            INVALID_PARAMETER, NO_SLOT),
    RESERVE("unknown type bit fails", NO_SLOT, 0, KB(4), MEM_RESERVE | 0x40000000u, PAGE_READWRITE,
            INVALID_PARAMETER, NO_SLOT),
    RESERVE("MEM_TOP_DOWN alone fails", NO_SLOT, 0, KB(4), MEM_TOP_DOWN, PAGE_READWRITE, INVALID_PARAMETER, NO_SLOT),
    RESERVE("MEM_WRITE_WATCH needs MEM_RESERVE", NO_SLOT, 0, KB(4), MEM_COMMIT | MEM_WRITE_WATCH, PAGE_READWRITE,
            INVALID_PARAMETER, NO_SLOT),
    RESERVE("protection 0 fails for a reserve", NO_SLOT, 0, KB(4), MEM_RESERVE, 0, INVALID_PARAMETER, NO_SLOT),
    RESERVE("protection 0 fails for a commit", NO_SLOT, 0, KB(4), MEM_COMMIT, 0, INVALID_PARAMETER, NO_SLOT),
    RESERVE("two base protections fail", NO_SLOT, 0, KB(4), MEM_RESERVE, PAGE_READONLY | PAGE_EXECUTE,
            INVALID_PARAMETER, NO_SLOT),
    RESERVE("READWRITE|READONLY fails", NO_SLOT, 0, KB(4), MEM_COMMIT, PAGE_READWRITE | PAGE_READONLY,
            INVALID_PARAMETER, NO_SLOT),
    RESERVE("PAGE_WRITECOPY is for mapped views only", NO_SLOT, 0, KB(4), MEM_COMMIT, PAGE_WRITECOPY,
            INVALID_PARAMETER, NO_SLOT),
    RESERVE("PAGE_EXECUTE_WRITECOPY is for mapped views only", NO_SLOT, 0, KB(4), MEM_COMMIT,
            PAGE_EXECUTE_WRITECOPY, INVALID_PARAMETER, NO_SLOT),
    RESERVE("PAGE_GUARD|PAGE_NOACCESS is invalid", NO_SLOT, 0, KB(4), MEM_COMMIT, PAGE_GUARD | PAGE_NOACCESS,
            INVALID_PARAMETER, NO_SLOT),
    RESERVE("PAGE_NOCACHE|PAGE_WRITECOMBINE is invalid", NO_SLOT, 0, KB(4), MEM_COMMIT,
            PAGE_READWRITE | PAGE_NOCACHE | PAGE_WRITECOMBINE, INVALID_PARAMETER, NO_SLOT),
    RESERVE("unknown protection modifier fails", NO_SLOT, 0, KB(4), MEM_COMMIT, PAGE_READWRITE | 0x800,
            INVALID_PARAMETER, NO_SLOT),
    RESERVE("MEM_RESET cannot be combined", NO_SLOT, 0, KB(4), MEM_RESERVE | MEM_RESET, PAGE_READWRITE,
            INVALID_PARAMETER, NO_SLOT),
    RESERVE("MEM_RESET_UNDO is not supported", ABSOLUTE, 0x10000000, KB(4), MEM_RESET_UNDO, PAGE_READWRITE,
            INVALID_PARAMETER, NO_SLOT),
    RESERVE("MEM_RESET at NULL has nothing to reset", NO_SLOT, 0, KB(4), MEM_RESET, PAGE_READWRITE,
            INVALID_ADDRESS, NO_SLOT),
    RESERVE("MEM_LARGE_PAGES needs MEM_RESERVE|MEM_COMMIT", NO_SLOT, 0, KB(2048), MEM_RESERVE | MEM_LARGE_PAGES,
            PAGE_READWRITE, INVALID_PARAMETER, NO_SLOT),
    RESERVE("MEM_LARGE_PAGES needs a privilege we do not hold", NO_SLOT, 0, KB(2048),
            MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES, PAGE_READWRITE,
            HRESULT_FROM_WIN32(ERROR_PRIVILEGE_NOT_HELD), NO_SLOT),
    RESERVE("MEM_PHYSICAL is not supported", NO_SLOT, 0, KB(64), MEM_RESERVE | MEM_PHYSICAL, PAGE_READWRITE,
            INVALID_PARAMETER, NO_SLOT),
    RESERVE("an address in the first 64 KiB fails", ABSOLUTE, 0x1000, KB(4), MEM_RESERVE, PAGE_READWRITE,
            INVALID_PARAMETER, NO_SLOT),
    RESERVE("a size beyond the address space fails", NO_SLOT, 0, (size_t)1 << 62, MEM_RESERVE, PAGE_READWRITE,
            INVALID_PARAMETER, NO_SLOT),
    RESERVE("a range past the top of user space fails", ABSOLUTE, 0x7fff00000000, (size_t)1 << 40, MEM_RESERVE,
            PAGE_READWRITE, INVALID_PARAMETER, NO_SLOT),
    RESERVE("a range that wraps around fails", ABSOLUTE, 0x7fff00000000, SIZE_MAX - 0x1000, MEM_RESERVE,
            PAGE_READWRITE, INVALID_PARAMETER, NO_SLOT),
    COMMIT_AT("commit where nothing is reserved fails", ABSOLUTE, 0x10000000, KB(4), PAGE_READWRITE,
              INVALID_ADDRESS, NO_SLOT, 0),
    STEP_END,
};

/* ---- Reserving (rules 16-22, 25) -------------------------------------------------------------------------- */
static const step reserve_steps[] = {
    RESERVE("reserve 0xFFFC bytes", NO_SLOT, 0, 0xFFFC, MEM_RESERVE, PAGE_READWRITE, S_OK, 0),
    QUERY_AT("a fresh reservation: MEM_RESERVE, Protect 0, size rounded to pages", 0, 0, MEM_RESERVE, 0,
             PAGE_READWRITE, MEM_PRIVATE, 0x10000, 0),
    RESERVE("reserve one page", NO_SLOT, 0, KB(4), MEM_RESERVE, PAGE_NOACCESS, S_OK, 1),
    QUERY_AT("a one-page reservation is one page", 1, 0, MEM_RESERVE, 0, PAGE_NOACCESS, MEM_PRIVATE, 0x1000, 1),
    QUERY_AT("the rest of its 64 KiB granule is free", 1, 0x1000, MEM_FREE, PAGE_NOACCESS, 0, 0, ANY, NO_SLOT),
    RESERVE("...yet cannot be reserved: the address rounds down to the taken granule", 1, 0x1000, KB(4),
            MEM_RESERVE, PAGE_READWRITE, INVALID_ADDRESS, NO_SLOT),
    RESERVE("reserving over an existing reservation fails", 0, 0, KB(64), MEM_RESERVE, PAGE_READWRITE,
            INVALID_ADDRESS, NO_SLOT),
    RESERVE("a range running into an existing reservation fails", 0, 0x8000, KB(64), MEM_RESERVE, PAGE_READWRITE,
            INVALID_ADDRESS, NO_SLOT),
    FREE_AT("release the one-page reservation", 1, 0, 0, MEM_RELEASE, S_OK),
    QUERY_AT("released memory is free", 1, 0, MEM_FREE, PAGE_NOACCESS, 0, 0, ANY, NO_SLOT),
    {.what = "a released base can be reserved again at once", .op = ALLOC, .slot = 1, .offset = 0x10,
     .size = KB(4), .type = MEM_RESERVE | MEM_COMMIT, .protect = PAGE_READWRITE, .expect = S_OK, .save = NO_SLOT,
     .result_slot = 1, .result_offset = 0},
    QUERY_AT("...and commits [64 KiB-rounded address, page-rounded end): 0x10+0x1000 bytes span 2 pages", 1, 0,
             MEM_COMMIT, PAGE_READWRITE, PAGE_READWRITE, MEM_PRIVATE, 0x2000, 1),
    FREE_AT("release it", 1, 0, 0, MEM_RELEASE, S_OK),
    RESERVE("an explicit address is rounded down to 64 KiB", 0, 0x30000 + 0x1234, KB(4), MEM_RESERVE,
            PAGE_READONLY, S_OK, 2),
    QUERY_AT("...and covers up to the end of the request", 2, 0, MEM_RESERVE, 0, PAGE_READONLY, MEM_PRIVATE,
             0x3000, 2),
    FREE_AT("release it", 2, 0, 0, MEM_RELEASE, S_OK),
    FREE_AT("release the first", 0, 0, 0, MEM_RELEASE, S_OK),
    STEP_END,
};

/* ---- Committing (rules 27-36) ------------------------------------------------------------------------------ */
static const step commit_steps[] = {
    RESERVE("reserve 16 pages", NO_SLOT, 0, KB(64), MEM_RESERVE, PAGE_READWRITE, S_OK, 0),
    COMMIT_AT("commit page 1", 0, 0x1000, 0x1000, PAGE_READWRITE, S_OK, 0, 0x1000),
    QUERY_AT("page 0 is still reserved, one page", 0, 0, MEM_RESERVE, 0, PAGE_READWRITE, MEM_PRIVATE, 0x1000, 0),
    QUERY_AT("page 1 is committed, one page", 0, 0x1000, MEM_COMMIT, PAGE_READWRITE, PAGE_READWRITE, MEM_PRIVATE,
             0x1000, 0),
    QUERY_AT("pages 2-15 are reserved", 0, 0x2000, MEM_RESERVE, 0, PAGE_READWRITE, MEM_PRIVATE, 0xE000, 0),
    QUERY_AT("BaseAddress is the queried page, not the run's start", 0, 0x3234, MEM_RESERVE, 0, PAGE_READWRITE,
             MEM_PRIVATE, 0xD000, 0),
    COMMIT_AT("a range running past the reservation fails", 0, 0xF000, 0x2000, PAGE_READWRITE, INVALID_ADDRESS,
              NO_SLOT, 0),
    QUERY_AT("...and committed nothing", 0, 0xF000, MEM_RESERVE, 0, PAGE_READWRITE, MEM_PRIVATE, 0x1000, 0),
    COMMIT_AT("2 bytes across a page boundary commit both pages", 0, 0x1FFF, 2, PAGE_READWRITE, S_OK, 0, 0x1000),
    QUERY_AT("pages 1-2 are one committed run", 0, 0x1000, MEM_COMMIT, PAGE_READWRITE, PAGE_READWRITE, MEM_PRIVATE,
             0x2000, 0),
    EXPECT_AT("fresh commits read as zero", 0, 0x2000, 0),
    WRITE_AT("write into page 1", 0, 0x1000, 0x5A),
    COMMIT_AT("committing committed pages succeeds", 0, 0x1000, 0x1000, PAGE_READONLY, S_OK, 0, 0x1000),
    EXPECT_AT("...keeps their contents", 0, 0x1000, 0x5A),
    QUERY_AT("...and sets the new protection", 0, 0x1000, MEM_COMMIT, PAGE_READONLY, PAGE_READWRITE, MEM_PRIVATE,
             0x1000, 0),
    COMMIT_AT("commit a page PAGE_NOACCESS", 0, 0x3000, 0x1000, PAGE_NOACCESS, S_OK, 0, 0x3000),
    QUERY_AT("a committed PAGE_NOACCESS page reports PAGE_NOACCESS, not 0", 0, 0x3000, MEM_COMMIT, PAGE_NOACCESS,
             PAGE_READWRITE, MEM_PRIVATE, 0x1000, 0),
    COMMIT_AT("a mixed range commits fine", 0, 0, 0x5000, PAGE_EXECUTE_READWRITE, S_OK, 0, 0),
    QUERY_AT("...every page now committed alike; AllocationProtect never changes", 0, 0, MEM_COMMIT,
             PAGE_EXECUTE_READWRITE, PAGE_READWRITE, MEM_PRIVATE, 0x5000, 0),
    EXPECT_AT("recommit kept page 1's contents", 0, 0x1000, 0x5A),
    FREE_AT("release", 0, 0, 0, MEM_RELEASE, S_OK),
    {.what = "MEM_COMMIT at NULL reserves and commits", .op = ALLOC, .slot = NO_SLOT, .size = KB(8),
     .type = MEM_COMMIT, .protect = PAGE_READWRITE, .expect = S_OK, .save = 1, .result_slot = NO_SLOT},
    QUERY_AT("...one committed run with the given AllocationProtect", 1, 0, MEM_COMMIT, PAGE_READWRITE,
             PAGE_READWRITE, MEM_PRIVATE, 0x2000, 1),
    EXPECT_AT("...reading zero", 1, 0x1000, 0),
    FREE_AT("release", 1, 0, 0, MEM_RELEASE, S_OK),
    STEP_END,
};

/* ---- Decommit and release (rules 44-62) ------------------------------------------------------------------- */
static const step free_steps[] = {
    RESERVE("reserve and commit 16 pages", NO_SLOT, 0, KB(64), MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, S_OK, 0),
    WRITE_AT("write page 5", 0, 0x5000, 0x77),
    FREE_AT("decommit 2 bytes across pages 1-2", 0, 0x1FFF, 2, MEM_DECOMMIT, S_OK),
    QUERY_AT("page 0 still committed", 0, 0, MEM_COMMIT, PAGE_READWRITE, PAGE_READWRITE, MEM_PRIVATE, 0x1000, 0),
    QUERY_AT("pages 1-2 reserved again", 0, 0x1000, MEM_RESERVE, 0, PAGE_READWRITE, MEM_PRIVATE, 0x2000, 0),
    QUERY_AT("pages 3-15 committed", 0, 0x3000, MEM_COMMIT, PAGE_READWRITE, PAGE_READWRITE, MEM_PRIVATE, 0xD000, 0),
    FREE_AT("decommitting reserved pages succeeds", 0, 0x1000, 0x1000, MEM_DECOMMIT, S_OK),
    FREE_AT("size 0 away from the base fails", 0, 0x1001, 0, MEM_DECOMMIT, INVALID_ADDRESS),
    FREE_AT("a decommit running past the end fails", 0, 0, 0x11000, MEM_DECOMMIT, INVALID_PARAMETER),
    QUERY_AT("...and decommitted nothing", 0, 0x3000, MEM_COMMIT, PAGE_READWRITE, PAGE_READWRITE, MEM_PRIVATE,
             0xD000, 0),
    FREE_AT("free type 0 fails", 0, 0, 0, 0, INVALID_PARAMETER),
    FREE_AT("MEM_FREE is not a free type", 0, 0, 0, MEM_FREE, INVALID_PARAMETER),
    FREE_AT("MEM_DECOMMIT|MEM_RELEASE fails", 0, 0, 0, MEM_DECOMMIT | MEM_RELEASE, INVALID_PARAMETER),
    FREE_AT("MEM_RELEASE with a size fails", 0, 0, 1, MEM_RELEASE, INVALID_PARAMETER),
    FREE_AT("MEM_RELEASE away from the base fails", 0, 0x1000, 0, MEM_RELEASE, INVALID_ADDRESS),
    FREE_AT("size 0 inside the first page decommits everything", 0, 0xFFE, 0, MEM_DECOMMIT, S_OK),
    QUERY_AT("...the whole reservation is reserved", 0, 0, MEM_RESERVE, 0, PAGE_READWRITE, MEM_PRIVATE, 0x10000, 0),
    COMMIT_AT("recommit page 5", 0, 0x5000, 0x1000, PAGE_READWRITE, S_OK, 0, 0x5000),
    EXPECT_AT("decommit then commit gives zero pages", 0, 0x5000, 0),
    FREE_AT("release with an address inside the first page", 0, 0x10, 0, MEM_RELEASE, S_OK),
    QUERY_AT("released: MEM_FREE, NULL base, Protect PAGE_NOACCESS, Type 0", 0, 0, MEM_FREE, PAGE_NOACCESS, 0, 0,
             ANY, NO_SLOT),
    FREE_AT("releasing twice fails", 0, 0, 0, MEM_RELEASE, INVALID_ADDRESS),
    FREE_AT("decommitting released memory fails", 0, 0, 0x1000, MEM_DECOMMIT, INVALID_ADDRESS),
    FREE_AT("releasing NULL fails", NO_SLOT, 0, 0, MEM_RELEASE, INVALID_ADDRESS),
    RESERVE("reserve 3 granules", NO_SLOT, 0, KB(192), MEM_RESERVE, PAGE_READWRITE, S_OK, 1),
    FREE_AT("release at the second granule fails", 1, 0x10000, 0, MEM_RELEASE, INVALID_ADDRESS),
    FREE_AT("release", 1, 0, 0, MEM_RELEASE, S_OK),
    STEP_END,
};

/* ---- VirtualProtect (rules 64-72) ------------------------------------------------------------------------ */
static const step protect_steps[] = {
    RESERVE("reserve and commit 16 pages", NO_SLOT, 0, KB(64), MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, S_OK, 0),
    PROTECT_AT("protect the first 3 pages read-only", 0, 0, 0x3000, PAGE_READONLY, S_OK, PAGE_READWRITE),
    QUERY_AT("...they form their own region", 0, 0, MEM_COMMIT, PAGE_READONLY, PAGE_READWRITE, MEM_PRIVATE, 0x3000,
             0),
    QUERY_AT("...the rest stays read-write", 0, 0x3000, MEM_COMMIT, PAGE_READWRITE, PAGE_READWRITE, MEM_PRIVATE,
             0xD000, 0),
    PROTECT_AT("the old protection is the first page's", 0, 0, 0x10000, PAGE_EXECUTE_READ, S_OK, PAGE_READONLY),
    PROTECT_AT("round trip NOACCESS", 0, 0, 0x1000, PAGE_NOACCESS, S_OK, PAGE_EXECUTE_READ),
    PROTECT_AT("round trip READONLY", 0, 0, 0x1000, PAGE_READONLY, S_OK, PAGE_NOACCESS),
    PROTECT_AT("round trip READWRITE", 0, 0, 0x1000, PAGE_READWRITE, S_OK, PAGE_READONLY),
    PROTECT_AT("round trip EXECUTE", 0, 0, 0x1000, PAGE_EXECUTE, S_OK, PAGE_READWRITE),
    PROTECT_AT("round trip EXECUTE_READ", 0, 0, 0x1000, PAGE_EXECUTE_READ, S_OK, PAGE_EXECUTE),
    PROTECT_AT("round trip EXECUTE_READWRITE", 0, 0, 0x1000, PAGE_EXECUTE_READWRITE, S_OK, PAGE_EXECUTE_READ),
    QUERY_AT("...reported verbatim", 0, 0, MEM_COMMIT, PAGE_EXECUTE_READWRITE, PAGE_READWRITE, MEM_PRIVATE, 0x1000,
             0),
    PROTECT_AT("protection 0 fails", 0, 0, 0x1000, 0, INVALID_PARAMETER, PAGE_NOACCESS),
    PROTECT_AT("PAGE_WRITECOPY fails on private memory", 0, 0, 0x1000, PAGE_WRITECOPY, INVALID_PARAMETER,
               PAGE_NOACCESS),
    PROTECT_AT("two base protections fail", 0, 0, 0x1000, PAGE_READWRITE | PAGE_READONLY, INVALID_PARAMETER,
               PAGE_NOACCESS),
    QUERY_AT("...and change nothing", 0, 0, MEM_COMMIT, PAGE_EXECUTE_READWRITE, PAGE_READWRITE, MEM_PRIVATE, 0x1000,
             0),
    PROTECT_AT("a range past the reservation fails", 0, 0xF000, 0x2000, PAGE_READONLY, INVALID_ADDRESS,
               PAGE_NOACCESS),
    FREE_AT("decommit pages 8-15", 0, 0x8000, 0x8000, MEM_DECOMMIT, S_OK),
    PROTECT_AT("any uncommitted page fails the whole call", 0, 0x4000, 0x5000, PAGE_READONLY, INVALID_ADDRESS,
               PAGE_NOACCESS),
    QUERY_AT("...leaving the committed pages as they were", 0, 0x4000, MEM_COMMIT, PAGE_EXECUTE_READ,
             PAGE_READWRITE, MEM_PRIVATE, 0x4000, 0),
    PROTECT_AT("size 0 at a page boundary is an empty range: changes nothing", 0, 0x4000, 0, PAGE_READONLY, S_OK,
               PAGE_EXECUTE_READ),
    QUERY_AT("...still EXECUTE_READ", 0, 0x4000, MEM_COMMIT, PAGE_EXECUTE_READ, PAGE_READWRITE, MEM_PRIVATE, 0x4000,
             0),
    PROTECT_AT("size 0 inside a page covers the page it touches", 0, 0x4010, 0, PAGE_READONLY, S_OK,
               PAGE_EXECUTE_READ),
    QUERY_AT("...now READONLY, one page", 0, 0x4000, MEM_COMMIT, PAGE_READONLY, PAGE_READWRITE, MEM_PRIVATE, 0x1000,
             0),
    FREE_AT("release", 0, 0, 0, MEM_RELEASE, S_OK),
    PROTECT_AT("free memory fails", 0, 0, 0x1000, PAGE_READONLY, INVALID_ADDRESS, PAGE_NOACCESS),
    RESERVE("reserve with PAGE_NOCACHE", NO_SLOT, 0, KB(64), MEM_RESERVE | MEM_COMMIT,
            PAGE_READWRITE | PAGE_NOCACHE, S_OK, 1),
    PROTECT_AT("PAGE_NOCACHE belongs to the allocation", 1, 0, 0x1000, PAGE_READONLY, S_OK,
               PAGE_READWRITE | PAGE_NOCACHE),
    QUERY_AT("...and is still reported", 1, 0, MEM_COMMIT, PAGE_READONLY | PAGE_NOCACHE,
             PAGE_READWRITE | PAGE_NOCACHE, MEM_PRIVATE, 0x1000, 1),
    FREE_AT("release", 1, 0, 0, MEM_RELEASE, S_OK),
    STEP_END,
};

/* ---- MEM_RESET (rules 38-42) -------------------------------------------------------------------------------- */
static const step reset_steps[] = {
    RESERVE("reserve 16 pages", NO_SLOT, 0, KB(64), MEM_RESERVE, PAGE_READWRITE, S_OK, 0),
    COMMIT_AT("commit the first page", 0, 0, 0x1000, PAGE_READWRITE, S_OK, 0, 0),
    {.what = "MEM_RESET of a committed page, protection ignored", .op = ALLOC, .slot = 0, .size = 0x1000,
     .type = MEM_RESET, .protect = PAGE_NOACCESS, .expect = S_OK, .save = NO_SLOT, .result_slot = 0},
    QUERY_AT("...stays committed with its protection", 0, 0, MEM_COMMIT, PAGE_READWRITE, PAGE_READWRITE,
             MEM_PRIVATE, 0x1000, 0),
    {.what = "MEM_RESET of a reserved page succeeds", .op = ALLOC, .slot = 0, .offset = 0x1000, .size = 0x1000,
     .type = MEM_RESET, .protect = PAGE_READWRITE, .expect = S_OK, .save = NO_SLOT, .result_slot = 0,
     .result_offset = 0x1000},
    QUERY_AT("...and leaves it reserved", 0, 0x1000, MEM_RESERVE, 0, PAGE_READWRITE, MEM_PRIVATE, 0xF000, 0),
    {.what = "MEM_RESET past the end fails", .op = ALLOC, .slot = 0, .offset = 0xF000, .size = 0x2000,
     .type = MEM_RESET, .protect = PAGE_READWRITE, .expect = INVALID_ADDRESS, .save = NO_SLOT,
     .result_slot = NO_SLOT},
    FREE_AT("release", 0, 0, 0, MEM_RELEASE, S_OK),
    {.what = "MEM_RESET of free memory fails", .op = ALLOC, .slot = 0, .size = 0x1000, .type = MEM_RESET,
     .protect = PAGE_READWRITE, .expect = INVALID_ADDRESS, .save = NO_SLOT, .result_slot = NO_SLOT},
    STEP_END,
};

/* ---- VirtualQuery regions (rules 26-27, 80-86) ---------------------------------------------------------- */
static const step query_steps[] = {
    RESERVE("reserve 1 page", NO_SLOT, 0, KB(4), MEM_RESERVE, PAGE_READWRITE, S_OK, 0),
    RESERVE("reserve 1 page two granules further", 0, 0x20000, KB(4), MEM_RESERVE, PAGE_READWRITE, S_OK, 1),
    QUERY_AT("free space runs up to the next allocation", 0, 0x1000, MEM_FREE, PAGE_NOACCESS, 0, 0, 0x1F000,
             NO_SLOT),
    RESERVE("reserve the granule in between, 16 pages", 0, 0x10000, KB(64), MEM_RESERVE | MEM_COMMIT,
            PAGE_READWRITE, S_OK, 2),
    RESERVE("and its neighbour after, alike", 0, 0x30000, KB(64), MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, S_OK,
            3),
    FREE_AT("release the one after the middle", 1, 0, 0, MEM_RELEASE, S_OK),
    RESERVE("make it alike too", 1, 0, KB(64), MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, S_OK, 1),
    QUERY_AT("two adjacent alike allocations are separate regions", 2, 0, MEM_COMMIT, PAGE_READWRITE,
             PAGE_READWRITE, MEM_PRIVATE, 0x10000, 2),
    FREE_AT("release", 0, 0, 0, MEM_RELEASE, S_OK),
    FREE_AT("release", 1, 0, 0, MEM_RELEASE, S_OK),
    FREE_AT("release", 2, 0, 0, MEM_RELEASE, S_OK),
    FREE_AT("release", 3, 0, 0, MEM_RELEASE, S_OK),
    STEP_END,
};

static void run_table(void **state, const step *steps)
{
    fixture *f = *state;
    run_steps(f, steps);
    hm_stats st;
    assert_int_equal(HostMemGetStats(f->m, &st), S_OK);
    assert_int_equal(st.reservations, 0);
    assert_int_equal(st.committed_bytes, 0);
}

static void test_validation(void **state) { run_table(state, validation_steps); }
static void test_reserve(void **state) { run_table(state, reserve_steps); }
static void test_commit(void **state) { run_table(state, commit_steps); }
static void test_decommit_release(void **state) { run_table(state, free_steps); }
static void test_protect(void **state) { run_table(state, protect_steps); }
static void test_reset(void **state) { run_table(state, reset_steps); }
static void test_query_regions(void **state) { run_table(state, query_steps); }

/* NULL out-pointers are E_POINTER, and invalid critical levels E_INVALIDARG; nothing crashes. */
static void test_null_pointers(void **state)
{
    fixture *f = *state;
    MEMORY_BASIC_INFORMATION mbi;
    SIZE_T n = 99;
    assert_int_equal(IHostMemoryManager_VirtualAlloc(f->m, NULL, 4096, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, NULL),
                     E_POINTER);
    void *p = (void *)1;
    assert_int_equal(IHostMemoryManager_VirtualAlloc(f->m, NULL, 4096, MEM_COMMIT, PAGE_READWRITE,
                                                     (EMemoryCriticalLevel)7, &p),
                     E_INVALIDARG);
    assert_null(p);
    assert_int_equal(IHostMemoryManager_VirtualQuery(f->m, &mbi, NULL, sizeof mbi, &n), E_POINTER);
    assert_int_equal(n, 0);
    assert_int_equal(IHostMemoryManager_VirtualQuery(f->m, &mbi, &mbi, sizeof mbi, NULL), E_POINTER);
    assert_int_equal(IHostMemoryManager_VirtualProtect(f->m, &mbi, 4096, PAGE_READWRITE, NULL), E_POINTER);
    n = 99;
    assert_int_equal(IHostMemoryManager_VirtualQuery(f->m, &mbi, &mbi, sizeof mbi - 1, &n), BAD_LENGTH);
    assert_int_equal(n, 0);
    n = 99;
    assert_int_equal(IHostMemoryManager_VirtualQuery(f->m, (void *)0x800000000000, &mbi, sizeof mbi, &n),
                     INVALID_PARAMETER);
    assert_int_equal(n, 0);
    DWORD load;
    SIZE_T avail;
    assert_int_equal(IHostMemoryManager_GetMemoryLoad(f->m, NULL, &avail), E_POINTER);
    assert_int_equal(IHostMemoryManager_GetMemoryLoad(f->m, &load, NULL), E_POINTER);
    assert_int_equal(IHostMemoryManager_CreateMalloc(f->m, MALLOC_THREADSAFE, NULL), E_POINTER);
}

/* Addresses the manager does not own are answered from the process's map: a stack, a function. */
static void test_query_foreign(void **state)
{
    fixture *f = *state;
    MEMORY_BASIC_INFORMATION mbi;
    SIZE_T n;
    int local = 0;
    assert_int_equal(IHostMemoryManager_VirtualQuery(f->m, &local, &mbi, sizeof mbi, &n), S_OK);
    assert_int_equal(n, sizeof mbi);
    assert_int_equal(mbi.State, MEM_COMMIT);
    assert_int_equal(mbi.Protect, PAGE_READWRITE);
    assert_int_equal(mbi.Type, MEM_PRIVATE);
    assert_true((uintptr_t)&local - (uintptr_t)mbi.BaseAddress < mbi.RegionSize);
    assert_int_equal(IHostMemoryManager_VirtualQuery(f->m, (void *)(uintptr_t)&test_query_foreign, &mbi, sizeof mbi, &n),
                     S_OK);
    assert_int_equal(mbi.State, MEM_COMMIT);
    assert_int_equal(mbi.Type, MEM_IMAGE);
    assert_true(mbi.Protect == PAGE_EXECUTE_READ || mbi.Protect == PAGE_EXECUTE_READWRITE);
    /* Freeing memory that is not the host's is HOST_E_INVALIDOPERATION (the documented VirtualFree case). */
    assert_int_equal(IHostMemoryManager_VirtualFree(f->m, &local, 0, MEM_RELEASE), HOST_E_INVALIDOPERATION);
}

/* MEM_TOP_DOWN places a reservation above one made bottom-up just before. */
static void test_top_down(void **state)
{
    fixture *f = *state;
    void *low, *high;
    assert_int_equal(IHostMemoryManager_VirtualAlloc(f->m, NULL, KB(64), MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &low),
                     S_OK);
    assert_int_equal(IHostMemoryManager_VirtualAlloc(f->m, NULL, KB(64), MEM_RESERVE | MEM_TOP_DOWN, PAGE_READWRITE,
                                                     eTaskCritical, &high),
                     S_OK);
    assert_true((uintptr_t)high > (uintptr_t)low);
    assert_int_equal(IHostMemoryManager_VirtualFree(f->m, low, 0, MEM_RELEASE), S_OK);
    assert_int_equal(IHostMemoryManager_VirtualFree(f->m, high, 0, MEM_RELEASE), S_OK);
}

/* Large reservations (a dedicated span) behave like small ones. */
static void test_large_reservation(void **state)
{
    fixture *f = *state;
    void *p;
    size_t size = (size_t)8 << 30;
    assert_int_equal(IHostMemoryManager_VirtualAlloc(f->m, NULL, size, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &p),
                     S_OK);
    void *q;
    assert_int_equal(IHostMemoryManager_VirtualAlloc(f->m, (char *)p + size - 0x1000, 0x1000, MEM_COMMIT,
                                                     PAGE_READWRITE, eTaskCritical, &q),
                     S_OK);
    memset(q, 1, 0x1000);
    MEMORY_BASIC_INFORMATION mbi;
    SIZE_T n;
    assert_int_equal(IHostMemoryManager_VirtualQuery(f->m, p, &mbi, sizeof mbi, &n), S_OK);
    assert_int_equal(mbi.RegionSize, size - 0x1000);
    assert_int_equal(mbi.State, MEM_RESERVE);
    assert_int_equal(IHostMemoryManager_VirtualFree(f->m, p, 0, MEM_RELEASE), S_OK);
    assert_int_equal(IHostMemoryManager_VirtualQuery(f->m, p, &mbi, sizeof mbi, &n), S_OK);
    assert_int_equal(mbi.State, MEM_FREE);
}

/* Many reservations: every one is found by VirtualQuery, placement packs them at 64 KiB steps. */
static void test_many_reservations(void **state)
{
    fixture *f = *state;
    enum { N = 20000 };
    void **p = calloc(N, sizeof *p);
    for (int i = 0; i < N; i++)
        assert_int_equal(IHostMemoryManager_VirtualAlloc(f->m, NULL, 0x1000 * (1 + i % 16), MEM_RESERVE, PAGE_READWRITE,
                                                         eTaskCritical, &p[i]),
                         S_OK);
    for (int i = 0; i < N; i += 7) {
        MEMORY_BASIC_INFORMATION mbi;
        SIZE_T n;
        assert_int_equal(IHostMemoryManager_VirtualQuery(f->m, (char *)p[i] + 0x10, &mbi, sizeof mbi, &n), S_OK);
        assert_ptr_equal(mbi.AllocationBase, p[i]);
        assert_int_equal(mbi.RegionSize, 0x1000 * (1 + i % 16));
    }
    for (int i = 0; i < N; i += 2)
        assert_int_equal(IHostMemoryManager_VirtualFree(f->m, p[i], 0, MEM_RELEASE), S_OK);
    /* The holes are reused lowest first. */
    void *again;
    assert_int_equal(IHostMemoryManager_VirtualAlloc(f->m, NULL, 0x1000, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &again),
                     S_OK);
    assert_ptr_equal(again, p[0]);
    assert_int_equal(IHostMemoryManager_VirtualFree(f->m, again, 0, MEM_RELEASE), S_OK);
    for (int i = 1; i < N; i += 2)
        assert_int_equal(IHostMemoryManager_VirtualFree(f->m, p[i], 0, MEM_RELEASE), S_OK);
    char msg[256];
    assert_int_equal(HostMemCheckConsistency(f->m, msg, sizeof msg), S_OK);
    free(p);
}

/* The same calls give the same addresses on every run in deterministic mode. */
static void test_deterministic(void **state)
{
    (void)state;
    uintptr_t first[32], second[32];
    for (int run = 0; run < 2; run++) {
        IHostMemoryManager *m;
        assert_int_equal(HostMemCreateBuiltinManager("deterministic=1,backend=sim", &m), S_OK);
        uintptr_t *out = run ? second : first;
        void *p;
        for (int i = 0; i < 32; i++) {
            assert_int_equal(IHostMemoryManager_VirtualAlloc(m, NULL, KB(64) * (size_t)(1 + i % 3), MEM_RESERVE,
                                                             PAGE_READWRITE, eTaskCritical, &p),
                             S_OK);
            out[i] = (uintptr_t)p;
            if (i % 4 == 3)
                assert_int_equal(IHostMemoryManager_VirtualFree(m, (void *)out[i - 2], 0, MEM_RELEASE), S_OK);
        }
        IHostMemoryManager_Release(m);
    }
    assert_memory_equal(first, second, sizeof first);
    assert_int_equal(first[0], 0x7e9000000000);
}

/* Decommitted and released pages read as zero when committed again, on both backends; with zero=heaps (replays:
 * the caller vouches it never writes what it commits) the sim backend leaves a caller's pages as they are, and
 * the option is refused on the os backend, whose decommit is what takes access away. */
static void test_zero_option(void **state)
{
    (void)state;
    static const struct {
        const char *options;
        unsigned char after_decommit, after_release;
    } cases[] = {
        {"deterministic=1,backend=sim", 0, 0},
        {"deterministic=1,backend=os", 0, 0},
        {"deterministic=1,backend=sim,zero=heaps", 0xab, 0xab},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        IHostMemoryManager *m;
        assert_int_equal(HostMemCreateBuiltinManager(cases[i].options, &m), S_OK);
        unsigned char *p, *q;
        assert_int_equal(IHostMemoryManager_VirtualAlloc(m, NULL, KB(64), MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
                                                         eTaskCritical, (void **)&p), S_OK);
        p[100] = 0xab;
        assert_int_equal(IHostMemoryManager_VirtualFree(m, p, KB(4), MEM_DECOMMIT), S_OK);
        assert_int_equal(IHostMemoryManager_VirtualAlloc(m, p, KB(4), MEM_COMMIT, PAGE_READWRITE, eTaskCritical,
                                                         (void **)&q), S_OK);
        assert_int_equal(p[100], cases[i].after_decommit);
        p[100] = 0xab;
        assert_int_equal(IHostMemoryManager_VirtualFree(m, p, 0, MEM_RELEASE), S_OK);
        /* Deterministic placement gives the same address back. */
        assert_int_equal(IHostMemoryManager_VirtualAlloc(m, NULL, KB(64), MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
                                                         eTaskCritical, (void **)&q), S_OK);
        if (q == p)
            assert_int_equal(q[100], cases[i].after_release);
        else
            assert_int_equal(q[100], 0); /* the os backend may place it elsewhere: fresh pages */
        IHostMemoryManager_Release(m);
    }
    IHostMemoryManager *m = NULL;
    assert_int_equal(HostMemCreateBuiltinManager("backend=os,zero=heaps", &m), E_INVALIDARG);
    assert_null(m);
}

/* The sim backend clears a decommit's written pages: in place below 16 MiB (they stay mapped, so the next touch
 * takes no page fault), dropped (MADV_DONTNEED) from 16 MiB. Each written page holds one byte, at an offset of its
 * own: the in-place zero test reads a page 32 bytes a step, and must see a byte in any lane of any step. */
static bool page_resident(const unsigned char *page)
{
    unsigned char v = 0;
    assert_int_equal(mincore((void *)page, KB(4), &v), 0);
    return v & 1;
}

static void test_sim_decommit_zeroes(void **state)
{
    (void)state;
    static const size_t offsets[] = {0, 7, 8, 31, 32, 40, 63, 64, 96, 127, 128, 1000, 2048, 4064, 4088, 4095};
    static const struct {
        size_t region;
        bool resident; /* the written pages still mapped after the decommit */
    } cases[] = {{KB(1024), true}, {KB(16 << 10) - KB(4), true}, {KB(16 << 10), false}, {KB(32 << 10), false}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        IHostMemoryManager *m;
        assert_int_equal(HostMemCreateBuiltinManager("deterministic=1,backend=sim,span=256M", &m), S_OK);
        unsigned char *p, *q;
        assert_int_equal(IHostMemoryManager_VirtualAlloc(m, NULL, cases[i].region, MEM_RESERVE | MEM_COMMIT,
                                                         PAGE_READWRITE, eTaskCritical, (void **)&p), S_OK);
        size_t n = sizeof offsets / sizeof offsets[0];
        for (size_t k = 0; k < n; k++)
            p[k * KB(4) + offsets[k]] = 0xab;
        assert_int_equal(IHostMemoryManager_VirtualFree(m, p, 0, MEM_DECOMMIT), S_OK);
        for (size_t k = 0; k < n; k++)
            if (page_resident(p + k * KB(4)) != cases[i].resident)
                fail_msg("case %zu: the written page %p is %s after the decommit", i, (void *)(p + k * KB(4)),
                         cases[i].resident ? "dropped" : "still mapped");
        assert_int_equal(IHostMemoryManager_VirtualAlloc(m, p, cases[i].region, MEM_COMMIT, PAGE_READWRITE,
                                                         eTaskCritical, (void **)&q), S_OK);
        for (size_t k = 0; k < n; k++)
            if (p[k * KB(4) + offsets[k]])
                fail_msg("case %zu: byte %zu of the recommitted page %p reads %#x", i, offsets[k],
                         (void *)(p + k * KB(4)), p[k * KB(4) + offsets[k]]);
        IHostMemoryManager_Release(m);
    }
}

/* Touching reserved or decommitted pages faults (real backend), and PAGE_GUARD is one-shot. */
static int child_touch(void *address, int write)
{
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGSEGV, SIG_DFL);
        if (write)
            *(volatile char *)address = 1;
        else
            (void)*(volatile char *)address;
        _exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    return WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

static void test_access_faults(void **state)
{
    fixture *f = *state;
    if (getenv("HOSTMEM_UNDER_VALGRIND"))
        skip(); /* the fault is reported as an error by Valgrind itself */
    char *p;
    assert_int_equal(IHostMemoryManager_VirtualAlloc(f->m, NULL, KB(64), MEM_RESERVE, PAGE_READWRITE, eTaskCritical,
                                                     (void **)&p),
                     S_OK);
    assert_int_equal(child_touch(p, 0), SIGSEGV);
    void *c;
    assert_int_equal(IHostMemoryManager_VirtualAlloc(f->m, p, 0x2000, MEM_COMMIT, PAGE_READONLY, eTaskCritical, &c), S_OK);
    assert_int_equal(child_touch(p, 0), 0);
    assert_int_equal(child_touch(p, 1), SIGSEGV);
    assert_int_equal(IHostMemoryManager_VirtualFree(f->m, p, 0x1000, MEM_DECOMMIT), S_OK);
    assert_int_equal(child_touch(p, 0), SIGSEGV);
    assert_int_equal(IHostMemoryManager_VirtualFree(f->m, p, 0, MEM_RELEASE), S_OK);
}

static void test_guard_page(void **state)
{
    fixture *f = *state;
    char *p;
    assert_int_equal(IHostMemoryManager_VirtualAlloc(f->m, NULL, 0x2000, MEM_RESERVE | MEM_COMMIT,
                                                     PAGE_READWRITE | PAGE_GUARD, eTaskCritical, (void **)&p),
                     S_OK);
    MEMORY_BASIC_INFORMATION mbi;
    SIZE_T n;
    assert_int_equal(IHostMemoryManager_VirtualQuery(f->m, p, &mbi, sizeof mbi, &n), S_OK);
    assert_int_equal(mbi.Protect, PAGE_READWRITE | PAGE_GUARD);
    assert_int_equal(mbi.AllocationProtect, PAGE_READWRITE | PAGE_GUARD);
    assert_int_equal(mbi.RegionSize, 0x2000);
    hm_stats st;
    if (strstr(f->options, "sim") == NULL && !getenv("HOSTMEM_UNDER_VALGRIND")) {
        p[0] = 42; /* trips the guard of page 0 only; the write completes */
        assert_int_equal(p[0], 42);
        assert_int_equal(HostMemGetStats(f->m, &st), S_OK);
        assert_int_equal(st.guard_trips, 1);
        assert_int_equal(IHostMemoryManager_VirtualQuery(f->m, p, &mbi, sizeof mbi, &n), S_OK);
        assert_int_equal(mbi.Protect, PAGE_READWRITE);
        assert_int_equal(mbi.AllocationProtect, PAGE_READWRITE | PAGE_GUARD);
        assert_int_equal(mbi.RegionSize, 0x1000);
        assert_int_equal(IHostMemoryManager_VirtualQuery(f->m, p + 0x1000, &mbi, sizeof mbi, &n), S_OK);
        assert_int_equal(mbi.Protect, PAGE_READWRITE | PAGE_GUARD);
    }
    DWORD old;
    assert_int_equal(IHostMemoryManager_VirtualProtect(f->m, p, 0x2000, PAGE_READWRITE | PAGE_GUARD, &old), S_OK);
    assert_int_equal(IHostMemoryManager_VirtualQuery(f->m, p, &mbi, sizeof mbi, &n), S_OK);
    assert_int_equal(mbi.Protect, PAGE_READWRITE | PAGE_GUARD);
    assert_int_equal(mbi.RegionSize, 0x2000);
    assert_int_equal(IHostMemoryManager_VirtualFree(f->m, p, 0, MEM_RELEASE), S_OK);
}

/* Many threads reserving, committing, writing, querying, protecting and releasing at once: every answer is the
 * one a single thread would get for its own reservations, and the books stay consistent. */
typedef struct thread_arg {
    IHostMemoryManager *m;
    int id;
    int failures;
} thread_arg;

static void *vm_worker(void *p)
{
    thread_arg *a = p;
    for (int i = 0; i < 1500; i++) {
        size_t pages = 1 + (size_t)((i * 7 + a->id) % 24);
        char *base;
        void *c;
        MEMORY_BASIC_INFORMATION mbi;
        SIZE_T n;
        DWORD old;
        if (IHostMemoryManager_VirtualAlloc(a->m, NULL, pages << 12, MEM_RESERVE, PAGE_READWRITE, eTaskCritical,
                                            (void **)&base) != S_OK ||
            IHostMemoryManager_VirtualAlloc(a->m, base, 0x1000, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &c) != S_OK) {
            a->failures++;
            continue;
        }
        if (((char *)c)[0] != 0)
            a->failures++;
        memset(c, a->id, 0x1000);
        if (IHostMemoryManager_VirtualQuery(a->m, base + 0x800, &mbi, sizeof mbi, &n) != S_OK ||
            mbi.AllocationBase != base || mbi.State != MEM_COMMIT || mbi.RegionSize != 0x1000)
            a->failures++;
        if (pages > 1 && (IHostMemoryManager_VirtualQuery(a->m, base + 0x1000, &mbi, sizeof mbi, &n) != S_OK ||
                          mbi.State != MEM_RESERVE || mbi.RegionSize != (pages - 1) << 12))
            a->failures++;
        if (IHostMemoryManager_VirtualProtect(a->m, base, 0x1000, PAGE_READONLY, &old) != S_OK || old != PAGE_READWRITE)
            a->failures++;
        if (((char *)c)[4095] != (char)a->id)
            a->failures++;
        if (IHostMemoryManager_VirtualFree(a->m, base, 0x1000, MEM_DECOMMIT) != S_OK ||
            IHostMemoryManager_VirtualFree(a->m, base, 0, MEM_RELEASE) != S_OK)
            a->failures++;
    }
    return NULL;
}

static void test_threads(void **state)
{
    fixture *f = *state;
    enum { THREADS = 4 };
    pthread_t t[THREADS];
    thread_arg args[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i] = (thread_arg){f->m, i + 1, 0};
        assert_int_equal(pthread_create(&t[i], NULL, vm_worker, &args[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(args[i].failures, 0);
    }
    char msg[256];
    assert_int_equal(HostMemCheckConsistency(f->m, msg, sizeof msg), S_OK);
    hm_stats st;
    assert_int_equal(HostMemGetStats(f->m, &st), S_OK);
    assert_int_equal(st.reservations, 0);
    assert_int_equal(st.committed_bytes, 0);
}

#define BOTH(fn) cmocka_unit_test_setup_teardown(fn, setup_os, teardown), \
                 cmocka_unit_test_setup_teardown(fn, setup_sim, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        BOTH(test_validation),
        BOTH(test_reserve),
        BOTH(test_commit),
        BOTH(test_decommit_release),
        BOTH(test_protect),
        BOTH(test_reset),
        BOTH(test_query_regions),
        BOTH(test_null_pointers),
        BOTH(test_query_foreign),
        BOTH(test_top_down),
        BOTH(test_large_reservation),
        BOTH(test_many_reservations),
        BOTH(test_guard_page),
        BOTH(test_threads),
        cmocka_unit_test_setup_teardown(test_access_faults, setup_os, teardown),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_zero_option),
        cmocka_unit_test(test_sim_decommit_zeroes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

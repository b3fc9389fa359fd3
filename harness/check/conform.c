/* The conformance rules and their runner (see conform.h). Each check works on a fresh manager, states what it
 * expected and what it got, and stops at the first difference. */
#include "check.h"
#include "host_bytes.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define INVALID_PARAMETER HRESULT_FROM_WIN32(ERROR_INVALID_PARAMETER)
#define INVALID_ADDRESS HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS)
#define BAD_LENGTH HRESULT_FROM_WIN32(ERROR_BAD_LENGTH)
#define KB(x) ((size_t)(x) << 10)

static void verdict(hm_rule_ctx *c, hm_rule_status status, const char *expected, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void verdict(hm_rule_ctx *c, hm_rule_status status, const char *expected, const char *fmt, ...)
{
    if (c->result->status != HM_RULE_PASS)
        return; /* the first difference is the one reported */
    c->result->status = status;
    snprintf(c->result->expected, sizeof c->result->expected, "%s", expected);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->result->actual, sizeof c->result->actual, fmt, ap);
    va_end(ap);
}

/* A call must return exactly `want`; otherwise the rule fails with both named. */
#define EXPECT_HR(c, what, call, want)                                                                            \
    do {                                                                                                          \
        HRESULT got_ = (call);                                                                                    \
        if (got_ != (want)) {                                                                                     \
            char exp_[200];                                                                                       \
            snprintf(exp_, sizeof exp_, "%s -> %s", what, hm_hr_name(want));                                      \
            verdict(c, HM_RULE_FAIL, exp_, "%s", hm_hr_name(got_));                                               \
            return;                                                                                               \
        }                                                                                                         \
    } while (0)

#define EXPECT(c, cond, expected, ...)                                                                            \
    do {                                                                                                          \
        if (!(cond)) {                                                                                            \
            verdict(c, HM_RULE_FAIL, expected, __VA_ARGS__);                                                      \
            return;                                                                                               \
        }                                                                                                         \
    } while (0)

static void *reserve(hm_rule_ctx *c, size_t size, DWORD type, DWORD protect)
{
    void *p = NULL;
    HRESULT hr = IHostMemoryManager_VirtualAlloc(c->m, NULL, size, type, protect, eTaskCritical, &p);
    if (hr != S_OK || !p) {
        verdict(c, HM_RULE_FAIL, "a plain VirtualAlloc to set the rule up succeeds", "%s", hm_hr_name(hr));
        return NULL;
    }
    return p;
}

static bool query(hm_rule_ctx *c, void *address, MEMORY_BASIC_INFORMATION *mbi)
{
    SIZE_T n = 0;
    memset(mbi, 0, sizeof *mbi);
    HRESULT hr = IHostMemoryManager_VirtualQuery(c->m, address, mbi, sizeof *mbi, &n);
    if (hr != S_OK || n != sizeof *mbi) {
        verdict(c, HM_RULE_FAIL, "VirtualQuery succeeds and writes 48 bytes", "%s, %zu bytes", hm_hr_name(hr),
                (size_t)n);
        return false;
    }
    return true;
}

static void release(hm_rule_ctx *c, void *p) { IHostMemoryManager_VirtualFree(c->m, p, 0, MEM_RELEASE); }

/* Expects the region fields of a query; -1 / (DWORD)-1 skips a field. */
static bool expect_region(hm_rule_ctx *c, const char *what, void *address, DWORD state, DWORD protect, size_t size,
                          void *alloc_base, DWORD alloc_protect)
{
    MEMORY_BASIC_INFORMATION mbi;
    if (!query(c, address, &mbi))
        return false;
    bool ok = mbi.State == state && mbi.Protect == protect && (size == (size_t)-1 || mbi.RegionSize == size) &&
              mbi.AllocationBase == alloc_base && (alloc_protect == (DWORD)-1 || mbi.AllocationProtect == alloc_protect);
    if (!ok) {
        char exp[200];
        snprintf(exp, sizeof exp, "%s: State %#x Protect %#x RegionSize %#zx AllocationBase %p", what, state, protect,
                 size, alloc_base);
        verdict(c, HM_RULE_FAIL, exp, "State %#x Protect %#x RegionSize %#zx AllocationBase %p AllocationProtect %#x",
                mbi.State, mbi.Protect, (size_t)mbi.RegionSize, mbi.AllocationBase, mbi.AllocationProtect);
    }
    return ok;
}

/* ---- VirtualAlloc argument checks ---------------------------------------------------------------------------- */

typedef struct bad_alloc {
    const char *id, *what;
    uintptr_t address;
    size_t size;
    DWORD type, protect;
    HRESULT want;
} bad_alloc;

static const bad_alloc bad_allocs[] = {
    {"vm.alloc.size-zero", "VirtualAlloc(NULL, 0, MEM_RESERVE, PAGE_READWRITE)", 0, 0, MEM_RESERVE, PAGE_READWRITE,
     INVALID_PARAMETER},
    {"vm.alloc.type-zero", "VirtualAlloc(NULL, 4K, 0, PAGE_READWRITE)", 0, KB(4), 0, PAGE_READWRITE, INVALID_PARAMETER},
    {"vm.alloc.type-unknown", "VirtualAlloc(NULL, 4K, MEM_RESERVE|0x40000000, PAGE_READWRITE)", 0, KB(4),
     MEM_RESERVE | 0x40000000u, PAGE_READWRITE, INVALID_PARAMETER},
    {"vm.alloc.type-decommit", "VirtualAlloc(NULL, 4K, MEM_DECOMMIT, PAGE_READWRITE)", 0, KB(4), MEM_DECOMMIT,
     PAGE_READWRITE, INVALID_PARAMETER},
    {"vm.alloc.top-down-alone", "VirtualAlloc(NULL, 4K, MEM_TOP_DOWN, PAGE_READWRITE)", 0, KB(4), MEM_TOP_DOWN,
     PAGE_READWRITE, INVALID_PARAMETER},
    {"vm.alloc.protect-zero-reserve", "VirtualAlloc(NULL, 4K, MEM_RESERVE, 0)", 0, KB(4), MEM_RESERVE, 0,
     INVALID_PARAMETER},
    {"vm.alloc.protect-zero-commit", "VirtualAlloc(NULL, 4K, MEM_COMMIT, 0)", 0, KB(4), MEM_COMMIT, 0,
     INVALID_PARAMETER},
    {"vm.alloc.protect-two-base", "VirtualAlloc(NULL, 4K, MEM_COMMIT, PAGE_READWRITE|PAGE_READONLY)", 0, KB(4),
     MEM_COMMIT, PAGE_READWRITE | PAGE_READONLY, INVALID_PARAMETER},
    {"vm.alloc.protect-writecopy", "VirtualAlloc(NULL, 4K, MEM_COMMIT, PAGE_WRITECOPY)", 0, KB(4), MEM_COMMIT,
     PAGE_WRITECOPY, INVALID_PARAMETER},
    {"vm.alloc.reset-combined", "VirtualAlloc(NULL, 4K, MEM_RESERVE|MEM_RESET, PAGE_READWRITE)", 0, KB(4),
     MEM_RESERVE | MEM_RESET, PAGE_READWRITE, INVALID_PARAMETER},
    {"vm.alloc.low-address", "VirtualAlloc(0x1000, 4K, MEM_RESERVE, PAGE_READWRITE)", 0x1000, KB(4), MEM_RESERVE,
     PAGE_READWRITE, INVALID_PARAMETER},
    {"vm.alloc.size-beyond-address-space", "VirtualAlloc(NULL, 2^62, MEM_RESERVE, PAGE_READWRITE)", 0,
     (size_t)1 << 62, MEM_RESERVE, PAGE_READWRITE, INVALID_PARAMETER},
    {"vm.alloc.commit-unreserved", "VirtualAlloc(0x10000000, 4K, MEM_COMMIT, PAGE_READWRITE) where nothing is reserved",
     0x10000000, KB(4), MEM_COMMIT, PAGE_READWRITE, INVALID_ADDRESS},
};

static void check_bad_alloc(hm_rule_ctx *c, const char *id)
{
    for (size_t i = 0; i < sizeof bad_allocs / sizeof bad_allocs[0]; i++) {
        const bad_alloc *b = &bad_allocs[i];
        if (strcmp(b->id, id) != 0)
            continue;
        void *p = (void *)1;
        EXPECT_HR(c, b->what, IHostMemoryManager_VirtualAlloc(c->m, (void *)b->address, b->size, b->type, b->protect,
                                                              eTaskCritical, &p),
                  b->want);
        EXPECT(c, p == NULL, "*ppMem is NULL after a failed VirtualAlloc", "%p", p);
    }
}

#define BAD_ALLOC_RULE(name, suffix)                                                                              \
    static void rule_##name(hm_rule_ctx *c) { check_bad_alloc(c, "vm.alloc." suffix); }
BAD_ALLOC_RULE(size_zero, "size-zero")
BAD_ALLOC_RULE(type_zero, "type-zero")
BAD_ALLOC_RULE(type_unknown, "type-unknown")
BAD_ALLOC_RULE(type_decommit, "type-decommit")
BAD_ALLOC_RULE(top_down_alone, "top-down-alone")
BAD_ALLOC_RULE(protect_zero_reserve, "protect-zero-reserve")
BAD_ALLOC_RULE(protect_zero_commit, "protect-zero-commit")
BAD_ALLOC_RULE(protect_two_base, "protect-two-base")
BAD_ALLOC_RULE(protect_writecopy, "protect-writecopy")
BAD_ALLOC_RULE(reset_combined, "reset-combined")
BAD_ALLOC_RULE(low_address, "low-address")
BAD_ALLOC_RULE(huge_size, "size-beyond-address-space")
BAD_ALLOC_RULE(commit_unreserved, "commit-unreserved")

static void rule_alloc_null_out(hm_rule_ctx *c)
{
    EXPECT_HR(c, "VirtualAlloc(..., ppMem = NULL)",
              IHostMemoryManager_VirtualAlloc(c->m, NULL, KB(4), MEM_COMMIT, PAGE_READWRITE, eTaskCritical, NULL),
              E_POINTER);
}

/* ---- Reserving ------------------------------------------------------------------------------------------------ */

static void rule_reserve_granularity(hm_rule_ctx *c)
{
    for (int i = 0; i < 8; i++) {
        void *p = reserve(c, KB(4) * (size_t)(i + 1), MEM_RESERVE, PAGE_READWRITE);
        if (!p)
            return;
        EXPECT(c, ((uintptr_t)p & 0xFFFF) == 0, "reservations at NULL start on a 64 KiB boundary", "%p", p);
    }
}

static void rule_reserve_fresh_query(hm_rule_ctx *c)
{
    void *p = reserve(c, 0xFFFC, MEM_RESERVE, PAGE_READWRITE);
    if (p && expect_region(c, "a fresh 0xFFFC-byte reservation", p, MEM_RESERVE, 0, 0x10000, p, PAGE_READWRITE)) {
        MEMORY_BASIC_INFORMATION mbi;
        if (query(c, p, &mbi))
            EXPECT(c, mbi.Type == MEM_PRIVATE, "Type MEM_PRIVATE", "Type %#x", mbi.Type);
    }
}

static void rule_reserve_one_page(hm_rule_ctx *c)
{
    char *p = reserve(c, KB(4), MEM_RESERVE, PAGE_READWRITE);
    if (!p || !expect_region(c, "a one-page reservation", p, MEM_RESERVE, 0, KB(4), p, PAGE_READWRITE))
        return;
    void *q = (void *)1;
    EXPECT_HR(c, "VirtualAlloc(reservation + 0x1000, 4K, MEM_RESERVE) inside the taken granule",
              IHostMemoryManager_VirtualAlloc(c->m, p + 0x1000, KB(4), MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &q),
              INVALID_ADDRESS);
}

static void rule_reserve_conflict(hm_rule_ctx *c)
{
    char *p = reserve(c, KB(64), MEM_RESERVE, PAGE_READWRITE);
    void *q;
    if (p)
        EXPECT_HR(c, "VirtualAlloc(existing + 0x8000, 64K, MEM_RESERVE)",
                  IHostMemoryManager_VirtualAlloc(c->m, p + 0x8000, KB(64), MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &q),
                  INVALID_ADDRESS);
}

static void rule_reserve_reuse(hm_rule_ctx *c)
{
    void *p = reserve(c, KB(64), MEM_RESERVE, PAGE_READWRITE), *q = NULL;
    if (!p)
        return;
    EXPECT_HR(c, "VirtualFree(base, 0, MEM_RELEASE)", IHostMemoryManager_VirtualFree(c->m, p, 0, MEM_RELEASE), S_OK);
    EXPECT_HR(c, "VirtualAlloc(released base, 4K, MEM_RESERVE|MEM_COMMIT)",
              IHostMemoryManager_VirtualAlloc(c->m, p, KB(4), MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &q),
              S_OK);
    EXPECT(c, q == p, "the released base is returned again", "%p instead of %p", q, p);
}

static void rule_reserve_rounds_down(hm_rule_ctx *c)
{
    char *p = reserve(c, KB(128), MEM_RESERVE, PAGE_READWRITE);
    void *q = NULL;
    if (!p)
        return;
    release(c, p);
    EXPECT_HR(c, "VirtualAlloc(base + 0x1234, 4K, MEM_RESERVE)",
              IHostMemoryManager_VirtualAlloc(c->m, p + 0x1234, KB(4), MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &q),
              S_OK);
    EXPECT(c, q == p, "the address is rounded down to 64 KiB", "%p for a request at %p", q, (void *)(p + 0x1234));
    expect_region(c, "reserved up to the end of the request", p, MEM_RESERVE, 0, 0x3000, p, PAGE_READWRITE);
}

static void rule_reserve_top_down(hm_rule_ctx *c)
{
    void *low = reserve(c, KB(64), MEM_RESERVE, PAGE_READWRITE);
    void *high = low ? reserve(c, KB(64), MEM_RESERVE | MEM_TOP_DOWN, PAGE_READWRITE) : NULL;
    if (high)
        EXPECT(c, (uintptr_t)high > (uintptr_t)low, "a MEM_TOP_DOWN reservation lies above one made before it",
               "%p below %p", high, low);
}

/* ---- Committing ------------------------------------------------------------------------------------------------ */

static void rule_commit_at_null(hm_rule_ctx *c)
{
    void *p = reserve(c, KB(8), MEM_COMMIT, PAGE_READWRITE);
    if (p)
        expect_region(c, "MEM_COMMIT at NULL reserves and commits", p, MEM_COMMIT, PAGE_READWRITE, KB(8), p,
                      PAGE_READWRITE);
}

static void rule_commit_zeroed(hm_rule_ctx *c)
{
    char *p = reserve(c, KB(64), MEM_RESERVE, PAGE_READWRITE);
    void *q;
    if (!p)
        return;
    EXPECT_HR(c, "commit 16 pages", IHostMemoryManager_VirtualAlloc(c->m, p, KB(64), MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &q), S_OK);
    for (size_t i = 0; i < KB(64); i += 511)
        EXPECT(c, p[i] == 0, "freshly committed pages read as zero", "byte %zu is %#x", i, (unsigned char)p[i]);
    memset(p, 0x5A, KB(64));
    EXPECT_HR(c, "decommit", IHostMemoryManager_VirtualFree(c->m, p, KB(64), MEM_DECOMMIT), S_OK);
    EXPECT_HR(c, "recommit", IHostMemoryManager_VirtualAlloc(c->m, p, KB(64), MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &q), S_OK);
    for (size_t i = 0; i < KB(64); i += 509)
        EXPECT(c, p[i] == 0, "pages read as zero after decommit and recommit", "byte %zu is %#x", i, (unsigned char)p[i]);
}

/* Where the first byte of [p, p + size) that is not zero is, or size. Every byte: a host that recycles pages may
 * leave a single stale one anywhere (a sample of bytes or pages would miss it). */
static size_t first_nonzero(const unsigned char *p, size_t size)
{
    for (size_t i = 0; i < size; i++)
        if (p[i])
            return i;
    return size;
}

/* The runtime's usual call: reserve and commit in one. */
static void rule_reserve_commit_zeroed(hm_rule_ctx *c)
{
    unsigned char *p = reserve(c, KB(256), MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    if (!p)
        return;
    size_t at = first_nonzero(p, KB(256));
    EXPECT(c, at == KB(256), "every byte of a 256 KiB reservation committed in the same call reads as zero",
           "byte %#zx (page %zu) is %#x", at, at / KB(4), at < KB(256) ? p[at] : 0);
}

static void rule_commit_keeps_contents(hm_rule_ctx *c)
{
    char *p = reserve(c, KB(8), MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    void *q;
    if (!p)
        return;
    memset(p, 0x77, KB(8));
    EXPECT_HR(c, "commit committed pages again", IHostMemoryManager_VirtualAlloc(c->m, p, KB(8), MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &q), S_OK);
    EXPECT(c, p[0] == 0x77 && p[KB(8) - 1] == 0x77, "recommitting committed pages keeps their contents", "%#x",
           (unsigned char)p[0]);
}

static void rule_commit_sets_protection(hm_rule_ctx *c)
{
    char *p = reserve(c, KB(8), MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    void *q;
    if (!p)
        return;
    EXPECT_HR(c, "commit again PAGE_READONLY", IHostMemoryManager_VirtualAlloc(c->m, p, KB(4), MEM_COMMIT, PAGE_READONLY, eTaskCritical, &q), S_OK);
    expect_region(c, "the recommitted page takes the new protection", p, MEM_COMMIT, PAGE_READONLY, KB(4), p,
                  PAGE_READWRITE);
}

static void rule_commit_rounds(hm_rule_ctx *c)
{
    char *p = reserve(c, KB(64), MEM_RESERVE, PAGE_READWRITE);
    void *q = NULL;
    if (!p)
        return;
    EXPECT_HR(c, "VirtualAlloc(base + 0x1FFF, 2, MEM_COMMIT)",
              IHostMemoryManager_VirtualAlloc(c->m, p + 0x1FFF, 2, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &q), S_OK);
    EXPECT(c, q == p + 0x1000, "the page-rounded address is returned", "%p", q);
    expect_region(c, "both pages the range touches are committed", p + 0x1000, MEM_COMMIT, PAGE_READWRITE, KB(8), p,
                  PAGE_READWRITE);
}

static void rule_commit_past_end(hm_rule_ctx *c)
{
    char *p = reserve(c, KB(64), MEM_RESERVE, PAGE_READWRITE);
    void *q;
    if (!p)
        return;
    EXPECT_HR(c, "VirtualAlloc(base + 0xF000, 0x2000, MEM_COMMIT) running past the reservation",
              IHostMemoryManager_VirtualAlloc(c->m, p + 0xF000, 0x2000, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &q),
              INVALID_ADDRESS);
    expect_region(c, "nothing was committed", p + 0xF000, MEM_RESERVE, 0, KB(4), p, PAGE_READWRITE);
}

static void rule_commit_noaccess_reported(hm_rule_ctx *c)
{
    void *p = reserve(c, KB(4), MEM_RESERVE | MEM_COMMIT, PAGE_NOACCESS);
    if (p)
        expect_region(c, "a committed PAGE_NOACCESS page", p, MEM_COMMIT, PAGE_NOACCESS, KB(4), p, PAGE_NOACCESS);
}

/* ---- Decommit and release ------------------------------------------------------------------------------------- */

static void rule_decommit_rounds(hm_rule_ctx *c)
{
    char *p = reserve(c, KB(64), MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    if (!p)
        return;
    EXPECT_HR(c, "VirtualFree(base + 0x1FFF, 2, MEM_DECOMMIT)", IHostMemoryManager_VirtualFree(c->m, p + 0x1FFF, 2, MEM_DECOMMIT), S_OK);
    if (!expect_region(c, "page 0 stays committed", p, MEM_COMMIT, PAGE_READWRITE, KB(4), p, PAGE_READWRITE))
        return;
    expect_region(c, "pages 1-2 are reserved again", p + 0x1000, MEM_RESERVE, 0, KB(8), p, PAGE_READWRITE);
}

static void rule_decommit_size0(hm_rule_ctx *c)
{
    char *p = reserve(c, KB(64), MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    if (!p)
        return;
    EXPECT_HR(c, "VirtualFree(base + 0x1001, 0, MEM_DECOMMIT)", IHostMemoryManager_VirtualFree(c->m, p + 0x1001, 0, MEM_DECOMMIT), INVALID_ADDRESS);
    EXPECT_HR(c, "VirtualFree(base, 0, MEM_DECOMMIT)", IHostMemoryManager_VirtualFree(c->m, p, 0, MEM_DECOMMIT), S_OK);
    expect_region(c, "size 0 at the base decommits the whole reservation", p, MEM_RESERVE, 0, KB(64), p, PAGE_READWRITE);
}

static void rule_decommit_past_end(hm_rule_ctx *c)
{
    char *p = reserve(c, KB(4), MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    if (!p)
        return;
    EXPECT_HR(c, "VirtualFree(base, 0x10000, MEM_DECOMMIT) on a one-page reservation",
              IHostMemoryManager_VirtualFree(c->m, p, KB(64), MEM_DECOMMIT), INVALID_PARAMETER);
    expect_region(c, "nothing was decommitted", p, MEM_COMMIT, PAGE_READWRITE, KB(4), p, PAGE_READWRITE);
}

static void rule_decommit_reserved(hm_rule_ctx *c)
{
    char *p = reserve(c, KB(64), MEM_RESERVE, PAGE_READWRITE);
    if (p)
        EXPECT_HR(c, "VirtualFree(reserved pages, MEM_DECOMMIT)", IHostMemoryManager_VirtualFree(c->m, p, KB(16), MEM_DECOMMIT), S_OK);
}

static void rule_release_size_nonzero(hm_rule_ctx *c)
{
    char *p = reserve(c, KB(64), MEM_RESERVE, PAGE_READWRITE);
    if (!p)
        return;
    EXPECT_HR(c, "VirtualFree(base, 1, MEM_RELEASE)", IHostMemoryManager_VirtualFree(c->m, p, 1, MEM_RELEASE), INVALID_PARAMETER);
    expect_region(c, "nothing was released", p, MEM_RESERVE, 0, KB(64), p, PAGE_READWRITE);
}

static void rule_release_not_base(hm_rule_ctx *c)
{
    char *p = reserve(c, KB(128), MEM_RESERVE, PAGE_READWRITE);
    if (!p)
        return;
    EXPECT_HR(c, "VirtualFree(base + 0x1000, 0, MEM_RELEASE)", IHostMemoryManager_VirtualFree(c->m, p + 0x1000, 0, MEM_RELEASE), INVALID_ADDRESS);
    EXPECT_HR(c, "VirtualFree(base + 0x10000, 0, MEM_RELEASE)", IHostMemoryManager_VirtualFree(c->m, p + 0x10000, 0, MEM_RELEASE), INVALID_ADDRESS);
    EXPECT_HR(c, "VirtualFree(base + 0xFFF, 0, MEM_RELEASE) inside the first page", IHostMemoryManager_VirtualFree(c->m, p + 0xFFF, 0, MEM_RELEASE), S_OK);
}

static void rule_release_twice(hm_rule_ctx *c)
{
    char *p = reserve(c, KB(64), MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    if (!p)
        return;
    EXPECT_HR(c, "release", IHostMemoryManager_VirtualFree(c->m, p, 0, MEM_RELEASE), S_OK);
    EXPECT_HR(c, "release again", IHostMemoryManager_VirtualFree(c->m, p, 0, MEM_RELEASE), INVALID_ADDRESS);
    expect_region(c, "released memory is free", p, MEM_FREE, PAGE_NOACCESS, (size_t)-1, NULL, 0);
}

static void rule_free_type(hm_rule_ctx *c)
{
    char *p = reserve(c, KB(64), MEM_RESERVE, PAGE_READWRITE);
    if (!p)
        return;
    EXPECT_HR(c, "VirtualFree(base, 0, 0)", IHostMemoryManager_VirtualFree(c->m, p, 0, 0), INVALID_PARAMETER);
    EXPECT_HR(c, "VirtualFree(base, 0, MEM_DECOMMIT|MEM_RELEASE)", IHostMemoryManager_VirtualFree(c->m, p, 0, MEM_DECOMMIT | MEM_RELEASE), INVALID_PARAMETER);
    EXPECT_HR(c, "VirtualFree(base, 0, MEM_FREE)", IHostMemoryManager_VirtualFree(c->m, p, 0, MEM_FREE), INVALID_PARAMETER);
}

/* ---- VirtualProtect ----------------------------------------------------------------------------------------------- */

static void rule_protect_old_first_page(hm_rule_ctx *c)
{
    char *p = reserve(c, KB(64), MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    DWORD old = 0;
    if (!p)
        return;
    EXPECT_HR(c, "protect page 0 read-only", IHostMemoryManager_VirtualProtect(c->m, p, KB(4), PAGE_READONLY, &old), S_OK);
    EXPECT_HR(c, "protect all 16 pages", IHostMemoryManager_VirtualProtect(c->m, p, KB(64), PAGE_EXECUTE_READ, &old), S_OK);
    EXPECT(c, old == PAGE_READONLY, "the old protection is the first page's (PAGE_READONLY)", "%#x", old);
}

static void rule_protect_splits(hm_rule_ctx *c)
{
    char *p = reserve(c, KB(64), MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    DWORD old;
    if (!p)
        return;
    EXPECT_HR(c, "protect 3 pages", IHostMemoryManager_VirtualProtect(c->m, p, KB(12), PAGE_READONLY, &old), S_OK);
    if (expect_region(c, "the 3 pages form a region", p, MEM_COMMIT, PAGE_READONLY, KB(12), p, PAGE_READWRITE))
        expect_region(c, "the rest another", p + KB(12), MEM_COMMIT, PAGE_READWRITE, KB(52), p, PAGE_READWRITE);
}

static void rule_protect_uncommitted(hm_rule_ctx *c)
{
    char *p = reserve(c, KB(64), MEM_RESERVE, PAGE_READWRITE);
    void *q;
    DWORD old = 0xDEAD;
    if (!p)
        return;
    EXPECT_HR(c, "commit page 0", IHostMemoryManager_VirtualAlloc(c->m, p, KB(4), MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &q), S_OK);
    EXPECT_HR(c, "VirtualProtect(base, 0xFFFC) over uncommitted pages", IHostMemoryManager_VirtualProtect(c->m, p, 0xFFFC, PAGE_READONLY, &old), INVALID_ADDRESS);
    expect_region(c, "the committed page is unchanged", p, MEM_COMMIT, PAGE_READWRITE, KB(4), p, PAGE_READWRITE);
}

static void rule_protect_free(hm_rule_ctx *c)
{
    char *p = reserve(c, KB(64), MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    DWORD old;
    if (!p)
        return;
    release(c, p);
    EXPECT_HR(c, "VirtualProtect of released memory", IHostMemoryManager_VirtualProtect(c->m, p, KB(4), PAGE_READONLY, &old), INVALID_ADDRESS);
}

static void rule_protect_invalid(hm_rule_ctx *c)
{
    char *p = reserve(c, KB(4), MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    DWORD old;
    if (!p)
        return;
    EXPECT_HR(c, "VirtualProtect(..., 0)", IHostMemoryManager_VirtualProtect(c->m, p, KB(4), 0, &old), INVALID_PARAMETER);
    EXPECT_HR(c, "VirtualProtect(..., PAGE_WRITECOPY)", IHostMemoryManager_VirtualProtect(c->m, p, KB(4), PAGE_WRITECOPY, &old), INVALID_PARAMETER);
    expect_region(c, "unchanged", p, MEM_COMMIT, PAGE_READWRITE, KB(4), p, PAGE_READWRITE);
}

static void rule_protect_null_old(hm_rule_ctx *c)
{
    char *p = reserve(c, KB(4), MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    if (p)
        EXPECT_HR(c, "VirtualProtect(..., pflOldProtect = NULL)", IHostMemoryManager_VirtualProtect(c->m, p, KB(4), PAGE_READONLY, NULL), E_POINTER);
}

static void rule_protect_round_trip(hm_rule_ctx *c)
{
    static const DWORD protections[] = {PAGE_NOACCESS, PAGE_READONLY, PAGE_READWRITE, PAGE_EXECUTE, PAGE_EXECUTE_READ,
                                        PAGE_EXECUTE_READWRITE};
    char *p = reserve(c, KB(4), MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    DWORD old, previous = PAGE_READWRITE;
    if (!p)
        return;
    for (size_t i = 0; i < 6; i++) {
        EXPECT_HR(c, "VirtualProtect to each base protection", IHostMemoryManager_VirtualProtect(c->m, p, KB(4), protections[i], &old), S_OK);
        EXPECT(c, old == previous, "the previous protection comes back verbatim", "%#x instead of %#x", old, previous);
        if (!expect_region(c, "the protection is reported verbatim", p, MEM_COMMIT, protections[i], KB(4), p, PAGE_READWRITE))
            return;
        previous = protections[i];
    }
}

/* ---- VirtualQuery ------------------------------------------------------------------------------------------------- */

static void rule_query_base_rounded(hm_rule_ctx *c)
{
    char *p = reserve(c, KB(64), MEM_RESERVE, PAGE_READWRITE);
    MEMORY_BASIC_INFORMATION mbi;
    if (p && query(c, p + 0x1234, &mbi))
        EXPECT(c, mbi.BaseAddress == p + 0x1000 && mbi.RegionSize == 0xF000,
               "BaseAddress is the queried address rounded down to a page, RegionSize from there",
               "BaseAddress %p RegionSize %#zx", mbi.BaseAddress, (size_t)mbi.RegionSize);
}

static void rule_query_not_merged(hm_rule_ctx *c)
{
    char *a = reserve(c, KB(64), MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    void *b = NULL;
    if (!a)
        return;
    if (IHostMemoryManager_VirtualAlloc(c->m, a + KB(64), KB(64), MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
                                        eTaskCritical, &b) != S_OK) {
        verdict(c, HM_RULE_INFO, "an adjacent reservation could be made to test with", "the host refused one");
        return;
    }
    expect_region(c, "two adjacent alike allocations are separate regions", a, MEM_COMMIT, PAGE_READWRITE, KB(64), a,
                  PAGE_READWRITE);
}

static void rule_query_free_region(hm_rule_ctx *c)
{
    char *p = reserve(c, KB(4), MEM_RESERVE, PAGE_READWRITE);
    void *q = NULL;
    if (!p)
        return;
    if (IHostMemoryManager_VirtualAlloc(c->m, p + KB(128), KB(4), MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &q) != S_OK) {
        verdict(c, HM_RULE_INFO, "a reservation 128 KiB further could be made", "the host refused one");
        return;
    }
    expect_region(c, "free space runs up to the next allocation", p + KB(4), MEM_FREE, PAGE_NOACCESS, KB(124), NULL, 0);
}

static void rule_query_short_buffer(hm_rule_ctx *c)
{
    MEMORY_BASIC_INFORMATION mbi;
    SIZE_T n = 7;
    EXPECT_HR(c, "VirtualQuery(..., dwLength = 47)", IHostMemoryManager_VirtualQuery(c->m, &mbi, &mbi, sizeof mbi - 1, &n), BAD_LENGTH);
    EXPECT(c, n == 0, "*pResult is 0 on failure", "%zu", (size_t)n);
}

static void rule_query_beyond_user_space(hm_rule_ctx *c)
{
    MEMORY_BASIC_INFORMATION mbi;
    SIZE_T n;
    EXPECT_HR(c, "VirtualQuery(0xFFFF800000000000)", IHostMemoryManager_VirtualQuery(c->m, (void *)0xFFFF800000000000ull, &mbi, sizeof mbi, &n), INVALID_PARAMETER);
}

static void rule_query_null_pointers(hm_rule_ctx *c)
{
    MEMORY_BASIC_INFORMATION mbi;
    SIZE_T n;
    EXPECT_HR(c, "VirtualQuery(..., lpBuffer = NULL)", IHostMemoryManager_VirtualQuery(c->m, &mbi, NULL, sizeof mbi, &n), E_POINTER);
    EXPECT_HR(c, "VirtualQuery(..., pResult = NULL)", IHostMemoryManager_VirtualQuery(c->m, &mbi, &mbi, sizeof mbi, NULL), E_POINTER);
}

static void rule_query_own_stack(hm_rule_ctx *c)
{
    int local = 0;
    MEMORY_BASIC_INFORMATION mbi;
    if (query(c, &local, &mbi))
        EXPECT(c, mbi.State == MEM_COMMIT && mbi.Protect == PAGE_READWRITE && mbi.Type == MEM_PRIVATE,
               "the caller's own stack is MEM_COMMIT, PAGE_READWRITE, MEM_PRIVATE (a runtime queries its stack)",
               "State %#x Protect %#x Type %#x", mbi.State, mbi.Protect, mbi.Type);
}

/* ---- MEM_RESET ------------------------------------------------------------------------------------------------------ */

static void rule_reset_stays_committed(hm_rule_ctx *c)
{
    char *p = reserve(c, KB(8), MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    void *q;
    if (!p)
        return;
    EXPECT_HR(c, "VirtualAlloc(base, 4K, MEM_RESET, PAGE_NOACCESS)", IHostMemoryManager_VirtualAlloc(c->m, p, KB(4), MEM_RESET, PAGE_NOACCESS, eTaskCritical, &q), S_OK);
    expect_region(c, "reset pages stay committed with their protection", p, MEM_COMMIT, PAGE_READWRITE, KB(8), p, PAGE_READWRITE);
}

static void rule_guard_reported(hm_rule_ctx *c)
{
    char *p = reserve(c, KB(4), MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE | PAGE_GUARD);
    if (p)
        expect_region(c, "PAGE_GUARD is reported in Protect and AllocationProtect", p, MEM_COMMIT,
                      PAGE_READWRITE | PAGE_GUARD, KB(4), p, PAGE_READWRITE | PAGE_GUARD);
}

/* ---- COM --------------------------------------------------------------------------------------------------------- */

static void rule_com_queryinterface(hm_rule_ctx *c)
{
    void *p = (void *)1;
    EXPECT_HR(c, "QueryInterface(IID_IHostMemoryManager)", IHostMemoryManager_QueryInterface(c->m, &IID_IHostMemoryManager, &p), S_OK);
    EXPECT(c, p == c->m, "the same interface pointer", "%p", p);
    IHostMemoryManager_Release(c->m);
    EXPECT_HR(c, "QueryInterface(IID_IUnknown)", IHostMemoryManager_QueryInterface(c->m, &IID_IUnknown, &p), S_OK);
    IHostMemoryManager_Release(c->m);
    EXPECT_HR(c, "QueryInterface(IID_IHostMalloc)", IHostMemoryManager_QueryInterface(c->m, &IID_IHostMalloc, &p), E_NOINTERFACE);
    EXPECT(c, p == NULL, "*ppv is NULL when the interface is not supported", "%p", p);
}

static void rule_com_refcount(hm_rule_ctx *c)
{
    ULONG a = IHostMemoryManager_AddRef(c->m);
    ULONG b = IHostMemoryManager_AddRef(c->m);
    ULONG r1 = IHostMemoryManager_Release(c->m);
    ULONG r2 = IHostMemoryManager_Release(c->m);
    EXPECT(c, b == a + 1 && r1 == b - 1 && r2 == a - 1, "AddRef and Release return the new count",
           "AddRef %u, %u; Release %u, %u", a, b, r1, r2);
}

/* ---- Heaps ---------------------------------------------------------------------------------------------------------- */

static IHostMalloc *make_heap(hm_rule_ctx *c)
{
    IHostMalloc *h = NULL;
    HRESULT hr = IHostMemoryManager_CreateMalloc(c->m, MALLOC_THREADSAFE, &h);
    if (hr != S_OK || !h) {
        verdict(c, HM_RULE_FAIL, "CreateMalloc(MALLOC_THREADSAFE) gives a heap", "%s", hm_hr_name(hr));
        return NULL;
    }
    return h;
}

static void rule_heap_blocks(hm_rule_ctx *c)
{
    IHostMalloc *h = make_heap(c);
    if (!h)
        return;
    enum { N = 200 };
    char *blocks[N];
    for (int i = 0; i < N; i++) {
        size_t size = 1 + (size_t)(i * 37 % 2000);
        if (IHostMalloc_Alloc(h, size, eTaskCritical, (void **)&blocks[i]) != S_OK) {
            verdict(c, HM_RULE_FAIL, "Alloc of small blocks succeeds", "block %d failed", i);
            IHostMalloc_Release(h);
            return;
        }
        memset(blocks[i], i & 0xFF, size);
        if ((uintptr_t)blocks[i] % 16)
            verdict(c, HM_RULE_FAIL, "every heap block is 16-byte aligned (MEMORY_ALLOCATION_ALIGNMENT)",
                    "Alloc(%zu) returned %p", size, (void *)blocks[i]);
    }
    for (int i = 0; i < N; i++) {
        size_t size = 1 + (size_t)(i * 37 % 2000);
        for (size_t k = 0; k < size; k += 97)
            if ((unsigned char)blocks[i][k] != (i & 0xFF)) {
                verdict(c, HM_RULE_FAIL, "blocks never overlap: each keeps what was written", "block %d byte %zu changed", i, k);
                IHostMalloc_Release(h);
                return;
            }
    }
    for (int i = 0; i < N; i++)
        IHostMalloc_Free(h, blocks[i]);
    IHostMalloc_Release(h);
}

static void rule_heap_free_null(hm_rule_ctx *c)
{
    IHostMalloc *h = make_heap(c);
    if (!h)
        return;
    HRESULT hr = IHostMalloc_Free(h, NULL);
    IHostMalloc_Release(h);
    EXPECT(c, SUCCEEDED(hr), "Free(NULL) succeeds (the CLR passes it through)", "%s", hm_hr_name(hr));
}

static void rule_heap_free_foreign(hm_rule_ctx *c)
{
    IHostMalloc *h = make_heap(c);
    int local;
    if (!h)
        return;
    HRESULT hr = IHostMalloc_Free(h, &local);
    IHostMalloc_Release(h);
    EXPECT(c, hr == HOST_E_INVALIDOPERATION, "Free of a pointer the heap does not own -> HOST_E_INVALIDOPERATION", "%s",
           hm_hr_name(hr));
}

static void rule_heap_double_free(hm_rule_ctx *c)
{
    IHostMalloc *h = make_heap(c);
    void *keep, *p;
    if (!h)
        return;
    IHostMalloc_Alloc(h, 64, eTaskCritical, &keep);
    IHostMalloc_Alloc(h, 64, eTaskCritical, &p);
    HRESULT first = IHostMalloc_Free(h, p), second = IHostMalloc_Free(h, p);
    IHostMalloc_Free(h, keep);
    IHostMalloc_Release(h);
    EXPECT(c, first == S_OK && second == HOST_E_INVALIDOPERATION, "a double free -> HOST_E_INVALIDOPERATION",
           "first %s, second %s", hm_hr_name(first), hm_hr_name(second));
}

static void rule_heap_null_out(hm_rule_ctx *c)
{
    IHostMalloc *h = make_heap(c);
    if (!h)
        return;
    HRESULT hr = IHostMalloc_Alloc(h, 16, eTaskCritical, NULL);
    IHostMalloc_Release(h);
    EXPECT(c, hr == E_POINTER, "Alloc(..., ppMem = NULL) -> E_POINTER", "%s", hm_hr_name(hr));
}

/* Every block is 16-byte aligned on x64 (MEMORY_ALLOCATION_ALIGNMENT, HeapAlloc's guarantee): the runtime keeps
 * 16-byte data (SSE, interlocked 128-bit) in heap blocks. Sizes 1..64 and powers of two, from Alloc and DebugAlloc. */
static void rule_heap_alignment(hm_rule_ctx *c)
{
    IHostMalloc *h = make_heap(c);
    if (!h)
        return;
    enum { N = 96 };
    void *blocks[N];
    int n = 0;
    for (; n < N; n++) {
        size_t size = n < 64 ? (size_t)n + 1 : (size_t)1 << (n - 64) % 20;
        bool debug = n % 2;
        void *p = NULL;
        HRESULT hr = debug ? IHostMalloc_DebugAlloc(h, size, eTaskCritical, (char *)"conform.c", n, &p)
                           : IHostMalloc_Alloc(h, size, eTaskCritical, &p);
        if (hr != S_OK || !p) {
            verdict(c, HM_RULE_FAIL, "Alloc and DebugAlloc of small blocks succeed", "%s(%zu) -> %s",
                    debug ? "DebugAlloc" : "Alloc", size, hm_hr_name(hr));
            break;
        }
        blocks[n] = p;
        if ((uintptr_t)p % 16) {
            verdict(c, HM_RULE_FAIL, "every heap block is 16-byte aligned (MEMORY_ALLOCATION_ALIGNMENT)",
                    "%s(%zu) returned %p, %zu bytes past a 16-byte boundary", debug ? "DebugAlloc" : "Alloc", size, p,
                    (size_t)((uintptr_t)p % 16));
            n++;
            break;
        }
    }
    while (n > 0)
        IHostMalloc_Free(h, blocks[--n]);
    IHostMalloc_Release(h);
}

/* A block's bytes: a pattern of its number and the offset, so a byte written by a neighbour (or another offset of
 * the same block) is told apart. */
static unsigned char size_pattern(unsigned block, size_t offset)
{
    return (unsigned char)(block * 0x9Du + offset + (offset >> 8) * 7u + (offset >> 16) * 13u);
}

/* Blocks of every size class, from 1 byte past the large-block thresholds a host may have (4 KiB, 64 KiB, 1 MiB) to
 * 4 MiB + 1: three live at once of each size (two past 64 KiB), none overlapping another, each filled completely and still holding all of
 * it when its neighbours are filled too. A block short by even a byte, or two blocks sharing bytes, shows. */
static void rule_heap_size_classes(hm_rule_ctx *c)
{
    IHostMalloc *h = make_heap(c);
    if (!h)
        return;
    size_t sizes[400];
    size_t n = 0;
    for (size_t s = 1; s <= 128; s++)
        sizes[n++] = s;
    for (size_t p = 256; p <= ((size_t)4 << 20); p *= 2) {
        size_t near[] = {p / 2 + p / 4, p - 16, p - 1, p, p + 1, p + 16, p + p / 4};
        for (size_t k = 0; k < sizeof near / sizeof near[0]; k++)
            if (p <= KB(64) || near[k] == p - 1 || near[k] == p + 1) /* big blocks: each side of the power */
                sizes[n++] = near[k];
    }
    enum { LIVE = 3 };
    unsigned id = 0;
    for (size_t i = 0; i < n && c->result->status == HM_RULE_PASS; i++) {
        size_t size = sizes[i];
        int live = size > KB(64) ? 2 : LIVE; /* a big block has one neighbour to check: it keeps the rule quick */
        unsigned char *b[LIVE] = {0};
        unsigned ids[LIVE];
        for (int k = 0; k < live; k++) {
            HRESULT hr = IHostMalloc_Alloc(h, size, eTaskCritical, (void **)&b[k]);
            if (hr != S_OK || !b[k]) {
                verdict(c, HM_RULE_FAIL, "Alloc of every size up to 4 MiB succeeds", "Alloc(%zu) -> %s", size,
                        hm_hr_name(hr));
                b[k] = NULL;
                break;
            }
            ids[k] = ++id;
            if ((uintptr_t)b[k] % 16)
                verdict(c, HM_RULE_FAIL, "every heap block is 16-byte aligned (MEMORY_ALLOCATION_ALIGNMENT)",
                        "Alloc(%zu) returned %p", size, (void *)b[k]);
            for (int j = 0; j < k; j++)
                if (b[j] < b[k] + size && b[k] < b[j] + size)
                    verdict(c, HM_RULE_FAIL, "live blocks never overlap",
                            "two live blocks of %zu bytes: %p and %p (%td bytes apart)", size, (void *)b[j],
                            (void *)b[k], b[k] > b[j] ? b[k] - b[j] : b[j] - b[k]);
        }
        for (int k = 0; k < live && b[k] && c->result->status == HM_RULE_PASS; k++)
            for (size_t o = 0; o < size; o++)
                b[k][o] = size_pattern(ids[k], o);
        for (int k = 0; k < live && b[k] && c->result->status == HM_RULE_PASS; k++)
            for (size_t o = 0; o < size; o++)
                if (b[k][o] != size_pattern(ids[k], o)) {
                    verdict(c, HM_RULE_FAIL, "a block holds every byte of its size, written over by nothing",
                            "Alloc(%zu) -> %p: byte %zu holds %#x, not %#x (the block is short, or overlaps another)",
                            size, (void *)b[k], o, b[k][o], size_pattern(ids[k], o));
                    break;
                }
        for (int k = 0; k < live; k++)
            if (b[k] && c->result->status == HM_RULE_PASS)
                IHostMalloc_Free(h, b[k]); /* a corrupted heap is left alone: the verdict is in */
    }
    if (c->result->status == HM_RULE_PASS)
        IHostMalloc_Release(h);
}

/* A size the host cannot serve fails with E_OUTOFMEMORY and *ppMem NULL; a header added to it must not wrap it
 * round to a small block. */
static void rule_heap_size_near_max(hm_rule_ctx *c)
{
    IHostMalloc *h = make_heap(c);
    if (!h)
        return;
    static const size_t huge[] = {SIZE_MAX, SIZE_MAX - 1, SIZE_MAX - 8, SIZE_MAX - 15, SIZE_MAX - 16, SIZE_MAX - 64,
                                  SIZE_MAX - 4095, SIZE_MAX / 2 + 1, (size_t)1 << 62};
    for (size_t i = 0; i < sizeof huge / sizeof huge[0] && c->result->status == HM_RULE_PASS; i++)
        for (int debug = 0; debug < 2; debug++) {
            void *p = (void *)(uintptr_t)0x1;
            HRESULT hr = debug ? IHostMalloc_DebugAlloc(h, huge[i], eTaskCritical, (char *)"conform.c", 1, &p)
                               : IHostMalloc_Alloc(h, huge[i], eTaskCritical, &p);
            if (hr != E_OUTOFMEMORY || p) {
                char exp[120];
                snprintf(exp, sizeof exp, "%s(%#zx) -> E_OUTOFMEMORY, *ppMem NULL", debug ? "DebugAlloc" : "Alloc",
                         huge[i]);
                verdict(c, HM_RULE_FAIL, exp, "%s, *ppMem %p%s", hm_hr_name(hr), p,
                        SUCCEEDED(hr) ? " (the size wrapped round to a small block)" : "");
                if (SUCCEEDED(hr) && p)
                    IHostMalloc_Free(h, p);
                break;
            }
        }
    IHostMalloc_Release(h);
}

/* ---- Load, callbacks, ledger --------------------------------------------------------------------------------------- */

static void rule_load_reported(hm_rule_ctx *c)
{
    DWORD load = 999;
    SIZE_T avail = 0;
    EXPECT_HR(c, "GetMemoryLoad", IHostMemoryManager_GetMemoryLoad(c->m, &load, &avail), S_OK);
    EXPECT(c, load <= 100, "the memory load is a percentage", "%u", load);
    EXPECT(c, avail > 0, "some bytes are available to a fresh host", "%zu", (size_t)avail);
    EXPECT_HR(c, "GetMemoryLoad(NULL, ...)", IHostMemoryManager_GetMemoryLoad(c->m, NULL, &avail), E_POINTER);
}

static void rule_callback_reference(hm_rule_ctx *c)
{
    static hm_counting_callback cb; /* outlives the manager, which releases it when it goes */
    cb.iface.lpVtbl = &hm_counting_callback_vtbl;
    atomic_store(&cb.refs, 1);
    EXPECT_HR(c, "RegisterMemoryNotificationCallback", IHostMemoryManager_RegisterMemoryNotificationCallback(c->m, &cb.iface), S_OK);
    EXPECT(c, atomic_load(&cb.refs) >= 2, "the host keeps a reference to the callback", "refcount %d", atomic_load(&cb.refs));
}

static void rule_ledger_round_trip(hm_rule_ctx *c)
{
    EXPECT_HR(c, "AcquiredVirtualAddressSpace(0x60000000, 1M)", IHostMemoryManager_AcquiredVirtualAddressSpace(c->m, (void *)0x60000000, 1 << 20), S_OK);
    EXPECT_HR(c, "ReleasedVirtualAddressSpace(0x60000000)", IHostMemoryManager_ReleasedVirtualAddressSpace(c->m, (void *)0x60000000), S_OK);
}

static void rule_ledger_release_unknown(hm_rule_ctx *c)
{
    HRESULT hr = IHostMemoryManager_ReleasedVirtualAddressSpace(c->m, (void *)0x61230000);
    EXPECT(c, FAILED(hr), "ReleasedVirtualAddressSpace of a range never acquired is refused", "%s", hm_hr_name(hr));
}

/* ---- Failure atomicity and threads ---------------------------------------------------------------------------------- */

static void rule_failed_call_changes_nothing(hm_rule_ctx *c)
{
    char *p = reserve(c, KB(64), MEM_RESERVE, PAGE_READWRITE);
    void *q;
    DWORD old;
    if (!p)
        return;
    EXPECT_HR(c, "commit page 2", IHostMemoryManager_VirtualAlloc(c->m, p + KB(8), KB(4), MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &q), S_OK);
    IHostMemoryManager_VirtualAlloc(c->m, p + KB(60), KB(8), MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &q);
    IHostMemoryManager_VirtualProtect(c->m, p, KB(16), PAGE_READONLY, &old);
    IHostMemoryManager_VirtualFree(c->m, p, KB(128), MEM_DECOMMIT);
    if (!expect_region(c, "after three failing calls, page 0-1 still reserved", p, MEM_RESERVE, 0, KB(8), p, PAGE_READWRITE))
        return;
    if (!expect_region(c, "page 2 still committed read-write", p + KB(8), MEM_COMMIT, PAGE_READWRITE, KB(4), p, PAGE_READWRITE))
        return;
    expect_region(c, "pages 3-15 still reserved", p + KB(12), MEM_RESERVE, 0, KB(52), p, PAGE_READWRITE);
}

typedef struct thread_arg {
    IHostMemoryManager *m;
    int id;
    atomic_int *errors;
} thread_arg;

static void *worker(void *p)
{
    thread_arg *a = p;
    for (int i = 0; i < 500; i++) {
        char *base;
        void *q;
        MEMORY_BASIC_INFORMATION mbi;
        SIZE_T n;
        if (IHostMemoryManager_VirtualAlloc(a->m, NULL, KB(64), MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, eTaskCritical,
                                            (void **)&base) != S_OK) {
            atomic_fetch_add(a->errors, 1);
            continue;
        }
        host_set_byte(base, 100, (unsigned char)a->id); /* a region handed to two threads shows as the other's id */
        if (IHostMemoryManager_VirtualQuery(a->m, base, &mbi, sizeof mbi, &n) != S_OK || mbi.AllocationBase != base ||
            host_byte(base, 100) != (unsigned char)a->id)
            atomic_fetch_add(a->errors, 1);
        (void)q;
        if (IHostMemoryManager_VirtualFree(a->m, base, 0, MEM_RELEASE) != S_OK)
            atomic_fetch_add(a->errors, 1);
    }
    return NULL;
}

static void rule_threads(hm_rule_ctx *c)
{
    atomic_int errors = 0;
    pthread_t t[4];
    thread_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (thread_arg){c->m, i + 1, &errors};
        pthread_create(&t[i], NULL, worker, &args[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    EXPECT(c, atomic_load(&errors) == 0, "4 threads reserving, querying and releasing at once get consistent answers",
           "%d wrong answers", atomic_load(&errors));
}

/* ---- Policy (information only) ----------------------------------------------------------------------------------- */

static void rule_policy_levels(hm_rule_ctx *c)
{
    void *p = NULL;
    /* 64 GiB: beyond the memory of the machines hostmem runs on, yet cheap for a host that keeps per-page books. */
    HRESULT hr = IHostMemoryManager_VirtualAlloc(c->m, NULL, (size_t)1 << 36, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p);
    if (SUCCEEDED(hr)) {
        release(c, p);
        verdict(c, HM_RULE_INFO, "the host enforces a commit budget", "a 64 GiB eTaskCritical commit succeeded");
    } else if (hr != E_OUTOFMEMORY) {
        verdict(c, HM_RULE_FAIL, "an impossible commit fails with E_OUTOFMEMORY", "%s", hm_hr_name(hr));
    }
}

/* ---- Pressure: callbacks that call back in, cycles that must keep succeeding ------------------------------------- */

/* What a runtime does inside OnMemoryNotification: queries, asks for the load, allocates and frees a little. Each
 * call is named in the shared result while in flight, so a host that notifies while holding its own lock is reported
 * by the call that never returned (see reentry_hang_message; the names are pressure.h's, shared with stress and
 * the fuzzer). */
typedef struct reentry {
    hm_rule_ctx *c;
    IHostMemoryManager *m;
    void *extra;     /* the reservation made from inside the callback */
    void *probe;     /* a reservation of the rule's to query */
    int calls, bad;  /* notifications that called back in; calls that did not succeed */
    char first_bad[160];
} reentry;

static void reentry_note(reentry *r, const char *what, HRESULT hr)
{
    if (hr == S_OK || r->bad++)
        return;
    snprintf(r->first_bad, sizeof r->first_bad, "%s -> %s", what, hm_hr_name(hr));
}

static HRESULT reentry_call(reentry *r, const char *what)
{
    r->c->result->in_callback = what;
    HRESULT hr;
    if (what == hm_reentry_query) {
        MEMORY_BASIC_INFORMATION mbi;
        SIZE_T n;
        hr = IHostMemoryManager_VirtualQuery(r->m, r->probe, &mbi, sizeof mbi, &n);
    } else if (what == hm_reentry_load) {
        DWORD load;
        SIZE_T avail;
        hr = IHostMemoryManager_GetMemoryLoad(r->m, &load, &avail);
    } else if (what == hm_reentry_alloc) {
        /* A reservation is never charged, so the host has no reason to refuse it even at full load. */
        hr = IHostMemoryManager_VirtualAlloc(r->m, NULL, KB(64), MEM_RESERVE, PAGE_READWRITE, eProcessCritical, &r->extra);
    } else {
        hr = IHostMemoryManager_VirtualFree(r->m, r->extra, 0, MEM_RELEASE);
        r->extra = NULL;
    }
    r->c->result->in_callback = NULL;
    reentry_note(r, what, hr);
    return hr;
}

static void reentry_on_notify(hm_counting_callback *cb, EMemoryAvailable e)
{
    (void)e;
    reentry *r = cb->ctx;
    reentry_call(r, hm_reentry_query);
    reentry_call(r, hm_reentry_load);
    if (reentry_call(r, hm_reentry_alloc) == S_OK && r->extra)
        reentry_call(r, hm_reentry_free);
    r->calls++;
}

/* The timeout message for a rule that hung inside the callback: the cause, then the call that did not return. */
static void reentry_hang_message(const hm_isolated *how, const char *in_callback, double timeout, char *out, size_t len)
{
    if (how->end == HM_ISOLATED_TIMED_OUT && in_callback)
        hm__reentry_hang_message(out, len, in_callback, timeout);
}

#define PRESSURE_CHUNKS 256
#define PRESSURE_CAP ((size_t)4 << 30) /* commits stop here: a host with a bigger budget is not driven to a notification */

static void rule_callback_reentry(hm_rule_ctx *c)
{
    static hm_counting_callback cb; /* outlives the manager, which releases it when it goes */
    reentry r = {c, c->m, NULL, NULL, 0, 0, ""};
    cb.iface.lpVtbl = &hm_counting_callback_vtbl;
    atomic_store(&cb.refs, 1);
    cb.on_notify = reentry_on_notify;
    cb.ctx = &r;
    if (!(r.probe = reserve(c, KB(64), MEM_RESERVE, PAGE_READWRITE)))
        return;
    EXPECT_HR(c, "RegisterMemoryNotificationCallback", IHostMemoryManager_RegisterMemoryNotificationCallback(c->m, &cb.iface), S_OK);
    DWORD load = 0;
    SIZE_T avail = 0;
    EXPECT_HR(c, "GetMemoryLoad", IHostMemoryManager_GetMemoryLoad(c->m, &load, &avail), S_OK);
    /* Commit toward the budget the host's own GetMemoryLoad describes, until its state changes and it notifies. */
    size_t chunk = avail / 64 > KB(64) ? (avail / 64 + KB(64) - 1) / KB(64) * KB(64) : KB(64), total = 0;
    void *chunks[PRESSURE_CHUNKS];
    int n = 0;
    while (n < PRESSURE_CHUNKS && atomic_load(&cb.count) == 0 && total + chunk <= PRESSURE_CAP) {
        void *p = NULL;
        if (IHostMemoryManager_VirtualAlloc(c->m, NULL, chunk, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p) != S_OK || !p)
            break;
        chunks[n++] = p;
        total += chunk;
    }
    for (int i = 0; i < n; i++)
        release(c, chunks[i]); /* the load falls again: a second notification, and a second call back in */
    IHostMemoryManager_GetMemoryLoad(c->m, &load, &avail);
    release(c, r.probe);
    if (atomic_load(&cb.count) == 0) {
        verdict(c, HM_RULE_INFO, "committing toward the budget makes the host notify, and the callback calls back in",
                "no notification after committing %zu bytes (load then %u%%): not exercised; a smaller budget "
                "(--host-options) drives it", total, load);
        return;
    }
    EXPECT(c, r.bad == 0, "GetMemoryLoad, VirtualQuery and a VirtualAlloc/VirtualFree from inside OnMemoryNotification succeed",
           "%d of the calls failed, first %s", r.bad, r.first_bad);
}

#define CYCLES 4000

/* Right after an E_OUTOFMEMORY: a refusal is real when the host itself says fewer bytes (plus a 64 KiB granule of
 * slack for rounding and heap chunks) are available than were asked for. */
static void expect_real_refusal(hm_rule_ctx *c, const char *what, int cycle, size_t asked)
{
    DWORD load = 0;
    SIZE_T avail = 0;
    if (IHostMemoryManager_GetMemoryLoad(c->m, &load, &avail) != S_OK ||
        !hm__refusal_is_spurious(asked, avail, HM_REFUSAL_SLACK))
        return;
    char exp[160];
    snprintf(exp, sizeof exp, "%d cycles that each give back what they take keep succeeding", CYCLES);
    verdict(c, HM_RULE_FAIL, exp,
            "spurious out-of-memory: cycle %d: %s -> E_OUTOFMEMORY although GetMemoryLoad reports %zu bytes "
            "available (load %u%%): the host does not give back what decommit, release or Free return",
            cycle, what, (size_t)avail, load);
}

static void rule_cycles_keep_succeeding(hm_rule_ctx *c)
{
    for (int i = 0; i < CYCLES && c->result->status == HM_RULE_PASS; i++) {
        void *base = NULL, *p = NULL;
        HRESULT hr = IHostMemoryManager_VirtualAlloc(c->m, NULL, KB(64), MEM_RESERVE, PAGE_READWRITE, eProcessCritical, &base);
        if (hr != S_OK) {
            EXPECT(c, hr == E_OUTOFMEMORY, "a 64 KiB reservation succeeds or is refused with E_OUTOFMEMORY", "cycle %d: %s", i, hm_hr_name(hr));
            expect_real_refusal(c, "VirtualAlloc(NULL, 64K, MEM_RESERVE, eProcessCritical)", i, KB(64));
            return;
        }
        hr = IHostMemoryManager_VirtualAlloc(c->m, base, KB(64), MEM_COMMIT, PAGE_READWRITE, eProcessCritical, &p);
        if (hr == S_OK)
            hr = IHostMemoryManager_VirtualFree(c->m, base, KB(64), MEM_DECOMMIT);
        release(c, base);
        if (hr == E_OUTOFMEMORY) {
            expect_real_refusal(c, "VirtualAlloc(base, 64K, MEM_COMMIT, eProcessCritical)", i, KB(64));
            return;
        }
        EXPECT_HR(c, "a commit and decommit of a fresh reservation", hr, S_OK);
    }
    for (int i = 0; i < CYCLES && c->result->status == HM_RULE_PASS; i++) {
        IHostMalloc *h = NULL;
        void *p = NULL;
        HRESULT hr = IHostMemoryManager_CreateMalloc(c->m, MALLOC_THREADSAFE, &h);
        if (hr == S_OK) {
            hr = IHostMalloc_Alloc(h, KB(16), eProcessCritical, &p);
            if (hr == S_OK)
                hr = IHostMalloc_Free(h, p);
            IHostMalloc_Release(h);
        }
        if (hr == E_OUTOFMEMORY) {
            expect_real_refusal(c, "CreateMalloc, then Alloc(16K, eProcessCritical)", i, KB(16));
            return;
        }
        EXPECT_HR(c, "a heap's create, Alloc(16K), Free and Release", hr, S_OK);
    }
}

/* ---- The catalogue ----------------------------------------------------------------------------------------------- */

/* ---- Protection tables: every base value 0x00-0xff with each combination of the modifiers -------------------- */

/* What Windows answers for a protection in VirtualAlloc and VirtualProtect of private memory, written from the
 * documented rules (docs/semantics.md, VirtualAlloc check 8), apart from the manager's own validator. */
static bool prot_windows_accepts(DWORD protect)
{
    static const DWORD bases[] = {PAGE_NOACCESS, PAGE_READONLY, PAGE_READWRITE, PAGE_EXECUTE, PAGE_EXECUTE_READ,
                                  PAGE_EXECUTE_READWRITE};
    DWORD base = protect & 0xFFu, mods = protect & ~0xFFu;
    bool known = false;
    for (size_t i = 0; i < sizeof bases / sizeof bases[0]; i++)
        known |= base == bases[i];
    if (!known || (mods & ~(DWORD)(PAGE_GUARD | PAGE_NOCACHE | PAGE_WRITECOMBINE)))
        return false;
    bool guard = mods & PAGE_GUARD, nocache = mods & PAGE_NOCACHE, wc = mods & PAGE_WRITECOMBINE;
    if ((guard && base == PAGE_NOACCESS) || (nocache && (guard || wc)) || (wc && guard))
        return false;
    return !((nocache || wc) && base == PAGE_NOACCESS);
}

static const DWORD prot_modifiers[] = {0,
                                       PAGE_GUARD,
                                       PAGE_NOCACHE,
                                       PAGE_WRITECOMBINE,
                                       PAGE_GUARD | PAGE_NOCACHE,
                                       PAGE_GUARD | PAGE_WRITECOMBINE,
                                       PAGE_NOCACHE | PAGE_WRITECOMBINE,
                                       PAGE_GUARD | PAGE_NOCACHE | PAGE_WRITECOMBINE};
#define PROT_VALUES (256 * (sizeof prot_modifiers / sizeof prot_modifiers[0]))
#define PROT_REPORTED 4 /* mismatches named in the verdict; the rest are counted */

typedef enum { PROT_RESERVE, PROT_COMMIT_AT_NULL, PROT_COMMIT_IN_PLACE, PROT_VIRTUALPROTECT } prot_op;

typedef struct prot_table {
    hm_rule_ctx *c;
    const char *what;
    DWORD start;       /* the protection the page had (and its allocation was made with) before each value */
    bool name_start;   /* the table runs from several starting protections: name the one of each mismatch */
    char text[420];
    size_t len, mismatches;
} prot_table;

static void prot_mismatch(prot_table *t, DWORD value, bool accept, DWORD want_protect, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void prot_mismatch(prot_table *t, DWORD value, bool accept, DWORD want_protect, const char *fmt, ...)
{
    if (t->mismatches++ >= PROT_REPORTED || t->len >= sizeof t->text)
        return;
    int n = t->name_start ? snprintf(t->text + t->len, sizeof t->text - t->len, "%svalue %#x on a %#x page: expected ",
                                     t->len ? "; " : "", value, t->start)
                          : snprintf(t->text + t->len, sizeof t->text - t->len, "%svalue %#x: expected ",
                                     t->len ? "; " : "", value);
    if (n > 0 && (t->len += (size_t)n) < sizeof t->text)
        n = accept ? snprintf(t->text + t->len, sizeof t->text - t->len, "accepted with Protect %#x", want_protect)
                   : snprintf(t->text + t->len, sizeof t->text - t->len, "E_INVALIDARG");
    if (n > 0 && (t->len += (size_t)n) < sizeof t->text) {
        snprintf(t->text + t->len, sizeof t->text - t->len, ", got ");
        t->len = strlen(t->text);
    }
    va_list ap;
    va_start(ap, fmt);
    if (t->len < sizeof t->text)
        vsnprintf(t->text + t->len, sizeof t->text - t->len, fmt, ap);
    va_end(ap);
    t->len = strlen(t->text);
}

/* A refused value changed the page: named in the verdict like a mismatch. */
static void prot_changed(prot_table *t, DWORD protect)
{
    if (t->mismatches++ < PROT_REPORTED && t->len < sizeof t->text) {
        snprintf(t->text + t->len, sizeof t->text - t->len, "%sthe refused values left a %#x page at Protect %#x",
                 t->len ? "; " : "", t->start, protect);
        t->len = strlen(t->text);
    }
}

/* One value through one operation. The page the operation works on is set up by the caller (`page`). */
static void prot_one(prot_table *t, prot_op op, DWORD value, char *page)
{
    hm_rule_ctx *c = t->c;
    bool accept = prot_windows_accepts(value);
    /* Cache modifiers belong to the allocation: a commit in place or a VirtualProtect on a plain allocation
     * ignores them; an allocation made with one reports it. */
    const DWORD cache = PAGE_NOCACHE | PAGE_WRITECOMBINE;
    DWORD want = op == PROT_RESERVE ? 0 : op == PROT_COMMIT_AT_NULL ? value : (value & ~cache) | (t->start & cache);
    DWORD want_alloc = op <= PROT_COMMIT_AT_NULL ? value : t->start;
    void *p = NULL;
    DWORD old = 0;
    HRESULT hr;
    switch (op) {
    case PROT_RESERVE:
    case PROT_COMMIT_AT_NULL:
        hr = IHostMemoryManager_VirtualAlloc(c->m, NULL, KB(4), op == PROT_RESERVE ? MEM_RESERVE : MEM_COMMIT, value,
                                             eTaskCritical, &p);
        break;
    case PROT_COMMIT_IN_PLACE:
        hr = IHostMemoryManager_VirtualAlloc(c->m, page, KB(4), MEM_COMMIT, value, eTaskCritical, &p);
        break;
    default:
        hr = IHostMemoryManager_VirtualProtect(c->m, page, KB(4), value, &old);
        p = page;
        break;
    }
    if (!accept) {
        if (hr != INVALID_PARAMETER)
            prot_mismatch(t, value, false, 0, "%s", hm_hr_name(hr));
        if (SUCCEEDED(hr) && op <= PROT_COMMIT_AT_NULL && p)
            release(c, p);
        if (SUCCEEDED(hr) && op == PROT_COMMIT_IN_PLACE)
            IHostMemoryManager_VirtualFree(c->m, page, KB(4), MEM_DECOMMIT);
        /* A refused VirtualProtect must change nothing: the next accepted value's old protection shows it. */
        if (SUCCEEDED(hr) && op == PROT_VIRTUALPROTECT)
            IHostMemoryManager_VirtualProtect(c->m, page, KB(4), t->start, &old);
        return;
    }
    if (hr != S_OK || !p) {
        prot_mismatch(t, value, true, want, "%s", hm_hr_name(hr));
        return;
    }
    MEMORY_BASIC_INFORMATION mbi;
    SIZE_T n = 0;
    size_t before = t->mismatches; /* one mismatch per value */
    memset(&mbi, 0, sizeof mbi);
    HRESULT q = IHostMemoryManager_VirtualQuery(c->m, p, &mbi, sizeof mbi, &n);
    if (q != S_OK)
        prot_mismatch(t, value, true, want, "VirtualQuery %s", hm_hr_name(q));
    else if (mbi.Protect != want || mbi.AllocationProtect != want_alloc)
        prot_mismatch(t, value, true, want, "Protect %#x AllocationProtect %#x (expected AllocationProtect %#x)",
                      mbi.Protect, mbi.AllocationProtect, want_alloc);
    else if (op == PROT_VIRTUALPROTECT && old != t->start)
        prot_mismatch(t, value, true, want, "old protection %#x instead of %#x", old, t->start);
    switch (op) {
    case PROT_RESERVE:
    case PROT_COMMIT_AT_NULL:
        release(c, p);
        break;
    case PROT_COMMIT_IN_PLACE:
        IHostMemoryManager_VirtualFree(c->m, page, KB(4), MEM_DECOMMIT);
        break;
    default:
        /* Back to the start: the old protection is the one the value set (GUARD and the allocation's cache
         * modifier included). */
        if (IHostMemoryManager_VirtualProtect(c->m, page, KB(4), t->start, &old) != S_OK)
            prot_mismatch(t, value, true, want, "VirtualProtect back to %#x refused", t->start);
        else if (t->name_start && old != want && t->mismatches == before)
            prot_mismatch(t, value, true, want, "going back to %#x, old protection %#x instead of %#x", t->start, old,
                          want);
        break;
    }
}

/* Every value through one operation, on a page whose allocation (and, for VirtualProtect, the page itself) has the
 * protection `start`. */
static void prot_table_from(prot_table *t, prot_op op, DWORD start)
{
    char *page = NULL;
    t->start = start;
    if (op == PROT_COMMIT_IN_PLACE && !(page = reserve(t->c, KB(64), MEM_RESERVE, start)))
        return;
    if (op == PROT_VIRTUALPROTECT && !(page = reserve(t->c, KB(4), MEM_RESERVE | MEM_COMMIT, start)))
        return;
    for (size_t m = 0; m < sizeof prot_modifiers / sizeof prot_modifiers[0]; m++)
        for (DWORD base = 0; base < 256; base++)
            prot_one(t, op, base | prot_modifiers[m], page);
    MEMORY_BASIC_INFORMATION mbi;
    SIZE_T n = 0;
    /* The last values are refused ones: no later old protection shows whether they changed the page. */
    if (op == PROT_VIRTUALPROTECT && IHostMemoryManager_VirtualQuery(t->c->m, page, &mbi, sizeof mbi, &n) == S_OK &&
        mbi.Protect != start)
        prot_changed(t, mbi.Protect);
    if (page)
        release(t->c, page);
}

static void prot_table_verdict(prot_table *t, size_t starts)
{
    if (!t->mismatches)
        return;
    char exp[200];
    snprintf(exp, sizeof exp, "%s: each of the %zu protection values%s answered as Windows does", t->what,
             (size_t)PROT_VALUES, starts > 1 ? ", from each starting protection," : "");
    verdict(t->c, HM_RULE_FAIL, exp, "%zu differ: %s%s", t->mismatches, t->text,
            t->mismatches > PROT_REPORTED ? "; ..." : "");
}

static void prot_table_run(hm_rule_ctx *c, prot_op op, const char *what)
{
    prot_table t = {.c = c, .what = what};
    prot_table_from(&t, op, PAGE_READWRITE);
    prot_table_verdict(&t, 1);
}

static void rule_prot_table_reserve(hm_rule_ctx *c) { prot_table_run(c, PROT_RESERVE, "VirtualAlloc(NULL, 4K, MEM_RESERVE, value)"); }
static void rule_prot_table_commit_null(hm_rule_ctx *c) { prot_table_run(c, PROT_COMMIT_AT_NULL, "VirtualAlloc(NULL, 4K, MEM_COMMIT, value)"); }
static void rule_prot_table_commit_in_place(hm_rule_ctx *c) { prot_table_run(c, PROT_COMMIT_IN_PLACE, "VirtualAlloc(reserved page, 4K, MEM_COMMIT, value)"); }
static void rule_prot_table_protect(hm_rule_ctx *c) { prot_table_run(c, PROT_VIRTUALPROTECT, "VirtualProtect(PAGE_READWRITE page, 4K, value)"); }

static const DWORD prot_bases[] = {PAGE_NOACCESS, PAGE_READONLY, PAGE_READWRITE, PAGE_EXECUTE, PAGE_EXECUTE_READ,
                                   PAGE_EXECUTE_READWRITE};

/* Commit in place in reservations made with each base protection (PAGE_WRITECOPY is refused at reserve time): the
 * commit decides the pages' protection, the reservation keeps its AllocationProtect. */
static void rule_prot_table_commit_in_place_from(hm_rule_ctx *c)
{
    prot_table t = {.c = c, .what = "VirtualAlloc(page reserved with each base protection, 4K, MEM_COMMIT, value)",
                    .name_start = true};
    for (size_t i = 0; i < sizeof prot_bases / sizeof prot_bases[0]; i++)
        prot_table_from(&t, PROT_COMMIT_IN_PLACE, prot_bases[i]);
    prot_table_verdict(&t, sizeof prot_bases / sizeof prot_bases[0]);
}

/* VirtualProtect from each starting protection a page can have: each base, each base but PAGE_NOACCESS with
 * PAGE_GUARD, and allocations made with PAGE_NOCACHE or PAGE_WRITECOMBINE. The old protection returned is always
 * the starting one, modifiers included, and going back returns what the value set. */
static void rule_prot_table_protect_from(hm_rule_ctx *c)
{
    static const DWORD mods[] = {0, PAGE_GUARD, PAGE_NOCACHE, PAGE_WRITECOMBINE};
    prot_table t = {.c = c, .what = "VirtualProtect(page of each starting protection, 4K, value)", .name_start = true};
    size_t starts = 0;
    for (size_t m = 0; m < sizeof mods / sizeof mods[0]; m++)
        for (size_t i = 0; i < sizeof prot_bases / sizeof prot_bases[0]; i++)
            if (prot_windows_accepts(prot_bases[i] | mods[m])) {
                prot_table_from(&t, PROT_VIRTUALPROTECT, prot_bases[i] | mods[m]);
                starts++;
            }
    prot_table_verdict(&t, starts);
}

static void rule_commit_top_down_at_null(hm_rule_ctx *c)
{
    void *low = reserve(c, KB(64), MEM_RESERVE, PAGE_READWRITE);
    void *p = low ? reserve(c, KB(4), MEM_COMMIT | MEM_TOP_DOWN, PAGE_READWRITE) : NULL;
    if (p && expect_region(c, "VirtualAlloc(NULL, 4K, MEM_COMMIT|MEM_TOP_DOWN) reserves and commits", p, MEM_COMMIT,
                           PAGE_READWRITE, KB(4), p, PAGE_READWRITE))
        EXPECT(c, (uintptr_t)p > (uintptr_t)low, "a MEM_COMMIT|MEM_TOP_DOWN allocation lies above one made before it",
               "%p below %p", p, low);
}

/* Sizes under a page cover the page they touch, in commit, protect and decommit alike. */
static void rule_sub_page_chain(hm_rule_ctx *c)
{
    char *p = reserve(c, KB(64), MEM_RESERVE, PAGE_READWRITE);
    void *q = NULL;
    DWORD old = 0;
    if (!p)
        return;
    EXPECT_HR(c, "VirtualAlloc(base + 0x1000, 1024, MEM_COMMIT, PAGE_READWRITE)",
              IHostMemoryManager_VirtualAlloc(c->m, p + 0x1000, 1024, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &q), S_OK);
    EXPECT(c, q == p + 0x1000, "the page is returned", "%p", q);
    if (!expect_region(c, "a 1024-byte commit commits its whole page", p + 0x1000, MEM_COMMIT, PAGE_READWRITE, KB(4), p,
                       PAGE_READWRITE))
        return;
    EXPECT_HR(c, "VirtualProtect(base + 0x1000, 1024, PAGE_READONLY)",
              IHostMemoryManager_VirtualProtect(c->m, p + 0x1000, 1024, PAGE_READONLY, &old), S_OK);
    EXPECT(c, old == PAGE_READWRITE, "the old protection is PAGE_READWRITE", "%#x", old);
    if (!expect_region(c, "a 1024-byte VirtualProtect changes the whole page", p + 0x1000, MEM_COMMIT, PAGE_READONLY,
                       KB(4), p, PAGE_READWRITE))
        return;
    EXPECT_HR(c, "VirtualFree(base + 0x1000, 1024, MEM_DECOMMIT)",
              IHostMemoryManager_VirtualFree(c->m, p + 0x1000, 1024, MEM_DECOMMIT), S_OK);
    if (!expect_region(c, "a 1024-byte decommit decommits the whole page", p, MEM_RESERVE, 0, KB(64), p, PAGE_READWRITE))
        return;
    EXPECT_HR(c, "VirtualProtect(decommitted page, 1024, PAGE_READONLY)",
              IHostMemoryManager_VirtualProtect(c->m, p + 0x1000, 1024, PAGE_READONLY, &old), INVALID_ADDRESS);
}

/* The old protection of a GUARD or NOCACHE page comes back with its modifier. */
static void rule_protect_old_modifiers(hm_rule_ctx *c)
{
    static const DWORD given[] = {PAGE_READWRITE | PAGE_GUARD, PAGE_READWRITE | PAGE_NOCACHE};
    for (size_t i = 0; i < 2; i++) {
        char *p = reserve(c, KB(4), MEM_RESERVE | MEM_COMMIT, given[i]);
        DWORD old = 0;
        if (!p)
            return;
        EXPECT_HR(c, "VirtualProtect(..., PAGE_READONLY)", IHostMemoryManager_VirtualProtect(c->m, p, KB(4), PAGE_READONLY, &old), S_OK);
        char exp[120];
        snprintf(exp, sizeof exp, "the old protection of a page allocated %#x is %#x", given[i], given[i]);
        EXPECT(c, old == given[i], exp, "%#x", old);
        release(c, p);
    }
}

static void rule_protect_nocache_on_plain(hm_rule_ctx *c)
{
    char *p = reserve(c, KB(4), MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    DWORD old = 0;
    if (!p)
        return;
    EXPECT_HR(c, "VirtualProtect(plain page, PAGE_READWRITE|PAGE_NOCACHE)",
              IHostMemoryManager_VirtualProtect(c->m, p, KB(4), PAGE_READWRITE | PAGE_NOCACHE, &old), S_OK);
    expect_region(c, "PAGE_NOCACHE asked of a plain allocation is ignored", p, MEM_COMMIT, PAGE_READWRITE, KB(4), p,
                  PAGE_READWRITE);
}

static void rule_alloc_write_watch(hm_rule_ctx *c)
{
    void *p = NULL;
    EXPECT_HR(c, "VirtualAlloc(NULL, 64K, MEM_RESERVE|MEM_COMMIT|MEM_WRITE_WATCH, PAGE_READWRITE)",
              IHostMemoryManager_VirtualAlloc(c->m, NULL, KB(64), MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH,
                                              PAGE_READWRITE, eTaskCritical, &p),
              S_OK);
    expect_region(c, "a write-watched allocation is committed", p, MEM_COMMIT, PAGE_READWRITE, KB(64), p, PAGE_READWRITE);
}

#define R(id, statement, ref, fn) {id, statement, ref, fn, false}
#define POLICY(id, statement, ref, fn) {id, statement, ref, fn, true}
static const hm_rule rules[] = {
    R("vm.alloc.size-zero", "VirtualAlloc of size 0 fails with ERROR_INVALID_PARAMETER", "docs/semantics.md: VirtualAlloc", rule_size_zero),
    R("vm.alloc.type-zero", "allocation type 0 fails with ERROR_INVALID_PARAMETER", "docs/semantics.md: VirtualAlloc", rule_type_zero),
    R("vm.alloc.type-unknown", "unknown allocation type bits fail with ERROR_INVALID_PARAMETER", "docs/semantics.md: VirtualAlloc", rule_type_unknown),
    R("vm.alloc.type-decommit", "MEM_DECOMMIT is not an allocation type", "docs/semantics.md: VirtualAlloc", rule_type_decommit),
    R("vm.alloc.top-down-alone", "MEM_TOP_DOWN without MEM_RESERVE/MEM_COMMIT fails", "docs/semantics.md: VirtualAlloc", rule_top_down_alone),
    R("vm.alloc.protect-zero-reserve", "protection 0 fails even for a reserve", "docs/semantics.md: VirtualAlloc", rule_protect_zero_reserve),
    R("vm.alloc.protect-zero-commit", "protection 0 fails for a commit", "docs/semantics.md: VirtualAlloc", rule_protect_zero_commit),
    R("vm.alloc.protect-two-base", "two base protections fail", "docs/semantics.md: VirtualAlloc", rule_protect_two_base),
    R("vm.alloc.protect-writecopy", "PAGE_WRITECOPY fails for private memory", "docs/semantics.md: VirtualAlloc", rule_protect_writecopy),
    R("vm.alloc.reset-combined", "MEM_RESET combined with another type fails", "docs/semantics.md: VirtualAlloc", rule_reset_combined),
    R("vm.alloc.low-address", "an address in the first 64 KiB fails with ERROR_INVALID_PARAMETER", "docs/semantics.md: VirtualAlloc", rule_low_address),
    R("vm.alloc.size-beyond-address-space", "a size beyond the address space fails", "docs/semantics.md: VirtualAlloc", rule_huge_size),
    R("vm.alloc.commit-unreserved", "MEM_COMMIT where nothing is reserved fails with ERROR_INVALID_ADDRESS", "docs/semantics.md: VirtualAlloc", rule_commit_unreserved),
    R("errors.null-out-pointer", "a NULL out-pointer is E_POINTER, never a crash", "hosting contract (docs/semantics.md)", rule_alloc_null_out),
    R("vm.reserve.granularity", "reservations at NULL are 64 KiB aligned", "docs/semantics.md: VirtualAlloc", rule_reserve_granularity),
    R("vm.reserve.fresh-query", "a fresh reservation queries as MEM_RESERVE, Protect 0, its AllocationProtect, MEM_PRIVATE, size rounded to pages", "docs/semantics.md: VirtualAlloc", rule_reserve_fresh_query),
    R("vm.reserve.one-page-granule", "a one-page reservation still takes its whole 64 KiB granule", "docs/semantics.md: VirtualAlloc", rule_reserve_one_page),
    R("vm.reserve.conflict", "reserving over an existing reservation fails with ERROR_INVALID_ADDRESS", "docs/semantics.md: VirtualAlloc", rule_reserve_conflict),
    R("vm.reserve.reuse-released", "a released base can be reserved again at once", "docs/semantics.md: VirtualAlloc", rule_reserve_reuse),
    R("vm.reserve.rounds-down", "an explicit address is rounded down to 64 KiB", "docs/semantics.md: VirtualAlloc", rule_reserve_rounds_down),
    R("vm.reserve.top-down", "MEM_TOP_DOWN places a reservation above an earlier one", "docs/semantics.md: VirtualAlloc", rule_reserve_top_down),
    R("vm.commit.at-null", "MEM_COMMIT at NULL reserves and commits", "docs/semantics.md: VirtualAlloc", rule_commit_at_null),
    R("vm.commit.zeroed", "committed pages read as zero, also after decommit and recommit", "docs/semantics.md: VirtualAlloc", rule_commit_zeroed),
    R("vm.alloc.reserve-commit-zeroed", "a reservation committed in the same call reads as zero, every byte", "docs/semantics.md: VirtualAlloc", rule_reserve_commit_zeroed),
    R("vm.commit.keeps-contents", "recommitting committed pages keeps their contents", "docs/semantics.md: VirtualAlloc", rule_commit_keeps_contents),
    R("vm.commit.sets-protection", "recommitting sets the new protection", "docs/semantics.md: VirtualAlloc", rule_commit_sets_protection),
    R("vm.commit.rounds-to-pages", "a commit covers every page its range touches and returns the page-rounded address", "docs/semantics.md: VirtualAlloc", rule_commit_rounds),
    R("vm.commit.past-end", "a commit running past its reservation fails and commits nothing", "docs/semantics.md: VirtualAlloc", rule_commit_past_end),
    R("vm.commit.noaccess-reported", "a committed PAGE_NOACCESS page reports PAGE_NOACCESS, not 0", "docs/semantics.md: VirtualAlloc", rule_commit_noaccess_reported),
    R("vm.decommit.rounds", "a decommit covers every page its range touches", "docs/semantics.md: VirtualFree", rule_decommit_rounds),
    R("vm.decommit.size0", "size 0 decommits the whole reservation at its base, and fails elsewhere", "docs/semantics.md: VirtualFree", rule_decommit_size0),
    R("vm.decommit.past-end", "a decommit running past its reservation fails with ERROR_INVALID_PARAMETER", "docs/semantics.md: VirtualFree", rule_decommit_past_end),
    R("vm.decommit.reserved", "decommitting reserved pages succeeds", "docs/semantics.md: VirtualFree", rule_decommit_reserved),
    R("vm.release.size-nonzero", "MEM_RELEASE with a size fails with ERROR_INVALID_PARAMETER", "docs/semantics.md: VirtualFree", rule_release_size_nonzero),
    R("vm.release.not-at-base", "MEM_RELEASE away from the base fails; inside the first page it works", "docs/semantics.md: VirtualFree", rule_release_not_base),
    R("vm.release.twice", "releasing twice fails with ERROR_INVALID_ADDRESS; released memory is MEM_FREE", "docs/semantics.md: VirtualFree", rule_release_twice),
    R("vm.free.type", "free type 0, MEM_FREE and MEM_DECOMMIT|MEM_RELEASE fail", "docs/semantics.md: VirtualFree", rule_free_type),
    R("vm.protect.old-is-first-page", "VirtualProtect returns the first page's old protection", "docs/semantics.md: VirtualProtect", rule_protect_old_first_page),
    R("vm.protect.splits-regions", "protecting part of a run splits it", "docs/semantics.md: VirtualProtect", rule_protect_splits),
    R("vm.protect.uncommitted", "any uncommitted page fails the whole VirtualProtect with ERROR_INVALID_ADDRESS", "docs/semantics.md: VirtualProtect", rule_protect_uncommitted),
    R("vm.protect.free", "VirtualProtect of free memory fails with ERROR_INVALID_ADDRESS", "docs/semantics.md: VirtualProtect", rule_protect_free),
    R("vm.protect.invalid", "an invalid protection fails with ERROR_INVALID_PARAMETER and changes nothing", "docs/semantics.md: VirtualProtect", rule_protect_invalid),
    R("vm.protect.null-old", "a NULL pflOldProtect is E_POINTER", "docs/semantics.md: VirtualProtect", rule_protect_null_old),
    R("vm.protect.round-trip", "each base protection is reported back verbatim", "docs/semantics.md: VirtualProtect", rule_protect_round_trip),
    R("vm.query.base-rounded", "BaseAddress is the queried address rounded down to a page", "docs/semantics.md: VirtualQuery", rule_query_base_rounded),
    R("vm.query.not-merged", "regions never run across allocations, even alike adjacent ones", "docs/semantics.md: VirtualQuery", rule_query_not_merged),
    R("vm.query.free-region-size", "a free region runs up to the next allocation", "docs/semantics.md: VirtualQuery", rule_query_free_region),
    R("vm.query.short-buffer", "a buffer under 48 bytes fails with ERROR_BAD_LENGTH and *pResult 0", "docs/semantics.md: VirtualQuery", rule_query_short_buffer),
    R("vm.query.beyond-user-space", "an address beyond user space fails with ERROR_INVALID_PARAMETER", "docs/semantics.md: VirtualQuery", rule_query_beyond_user_space),
    R("vm.query.null-pointers", "NULL lpBuffer or pResult is E_POINTER", "hosting contract (docs/semantics.md)", rule_query_null_pointers),
    R("vm.query.own-stack", "memory the host does not own (the caller's stack) is answered from the process map", "docs/semantics.md: VirtualQuery", rule_query_own_stack),
    R("vm.reset.stays-committed", "MEM_RESET leaves pages committed with their protection", "docs/semantics.md: VirtualAlloc", rule_reset_stays_committed),
    R("vm.guard.reported", "PAGE_GUARD is reported in Protect and AllocationProtect", "docs/semantics.md: PAGE_GUARD", rule_guard_reported),
    R("atomicity.failed-calls-change-nothing", "failing commits, protects and decommits change no page", "docs/semantics.md: Concurrency and failures", rule_failed_call_changes_nothing),
    R("com.queryinterface", "QueryInterface gives IHostMemoryManager and IUnknown, E_NOINTERFACE and NULL otherwise", "COM: IUnknown rules", rule_com_queryinterface),
    R("com.refcount", "AddRef and Release return the new count", "COM: IUnknown rules", rule_com_refcount),
    R("heap.blocks-distinct", "heap blocks never overlap and keep their contents", "hosting contract (docs/semantics.md)", rule_heap_blocks),
    R("heap.free-null", "Free(NULL) succeeds", "hosting contract: the CLR frees NULL (docs/semantics.md: Heaps)", rule_heap_free_null),
    R("heap.free-foreign-pointer", "Free of a pointer the heap does not own is HOST_E_INVALIDOPERATION", "hosting contract (docs/semantics.md)", rule_heap_free_foreign),
    R("heap.double-free", "a double free is HOST_E_INVALIDOPERATION", "hosting contract (docs/semantics.md)", rule_heap_double_free),
    R("heap.null-out-pointer", "Alloc with a NULL ppMem is E_POINTER", "hosting contract (docs/semantics.md)", rule_heap_null_out),
    R("heap.alignment", "every block from Alloc and DebugAlloc is 16-byte aligned (MEMORY_ALLOCATION_ALIGNMENT)", "hosting contract (docs/semantics.md)", rule_heap_alignment),
    R("heap.size-classes", "blocks of every size from 1 byte to 4 MiB hold all their bytes and never overlap", "hosting contract (docs/semantics.md)", rule_heap_size_classes),
    R("heap.size-near-max", "sizes near SIZE_MAX fail with E_OUTOFMEMORY, never wrap to a small block", "hosting contract (docs/semantics.md)", rule_heap_size_near_max),
    R("load.reported", "GetMemoryLoad gives a percentage and available bytes; NULL pointers are E_POINTER", "hosting contract (docs/semantics.md)", rule_load_reported),
    R("callback.registered-addref", "a registered callback is kept with a reference", "hosting contract (docs/semantics.md)", rule_callback_reference),
    R("ledger.round-trip", "an acquired range can be released", "hosting contract (docs/semantics.md)", rule_ledger_round_trip),
    POLICY("ledger.release-unknown", "releasing a range never acquired is refused", "hostmem policy (docs/semantics.md: ledger)", rule_ledger_release_unknown),
    R("threads.concurrent-reserve-release", "concurrent reserve/query/release from 4 threads stay consistent", "docs/semantics.md: Concurrency and failures", rule_threads),
    POLICY("policy.commit-budget", "an impossible commit fails with E_OUTOFMEMORY", "hosting contract (docs/semantics.md)", rule_policy_levels),
    R("vm.prot-table.reserve", "every protection value (0x00-0xff with GUARD/NOCACHE/WRITECOMBINE) in MEM_RESERVE is refused or kept as Windows does", "docs/semantics.md", rule_prot_table_reserve),
    R("vm.prot-table.commit-at-null", "every protection value in MEM_COMMIT at NULL is refused or read back as Windows does", "docs/semantics.md", rule_prot_table_commit_null),
    R("vm.prot-table.commit-in-place", "every protection value in MEM_COMMIT of a reserved page is refused or read back as Windows does", "docs/semantics.md", rule_prot_table_commit_in_place),
    R("vm.prot-table.protect", "every protection value in VirtualProtect is refused or read back as Windows does", "docs/semantics.md", rule_prot_table_protect),
    R("vm.prot-table.commit-in-place-from", "every protection value in MEM_COMMIT of a page reserved with each base protection is refused or read back as Windows does, AllocationProtect kept", "docs/semantics.md: VirtualAlloc", rule_prot_table_commit_in_place_from),
    R("vm.prot-table.protect-from", "every protection value in VirtualProtect of a page of each starting protection (bases, GUARD, NOCACHE, WRITECOMBINE) returns that protection as the old one", "docs/semantics.md: VirtualProtect", rule_prot_table_protect_from),
    R("vm.alloc.commit-top-down", "MEM_COMMIT|MEM_TOP_DOWN at NULL reserves and commits, high up", "docs/semantics.md", rule_commit_top_down_at_null),
    R("vm.sub-page.chain", "1024-byte commit, protect and decommit each cover their whole page", "docs/semantics.md", rule_sub_page_chain),
    R("vm.protect.old-keeps-modifiers", "the old protection of a GUARD or NOCACHE page keeps its modifier", "docs/semantics.md", rule_protect_old_modifiers),
    R("vm.protect.nocache-on-plain", "PAGE_NOCACHE asked of a plain allocation is accepted and ignored", "docs/semantics.md", rule_protect_nocache_on_plain),
    R("vm.alloc.write-watch", "MEM_RESERVE|MEM_COMMIT|MEM_WRITE_WATCH is accepted", "docs/semantics.md", rule_alloc_write_watch),
    R("callback.reentry", "a callback may call the host (GetMemoryLoad, VirtualQuery, VirtualAlloc/VirtualFree) from inside OnMemoryNotification", "hosting contract (docs/semantics.md)", rule_callback_reentry),
    R("pressure.cycles-keep-succeeding", "thousands of reserve/commit/decommit/release and heap create/alloc/free/release cycles keep succeeding", "hosting contract (docs/semantics.md)", rule_cycles_keep_succeeding),
};

const hm_rule *hm__conform_rules(size_t *count)
{
    *count = sizeof rules / sizeof rules[0];
    return rules;
}

/* ---- Running a rule, isolated -------------------------------------------------------------------------------------- */

static void run_in_process(const hm_rule *rule, const hm_conform_options *o, hm_rule_result *out)
{
    hm_rule_ctx c = {NULL, out};
    char err[1024];
    if (FAILED(hm__host_open(o->library, o->host_options, &c.m, err, sizeof err))) {
        out->status = HM_RULE_FAIL;
        snprintf(out->expected, sizeof out->expected, "HostMemCreateManager gives a manager");
        snprintf(out->actual, sizeof out->actual, "%.399s", err);
        return;
    }
    /* A plugin comes guarded; the built-in host goes behind the same layer, so its calls are named and timed one
     * by one too (a hang is a call that does not return, never a rule that is merely slow). */
    if (!o->library && FAILED(hm__guard_wrap(c.m, &c.m))) {
        out->status = HM_RULE_FAIL;
        snprintf(out->expected, sizeof out->expected, "the rule can be set up");
        snprintf(out->actual, sizeof out->actual, "out of memory for the guard layer");
        return;
    }
    rule->check(&c);
    IHostMemoryManager_Release(c.m);
    if (rule->policy && out->status == HM_RULE_FAIL)
        out->status = HM_RULE_INFO;
}

typedef struct rule_run {
    const hm_rule *rule;
    const hm_conform_options *o;
    hm_rule_result *shared;
} rule_run;

static void run_rule_child(void *ctx)
{
    rule_run *run = ctx;
    run_in_process(run->rule, run->o, run->shared);
}

void hm__conform_run_rule(const hm_rule *rule, const hm_conform_options *o, hm_rule_result *out)
{
    memset(out, 0, sizeof *out);
    double t0 = (double)hm_now_ns() / 1e6;
    if (o->no_fork) {
        run_in_process(rule, o, out);
        out->ms = (double)hm_now_ns() / 1e6 - t0;
        return;
    }
    /* Everything that touches the host (loading it included) happens in the child: whatever the host does ends
     * as this rule's verdict, and a child that ends without its verdict is a failure, never a pass. */
    rule_run run = {rule, o, hm__shared_alloc(sizeof *out)};
    hm_isolate_options io = {.timeout_seconds = o->rule_timeout_seconds ? o->rule_timeout_seconds : 300,
                             .call_timeout_seconds = o->timeout_seconds ? o->timeout_seconds : 10};
    hm_isolated how;
    if (!run.shared) {
        how.end = HM_ISOLATED_NO_CHILD;
        snprintf(how.message, sizeof how.message, "cannot map memory to share with the child");
    } else {
        hm__isolate(run_rule_child, &run, &io, &how);
    }
    if (how.end == HM_ISOLATED_REPORTED) {
        *out = *run.shared;
    } else if (how.end == HM_ISOLATED_TOO_SLOW) {
        out->status = HM_RULE_TIMEOUT;
        snprintf(out->expected, sizeof out->expected, "the check ends within the rule's time limit (--rule-timeout)");
        snprintf(out->actual, sizeof out->actual,
                 "the rule did not end in %g s, though the host kept returning (no call took %g s): not checked, not "
                 "a finding (a loaded machine or a slow host; --rule-timeout gives it longer)",
                 io.timeout_seconds, io.call_timeout_seconds);
    } else {
        out->status = HM_RULE_FAIL;
        snprintf(out->expected, sizeof out->expected, "%s",
                 how.end == HM_ISOLATED_FINDING ? "the host writes only inside the buffers it is given"
                                                : "the check runs to its end");
        snprintf(out->actual, sizeof out->actual, "%.399s", how.message);
        reentry_hang_message(&how, run.shared ? run.shared->in_callback : NULL, io.call_timeout_seconds, out->actual,
                             sizeof out->actual);
    }
    out->host_stdout_bytes = how.stdout_bytes;
    hm__shared_free(run.shared, sizeof *out);
    out->ms = (double)hm_now_ns() / 1e6 - t0;
}

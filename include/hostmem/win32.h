/* hostmem: the Win32 types, constants and HRESULTs that the CLR hosting memory contract uses.
 *
 * Sizes follow CoreCLR's PAL on LP64 (DWORD, LONG, BOOL and HRESULT are 32-bit; never `long`), so a host
 * built against these headers is ABI-compatible with one built against the PAL's. Values are from
 * Microsoft's headers (see docs/semantics.md for sources). */
#ifndef HOSTMEM_WIN32_H
#define HOSTMEM_WIN32_H

#include "api.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef int32_t HRESULT;
typedef uint32_t DWORD;
typedef uint32_t ULONG;
typedef int32_t LONG;
typedef int32_t BOOL;
typedef uint16_t WORD;
typedef uint8_t BYTE;
typedef size_t SIZE_T;
typedef void *PVOID;
typedef void *LPVOID;

#ifndef TRUE
#define TRUE 1
#endif
#ifndef FALSE
#define FALSE 0
#endif

typedef struct _GUID {
    uint32_t Data1;
    uint16_t Data2;
    uint16_t Data3;
    uint8_t Data4[8];
} GUID, IID;
typedef const IID *REFIID;

static inline int hm_guid_equal(const GUID *a, const GUID *b) { return memcmp(a, b, sizeof(GUID)) == 0; }
#ifndef IsEqualGUID
#define IsEqualGUID(a, b) hm_guid_equal((a), (b))
#define IsEqualIID(a, b) hm_guid_equal((a), (b))
#endif

/* ---- HRESULTs ----------------------------------------------------------------------------------------- */
#define SUCCEEDED(hr) (((HRESULT)(hr)) >= 0)
#define FAILED(hr) (((HRESULT)(hr)) < 0)
#define HRESULT_FROM_WIN32(e) \
    ((HRESULT)((e) == 0 ? 0 : (HRESULT)((((uint32_t)(e)) & 0x0000FFFFu) | 0x80070000u)))

/* Every HRESULT hostmem names: X(name, value, text). hm_hr_name()/hm_hr_text() and the trace parser are
 * generated from it; the name is the spelling used in reports and traces. */
#define HM_HRESULT_MAP(X)                                                                                     \
    X(S_OK, 0x00000000, "success")                                                                          \
    X(S_FALSE, 0x00000001, "success (false)")                                                               \
    X(E_NOTIMPL, 0x80004001, "not implemented")                                                             \
    X(E_NOINTERFACE, 0x80004002, "interface not supported")                                                 \
    X(E_POINTER, 0x80004003, "NULL pointer argument")                                                       \
    X(E_FAIL, 0x80004005, "catastrophic failure")                                                           \
    X(E_UNEXPECTED, 0x8000FFFF, "unexpected failure")                                                       \
    X(E_ACCESSDENIED, 0x80070005, "access denied (ERROR_ACCESS_DENIED)")                                    \
    X(E_OUTOFMEMORY, 0x8007000E, "out of memory")                                                           \
    X(E_INVALIDARG, 0x80070057, "invalid argument (ERROR_INVALID_PARAMETER)")                               \
    X(HRESULT_FROM_WIN32(ERROR_NOT_ENOUGH_MEMORY), 0x80070008, "not enough memory (ERROR_NOT_ENOUGH_MEMORY)")                 \
    X(HRESULT_FROM_WIN32(ERROR_BAD_LENGTH), 0x80070018, "buffer too small (ERROR_BAD_LENGTH)")                                \
    X(HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS), 0x800701E7, "invalid address (ERROR_INVALID_ADDRESS)")                       \
    X(HRESULT_FROM_WIN32(ERROR_NOACCESS), 0x800703E6, "invalid access to memory location (ERROR_NOACCESS)")                   \
    X(HRESULT_FROM_WIN32(ERROR_PRIVILEGE_NOT_HELD), 0x80070522, "privilege not held (ERROR_PRIVILEGE_NOT_HELD)")              \
    X(HRESULT_FROM_WIN32(ERROR_COMMITMENT_LIMIT), 0x800705AF, "commitment limit reached (ERROR_COMMITMENT_LIMIT)")            \
    X(HOST_E_DEADLOCK, 0x80131020, "host detected a deadlock")                                              \
    X(HOST_E_INTERRUPTED, 0x80131021, "host interrupted a wait")                                            \
    X(HOST_E_INVALIDOPERATION, 0x80131022, "invalid operation")                                             \
    X(HOST_E_CLRNOTAVAILABLE, 0x80131023, "CLR not available")                                              \
    X(HOST_E_TIMEOUT, 0x80131024, "timed out")                                                              \
    X(HOST_E_NOT_OWNER, 0x80131025, "caller does not own the lock")                                         \
    X(HOST_E_ABANDONED, 0x80131026, "an event was abandoned")

#ifndef S_OK
#define S_OK ((HRESULT)0x00000000)
#define S_FALSE ((HRESULT)0x00000001)
#define E_NOTIMPL ((HRESULT)0x80004001)
#define E_NOINTERFACE ((HRESULT)0x80004002)
#define E_POINTER ((HRESULT)0x80004003)
#define E_FAIL ((HRESULT)0x80004005)
#define E_UNEXPECTED ((HRESULT)0x8000FFFF)
#define E_ACCESSDENIED ((HRESULT)0x80070005)
#define E_OUTOFMEMORY ((HRESULT)0x8007000E)
#define E_INVALIDARG ((HRESULT)0x80070057)
#endif
#ifndef HOST_E_DEADLOCK
#define HOST_E_DEADLOCK ((HRESULT)0x80131020)
#define HOST_E_INTERRUPTED ((HRESULT)0x80131021)
#define HOST_E_INVALIDOPERATION ((HRESULT)0x80131022)
#define HOST_E_CLRNOTAVAILABLE ((HRESULT)0x80131023)
#define HOST_E_TIMEOUT ((HRESULT)0x80131024)
#define HOST_E_NOT_OWNER ((HRESULT)0x80131025)
#define HOST_E_ABANDONED ((HRESULT)0x80131026)
#endif

/* ---- Win32 error codes the virtual-memory calls set ----------------------------------------------------- */
#define ERROR_ACCESS_DENIED 5
#define ERROR_NOT_ENOUGH_MEMORY 8
#define ERROR_OUTOFMEMORY 14
#define ERROR_BAD_LENGTH 24
#define ERROR_INVALID_PARAMETER 87
#define ERROR_INVALID_ADDRESS 487
#define ERROR_NOACCESS 998
#define ERROR_PRIVILEGE_NOT_HELD 1314
#define ERROR_COMMITMENT_LIMIT 1455

/* Shorthands for the HRESULTs the virtual-memory methods return most. */
#define HM_E_INVALID_ADDRESS HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS)
#define HM_E_INVALID_PARAMETER HRESULT_FROM_WIN32(ERROR_INVALID_PARAMETER)
#define HM_E_BAD_LENGTH HRESULT_FROM_WIN32(ERROR_BAD_LENGTH)
#define HM_E_NOT_ENOUGH_MEMORY HRESULT_FROM_WIN32(ERROR_NOT_ENOUGH_MEMORY)

/* ---- Allocation types, states and types ----------------------------------------------------------------- */
#define MEM_COMMIT 0x00001000u
#define MEM_RESERVE 0x00002000u
#define MEM_DECOMMIT 0x00004000u
#define MEM_RELEASE 0x00008000u
#define MEM_FREE 0x00010000u
#define MEM_PRIVATE 0x00020000u
#define MEM_MAPPED 0x00040000u
#define MEM_RESET 0x00080000u
#define MEM_TOP_DOWN 0x00100000u
#define MEM_WRITE_WATCH 0x00200000u
#define MEM_PHYSICAL 0x00400000u
#define MEM_RESET_UNDO 0x01000000u
#define MEM_IMAGE 0x01000000u /* as a Type; same bits as MEM_RESET_UNDO */
#define MEM_LARGE_PAGES 0x20000000u

/* ---- Page protections ----------------------------------------------------------------------------------- */
#define PAGE_NOACCESS 0x01u
#define PAGE_READONLY 0x02u
#define PAGE_READWRITE 0x04u
#define PAGE_WRITECOPY 0x08u
#define PAGE_EXECUTE 0x10u
#define PAGE_EXECUTE_READ 0x20u
#define PAGE_EXECUTE_READWRITE 0x40u
#define PAGE_EXECUTE_WRITECOPY 0x80u
#define PAGE_GUARD 0x100u
#define PAGE_NOCACHE 0x200u
#define PAGE_WRITECOMBINE 0x400u

/* ---- MEMORY_BASIC_INFORMATION, 64-bit layout (48 bytes) -------------------------------------------------- */
typedef struct _MEMORY_BASIC_INFORMATION {
    PVOID BaseAddress;       /* 0  */
    PVOID AllocationBase;    /* 8  */
    DWORD AllocationProtect; /* 16 */
    WORD PartitionId;        /* 20; always 0 */
    SIZE_T RegionSize;       /* 24 */
    DWORD State;             /* 32 */
    DWORD Protect;           /* 36 */
    DWORD Type;              /* 40 */
} MEMORY_BASIC_INFORMATION, *PMEMORY_BASIC_INFORMATION;

#if defined(__SIZEOF_POINTER__) && __SIZEOF_POINTER__ == 8
_Static_assert(sizeof(MEMORY_BASIC_INFORMATION) == 48, "MEMORY_BASIC_INFORMATION must have the x64 layout");
_Static_assert(offsetof(MEMORY_BASIC_INFORMATION, RegionSize) == 24, "RegionSize at offset 24");
_Static_assert(offsetof(MEMORY_BASIC_INFORMATION, Type) == 40, "Type at offset 40");
#endif

/* ---- Hosting enumerations ------------------------------------------------------------------------------- */
typedef enum EMemoryCriticalLevel {
    eTaskCritical = 0,
    eAppDomainCritical = 1,
    eProcessCritical = 2
} EMemoryCriticalLevel;

typedef enum EMemoryAvailable {
    eMemoryAvailableLow = 1,
    eMemoryAvailableNeutral = 2,
    eMemoryAvailableHigh = 3
} EMemoryAvailable;

typedef enum MALLOC_TYPE {
    MALLOC_THREADSAFE = 0x1,
    MALLOC_EXECUTABLE = 0x2
} MALLOC_TYPE;

#ifdef __cplusplus
}
#endif
#endif /* HOSTMEM_WIN32_H */

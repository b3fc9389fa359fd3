/* hostmem: the Win32 types, constants and HRESULTs of the CLR hosting memory contract (from <hostmem/contract.h>,
 * which a host may include alone), plus the HRESULT table hostmem's own tools are generated from. */
#ifndef HOSTMEM_WIN32_H
#define HOSTMEM_WIN32_H

#include "contract.h"

#include <string.h> /* hostmem's headers have always brought it; its sources rely on that */

#ifdef __cplusplus
extern "C" {
#endif

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

/* Shorthands for the HRESULTs the virtual-memory methods return most. */
#define HM_E_INVALID_ADDRESS HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS)
#define HM_E_INVALID_PARAMETER HRESULT_FROM_WIN32(ERROR_INVALID_PARAMETER)
#define HM_E_BAD_LENGTH HRESULT_FROM_WIN32(ERROR_BAD_LENGTH)
#define HM_E_NOT_ENOUGH_MEMORY HRESULT_FROM_WIN32(ERROR_NOT_ENOUGH_MEMORY)

#ifdef __cplusplus
}
#endif
#endif /* HOSTMEM_WIN32_H */

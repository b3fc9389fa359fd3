/* The guard layer: a decorator around a plugin's manager (and the heaps it makes) that every hostmem tool puts
 * between itself and a third-party host. Every out-parameter the host writes (VirtualQuery's buffer and result,
 * VirtualAlloc's and Alloc's block, VirtualProtect's old protection, GetMemoryLoad's figures, CreateMalloc's heap,
 * QueryInterface's pointer) is a copy with guard bytes before and after it: a host writing outside it is stopped
 * as a finding naming the method and the bytes (hm__isolate_finding). Each call is also named as the call in flight
 * (hm__isolate_enter), so a crash or a hang is reported against it. Results, reference counts and identities pass
 * through unchanged. */
#ifndef HOSTMEM_HARNESS_GUARD_H
#define HOSTMEM_HARNESS_GUARD_H

#include <hostmem/hostmem.h>

/* Takes over the caller's reference to host; *out is the guarded manager. E_OUTOFMEMORY (host released) when the
 * layer cannot be made. */
HRESULT hm__guard_wrap(IHostMemoryManager *host, IHostMemoryManager **out);

#endif

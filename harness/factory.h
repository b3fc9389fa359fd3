/* The composition root: hostmem's factory is the built-in manager (src/) behind the decorators the environment asks
 * for, the fault layer (faults/) and the recorder (harness/). It sits above all three, so none of them reaches up.
 * Internal to hostmem. */
#ifndef HOSTMEM_HARNESS_FACTORY_H
#define HOSTMEM_HARNESS_FACTORY_H

#include <hostmem/hostmem.h>
#include <hostmem/trace.h>

/* HostMemCreateManager with the fault spec given (NULL or "": no fault layer) in place of HOSTMEM_FAULTS; a recorder
 * still when HOSTMEM_TRACE is set. The hostmem command uses it when --faults gives the spec, so there is one fault
 * layer, not two. */
HRESULT hm__create_manager(const char *options, const char *faults, IHostMemoryManager **ppManager);

/* hm__create_manager's last step: wraps `manager` (taking over its reference) in the fault layer when faults is set
 * and in a recorder when HOSTMEM_TRACE is set. */
HRESULT hm__manager_wrap_from_environment(IHostMemoryManager *manager, const char *faults, IHostMemoryManager **out);
/* The same, with the recording's environment for the trace's header (env->faults is replaced by faults). */
HRESULT hm__manager_wrap_with_env(IHostMemoryManager *manager, const char *faults, const hm_trace_env *env,
                                  IHostMemoryManager **out);

#endif

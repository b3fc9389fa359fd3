/* Per-thread error messages behind HostMemLastError(). Internal to hostmem. */
#ifndef HOSTMEM_SRC_ERROR_H
#define HOSTMEM_SRC_ERROR_H

#include <hostmem/hostmem.h>

/* Sets this thread's last error message (printf-style). Returns nothing: callers return their HRESULT. */
void hm__set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Clears it (at the start of an operation that may set it). */
void hm__clear_error(void);

#endif

/* Per-thread error messages behind HostMemLastError(). */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char last_error[1024]; /* room for a fault-spec error quoting the spec */

void hm__set_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
}

void hm__clear_error(void) { last_error[0] = '\0'; }

HM_API const char *HostMemLastError(void) { return last_error; }

/* Reading and writing the bytes a host handed out, from threads that a broken host may have handed the same bytes.
 *
 * That race is the host's bug, and the harness's fills and canaries name it (which threads, which calls). Under
 * ThreadSanitizer these accesses are not instrumented: otherwise TSan reports the harness's own two fills as the race
 * (a report naming the harness, and the run ends as a crash before the canary check gives the verdict), while the
 * host's own racing accesses are still its to report. */
#ifndef HOSTMEM_HOST_BYTES_H
#define HOSTMEM_HOST_BYTES_H

#include <stddef.h>
#include <string.h>

#if defined(__SANITIZE_THREAD__)
#define HM_HOST_BYTES_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define HM_HOST_BYTES_TSAN 1
#endif
#endif

#ifdef HM_HOST_BYTES_TSAN
#define HM_HOST_BYTES_FN __attribute__((no_sanitize("thread"))) static inline
/* volatile: a plain loop would become a call to memset or memcpy, which TSan intercepts */
HM_HOST_BYTES_FN void host_fill(void *p, unsigned char byte, size_t n)
{
    volatile unsigned char *q = p;
    for (size_t i = 0; i < n; i++)
        q[i] = byte;
}
HM_HOST_BYTES_FN void host_copy(void *to, const void *from, size_t n)
{
    volatile unsigned char *t = to;
    const volatile unsigned char *f = from;
    for (size_t i = 0; i < n; i++)
        t[i] = f[i];
}
#else
#define HM_HOST_BYTES_FN static inline
static inline void host_fill(void *p, unsigned char byte, size_t n) { memset(p, byte, n); }
static inline void host_copy(void *to, const void *from, size_t n) { memcpy(to, from, n); }
#endif

HM_HOST_BYTES_FN unsigned char host_byte(const void *p, size_t at) { return ((const volatile unsigned char *)p)[at]; }
HM_HOST_BYTES_FN void host_set_byte(void *p, size_t at, unsigned char byte) { ((volatile unsigned char *)p)[at] = byte; }

#endif

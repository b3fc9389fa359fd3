/* Telling ASan and Valgrind about heap blocks (model: mimalloc's track.h), so a use-after-free in a heap's user
 * is reported. Everything here compiles to nothing when neither tool is present. Internal to hostmem. */
#ifndef HOSTMEM_SRC_TRACK_H
#define HOSTMEM_SRC_TRACK_H

#include <stddef.h>

#if defined(__SANITIZE_ADDRESS__)
#define HM_TRACK_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HM_TRACK_ASAN 1
#endif
#endif

#if defined(HM_TRACK_ASAN)
#include <sanitizer/asan_interface.h>
#define hm_track_poison(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define hm_track_unpoison(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define hm_track_poison(p, n) ((void)(p), (void)(n))
#define hm_track_unpoison(p, n) ((void)(p), (void)(n))
#endif

#if defined(__has_include)
#if __has_include(<valgrind/memcheck.h>) && !defined(HM_TRACK_ASAN)
#include <valgrind/memcheck.h>
#define HM_TRACK_VALGRIND 1
#endif
#endif

#if defined(HM_TRACK_VALGRIND)
#include <stdbool.h>
/* RUNNING_ON_VALGRIND, read once by hm_track_init: natively a client request costs a few ns, and its argument block
 * gives every caller a stack frame, too much for a heap's fast path; a predictable branch on this flag costs
 * nothing. The requests themselves are out of line. */
extern bool hm__track_valgrind;
#define HM_TRACK_COLD static void __attribute__((noinline, cold, unused))
HM_TRACK_COLD hm_track_vg_malloc(void *p, size_t n) { VALGRIND_MALLOCLIKE_BLOCK(p, n, 0, 0); }
HM_TRACK_COLD hm_track_vg_free(void *p) { VALGRIND_FREELIKE_BLOCK(p, 0); }
HM_TRACK_COLD hm_track_vg_noaccess(void *p, size_t n) { (void)VALGRIND_MAKE_MEM_NOACCESS(p, n); }
HM_TRACK_COLD hm_track_vg_defined(void *p, size_t n) { (void)VALGRIND_MAKE_MEM_DEFINED(p, n); }
#define hm_track_init() ((void)(hm__track_valgrind = RUNNING_ON_VALGRIND != 0))
#define HM_TRACK_VG(call) do { if (__builtin_expect(hm__track_valgrind, 0)) call; } while (0)
#define hm_track_malloc(p, n) HM_TRACK_VG(hm_track_vg_malloc((p), (n)))
#define hm_track_free(p) HM_TRACK_VG(hm_track_vg_free(p))
#define hm_track_noaccess(p, n) HM_TRACK_VG(hm_track_vg_noaccess((p), (n)))
#define hm_track_defined(p, n) HM_TRACK_VG(hm_track_vg_defined((p), (n)))
#else
#define hm_track_init() ((void)0)
#define hm_track_malloc(p, n) ((void)(p), (void)(n))
#define hm_track_free(p) ((void)(p))
#define hm_track_noaccess(p, n) ((void)(p), (void)(n))
#define hm_track_defined(p, n) ((void)(p), (void)(n))
#endif

/* True when some tool is watching: fast paths test it once, then take a tracked variant. */
#if defined(HM_TRACK_ASAN)
#define hm_tracking() 1
#elif defined(HM_TRACK_VALGRIND)
#define hm_tracking() __builtin_expect(hm__track_valgrind, 0)
#else
#define hm_tracking() 0
#endif

#endif

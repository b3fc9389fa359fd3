/* The one parser of sizes and counts ("4096", "0x1000", "64K", "2G"), shared by the manager's options, the fault
 * spec and the hostmem command. Internal to hostmem. */
#ifndef HOSTMEM_SRC_SIZE_PARSE_H
#define HOSTMEM_SRC_SIZE_PARSE_H

#include <stddef.h>
#include <stdint.h>

/* What a caller accepts beyond plain decimal digits. Suffixes are binary and either case. */
enum {
    HM_SIZE_RADIX = 1u << 0,  /* C literals: "0x1000" hex, a leading 0 octal ("010" is 8) */
    HM_SIZE_KMG = 1u << 1,    /* a K, M or G suffix: times 2^10, 2^20, 2^30 */
    HM_SIZE_T = 1u << 2,      /* a T suffix: times 2^40 */
    HM_SIZE_BYTES = 1u << 3,  /* a B after the suffix: "64KB" */
};

typedef enum hm_size_result {
    HM_SIZE_OK,
    HM_SIZE_NOT_A_NUMBER, /* empty, a sign, a space, junk, a suffix the flags do not allow */
    HM_SIZE_TOO_LARGE,    /* well formed but above UINT64_MAX */
} hm_size_result;

/* Parses text[0..len) whole (it need not end in a NUL) into *out, untouched unless HM_SIZE_OK. */
hm_size_result hm__parse_size(const char *text, size_t len, unsigned flags, uint64_t *out);

#endif

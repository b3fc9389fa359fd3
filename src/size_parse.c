/* One size parser for every layer, so an option, a fault rule and a command-line flag read "64K" alike. Written by
 * hand rather than on strtoull: the text is length-bounded (a token inside "key=value,..."), and an overflow must be
 * told apart from junk. */
#include "internal.h"

static int digit_value(char c, unsigned base)
{
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : 99;
    return d < (int)base ? d : -1;
}

static char upper(char c)
{
    return c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
}

hm_size_result hm__parse_size(const char *text, size_t len, unsigned flags, uint64_t *out)
{
    const char *p = text, *end = text + len;
    if (len == 0 || digit_value(*p, 10) < 0)
        return HM_SIZE_NOT_A_NUMBER; /* empty, a sign, a space, a dot */
    unsigned base = 10;
    if ((flags & HM_SIZE_RADIX) && *p == '0') {
        if (end - p > 2 && upper(p[1]) == 'X' && digit_value(p[2], 16) >= 0) {
            base = 16;
            p += 2;
        } else {
            base = 8;
        }
    }
    uint64_t v = 0;
    int overflow = 0;
    for (int d; p < end && (d = digit_value(*p, base)) >= 0; p++) {
        if (v > (UINT64_MAX - (unsigned)d) / base)
            overflow = 1;
        else
            v = v * base + (unsigned)d;
    }
    unsigned shift = 0;
    if (p < end) {
        switch (upper(*p)) {
        case 'K': shift = flags & HM_SIZE_KMG ? 10 : 0; break;
        case 'M': shift = flags & HM_SIZE_KMG ? 20 : 0; break;
        case 'G': shift = flags & HM_SIZE_KMG ? 30 : 0; break;
        case 'T': shift = flags & HM_SIZE_T ? 40 : 0; break;
        default: break;
        }
        if (!shift)
            return HM_SIZE_NOT_A_NUMBER;
        p++;
        if (p < end && (flags & HM_SIZE_BYTES) && upper(*p) == 'B')
            p++;
    }
    if (p != end)
        return HM_SIZE_NOT_A_NUMBER;
    if (overflow || (shift && v > (UINT64_MAX >> shift)))
        return HM_SIZE_TOO_LARGE;
    *out = v << shift;
    return HM_SIZE_OK;
}

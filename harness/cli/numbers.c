/* The numbers the commands take (--ops, --threads, --context, ...): one strict parser, so every option refuses a
 * sign, a fraction, junk, an overflow or an out-of-range value the same way, naming the option, the value and the
 * range it wants. */
#include "cli.h"

#include "size_parse.h"

#include <string.h>

bool hm__cli_parse_uint(const char *command, const char *option, const char *text, unsigned long long min,
                       unsigned long long max, unsigned long long *out)
{
    uint64_t v = 0;
    /* Decimal digits with an optional binary suffix K, M or G. */
    hm_size_result how = text ? hm__parse_size(text, strlen(text), HM_SIZE_KMG, &v) : HM_SIZE_NOT_A_NUMBER;
    if (how == HM_SIZE_OK && v >= min && v <= max) {
        *out = v;
        return true;
    }
    const char *what = how == HM_SIZE_NOT_A_NUMBER ? "not a whole number"
                       : how == HM_SIZE_TOO_LARGE  ? "too large"
                                                   : "out of range";
    fprintf(stderr, "hostmem %s: %s '%s' is %s: it wants a whole number from %llu to %llu%s\n", command, option,
            text ? text : "", what,
            min, max, max >= 1024 ? " (a suffix K, M or G multiplies by 1024, 1024^2 or 1024^3)" : "");
    return false;
}

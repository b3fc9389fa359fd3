/* The numbers the commands take (--ops, --threads, --context, ...): one strict parser, so every option refuses a
 * sign, a fraction, junk, an overflow or an out-of-range value the same way, naming the option, the value and the
 * range it wants. */
#include "cli.h"

#include <ctype.h>
#include <string.h>

enum parsed { PARSED, NOT_A_NUMBER, TOO_LARGE };

/* Decimal digits with an optional binary suffix K, M or G. */
static enum parsed parse_decimal(const char *text, unsigned long long *out)
{
    const unsigned long long top = ~0ull;
    unsigned long long v = 0;
    bool overflow = false;
    const char *p = text;
    if (!isdigit((unsigned char)*p))
        return NOT_A_NUMBER; /* empty, a sign, a space, a dot */
    for (; isdigit((unsigned char)*p); p++) {
        unsigned digit = (unsigned)(*p - '0');
        if (v > (top - digit) / 10)
            overflow = true;
        else
            v = v * 10 + digit;
    }
    unsigned shift = 0;
    switch (*p) {
    case '\0': break;
    case 'k': case 'K': shift = 10; p++; break;
    case 'm': case 'M': shift = 20; p++; break;
    case 'g': case 'G': shift = 30; p++; break;
    default: return NOT_A_NUMBER;
    }
    if (*p != '\0')
        return NOT_A_NUMBER;
    if (overflow || (shift && v > (top >> shift)))
        return TOO_LARGE;
    *out = v << shift;
    return PARSED;
}

bool hm_cli_parse_uint(const char *command, const char *option, const char *text, unsigned long long min,
                       unsigned long long max, unsigned long long *out)
{
    unsigned long long v = 0;
    enum parsed how = text ? parse_decimal(text, &v) : NOT_A_NUMBER;
    if (how == PARSED && v >= min && v <= max) {
        *out = v;
        return true;
    }
    fprintf(stderr, "hostmem %s: %s '%s' is %s: it wants a whole number from %llu to %llu%s\n", command, option,
            text ? text : "", how == NOT_A_NUMBER ? "not a whole number" : how == TOO_LARGE ? "too large" : "out of range",
            min, max, max >= 1024 ? " (a suffix K, M or G multiplies by 1024, 1024^2 or 1024^3)" : "");
    return false;
}

bool hm_cli_take_uint(const char *command, int argc, char **argv, int *i, unsigned long long min,
                      unsigned long long max, unsigned long long *out)
{
    const char *option = argv[*i];
    if (*i + 1 >= argc) {
        fprintf(stderr, "hostmem %s: %s needs a value (a whole number from %llu to %llu)\n", command, option, min,
                max);
        return false;
    }
    return hm_cli_parse_uint(command, option, argv[++*i], min, max, out);
}

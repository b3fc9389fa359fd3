/* JSON output of the commands: strings, escaped. */
#include "cli.h"

void hm__cli_json_string(FILE *f, const char *s)
{
    if (!s) {
        fputs("null", f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch == '\n')
            fputs("\\n", f);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

void hm__cli_json_member(FILE *f, const char *key, const char *value)
{
    fprintf(f, ", \"%s\": ", key);
    hm__cli_json_string(f, value);
}

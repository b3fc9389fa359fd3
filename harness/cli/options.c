/* The table-driven option parser of every subcommand, and the usage text made from the same table. */
#include "options.h"

#include "cli.h"

#include <string.h>

static hm_help_format help_format = HM_HELP_TEXT;
static hm_cli_probe *probe;

void hm__cli_probe_set(hm_cli_probe *p)
{
    probe = p;
}

void hm__cli_set_help_format(hm_help_format format)
{
    help_format = format;
}

/* Text for roff: a backslash doubled, '-' escaped, and a line starting with '.' or '\'' protected. */
static void roff_text(FILE *f, const char *s)
{
    bool line_start = true;
    for (; *s; s++) {
        if (line_start && (*s == '.' || *s == '\''))
            fputs("\\&", f);
        if (*s == '\\')
            fputs("\\e", f);
        else if (*s == '-')
            fputs("\\-", f);
        else
            fputc(*s, f);
        line_start = *s == '\n';
    }
}

static void man_section(const hm_command_spec *spec, FILE *f)
{
    fprintf(f, ".SS \"hostmem %s\"\n.B hostmem %s\n[OPTIONS]", spec->name, spec->name);
    if (spec->operands && *spec->operands) {
        fputc(' ', f);
        roff_text(f, spec->operands);
    }
    fputs("\n.PP\n", f);
    if (spec->description)
        roff_text(f, spec->description);
    for (size_t i = 0; i < spec->option_count; i++) {
        const hm_option *o = &spec->options[i];
        fputs(".TP\n.B ", f);
        roff_text(f, o->name);
        if (o->value) {
            fputs(" \\fI", f);
            roff_text(f, o->value);
            fputs("\\fR", f);
        }
        fputc('\n', f);
        roff_text(f, o->help);
        if (o->kind == HM_OPTION_UINT)
            fprintf(f, " (%llu\\-%llu)", o->min, o->max);
        if (o->kind == HM_OPTION_LIST)
            fputs(" (repeatable)", f);
        fputc('\n', f);
    }
}

void hm__cli_usage(const hm_command_spec *spec, FILE *f, bool full)
{
    if (full && help_format == HM_HELP_MAN) {
        man_section(spec, f);
        return;
    }
    if (full && help_format == HM_HELP_WORDS) {
        for (size_t i = 0; i < spec->option_count; i++)
            fprintf(f, "%s ", spec->options[i].name);
        fputs("--help", f);
        return;
    }
    fprintf(f, "usage: hostmem %s [OPTIONS]%s%s\n", spec->name, spec->operands && *spec->operands ? " " : "",
            spec->operands ? spec->operands : "");
    if (!full) {
        fprintf(f, "'hostmem %s --help' lists the options.\n", spec->name);
        return;
    }
    if (spec->description)
        fprintf(f, "\n%s", spec->description);
    fprintf(f, "\noptions:\n");
    for (size_t i = 0; i < spec->option_count; i++) {
        const hm_option *o = &spec->options[i];
        char left[64];
        snprintf(left, sizeof left, "%s%s%s%s", o->name, o->value ? " " : "", o->value ? o->value : "",
                 o->kind == HM_OPTION_LIST ? " ..." : "");
        if (o->kind == HM_OPTION_UINT)
            fprintf(f, "  %-24s %s (%llu-%llu)\n", left, o->help, o->min, o->max);
        else
            fprintf(f, "  %-24s %s\n", left, o->help);
    }
    fprintf(f, "  %-24s %s\n", "-h, --help", "this text");
}

static int usage_error(const hm_command_spec *spec)
{
    hm__cli_usage(spec, stderr, false);
    return HM_EXIT_USAGE;
}

static bool take(const hm_command_spec *spec, const hm_option *o, const char *value)
{
    switch (o->kind) {
    case HM_OPTION_FLAG:
        *(bool *)o->target = true;
        return true;
    case HM_OPTION_UINT:
        return hm__cli_parse_uint(spec->name, o->name, value, o->min, o->max, o->target);
    case HM_OPTION_STRING:
        *(const char **)o->target = value;
        return true;
    case HM_OPTION_LIST: {
        hm_option_list *list = o->target;
        if (list->count == HM_OPTION_LIST_MAX) {
            fprintf(stderr, "hostmem %s: %s is given more than %d times\n", spec->name, o->name, HM_OPTION_LIST_MAX);
            return false;
        }
        list->items[list->count++] = value;
        return true;
    }
    }
    return false;
}

int hm__cli_parse_options(const hm_command_spec *spec, int argc, char **argv, const char **operands,
                     size_t *operand_count)
{
    size_t count = 0;
    bool options = true;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (options && strcmp(arg, "--") == 0) {
            options = false;
            continue;
        }
        if (options && (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0)) {
            hm__cli_usage(spec, stdout, true);
            return HM_EXIT_OK;
        }
        if (!options || arg[0] != '-' || !arg[1]) {
            if (count == spec->max_operands) {
                fprintf(stderr, "hostmem %s: unexpected argument '%s'\n", spec->name, arg);
                return usage_error(spec);
            }
            operands[count++] = arg;
            continue;
        }
        const hm_option *o = NULL;
        for (size_t k = 0; k < spec->option_count && !o; k++)
            if (strcmp(spec->options[k].name, arg) == 0)
                o = &spec->options[k];
        if (!o) {
            fprintf(stderr, "hostmem %s: unknown option '%s'\n", spec->name, arg);
            return usage_error(spec);
        }
        const char *value = NULL;
        if (o->kind != HM_OPTION_FLAG) {
            if (i + 1 >= argc) {
                fprintf(stderr, "hostmem %s: %s needs a value (%s)\n", spec->name, arg, o->value);
                return usage_error(spec);
            }
            value = argv[++i];
        }
        if (!take(spec, o, value))
            return HM_EXIT_USAGE;
        if (o->given)
            *o->given = true;
    }
    if (count < spec->min_operands) {
        fprintf(stderr, "hostmem %s: missing %s\n", spec->name, spec->operands);
        return usage_error(spec);
    }
    *operand_count = count;
    if (probe) {
        for (size_t k = 0; k < spec->option_count; k++) {
            const hm_option *o = &spec->options[k];
            if (strcmp(o->name, "--host") == 0 && o->kind == HM_OPTION_STRING)
                probe->library = *(const char **)o->target;
            else if (strcmp(o->name, "--timeout") == 0 && o->kind == HM_OPTION_UINT)
                probe->timeout = *(unsigned long long *)o->target;
        }
        probe->parsed = true;
        return HM_EXIT_OK;
    }
    return -1;
}

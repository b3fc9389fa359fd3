/* The wording of the trace files' errors, shared by both backends (trace_file.h). */
#include "trace_file.h"

#include "error.h"

void hm__trace_file_error(const char *doing, const char *path, const char *why)
{
    hm__set_error("cannot %s trace '%s': %s", doing, path, why);
}

void hm__trace_file_exists_error(const char *path)
{
    hm__set_error("trace '%s' exists: hostmem does not overwrite a trace (remove it, give another name, use %%p in the "
                  "name for the process id, or add ',overwrite')",
                  path);
}

void hm__trace_file_out_of_memory(void) { hm__set_error("out of memory creating the recorder"); }

/* VirtualQuery for memory the manager does not own, answered from /proc/self/maps. Internal to hostmem.
 *
 * Mapped pages are MEM_COMMIT with the protection of their rwx bits (anonymous PROT_NONE mappings are
 * MEM_RESERVE, Protect 0); executables and libraries are MEM_IMAGE (AllocationBase: the file's first mapping),
 * other files MEM_MAPPED, anonymous memory, stacks and heaps MEM_PRIVATE. Gaps are MEM_FREE up to the next mapping.
 * RegionSize runs over adjacent mappings with the same attributes. */
#ifndef HOSTMEM_SRC_PROCMAPS_H
#define HOSTMEM_SRC_PROCMAPS_H

#include <hostmem/hostmem.h>

#include <stdbool.h>
#include <stdint.h>

typedef struct hm_map_entry {
    uintptr_t start, end;
    char perms[5];       /* "rwxp" */
    uint64_t inode;
    const char *path;    /* points into the text; not NUL-terminated */
    size_t path_len;
} hm_map_entry;

/* Parses one line of a maps file (without its newline); false for a malformed line. */
bool hm_procmaps_parse_line(const char *line, size_t len, hm_map_entry *out);

/* The query over a given maps text (for tests); S_OK, or ERROR_INVALID_PARAMETER beyond user space. */
HRESULT hm_procmaps_query_text(const char *text, size_t len, uintptr_t address, MEMORY_BASIC_INFORMATION *out);

/* The query over this process's map. E_OUTOFMEMORY or E_FAIL when the map cannot be read. */
HRESULT hm_procmaps_query(uintptr_t address, MEMORY_BASIC_INFORMATION *out);

#endif

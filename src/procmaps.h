/* VirtualQuery for memory the manager does not own, answered from /proc/self/maps. Internal to hostmem.
 *
 * Mapped pages are MEM_COMMIT with the protection of their rwx bits (anonymous PROT_NONE mappings are
 * MEM_RESERVE, Protect 0). A file that has an executable mapping somewhere in the map (or is the main binary)
 * is MEM_IMAGE, and every mapping of it has AllocationBase = the file's first mapping; other files are
 * MEM_MAPPED, anonymous memory, stacks, heaps and [vdso] MEM_PRIVATE, each with AllocationBase = its own start.
 * AllocationProtect is the Protect of the mapping at AllocationBase (PAGE_NOACCESS when reserved).
 * RegionSize runs from the page over the adjacent mappings with the same State, Protect, Type and AllocationBase.
 * Gaps are MEM_FREE (Protect PAGE_NOACCESS, everything else 0) up to the next mapping or the top of user space.
 *
 * The map is read with open/read in pieces through a buffer on the stack: no malloc, no stdio, no lock, since
 * VirtualQuery may run while other threads are suspended (the CLR queries during a GC suspension). */
#ifndef HOSTMEM_SRC_PROCMAPS_H
#define HOSTMEM_SRC_PROCMAPS_H

#include <hostmem/hostmem.h>

#include <stdbool.h>
#include <stdint.h>

typedef struct hm_map_entry {
    uintptr_t start, end; /* page-aligned, start < end */
    char perms[5];        /* "rwxp", NUL-terminated */
    uint64_t inode;
    const char *path;     /* points into the line; not NUL-terminated; "" for anonymous memory */
    size_t path_len;
} hm_map_entry;

/* Parses one line of a maps file (without its newline); false for a malformed line (bad or unaligned addresses,
 * perms other than [r-][w-][x-][ps], missing offset, device or inode, an inode followed by other than a space). */
bool hm__procmaps_parse_line(const char *line, size_t len, hm_map_entry *out);

/* The query over a given maps text (for tests): malformed lines are skipped. S_OK, or
 * HRESULT_FROM_WIN32(ERROR_INVALID_PARAMETER) for addresses at or beyond the top of user space. */
HRESULT hm__procmaps_query_text(const char *text, size_t len, uintptr_t address, MEMORY_BASIC_INFORMATION *out);

/* The query over a maps file open on fd, read from its start in pieces (the fd must be seekable). E_FAIL when
 * it cannot be read. */
HRESULT hm__procmaps_query_fd(int fd, uintptr_t address, MEMORY_BASIC_INFORMATION *out);

/* What VirtualQuery says of free space: [page, end), MEM_FREE, PAGE_NOACCESS, the rest zero. */
void hm__procmaps_free_info(uintptr_t page, uintptr_t end, MEMORY_BASIC_INFORMATION *out);

/* The query over this process's map; the main binary counts as an image. E_FAIL when the map cannot be read.
 * Where the kernel has the PROCMAP_QUERY ioctl (Linux 6.11+), a gap or anonymous memory is answered from the one
 * mapping it returns (a few microseconds, whatever the size of the map); files, and kernels without the ioctl,
 * take the parse of the whole map. The answers are the same. */
HRESULT hm__procmaps_query(uintptr_t address, MEMORY_BASIC_INFORMATION *out);

/* The ioctl half of hm__procmaps_query, on a /proc/<pid>/maps fd: S_OK with *out when the one mapping at (or above)
 * the address says all; S_FALSE when the whole map must be parsed instead: a file-backed mapping, no such ioctl
 * (ENOTTY/EINVAL, after which it is not tried again; also any fd that is not a maps file), another error.
 * HRESULT_FROM_WIN32(ERROR_INVALID_PARAMETER) at or beyond the top of user space. */
HRESULT hm__procmaps_query_ioctl(int fd, uintptr_t address, MEMORY_BASIC_INFORMATION *out);

/* For tests: false makes every query parse the map, as on a kernel without the ioctl; true tries the ioctl again. */
void hm__procmaps_set_ioctl(bool enabled);

#endif

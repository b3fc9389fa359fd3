/* The trace files' OS layer: the only code of harness/trace/ that calls the operating system's file API. Internal to
 * hostmem. One backend per OS, chosen by the build (as src/os.h's):
 *   trace_file_posix.c  open(O_EXCL|O_NOFOLLOW), flock, posix_fallocate, mmap(MAP_SHARED), pwrite/pread
 *   trace_file_win32.c  CreateFileW(CREATE_NEW), LockFileEx, SetFileInformationByHandle (allocation, end of file),
 *                       CreateFileMapping/MapViewOfFile, WriteFile/ReadFile at an offset
 *
 * The recorder's crash safety rests on one property both backends keep: a byte stored into the shared mapping or
 * written at an offset is in the OS's cache of the file the moment the call returns, so it reaches the file even when
 * the process is killed right after (SIGKILL, TerminateProcess); only a power cut loses it.
 *
 * Errors: a function that can fail returns 0 or an errno value (ENOSPC: the file system is full, EFBIG, EIO, ...).
 * The Windows backend maps its error codes to these, so the number a trace's header stores when recording stopped
 * means the same on every OS (the low errno values are the same in the C libraries of Linux and Windows). */
#ifndef HOSTMEM_HARNESS_TRACE_FILE_H
#define HOSTMEM_HARNESS_TRACE_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct hm_trace_file hm_trace_file;

/* Creates the trace at path to record into: a new file unless overwrite (then an existing one is emptied, unless
 * another process records into it), never through a symbolic link, only a regular file, locked against other
 * recorders until closed; its first `mapped` bytes are reserved on the disk (a full file system is an error now
 * rather than a crash later) and mapped shared, read-write. Returns NULL with HostMemLastError() set. */
hm_trace_file *hm__trace_file_create(const char *path, bool overwrite, size_t mapped);
/* The first `mapped` bytes of the file, shared: a store there is a store into the file. */
uint8_t *hm__trace_file_map(hm_trace_file *f);
/* Writes len bytes at offset (the file grows as needed). */
int hm__trace_file_write(hm_trace_file *f, const void *buf, size_t len, uint64_t offset);
/* Reads len bytes at offset: 0 when all were read. */
int hm__trace_file_read(hm_trace_file *f, void *buf, size_t len, uint64_t offset);
/* Makes [offset, offset + len) of the mapped bytes read as zeros, giving their disk blocks back where the file
 * system can. */
void hm__trace_file_zero_mapped(hm_trace_file *f, uint64_t offset, size_t len);
/* Unmaps, cuts the file to `size` bytes, unlocks and closes. A negative size leaves the file as it is (a forked
 * child closing its copy: the file and the lock are the parent's). */
void hm__trace_file_close(hm_trace_file *f, int64_t size);

/* Opens a trace to read it: a regular file only (a FIFO or a device would block the reader or never end), for binary
 * reading. NULL with HostMemLastError() set. */
FILE *hm__trace_file_open_read(const char *path);

/* The wording both backends give their failures (trace_file_errors.c), so a trace's error reads the same on every
 * OS. Each sets HostMemLastError(). */
/* "cannot DOING trace 'PATH': WHY"; doing: "create", "record to", "map", "open". */
void hm__trace_file_error(const char *doing, const char *path, const char *why);
/* A new trace was asked for and path exists. */
void hm__trace_file_exists_error(const char *path);
/* The recorder's own allocation failed. */
void hm__trace_file_out_of_memory(void);
/* The reasons (WHY above) that do not come from the OS's own error text. */
#define HM_TRACE_FILE_NOT_REGULAR "not a regular file"
#define HM_TRACE_FILE_DIRECTORY "it is a directory"
#define HM_TRACE_FILE_SYMLINK "it is a symbolic link"
#define HM_TRACE_FILE_LOCKED "another process is recording into it"
#define HM_TRACE_FILE_NO_SPACE "no space left on its file system for the header and the ring (1 MiB)"
/* A pipe given by name (kind: "FIFO" on Linux, "pipe" on Windows). */
#define HM_TRACE_FILE_PIPE(kind) "it is a " kind ", not a regular file (give '-' to read a pipe from stdin)"

/* The process id that "%p" in a trace's name stands for. */
unsigned long hm__trace_process_id(void);
/* The OS a trace's header names ("linux", "windows"). */
const char *hm__trace_os_name(void);
/* The current time in UTC as "YYYY-MM-DDTHH:MM:SSZ" into buf (empty when the clock cannot say). */
void hm__trace_utc_time(char *buf, size_t len);

#endif

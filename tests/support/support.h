/* Helpers the cmocka tests share: a scratch directory with paths in it, whole-file read and write, and a child with a
 * pipe to its parent. Each failure is a cmocka assertion in the calling test. (The counting notification callback is
 * harness/trace/counting_callback.h.) */
#ifndef HOSTMEM_TESTS_SUPPORT_H
#define HOSTMEM_TESTS_SUPPORT_H

#include <stddef.h>
#include <sys/types.h>

/* ---- Scratch directory (one per test program: call tmp_dir_create in the group setup) ---- */

/* Creates /tmp/<prefix>-XXXXXX; 0 on success, -1 otherwise (a cmocka setup's answer). */
int tmp_dir_create(const char *prefix);
/* Removes it and everything in it; 0 on success, -1 otherwise (a cmocka teardown's answer). */
int tmp_dir_remove(void);
const char *tmp_dir(void);
/* "<tmp_dir>/<name>", in one of 8 rotating buffers: valid until 8 more calls. */
const char *tmp_path(const char *name);

/* ---- Whole files ---- */

void write_file(const char *path, const void *data, size_t len);
/* The file's bytes plus a NUL (free it); *len their count. */
char *read_file(const char *path, size_t *len);

/* ---- Children ---- */

/* fork() with a pipe from the child to the parent. Returns 0 in the child, where *fd is the pipe's write end, and the
 * child's pid in the parent, where *fd is its read end; each closes the other end. */
pid_t fork_with_pipe(int *fd);

#endif

/* Helpers the cmocka tests share: a scratch directory with paths in it, whole-file read and write, and a
 * notification callback that counts what it is told. Each failure is a cmocka assertion in the calling test. */
#ifndef HOSTMEM_TESTS_SUPPORT_H
#define HOSTMEM_TESTS_SUPPORT_H

#include <hostmem/hostmem.h>

#include <stdatomic.h>
#include <stddef.h>

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

/* ---- A counting ICLRMemoryNotificationCallback ---- */

#define COUNTING_CALLBACK_SEEN 64

typedef struct counting_callback {
    ICLRMemoryNotificationCallback iface;
    atomic_int refs;  /* AddRef/Release count: 1 from COUNTING_CALLBACK_INIT */
    atomic_int count; /* notifications received */
    EMemoryAvailable last;
    EMemoryAvailable seen[COUNTING_CALLBACK_SEEN]; /* the first ones, in order */
    /* Optional: called inside each notification, after it is counted (e.g. to call back into the host). */
    void (*on_notify)(struct counting_callback *cb, EMemoryAvailable e);
    void *ctx;
} counting_callback;

extern const ICLRMemoryNotificationCallbackVtbl counting_callback_vtbl;
#define COUNTING_CALLBACK_INIT {.iface = {&counting_callback_vtbl}, .refs = 1}

#endif

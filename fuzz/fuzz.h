/* The entry points every fuzzing engine calls (libFuzzer's interface, also AFL++'s and fuzz/standalone_main.c's):
 * each fuzz_*.c defines them, the engine calls them. */
#ifndef HOSTMEM_FUZZ_H
#define HOSTMEM_FUZZ_H

#include <stddef.h>
#include <stdint.h>

/* Runs one input. Returns 0. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Optional, as with libFuzzer: a target that defines it is set up once before the first input. */
int LLVMFuzzerInitialize(int *argc, char ***argv);

#endif

/* Record and replay: what the trace modules share, the one internal header every .c file of harness/trace/ includes
 * (with the services of src/ the layer uses). Internal to hostmem.
 *
 * trace_format.c   the call model: per-method fields, text lines and binary records of one call, names of flags
 * trace_reader.c   the three encodings in, relocation of raw traces, validation of handles
 * trace_writer.c   text and binary out
 * handle_map.c     the handle map (handle_map.h): trace handles to live ones, for the readers, replay and reduce
 * trace_file_*.c   the trace files' OS layer (trace_file.h): the recorder's file, opening a trace to read
 * recorder.c       the decorator writing raw traces
 * replay.c         the replayer (also the exploration scenario), reduce.c the reducer */
#ifndef HOSTMEM_HARNESS_TRACE_INTERNAL_H
#define HOSTMEM_HARNESS_TRACE_INTERNAL_H

#include <hostmem/hostmem.h>

#include "com.h"
#include "error.h"
#include "handle_map.h"
#include "manager.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define HM_TRACE_TEXT_MAGIC "hostmem-trace"
#define HM_TRACE_TEXT_VERSION 1
#define HM_TRACE_BIN_MAGIC "hostmem-trace-bin 2\n"  /* version 2: the environment block after the magic */
#define HM_TRACE_BIN1_MAGIC "hostmem-trace-bin 1\n" /* still read: no environment */
#define HM_TRACE_RAW_MAGIC "hostmem-trace-raw 4\n"  /* version 4: the environment block after the 64 bytes */
#define HM_TRACE_RAW3_MAGIC "hostmem-trace-raw 3\n" /* still read: no environment */
#define HM_TRACE_RAW2_MAGIC "hostmem-trace-raw 2\n" /* still read: version 3 without packed VirtualQuery answers */
#define HM_TRACE_RAW1_MAGIC "hostmem-trace-raw 1\n" /* still read: no ring, every slot in its place */
/* A text line longer than this is malformed (a real line is under 400 bytes). */
#define HM_TRACE_LINE_MAX 4096
/* A binary record is never longer than this (the file name dominates). */
#define HM_TRACE_BIN_RECORD_MAX 640

/* A value quoted in a reader's error: whole, in quotes, when it is up to HM_TRACE_SHOWN_MAX bytes (every name a trace
 * uses is shorter); a longer one is cut there, marked so, with its length ('abc...' (5000 bytes)), so that a hostile
 * line cannot flood the message and a cut value is never taken for the whole one. HM_TRACE_SHOW(value, len) gives
 * the text for a "%s", valid until the end of the statement. */
#define HM_TRACE_SHOWN_MAX 80
#define HM_TRACE_SHOWN_SIZE (HM_TRACE_SHOWN_MAX + 40) /* the quotes, the mark, the length */
const char *hm__trace_shown(char *buf, const char *value, size_t len);
#define HM_TRACE_SHOW(value, len) hm__trace_shown((char[HM_TRACE_SHOWN_SIZE]){0}, (value), (len))

/* ---- The raw encoding (recorder.c writes it, trace_reader.c reads it) -------------------------------------
 * A 64-byte header (magic, then at HM_RAW_RING_FIELD the ring's size in slots, a power of two; version 1 has no
 * ring and the field is zero), the ring (version 2), then 64-byte slots: record slot i at
 * HM_RAW_HEADER + (ring + i) * HM_RAW_SLOT. A call takes one slot, or more when it carries a
 * MEMORY_BASIC_INFORMATION (VirtualQuery: +1) or a file name (DebugAlloc: up to +3). Slot i starts with
 * commit = HM_RAW_COMMIT_TAG | (i + 1), stored last with release order, so a slot whose commit word is not that
 * value was never finished: the reader skips it (a call in flight when the recorder died), and zeros to the end
 * of the file are the end of the trace. A record is written first to ring slot i % ring (its extra slots to the
 * following ring slots, wrapping), and copied to its place later: a record whose place does not hold it yet is
 * read from the ring, where its commit word names it. */
#define HM_RAW_RING_FIELD 32
/* A recorder that could not write (the file system was full) stops recording and says so in the header: a 32-bit
 * HM_RAW_STOPPED at HM_RAW_STOPPED_FIELD (stored last), the errno of the failed write after it, and at
 * HM_RAW_STOPPED_CALLS_FIELD the number of calls in the trace (64-bit): the reader ends there. Zeros (every trace
 * before this field existed, every complete trace): complete. */
#define HM_RAW_STOPPED_FIELD 40
#define HM_RAW_STOPPED_ERRNO_FIELD 44
#define HM_RAW_STOPPED_CALLS_FIELD 48
#define HM_RAW_STOPPED 1u
/* Version 4: the size of the environment block (a 32-bit multiple of 64, at most HM_RAW_ENV_MAX) that follows the
 * 64-byte header and comes before the ring: the environment's text lines (trace_env.c), then zeros. */
#define HM_RAW_ENV_FIELD 56
#define HM_RAW_ENV_MAX (64u * 1024u)
#define HM_RAW_RING_SLOTS 16384u /* 1 MiB */
#define HM_RAW_RING_MAX (1u << 20) /* a bigger ring is refused (64 MiB) */
#define HM_RAW_SLOT 64
#define HM_RAW_HEADER 64
#define HM_RAW_COMMIT_TAG 0x484d540000000000ull /* "HMT" in the top bytes: a zero or stale word never matches */
#define HM_RAW_COMMIT_MASK 0x0000ffffffffffffull
#define HM_RAW_HAS_MBI 0x1u
#define HM_RAW_HAS_FILE 0x2u
/* Version 3: a VirtualQuery answer packed into its call's own slot (the usual case, see hm_raw_pack_mbi). */
#define HM_RAW_MBI_PACKED 0x4u
/* A VirtualQuery a call changing the address space overlapped (another thread's): hm_trace_call.concurrent. */
#define HM_RAW_CONCURRENT 0x8u
#define HM_RAW_NO_LEVEL 0xffu

typedef struct hm_raw_record {
    uint64_t commit;
    uint32_t thread;
    uint8_t method;
    uint8_t nslots;  /* 1 + the extra slots that follow */
    uint8_t level;   /* HM_RAW_NO_LEVEL when the method has none */
    uint8_t nulls;   /* HM_TRACE_NULL_OUT* */
    int32_t result;
    uint32_t a32;    /* type / available (notification) / line */
    uint64_t addr;
    uint64_t size;
    uint64_t out;    /* *ppMem, old protection, *pResult, *pAvailableBytes */
    uint32_t b32;    /* prot, *pMemoryLoad */
    uint32_t id;     /* heap or callback */
    uint32_t flags;  /* HM_RAW_HAS_*, HM_RAW_MBI_PACKED */
    uint32_t c32;    /* VirtualQuery packed: HM_RAW_PACKED_* codes */
} hm_raw_record;
_Static_assert(sizeof(hm_raw_record) == HM_RAW_SLOT, "a raw record is one slot");

/* A VirtualQuery answer packed into the record (HM_RAW_MBI_PACKED), when it fits, as any answer of a host that keeps
 * Windows' rules does: BaseAddress is the queried page, AllocationBase is 0 or at most 16 TiB below it on a page,
 * RegionSize is whole pages (under 16 TiB), both protections fit 16 bits, State and Type are ones Windows uses.
 * a32 = RegionSize in pages, b32 = AllocationProtect | Protect << 16, id = (BaseAddress - AllocationBase) in pages,
 * c32 = state code | type code << 2 | HM_RAW_PACKED_NO_ALLOCATION_BASE. Half the bytes of the two-slot form, which
 * stays for every other answer. */
#define HM_RAW_PACKED_NO_ALLOCATION_BASE 0x10u
#define HM_RAW_PACKED_MAX_PAGES 0xffffffffull

static const uint32_t hm_raw_packed_states[4] = {0, MEM_COMMIT, MEM_RESERVE, MEM_FREE};
static const uint32_t hm_raw_packed_types[4] = {0, MEM_PRIVATE, MEM_MAPPED, MEM_IMAGE};

static inline int hm_raw_packed_code(const uint32_t *table, uint32_t value)
{
    for (int i = 0; i < 4; i++)
        if (table[i] == value)
            return i;
    return -1;
}

/* Packs mbi into rec (flag set) and returns true when it fits; else leaves rec as it was. */
static inline bool hm_raw_pack_mbi(hm_raw_record *rec, uint64_t address, const MEMORY_BASIC_INFORMATION *mbi)
{
    const uint64_t page = 0xfff;
    uint64_t base = (uint64_t)(uintptr_t)mbi->BaseAddress, alloc = (uint64_t)(uintptr_t)mbi->AllocationBase;
    uint64_t size = mbi->RegionSize;
    int state = hm_raw_packed_code(hm_raw_packed_states, mbi->State);
    int type = hm_raw_packed_code(hm_raw_packed_types, mbi->Type);
    if (base != (address & ~page) || (size & page) || (size >> 12) > HM_RAW_PACKED_MAX_PAGES ||
        mbi->AllocationProtect > 0xffff || mbi->Protect > 0xffff || state < 0 || type < 0 ||
        (alloc && ((alloc & page) || alloc > base || ((base - alloc) >> 12) > HM_RAW_PACKED_MAX_PAGES)))
        return false;
    rec->a32 = (uint32_t)(size >> 12);
    rec->b32 = mbi->AllocationProtect | mbi->Protect << 16;
    rec->id = alloc ? (uint32_t)((base - alloc) >> 12) : 0;
    rec->c32 = (uint32_t)state | (uint32_t)type << 2 | (alloc ? 0 : HM_RAW_PACKED_NO_ALLOCATION_BASE);
    rec->flags |= HM_RAW_MBI_PACKED;
    return true;
}

static inline void hm_raw_unpack_mbi(const hm_raw_record *rec, MEMORY_BASIC_INFORMATION *mbi)
{
    uint64_t base = rec->addr & ~(uint64_t)0xfff;
    memset(mbi, 0, sizeof *mbi);
    mbi->BaseAddress = (void *)(uintptr_t)base;
    if (!(rec->c32 & HM_RAW_PACKED_NO_ALLOCATION_BASE))
        mbi->AllocationBase = (void *)(uintptr_t)(base - ((uint64_t)rec->id << 12));
    mbi->AllocationProtect = rec->b32 & 0xffff;
    mbi->RegionSize = (SIZE_T)rec->a32 << 12;
    mbi->State = hm_raw_packed_states[rec->c32 & 3];
    mbi->Protect = rec->b32 >> 16;
    mbi->Type = hm_raw_packed_types[(rec->c32 >> 2) & 3];
}

/* The text line and binary marker of an incomplete trace (the recorder stopped): text
 * "#! incomplete: recording stopped after N calls: REASON" (a comment to readers that do not know it); binary a
 * 0 byte (where a record's sequence number, never 0, would be), varint N, varint length, REASON. */
#define HM_TRACE_INCOMPLETE_TEXT "#! incomplete: recording stopped after "
#define HM_TRACE_INCOMPLETE_REASON_MAX 128

/* A writer to an open stream (not closed by hm_trace_writer_close, only flushed). */
HRESULT hm__trace_writer_open_stream(FILE *file, hm_trace_encoding encoding, hm_trace_writer **out);

/* Reads a trace held in memory (data must outlive the reader; name is what errors call it). No copy is made. */
HRESULT hm__trace_open_memory(const void *data, size_t size, const char *name, hm_trace_reader **out);
/* Raw traces: releases lost in flight (a killed recorder) that a later call proved, so far (trace_reader.c). */
uint64_t hm__trace_reader_implied(const hm_trace_reader *reader);

/* ---- The recording's environment (trace_env.c) ------------------------------------------------------------
 * One line per field, the same in every encoding: "#! KEY: VALUE" (a comment to readers that do not know it). Text
 * traces have the lines after the version line, before the first call; binary version 2 has a varint length then
 * the lines after the magic; raw version 4 has them in the block at HM_RAW_ENV_FIELD. */
#define HM_TRACE_ENV_PREFIX "#! "
enum { HM_TRACE_ENV_FIELDS = 8 };
typedef struct hm_trace_env_store {
    char *values[HM_TRACE_ENV_FIELDS]; /* malloc'd, NULL when absent */
    hm_trace_env view;                 /* values, "" for the absent ones */
} hm_trace_env_store;
/* The key of field i ("version", "host", "host-path", "host-options", "faults", "time", "os", "pid"). */
const char *hm__trace_env_key(int field);
const char *hm__trace_env_get(const hm_trace_env *env, int field); /* NULL when absent */
const char **hm__trace_env_field(hm_trace_env *env, int field); /* where field i is kept in env */
void hm__trace_env_store_init(hm_trace_env_store *store);
void hm__trace_env_store_free(hm_trace_env_store *store);
/* A line of the header: 1 when it is a field (stored), 0 when it is not one (an ordinary comment or a call), -1
 * when it is malformed ("field 'KEY': what" in err): a bad value, an overlong one, a field given twice. */
int hm__trace_env_parse_line(hm_trace_env_store *store, const char *line, size_t len, char *err, size_t errlen);
/* Every line of a block ("#! KEY: VALUE\n"..., up to len or the first NUL), as hm__trace_env_parse_line; lines that
 * are not fields are malformed here. Returns 0 or -1 with err set. */
int hm__trace_env_parse_block(hm_trace_env_store *store, const char *block, size_t len, char *err, size_t errlen);
/* Checks one value of field i as a reader would: 0, or -1 with "field 'KEY': what" in err. */
int hm__trace_env_check(int field, const char *value, size_t len, char *err, size_t errlen);
/* The header block of env: malloc'd lines (NUL-terminated, *len without the NUL), empty fields left out. NULL with
 * err set when a value is refused (hm__trace_env_check), or out of memory. */
char *hm__trace_env_format(const hm_trace_env *env, size_t *len, char *err, size_t errlen);
/* Copies env's strings into *out (malloc'd; hm__trace_env_free_copy frees them). false when out of memory. */
bool hm__trace_env_copy(const hm_trace_env *env, hm_trace_env *out);
void hm__trace_env_free_copy(hm_trace_env *env);

/* ---- The call model (trace_format.c) ---------------------------------------------------------------------- */
/* Parses one text line (no newline) into *call. On error returns -1 and writes "field 'F': what" into err. */
int hm__trace_parse_line(const char *line, size_t len, hm_trace_call *call, char *err, size_t errlen);
/* The binary record of a call: returns its length (at most HM_TRACE_BIN_RECORD_MAX). */
size_t hm__trace_encode_binary(const hm_trace_call *call, uint8_t *buf);
/* Decodes one binary record from [p, p+len): returns the bytes used, 0 when more input is needed, -1 on error
 * (message in err). */
long hm__trace_decode_binary(const uint8_t *p, size_t len, hm_trace_call *call, char *err, size_t errlen);

/* Zeroes a call and sets the "none" values (level -1). */
void hm__trace_call_init(hm_trace_call *call);
bool hm__trace_method_has_level(int method);
bool hm__trace_is_host_method(int method); /* a call made to the host (not a notification or a Release) */
/* A recorded failure replay injects (an allocating call failed for want of resources: the machine's doing, not the
 * calls'); any other recorded failure (E_INVALIDARG...) is the host's own answer, which replay asks the host for. */
bool hm__trace_is_injected_failure(int method, HRESULT hr);
/* Of those, an out-of-memory (E_OUTOFMEMORY, ERROR_NOT_ENOUGH_MEMORY, ERROR_COMMITMENT_LIMIT). */
bool hm__trace_is_out_of_memory(HRESULT hr);

/* The handles a call uses (in its arguments) and the one it creates (a successful VirtualAlloc returning a fresh
 * @n, Alloc/DebugAlloc's #n, CreateMalloc's hN, a registered cN). Kinds: HM_REF_ALLOC, HM_REF_BLOCK, and: */
enum { HM_HANDLE_HEAP = 3, HM_HANDLE_CALLBACK = 4 };
typedef struct hm_trace_handle {
    uint32_t kind, handle;
} hm_trace_handle;
/* Fills uses (up to 4) and returns how many; *created gets the created handle (kind 0 when none). Whether a
 * VirtualAlloc's mem=@n creates @n is for the caller to say (it is a creation when @n is not known yet). */
size_t hm__trace_call_handles(const hm_trace_call *call, hm_trace_handle *uses, hm_trace_handle *created);

/* ---- Varints (binary encoding) ----------------------------------------------------------------------------- */
static inline size_t hm_varint_put(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

/* Returns the bytes used, 0 when the input ends inside the varint, -1 when it is longer than 10 bytes. */
static inline long hm_varint_get(const uint8_t *p, size_t len, uint64_t *out)
{
    uint64_t v = 0;
    for (size_t i = 0; i < len && i < 10; i++) {
        v |= (uint64_t)(p[i] & 0x7f) << (7 * i);
        if (!(p[i] & 0x80)) {
            *out = v;
            return (long)i + 1;
        }
    }
    return len >= 10 ? -1 : 0;
}

#endif

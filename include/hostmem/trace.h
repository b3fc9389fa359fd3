/* hostmem record and replay: traces of the calls a runtime makes to its host (docs/trace-format.md).
 *
 * A trace is a sequence of calls. Each call names its method, its arguments and what the host answered.
 * Addresses are relocatable: the n-th allocation the host returned is handle @n (a VirtualAlloc region) or #n
 * (a heap block), and an address inside it is written @n+offset, so a trace replays against a host that places
 * memory elsewhere. Heaps are h1, h2, ... and notification callbacks c1, c2, ... in order of creation.
 *
 * Three encodings carry the same calls:
 *   text    "hostmem-trace 1": one call per line, for people, diff and editing (the reference form);
 *   binary  "hostmem-trace-bin 1": the same calls as varints, about 5x smaller and faster to read;
 *   raw     what the recorder writes: fixed 64-byte slots in a shared mapping, raw addresses, survives SIGKILL
 *           of the recording process. The reader relocates it; `hostmem trace convert` turns it into either
 *           of the others.
 * Every reader entry point accepts all three and tells them apart by their first bytes. */
#ifndef HOSTMEM_TRACE_H
#define HOSTMEM_TRACE_H

#include "api.h"
#include "faults.h" /* hm_manager_factory_fn */
#include "interfaces.h"
#include "methods.h"

#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Recording -------------------------------------------------------------------------------------------
 * Wraps inner (the wrapper takes its own reference) in a recorder that writes every call to the trace at path
 * (raw encoding). path is "FILE[,max=SIZE][,overwrite]" as HOSTMEM_TRACE is: %p in FILE is the process id, %% a %;
 * max=SIZE (K, M, G) stops the recording, as a full disk does, before the file grows past SIZE bytes. FILE must
 * not exist unless ",overwrite" is given; it is never followed through a symbolic link, and it is locked while
 * recording (a second recorder of the same file is refused). Fails (E_FAIL, HostMemLastError says why) when the
 * file cannot be created or its first 1 MiB cannot be reserved on the disk. When a write fails later (the file
 * system is full), recording stops: the program goes on, stderr says how many calls the trace holds, and the
 * trace says it is incomplete (hm_trace_reader_incomplete). Heaps created through the wrapper and callbacks registered through it
 * are wrapped too, so Alloc/DebugAlloc/Free, a heap's final Release and OnMemoryNotification are recorded.
 * Each call is in the file (the page cache) before it returns to its caller, so a SIGKILL (TerminateProcess on
 * Windows) loses at most the calls in flight. The file is cut to its real length when the last reference to the recorder goes. */
HM_API HRESULT HostMemWrapRecorder(IHostMemoryManager *inner, const char *path, IHostMemoryManager **ppOuter);

/* ---- The recording's environment (the trace's header) ------------------------------------------------------
 * Every trace the recorder writes says where it was recorded: which hostmem, which host with which options, which
 * fault spec was in force, when, on which OS and in which process. Replay, reduce and explore use the host, its
 * options and the fault spec when not told otherwise (docs/trace-format.md, "The environment"). Every field is a
 * string; "" when unknown (a trace written before the header carried them reads with every field ""). Values are at
 * most HM_TRACE_ENV_VALUE_MAX bytes of printable characters (no control character: one text line each). */
#define HM_TRACE_ENV_VALUE_MAX 4000
typedef struct hm_trace_env {
    const char *version;      /* the hostmem that recorded: "0.1.0" */
    const char *host;         /* the host as given: a plugin's path ("./libmyhost.so"), or "built-in" */
    const char *host_path;    /* that plugin's path resolved when it was recorded ("" for the built-in manager) */
    const char *host_options; /* the options its factory got ("limit=64M") */
    const char *faults;       /* the fault spec in force (HOSTMEM_FAULTS or --faults); "" for none */
    const char *time;         /* when the recording started, UTC: "2026-12-07T15:41:28Z" */
    const char *os;           /* "linux" */
    const char *pid;          /* the recording process's id, in decimal */
} hm_trace_env;
#define HM_TRACE_BUILTIN_HOST "built-in"

/* HostMemWrapRecorder with the recording's environment: env's host, host_path, host_options and faults go into the
 * trace's header (NULL or "": unknown); version, time, os and pid are the recorder's own (env's are ignored). A
 * value longer than HM_TRACE_ENV_VALUE_MAX is left out of the header (stderr says so) and a control character in
 * one is written as '?': neither refuses the recording. HostMemWrapRecorder(inner, path, out) is this with env
 * NULL. */
HM_API HRESULT HostMemWrapRecorderEnv(IHostMemoryManager *inner, const char *path, const hm_trace_env *env,
                                      IHostMemoryManager **ppOuter);
/* The inner manager of a recorder (no reference added), or NULL when outer is not one. */
HM_API IHostMemoryManager *HostMemRecorderInner(IHostMemoryManager *outer);
/* Calls recorded so far by the recorder `outer` belongs to (heap and callback calls included). */
HM_API uint64_t HostMemRecorderCalls(IHostMemoryManager *outer);

/* ---- Calls -------------------------------------------------------------------------------------------------- */
/* The methods of a trace: hm_method (methods.h), plus two calls that are not host methods but change what later
 * calls mean: the CLR's callback being notified, and the final Release of a heap. */
enum {
    HM_TRACE_ON_NOTIFICATION = HM_METHOD_COUNT, /* ICLRMemoryNotificationCallback::OnMemoryNotification */
    HM_TRACE_HEAP_RELEASE,                      /* the last IHostMalloc::Release of heap hN */
    HM_TRACE_METHOD_COUNT
};
/* "VirtualAlloc", ..., "OnMemoryNotification", "Release"; NULL when out of range. */
HM_API const char *hm_trace_method_name(int method);

/* A relocatable address: raw (value is the address), or handle @n / #n plus value as the offset. */
typedef enum hm_trace_ref_kind { HM_REF_RAW = 0, HM_REF_ALLOC = 1, HM_REF_BLOCK = 2 } hm_trace_ref_kind;
typedef struct hm_trace_ref {
    uint64_t value;  /* the address (raw) or the offset from the handle's start */
    uint32_t handle; /* n of @n or #n (1-based); 0 for raw */
    uint32_t kind;   /* hm_trace_ref_kind */
} hm_trace_ref;

/* Out-pointers the caller passed as NULL (the first / second out-parameter of the method). */
#define HM_TRACE_NULL_OUT1 0x1u /* ppMalloc, ppMem, lpBuffer, pflOldProtect, pMemoryLoad */
#define HM_TRACE_NULL_OUT2 0x2u /* pResult, pAvailableBytes */
#define HM_TRACE_FILE_MAX 192   /* DebugAlloc file names are kept up to this many bytes (with the NUL) */

typedef struct hm_trace_call {
    uint64_t seq;      /* 1, 2, ... in trace order (global over threads) */
    uint32_t thread;   /* 1, 2, ... in order of first appearance */
    int method;        /* hm_method or HM_TRACE_ON_NOTIFICATION / HM_TRACE_HEAP_RELEASE */
    uint32_t nulls;    /* HM_TRACE_NULL_OUT* */
    /* arguments (which ones a method has: docs/trace-format.md) */
    hm_trace_ref addr; /* pAddress, lpAddress, startAddress, pMem */
    uint64_t size;     /* dwSize, cbSize, size, dwLength */
    uint32_t type;     /* flAllocationType, dwFreeType, dwMallocType */
    uint32_t prot;     /* flProtect, flNewProtect */
    int level;         /* EMemoryCriticalLevel, -1 when the method has none */
    uint32_t heap;     /* hN of heap methods; the heap CreateMalloc made (0 when it failed) */
    uint32_t callback; /* cN: the callback registered or notified (0 for NULL) */
    int available;     /* EMemoryAvailable of OnMemoryNotification */
    int line;          /* DebugAlloc's iLineNo */
    char file[HM_TRACE_FILE_MAX]; /* DebugAlloc's pszFileName ("" for NULL, see has_file) */
    int has_file;
    /* results */
    HRESULT result;
    hm_trace_ref mem;       /* *ppMem */
    uint32_t old_prot;      /* *pflOldProtect */
    uint64_t query_result;  /* *pResult of VirtualQuery */
    int has_mbi;            /* the MEMORY_BASIC_INFORMATION below was written */
    hm_trace_ref mbi_base, mbi_alloc_base;
    uint32_t mbi_alloc_protect, mbi_state, mbi_protect, mbi_type;
    uint64_t mbi_region_size;
    uint32_t load;          /* *pMemoryLoad */
    uint64_t available_bytes; /* *pAvailableBytes */
    /* VirtualQuery: another thread changed the address space while it ran, so its answer may describe the state
     * before or after that change; replay does not compare it (docs/trace-format.md, "Threads"). */
    int concurrent;
} hm_trace_call;

/* One call as its text line, without newline. Returns the length it needs (like snprintf). */
HM_API size_t hm_trace_format_call(const hm_trace_call *call, char *buf, size_t len);

/* ---- Reading (streaming: memory is bounded by the live allocations, not by the trace length) ---------------- */
typedef enum hm_trace_encoding { HM_TRACE_TEXT = 0, HM_TRACE_BINARY = 1, HM_TRACE_RAW = 2 } hm_trace_encoding;
typedef struct hm_trace_reader hm_trace_reader;

/* Opens path ("-" for stdin, text or binary only). E_INVALIDARG for a file that is not a trace (wrong magic or
 * version), E_FAIL when it cannot be read; HostMemLastError() says which, naming the file. */
HM_API HRESULT hm_trace_open(const char *path, hm_trace_reader **out);
/* The next call: 1 and *call filled, 0 at the end, -1 on malformed input (hm_trace_error has
 * "FILE:LINE: field 'F': what", and so has HostMemLastError()). After -1 every call returns -1. */
HM_API int hm_trace_next(hm_trace_reader *reader, hm_trace_call *call);
HM_API const char *hm_trace_error(const hm_trace_reader *reader);
HM_API hm_trace_encoding hm_trace_reader_encoding(const hm_trace_reader *reader);
/* Raw traces only: slots found empty between calls (calls in flight when the recorder was killed). */
HM_API uint64_t hm_trace_reader_lost(const hm_trace_reader *reader);
/* 1 when the trace says the recorder stopped before the recorded run ended (a write failed: the file system was
 * full): the trace holds the first *calls calls, *reason says why ("No space left on device"). 0 for a complete
 * trace. Final once hm_trace_next returned 0 (text and binary traces carry it after their last call). */
HM_API int hm_trace_reader_incomplete(const hm_trace_reader *reader, uint64_t *calls, const char **reason);
/* The recording's environment from the trace's header: never NULL, every field non-NULL ("" when absent). Valid
 * until hm_trace_close. */
HM_API const hm_trace_env *hm_trace_reader_env(const hm_trace_reader *reader);
HM_API void hm_trace_close(hm_trace_reader *reader);

/* A whole trace in memory (the reducer and exploration need random access). */
typedef struct hm_trace {
    hm_trace_call *calls;
    size_t count;
    /* The header's environment (hm_trace_load fills it: fields NULL or strings hm_trace_free frees). */
    hm_trace_env env;
    /* The trace's mark of an incomplete recording (hm_trace_reader_incomplete), kept by hm_trace_load, carried by
     * HostMemReduce into the reduced trace and reported by HostMemReplayTrace: 0 for a complete trace. */
    int incomplete;
    uint64_t incomplete_calls;
    char incomplete_reason[128];
} hm_trace;
HM_API HRESULT hm_trace_load(const char *path, hm_trace **out);
HM_API void hm_trace_free(hm_trace *trace);

/* ---- Writing ------------------------------------------------------------------------------------------------ */
typedef struct hm_trace_writer hm_trace_writer;
/* path "-" is stdout. Only text and binary can be written (raw is the recorder's alone). */
HM_API HRESULT hm_trace_writer_open(const char *path, hm_trace_encoding encoding, hm_trace_writer **out);
HM_API HRESULT hm_trace_write(hm_trace_writer *writer, const hm_trace_call *call);
/* The recording's environment, into the header: before the first call (or comment, or mark) only. Empty and NULL
 * fields are left out. E_INVALIDARG (HostMemLastError says which field) for a value a reader would refuse: longer
 * than HM_TRACE_ENV_VALUE_MAX, a control character, a malformed time or pid. */
HM_API HRESULT hm_trace_write_env(hm_trace_writer *writer, const hm_trace_env *env);
/* A "# ..." line (text only; ignored by the binary encoding). */
HM_API HRESULT hm_trace_write_comment(hm_trace_writer *writer, const char *comment);
/* Marks the trace written as incomplete: the recording stopped after `calls` calls, for `reason`
 * (hm_trace_reader_incomplete). Write it after the calls. */
HM_API HRESULT hm_trace_write_incomplete(hm_trace_writer *writer, uint64_t calls, const char *reason);
/* Flushes and closes; E_FAIL when anything could not be written. */
HM_API HRESULT hm_trace_writer_close(hm_trace_writer *writer);

/* ---- Replay ------------------------------------------------------------------------------------------------- */
/* The built-in manager replays, reductions and explorations run on when given no host: deterministic placement,
 * protections as bookkeeping, and no clearing of pages the trace's calls never touch (docs/options.md). */
#define HM_REPLAY_BUILTIN_OPTIONS "deterministic=1,backend=sim,zero=heaps"

typedef struct hm_replay_options {
    /* Makes a fresh manager for each run. NULL: HostMemCreateBuiltinManager(HM_REPLAY_BUILTIN_OPTIONS). */
    hm_manager_factory_fn factory;
    void *factory_ctx;
    /* Recorded E_OUTOFMEMORY (and timeouts, CLR-not-available, ...) of allocating calls are reproduced by
     * failing those calls (as the fault layer would: the host does not see them) rather than compared. 0 turns
     * that off. */
    int no_inject;
    int compare_load;    /* compare GetMemoryLoad's figures too (machine-dependent; off by default) */
    int context;         /* trace lines shown before a divergence (default 4) */
    int emit_faults;     /* build fault_spec (below) */
    int any_failure;     /* HostMemReduce: keep any divergence, not only the original's signature */
} hm_replay_options;

typedef struct hm_replay_result {
    uint64_t calls;          /* trace lines replayed */
    uint64_t host_calls;     /* calls made to the host (what fault rules count) */
    uint64_t injected;       /* recorded failures reproduced by injection */
    uint64_t notifications_recorded, notifications_seen;
    uint64_t lost;           /* raw traces: calls lost in flight */
    uint64_t implied;        /* raw traces: releases lost in flight that a later call proved (not divergences) */
    uint64_t concurrent;     /* VirtualQuery calls whose answers were not compared (see hm_trace_call) */
    int diverged;            /* 1 when a result differed */
    uint64_t divergence_seq; /* the trace's sequence number of the first divergent call */
    int divergence_method;
    char field[32];          /* "result", "mem", "old", "base", "state", ... */
    char expected[80], actual[80]; /* expected: what the trace recorded; actual: what this host answered */
    char report[4096];       /* the divergence: context lines, the call, expected vs actual */
    char *fault_spec;        /* emit_faults: a spec failing the same calls in a rerun of the real program */
    char error[512];         /* bad input: FILE:LINE: field 'F': ... */
    /* The trace says the recorder stopped early (hm_trace_reader_incomplete): what matched is only the calls
     * recorded before, incomplete_calls of them, and the rest of the run was not checked. */
    int incomplete;
    uint64_t incomplete_calls;
    char incomplete_reason[128];
    /* The divergence's signature: what tells one bug from another, stable across inputs and placements:
     * "VirtualFree: hr S_OK recorded, E_INVALIDARG on this host" (an HRESULT), "VirtualQuery: field state" (any
     * other field). Empty when the replay did not diverge. */
    char signature[160];
    /* The trace cannot be reproduced on this host, through no fault of the host: a VirtualAlloc reserving at a
     * fixed address outside every region of the trace (written raw) succeeded when recorded, but on this host
     * that address is taken (its earlier reservations were placed elsewhere), or failed with
     * ERROR_INVALID_ADDRESS when recorded (something outside the trace held it) and is free here. The replay stops
     * at that call (unreproducible_seq); `unreproducible` says why. Not a divergence: diverged stays 0. */
    int unreproducible;
    uint64_t unreproducible_seq;
    char unreproducible_reason[320];
} hm_replay_result;

/* Replays the trace at path (streamed) or in memory. S_OK when it ran to the end or to a divergence (see
 * result->diverged); E_INVALIDARG for a malformed trace (result->error); the factory's HRESULT when no manager
 * could be made. Free fault_spec with HostMemReplayFree. */
HM_API HRESULT HostMemReplay(const char *path, const hm_replay_options *opts, hm_replay_result *result);
HM_API HRESULT HostMemReplayTrace(const hm_trace *trace, const hm_replay_options *opts, hm_replay_result *result);
HM_API void HostMemReplayFree(hm_replay_result *result);

/* ---- Reduction ---------------------------------------------------------------------------------------------- */
typedef struct hm_reduce_stats {
    size_t original_calls, reduced_calls;
    uint64_t replays;        /* replays made to test candidates */
    char failure[256];       /* the failure kept: "VirtualAlloc result: expected S_OK, got E_OUTOFMEMORY" */
} hm_reduce_stats;

/* Shrinks trace to a 1-minimal subset (ddmin over calls) that replays with the same failure: a first divergence
 * with the original's signature (any divergence with opts->any_failure), or, for a trace that replays cleanly
 * but recorded a failure replay injects (an OOM: "oom-reproduced"; E_FAIL or a HOST_E_*: "failure-reproduced"),
 * that call still failing: the host itself reaching it with injection off when it does, else injected. A recorded
 * E_INVALIDARG or other refusal is never such a failure (replay asks the host for it). Dropping a call drops every
 * call using a handle it created. *reduced keeps trace's env. E_INVALIDARG when the trace shows no failure. */
HM_API HRESULT HostMemReduce(const hm_trace *trace, const hm_replay_options *opts, hm_trace **reduced,
                             hm_reduce_stats *stats);

/* ---- Exploration ------------------------------------------------------------------------------------------- *
 * A scenario (faults.h) that replays a trace without comparing: ctx is a `const hm_trace *` (hm_trace_load).
 * Calls whose handles failed to appear are skipped; at the end every heap block, heap, reservation and ledger
 * range the replay still holds is released. Returns S_OK. */
HM_API HRESULT hm_trace_scenario(IHostMemoryManager *manager, void *ctx);

#ifdef __cplusplus
}
#endif
#endif /* HOSTMEM_TRACE_H */

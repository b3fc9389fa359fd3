/* The fault layer's internal header, the one every .c file of faults/ includes: fault rules and their text form
 * (the grammar is in include/hostmem/faults.h and docs/faults.md), what faults.c gives explore.c, and the services
 * of src/ the layer uses. */
#ifndef HOSTMEM_FAULTS_INTERNAL_H
#define HOSTMEM_FAULTS_INTERNAL_H

#include <hostmem/hostmem.h>

#include "com.h"
#include "error.h"
#include "fork.h"
#include "manager.h"
#include "size_parse.h"

#include <stdbool.h>
#include <stdint.h>

enum { FAULT_OP_RESERVE = 1, FAULT_OP_COMMIT = 2, FAULT_OP_RESET = 4 };

typedef struct fault_rule {
    /* What it matches. */
    uint32_t methods;            /* bit per hm_method */
    bool pressure;               /* a 'pressure' rule: changes the load instead of failing calls */
    uint32_t levels;             /* bit per EMemoryCriticalLevel; 0: any */
    uint32_t ops;                /* FAULT_OP_* for VirtualAlloc; 0: any */
    bool has_size, has_addr;
    uint64_t size_min, size_max, addr_min, addr_max;
    /* When it fires. */
    uint64_t nth, every, call;   /* 0: not given */
    bool has_after, has_after_bytes, has_times, has_probability;
    uint64_t after, after_bytes, times;
    double probability;
    uint64_t seed;
    HRESULT result;
    /* Pressure. */
    int load;                    /* -1: not given */
    bool has_available;
    uint64_t available;
    EMemoryAvailable notify;     /* 0: none */
    /* Counters (the wrapper's, under its lock). */
    uint64_t matched, bytes_matched, fired, rng;
    bool pressure_active;
} fault_rule;

/* Parses spec into *rules (malloc'd; *count entries). NULL or "" gives no rules. On error returns E_INVALIDARG with
 * a message in err: "fault spec: column 14: unknown key 'lvl' (expected ...)". */
HRESULT hm__fault_spec_parse(const char *spec, fault_rule **rules, size_t *count, char *err, size_t errlen);

/* A spec that selects exactly this rule's matching calls (its target and filters, without triggers), for logs. */
void hm__fault_rule_filters(const fault_rule *r, char *out, size_t outlen);

/* For exploration (faults/explore.c): how many calls rule `rule` of the fault layer `outer` matched (faults.c). */
uint64_t hm__faults_rule_matched(IHostMemoryManager *outer, size_t rule);

/* Called at every injected fault (faults.c): it exists only as a breakpoint target, so it is never inlined. */
__attribute__((noinline)) void hm__fault_hit(const hm_fault_event *event);

#endif

/* The commit budget and the critical-level policy (see budget.h). */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Windows' C runtime has no O_CLOEXEC (nor /proc: the cgroup lookup below finds no limit there). */
#ifndef O_CLOEXEC
#define O_CLOEXEC 0
#endif

/* Reads a small file into buf (NUL-terminated); false when it cannot. */
static bool read_small_file(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n;
    do
        n = read(fd, buf, size - 1);
    while (n < 0 && errno == EINTR);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    return true;
}

/* A cgroup limit file: a number of bytes, or 0 for "no limit" ("max", unreadable, garbage, or v1's way of saying
 * unlimited: a huge page-rounded LONG_MAX). */
static uint64_t read_limit_file(const char *path)
{
    char text[64];
    if (!read_small_file(path, text, sizeof text) || strncmp(text, "max", 3) == 0)
        return 0;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (end == text || errno || (*end != '\0' && *end != '\n') || v >= (1ull << 60))
        return 0;
    return v;
}

/* The tightest limit file named `file` from <base><rel> up to <base>: a parent's limit binds its children too. */
static uint64_t tightest_up_to_root(const char *base, const char *rel, const char *file)
{
    char dir[4096], path[4200];
    if (snprintf(dir, sizeof dir, "%s", rel) >= (int)sizeof dir)
        return 0;
    uint64_t best = 0;
    for (;;) {
        size_t len = strlen(dir);
        while (len > 0 && dir[len - 1] == '/')
            dir[--len] = '\0';
        if (snprintf(path, sizeof path, "%s%s/%s", base, dir, file) < (int)sizeof path) {
            uint64_t v = read_limit_file(path);
            if (v && (!best || v < best))
                best = v;
        }
        char *slash = strrchr(dir, '/');
        if (!slash)
            break;
        *slash = '\0';
    }
    return best;
}

uint64_t hm__budget_cgroup_limit(const char *proc_cgroup, const char *cgroup_root)
{
    char buf[8192], base[4096];
    if (!read_small_file(proc_cgroup, buf, sizeof buf))
        return 0;
    uint64_t v2 = 0, v1 = 0;
    for (char *line = buf, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        /* "hierarchy-id:controllers:path"; v2's is "0::path", v1's memory one "N:...memory...:path". */
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2 || c2[1] != '/')
            continue;
        *c1 = *c2 = '\0';
        const char *controllers = c1 + 1, *rel = c2 + 1;
        if (strcmp(line, "0") == 0 && *controllers == '\0') {
            v2 = tightest_up_to_root(cgroup_root, rel, "memory.max");
        } else {
            for (const char *c = controllers; c; c = strchr(c, ',') ? strchr(c, ',') + 1 : NULL)
                if (strncmp(c, "memory", 6) == 0 && (c[6] == ',' || c[6] == '\0')) {
                    /* In a container the path is the host's, and the container's own cgroup is mounted at the
                     * top: walking up finds it there. */
                    if (snprintf(base, sizeof base, "%s/memory", cgroup_root) < (int)sizeof base)
                        v1 = tightest_up_to_root(base, rel, "memory.limit_in_bytes");
                    break;
                }
        }
    }
    return v2 ? v2 : v1;
}

uint64_t hm__budget_system_limit(void)
{
    uint64_t physical = hm__os_physical_memory();
    /* A cgroup may allow more than the machine has; like the .NET runtime, take the smaller. */
    uint64_t cgroup = hm__budget_cgroup_limit("/proc/self/cgroup", "/sys/fs/cgroup");
    return cgroup && cgroup < physical ? cgroup : physical;
}

void hm__budget_init(hm_budget *b, uint64_t limit, uint64_t reserve_process, uint64_t reserve_appdomain)
{
    b->limit = limit ? limit : hm__budget_system_limit();
    b->reserve_process = reserve_process ? reserve_process : b->limit / 32;
    b->reserve_appdomain = reserve_appdomain ? reserve_appdomain : b->limit / 32;
    /* Keep the task ceiling at or above zero. */
    if (b->reserve_process > b->limit)
        b->reserve_process = b->limit;
    if (b->reserve_appdomain > b->limit - b->reserve_process)
        b->reserve_appdomain = b->limit - b->reserve_process;
    atomic_init(&b->charged, 0);
    atomic_init(&b->peak, 0);
}

uint64_t hm__budget_ceiling(const hm_budget *b, EMemoryCriticalLevel level)
{
    switch (level) {
    case eProcessCritical: return b->limit;
    case eAppDomainCritical: return b->limit - b->reserve_process;
    default: return b->limit - b->reserve_process - b->reserve_appdomain;
    }
}

bool hm__budget_charge(hm_budget *b, EMemoryCriticalLevel level, uint64_t bytes)
{
    uint64_t ceiling = hm__budget_ceiling(b, level);
    uint64_t now = atomic_load_explicit(&b->charged, memory_order_relaxed);
    do {
        if (bytes > ceiling || now > ceiling - bytes)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(&b->charged, &now, now + bytes, memory_order_relaxed,
                                                    memory_order_relaxed));
    uint64_t total = now + bytes, peak = atomic_load_explicit(&b->peak, memory_order_relaxed);
    while (total > peak &&
           !atomic_compare_exchange_weak_explicit(&b->peak, &peak, total, memory_order_relaxed, memory_order_relaxed))
        ;
    return true;
}

void hm__budget_charge_always(hm_budget *b, uint64_t bytes)
{
    uint64_t total = atomic_fetch_add_explicit(&b->charged, bytes, memory_order_relaxed) + bytes;
    uint64_t peak = atomic_load_explicit(&b->peak, memory_order_relaxed);
    while (total > peak &&
           !atomic_compare_exchange_weak_explicit(&b->peak, &peak, total, memory_order_relaxed, memory_order_relaxed))
        ;
}

void hm__budget_uncharge(hm_budget *b, uint64_t bytes)
{
    atomic_fetch_sub_explicit(&b->charged, bytes, memory_order_relaxed);
}

void hm__budget_load(const hm_budget *b, DWORD *load, SIZE_T *available)
{
    uint64_t charged = atomic_load_explicit(&((hm_budget *)b)->charged, memory_order_relaxed);
    if (charged >= b->limit) {
        *load = 100;
        *available = 0;
        return;
    }
    /* charged * 100 overflows past 160 PiB, so it is computed in 128 bits. charged < limit: at most 99. */
    __extension__ typedef unsigned __int128 u128;
    *load = (DWORD)((u128)charged * 100 / b->limit);
    *available = (SIZE_T)(b->limit - charged);
}

/* The commit budget and the critical-level policy (see budget.h). */
#include "budget.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Reads a small file into buf (NUL-terminated); false when it cannot. */
static bool read_small_file(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, size - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    return true;
}

/* A cgroup limit file: a number, or "max" / absurdly large for "no limit" (0). */
static uint64_t parse_limit(const char *text)
{
    if (strncmp(text, "max", 3) == 0)
        return 0;
    char *end;
    unsigned long long v = strtoull(text, &end, 10);
    if (end == text || v >= (1ull << 60))
        return 0;
    return v;
}

static uint64_t cgroup_limit(void)
{
    char buf[4096], path[4200];
    /* cgroup v2: "0::/some/path" in /proc/self/cgroup; the tightest memory.max on the way up to the root. */
    if (read_small_file("/proc/self/cgroup", buf, sizeof buf)) {
        char *line = strstr(buf, "0::");
        if (line) {
            char *rel = line + 3, *nl = strchr(rel, '\n');
            if (nl)
                *nl = '\0';
            uint64_t best = 0;
            for (;;) {
                char value[64];
                snprintf(path, sizeof path, "/sys/fs/cgroup%s/memory.max", strcmp(rel, "/") == 0 ? "" : rel);
                if (read_small_file(path, value, sizeof value)) {
                    uint64_t v = parse_limit(value);
                    if (v && (!best || v < best))
                        best = v;
                }
                char *slash = strrchr(rel, '/');
                if (!slash || slash == rel)
                    break;
                *slash = '\0';
            }
            if (best)
                return best;
        }
    }
    char value[64];
    if (read_small_file("/sys/fs/cgroup/memory/memory.limit_in_bytes", value, sizeof value))
        return parse_limit(value);
    return 0;
}

uint64_t hm_budget_system_limit(void)
{
    uint64_t limit = cgroup_limit();
    if (limit)
        return limit;
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : (uint64_t)1 << 32;
}

void hm_budget_init(hm_budget *b, uint64_t limit, uint64_t reserve_process, uint64_t reserve_appdomain)
{
    b->limit = limit ? limit : hm_budget_system_limit();
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

uint64_t hm_budget_ceiling(const hm_budget *b, EMemoryCriticalLevel level)
{
    switch (level) {
    case eProcessCritical: return b->limit;
    case eAppDomainCritical: return b->limit - b->reserve_process;
    default: return b->limit - b->reserve_process - b->reserve_appdomain;
    }
}

bool hm_budget_charge(hm_budget *b, EMemoryCriticalLevel level, uint64_t bytes)
{
    uint64_t ceiling = hm_budget_ceiling(b, level);
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

void hm_budget_charge_always(hm_budget *b, uint64_t bytes)
{
    uint64_t total = atomic_fetch_add_explicit(&b->charged, bytes, memory_order_relaxed) + bytes;
    uint64_t peak = atomic_load_explicit(&b->peak, memory_order_relaxed);
    while (total > peak &&
           !atomic_compare_exchange_weak_explicit(&b->peak, &peak, total, memory_order_relaxed, memory_order_relaxed))
        ;
}

void hm_budget_uncharge(hm_budget *b, uint64_t bytes)
{
    atomic_fetch_sub_explicit(&b->charged, bytes, memory_order_relaxed);
}

void hm_budget_load(const hm_budget *b, DWORD *load, SIZE_T *available)
{
    uint64_t charged = atomic_load_explicit(&((hm_budget *)b)->charged, memory_order_relaxed);
    if (charged >= b->limit) {
        *load = 100;
        *available = 0;
        return;
    }
    *load = (DWORD)(charged * 100 / b->limit);
    *available = (SIZE_T)(b->limit - charged);
}

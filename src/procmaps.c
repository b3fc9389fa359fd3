/* VirtualQuery from /proc/self/maps (see procmaps.h). */
#include "procmaps.h"

#include "os.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static bool parse_hex(const char **p, const char *end, uint64_t *out)
{
    uint64_t v = 0;
    const char *s = *p;
    int digits = 0;
    for (; s < end; s++, digits++) {
        int d;
        if (*s >= '0' && *s <= '9')
            d = *s - '0';
        else if (*s >= 'a' && *s <= 'f')
            d = *s - 'a' + 10;
        else if (*s >= 'A' && *s <= 'F')
            d = *s - 'A' + 10;
        else
            break;
        if (digits >= 16)
            return false;
        v = v * 16 + (uint64_t)d;
    }
    if (!digits)
        return false;
    *p = s;
    *out = v;
    return true;
}

static void skip_spaces(const char **p, const char *end)
{
    while (*p < end && **p == ' ')
        (*p)++;
}

/* A field of non-spaces. */
static bool skip_field(const char **p, const char *end)
{
    const char *s = *p;
    while (s < end && *s != ' ')
        s++;
    if (s == *p)
        return false;
    *p = s;
    return true;
}

bool hm_procmaps_parse_line(const char *line, size_t len, hm_map_entry *out)
{
    const char *p = line, *end = line + len;
    uint64_t start, stop, inode = 0;
    if (!parse_hex(&p, end, &start) || p >= end || *p++ != '-' || !parse_hex(&p, end, &stop) || stop <= start)
        return false;
    skip_spaces(&p, end);
    if (end - p < 4)
        return false;
    memcpy(out->perms, p, 4);
    out->perms[4] = '\0';
    for (int i = 0; i < 3; i++)
        if (out->perms[i] != "rwx"[i] && out->perms[i] != '-')
            return false;
    p += 4;
    skip_spaces(&p, end);
    if (!skip_field(&p, end)) /* offset */
        return false;
    skip_spaces(&p, end);
    if (!skip_field(&p, end)) /* device */
        return false;
    skip_spaces(&p, end);
    const char *inode_start = p;
    while (p < end && *p >= '0' && *p <= '9')
        inode = inode * 10 + (uint64_t)(*p++ - '0');
    if (p == inode_start)
        return false;
    skip_spaces(&p, end);
    out->start = (uintptr_t)start;
    out->end = (uintptr_t)stop;
    out->inode = inode;
    out->path = p;
    out->path_len = (size_t)(end - p);
    return true;
}

static DWORD protect_of(const hm_map_entry *e)
{
    bool r = e->perms[0] == 'r', w = e->perms[1] == 'w', x = e->perms[2] == 'x';
    if (x)
        return w ? PAGE_EXECUTE_READWRITE : r ? PAGE_EXECUTE_READ : PAGE_EXECUTE;
    if (w)
        return PAGE_READWRITE;
    return r ? PAGE_READONLY : PAGE_NOACCESS;
}

static bool is_file(const hm_map_entry *e) { return e->path_len > 0 && e->path[0] == '/'; }

static bool same_file(const hm_map_entry *a, const hm_map_entry *b)
{
    return is_file(a) && is_file(b) && a->inode == b->inode && a->path_len == b->path_len &&
           memcmp(a->path, b->path, a->path_len) == 0;
}

/* Calls fn for each well-formed line in order; stops when it returns false. */
typedef bool (*entry_fn)(const hm_map_entry *e, void *ctx);
static void for_each_entry(const char *text, size_t len, entry_fn fn, void *ctx)
{
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = nl ? nl : end;
        hm_map_entry e;
        if (hm_procmaps_parse_line(p, (size_t)(line_end - p), &e) && !fn(&e, ctx))
            return;
        p = nl ? nl + 1 : end;
    }
}

typedef struct query_state {
    uintptr_t address;
    bool found;
    hm_map_entry hit;          /* the mapping holding the address */
    uintptr_t next_start;      /* free: the first mapping above the address */
    bool image;                /* the hit's file has an executable mapping */
    bool have_first;
    hm_map_entry first;        /* the hit's file's first mapping */
    uintptr_t run_end;         /* end of the run of alike mappings from the hit */
} query_state;

static bool find_hit(const hm_map_entry *e, void *ctx)
{
    query_state *q = ctx;
    if (e->start <= q->address && q->address < e->end) {
        q->hit = *e;
        q->found = true;
        return false;
    }
    if (e->start > q->address) {
        q->next_start = e->start;
        return false;
    }
    return true;
}

static bool find_file_facts(const hm_map_entry *e, void *ctx)
{
    query_state *q = ctx;
    if (same_file(e, &q->hit)) {
        if (!q->have_first) {
            q->first = *e;
            q->have_first = true;
        }
        if (e->perms[2] == 'x')
            q->image = true;
    }
    return true;
}

static bool extend_run(const hm_map_entry *e, void *ctx)
{
    query_state *q = ctx;
    if (e->end <= q->hit.start)
        return true;
    if (e->start == q->hit.start)
        return true; /* the hit itself */
    if (e->start != q->run_end || strncmp(e->perms, q->hit.perms, 3) != 0 || e->inode != q->hit.inode ||
        e->path_len != q->hit.path_len || memcmp(e->path, q->hit.path, e->path_len) != 0)
        return false;
    q->run_end = e->end;
    return true;
}

HRESULT hm_procmaps_query_text(const char *text, size_t len, uintptr_t address, MEMORY_BASIC_INFORMATION *out)
{
    if (address >= HM_MAX_ADDRESS)
        return HM_E_INVALID_PARAMETER;
    uintptr_t page = address & ~(uintptr_t)(HM_PAGE_SIZE - 1);
    query_state q = {.address = page, .next_start = HM_MAX_ADDRESS};
    for_each_entry(text, len, find_hit, &q);
    memset(out, 0, sizeof *out);
    out->BaseAddress = (void *)page;
    if (!q.found) {
        out->State = MEM_FREE;
        out->Protect = PAGE_NOACCESS;
        out->RegionSize = q.next_start - page;
        return S_OK;
    }
    DWORD protect = protect_of(&q.hit);
    bool reserved = protect == PAGE_NOACCESS && !is_file(&q.hit);
    uintptr_t alloc_base = q.hit.start;
    DWORD alloc_protect = reserved ? PAGE_NOACCESS : protect;
    out->Type = MEM_PRIVATE;
    if (is_file(&q.hit)) {
        for_each_entry(text, len, find_file_facts, &q);
        out->Type = q.image ? MEM_IMAGE : MEM_MAPPED;
        if (q.have_first) {
            alloc_base = q.first.start;
            alloc_protect = protect_of(&q.first);
        }
    }
    q.run_end = q.hit.end;
    for_each_entry(text, len, extend_run, &q);
    out->AllocationBase = (void *)alloc_base;
    out->AllocationProtect = alloc_protect;
    out->State = reserved ? MEM_RESERVE : MEM_COMMIT;
    out->Protect = reserved ? 0 : protect;
    out->RegionSize = q.run_end - page;
    return S_OK;
}

HRESULT hm_procmaps_query(uintptr_t address, MEMORY_BASIC_INFORMATION *out)
{
    if (address >= HM_MAX_ADDRESS)
        return HM_E_INVALID_PARAMETER;
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return E_FAIL;
    size_t cap = 64 << 10, len = 0;
    char *buf = malloc(cap);
    HRESULT hr = S_OK;
    for (;;) {
        if (!buf) {
            hr = E_OUTOFMEMORY;
            break;
        }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0) {
            hr = E_FAIL;
            break;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len == cap) {
            char *grown = realloc(buf, cap * 2);
            if (!grown)
                free(buf);
            buf = grown;
            cap *= 2;
        }
    }
    close(fd);
    if (hr == S_OK)
        hr = hm_procmaps_query_text(buf, len, address, out);
    free(buf);
    return hr;
}

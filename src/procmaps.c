/* VirtualQuery from /proc/self/maps (see procmaps.h). */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* Big enough for any line the kernel writes (about 75 columns before the path, PATH_MAX of path, " (deleted)").
 * A longer line is parsed from its first MAPS_CHUNK bytes, which is all that matters except the path's tail. */
#define MAPS_CHUNK 8192

/* ---- Parsing one line ------------------------------------------------------------------------------------- */

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
            return false; /* more than 64 bits */
        v = v * 16 + (uint64_t)d;
    }
    if (!digits)
        return false;
    *p = s;
    *out = v;
    return true;
}

static bool parse_decimal(const char **p, const char *end, uint64_t *out)
{
    uint64_t v = 0;
    const char *s = *p;
    for (; s < end && *s >= '0' && *s <= '9'; s++) {
        uint64_t d = (uint64_t)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    if (s == *p)
        return false;
    *p = s;
    *out = v;
    return true;
}

/* Fields are separated by one or more spaces; false when there is none. */
static bool skip_spaces(const char **p, const char *end)
{
    const char *s = *p;
    while (s < end && *s == ' ')
        s++;
    if (s == *p)
        return false;
    *p = s;
    return true;
}

bool hm__procmaps_parse_line(const char *line, size_t len, hm_map_entry *out)
{
    const char *p = line, *end = line + len;
    uint64_t start, stop, offset, major, minor, inode;
    if (!parse_hex(&p, end, &start) || p >= end || *p++ != '-' || !parse_hex(&p, end, &stop) || stop <= start)
        return false;
    /* The kernel maps whole pages; anything else is not a maps line, and would break RegionSize arithmetic. */
    if ((start | stop) & (HM_PAGE_SIZE - 1) || stop > UINTPTR_MAX)
        return false;
    if (!skip_spaces(&p, end) || end - p < 4)
        return false;
    if ((p[0] != 'r' && p[0] != '-') || (p[1] != 'w' && p[1] != '-') || (p[2] != 'x' && p[2] != '-') ||
        (p[3] != 'p' && p[3] != 's'))
        return false;
    memcpy(out->perms, p, 4);
    out->perms[4] = '\0';
    p += 4;
    if (!skip_spaces(&p, end) || !parse_hex(&p, end, &offset))
        return false;
    if (!skip_spaces(&p, end) || !parse_hex(&p, end, &major) || p >= end || *p++ != ':' ||
        !parse_hex(&p, end, &minor))
        return false;
    if (!skip_spaces(&p, end) || !parse_decimal(&p, end, &inode))
        return false;
    if (p < end && !skip_spaces(&p, end))
        return false; /* "123abc" is no inode */
    out->start = (uintptr_t)start;
    out->end = (uintptr_t)stop;
    out->inode = inode;
    out->path = p;
    out->path_len = (size_t)(end - p);
    return true;
}

/* ---- Reading a map: from a text, or from a file in pieces ------------------------------------------------ */

typedef bool (*entry_fn)(const hm_map_entry *e, void *ctx); /* false: stop */

typedef struct maps_source {
    const char *text; /* when fd < 0 */
    size_t len;
    int fd;
} maps_source;

/* Calls fn for a line when it parses; false when fn asked to stop. */
static bool visit_line(const char *line, size_t len, entry_fn fn, void *ctx)
{
    hm_map_entry e;
    return !hm__procmaps_parse_line(line, len, &e) || fn(&e, ctx);
}

static void scan_text(const char *text, size_t len, entry_fn fn, void *ctx)
{
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = nl ? nl : end;
        if (!visit_line(p, (size_t)(line_end - p), fn, ctx))
            return;
        p = nl ? nl + 1 : end;
    }
}

/* Reads the file from its start through a stack buffer, carrying a partial line over to the next read.
 * Returns 0, or -1 when the file cannot be read. */
static int scan_fd(int fd, entry_fn fn, void *ctx)
{
    char buf[MAPS_CHUNK];
    size_t have = 0;
    bool skipping = false; /* dropping the tail of a line longer than the buffer */
    if (lseek(fd, 0, SEEK_SET) != 0)
        return -1;
    for (;;) {
        ssize_t n = read(fd, buf + have, sizeof buf - have);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        have += (size_t)n;
        size_t pos = 0;
        for (;;) {
            char *nl = memchr(buf + pos, '\n', have - pos);
            if (!nl)
                break;
            size_t line_len = (size_t)(nl - (buf + pos));
            if (!skipping && !visit_line(buf + pos, line_len, fn, ctx))
                return 0;
            skipping = false;
            pos += line_len + 1;
        }
        if (n == 0) { /* end of file: a last line without its newline */
            if (pos < have && !skipping)
                visit_line(buf + pos, have - pos, fn, ctx);
            return 0;
        }
        memmove(buf, buf + pos, have - pos);
        have -= pos;
        if (have == sizeof buf) {
            if (!skipping && !visit_line(buf, have, fn, ctx))
                return 0;
            skipping = true;
            have = 0;
        }
    }
}

static int scan(const maps_source *src, entry_fn fn, void *ctx)
{
    if (src->fd < 0) {
        scan_text(src->text, src->len, fn, ctx);
        return 0;
    }
    return scan_fd(src->fd, fn, ctx);
}

/* ---- What a mapping is ------------------------------------------------------------------------------------ */

/* Which file a mapping maps. The path is hashed rather than copied, so the answer needs no buffer of PATH_MAX
 * besides the read buffer; inode and length go with it. */
typedef struct file_id {
    uint64_t inode, hash;
    size_t path_len;
} file_id;

static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h;
}

/* "[heap]", "[stack]", "[vdso]", "[anon:name]" and anon_inode:... are not files; paths are absolute. */
static bool is_file(const hm_map_entry *e) { return e->path_len > 0 && e->path[0] == '/'; }

static file_id id_of(const hm_map_entry *e) { return (file_id){e->inode, fnv1a(e->path, e->path_len), e->path_len}; }

static bool same_id(file_id a, file_id b) { return a.inode == b.inode && a.hash == b.hash && a.path_len == b.path_len; }

static DWORD protect_of(const char *perms)
{
    bool r = perms[0] == 'r', w = perms[1] == 'w', x = perms[2] == 'x';
    if (x)
        return w ? PAGE_EXECUTE_READWRITE : r ? PAGE_EXECUTE_READ : PAGE_EXECUTE;
    if (w)
        return PAGE_READWRITE; /* -w- cannot be expressed on Windows; writable implies readable there */
    return r ? PAGE_READONLY : PAGE_NOACCESS;
}

/* ---- The query -------------------------------------------------------------------------------------------- */

typedef struct query_state {
    uintptr_t page;
    /* First pass: the mapping holding the page, or the next mapping above it. */
    bool found;
    uintptr_t hit_start, hit_end;
    char hit_perms[5];
    bool hit_file;
    file_id hit_id;
    uintptr_t next_start;
    uintptr_t file_run_end; /* end of the adjacent mappings of the hit's file with its perms */
    bool run_open;
    /* Second pass, for files: the file's first mapping, and whether any mapping of it is executable. */
    bool have_first;
    uintptr_t first_start;
    char first_perms[5];
    bool any_exec;
} query_state;

/* Relies on the kernel's order (ascending addresses) to stop early. */
static bool find_hit(const hm_map_entry *e, void *ctx)
{
    query_state *q = ctx;
    if (!q->found) {
        if (e->start <= q->page && q->page < e->end) {
            q->found = true;
            q->hit_start = e->start;
            q->hit_end = q->file_run_end = e->end;
            memcpy(q->hit_perms, e->perms, sizeof q->hit_perms);
            q->hit_file = is_file(e);
            q->hit_id = q->hit_file ? id_of(e) : (file_id){0, 0, 0};
            q->run_open = q->hit_file;
            return q->run_open;
        }
        if (e->start > q->page) {
            q->next_start = e->start;
            return false;
        }
        return true;
    }
    /* Mappings of one image differ only by protection, so alike neighbours belong to the same region. */
    if (e->start == q->file_run_end && is_file(e) && memcmp(e->perms, q->hit_perms, 4) == 0 &&
        same_id(id_of(e), q->hit_id)) {
        q->file_run_end = e->end;
        return true;
    }
    return false;
}

static bool find_file_facts(const hm_map_entry *e, void *ctx)
{
    query_state *q = ctx;
    if (!is_file(e) || !same_id(id_of(e), q->hit_id))
        return true;
    if (!q->have_first || e->start < q->first_start) {
        q->have_first = true;
        q->first_start = e->start;
        memcpy(q->first_perms, e->perms, sizeof q->first_perms);
    }
    if (e->perms[2] == 'x')
        q->any_exec = true;
    return true;
}

void hm__procmaps_free_info(uintptr_t page, uintptr_t end, MEMORY_BASIC_INFORMATION *out)
{
    memset(out, 0, sizeof *out);
    out->BaseAddress = (void *)page;
    out->State = MEM_FREE;
    out->Protect = PAGE_NOACCESS;
    out->RegionSize = end - page;
}

/* What VirtualQuery says of the page at `page` in an anonymous mapping [start, end) with unix protection `protect`
 * (as a PAGE_* value): PAGE_NOACCESS memory is reserved, the rest committed; the mapping is its own allocation. Both
 * the map parser and the ioctl answer this way. */
static void anonymous_info(uintptr_t page, uintptr_t start, uintptr_t end, DWORD protect,
                           MEMORY_BASIC_INFORMATION *out)
{
    bool reserved = protect == PAGE_NOACCESS;
    memset(out, 0, sizeof *out);
    out->BaseAddress = (void *)page;
    out->AllocationBase = (void *)start;
    out->AllocationProtect = protect;
    out->RegionSize = (end < HM_MAX_ADDRESS ? end : HM_MAX_ADDRESS) - page;
    out->State = reserved ? MEM_RESERVE : MEM_COMMIT;
    out->Protect = reserved ? 0 : protect;
    out->Type = MEM_PRIVATE;
}

static HRESULT query_source(const maps_source *src, const file_id *main_binary, uintptr_t address,
                            MEMORY_BASIC_INFORMATION *out)
{
    if (address >= HM_MAX_ADDRESS)
        return HM_E_INVALID_PARAMETER;
    query_state q = {.page = address & ~(uintptr_t)(HM_PAGE_SIZE - 1), .next_start = HM_MAX_ADDRESS};
    if (scan(src, find_hit, &q) != 0)
        return E_FAIL;
    if (!q.found) {
        /* [vsyscall] lies beyond user space: the top of user space ends the last gap. */
        hm__procmaps_free_info(q.page, q.next_start < HM_MAX_ADDRESS ? q.next_start : HM_MAX_ADDRESS, out);
        return S_OK;
    }
    DWORD protect = protect_of(q.hit_perms);
    if (!q.hit_file) {
        anonymous_info(q.page, q.hit_start, q.hit_end, protect, out);
        return S_OK;
    }
    /* A file is committed whatever its protection; an image (executable, or the main binary) runs over all its
     * mappings, from the first. */
    if (scan(src, find_file_facts, &q) != 0)
        return E_FAIL;
    bool image = q.any_exec || (main_binary && main_binary->hash == q.hit_id.hash &&
                                main_binary->path_len == q.hit_id.path_len);
    uintptr_t run_end = image ? q.file_run_end : q.hit_end;
    if (run_end > HM_MAX_ADDRESS)
        run_end = HM_MAX_ADDRESS;
    memset(out, 0, sizeof *out);
    out->BaseAddress = (void *)q.page;
    out->State = MEM_COMMIT;
    out->Protect = protect;
    out->Type = image ? MEM_IMAGE : MEM_MAPPED;
    if (image && q.have_first) {
        out->AllocationBase = (void *)q.first_start;
        out->AllocationProtect = protect_of(q.first_perms);
    } else {
        out->AllocationBase = (void *)q.hit_start;
        out->AllocationProtect = protect;
    }
    out->RegionSize = run_end - q.page;
    return S_OK;
}

HRESULT hm__procmaps_query_text(const char *text, size_t len, uintptr_t address, MEMORY_BASIC_INFORMATION *out)
{
    maps_source src = {.text = text, .len = len, .fd = -1};
    return query_source(&src, NULL, address, out);
}

HRESULT hm__procmaps_query_fd(int fd, uintptr_t address, MEMORY_BASIC_INFORMATION *out)
{
    if (fd < 0)
        return E_FAIL;
    maps_source src = {.fd = fd};
    return query_source(&src, NULL, address, out);
}

/* ---- One mapping from the kernel: the PROCMAP_QUERY ioctl (Linux 6.11) ---------------------------------- */

/* As in <linux/fs.h> from 6.11 on (Debian 12's headers predate it). */
#define HM_PROCMAP_QUERY _IOWR('f', 17, struct hm_procmap_query)
enum {
    HM_PROCMAP_VMA_READABLE = 0x01,
    HM_PROCMAP_VMA_WRITABLE = 0x02,
    HM_PROCMAP_VMA_EXECUTABLE = 0x04,
    HM_PROCMAP_COVERING_OR_NEXT_VMA = 0x10,
};
struct hm_procmap_query {
    uint64_t size;
    uint64_t query_flags;
    uint64_t query_addr;
    uint64_t vma_start, vma_end, vma_flags, vma_page_size, vma_offset, inode; /* out */
    uint32_t dev_major, dev_minor;                                             /* out */
    uint32_t vma_name_size, build_id_size;                                     /* in/out; 0: not wanted */
    uint64_t vma_name_addr, build_id_addr;
};

/* 1: the ioctl works; -1: this kernel has none (ENOTTY, EINVAL), so every query parses the map; 0: not known yet.
 * hm__procmaps_set_ioctl changes it (tests). */
static _Atomic int ioctl_state;

void hm__procmaps_set_ioctl(bool enabled) { atomic_store(&ioctl_state, enabled ? 0 : -1); }

HRESULT hm__procmaps_query_ioctl(int fd, uintptr_t address, MEMORY_BASIC_INFORMATION *out)
{
    if (address >= HM_MAX_ADDRESS)
        return HM_E_INVALID_PARAMETER;
    if (fd < 0 || atomic_load_explicit(&ioctl_state, memory_order_relaxed) < 0)
        return S_FALSE;
    uintptr_t page = address & ~(uintptr_t)(HM_PAGE_SIZE - 1);
    struct hm_procmap_query q;
    memset(&q, 0, sizeof q);
    q.size = sizeof q;
    q.query_flags = HM_PROCMAP_COVERING_OR_NEXT_VMA;
    q.query_addr = page;
    int rc;
    do
        rc = ioctl(fd, HM_PROCMAP_QUERY, &q);
    while (rc != 0 && errno == EINTR);
    uintptr_t next = HM_MAX_ADDRESS; /* the mapping above a gap */
    if (rc != 0) {
        if (errno == ENOTTY || errno == EINVAL) { /* no such ioctl (or not a maps file): parse instead */
            if (atomic_load_explicit(&ioctl_state, memory_order_relaxed) == 0)
                atomic_store(&ioctl_state, -1);
            return S_FALSE;
        }
        if (errno != ENOENT) /* ENOENT: nothing at or above the page */
            return S_FALSE;
    } else {
        atomic_store_explicit(&ioctl_state, 1, memory_order_relaxed);
        if (q.vma_start <= page) {
            /* A file (or a special inode) needs the whole map: is it an image, where is its first mapping. */
            if (q.inode || q.dev_major || q.dev_minor)
                return S_FALSE;
            char perms[5] = {q.vma_flags & HM_PROCMAP_VMA_READABLE ? 'r' : '-',
                             q.vma_flags & HM_PROCMAP_VMA_WRITABLE ? 'w' : '-',
                             q.vma_flags & HM_PROCMAP_VMA_EXECUTABLE ? 'x' : '-', 'p', '\0'};
            anonymous_info(page, (uintptr_t)q.vma_start, (uintptr_t)q.vma_end, protect_of(perms), out);
            return S_OK;
        }
        if (q.vma_start < HM_MAX_ADDRESS)
            next = (uintptr_t)q.vma_start;
    }
    hm__procmaps_free_info(page, next, out);
    return S_OK;
}

/* ---- This process -------------------------------------------------------------------------------------------- */

/* The main binary's path, as /proc/self/exe and the map both name it; found once. Matched by path alone: on
 * overlay file systems stat() and the map may disagree on the inode. */
static pthread_once_t main_binary_once = PTHREAD_ONCE_INIT;
static file_id main_binary_id;
static bool main_binary_known;

static void find_main_binary(void)
{
    char path[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", path, sizeof path);
    if (n <= 0 || (size_t)n >= sizeof path)
        return;
    main_binary_id = (file_id){0, fnv1a(path, (size_t)n), (size_t)n};
    main_binary_known = true;
}

/* The maps file the ioctl asks, opened once: an open and a close cost several times the query (path lookup, file
 * setup, three syscalls against one). A fork()ed child would share a descriptor that names its parent's map, so the
 * child forgets it (an atfork handler); the whole-map parser still opens its own, as it reads from the start. */
static _Atomic int shared_maps_fd = -1;
static pthread_once_t shared_maps_once = PTHREAD_ONCE_INIT;

static int open_maps(void)
{
    int fd;
    do
        fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    return fd;
}

static void forget_shared_maps(void)
{
    int fd = atomic_exchange(&shared_maps_fd, -1);
    if (fd >= 0)
        close(fd);
}

static void prepare_shared_maps(void) { pthread_atfork(NULL, NULL, forget_shared_maps); }

__attribute__((destructor)) static void close_shared_maps(void) { forget_shared_maps(); }

/* The shared descriptor (opened by the first caller; -1 when it cannot be). */
static int shared_maps(void)
{
    int fd = atomic_load_explicit(&shared_maps_fd, memory_order_acquire);
    if (fd >= 0)
        return fd;
    pthread_once(&shared_maps_once, prepare_shared_maps);
    int mine = open_maps(), none = -1;
    if (mine < 0 || atomic_compare_exchange_strong(&shared_maps_fd, &none, mine))
        return mine;
    close(mine); /* another thread's is in place */
    return none;
}

HRESULT hm__procmaps_query(uintptr_t address, MEMORY_BASIC_INFORMATION *out)
{
    if (address >= HM_MAX_ADDRESS)
        return HM_E_INVALID_PARAMETER;
    pthread_once(&main_binary_once, find_main_binary);
    /* One mapping from the kernel when it can say all (a gap, anonymous memory); else the whole map. */
    HRESULT hr = hm__procmaps_query_ioctl(shared_maps(), address, out);
    if (hr != S_FALSE)
        return hr;
    int fd = open_maps();
    if (fd < 0)
        return E_FAIL;
    maps_source src = {.fd = fd};
    hr = query_source(&src, main_binary_known ? &main_binary_id : NULL, address, out);
    close(fd);
    return hr;
}

/* The trace files' OS layer on Linux (trace_file.h). */
#include "trace_file.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct hm_trace_file {
    int fd;
    uint8_t *map;
    size_t mapped;
};

/* Opens (creates) the file and checks it; -1 with the error set. */
static int create_fd(const char *path, bool overwrite, size_t reserve)
{
    int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC | (overwrite ? 0 : O_EXCL), 0644);
    if (fd < 0) {
        if (errno == EEXIST)
            hm__trace_file_exists_error(path);
        else
            hm__trace_file_error("create", path, errno == ELOOP ? HM_TRACE_FILE_SYMLINK : strerror(errno));
        return -1;
    }
    struct stat st;
    const char *why = NULL;
    int err = 0;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        why = HM_TRACE_FILE_NOT_REGULAR;
    else if (flock(fd, LOCK_EX | LOCK_NB) != 0)
        why = errno == EWOULDBLOCK ? HM_TRACE_FILE_LOCKED : strerror(errno);
    else if (overwrite && ftruncate(fd, 0) != 0)
        why = strerror(errno);
    else if ((err = posix_fallocate(fd, 0, (off_t)reserve)) != 0)
        why = err == ENOSPC ? HM_TRACE_FILE_NO_SPACE : strerror(err);
    if (why) {
        hm__trace_file_error("record to", path, why);
        if (err) /* the file is empty now: no trace is better than a file that is not one */
            unlink(path);
        close(fd);
        return -1;
    }
    return fd;
}

hm_trace_file *hm__trace_file_create(const char *path, bool overwrite, size_t mapped)
{
    hm_trace_file *f = calloc(1, sizeof *f);
    if (!f) {
        hm__trace_file_out_of_memory();
        return NULL;
    }
    if ((f->fd = create_fd(path, overwrite, mapped)) < 0) {
        free(f);
        return NULL;
    }
    void *m = mmap(NULL, mapped, PROT_READ | PROT_WRITE, MAP_SHARED, f->fd, 0);
    if (m == MAP_FAILED) {
        hm__trace_file_error("map", path, strerror(errno));
        close(f->fd);
        free(f);
        return NULL;
    }
    f->map = m;
    f->mapped = mapped;
#ifdef MADV_POPULATE_WRITE
    (void)madvise(f->map, mapped, MADV_POPULATE_WRITE); /* fault the pages in once, now */
#endif
    return f;
}

uint8_t *hm__trace_file_map(hm_trace_file *f) { return f->map; }

int hm__trace_file_write(hm_trace_file *f, const void *buf, size_t len, uint64_t offset)
{
    const uint8_t *p = buf;
    while (len) {
        ssize_t n = pwrite(f->fd, p, len, (off_t)offset);
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0)
            return ENOSPC;
        if (n < 0)
            return errno;
        p += n;
        len -= (size_t)n;
        offset += (uint64_t)n;
    }
    return 0;
}

int hm__trace_file_read(hm_trace_file *f, void *buf, size_t len, uint64_t offset)
{
    uint8_t *p = buf;
    while (len) {
        ssize_t n = pread(f->fd, p, len, (off_t)offset);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n == 0 ? EIO : errno;
        p += n;
        len -= (size_t)n;
        offset += (uint64_t)n;
    }
    return 0;
}

void hm__trace_file_zero_mapped(hm_trace_file *f, uint64_t offset, size_t len)
{
#ifdef FALLOC_FL_PUNCH_HOLE
    if (fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)len) == 0)
        return;
#endif
    memset(f->map + offset, 0, len);
}

void hm__trace_file_close(hm_trace_file *f, int64_t size)
{
    if (size >= 0 && ftruncate(f->fd, (off_t)size) != 0)
        (void)0; /* the reader treats trailing zeros as the end anyway */
    munmap(f->map, f->mapped);
    close(f->fd); /* drops the lock too (in a forked child, the parent's descriptor still holds it) */
    free(f);
}

FILE *hm__trace_file_open_read(const char *path)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        hm__trace_file_error("open", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        hm__trace_file_error("open", path, strerror(errno));
        close(fd);
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        hm__trace_file_error("open", path,
                             S_ISDIR(st.st_mode)    ? HM_TRACE_FILE_DIRECTORY
                             : S_ISFIFO(st.st_mode) ? HM_TRACE_FILE_PIPE("FIFO")
                                                    : HM_TRACE_FILE_NOT_REGULAR);
        close(fd);
        return NULL;
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0)
        (void)fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    FILE *file = fdopen(fd, "rb");
    if (!file) {
        hm__trace_file_error("open", path, strerror(errno));
        close(fd);
    }
    return file;
}

unsigned long hm__trace_process_id(void) { return (unsigned long)getpid(); }

const char *hm__trace_os_name(void) { return "linux"; }

void hm__trace_utc_time(char *buf, size_t len)
{
    time_t t = time(NULL);
    struct tm tm;
    if (len)
        buf[0] = '\0';
    if (len && gmtime_r(&t, &tm))
        strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

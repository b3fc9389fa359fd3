/* The trace files' OS layer on Windows (trace_file.h). Paths are UTF-8, as everywhere in hostmem.
 *
 * Why the lock is one byte far past the end of the file: a Windows byte-range lock is mandatory (a locked range
 * cannot be read or written through another handle, even in the same process), so locking the records would stop
 * a reader of a live trace. A byte no one reads or writes gives the same exclusion between recorders. */
#include <windows.h> /* first: hostmem's headers then take its types rather than define their own */

#include "trace_file.h"

#include <errno.h>
#include <fcntl.h>
#include <io.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOCK_OFFSET_HIGH 0x40000000u /* byte 2^62 */

struct hm_trace_file {
    HANDLE handle;
    uint8_t *map;
    size_t mapped;
};

/* The system's text for a Win32 error code, without its line break. */
static const char *error_text(DWORD code, char *buf, size_t len)
{
    DWORD n = FormatMessageA(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS, NULL, code,
                             MAKELANGID(LANG_ENGLISH, SUBLANG_ENGLISH_US), buf, (DWORD)len, NULL);
    if (n == 0)
        n = FormatMessageA(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS, NULL, code, 0, buf, (DWORD)len,
                           NULL);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' || buf[n - 1] == '.'))
        n--;
    if (n == 0)
        snprintf(buf, len, "Windows error %lu", (unsigned long)code);
    else
        buf[n] = '\0';
    return buf;
}

/* The errno value a trace's header stores for a failed write (the same number as on Linux). */
static int errno_of(DWORD code)
{
    switch (code) {
    case ERROR_DISK_FULL:
    case ERROR_HANDLE_DISK_FULL:
        return ENOSPC;
    case ERROR_FILE_TOO_LARGE:
        return EFBIG;
    case ERROR_ACCESS_DENIED:
    case ERROR_LOCK_VIOLATION:
    case ERROR_SHARING_VIOLATION:
        return EACCES;
    case ERROR_NOT_ENOUGH_MEMORY:
    case ERROR_OUTOFMEMORY:
        return ENOMEM;
    default:
        return EIO;
    }
}

/* path as UTF-16 (malloc'd), or NULL with the error set. */
static wchar_t *wide_path(const char *path, const char *what)
{
    int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, path, -1, NULL, 0);
    wchar_t *w = n > 0 ? malloc((size_t)n * sizeof *w) : NULL;
    if (!w || MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, path, -1, w, n) != n) {
        hm__trace_file_error(what, path, n > 0 ? "out of memory" : "the name is not UTF-8");
        free(w);
        return NULL;
    }
    return w;
}

static BOOL set_end_of_file(HANDLE h, int64_t size)
{
    FILE_END_OF_FILE_INFO eof = {.EndOfFile.QuadPart = size};
    return SetFileInformationByHandle(h, FileEndOfFileInfo, &eof, sizeof eof);
}

/* Opens (creates) the file, checks, locks and reserves it; INVALID_HANDLE_VALUE with the error set. */
static HANDLE create_handle(const char *path, bool overwrite, size_t reserve)
{
    wchar_t *wpath = wide_path(path, "create");
    if (!wpath)
        return INVALID_HANDLE_VALUE;
    /* FILE_FLAG_OPEN_REPARSE_POINT: a symbolic link (or junction) is opened itself, never followed; it is then
     * refused below. CREATE_NEW fails on any existing name, a link included. */
    HANDLE h = CreateFileW(wpath, GENERIC_READ | GENERIC_WRITE, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
                           NULL, overwrite ? OPEN_ALWAYS : CREATE_NEW,
                           FILE_ATTRIBUTE_NORMAL | FILE_FLAG_OPEN_REPARSE_POINT, NULL);
    DWORD code = GetLastError();
    free(wpath);
    char text[256];
    if (h == INVALID_HANDLE_VALUE) {
        if (code == ERROR_FILE_EXISTS || code == ERROR_ALREADY_EXISTS)
            hm__trace_file_exists_error(path);
        else
            hm__trace_file_error("create", path, error_text(code, text, sizeof text));
        return INVALID_HANDLE_VALUE;
    }
    BY_HANDLE_FILE_INFORMATION info;
    const char *why = NULL;
    bool emptied = false;
    OVERLAPPED lock = {.OffsetHigh = LOCK_OFFSET_HIGH};
    if (!GetFileInformationByHandle(h, &info)) {
        why = error_text(GetLastError(), text, sizeof text);
    } else if (info.dwFileAttributes & FILE_ATTRIBUTE_REPARSE_POINT) {
        hm__trace_file_error("create", path, HM_TRACE_FILE_SYMLINK);
        CloseHandle(h);
        return INVALID_HANDLE_VALUE;
    } else if ((info.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY) || GetFileType(h) != FILE_TYPE_DISK) {
        why = HM_TRACE_FILE_NOT_REGULAR;
    } else if (!LockFileEx(h, LOCKFILE_EXCLUSIVE_LOCK | LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, &lock)) {
        code = GetLastError();
        why = code == ERROR_LOCK_VIOLATION || code == ERROR_IO_PENDING ? HM_TRACE_FILE_LOCKED
                                                                         : error_text(code, text, sizeof text);
    } else if (overwrite && !set_end_of_file(h, 0)) {
        why = error_text(GetLastError(), text, sizeof text);
    } else {
        /* Reserve the clusters, then make them the file's: a full disk fails here, not at a store into the mapping.
         * Wine (8.0) does not implement FileAllocationInfo: there the end of file alone is set (on Windows, moving
         * the end of a file that is not sparse allocates its clusters too). */
        FILE_ALLOCATION_INFO alloc = {.AllocationSize.QuadPart = (LONGLONG)reserve};
        BOOL ok = SetFileInformationByHandle(h, FileAllocationInfo, &alloc, sizeof alloc);
        if (!ok && GetLastError() == ERROR_CALL_NOT_IMPLEMENTED)
            ok = TRUE;
        if (!ok || !set_end_of_file(h, (int64_t)reserve)) {
            code = GetLastError();
            emptied = true;
            why = errno_of(code) == ENOSPC ? HM_TRACE_FILE_NO_SPACE : error_text(code, text, sizeof text);
        }
    }
    if (why) {
        hm__trace_file_error("record to", path, why);
        if (emptied) { /* the file is empty now: no trace is better than a file that is not one */
            FILE_DISPOSITION_INFO gone = {.DeleteFile = TRUE};
            (void)SetFileInformationByHandle(h, FileDispositionInfo, &gone, sizeof gone);
        }
        CloseHandle(h); /* drops the lock too */
        return INVALID_HANDLE_VALUE;
    }
    return h;
}

hm_trace_file *hm__trace_file_create(const char *path, bool overwrite, size_t mapped)
{
    hm_trace_file *f = calloc(1, sizeof *f);
    if (!f) {
        hm__trace_file_out_of_memory();
        return NULL;
    }
    if ((f->handle = create_handle(path, overwrite, mapped)) == INVALID_HANDLE_VALUE) {
        free(f);
        return NULL;
    }
    /* The view keeps the mapping object alive: its handle is not needed after. */
    uint64_t size = mapped;
    HANDLE mapping = CreateFileMappingW(f->handle, NULL, PAGE_READWRITE, (DWORD)(size >> 32), (DWORD)size, NULL);
    void *view = mapping ? MapViewOfFile(mapping, FILE_MAP_READ | FILE_MAP_WRITE, 0, 0, mapped) : NULL;
    DWORD code = GetLastError();
    if (mapping)
        CloseHandle(mapping);
    if (!view) {
        char text[256];
        hm__trace_file_error("map", path, error_text(code, text, sizeof text));
        CloseHandle(f->handle);
        free(f);
        return NULL;
    }
    f->map = view;
    f->mapped = mapped;
    return f;
}

uint8_t *hm__trace_file_map(hm_trace_file *f) { return f->map; }

int hm__trace_file_write(hm_trace_file *f, const void *buf, size_t len, uint64_t offset)
{
    const uint8_t *p = buf;
    while (len) {
        OVERLAPPED at = {.Offset = (DWORD)offset, .OffsetHigh = (DWORD)(offset >> 32)};
        DWORD chunk = len > 0x40000000u ? 0x40000000u : (DWORD)len, n = 0;
        if (!WriteFile(f->handle, p, chunk, &n, &at))
            return errno_of(GetLastError());
        if (n == 0)
            return ENOSPC;
        p += n;
        len -= n;
        offset += n;
    }
    return 0;
}

int hm__trace_file_read(hm_trace_file *f, void *buf, size_t len, uint64_t offset)
{
    uint8_t *p = buf;
    while (len) {
        OVERLAPPED at = {.Offset = (DWORD)offset, .OffsetHigh = (DWORD)(offset >> 32)};
        DWORD chunk = len > 0x40000000u ? 0x40000000u : (DWORD)len, n = 0;
        if (!ReadFile(f->handle, p, chunk, &n, &at))
            return errno_of(GetLastError());
        if (n == 0)
            return EIO; /* past the end */
        p += n;
        len -= n;
        offset += n;
    }
    return 0;
}

void hm__trace_file_zero_mapped(hm_trace_file *f, uint64_t offset, size_t len)
{
    /* Punching a hole needs a sparse file (FSCTL_SET_ZERO_DATA); the ring is 1 MiB: zeros, once, at the close. */
    memset(f->map + offset, 0, len);
}

void hm__trace_file_close(hm_trace_file *f, int64_t size)
{
    UnmapViewOfFile(f->map); /* first: a file with a mapped view cannot be made shorter */
    if (size >= 0)
        (void)set_end_of_file(f->handle, size); /* the reader treats trailing zeros as the end anyway */
    OVERLAPPED lock = {.OffsetHigh = LOCK_OFFSET_HIGH};
    (void)UnlockFileEx(f->handle, 0, 1, 0, &lock);
    CloseHandle(f->handle);
    free(f);
}

FILE *hm__trace_file_open_read(const char *path)
{
    wchar_t *wpath = wide_path(path, "open");
    if (!wpath)
        return NULL;
    /* Shared for writing and deleting: a recorder may still be writing the trace. FILE_FLAG_BACKUP_SEMANTICS opens a
     * directory too, so that the error can say it is one. */
    HANDLE h = CreateFileW(wpath, GENERIC_READ, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, NULL,
                           OPEN_EXISTING, FILE_FLAG_BACKUP_SEMANTICS, NULL);
    DWORD code = GetLastError();
    free(wpath);
    char text[256];
    if (h == INVALID_HANDLE_VALUE) {
        hm__trace_file_error("open", path, error_text(code, text, sizeof text));
        return NULL;
    }
    BY_HANDLE_FILE_INFORMATION info;
    const char *why = NULL;
    if (GetFileType(h) != FILE_TYPE_DISK)
        why = GetFileType(h) == FILE_TYPE_PIPE ? HM_TRACE_FILE_PIPE("pipe") : HM_TRACE_FILE_NOT_REGULAR;
    else if (!GetFileInformationByHandle(h, &info))
        why = error_text(GetLastError(), text, sizeof text);
    else if (info.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY)
        why = HM_TRACE_FILE_DIRECTORY;
    int fd = why ? -1 : _open_osfhandle((intptr_t)h, _O_RDONLY | _O_BINARY);
    if (fd < 0) {
        hm__trace_file_error("open", path, why ? why : strerror(errno));
        CloseHandle(h);
        return NULL;
    }
    FILE *file = _fdopen(fd, "rb");
    if (!file) {
        hm__trace_file_error("open", path, strerror(errno));
        _close(fd); /* closes the handle too */
    }
    return file;
}

unsigned long hm__trace_process_id(void) { return (unsigned long)GetCurrentProcessId(); }

const char *hm__trace_os_name(void) { return "windows"; }

void hm__trace_utc_time(char *buf, size_t len)
{
    SYSTEMTIME t;
    GetSystemTime(&t);
    if (len)
        snprintf(buf, len, "%04u-%02u-%02uT%02u:%02u:%02uZ", t.wYear, t.wMonth, t.wDay, t.wHour, t.wMinute, t.wSecond);
}

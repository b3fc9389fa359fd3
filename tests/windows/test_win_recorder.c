/* The recorder's trace files on Windows (harness/trace/trace_file_win32.c), through hostmem.dll: a trace is never
 * overwritten by accident, one recorder per file (LockFileEx), a closed trace is cut to its records (the view is
 * unmapped before the end of file moves: Windows refuses to shorten a file with a mapped view), a live trace is
 * readable while its recorder holds the lock (the lock is on a byte past the end: Windows locks are mandatory), and
 * the reader refuses a directory. Runs under Wine (ci/windows.sh); traces go to a fresh folder in %TEMP%.
 *
 * Wine vs Windows: Wine 8 lets a file with a mapped view be shortened and does not enforce a byte-range lock on
 * ReadFile, so under Wine closed_trace_is_cut_to_its_records and the live read of one_recorder_per_file pass even
 * with the end of file moved before the unmap or the lock on the records (checked: both mutations pass there); on
 * Windows they catch those two mistakes. Wine does refuse a second LockFileEx, and does not implement
 * FileAllocationInfo (the backend then sets the end of file alone: without that fallback every case fails here). */
#define WIN32_LEAN_AND_MEAN
#include <windows.h>

#include <hostmem/hostmem.h>
#include <hostmem/trace.h>

#include "runner.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HEADER_AND_RING (64 + (16384 * 64)) /* the raw encoding: docs/trace-format.md */

static char dir[MAX_PATH];

/* dir\name as a UTF-8 path (the temp folder's name is ASCII here). */
static const char *path_of(const char *name)
{
    static char path[2 * MAX_PATH];
    snprintf(path, sizeof path, "%s\\%s", dir, name);
    return path;
}

/* The size of the environment block after the raw header (its 32-bit size at byte 56: docs/trace-format.md). */
static long long env_block_size(const char *path)
{
    unsigned char header[64];
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    size_t got = fread(header, 1, sizeof header, f);
    fclose(f);
    if (got != sizeof header)
        return -1;
    return (long long)header[56] | (long long)header[57] << 8 | (long long)header[58] << 16 | (long long)header[59] << 24;
}

static long long file_size(const char *path)
{
    WIN32_FILE_ATTRIBUTE_DATA data;
    if (!GetFileAttributesExA(path, GetFileExInfoStandard, &data))
        return -1;
    return (long long)data.nFileSizeHigh << 32 | data.nFileSizeLow;
}

/* Calls through the recorder: a reserve, a query and a release each time. */
static int make_calls(IHostMemoryManager *m, int n)
{
    for (int i = 0; i < n; i++) {
        void *p = NULL;
        CHECK_HR(IHostMemoryManager_VirtualAlloc(m, NULL, 0x10000, MEM_RESERVE, PAGE_NOACCESS, eTaskCritical, &p), S_OK);
        MEMORY_BASIC_INFORMATION mbi;
        SIZE_T got = 0;
        CHECK_HR(IHostMemoryManager_VirtualQuery(m, p, &mbi, sizeof mbi, &got), S_OK);
        CHECK_HR(IHostMemoryManager_VirtualFree(m, p, 0, MEM_RELEASE), S_OK);
    }
    return 0;
}

/* The calls a trace holds, read with the reader of hostmem.dll; -1 when it cannot be read. */
static long count_calls(const char *path)
{
    hm_trace_reader *r;
    if (FAILED(hm_trace_open(path, &r))) {
        printf("  hm_trace_open(%s): %s\n", path, HostMemLastError());
        return -1;
    }
    hm_trace_call call;
    long n = 0;
    int got;
    while ((got = hm_trace_next(r, &call)) == 1)
        n++;
    hm_trace_close(r);
    return got == 0 ? n : -1;
}

static int wrap(IHostMemoryManager **out, const char *spec)
{
    IHostMemoryManager *inner;
    CHECK_HR(HostMemCreateBuiltinManager(NULL, &inner), S_OK);
    HRESULT hr = HostMemWrapRecorder(inner, spec, out);
    IHostMemoryManager_Release(inner);
    return hr;
}

static int closed_trace_is_cut_to_its_records(void)
{
    const char *path = path_of("cut.trace");
    IHostMemoryManager *m;
    CHECK_HR(wrap(&m, path), S_OK);
    CHECK(make_calls(m, 100) == 0);
    CHECK(HostMemRecorderCalls(m) == 300);
    IHostMemoryManager_Release(m);
    CHECK(file_size(path) == HEADER_AND_RING + env_block_size(path) + 300 * 64);
    CHECK(count_calls(path) == 300);
    return 0;
}

static int existing_trace_is_not_overwritten(void)
{
    const char *path = path_of("exists.trace");
    IHostMemoryManager *m, *again;
    CHECK_HR(wrap(&m, path), S_OK);
    CHECK(make_calls(m, 1) == 0);
    IHostMemoryManager_Release(m);
    CHECK_HR(wrap(&again, path), E_FAIL);
    CHECK(again == NULL);
    CHECK(strstr(HostMemLastError(), "exists: hostmem does not overwrite a trace") != NULL);
    CHECK(count_calls(path) == 3); /* untouched */
    char spec[2 * MAX_PATH];
    snprintf(spec, sizeof spec, "%s,overwrite", path);
    CHECK_HR(wrap(&again, spec), S_OK);
    IHostMemoryManager_Release(again);
    CHECK(count_calls(path) == 0); /* overwritten: empty */
    return 0;
}

static int one_recorder_per_file(void)
{
    const char *path = path_of("locked.trace");
    char spec[2 * MAX_PATH];
    snprintf(spec, sizeof spec, "%s,overwrite", path);
    IHostMemoryManager *m, *second;
    CHECK_HR(wrap(&m, path), S_OK);
    CHECK(make_calls(m, 10) == 0);
    CHECK_HR(wrap(&second, spec), E_FAIL);
    CHECK(strstr(HostMemLastError(), "another process is recording into it") != NULL);
    /* The live trace is readable meanwhile (its calls so far are in the ring or in their place). */
    CHECK(count_calls(path) == 30);
    CHECK(make_calls(m, 1) == 0);
    IHostMemoryManager_Release(m);
    CHECK(count_calls(path) == 33); /* the refused ',overwrite' emptied nothing */
    CHECK_HR(wrap(&second, spec), S_OK); /* free again once the first is closed */
    IHostMemoryManager_Release(second);
    return 0;
}

static int percent_p_is_the_process_id(void)
{
    IHostMemoryManager *m;
    CHECK_HR(wrap(&m, path_of("pid-%p-100%%.trace")), S_OK);
    IHostMemoryManager_Release(m);
    char name[64];
    snprintf(name, sizeof name, "pid-%lu-100%%.trace", (unsigned long)GetCurrentProcessId());
    CHECK(file_size(path_of(name)) >= 0);
    return 0;
}

/* Threads the host makes itself (CreateThread, not pthreads) record at once: every call is in the trace, in an order
 * the reader accepts (each region created before it is used), with each thread numbered. */
enum { THREADS = 4, THREAD_ROUNDS = 500 };
static DWORD WINAPI record_from_thread(LPVOID arg)
{
    return (DWORD)make_calls(arg, THREAD_ROUNDS);
}

static int threads_record_every_call(void)
{
    const char *path = path_of("threads.trace");
    IHostMemoryManager *m;
    CHECK_HR(wrap(&m, path), S_OK);
    HANDLE threads[THREADS];
    for (int i = 0; i < THREADS; i++)
        CHECK((threads[i] = CreateThread(NULL, 0, record_from_thread, m, 0, NULL)) != NULL);
    CHECK(WaitForMultipleObjects(THREADS, threads, TRUE, 60000) == WAIT_OBJECT_0);
    for (int i = 0; i < THREADS; i++) {
        DWORD failed = 1;
        CHECK(GetExitCodeThread(threads[i], &failed) && failed == 0);
        CloseHandle(threads[i]);
    }
    CHECK(HostMemRecorderCalls(m) == THREADS * THREAD_ROUNDS * 3);
    IHostMemoryManager_Release(m);
    CHECK(count_calls(path) == THREADS * THREAD_ROUNDS * 3);
    hm_trace_reader *r;
    CHECK_HR(hm_trace_open(path, &r), S_OK);
    hm_trace_call call;
    uint32_t max_thread = 0;
    while (hm_trace_next(r, &call) == 1)
        max_thread = call.thread > max_thread ? call.thread : max_thread;
    hm_trace_close(r);
    CHECK(max_thread == THREADS);
    return 0;
}

static int bad_paths_are_refused(void)
{
    IHostMemoryManager *m;
    /* A folder: refused to record (it exists) and to read. */
    CHECK_HR(wrap(&m, dir), E_FAIL);
    CHECK(strstr(HostMemLastError(), dir) != NULL);
    hm_trace_reader *r;
    CHECK_HR(hm_trace_open(dir, &r), E_FAIL);
    CHECK(strstr(HostMemLastError(), "it is a directory") != NULL);
    /* A folder that does not exist: the system's reason, naming the trace. */
    CHECK_HR(wrap(&m, path_of("no\\such\\folder.trace")), E_FAIL);
    CHECK(strstr(HostMemLastError(), "cannot create trace") != NULL);
    CHECK_HR(hm_trace_open(path_of("missing.trace"), &r), E_FAIL);
    CHECK(strstr(HostMemLastError(), "cannot open trace") != NULL);
    return 0;
}

int main(void)
{
    char temp[MAX_PATH];
    DWORD n = GetTempPathA(sizeof temp, temp);
    if (n == 0 || n >= sizeof temp)
        return 99;
    /* A new folder: Wine reuses process ids across runs in one prefix. */
    for (unsigned i = 0;; i++) {
        snprintf(dir, sizeof dir, "%shostmem-recorder-%lu-%u", temp, (unsigned long)GetCurrentProcessId(), i);
        if (CreateDirectoryA(dir, NULL))
            break;
        if (GetLastError() != ERROR_ALREADY_EXISTS || i == 1000)
            return 99;
    }
    static const win_case cases[] = {
        {"closed_trace_is_cut_to_its_records", closed_trace_is_cut_to_its_records},
        {"existing_trace_is_not_overwritten", existing_trace_is_not_overwritten},
        {"one_recorder_per_file", one_recorder_per_file},
        {"percent_p_is_the_process_id", percent_p_is_the_process_id},
        {"threads_record_every_call", threads_record_every_call},
        {"bad_paths_are_refused", bad_paths_are_refused},
    };
    return win_run_cases(cases, sizeof cases / sizeof *cases);
}

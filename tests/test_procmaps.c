/* VirtualQuery for memory the manager does not own (src/procmaps.c): the line parser, a table of queries over a
 * fixed maps text, the same answers when the text is read from a file in pieces, and the real process (its
 * stack, code, literals, a PROT_NONE mapping, a hole, file mappings, the top of user space). */
#include "procmaps.h"

#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cmocka.h>

#define PAGE ((size_t)4096)
#define TOP ((uintptr_t)0x7ffffffff000)

/* ---- The line parser ---------------------------------------------------------------------------------- */

typedef struct line_case {
    const char *line;
    bool ok;
    uintptr_t start, end;
    const char *perms, *path;
    uint64_t inode;
} line_case;

/* Well-formed lines give their fields (the path keeps its spaces); malformed ones are refused, never crash. */
static void test_parse_lines(void **state)
{
    static const line_case cases[] = {
        {"00400000-00452000 r-xp 00000000 08:02 173521 /usr/bin/dbus-daemon", true, 0x400000, 0x452000, "r-xp",
         "/usr/bin/dbus-daemon", 173521},
        {"7f0000000000-7f0000010000 ---p 00000000 00:00 0", true, 0x7f0000000000, 0x7f0000010000, "---p", "", 0},
        {"7f0000000000-7f0000010000 rw-p 00000000 00:00 0                          ", true, 0x7f0000000000,
         0x7f0000010000, "rw-p", "", 0},
        {"7ffd1000-7ffd3000 rw-p 00000000 00:00 0          [stack]", true, 0x7ffd1000, 0x7ffd3000, "rw-p", "[stack]",
         0},
        {"1000-2000 r--s 00001000 fd:01 42 /tmp/a file (deleted)", true, 0x1000, 0x2000, "r--s",
         "/tmp/a file (deleted)", 42},
        {"1000-2000 rwxp 00000000 00:00 18446744073709551615 x", true, 0x1000, 0x2000, "rwxp", "x", UINT64_MAX},
        {.line = ""},
        {.line = "zzzz-1000 r-xp 0 0 0"},
        {.line = "2000-1000 r-xp 00000000 00:00 0"},            /* end below start */
        {.line = "1000-1000 r-xp 00000000 00:00 0"},            /* empty */
        {.line = "1001-2000 r-xp 00000000 00:00 0"},            /* not page-aligned */
        {.line = "1000-2000 rqxp 00000000 00:00 0"},            /* bad perms */
        {.line = "1000-2000 r-xq 00000000 00:00 0"},            /* neither private nor shared */
        {.line = "1000-2000 r-x 00000000 00:00 0"},             /* perms too short */
        {.line = "1000-2000r-xp 00000000 00:00 0"},             /* no separator */
        {.line = "1000-2000 r-xp"},                             /* no offset */
        {.line = "1000-2000 r-xp 00000000 00:00"},              /* no inode */
        {.line = "1000-2000 r-xp 00000000 0000 0"},             /* bad device */
        {.line = "1000-2000 r-xp 00000000 00:00 x"},            /* inode not a number */
        {.line = "1000-2000 r-xp 00000000 00:00 12abc"},        /* inode glued to text */
        {.line = "1000-2000 r-xp 00000000 00:00 18446744073709551616"}, /* inode beyond 64 bits */
        {.line = "10000000000000000000-2 r-xp 00000000 00:00 0"},       /* address beyond 64 bits */
        {.line = "1000-"},
        {.line = "-2000 r-xp 00000000 00:00 0"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const line_case *c = &cases[i];
        hm_map_entry e;
        bool ok = hm__procmaps_parse_line(c->line, strlen(c->line), &e);
        if (ok != c->ok)
            fail_msg("line '%s' should %s", c->line, c->ok ? "parse" : "be refused");
        if (!ok)
            continue;
        assert_int_equal(e.start, c->start);
        assert_int_equal(e.end, c->end);
        assert_string_equal(e.perms, c->perms);
        assert_int_equal(e.inode, c->inode);
        assert_int_equal(e.path_len, strlen(c->path));
        assert_memory_equal(e.path, c->path, e.path_len);
    }
}

/* ---- Queries over a fixed map --------------------------------------------------------------------------- */

static const char maps[] =
    "555555554000-555555556000 r--p 00000000 08:01 1234   /usr/bin/prog\n"
    "555555556000-555555558000 r-xp 00002000 08:01 1234   /usr/bin/prog\n"
    "555555558000-555555559000 rw-p 00004000 08:01 1234   /usr/bin/prog\n"
    "555555559000-55555557a000 rw-p 00000000 00:00 0      [heap]\n"
    "garbage line that is not a mapping\n"
    "7f0000000000-7f0000010000 ---p 00000000 00:00 0 \n"
    "7f0000010000-7f0000020000 rw-p 00000000 00:00 0 \n"
    "7f0000020000-7f0000030000 rw-p 00000000 00:00 0 \n"
    "7f0000030000-7f0000031000 -w-p 00000000 00:00 0 \n"
    "7f0000031000-7f0000032000 --xp 00000000 00:00 0 \n"
    "7f0000032000-7f0000033000 rwxp 00000000 00:00 0      [anon:jit]\n"
    "7f1000000000-7f1000002000 r--s 00000000 08:01 99     /tmp/data.bin\n"
    "7f1000002000-7f1000003000 r--s 00002000 08:01 99     /tmp/data.bin\n"
    "7f2000000000-7f2000001000 r--p 00000000 08:01 77     /lib/libx.so\n"
    "7f2000001000-7f2000002000 r--p 00001000 08:01 77     /lib/libx.so\n"
    "7f2000002000-7f2000004000 r-xp 00002000 08:01 77     /lib/libx.so\n"
    "7f2000004000-7f2000006000 ---p 00004000 08:01 77     /lib/libx.so\n"
    "7f2000006000-7f2000007000 rw-p 00004000 08:01 77     /lib/libx.so\n"
    "7f2000007000-7f2000008000 rw-p 00000000 00:00 0 \n"
    "7ffff7fc1000-7ffff7fc3000 r-xp 00000000 00:00 0      [vdso]\n"
    "7ffffffde000-7ffffffff000 rw-p 00000000 00:00 0      [stack]\n"
    "ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0 [vsyscall]"; /* no final newline */

typedef struct query_case {
    const char *what;
    uintptr_t address;
    HRESULT hr;
    uintptr_t base, alloc_base;
    size_t region;
    DWORD state, protect, alloc_protect, type;
} query_case;

#define INVALID HRESULT_FROM_WIN32(ERROR_INVALID_PARAMETER)
static const query_case query_cases[] = {
    {"an image's code", 0x555555556123, S_OK, 0x555555556000, 0x555555554000, 0x2000, MEM_COMMIT, PAGE_EXECUTE_READ,
     PAGE_READONLY, MEM_IMAGE},
    {"an image's first page", 0x555555554000, S_OK, 0x555555554000, 0x555555554000, 0x2000, MEM_COMMIT,
     PAGE_READONLY, PAGE_READONLY, MEM_IMAGE},
    {"an image's data", 0x555555558000, S_OK, 0x555555558000, 0x555555554000, 0x1000, MEM_COMMIT, PAGE_READWRITE,
     PAGE_READONLY, MEM_IMAGE},
    {"the heap: private, and not merged with the image before it", 0x555555560000, S_OK, 0x555555560000,
     0x555555559000, 0x1a000, MEM_COMMIT, PAGE_READWRITE, PAGE_READWRITE, MEM_PRIVATE},
    {"a PROT_NONE anonymous mapping is reserved", 0x7f0000001000, S_OK, 0x7f0000001000, 0x7f0000000000, 0xf000,
     MEM_RESERVE, 0, PAGE_NOACCESS, MEM_PRIVATE},
    {"anonymous mappings are allocations of their own, so alike neighbours do not run together", 0x7f0000010000,
     S_OK, 0x7f0000010000, 0x7f0000010000, 0x10000, MEM_COMMIT, PAGE_READWRITE, PAGE_READWRITE, MEM_PRIVATE},
    {"the second of them", 0x7f0000028000, S_OK, 0x7f0000028000, 0x7f0000020000, 0x8000, MEM_COMMIT, PAGE_READWRITE,
     PAGE_READWRITE, MEM_PRIVATE},
    {"-w- is PAGE_READWRITE", 0x7f0000030000, S_OK, 0x7f0000030000, 0x7f0000030000, 0x1000, MEM_COMMIT,
     PAGE_READWRITE, PAGE_READWRITE, MEM_PRIVATE},
    {"--x is PAGE_EXECUTE", 0x7f0000031000, S_OK, 0x7f0000031000, 0x7f0000031000, 0x1000, MEM_COMMIT, PAGE_EXECUTE,
     PAGE_EXECUTE, MEM_PRIVATE},
    {"rwx is PAGE_EXECUTE_READWRITE, a named anonymous mapping private", 0x7f0000032fff, S_OK, 0x7f0000032000,
     0x7f0000032000, 0x1000, MEM_COMMIT, PAGE_EXECUTE_READWRITE, PAGE_EXECUTE_READWRITE, MEM_PRIVATE},
    {"a hole is free up to the next mapping", 0x7f0000034000, S_OK, 0x7f0000034000, 0, 0xffffcc000, MEM_FREE,
     PAGE_NOACCESS, 0, 0},
    {"a data file is mapped, not an image", 0x7f1000001000, S_OK, 0x7f1000001000, 0x7f1000000000, 0x1000,
     MEM_COMMIT, PAGE_READONLY, PAGE_READONLY, MEM_MAPPED},
    {"a data file's next mapping is its own allocation", 0x7f1000002000, S_OK, 0x7f1000002000, 0x7f1000002000,
     0x1000, MEM_COMMIT, PAGE_READONLY, PAGE_READONLY, MEM_MAPPED},
    {"a library is an image from its first mapping on, before its code appears", 0x7f2000000000, S_OK,
     0x7f2000000000, 0x7f2000000000, 0x2000, MEM_COMMIT, PAGE_READONLY, PAGE_READONLY, MEM_IMAGE},
    {"alike mappings of one image run together", 0x7f2000001000, S_OK, 0x7f2000001000, 0x7f2000000000, 0x1000,
     MEM_COMMIT, PAGE_READONLY, PAGE_READONLY, MEM_IMAGE},
    {"a library's ---p gap is committed and inaccessible, not reserved", 0x7f2000005000, S_OK, 0x7f2000005000,
     0x7f2000000000, 0x1000, MEM_COMMIT, PAGE_NOACCESS, PAGE_READONLY, MEM_IMAGE},
    {"its bss is private", 0x7f2000007000, S_OK, 0x7f2000007000, 0x7f2000007000, 0x1000, MEM_COMMIT,
     PAGE_READWRITE, PAGE_READWRITE, MEM_PRIVATE},
    {"[vdso] is private", 0x7ffff7fc1000, S_OK, 0x7ffff7fc1000, 0x7ffff7fc1000, 0x2000, MEM_COMMIT,
     PAGE_EXECUTE_READ, PAGE_EXECUTE_READ, MEM_PRIVATE},
    {"address 0 is free up to the first mapping", 0, S_OK, 0, 0, 0x555555554000, MEM_FREE, PAGE_NOACCESS, 0, 0},
    {"the stack's last page", 0x7fffffffefff, S_OK, 0x7fffffffe000, 0x7ffffffde000, 0x1000, MEM_COMMIT,
     PAGE_READWRITE, PAGE_READWRITE, MEM_PRIVATE},
    {"the top of user space", TOP, INVALID, 0, 0, 0, 0, 0, 0, 0},
    {"the vsyscall page is beyond user space", 0xffffffffff600000, INVALID, 0, 0, 0, 0, 0, 0, 0},
    {"the last address", UINTPTR_MAX, INVALID, 0, 0, 0, 0, 0, 0, 0},
};

static void check_query(const query_case *c, HRESULT hr, const MEMORY_BASIC_INFORMATION *mbi, const char *how)
{
    if (hr != c->hr)
        fail_msg("%s (%s): %s", c->what, how, hm_hr_name(hr));
    if (FAILED(hr))
        return;
    if ((uintptr_t)mbi->BaseAddress != c->base || (uintptr_t)mbi->AllocationBase != c->alloc_base ||
        mbi->RegionSize != c->region || mbi->State != c->state || mbi->Protect != c->protect ||
        mbi->AllocationProtect != c->alloc_protect || mbi->Type != c->type || mbi->PartitionId != 0)
        fail_msg("%s (%s): base %p alloc %p size %#zx state %#x protect %#x aprotect %#x type %#x", c->what, how,
                 mbi->BaseAddress, mbi->AllocationBase, (size_t)mbi->RegionSize, mbi->State, mbi->Protect,
                 mbi->AllocationProtect, mbi->Type);
}

static void test_query_table(void **state)
{
    for (size_t i = 0; i < sizeof query_cases / sizeof query_cases[0]; i++) {
        MEMORY_BASIC_INFORMATION mbi;
        memset(&mbi, 0xa5, sizeof mbi); /* every field must be written */
        check_query(&query_cases[i], hm__procmaps_query_text(maps, sizeof maps - 1, query_cases[i].address, &mbi),
                    &mbi, "text");
    }
}

/* Above the last mapping the gap ends at the top of user space, not at [vsyscall]; an empty map is all free. */
static void test_query_edges(void **state)
{
    static const char top[] = "7ffd00000000-7ffd00001000 rw-p 00000000 00:00 0 [stack]\n"
                              "ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0 [vsyscall]\n";
    MEMORY_BASIC_INFORMATION mbi;
    assert_int_equal(hm__procmaps_query_text(top, sizeof top - 1, 0x7ffd00001000, &mbi), S_OK);
    assert_int_equal(mbi.State, MEM_FREE);
    assert_int_equal(mbi.RegionSize, TOP - 0x7ffd00001000);
    assert_int_equal(hm__procmaps_query_text("", 0, 0x12345, &mbi), S_OK);
    assert_int_equal(mbi.State, MEM_FREE);
    assert_int_equal((uintptr_t)mbi.BaseAddress, 0x12000);
    assert_int_equal(mbi.RegionSize, TOP - 0x12000);
    static const char junk[] = "\n\n\xff\xfe-\n 1000-2000 rw-p 0 0:0 0\n1000-2000 rw-p 0 0:0 0 \n";
    assert_int_equal(hm__procmaps_query_text(junk, sizeof junk - 1, 0x1000, &mbi), S_OK);
    assert_int_equal(mbi.State, MEM_COMMIT); /* the one good line (a leading space makes a line malformed) */
    assert_int_equal(mbi.RegionSize, 0x1000);
}

/* Writes text to an unlinked temporary file and returns its descriptor. */
static int temp_file_with(const char *text, size_t len)
{
    char path[] = "/tmp/hostmem-maps-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    return fd;
}

/* Read from a file in pieces, the map gives the same answers, whatever line a read boundary splits. */
static void test_query_fd_pieces(void **state)
{
    /* Filler before the fixed map shifts it across read boundaries; the long paths make lines of many sizes. */
    size_t cap = 1 << 20, len = 0;
    char *text = malloc(cap);
    assert_non_null(text);
    for (int i = 0; i < 3000; i++)
        len += (size_t)snprintf(text + len, cap - len, "%012x-%012x r--p 00000000 08:01 %d /usr/lib/filler%0*d.so\n",
                                (unsigned)(0x10000 + i * 0x2000), (unsigned)(0x11000 + i * 0x2000), i, i % 97 + 1, i);
    memcpy(text + len, maps, sizeof maps - 1);
    len += sizeof maps - 1;
    int fd = temp_file_with(text, len);
    for (size_t i = 0; i < sizeof query_cases / sizeof query_cases[0]; i++) {
        query_case c = query_cases[i];
        if (c.address == 0) { /* the filler is below: free up to its first line now */
            c.region = 0x10000;
        }
        MEMORY_BASIC_INFORMATION mbi;
        check_query(&c, hm__procmaps_query_fd(fd, c.address, &mbi), &mbi, "fd");
    }
    /* A filler mapping: a file without code is mapped, and its neighbour hole is free. */
    MEMORY_BASIC_INFORMATION mbi;
    assert_int_equal(hm__procmaps_query_fd(fd, 0x10000 + 1234 * 0x2000, &mbi), S_OK);
    assert_int_equal(mbi.Type, MEM_MAPPED);
    assert_int_equal(mbi.RegionSize, 0x1000);
    assert_int_equal(hm__procmaps_query_fd(fd, 0x11000 + 1234 * 0x2000, &mbi), S_OK);
    assert_int_equal(mbi.State, MEM_FREE);
    assert_int_equal(mbi.RegionSize, 0x1000);
    close(fd);
    free(text);
    assert_int_equal(hm__procmaps_query_fd(-1, 0x1000, &mbi), E_FAIL);
}

/* A line longer than the read buffer is parsed from its head; the lines after it are not lost. */
static void test_query_fd_long_line(void **state)
{
    size_t path_len = 20000;
    char *text = malloc(path_len + 256);
    assert_non_null(text);
    int len = sprintf(text, "7f0000000000-7f0000004000 rw-s 00000000 00:05 7 /");
    memset(text + len, 'a', path_len);
    len += (int)path_len;
    len += sprintf(text + len, "\n7f0000004000-7f0000005000 r-xp 00000000 00:00 0 \n");
    int fd = temp_file_with(text, (size_t)len);
    MEMORY_BASIC_INFORMATION mbi;
    assert_int_equal(hm__procmaps_query_fd(fd, 0x7f0000001000, &mbi), S_OK);
    assert_int_equal(mbi.State, MEM_COMMIT);
    assert_int_equal(mbi.Type, MEM_MAPPED);
    assert_int_equal(mbi.Protect, PAGE_READWRITE);
    assert_int_equal((uintptr_t)mbi.AllocationBase, 0x7f0000000000);
    assert_int_equal(mbi.RegionSize, 0x3000);
    assert_int_equal(hm__procmaps_query_fd(fd, 0x7f0000004000, &mbi), S_OK);
    assert_int_equal(mbi.Protect, PAGE_EXECUTE_READ);
    assert_int_equal(mbi.Type, MEM_PRIVATE);
    close(fd);
    free(text);
}

/* ---- The real process ----------------------------------------------------------------------------------- */

static void expect_inside(const MEMORY_BASIC_INFORMATION *mbi, uintptr_t address)
{
    assert_true((uintptr_t)mbi->BaseAddress <= address);
    assert_true(address < (uintptr_t)mbi->BaseAddress + mbi->RegionSize);
    assert_true((uintptr_t)mbi->AllocationBase <= (uintptr_t)mbi->BaseAddress);
    assert_int_equal(mbi->RegionSize % PAGE, 0);
}

static void *query_own_stack(void *arg)
{
    int local = 1;
    MEMORY_BASIC_INFORMATION *mbi = arg;
    if (hm__procmaps_query((uintptr_t)&local, mbi) != S_OK)
        mbi->State = 0;
    return NULL;
}

/* The stack of this thread and of another: committed, read-write, private, covering the local. */
static void test_real_stacks(void **state)
{
    MEMORY_BASIC_INFORMATION mbi;
    int local = 0;
    assert_int_equal(hm__procmaps_query((uintptr_t)&local, &mbi), S_OK);
    assert_int_equal(mbi.State, MEM_COMMIT);
    assert_int_equal(mbi.Protect, PAGE_READWRITE);
    assert_int_equal(mbi.Type, MEM_PRIVATE);
    assert_int_equal(mbi.PartitionId, 0);
    expect_inside(&mbi, (uintptr_t)&local);

    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, query_own_stack, &mbi), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(mbi.State, MEM_COMMIT);
    assert_int_equal(mbi.Protect, PAGE_READWRITE);
    assert_int_equal(mbi.Type, MEM_PRIVATE);
}

/* Code is an executable image; a string literal is the same image, read-only, with the same allocation base. */
static void test_real_image(void **state)
{
    MEMORY_BASIC_INFORMATION code, literal;
    uintptr_t fn = (uintptr_t)&test_real_image;
    static const char *const text = "a string literal lives in the binary's read-only data";
    assert_int_equal(hm__procmaps_query(fn, &code), S_OK);
    assert_int_equal(code.State, MEM_COMMIT);
    assert_int_equal(code.Type, MEM_IMAGE);
    assert_int_equal(code.Protect, PAGE_EXECUTE_READ);
    expect_inside(&code, fn);
    assert_int_equal(hm__procmaps_query((uintptr_t)text, &literal), S_OK);
    assert_int_equal(literal.Type, MEM_IMAGE);
    assert_int_equal(literal.Protect, PAGE_READONLY);
    expect_inside(&literal, (uintptr_t)text);
    assert_ptr_equal(literal.AllocationBase, code.AllocationBase);
    /* The allocation base is the binary's first mapping: an image page itself. */
    MEMORY_BASIC_INFORMATION first;
    assert_int_equal(hm__procmaps_query((uintptr_t)code.AllocationBase, &first), S_OK);
    assert_int_equal(first.Type, MEM_IMAGE);
    assert_ptr_equal(first.AllocationBase, code.AllocationBase);
    assert_int_equal(first.Protect, code.AllocationProtect);
    /* libc's code is an image too. */
    assert_int_equal(hm__procmaps_query((uintptr_t)&memcpy, &code), S_OK);
    assert_int_equal(code.Type, MEM_IMAGE);
}

/* Five read-write pages, the middle three PROT_NONE, then the centre one unmapped: each piece reports itself. */
static void test_real_reserved_and_hole(void **state)
{
    char *p = mmap(NULL, 5 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(p != MAP_FAILED);
    assert_int_equal(mprotect(p + PAGE, 3 * PAGE, PROT_NONE), 0);
    MEMORY_BASIC_INFORMATION mbi;
    assert_int_equal(hm__procmaps_query((uintptr_t)p + PAGE + 5, &mbi), S_OK);
    assert_ptr_equal(mbi.BaseAddress, p + PAGE);
    assert_ptr_equal(mbi.AllocationBase, p + PAGE);
    assert_int_equal(mbi.State, MEM_RESERVE);
    assert_int_equal(mbi.Protect, 0);
    assert_int_equal(mbi.AllocationProtect, PAGE_NOACCESS);
    assert_int_equal(mbi.Type, MEM_PRIVATE);
    assert_int_equal(mbi.RegionSize, 3 * PAGE);

    assert_int_equal(munmap(p + 2 * PAGE, PAGE), 0);
    assert_int_equal(hm__procmaps_query((uintptr_t)p + 2 * PAGE + 100, &mbi), S_OK);
    assert_ptr_equal(mbi.BaseAddress, p + 2 * PAGE);
    assert_int_equal(mbi.State, MEM_FREE);
    assert_int_equal(mbi.Protect, PAGE_NOACCESS);
    assert_null(mbi.AllocationBase);
    assert_int_equal(mbi.AllocationProtect, 0);
    assert_int_equal(mbi.Type, 0);
    assert_int_equal(mbi.RegionSize, PAGE); /* exactly up to the next mapping */
    assert_int_equal(hm__procmaps_query((uintptr_t)p + PAGE, &mbi), S_OK);
    assert_int_equal(mbi.RegionSize, PAGE);
    assert_int_equal(hm__procmaps_query((uintptr_t)p, &mbi), S_OK);
    assert_int_equal(mbi.State, MEM_COMMIT);
    assert_int_equal(mbi.Protect, PAGE_READWRITE);
    assert_int_equal(mbi.RegionSize, PAGE); /* up to the PROT_NONE page */
    munmap(p, 2 * PAGE);
    munmap(p + 3 * PAGE, 2 * PAGE);
}

/* Data files are MEM_MAPPED with their own allocation base, shared or private, read-only or writable. */
static void test_real_file_mappings(void **state)
{
    char path[] = "/tmp/hostmem-procmaps-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 4 * PAGE), 0);
    static const struct {
        int prot, flags;
        DWORD protect;
    } cases[] = {{PROT_READ, MAP_SHARED, PAGE_READONLY},
                 {PROT_READ | PROT_WRITE, MAP_SHARED, PAGE_READWRITE},
                 {PROT_READ | PROT_WRITE, MAP_PRIVATE, PAGE_READWRITE}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *f = mmap(NULL, 4 * PAGE, cases[i].prot, cases[i].flags, fd, 0);
        assert_true(f != MAP_FAILED);
        MEMORY_BASIC_INFORMATION mbi;
        assert_int_equal(hm__procmaps_query((uintptr_t)f + PAGE + 100, &mbi), S_OK);
        assert_int_equal(mbi.State, MEM_COMMIT);
        assert_int_equal(mbi.Type, MEM_MAPPED);
        assert_int_equal(mbi.Protect, cases[i].protect);
        assert_int_equal(mbi.AllocationProtect, cases[i].protect);
        assert_ptr_equal(mbi.AllocationBase, f);
        assert_ptr_equal(mbi.BaseAddress, f + PAGE);
        assert_int_equal(mbi.RegionSize, 3 * PAGE);
        munmap(f, 4 * PAGE);
    }
    close(fd);
    unlink(path);
}

/* Beyond user space is an invalid parameter, as on Windows past lpMaximumApplicationAddress. */
static void test_real_top(void **state)
{
    MEMORY_BASIC_INFORMATION mbi;
    assert_int_equal(hm__procmaps_query(TOP, &mbi), INVALID);
    assert_int_equal(hm__procmaps_query(0xffffffffff600000, &mbi), INVALID);
    assert_int_equal(hm__procmaps_query(UINTPTR_MAX, &mbi), INVALID);
    assert_int_equal(hm__procmaps_query(TOP - 1, &mbi), S_OK);
    assert_int_equal((uintptr_t)mbi.BaseAddress, TOP - PAGE);
}

/* Walking the whole user space region by region tiles it: each region starts where the last ended, is page-sized,
 * and two free regions never follow each other. */
static void test_real_walk(void **state)
{
    uintptr_t at = 0;
    DWORD last_state = 0;
    int regions = 0;
    while (at < TOP && regions < 100000) {
        MEMORY_BASIC_INFORMATION mbi;
        assert_int_equal(hm__procmaps_query(at, &mbi), S_OK);
        assert_int_equal((uintptr_t)mbi.BaseAddress, at);
        assert_true(mbi.RegionSize > 0);
        assert_int_equal(mbi.RegionSize % PAGE, 0);
        assert_false(mbi.State == MEM_FREE && last_state == MEM_FREE);
        last_state = mbi.State;
        at += mbi.RegionSize;
        regions++;
    }
    assert_int_equal(at, TOP);
    assert_true(regions > 3);
}

/* ---- The PROCMAP_QUERY ioctl and its fallback -------------------------------------------------------------- */

/* Whether the kernel is 6.11 or later (PROCMAP_QUERY's first release). */
static bool kernel_has_procmap_query(void)
{
    struct utsname u;
    int major = 0, minor = 0;
    if (uname(&u) != 0 || sscanf(u.release, "%d.%d", &major, &minor) != 2)
        return false;
    return major > 6 || (major == 6 && minor >= 11);
}

static void assert_same_mbi(uintptr_t a, const MEMORY_BASIC_INFORMATION *x, const MEMORY_BASIC_INFORMATION *y)
{
    if (x->BaseAddress != y->BaseAddress || x->AllocationBase != y->AllocationBase ||
        x->AllocationProtect != y->AllocationProtect || x->RegionSize != y->RegionSize || x->State != y->State ||
        x->Protect != y->Protect || x->Type != y->Type)
        fail_msg("%#lx: the ioctl says {%p %p %#x %#zx %#x %#x %#x}, the parse {%p %p %#x %#zx %#x %#x %#x}",
                 (unsigned long)a, x->BaseAddress, x->AllocationBase, (unsigned)x->AllocationProtect,
                 (size_t)x->RegionSize, (unsigned)x->State, (unsigned)x->Protect, (unsigned)x->Type, y->BaseAddress,
                 y->AllocationBase, (unsigned)y->AllocationProtect, (size_t)y->RegionSize, (unsigned)y->State,
                 (unsigned)y->Protect, (unsigned)y->Type);
}

/* Where the ioctl answers (gaps, anonymous memory) it answers as the parse of the whole map does: at the start,
 * inside, on the last page and just past every mapping of this process, and around a PROT_NONE mapping, a hole and
 * the top of user space. On a kernel that has it (6.11+), it must answer for the gaps and the anonymous mappings. */
static void test_ioctl_matches_parse(void **state)
{
    (void)state;
    hm__procmaps_set_ioctl(true);
    char *area = mmap(NULL, 8 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(area != MAP_FAILED);
    assert_int_equal(mprotect(area + 2 * PAGE, 2 * PAGE, PROT_NONE), 0);
    assert_int_equal(munmap(area + 5 * PAGE, PAGE), 0);
    area[0] = 1;
    static uintptr_t addrs[8192];
    size_t n = 0;
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    static char text[1 << 20];
    size_t len = 0;
    ssize_t got;
    while (len < sizeof text && (got = read(fd, text + len, sizeof text - len)) > 0)
        len += (size_t)got;
    for (char *line = text; line < text + len && n + 5 < sizeof addrs / sizeof addrs[0];) {
        char *nl = memchr(line, '\n', (size_t)(text + len - line));
        hm_map_entry e;
        if (hm__procmaps_parse_line(line, nl ? (size_t)(nl - line) : (size_t)(text + len - line), &e) &&
            e.end <= TOP) {
            addrs[n++] = e.start;
            addrs[n++] = e.start + (e.end - e.start) / 2;
            addrs[n++] = e.end - PAGE;
            addrs[n++] = e.end;
            addrs[n++] = e.start - PAGE;
        }
        line = nl ? nl + 1 : text + len;
    }
    for (int i = 0; i < 8; i++)
        addrs[n++] = (uintptr_t)area + (size_t)i * PAGE + 17;
    addrs[n++] = 0;
    addrs[n++] = 0x10000;
    addrs[n++] = TOP - 1;
    addrs[n++] = (uintptr_t)&n; /* the stack */
    size_t answered = 0, gaps = 0, anonymous = 0;
    for (size_t i = 0; i < n; i++) {
        if (addrs[i] >= TOP)
            continue;
        MEMORY_BASIC_INFORMATION x, y;
        HRESULT hr = hm__procmaps_query_ioctl(fd, addrs[i], &x);
        assert_true(hr == S_OK || hr == S_FALSE);
        assert_int_equal(hm__procmaps_query_fd(fd, addrs[i], &y), S_OK);
        if (hr == S_FALSE) {
            if (kernel_has_procmap_query())
                assert_true(y.Type == MEM_IMAGE || y.Type == MEM_MAPPED); /* only files need the whole map */
            continue;
        }
        answered++;
        gaps += x.State == MEM_FREE;
        anonymous += x.Type == MEM_PRIVATE;
        assert_same_mbi(addrs[i], &x, &y);
    }
    close(fd);
    munmap(area, 8 * PAGE);
    if (kernel_has_procmap_query()) {
        assert_true(gaps > 3);
        assert_true(anonymous > 3);
    } else {
        print_message("(this kernel has no PROCMAP_QUERY: only the fallback was tested)\n");
    }
    (void)answered;
}

/* A kernel without the ioctl (ENOTTY; here: an fd that is not a maps file) gets S_FALSE, so the map is parsed; once
 * it is switched off, hm__procmaps_query parses and answers as before. */
static void test_ioctl_missing_falls_back(void **state)
{
    (void)state;
    char path[] = "/tmp/hostmem-procmaps-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    static const char one_line[] = "00010000-00020000 rw-p 00000000 00:00 0\n";
    assert_int_equal(write(fd, one_line, sizeof one_line - 1), (ssize_t)(sizeof one_line - 1));
    MEMORY_BASIC_INFORMATION mbi;
    hm__procmaps_set_ioctl(true);
    assert_int_equal(hm__procmaps_query_ioctl(fd, 0x10000, &mbi), S_FALSE); /* ENOTTY */
    assert_int_equal(hm__procmaps_query_fd(fd, 0x18000, &mbi), S_OK); /* the parse still answers */
    assert_int_equal(mbi.RegionSize, 0x8000);
    assert_int_equal(hm__procmaps_query_ioctl(-1, 0x10000, &mbi), S_FALSE);
    assert_int_equal(hm__procmaps_query_ioctl(fd, TOP, &mbi), INVALID);
    close(fd);
    /* Switched off: the same answers for the stack, a hole and an anonymous mapping, by parsing. */
    char *area = mmap(NULL, 4 * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(area != MAP_FAILED);
    uintptr_t addrs[] = {(uintptr_t)area, (uintptr_t)area + 3 * PAGE, (uintptr_t)area + 4 * PAGE,
                         (uintptr_t)&mbi, 0x10000, TOP - PAGE};
    for (size_t i = 0; i < sizeof addrs / sizeof addrs[0]; i++) {
        MEMORY_BASIC_INFORMATION x, y;
        hm__procmaps_set_ioctl(true);
        assert_int_equal(hm__procmaps_query(addrs[i], &x), S_OK);
        hm__procmaps_set_ioctl(false);
        assert_int_equal(hm__procmaps_query(addrs[i], &y), S_OK);
        assert_same_mbi(addrs[i], &x, &y);
    }
    hm__procmaps_set_ioctl(false);
    int off = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    assert_true(off >= 0);
    assert_int_equal(hm__procmaps_query_ioctl(off, (uintptr_t)area, &mbi), S_FALSE); /* not even tried */
    close(off);
    hm__procmaps_set_ioctl(true);
    munmap(area, 4 * PAGE);
}

/* Queries keep one descriptor of /proc/self/maps open; a fork()ed child must not answer from its parent's map
 * through it: a mapping only the child has is seen, and one only the parent has is free. */
static void test_child_sees_its_own_map(void **state)
{
    (void)state;
    MEMORY_BASIC_INFORMATION mbi;
    char *parents = mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(parents != MAP_FAILED);
    assert_int_equal(hm__procmaps_query((uintptr_t)parents, &mbi), S_OK); /* the descriptor is open now */
    assert_int_equal(mbi.State, MEM_COMMIT);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char *childs = mmap(NULL, 3 * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        munmap(parents, PAGE); /* after the child's own mapping, which so cannot cover it */
        int bad = 0;
        if (childs == MAP_FAILED || hm__procmaps_query((uintptr_t)childs, &mbi) != S_OK || mbi.State != MEM_RESERVE ||
            mbi.RegionSize != 3 * PAGE)
            bad |= 1;
        if (hm__procmaps_query((uintptr_t)parents, &mbi) != S_OK || mbi.State != MEM_FREE)
            bad |= 2;
        _exit(bad);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(hm__procmaps_query((uintptr_t)parents, &mbi), S_OK); /* the parent's answers are unchanged */
    assert_int_equal(mbi.State, MEM_COMMIT);
    munmap(parents, PAGE);
}

static int without_ioctl(void **state)
{
    (void)state;
    hm__procmaps_set_ioctl(false);
    return 0;
}

static int with_ioctl(void **state)
{
    (void)state;
    hm__procmaps_set_ioctl(true);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_lines),       cmocka_unit_test(test_query_table),
        cmocka_unit_test(test_query_edges),       cmocka_unit_test(test_query_fd_pieces),
        cmocka_unit_test(test_query_fd_long_line), cmocka_unit_test(test_real_stacks),
        cmocka_unit_test(test_real_image),        cmocka_unit_test(test_real_reserved_and_hole),
        cmocka_unit_test(test_real_file_mappings), cmocka_unit_test(test_real_top),
        cmocka_unit_test(test_real_walk),         cmocka_unit_test(test_ioctl_matches_parse),
        cmocka_unit_test(test_ioctl_missing_falls_back), cmocka_unit_test(test_child_sees_its_own_map),
    };
    /* The questions about the real process again, as on a kernel without PROCMAP_QUERY (the whole map parsed). */
    const struct CMUnitTest parsed[] = {
        cmocka_unit_test(test_real_stacks),        cmocka_unit_test(test_real_image),
        cmocka_unit_test(test_real_reserved_and_hole), cmocka_unit_test(test_real_file_mappings),
        cmocka_unit_test(test_real_top),           cmocka_unit_test(test_real_walk),
    };
    int failed = cmocka_run_group_tests_name("with PROCMAP_QUERY where the kernel has it", tests, with_ioctl, NULL);
    failed += cmocka_run_group_tests_name("without PROCMAP_QUERY", parsed, without_ioctl, with_ioctl);
    return failed;
}

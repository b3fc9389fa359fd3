/* VirtualQuery for memory the manager does not own (src/procmaps.c): a table over a fixed maps text, and the real
 * process (its stack, code, a PROT_NONE mapping, a hole, a file mapping). */
#include "procmaps.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

static const char maps[] =
    "555555554000-555555556000 r--p 00000000 08:01 1234   /usr/bin/prog\n"
    "555555556000-555555558000 r-xp 00002000 08:01 1234   /usr/bin/prog\n"
    "555555558000-555555559000 rw-p 00004000 08:01 1234   /usr/bin/prog\n"
    "555555559000-55555557a000 rw-p 00000000 00:00 0      [heap]\n"
    "garbage line that is not a mapping\n"
    "7f0000000000-7f0000010000 ---p 00000000 00:00 0 \n"
    "7f0000010000-7f0000020000 rw-p 00000000 00:00 0 \n"
    "7f0000020000-7f0000030000 rw-p 00000000 00:00 0 \n"
    "7f1000000000-7f1000002000 r--s 00000000 08:01 99     /tmp/data.bin\n"
    "7ffffffde000-7ffffffff000 rw-p 00000000 00:00 0      [stack]\n"
    "ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0 [vsyscall]";

typedef struct query_case {
    const char *what;
    uintptr_t address;
    HRESULT hr;
    uintptr_t base, alloc_base;
    size_t region;
    DWORD state, protect, alloc_protect, type;
} query_case;

static void test_query_table(void **state)
{
    static const query_case cases[] = {
        {"an image's code", 0x555555556123, S_OK, 0x555555556000, 0x555555554000, 0x2000, MEM_COMMIT,
         PAGE_EXECUTE_READ, PAGE_READONLY, MEM_IMAGE},
        {"an image's data", 0x555555558000, S_OK, 0x555555558000, 0x555555554000, 0x1000, MEM_COMMIT, PAGE_READWRITE,
         PAGE_READONLY, MEM_IMAGE},
        {"the heap: private, and not merged with the image before it", 0x555555560000, S_OK, 0x555555560000,
         0x555555559000, 0x1a000, MEM_COMMIT, PAGE_READWRITE, PAGE_READWRITE, MEM_PRIVATE},
        {"a PROT_NONE anonymous mapping is reserved", 0x7f0000001000, S_OK, 0x7f0000001000, 0x7f0000000000, 0xf000,
         MEM_RESERVE, 0, PAGE_NOACCESS, MEM_PRIVATE},
        {"adjacent alike anonymous mappings run together", 0x7f0000010000, S_OK, 0x7f0000010000, 0x7f0000010000,
         0x20000, MEM_COMMIT, PAGE_READWRITE, PAGE_READWRITE, MEM_PRIVATE},
        {"a data file is mapped, not an image", 0x7f1000001000, S_OK, 0x7f1000001000, 0x7f1000000000, 0x1000,
         MEM_COMMIT, PAGE_READONLY, PAGE_READONLY, MEM_MAPPED},
        {"a hole is free up to the next mapping", 0x7f0000031000, S_OK, 0x7f0000031000, 0, 0xffffcf000, MEM_FREE,
         PAGE_NOACCESS, 0, 0},
        {"address 0 is free up to the first mapping", 0, S_OK, 0, 0, 0x555555554000, MEM_FREE, PAGE_NOACCESS, 0, 0},
        {"the stack", 0x7fffffffe000, S_OK, 0x7fffffffe000, 0x7ffffffde000, 0x1000, MEM_COMMIT, PAGE_READWRITE,
         PAGE_READWRITE, MEM_PRIVATE},
        {"beyond user space", 0x7ffffffff000, HRESULT_FROM_WIN32(ERROR_INVALID_PARAMETER), 0, 0, 0, 0, 0, 0, 0},
        {"the vsyscall page is beyond user space", 0xffffffffff600000, HRESULT_FROM_WIN32(ERROR_INVALID_PARAMETER), 0,
         0, 0, 0, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const query_case *c = &cases[i];
        MEMORY_BASIC_INFORMATION mbi;
        HRESULT hr = hm_procmaps_query_text(maps, sizeof maps - 1, c->address, &mbi);
        if (hr != c->hr)
            fail_msg("%s: %s", c->what, hm_hr_name(hr));
        if (FAILED(hr))
            continue;
        if ((uintptr_t)mbi.BaseAddress != c->base || (uintptr_t)mbi.AllocationBase != c->alloc_base ||
            mbi.RegionSize != c->region || mbi.State != c->state || mbi.Protect != c->protect ||
            mbi.AllocationProtect != c->alloc_protect || mbi.Type != c->type)
            fail_msg("%s: base %p alloc %p size %#zx state %#x protect %#x aprotect %#x type %#x", c->what,
                     mbi.BaseAddress, mbi.AllocationBase, (size_t)mbi.RegionSize, mbi.State, mbi.Protect,
                     mbi.AllocationProtect, mbi.Type);
    }
}

typedef struct line_case {
    const char *line;
    bool ok;
} line_case;

/* Malformed lines are refused, never crash. */
static void test_parse_lines(void **state)
{
    static const line_case cases[] = {
        {"00400000-00452000 r-xp 00000000 08:02 173521 /usr/bin/dbus-daemon", true},
        {"7f0000000000-7f0000010000 ---p 00000000 00:00 0", true},
        {"", false},
        {"zzzz-1000 r-xp 0 0 0", false},
        {"2000-1000 r-xp 00000000 00:00 0", false},
        {"1000-2000 rqxp 00000000 00:00 0", false},
        {"1000-2000 r-xp", false},
        {"1000-2000 r-xp 00000000 00:00", false},
        {"1000-2000 r-xp 00000000 00:00 x", false},
        {"10000000000000000000-2 r-xp 00000000 00:00 0", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        hm_map_entry e;
        if (hm_procmaps_parse_line(cases[i].line, strlen(cases[i].line), &e) != cases[i].ok)
            fail_msg("line '%s' should %s", cases[i].line, cases[i].ok ? "parse" : "be refused");
    }
}

/* The real process: the stack, a function, a PROT_NONE mapping, a hole, a file mapping. */
static void test_real_process(void **state)
{
    MEMORY_BASIC_INFORMATION mbi;
    int local = 0;
    assert_int_equal(hm_procmaps_query((uintptr_t)&local, &mbi), S_OK);
    assert_int_equal(mbi.State, MEM_COMMIT);
    assert_int_equal(mbi.Protect, PAGE_READWRITE);
    assert_int_equal(mbi.Type, MEM_PRIVATE);
    assert_int_equal(hm_procmaps_query((uintptr_t)&test_real_process, &mbi), S_OK);
    assert_int_equal(mbi.Type, MEM_IMAGE);
    assert_int_equal(mbi.Protect, PAGE_EXECUTE_READ);

    char *p = mmap(NULL, 3 * 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(p != MAP_FAILED);
    assert_int_equal(hm_procmaps_query((uintptr_t)p, &mbi), S_OK);
    assert_int_equal(mbi.State, MEM_RESERVE);
    munmap(p + 4096, 4096);
    assert_int_equal(hm_procmaps_query((uintptr_t)p + 4096, &mbi), S_OK);
    assert_int_equal(mbi.State, MEM_FREE);
    assert_int_equal(mbi.RegionSize, 4096);
    munmap(p, 4096);
    munmap(p + 8192, 4096);

    char path[] = "/tmp/hostmem-procmaps-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 8192), 0);
    void *f = mmap(NULL, 8192, PROT_READ, MAP_SHARED, fd, 0);
    assert_true(f != MAP_FAILED);
    assert_int_equal(hm_procmaps_query((uintptr_t)f + 100, &mbi), S_OK);
    assert_int_equal(mbi.Type, MEM_MAPPED);
    assert_int_equal(mbi.Protect, PAGE_READONLY);
    assert_ptr_equal(mbi.AllocationBase, f);
    munmap(f, 8192);
    close(fd);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_query_table), cmocka_unit_test(test_parse_lines),
                                       cmocka_unit_test(test_real_process)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}

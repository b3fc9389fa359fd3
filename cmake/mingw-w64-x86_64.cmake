# Cross-compiling hostmem for 64-bit Windows with mingw-w64 (Debian: gcc-mingw-w64-x86-64-posix, the posix threads
# model, whose winpthreads gives pthread_* and clock_gettime):
#   cmake -S . -B build-win -DCMAKE_TOOLCHAIN_FILE=cmake/mingw-w64-x86_64.cmake && cmake --build build-win -j2
# Builds hostmem.dll, its import library libhostmem.dll.a, the static libhostmem.a and tests/windows/ (docs/windows.md).
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_SYSTEM_PROCESSOR x86_64)
set(HOSTMEM_MINGW_PREFIX x86_64-w64-mingw32 CACHE STRING "Prefix of the mingw-w64 tools")
# The posix-threads variant when both are installed (the default alternative may be win32 threads, without pthreads).
find_program(CMAKE_C_COMPILER NAMES ${HOSTMEM_MINGW_PREFIX}-gcc-posix ${HOSTMEM_MINGW_PREFIX}-gcc REQUIRED)
find_program(CMAKE_RC_COMPILER NAMES ${HOSTMEM_MINGW_PREFIX}-windres)
set(CMAKE_FIND_ROOT_PATH /usr/${HOSTMEM_MINGW_PREFIX})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

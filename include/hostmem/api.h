/* hostmem: HM_API marks what libhostmem exports (it is built with hidden visibility); every public header that
 * declares a function of the library includes this one. Define HM_API before including to change it.
 *
 * On Windows it is __declspec(dllimport) for a program that links hostmem.dll (through libhostmem.dll.a), and
 * empty for one that links the static libhostmem.a: such a program defines HOSTMEM_STATIC (the CMake target
 * hostmem::hostmem_static does). The library's own sources define HOSTMEM_BUILDING_LIBRARY (dllexport). */
#ifndef HOSTMEM_API_H
#define HOSTMEM_API_H

#ifndef HM_API
#if defined(_WIN32) && defined(HOSTMEM_BUILDING_LIBRARY)
#define HM_API __declspec(dllexport)
#elif defined(_WIN32) && defined(HOSTMEM_STATIC)
#define HM_API
#elif defined(_WIN32)
#define HM_API __declspec(dllimport)
#else
#define HM_API __attribute__((visibility("default")))
#endif
#endif

#endif /* HOSTMEM_API_H */

/* hostmem: HM_API marks what libhostmem exports (it is built with hidden visibility); every public header that
 * declares a function of the library includes this one. Define HM_API before including to change it. */
#ifndef HOSTMEM_API_H
#define HOSTMEM_API_H

#ifndef HM_API
#define HM_API __attribute__((visibility("default")))
#endif

#endif /* HOSTMEM_API_H */

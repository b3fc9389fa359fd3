/* The built-in manager's internal header: what the files of src/ share, in one place (mimalloc's internal.h
 * style). Every .c file of src/ includes this and nothing else of src/. Each module keeps its own header, which
 * says what it offers; the layers above include those module headers one by one (they see only the services they
 * use: the COM helpers, errors, fork safety, options, sizes, the clock), never this file's whole set.
 *
 * budget.h     the commit budget            heap.h       IHostMalloc heaps       os.h        the OS layer
 * clock.h      monotonic time               ledger.h     who owns which page     procmaps.h  /proc/self/maps
 * com.h        QueryInterface helpers       manager.h    the COM manager         size_parse.h sizes and counts
 * error.h      thread-local error text      notify.h     memory notifications    track.h     ASan/leak hooks
 * fork.h       fork safety                  options.h    HOSTMEM_* options       vm.h        the VM books
 *                                                                                vm_args.h   the VMs' argument checks */
#ifndef HOSTMEM_SRC_INTERNAL_H
#define HOSTMEM_SRC_INTERNAL_H

#include "budget.h"
#include "clock.h"
#include "com.h"
#include "error.h"
#include "fork.h"
#include "heap.h"
#include "ledger.h"
#include "manager.h"
#include "notify.h"
#include "options.h"
#include "os.h"
#include "procmaps.h"
#include "size_parse.h"
#include "track.h"
#include "vm.h"
#include "vm_args.h"

#endif

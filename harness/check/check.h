/* The check layer's internal header: what the files of harness/check/ share, and the services of the layers below
 * they use, in one place. Each module keeps its own header (what it offers the command, the tests and the fuzz
 * targets); a .c file of this layer includes this one.
 *
 * calls.h    the call-sequence driver (fuzz/ and the CLI)     model.h    its reference model of the contract
 * conform.h  the conformance suite                            plugin.h   the one host loader, hm__host_open
 * stress.h   the multithreaded stress run                     guard.h    the isolation layer before a host
 * pressure.h what conform, stress and the fuzzer share about pressure: calls back in from a callback, real refusals */
#ifndef HOSTMEM_HARNESS_CHECK_H
#define HOSTMEM_HARNESS_CHECK_H

#include "calls.h"
#include "conform.h"
#include "guard.h"
#include "model.h"
#include "pressure.h"
#include "plugin.h"
#include "stress.h"

#include "clock.h"
#include "com.h"
#include "counting_callback.h"
#include "manager.h"

#endif

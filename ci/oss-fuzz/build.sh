#!/bin/bash -eu
# OSS-Fuzz: every target, seed corpus, dictionary and options come from fuzz/build.sh
# (fuzz_fault_spec fuzz_trace_parser fuzz_calls fuzz_calls_faults).
"$SRC/hostmem/fuzz/build.sh"

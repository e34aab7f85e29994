#!/usr/bin/env bash
# RUSTC_WRAPPER of scripts/fuzz-smoke.sh: adds libFuzzer's coverage instrumentation (the flags
# `cargo fuzz build` passes to every crate) to the crates named in $FUZZ_INSTRUMENT only. The
# host's sandbox, store and HTTP stacks are linked into the targets but never run: built plainly
# they cost a fraction of the time. The list must name no crate that a build script or proc
# macro uses (those run inside cargo and rustc, where the coverage symbols do not exist: rustc
# then fails with "can't find crate for `<proc macro>`").
rustc=$1
shift
crate=
prev=
for arg in "$@"; do
  [[ $prev == --crate-name ]] && crate=$arg
  prev=$arg
done
if [[ -n $crate && " $FUZZ_INSTRUMENT " == *" $crate "* ]]; then
  exec "$rustc" "$@" \
    -Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    -Cllvm-args=-simplifycfg-branch-fold-threshold=0 \
    -Cllvm-args=-sanitizer-coverage-stack-depth \
    -Cdebug-assertions
fi
exec "$rustc" "$@"

#!/usr/bin/env bash
# Fuzz smoke run (CI): builds the libFuzzer targets of fuzz/ and runs each for a short fixed time,
# two at a time; fails on any crash, panic, timeout or out-of-memory, printing the input.
#
#   scripts/fuzz-smoke.sh                 every target, 15 s each
#   scripts/fuzz-smoke.sh 300 rule_spec   one target, 5 minutes
#
# No cargo-fuzz and no nightly: `cargo build` with libfuzzer-sys, and the coverage flags of
# `cargo fuzz build` added by fuzz/rustc-sancov.sh to the crates under test only (the host's
# sandbox, store and HTTP stacks are linked, never run, and built plainly). The build, the
# corpora (which grow from run to run), logs and any crash inputs stay in target/fuzz/.
# Environment: FUZZ_JOBS (targets run at once, default 2), FUZZ_TIMEOUT (seconds one input may
# take before it counts as a hang, default 10), FUZZ_TARGET_DIR (instead of target/fuzz; CI keeps
# it outside the clone, so a later run on the same machine reuses the build and the corpora).
set -euo pipefail
cd "$(dirname "$0")/.."

ALL_TARGETS=(rule_spec template timer_params manifest field_path allowed_hosts)
seconds=${1:-15}
shift || true
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=("${ALL_TARGETS[@]}")
jobs=${FUZZ_JOBS:-2}
timeout=${FUZZ_TIMEOUT:-10}

# FUZZ_OPT=1: every dependency optimised too (opt-level 2), in its own directory: a longer first
# build, for long runs.
out=${FUZZ_TARGET_DIR:-target/fuzz}
cargo_config=()
if [[ ${FUZZ_OPT:-0} == 1 ]]; then
  out=$out-opt
  cargo_config=(--config 'profile.release.package."*".opt-level=2' --config 'profile.release.package.attune-host.opt-level=2')
fi
bin_dir=$out/release

echo "== fuzz: build"
start=$SECONDS
# Crates whose code the targets exercise get coverage (and debug assertions); the bins too. No
# crate a proc macro uses (serde_json is one): see fuzz/rustc-sancov.sh.
export FUZZ_INSTRUMENT="attune_rules attune_timers attune_host serde_yaml_ng unsafe_libyaml croner chrono ${ALL_TARGETS[*]}"
# Cargo's fingerprints cover neither the wrapper nor this list: when either changes, a kept
# build is thrown away (a build from before this record is taken as current).
instrumented="$FUZZ_INSTRUMENT $(cksum < fuzz/rustc-sancov.sh)"
if [[ -f $out/instrumented && $(< "$out/instrumented") != "$instrumented" ]]; then
  echo "instrumentation changed: rebuilding everything"
  rm -rf "$bin_dir"
fi
# Built for the host without --target, so what a proc macro and the targets share is built once.
RUSTC_WRAPPER="$PWD/fuzz/rustc-sancov.sh" cargo build --release --locked --manifest-path fuzz/Cargo.toml \
  --target-dir "$out" --bins "${cargo_config[@]}"
echo "$instrumented" > "$out/instrumented"
echo "built in $((SECONDS - start)) s"

# Cargo's hashes of the project's own crates (path dependencies outside fuzz/) include their
# absolute path: a clone elsewhere builds them and the targets anew (~250 MB). Keep only the
# newest build of each, so a FUZZ_TARGET_DIR shared by clones does not grow with every clone.
own_crates=$(awk '/^\[\[package\]\]/ { if (name != "" && !registry) print name; name = ""; registry = 0 }
  /^name = / { name = $3 } /^source = / { registry = 1 }
  END { if (name != "" && !registry) print name }' fuzz/Cargo.lock | tr -d '"' | tr - _)
for name in $own_crates "${ALL_TARGETS[@]}"; do
  mapfile -t builds < <(ls -t "$bin_dir/deps/$name"-*.d 2>/dev/null)
  for old in "${builds[@]:1}"; do
    old=${old%.d}
    rm -f "$old" "$old.d" "$bin_dir/deps/lib${old##*/}".{rlib,rmeta}
  done
done

# Seeds: fuzz/seeds/<target> (hand-written) and the repo's own rules and packs, as they are now.
examples=$out/examples
rm -rf "$examples"
mkdir -p "$examples"/{rule_spec,manifest}
shopt -s nullglob
n=0
for rule in sensors/*/rules/*.yaml tests/fixtures/packs/*/rules/*.yaml tests/fixtures/packs/*/*/rules/*.yaml; do
  n=$((n + 1))
  cp "$rule" "$examples/rule_spec/$n-$(basename "$rule")"
done
# A pack as the manifest target reads it: pack.yaml, a trigger, a sensor, a rule, an action.
first() { local files=("$@"); [[ ${#files[@]} -gt 0 ]] && cat "${files[0]}"; return 0; }
for pack in sensors/*/ tests/fixtures/packs/*/ tests/fixtures/packs/*/*/; do
  [[ -f $pack/pack.yaml ]] || continue
  sensors=("$pack"sensors/*.yaml)
  [[ ${#sensors[@]} -gt 0 ]] || sensors=("")
  for sensor in "${sensors[@]}"; do
    n=$((n + 1))
    {
      cat "$pack/pack.yaml"; echo '---'
      first "$pack"triggers/*.yaml; echo '---'
      [[ -n $sensor ]] && cat "$sensor"; echo '---'
      first "$pack"rules/*.yaml; echo '---'
      first "$pack"actions/*.yaml
    } > "$examples/manifest/$n-$(basename "$pack").yaml"
  done
done
shopt -u nullglob

# Each target gets its own TMPDIR, removed afterwards. The manifest target writes a pack there for
# every input: on tmpfs (/dev/shm) it ran ~10x as many in 180 s as on this machine's disk.
tmp_root=$out/tmp
[[ -d /dev/shm && -w /dev/shm ]] && tmp_root=/dev/shm/attune-fuzz-$$
run_target() {
  local target=$1 corpus=$out/corpus/$1 artifacts=$out/artifacts/$1 log=$out/logs/$1.log tmp=$tmp_root/$1
  mkdir -p "$corpus" "$artifacts" "$out/logs" "$tmp"
  local dirs=("$corpus" "fuzz/seeds/$target")
  [[ -d $examples/$target ]] && dirs+=("$examples/$target")
  local status=0
  TMPDIR=$tmp "$bin_dir/$target" -max_total_time="$seconds" -timeout="$timeout" -rss_limit_mb=2048 -max_len=8192 \
    -print_final_stats=1 -artifact_prefix="$artifacts/" "${dirs[@]}" > "$log" 2>&1 || status=$?
  rm -rf "$tmp"
  return "$status"
}

summary() {
  local target=$1 log=$out/logs/$1.log
  local last runs rate
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  printf '%-14s %10s runs %7s exec/s  cov %-6s ft %-6s corpus %s\n' "$target" "${runs:-?}" "${rate:-?}" \
    "$(grep -o 'cov: [0-9]*' <<< "$last" | cut -d' ' -f2)" "$(grep -o 'ft: [0-9]*' <<< "$last" | cut -d' ' -f2)" \
    "$(grep -o 'corp: [0-9]*/[0-9]*[a-zA-Z]*' <<< "$last" | cut -d' ' -f2)"
}

echo "== fuzz: ${#targets[@]} targets, ${seconds} s each, $jobs at a time"
start=$SECONDS
# Crash inputs of earlier runs stay in artifacts/; a failure reports only this run's.
stamp=$out/logs/.started
mkdir -p "$out/logs"
touch "$stamp"
declare -A pid_of
failed=()
pending=("${targets[@]}")
running=()
while [[ ${#pending[@]} -gt 0 || ${#running[@]} -gt 0 ]]; do
  while [[ ${#pending[@]} -gt 0 && ${#running[@]} -lt $jobs ]]; do
    target=${pending[0]}
    pending=("${pending[@]:1}")
    run_target "$target" &
    pid_of[$target]=$!
    running+=("$target")
  done
  wait -n || true
  still=()
  for target in "${running[@]}"; do
    if kill -0 "${pid_of[$target]}" 2>/dev/null; then
      still+=("$target")
    elif wait "${pid_of[$target]}"; then
      summary "$target"
    else
      failed+=("$target")
      summary "$target"
    fi
  done
  running=("${still[@]}")
done
echo "fuzzed in $((SECONDS - start)) s"
rm -rf "$tmp_root"

for target in "${failed[@]}"; do
  echo "== fuzz: $target FAILED (log: $out/logs/$target.log)"
  grep -v -E '^#[0-9]+|^INFO:|^WARNING: Failed to find function|^\s*$' "$out/logs/$target.log" | tail -40
  for input in "$out/artifacts/$target"/*; do
    [[ -f $input && ! $input -ot $stamp ]] || continue
    echo "-- input $input ($(wc -c < "$input") bytes), reproduce: $bin_dir/$target $input"
    head -c 2000 "$input" | od -c | head -40
  done
done
[[ ${#failed[@]} -eq 0 ]]

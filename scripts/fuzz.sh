#!/usr/bin/env bash
# Fuzzes the input parsers (topology, job, workload, plan JSON and the message header) with
# libFuzzer for a bounded time each, and prints a table of what ran.
#
#   scripts/fuzz.sh [--seconds N] [--jobs K] [--json FILE] [--targets a,b,...] [--build-dir DIR]
#
#   --seconds N   fuzzing time per target (default 30)
#   --jobs K      targets fuzzed at the same time (default 1)
#   --json FILE   also write the table as JSON
#   --targets     comma-separated subset of topology,job,workload,plan,header (default all)
#   --build-dir   clang build folder (default build-fuzz)
#
# Configures the build folder with clang, AddressSanitizer, UndefinedBehaviorSanitizer and
# libFuzzer coverage for the whole tree, builds only the fuzz targets, and fuzzes each from the
# seeds (examples/, tests/data/, encoded headers, tests/fuzz/regressions/). New interesting
# inputs accumulate in DIR/fuzz-corpus/<target>/ across runs. Exits 1 when any target crashed
# (a sanitizer report, an unexpected exception, a broken round trip or a hang over 10 s); the
# crashing input is saved in DIR/fuzz-crashes/<target>/ (add it to tests/fuzz/regressions/).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=30
jobs=1
json_out=""
targets="topology,job,workload,plan,header,steplog,trace"
build=build-fuzz
while [[ $# -gt 0 ]]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --json) json_out="$2"; shift 2 ;;
    --targets) targets="$2"; shift 2 ;;
    --build-dir) build="$2"; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "fuzz.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || (( seconds < 1 )); then
  echo "fuzz.sh: --seconds expects a whole number of seconds >= 1, got '$seconds'" >&2; exit 2
fi
if ! [[ "$jobs" =~ ^[0-9]+$ ]] || (( jobs < 1 )); then
  echo "fuzz.sh: --jobs expects a count >= 1, got '$jobs'" >&2; exit 2
fi
IFS=, read -r -a target_list <<< "$targets"
for t in "${target_list[@]}"; do
  case "$t" in topology|job|workload|plan|header|steplog|trace) ;; *)
    echo "fuzz.sh: unknown target '$t' (expected topology, job, workload, plan, header, steplog or trace)" >&2; exit 2 ;;
  esac
done
for tool in clang clang++ cmake ninja; do
  command -v "$tool" >/dev/null || { echo "fuzz.sh: '$tool' not found (scripts/setup.sh installs it)" >&2; exit 2; }
done

sanitizers="-fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
echo "fuzz: configuring $build/ (clang, ASan + UBSan + libFuzzer coverage)"
cmake -S . -B "$build" -G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS="$sanitizers" -DGEOPIPE_FUZZ=ON \
  -DGEOPIPE_CUDA=OFF -DGEOPIPE_BUILD_TESTS=OFF -DGEOPIPE_BUILD_BENCH=OFF > "$build.configure.log" 2>&1 ||
  { cat "$build.configure.log" >&2; exit 1; }
build_jobs=$(( $(nproc) < 2 ? $(nproc) : 2 ))
cmake --build "$build" --target geopipe_fuzz_targets -j "$build_jobs"

stamp=$(date -u +%Y%m%dT%H%M%SZ)
seeds="$build/fuzz-seeds"
rm -rf "$seeds"
"$build/bin/geopipe-fuzz-replay" --write-seeds . "$seeds"
# The JSON harnesses write each input to a file: keep it in memory where /dev/shm exists.
if [[ -d /dev/shm && -w /dev/shm ]]; then export TMPDIR=/dev/shm; fi
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"

# fuzz_one TARGET: runs one target for $seconds; its log is $build/fuzz-logs/TARGET.log.
fuzz_one() {
  local t="$1" max_len=8192 dict=(-dict=fuzz/dict/json.dict) rc=0
  if [[ "$t" == header ]]; then max_len=512; dict=(); fi
  mkdir -p "$build/fuzz-corpus/$t" "$build/fuzz-crashes/$t" "$build/fuzz-logs" "tests/fuzz/regressions/$t"
  # libFuzzer stops itself after -max_total_time; the outer timeout only guards against a stuck exit.
  timeout -k 10 $(( seconds + 120 )) "$build/bin/fuzz_$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -max_len="$max_len" "${dict[@]}" -print_final_stats=1 -artifact_prefix="$build/fuzz-crashes/$t/$stamp-" \
    "$build/fuzz-corpus/$t" "$seeds/$t" "tests/fuzz/regressions/$t" > "$build/fuzz-logs/$t.log" 2>&1 || rc=$?
  echo "$rc" > "$build/fuzz-logs/$t.rc"
}

echo "fuzz: ${#target_list[@]} targets, $seconds s each, $jobs at a time"
running=0
for t in "${target_list[@]}"; do
  fuzz_one "$t" &
  running=$((running + 1))
  if (( running >= jobs )); then wait -n || true; running=$((running - 1)); fi
done
wait || true

final_stat() { sed -n "s/^stat::$2: *//p" "$build/fuzz-logs/$1.log" | tail -1; }
failed=0
rows=()
printf "\n%-10s %8s %12s %10s %8s %8s\n" target seconds executions "exec/s" corpus crashes
for t in "${target_list[@]}"; do
  rc=$(cat "$build/fuzz-logs/$t.rc")
  execs=$(final_stat "$t" number_of_executed_units); execs=${execs:-0}
  corpus=$(find "$build/fuzz-corpus/$t" -type f | wc -l)
  crashes=$(find "$build/fuzz-crashes/$t" -type f -name "$stamp-*" | wc -l)
  if [[ "$rc" != 0 && "$crashes" == 0 ]]; then crashes=1; fi  # died without saving an input
  printf "%-10s %8d %12d %10d %8d %8d\n" "$t" "$seconds" "$execs" $(( execs / seconds )) "$corpus" "$crashes"
  rows+=("{\"target\": \"$t\", \"seconds\": $seconds, \"executions\": $execs, \"execs_per_s\": $(( execs / seconds )), \"corpus\": $corpus, \"crashes\": $crashes, \"exit_code\": $rc}")
  if [[ "$rc" != 0 ]]; then
    failed=1
    echo "fuzz: $t FAILED (exit $rc); log $build/fuzz-logs/$t.log; input(s):" >&2
    find "$build/fuzz-crashes/$t" -type f -name "$stamp-*" >&2
    grep -E "ERROR|runtime error|BUG|uncaught|deadly|SUMMARY" "$build/fuzz-logs/$t.log" | head -5 >&2 || true
  fi
done
if [[ -n "$json_out" ]]; then
  { echo "{\"seconds_per_target\": $seconds, \"jobs\": $jobs, \"machine\": \"$(nproc)-core $(uname -m)\", \"targets\": ["
    (IFS=,; echo "  ${rows[*]}")
    echo "]}"; } > "$json_out"
  echo "fuzz: wrote $json_out"
fi
exit $failed

#!/usr/bin/env bash
# Runs setup, proves the CPU-only configuration (no CUDA) builds, fuzzes the input parsers for a
# bounded time, then runs every test with ctest: unit tests and MPI tests (started by ctest
# through mpiexec). ctest's summary is last.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh

# Open MPI refuses to run as root unless told it may (CI runs as root).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# The CPU-only configuration must build too (CUDA kernels and NCCL compiled out).
if [[ "${GEOPIPE_SKIP_CPU_ONLY_BUILD:-0}" != 1 ]]; then
  echo "test: building the CPU-only configuration (-DGEOPIPE_CUDA=OFF) in build-cpu-only/"
  GEOPIPE_SKIP_APT=1 GEOPIPE_BUILD_DIR=build-cpu-only \
    GEOPIPE_CMAKE_ARGS="-DGEOPIPE_CUDA=OFF -DGEOPIPE_BUILD_TESTS=OFF -DGEOPIPE_BUILD_BENCH=OFF" \
    ./scripts/setup.sh
fi

# Fuzz every input parser briefly (libFuzzer + sanitizers, build-fuzz/); a crash fails the run.
# GEOPIPE_FUZZ_SECONDS=0 skips it.
fuzz_seconds="${GEOPIPE_FUZZ_SECONDS:-15}"
if [[ "$fuzz_seconds" != 0 ]]; then
  ./scripts/fuzz.sh --seconds "$fuzz_seconds" --jobs "$(( $(nproc) < 2 ? 1 : 2 ))"
fi

# Every test, last, so that ctest's summary closes the output.
cd build
ctest --output-on-failure -j "$(nproc)" "$@"

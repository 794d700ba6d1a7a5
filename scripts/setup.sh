#!/usr/bin/env bash
# One-command setup: installs the Debian packages geopipe needs (as root; otherwise prints the
# exact apt-get line and stops), then configures and builds into build/ (Release, Ninja).
# Idempotent: a second run installs nothing and rebuilds only what changed.
#
#   GEOPIPE_BUILD_DIR   build folder (default: build)
#   GEOPIPE_CMAKE_ARGS  extra CMake arguments, e.g. "-DGEOPIPE_CUDA=OFF"
#   GEOPIPE_SKIP_APT=1  do not check packages (machines where they come from elsewhere)
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  libtorch-dev
  libopenblas0-openmp   # optimized BLAS behind libblas.so.3 (why OpenMP: below the list)
  libopenmpi-dev openmpi-bin
  libspdlog-dev libfmt-dev
  libgtest-dev libgmock-dev
  nlohmann-json3-dev libcli11-dev
  iproute2
  clang libclang-rt-14-dev   # scripts/fuzz.sh: libFuzzer, AddressSanitizer, UndefinedBehaviorSanitizer
  python3 python3-torch   # reference checks: checkpoints load in PyTorch, nanoGPT-style forward
  chromium fonts-dejavu-core zlib1g-dev   # the report's browser test: headless render, PNG decode
)
# libopenblas0-openmp: Debian's LibTorch calls sgemm_ through libblas.so.3, which a machine
# without an optimized BLAS resolves to netlib's reference code (13x slower on the GPT stages,
# docs/PERFORMANCE.md); installing OpenBLAS switches the libblas.so.3 alternative to it. The
# OpenMP build, not the pthread one, on purpose: LibTorch's intra-op threads are OpenMP, so the
# OpenMP build runs its threads in the same OpenMP pool, bounded by the rank's --threads
# (runtime/trainer.h set_compute_threads), where the pthread build keeps a pool of its own that
# oversubscribes the cores when ranks share a host.

if [[ "${GEOPIPE_SKIP_APT:-0}" != 1 ]]; then
  missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    line="apt-get install -y --no-install-recommends ${missing[*]}"
    if [[ $(id -u) -eq 0 ]]; then
      echo "setup: installing ${missing[*]}"
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -q
      # shellcheck disable=SC2086
      apt-get install -y -q --no-install-recommends ${missing[*]}
    else
      echo "setup: missing Debian packages; run as root:" >&2
      echo "  sudo apt-get update && sudo $line" >&2
      exit 1
    fi
  fi
fi

# nvcc lives in the CUDA toolkit's prefix; CMake finds it there even when it is not on PATH.
if ! command -v nvcc >/dev/null && [[ -x /usr/local/cuda/bin/nvcc ]]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi

BUILD_DIR="${GEOPIPE_BUILD_DIR:-build}"
generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi
# Configuring again is cheap and picks up new files and GEOPIPE_CMAKE_ARGS.
# shellcheck disable=SC2086
cmake -S . -B "$BUILD_DIR" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release ${GEOPIPE_CMAKE_ARGS:-} >"$BUILD_DIR.configure.log" 2>&1 || {
  cat "$BUILD_DIR.configure.log" >&2; echo "setup: CMake configuration failed (log above)" >&2; exit 1; }
grep -E '^-- geopipe ' "$BUILD_DIR.configure.log" || true
# Two cores and heavy LibTorch headers: more jobs than cores only thrash memory.
cmake --build "$BUILD_DIR" -j "$(nproc)"
echo "setup: built into $BUILD_DIR/ (programs in $BUILD_DIR/bin/)"

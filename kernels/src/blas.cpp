#include <geopipe/kernels/blas.h>

#include <dlfcn.h>

#include <climits>
#include <cstdlib>
#include <string>

namespace geopipe::kernels {

namespace {

// A handle whose symbol lookups search the BLAS that provides sgemm_ and its dependencies
// (Debian's openblas-*/libblas.so.3 is a thin wrapper over libopenblas.so.0, where the
// openblas_* controls live). Handles stay open: the library stays loaded for the process.
struct BlasHandle {
  void* handle = nullptr;
  std::string library;
  bool in_process = false;
};

std::string resolved(const char* path) {
  char buf[PATH_MAX];
  return realpath(path, buf) ? std::string(buf) : std::string(path);
}

BlasHandle find_blas() {
  BlasHandle b;
  void* sgemm = dlsym(RTLD_DEFAULT, "sgemm_");
  void* probe = nullptr;
  if (sgemm) {
    b.in_process = true;
  } else {
    // Not loaded here (the `geopipe` command links no BLAS): load what LibTorch would load.
    probe = dlopen("libblas.so.3", RTLD_LAZY | RTLD_LOCAL);
    if (!probe) return b;
    sgemm = dlsym(probe, "sgemm_");
  }
  Dl_info info{};
  if (!sgemm || dladdr(sgemm, &info) == 0 || !info.dli_fname) return b;
  b.library = resolved(info.dli_fname);
  b.handle = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
  if (!b.handle) b.handle = probe;
  return b;
}

template <typename Fn>
Fn symbol(const BlasHandle& b, const char* name) {
  return b.handle ? reinterpret_cast<Fn>(dlsym(b.handle, name)) : nullptr;
}

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\n')) s.pop_back();
  return s;
}

}  // namespace

BlasInfo blas_info() {
  BlasInfo info;
  const BlasHandle b = find_blas();
  info.library = b.library;
  info.in_process = b.in_process;
  if (b.library.empty()) {
    info.name = "none found";
    return info;
  }
  if (auto get_config = symbol<char* (*)()>(b, "openblas_get_config")) {
    info.config = trimmed(get_config());
    // "OpenBLAS 0.3.21 NO_AFFINITY USE_OPENMP HASWELL MAX_THREADS=64": the first two words.
    const size_t second_space = info.config.find(' ', info.config.find(' ') + 1);
    info.name = info.config.substr(0, second_space);
    if (auto parallel = symbol<int (*)()>(b, "openblas_get_parallel")) {
      const int p = parallel();
      info.threading = p == 2 ? "openmp" : p == 1 ? "pthread" : "serial";
    }
    if (auto threads = symbol<int (*)()>(b, "openblas_get_num_threads")) info.threads = threads();
  } else if (auto blis = symbol<const char* (*)()>(b, "bli_info_get_version_str")) {
    info.name = std::string("BLIS ") + blis();
  } else if (symbol<void*>(b, "mkl_get_version_string")) {
    info.name = "MKL";
  } else if (b.library.find("/blas/") != std::string::npos) {
    // Debian's libblas3 (netlib's reference code) lives in .../blas/; it has no thread calls.
    info.name = "reference BLAS (netlib)";
    info.threading = "serial";
    info.threads = 1;
  } else {
    info.name = "unknown";
  }
  return info;
}

std::string describe(const BlasInfo& info) {
  if (info.library.empty()) return "no BLAS library found (libblas.so.3 does not load)";
  std::string s = info.name;
  if (!info.threading.empty() || info.threads > 0) {
    s += " (";
    if (!info.threading.empty()) s += info.threading;
    if (info.threads > 0)
      s += (info.threading.empty() ? "" : ", ") + std::to_string(info.threads) +
           (info.threads == 1 ? " thread" : " threads");
    s += ")";
  }
  s += " " + info.library;
  if (!info.optimized()) s += " -- unoptimized: install libopenblas0-openmp (scripts/setup.sh does)";
  return s;
}

bool set_blas_threads(int threads) {
  const BlasHandle b = find_blas();
  auto set = symbol<void (*)(int)>(b, "openblas_set_num_threads");
  if (!set || threads < 1) return false;
  set(threads);
  return true;
}

}  // namespace geopipe::kernels

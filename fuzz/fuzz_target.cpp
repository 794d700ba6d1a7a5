// The libFuzzer entry point of one harness; fuzz/CMakeLists.txt builds it once per target with
// GEOPIPE_FUZZ_TARGET set to the target's name ("topology", "job", "workload", "plan", "header",
// "steplog", "trace").
#include <geopipe/fuzz/harness.h>

#include <cstdio>
#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto target = geopipe::fuzz::parse_target(GEOPIPE_FUZZ_TARGET);
  if (!target) {
    std::fprintf(stderr, "geopipe-fuzz: unknown target %s\n", GEOPIPE_FUZZ_TARGET);
    std::abort();
  }
  geopipe::fuzz::run_one(*target, data, size);
  return 0;
}

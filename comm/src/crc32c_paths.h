// Private to geopipe_comm and its tests: the implementations behind crc32c(), by name, so that
// the tests compare every one this CPU can run against the table, not only the one crc32c()
// picks (the SSE4.2-only path is the fallback for x86 CPUs without PCLMULQDQ and would
// otherwise never run on a current machine).
#pragma once

#include <cstddef>
#include <cstdint>

namespace geopipe::comm {

enum class Crc32cPath {
  kTable,        // slicing-by-8 (crc32c_portable)
  kSse42,        // three crc32-instruction lanes joined with lookup tables
  kSse42Pclmul,  // three crc32-instruction lanes joined with carry-less multiplication
};

// True when this build and this CPU can run `path` (kTable always can).
bool crc32c_path_available(Crc32cPath path);

// The path crc32c() uses: the fastest available one.
Crc32cPath crc32c_best_path();

// crc32c() computed on `path`, which must be available.
uint32_t crc32c_on_path(Crc32cPath path, const void* data, size_t bytes, uint32_t crc = 0);

const char* crc32c_path_name(Crc32cPath path);

}  // namespace geopipe::comm

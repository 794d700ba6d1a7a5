// CRC32C (Castagnoli, the iSCSI/ext4 polynomial 0x1EDC6F41, reflected 0x82F63B78).
// On x86-64 it runs three interleaved lanes of the SSE4.2 crc32 instruction, joined with
// carry-less multiplication (PCLMULQDQ) or, on CPUs without it, lookup tables; elsewhere a
// slicing-by-8 table. The CPU is checked at run time; every path gives the same value.
#pragma once

#include <cstddef>
#include <cstdint>

namespace geopipe::comm {

// CRC32C of `bytes` bytes at `data`, continuing from `crc` (0 for a fresh checksum):
// crc32c(b, crc32c(a)) == crc32c(a + b).
uint32_t crc32c(const void* data, size_t bytes, uint32_t crc = 0);

// The table implementation alone (the reference the hardware path is tested against).
uint32_t crc32c_portable(const void* data, size_t bytes, uint32_t crc = 0);

// True when crc32c() uses the hardware instruction on this machine.
bool crc32c_hardware();

// What crc32c() runs on this machine: "sse4.2+pclmul", "sse4.2" or "table".
const char* crc32c_implementation();

}  // namespace geopipe::comm

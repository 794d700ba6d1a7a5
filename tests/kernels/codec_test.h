// Helpers shared by the codec tests: typed host tensors and encode/decode through the C API.
#pragma once

#include <geopipe/kernels/codec.h>
#include <geopipe/kernels/numeric.h>

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

namespace geopipe::kernels::test {

// Elements of `dtype` as raw bytes, plus their float32 values (what the codec sees).
struct HostTensor {
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> raw;
  std::vector<float> values;

  int64_t numel() const { return static_cast<int64_t>(values.size()); }
  const void* data() const { return raw.data(); }
};

inline int64_t numel_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

// Stores float values in `dtype` (rounded), keeping the rounded values.
inline HostTensor make_tensor(DType dtype, std::vector<int64_t> shape, const std::vector<float>& v) {
  HostTensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.raw.resize(v.size() * dtype_size(dtype));
  t.values.resize(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    if (dtype == DType::kFloat32) {
      std::memcpy(&t.raw[i * 4], &v[i], 4);
      t.values[i] = v[i];
    } else {
      const uint16_t h = dtype == DType::kBFloat16 ? num::f32_to_bf16(v[i]) : num::f32_to_f16(v[i]);
      std::memcpy(&t.raw[i * 2], &h, 2);
      t.values[i] = dtype == DType::kBFloat16 ? num::bf16_to_f32(h) : num::f16_to_f32(h);
    }
  }
  return t;
}

inline std::vector<float> normal_values(int64_t n, uint32_t seed, float sigma = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.0f, sigma);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = d(gen);
  return v;
}

// Student-t with 3 degrees of freedom: heavy tails, like activation outliers.
inline std::vector<float> heavy_tailed_values(int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::student_t_distribution<float> d(3.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = d(gen);
  return v;
}

inline std::vector<float> to_floats(DType dtype, const std::vector<uint8_t>& raw) {
  const size_t n = raw.size() / dtype_size(dtype);
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) {
    if (dtype == DType::kFloat32) {
      std::memcpy(&out[i], &raw[i * 4], 4);
    } else {
      uint16_t h;
      std::memcpy(&h, &raw[i * 2], 2);
      out[i] = dtype == DType::kBFloat16 ? num::bf16_to_f32(h) : num::f16_to_f32(h);
    }
  }
  return out;
}

inline std::vector<uint8_t> encode(const CodecSpec& spec, const HostTensor& t, float* residual = nullptr,
                                   Status expect = Status::kOk) {
  const size_t bytes = packed_size(spec, t.dtype, t.shape);
  std::vector<uint8_t> buf(bytes, 0xCD);  // poisoned: every byte must be written
  const Status st = encode_cpu(spec, t.dtype, t.shape.data(), static_cast<int>(t.shape.size()), t.data(), residual,
                               buf.data(), buf.size());
  EXPECT_EQ(st, expect) << status_string(st);
  return buf;
}

inline std::vector<float> decode(const std::vector<uint8_t>& buf) {
  WireHeader h;
  std::string why;
  EXPECT_EQ(read_header(buf.data(), buf.size(), &h, &why), Status::kOk) << why;
  const Layout L = layout_of(h);
  std::vector<uint8_t> raw(static_cast<size_t>(L.numel) * dtype_size(static_cast<DType>(h.dtype)), 0xCD);
  EXPECT_EQ(decode_cpu(buf.data(), buf.size(), raw.data(), raw.size(), &why), Status::kOk) << why;
  return to_floats(static_cast<DType>(h.dtype), raw);
}

inline float scale_of(const std::vector<uint8_t>& buf, int64_t block) {
  float s;
  std::memcpy(&s, buf.data() + sizeof(WireHeader) + block * 4, 4);
  return s;
}

}  // namespace geopipe::kernels::test

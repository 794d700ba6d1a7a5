// The bit-level building blocks shared by the CUDA kernels and the CPU twins: FP8 encoding against
// a brute-force nearest-value reference, Philox against the published known answers.
#include <geopipe/kernels/numeric.h>

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

namespace num = geopipe::kernels::num;

namespace {

struct Fp8Format {
  const char* name;
  uint8_t (*encode)(float, bool, uint32_t);
  float (*decode)(uint8_t);
  uint8_t max_code;  // largest finite magnitude code
  float max_value;
};

// Nearest fp8 magnitude code to |y| by exhaustive search, ties to the even code, saturating.
uint8_t reference_encode(const Fp8Format& f, float y) {
  const double a = std::fabs(static_cast<double>(y));
  int best = 0;
  double best_err = std::numeric_limits<double>::infinity();
  for (int c = 0; c <= f.max_code; ++c) {
    const double err = std::fabs(static_cast<double>(f.decode(static_cast<uint8_t>(c))) - a);
    if (err < best_err || (err == best_err && (c & 1) == 0)) {
      best = c;
      best_err = err;
    }
  }
  if (a > f.max_value) best = f.max_code;
  return static_cast<uint8_t>((std::signbit(y) ? 0x80 : 0) | best);
}

const Fp8Format kE4M3{"e4m3", num::f32_to_e4m3, num::e4m3_to_f32, 0x7e, 448.0f};
const Fp8Format kE5M2{"e5m2", num::f32_to_e5m2, num::e5m2_to_f32, 0x7b, 57344.0f};

void expect_matches_reference(const Fp8Format& f, float y) {
  const uint8_t got = f.encode(y, false, 0);
  const uint8_t want = reference_encode(f, y);
  ASSERT_EQ(got, want) << f.name << " encode(" << y << ") bits 0x" << std::hex << num::f32_bits(y);
}

}  // namespace

TEST(Fp8, DecodeMatchesTheFormatDefinition) {
  EXPECT_EQ(num::e4m3_to_f32(0x7e), 448.0f);
  EXPECT_EQ(num::e4m3_to_f32(0x08), std::ldexp(1.0f, -6));   // smallest normal
  EXPECT_EQ(num::e4m3_to_f32(0x01), std::ldexp(1.0f, -9));   // smallest subnormal
  EXPECT_EQ(num::e4m3_to_f32(0xb8), -1.0f);
  EXPECT_TRUE(std::isnan(num::e4m3_to_f32(0x7f)));
  EXPECT_EQ(num::e5m2_to_f32(0x7b), 57344.0f);
  EXPECT_EQ(num::e5m2_to_f32(0x04), std::ldexp(1.0f, -14));
  EXPECT_EQ(num::e5m2_to_f32(0x01), std::ldexp(1.0f, -16));
  EXPECT_TRUE(std::isinf(num::e5m2_to_f32(0x7c)));
  EXPECT_TRUE(std::isnan(num::e5m2_to_f32(0x7e)));
  // every finite code decodes and re-encodes to itself
  for (int c = 0; c < 256; ++c) {
    const auto code = static_cast<uint8_t>(c);
    if ((c & 0x7f) <= 0x7e) {
      EXPECT_EQ(num::f32_to_e4m3(num::e4m3_to_f32(code)), code) << c;
    }
    if ((c & 0x7f) <= 0x7b) {
      EXPECT_EQ(num::f32_to_e5m2(num::e5m2_to_f32(code)), code) << c;
    }
  }
}

TEST(Fp8, EncodeIsNearestEvenOnEveryFiniteBfloat16) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float y = num::bf16_to_f32(static_cast<uint16_t>(h));
    if (!std::isfinite(y)) continue;
    expect_matches_reference(kE4M3, y);
    expect_matches_reference(kE5M2, y);
  }
}

TEST(Fp8, EncodeIsNearestEvenOnTiesAndTheirNeighbours) {
  for (const Fp8Format* f : {&kE4M3, &kE5M2}) {
    for (int c = 0; c < f->max_code; ++c) {
      const float lo = f->decode(static_cast<uint8_t>(c));
      const float hi = f->decode(static_cast<uint8_t>(c + 1));
      const float mid = lo + (hi - lo) / 2;  // exact: fp8 values have few bits
      for (float y : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e30f), -mid}) expect_matches_reference(*f, y);
    }
    // beyond the largest value, saturate
    expect_matches_reference(*f, f->max_value * 1.0001f);
    expect_matches_reference(*f, -f->max_value * 3.0f);
  }
}

TEST(Fp8, EncodeIsNearestEvenOnRandomFloat32) {
  std::mt19937 gen(12345);
  std::uniform_real_distribution<float> exponent(-30.0f, 17.0f);
  std::uniform_real_distribution<float> mant(1.0f, 2.0f);
  for (int i = 0; i < 200000; ++i) {
    const float y = std::ldexp(mant(gen), static_cast<int>(exponent(gen))) * (i % 2 ? -1.0f : 1.0f);
    expect_matches_reference(kE4M3, y);
    expect_matches_reference(kE5M2, y);
  }
  // float32 subnormals round to zero
  expect_matches_reference(kE4M3, std::numeric_limits<float>::denorm_min());
  expect_matches_reference(kE5M2, -std::numeric_limits<float>::denorm_min());
}

TEST(Fp8, StochasticEncodeRoundsToOneOfTheTwoNeighbours) {
  std::mt19937 gen(7);
  for (const Fp8Format* f : {&kE4M3, &kE5M2}) {
    std::uniform_real_distribution<float> u(-f->max_value, f->max_value);
    for (int i = 0; i < 20000; ++i) {
      const float y = i % 4 == 0 ? u(gen) * 1e-6f : u(gen);
      const float a = std::fabs(y);
      float below = 0.0f, above = f->max_value;  // the fp8 magnitudes that bracket |y|
      for (int c = 0; c <= f->max_code; ++c) {
        const float v = f->decode(static_cast<uint8_t>(c));
        if (v <= a) below = v;
        if (v >= a && v < above) above = v;
      }
      const uint8_t code = f->encode(y, true, static_cast<uint32_t>(gen()));
      const float d = std::fabs(f->decode(code));
      ASSERT_TRUE(d == below || d == above) << f->name << " y=" << y << " got " << d << " not " << below << " or " << above;
      if (d != 0.0f) {
        ASSERT_EQ((code & 0x80) != 0, y < 0);
      }
    }
    // all-zero random bits truncate toward zero, all-one bits round away (for a non-representable y)
    const float y = f->decode(0x30) * 1.1f;
    EXPECT_LT(f->decode(f->encode(y, true, 0u)), y);
    EXPECT_GT(f->decode(f->encode(y, true, 0xffffffffu)), y);
  }
}

TEST(HalfFormats, Bfloat16RoundsToNearestEven) {
  EXPECT_EQ(num::f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(num::f32_to_bf16(num::bits_f32(0x3f808000u)), 0x3f80);  // tie, even stays
  EXPECT_EQ(num::f32_to_bf16(num::bits_f32(0x3f818000u)), 0x3f82);  // tie, odd goes up
  EXPECT_EQ(num::f32_to_bf16(num::bits_f32(0x3f808001u)), 0x3f81);
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = num::bf16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(num::f32_to_bf16(f), h);
  }
}

TEST(HalfFormats, Float16RoundTripsEveryValueAndRoundsToNearestEven) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = num::f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(num::f32_to_f16(f), h) << std::hex << h;
  }
  EXPECT_EQ(num::f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(num::f16_to_f32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(num::f16_to_f32(0x7bff), 65504.0f);
  EXPECT_EQ(num::f32_to_f16(65519.0f), 0x7bff);
  EXPECT_EQ(num::f32_to_f16(65520.0f), 0x7c00);                // rounds to Inf
  EXPECT_EQ(num::f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);   // tie to even (zero)
  EXPECT_EQ(num::f32_to_f16(std::ldexp(3.0f, -25)), 0x0002);   // 1.5 ulp: tie to even (2)
  EXPECT_EQ(num::f32_to_f16(std::ldexp(1.0f, -14) + std::ldexp(1.0f, -25)), 0x0400);  // tie at the normal boundary
  // midpoints between consecutive fp16 values round to the even one
  for (uint32_t h = 0; h < 0x7bff; h += 37) {
    const double lo = num::f16_to_f32(static_cast<uint16_t>(h)), hi = num::f16_to_f32(static_cast<uint16_t>(h + 1));
    const float mid = static_cast<float>((lo + hi) / 2);
    ASSERT_EQ(num::f32_to_f16(mid), (h & 1) ? h + 1 : h) << h;
  }
}

TEST(Philox, MatchesRandom123KnownAnswers) {
  const auto z = num::philox4x32_10(0, 0, 0, 0, 0, 0);
  EXPECT_EQ(z.v[0], 0x6627e8d5u);
  EXPECT_EQ(z.v[1], 0xe169c58du);
  EXPECT_EQ(z.v[2], 0xbc57ac4cu);
  EXPECT_EQ(z.v[3], 0x9b00dbd8u);
  const auto f = num::philox4x32_10(~0u, ~0u, ~0u, ~0u, ~0u, ~0u);
  EXPECT_EQ(f.v[0], 0x408f276du);
  EXPECT_EQ(f.v[1], 0x41c83b0eu);
  EXPECT_EQ(f.v[2], 0xa20bc7c6u);
  EXPECT_EQ(f.v[3], 0x6d5451fdu);
  const auto p = num::philox4x32_10(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u);
  EXPECT_EQ(p.v[0], 0xd16cfe09u);
  EXPECT_EQ(p.v[1], 0x94fdccebu);
  EXPECT_EQ(p.v[2], 0x5001e420u);
  EXPECT_EQ(p.v[3], 0x24126ea1u);
}

TEST(Rounding, SmallRoundAndFloorAreExact) {
  for (float y : {0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f, 126.5f, -126.5f, 3.4999998f, 0.0f, -0.0f}) {
    EXPECT_EQ(num::round_half_even_small(y), std::nearbyint(y)) << y;
  }
  for (float y : {0.0f, 0.25f, -0.25f, 1.0f, -1.0f, 127.99f, -127.99f, -3.0f, 2.9999998f}) {
    EXPECT_EQ(num::floor_small(y), std::floor(y)) << y;
  }
  EXPECT_EQ(num::uniform01(0xffffffffu), 1.0f - std::ldexp(1.0f, -24));
  EXPECT_EQ(num::uniform01(0), 0.0f);
}

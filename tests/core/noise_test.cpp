// The SDK's noise (bulwark/noise.hpp): the seeded stream repeats, the secure one is ChaCha20 as
// RFC 8439 specifies it and gives standard normals with the right moments and tails.
#include <torch/torch.h>

#include <doctest/doctest.h>

#include <cmath>
#include <thread>

#include "bulwark/noise.hpp"
#include "bulwark/rng.hpp"

using namespace bulwark;

TEST_CASE("secure noise: the ChaCha20 block function gives RFC 8439's test vector (section 2.3.2)") {
  std::array<std::uint32_t, 8> key{};
  for (std::uint32_t i = 0; i < 8; ++i) {  // key bytes 00 01 .. 1f, read as little-endian words
    key[i] = (4 * i) | (4 * i + 1) << 8 | (4 * i + 2) << 16 | (4 * i + 3) << 24;
  }
  const std::array<std::uint32_t, 3> nonce = {0x09000000, 0x4a000000, 0x00000000};  // 00 00 00 09 00 00 00 4a 00 00 00 00
  const std::array<std::uint8_t, 64> expected = {
      0x10, 0xf1, 0xe7, 0xe4, 0xd1, 0x3b, 0x59, 0x15, 0x50, 0x0f, 0xdd, 0x1f, 0xa3, 0x20, 0x71, 0xc4,
      0xc7, 0xd1, 0xf4, 0xc7, 0x33, 0xc0, 0x68, 0x03, 0x04, 0x22, 0xaa, 0x9a, 0xc3, 0xd4, 0x6c, 0x4e,
      0xd2, 0x82, 0x64, 0x46, 0x07, 0x9f, 0xaa, 0x09, 0x14, 0xc2, 0xd7, 0x05, 0xd9, 0x8b, 0x02, 0xa2,
      0xb5, 0x12, 0x9c, 0xd1, 0xde, 0x16, 0x4e, 0xb9, 0xcb, 0xd0, 0x83, 0xe8, 0xa2, 0x50, 0x3c, 0x4e};
  CHECK(chacha20_block(key, 1, nonce) == expected);
  CHECK(chacha20_block(key, 2, nonce) != expected);
}

TEST_CASE("secure noise: standard normals with the moments and tails of N(0, 1)") {
  constexpr std::int64_t n = 1 << 20;
  const auto z = secure_standard_normal(n);
  REQUIRE(z.numel() == n);
  REQUIRE((z.scalar_type() == torch::kDouble));
  const double mean = z.mean().item<double>();
  const double variance = z.var().item<double>();
  const double kurtosis = (z - mean).pow(4).mean().item<double>() / (variance * variance);
  const double beyond_3 = (z.abs() > 3).to(torch::kDouble).mean().item<double>();
  const double max = z.abs().max().item<double>();
  // Five standard errors each: a correct generator fails one of these about once in 10^6 runs.
  CHECK(std::abs(mean) < 5 / std::sqrt(n));
  CHECK(std::abs(variance - 1) < 5 * std::sqrt(2.0 / n));
  CHECK(std::abs(kurtosis - 3) < 5 * std::sqrt(24.0 / n));
  const double p = std::erfc(3 / std::sqrt(2.0));  // P(|z| > 3) = 0.0026998
  CHECK(std::abs(beyond_3 - p) < 5 * std::sqrt(p * (1 - p) / n));
  CHECK(max > 4);
  CHECK(max < 8.58);  // Box–Muller on 53-bit uniforms cannot exceed sqrt(2 · 53 ln 2)
  // Odd counts, and no two draws alike.
  CHECK(secure_standard_normal(3).numel() == 3);
  CHECK_FALSE(torch::equal(secure_standard_normal(8), secure_standard_normal(8)));
}

TEST_CASE("secure noise ignores the seed, the seeded stream repeats, both keep dtype and shape") {
  const auto like = torch::zeros({4, 3}, torch::kFloat);
  auto seeded = [&](bool secure) { return gaussian_like(like, 2.0, make_generator(5), secure); };
  CHECK(torch::equal(seeded(false), seeded(false)));
  CHECK_FALSE(torch::equal(seeded(true), seeded(true)));
  CHECK(seeded(true).sizes() == like.sizes());
  CHECK((seeded(true).scalar_type() == torch::kFloat));

  // Each thread has its own stream, keyed separately.
  torch::Tensor first, second;
  std::thread a([&] { first = secure_standard_normal(16); });
  std::thread b([&] { second = secure_standard_normal(16); });
  a.join();
  b.join();
  CHECK_FALSE(torch::equal(first, second));
}

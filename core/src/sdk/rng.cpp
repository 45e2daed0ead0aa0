#include "bulwark/rng.hpp"

#include <ATen/CPUGeneratorImpl.h>

namespace bulwark {

namespace {
std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}
}  // namespace

std::uint64_t derive_seed(std::uint64_t seed, std::int64_t round, std::int64_t client,
                          Stream purpose) {
  // Chained mixing: each coordinate changes every output bit, and (1, 2) differs from (2, 1).
  std::uint64_t h = splitmix64(seed);
  h = splitmix64(h ^ static_cast<std::uint64_t>(round));
  h = splitmix64(h ^ static_cast<std::uint64_t>(client));
  h = splitmix64(h ^ static_cast<std::uint64_t>(purpose));
  return h;
}

at::Generator make_generator(std::uint64_t seed) {
  return at::make_generator<at::CPUGeneratorImpl>(seed);
}

at::Generator stream_generator(std::uint64_t seed, std::int64_t round, std::int64_t client,
                               Stream purpose) {
  return make_generator(derive_seed(seed, round, client, purpose));
}

}  // namespace bulwark

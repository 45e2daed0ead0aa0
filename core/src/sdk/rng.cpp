#include "bulwark/rng.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>

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

at::Generator make_generator(std::uint64_t seed, c10::Device device) {
  if (device.is_cpu()) return at::make_generator<at::CPUGeneratorImpl>(seed);
  // A device generator's type lives in that backend's library: clone the backend's default one
  // (through ATen's hooks, so this file needs no CUDA headers) and give the clone its own seed,
  // which also restarts its counter-based stream at offset 0.
  auto generator = at::globalContext().defaultGenerator(device).clone();
  generator.set_current_seed(seed);
  return generator;
}

at::Generator make_generator(std::uint64_t seed) { return make_generator(seed, c10::kCPU); }

at::Generator stream_generator(std::uint64_t seed, std::int64_t round, std::int64_t client,
                               Stream purpose, c10::Device device) {
  return make_generator(derive_seed(seed, round, client, purpose), device);
}

at::Generator stream_generator(std::uint64_t seed, std::int64_t round, std::int64_t client,
                               Stream purpose) {
  return stream_generator(seed, round, client, purpose, c10::kCPU);
}

}  // namespace bulwark

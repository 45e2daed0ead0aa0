#include "bulwark/noise.hpp"

#include <sys/random.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <string>

#include <ATen/ATen.h>

#include "bulwark/error.hpp"

namespace bulwark {

namespace {

std::uint32_t rotate_left(std::uint32_t x, int bits) { return (x << bits) | (x >> (32 - bits)); }

void quarter_round(std::uint32_t& a, std::uint32_t& b, std::uint32_t& c, std::uint32_t& d) {
  a += b, d ^= a, d = rotate_left(d, 16);
  c += d, b ^= c, b = rotate_left(b, 12);
  a += b, d ^= a, d = rotate_left(d, 8);
  c += d, b ^= c, b = rotate_left(b, 7);
}

/// Bytes from the kernel's CSPRNG; Error(Runtime) when it cannot give them.
void os_entropy(void* out, std::size_t size) {
  auto* bytes = static_cast<std::uint8_t*>(out);
  while (size > 0) {
    const auto got = ::getrandom(bytes, size, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      throw Error(ErrorKind::Runtime, std::string("secure_rng: getrandom failed: ") + std::strerror(errno));
    }
    bytes += got;
    size -= static_cast<std::size_t>(got);
  }
}

/// One thread's ChaCha20 keystream, keyed and given a nonce from the OS on first use, read as
/// 64-bit words. Per thread, so worker threads never share (or lock) a stream.
class SecureStream {
 public:
  SecureStream() {
    os_entropy(key_.data(), sizeof(key_));
    os_entropy(nonce_.data(), sizeof(nonce_));
  }

  std::uint64_t next() {
    if (used_ == block_.size()) refill();
    std::uint64_t word;
    std::memcpy(&word, block_.data() + used_, sizeof(word));
    used_ += sizeof(word);
    return word;
  }

 private:
  void refill() {
    if (counter_ == 0xFFFFFFFFu) {  // 256 GiB from one key: rekey rather than repeat the stream
      os_entropy(key_.data(), sizeof(key_));
      counter_ = 0;
    }
    block_ = chacha20_block(key_, counter_++, nonce_);
    used_ = 0;
  }

  std::array<std::uint32_t, 8> key_{};
  std::array<std::uint32_t, 3> nonce_{};
  std::uint32_t counter_ = 0;
  std::array<std::uint8_t, 64> block_{};
  std::size_t used_ = 64;
};

}  // namespace

std::array<std::uint8_t, 64> chacha20_block(const std::array<std::uint32_t, 8>& key, std::uint32_t counter,
                                            const std::array<std::uint32_t, 3>& nonce) {
  // "expand 32-byte k", the key, the block counter and the nonce (RFC 8439 §2.3).
  std::array<std::uint32_t, 16> state = {0x61707865, 0x3320646e, 0x79622d32, 0x6b206574, key[0], key[1], key[2],
                                         key[3],     key[4],     key[5],     key[6],     key[7], counter, nonce[0],
                                         nonce[1],   nonce[2]};
  auto x = state;
  for (int i = 0; i < 10; ++i) {  // 20 rounds: a column round and a diagonal round each time
    quarter_round(x[0], x[4], x[8], x[12]);
    quarter_round(x[1], x[5], x[9], x[13]);
    quarter_round(x[2], x[6], x[10], x[14]);
    quarter_round(x[3], x[7], x[11], x[15]);
    quarter_round(x[0], x[5], x[10], x[15]);
    quarter_round(x[1], x[6], x[11], x[12]);
    quarter_round(x[2], x[7], x[8], x[13]);
    quarter_round(x[3], x[4], x[9], x[14]);
  }
  std::array<std::uint8_t, 64> out{};
  for (std::size_t i = 0; i < 16; ++i) {
    const std::uint32_t word = x[i] + state[i];
    for (std::size_t b = 0; b < 4; ++b) out[4 * i + b] = static_cast<std::uint8_t>(word >> (8 * b));  // little-endian
  }
  return out;
}

at::Tensor secure_standard_normal(std::int64_t count) {
  thread_local SecureStream stream;
  auto out = at::empty({count}, at::kDouble);
  auto* values = out.data_ptr<double>();
  constexpr double kTwoPi = 6.283185307179586476925;
  constexpr double kUnit = 1.0 / 9007199254740992.0;  // 2^-53
  for (std::int64_t i = 0; i < count; i += 2) {
    // u1 in (0, 1] (its log is finite), u2 in [0, 1), each from 53 random bits.
    const double u1 = static_cast<double>((stream.next() >> 11) + 1) * kUnit;
    const double u2 = static_cast<double>(stream.next() >> 11) * kUnit;
    const double radius = std::sqrt(-2.0 * std::log(u1));
    values[i] = radius * std::cos(kTwoPi * u2);
    if (i + 1 < count) values[i + 1] = radius * std::sin(kTwoPi * u2);
  }
  return out;
}

at::Tensor gaussian_like(const at::Tensor& like, double stddev, const at::Generator& seeded, bool secure) {
  if (secure) {
    return secure_standard_normal(like.numel()).mul_(stddev).view(like.sizes()).to(like.options());
  }
  return at::empty(like.sizes(), like.options().device(seeded.device()))
      .normal_(0.0, stddev, seeded)
      .to(like.device());
}

}  // namespace bulwark

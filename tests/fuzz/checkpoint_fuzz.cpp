// Fuzzes the checkpoint decoder that `--resume` and the MPI ranks use: the input is the file.
#include <string>

#include "checkpoint.hpp"
#include "fuzz_support.hpp"

BULWARK_FUZZ_TARGET(checkpoint) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  bulwark::fuzz::expect_clean_error([&] { bulwark::decode_checkpoint(bytes, "checkpoint.bin"); });
  return 0;
}

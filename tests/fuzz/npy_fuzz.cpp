// Fuzzes the .npy reader that `bulwark aggregate` uses: the input is the file.
#include "fuzz_support.hpp"
#include "npy.hpp"

BULWARK_FUZZ_TARGET(npy) {
  const auto file = bulwark::fuzz::scratch() / "updates.npy";
  bulwark::fuzz::write_bytes(file, data, size);
  bulwark::fuzz::expect_clean_error([&] { bulwark::read_npy(file); });
  return 0;
}

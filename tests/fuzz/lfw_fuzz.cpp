// Fuzzes the lfw dataset plugin's JPEG decoding. Input: a byte of options (bits 0-1 pick crop
// 0 / 8 / 16 / 125, bits 2-4 size 1..8), then the bytes of a face, written as both faces of two
// people (min_images = 2, test_every = 2) so that a valid JPEG reaches cropping and averaging.
#include <filesystem>
#include <string>

#include "bulwark/dataset.hpp"
#include "config.hpp"
#include "fuzz_support.hpp"

BULWARK_FUZZ_TARGET(lfw) {
  using namespace bulwark;
  fuzz::ByteReader input(data, size);
  const auto flags = input.byte();
  const auto face = input.rest();
  const auto folder = fuzz::scratch() / "lfw";
  for (const auto* person : {"Ann", "Ben"}) {
    std::filesystem::create_directories(folder / person);
    for (const auto* file : {"1.jpg", "2.jpg"}) fuzz::write_bytes(folder / person / file, face);
  }
  constexpr int kCrops[] = {0, 8, 16, 125};
  const std::string options = "path = \"" + folder.string() + "\"\nmin_images = 2\ntest_every = 2\ncrop = " +
                              std::to_string(kCrops[flags & 3]) + "\nsize = " + std::to_string(1 + ((flags >> 2) & 7)) +
                              "\n";
  fuzz::expect_clean_error([&] {
    const auto library = fuzz::dataset_plugin("lfw");
    PluginHandle<DatasetLoader> loader(library, options_from_string(options, library->option_specs(), "lfw"));
    loader->load(DatasetContext{1});
  });
  return 0;
}

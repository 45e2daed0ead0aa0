// Fuzzes the idx dataset plugin. Input: a byte choosing which of the four files the rest of the
// input replaces (the other three are a valid two-image set), a byte of options (bits 0-1
// limit_train, bit 2 normalize), then that file's bytes (raw or gzipped).
#include <array>
#include <initializer_list>
#include <string>

#include "bulwark/dataset.hpp"
#include "config.hpp"
#include "fuzz_support.hpp"

namespace {

std::string header(std::uint32_t magic, std::initializer_list<std::uint32_t> sizes) {
  std::string out;
  auto put = [&](std::uint32_t w) {
    for (int shift = 24; shift >= 0; shift -= 8) out += static_cast<char>((w >> shift) & 0xFF);
  };
  put(magic);
  for (auto s : sizes) put(s);
  return out;
}

}  // namespace

BULWARK_FUZZ_TARGET(idx) {
  using namespace bulwark;
  fuzz::ByteReader input(data, size);
  const std::array<const char*, 4> names = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                            "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};
  std::array<std::string, 4> files = {header(0x803, {2, 2, 2}) + std::string("\x00\x40\x80\xff\x10\x20\x30\x40", 8),
                                      header(0x801, {2}) + std::string("\x01\x00", 2),
                                      header(0x803, {1, 2, 2}) + std::string("\x05\x06\x07\x08", 4),
                                      header(0x801, {1}) + std::string("\x01", 1)};
  const auto replaced = input.byte() % 4;
  const auto flags = input.byte();
  files[replaced] = input.rest();
  const auto folder = fuzz::scratch() / "idx";
  std::filesystem::create_directories(folder);
  for (std::size_t i = 0; i < files.size(); ++i) fuzz::write_bytes(folder / names[i], files[i]);
  const std::string options = "path = \"" + folder.string() + "\"\nlimit_train = " + std::to_string(flags & 3) +
                              "\nnormalize = " + ((flags & 4) ? "true" : "false") + "\n";
  fuzz::expect_clean_error([&] {
    const auto library = fuzz::dataset_plugin("idx");
    PluginHandle<DatasetLoader> loader(library, options_from_string(options, library->option_specs(), "idx"));
    loader->load(DatasetContext{1});
  });
  return 0;
}

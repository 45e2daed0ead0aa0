// Fuzzes the cifar dataset plugin. Input: a byte choosing the variant (bit 0: cifar100), the
// label (bit 1: coarse) and which file the rest of the input replaces (bits 2-4; the other files
// hold one valid record each), a byte of options (bits 0-1 limit_train, bit 2 normalize), then
// that file's bytes.
#include <string>
#include <vector>

#include "bulwark/dataset.hpp"
#include "config.hpp"
#include "fuzz_support.hpp"

BULWARK_FUZZ_TARGET(cifar) {
  using namespace bulwark;
  fuzz::ByteReader input(data, size);
  const auto choice = input.byte();
  const auto flags = input.byte();
  const bool cifar100 = choice & 1;
  const std::vector<std::string> names =
      cifar100 ? std::vector<std::string>{"train.bin", "test.bin"}
               : std::vector<std::string>{"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                                          "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"};
  const std::string record = (cifar100 ? std::string("\x03\x07", 2) : std::string("\x07", 1)) +
                             std::string(3072, '\x80');
  const auto folder = fuzz::scratch() / (cifar100 ? "cifar100" : "cifar10");
  std::filesystem::create_directories(folder);
  const auto replaced = (choice >> 2) % names.size();
  for (std::size_t i = 0; i < names.size(); ++i) {
    fuzz::write_bytes(folder / names[i], i == replaced ? input.rest() : record);
  }
  const std::string options = "path = \"" + folder.string() + "\"\nvariant = \"" +
                              (cifar100 ? "cifar100" : "cifar10") + "\"\nlabel = \"" +
                              ((choice & 2) ? "coarse" : "fine") + "\"\nlimit_train = " +
                              std::to_string(flags & 3) + "\nnormalize = " + ((flags & 4) ? "true" : "false") + "\n";
  fuzz::expect_clean_error([&] {
    const auto library = fuzz::dataset_plugin("cifar");
    PluginHandle<DatasetLoader> loader(library, options_from_string(options, library->option_specs(), "cifar"));
    loader->load(DatasetContext{1});
  });
  return 0;
}

// Fuzzes the csv dataset plugin. Input: one byte of options (bit 0 header, 1 missing = "zero",
// 2 categorical = "1", 3 label_column = "0", 4 delimiter ';', 5 the file is also the test file),
// then the CSV file.
#include <string>

#include "bulwark/dataset.hpp"
#include "config.hpp"
#include "fuzz_support.hpp"

BULWARK_FUZZ_TARGET(csv) {
  using namespace bulwark;
  fuzz::ByteReader input(data, size);
  const auto flags = input.byte();
  const auto file = fuzz::scratch() / "table.csv";
  fuzz::write_bytes(file, input.rest());
  std::string options = "path = \"" + file.string() + "\"\n";
  options += (flags & 1) ? "header = true\n" : "header = false\n";
  if (flags & 2) options += "missing = \"zero\"\n";
  if (flags & 4) options += "categorical = \"1\"\n";
  if (flags & 8) options += "label_column = \"0\"\n";
  if (flags & 16) options += "delimiter = \";\"\n";
  if (flags & 32) options += "test_path = \"" + file.string() + "\"\n";
  fuzz::expect_clean_error([&] {
    const auto library = fuzz::dataset_plugin("csv");
    PluginHandle<DatasetLoader> loader(library, options_from_string(options, library->option_specs(), "csv"));
    loader->load(DatasetContext{1});
  });
  return 0;
}

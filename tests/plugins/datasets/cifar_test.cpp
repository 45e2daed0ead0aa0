// The cifar dataset plugin on small CIFAR-10 / CIFAR-100 binary files written here.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <torch/torch.h>

#include "dataset_loading.hpp"

namespace {

namespace fs = std::filesystem;

// One record: label bytes, then the red plane = r, green = g, blue = b; pixel 0 of red is `first`
// so records can be told apart.
std::string record(const std::vector<int>& label_bytes, int r, int g, int b, int first) {
  std::string out;
  for (int label : label_bytes) out += static_cast<char>(label);
  out += std::string(1024, static_cast<char>(r));
  out += std::string(1024, static_cast<char>(g));
  out += std::string(1024, static_cast<char>(b));
  out[label_bytes.size()] = static_cast<char>(first);
  return out;
}

// CIFAR-10: 5 training batches of 2 records i = 0..9 (label i, red 10, green 20 + 2i, blue 30 + i,
// red pixel 0 = i) and a test batch of 3.
fs::path cifar10_dir(const std::string& name) {
  auto dir = bulwark::test::scratch_dir("cifar/" + name);
  for (int batch = 1; batch <= 5; ++batch) {
    std::string bytes;
    for (int k = 0; k < 2; ++k) {
      const int i = 2 * (batch - 1) + k;
      bytes += record({i}, 10, 20 + 2 * i, 30 + i, i);
    }
    bulwark::test::write_file(dir / ("data_batch_" + std::to_string(batch) + ".bin"), bytes);
  }
  bulwark::test::write_file(
      dir / "test_batch.bin",
      record({3}, 1, 2, 3, 100) + record({5}, 1, 2, 3, 101) + record({9}, 1, 2, 3, 102));
  return dir;
}

bulwark::Dataset load(const fs::path& dir, const std::string& extra = "") {
  return bulwark::test::load_dataset("cifar", bulwark::test::path_option(dir) + extra);
}

std::string load_error(const fs::path& dir, const std::string& extra = "") {
  return bulwark::test::dataset_error("cifar", bulwark::test::path_option(dir) + extra);
}

}  // namespace

TEST_CASE("cifar: CIFAR-10 batches load in order as [N, 3, 32, 32] planes") {
  auto data = load(cifar10_dir("good"));
  CHECK(data.train_inputs.sizes() == torch::IntArrayRef({10, 3, 32, 32}));
  CHECK(data.test_inputs.sizes() == torch::IntArrayRef({3, 3, 32, 32}));
  CHECK(data.num_classes == 10);
  CHECK(data.input_shape == std::vector<std::int64_t>{3, 32, 32});
  CHECK(torch::equal(data.train_labels, torch::arange(10, torch::kLong)));
  CHECK(torch::equal(data.test_labels, torch::tensor({3, 5, 9}, torch::kLong)));
  // Record 7 (data_batch_4, second record): red 10, green 34, blue 37, red pixel 0 = 7.
  auto image = data.train_inputs[7];
  CHECK(image[0][0][0].item<float>() == doctest::Approx(7.0 / 255));
  CHECK(image[0][31][31].item<float>() == doctest::Approx(10.0 / 255));
  CHECK(image[1][5][9].item<float>() == doctest::Approx(34.0 / 255));
  CHECK(image[2][31][0].item<float>() == doctest::Approx(37.0 / 255));
  CHECK(data.test_inputs[2][0][0][0].item<float>() == doctest::Approx(102.0 / 255));
}

TEST_CASE("cifar: limit_train reads across batch files") {
  auto data = load(cifar10_dir("limit"), "limit_train = 3\nlimit_test = 2");
  CHECK(torch::equal(data.train_labels, torch::tensor({0, 1, 2}, torch::kLong)));
  CHECK(data.test_labels.size(0) == 2);
}

TEST_CASE("cifar: normalize standardises each channel with training statistics") {
  auto dir = cifar10_dir("norm");
  auto plain = load(dir);
  auto norm = load(dir, "normalize = true");
  auto channel_means = norm.train_inputs.mean({0, 2, 3});
  CHECK(channel_means.abs().max().item<double>() < 1e-4);
  auto mean = plain.train_inputs.mean({0, 2, 3}, true);
  auto stdev = plain.train_inputs.std({0, 2, 3}, false, true);
  CHECK(torch::allclose(norm.test_inputs, (plain.test_inputs - mean) / stdev, 1e-4, 1e-4));
}

TEST_CASE("cifar: CIFAR-100 fine and coarse labels") {
  auto dir = bulwark::test::scratch_dir("cifar/c100");
  bulwark::test::write_file(dir / "train.bin",
                            record({19, 99}, 0, 0, 0, 0) + record({4, 42}, 0, 0, 0, 1));
  bulwark::test::write_file(dir / "test.bin", record({0, 7}, 0, 0, 0, 2));
  auto fine = load(dir, "variant = \"cifar100\"");
  CHECK(fine.num_classes == 100);
  CHECK(torch::equal(fine.train_labels, torch::tensor({99, 42}, torch::kLong)));
  CHECK(fine.train_inputs[1][0][0][0].item<float>() == doctest::Approx(1.0 / 255));
  auto coarse = load(dir, "variant = \"cifar100\"\nlabel = \"coarse\"");
  CHECK(coarse.num_classes == 20);
  CHECK(torch::equal(coarse.train_labels, torch::tensor({19, 4}, torch::kLong)));
  CHECK(torch::equal(coarse.test_labels, torch::tensor({0}, torch::kLong)));
  // Green and blue are constant here: normalising leaves them finite (std 0 is taken as 1).
  auto normed = load(dir, "variant = \"cifar100\"\nnormalize = true");
  CHECK(torch::isfinite(normed.train_inputs).all().item<bool>());
}

TEST_CASE("cifar: a truncated file is reported with its name and sizes") {
  auto dir = cifar10_dir("trunc");
  const auto path = dir / "data_batch_2.bin";
  auto bytes = bulwark::test::read_file(path);
  bulwark::test::write_file(path, bytes.substr(0, bytes.size() - 100));
  auto message = load_error(dir);
  CHECK(message.find("data_batch_2.bin") != std::string::npos);
  CHECK(message.find("truncated") != std::string::npos);
  CHECK(message.find("multiple of 3073-byte records, found 6046 bytes") != std::string::npos);
}

TEST_CASE("cifar: a label out of range is reported with file and record") {
  auto dir = cifar10_dir("label");
  bulwark::test::write_file(dir / "test_batch.bin",
                            record({3}, 0, 0, 0, 0) + record({10}, 0, 0, 0, 0));
  auto message = load_error(dir);
  CHECK(message.find("test_batch.bin") != std::string::npos);
  CHECK(message.find("label out of range in record 1") != std::string::npos);
  CHECK(message.find("expected 0..9, found 10") != std::string::npos);

  // CIFAR-100: the fine label byte is checked against 100 classes.
  auto c100 = bulwark::test::scratch_dir("cifar/c100-bad");
  bulwark::test::write_file(c100 / "train.bin", record({3, 120}, 0, 0, 0, 0));
  bulwark::test::write_file(c100 / "test.bin", record({3, 1}, 0, 0, 0, 0));
  message = load_error(c100, "variant = \"cifar100\"");
  CHECK(message.find("train.bin: label out of range in record 0 (expected 0..99, found 120)") !=
        std::string::npos);
}

TEST_CASE("cifar: missing files and folders are reported") {
  auto dir = cifar10_dir("missing");
  fs::remove(dir / "data_batch_3.bin");
  auto message = load_error(dir);
  CHECK(message.find("data_batch_3.bin: file not found") != std::string::npos);
  message = load_error(dir / "nowhere");
  CHECK(message.find("nowhere: dataset folder not found") != std::string::npos);
}

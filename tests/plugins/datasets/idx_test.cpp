// The idx dataset plugin on small IDX files written here (raw and gzipped, good and broken), and
// on the real Fashion-MNIST files when the machine has them.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <torch/torch.h>

#include "dataset_loading.hpp"

namespace {

namespace fs = std::filesystem;

std::string be32(std::uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}
std::string le32(std::uint32_t v) {
  return {static_cast<char>(v), static_cast<char>(v >> 8), static_cast<char>(v >> 16),
          static_cast<char>(v >> 24)};
}

// Pixel k of image i: (7 i + k) mod 256, so every image and position differs.
std::string images_file(std::uint32_t n, std::uint32_t rows, std::uint32_t cols,
                        std::uint32_t magic = 0x00000803) {
  std::string out = be32(magic) + be32(n) + be32(rows) + be32(cols);
  for (std::uint32_t i = 0; i < n; ++i) {
    for (std::uint32_t k = 0; k < rows * cols; ++k) out += static_cast<char>((7 * i + k) % 256);
  }
  return out;
}

std::string labels_file(const std::vector<int>& labels, std::uint32_t magic = 0x00000801) {
  std::string out = be32(magic) + be32(static_cast<std::uint32_t>(labels.size()));
  for (int label : labels) out += static_cast<char>(label);
  return out;
}

std::uint32_t crc32(const std::string& data) {
  std::uint32_t crc = 0xFFFFFFFFu;
  for (unsigned char byte : data) {
    crc ^= byte;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

// A valid gzip member (RFC 1952) holding `data` in stored deflate blocks (RFC 1951 BTYPE 00):
// what gzip writes for incompressible data, and all a reader needs to prove it inflates.
std::string gzip(const std::string& data) {
  std::string out("\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff", 10);
  std::size_t pos = 0;
  do {
    const std::size_t len = std::min<std::size_t>(65535, data.size() - pos);
    const bool last = pos + len == data.size();
    out += static_cast<char>(last ? 1 : 0);
    out += static_cast<char>(len & 0xFF);
    out += static_cast<char>(len >> 8);
    out += static_cast<char>(~len & 0xFF);
    out += static_cast<char>((~len >> 8) & 0xFF);
    out += data.substr(pos, len);
    pos += len;
  } while (pos < data.size());
  return out + le32(crc32(data)) + le32(static_cast<std::uint32_t>(data.size()));
}

struct Files {
  std::string train_images, train_labels, test_images, test_labels;
};

// A well-formed set: 6 training images of 4x3 pixels, 3 test images.
Files good_files() {
  return {images_file(6, 4, 3), labels_file({0, 1, 2, 9, 4, 5}), images_file(3, 4, 3),
          labels_file({7, 8, 9})};
}

fs::path write_set(const std::string& name, const Files& files, bool gzipped) {
  auto dir = bulwark::test::scratch_dir("idx/" + name);
  auto put = [&](const char* stem, const std::string& bytes) {
    if (gzipped)
      bulwark::test::write_file(dir / (std::string(stem) + ".gz"), gzip(bytes));
    else
      bulwark::test::write_file(dir / stem, bytes);
  };
  put("train-images-idx3-ubyte", files.train_images);
  put("train-labels-idx1-ubyte", files.train_labels);
  put("t10k-images-idx3-ubyte", files.test_images);
  put("t10k-labels-idx1-ubyte", files.test_labels);
  return dir;
}

bulwark::Dataset load(const fs::path& dir, const std::string& extra = "") {
  return bulwark::test::load_dataset("idx", bulwark::test::path_option(dir) + extra, 1);
}

std::string load_error(const fs::path& dir, const std::string& extra = "") {
  return bulwark::test::dataset_error("idx", bulwark::test::path_option(dir) + extra, 1);
}

}  // namespace

TEST_CASE("idx: raw files load with [N, 1, rows, cols] pixels in [0, 1] and int64 labels") {
  auto data = load(write_set("raw", good_files(), /*gzipped=*/false));
  CHECK(data.train_inputs.sizes() == torch::IntArrayRef({6, 1, 4, 3}));
  CHECK(data.test_inputs.sizes() == torch::IntArrayRef({3, 1, 4, 3}));
  CHECK((data.train_inputs.scalar_type() == torch::kFloat));
  CHECK((data.train_labels.scalar_type() == torch::kLong));
  CHECK(data.num_classes == 10);
  CHECK(data.input_shape == std::vector<std::int64_t>{1, 4, 3});
  CHECK(torch::equal(data.train_labels, torch::tensor({0, 1, 2, 9, 4, 5}, torch::kLong)));
  CHECK(torch::equal(data.test_labels, torch::tensor({7, 8, 9}, torch::kLong)));
  // Image 5, pixel (2, 1) = flat 7: byte (7*5 + 7) mod 256 = 42 -> 42/255.
  CHECK(data.train_inputs[5][0][2][1].item<float>() == doctest::Approx(42.0 / 255.0));
  // Test image 2, pixel (3, 2) = flat 11: (14 + 11) = 25 -> 25/255.
  CHECK(data.test_inputs[2][0][3][2].item<float>() == doctest::Approx(25.0 / 255.0));
  CHECK(data.description.find("6 train / 3 test") != std::string::npos);
}

TEST_CASE("idx: gzipped files give exactly the raw files' tensors") {
  auto raw = load(write_set("raw2", good_files(), false));
  auto gz = load(write_set("gz", good_files(), true));
  CHECK(torch::equal(raw.train_inputs, gz.train_inputs));
  CHECK(torch::equal(raw.test_inputs, gz.test_inputs));
  CHECK(torch::equal(raw.train_labels, gz.train_labels));
  CHECK(torch::equal(raw.test_labels, gz.test_labels));
}

TEST_CASE("idx: a gzipped file larger than one stored block (>64 KiB) inflates intact") {
  Files files = good_files();
  files.train_images = images_file(200, 28, 28);  // 156,816 bytes: three stored blocks
  std::vector<int> labels(200);
  for (int i = 0; i < 200; ++i) labels[i] = i % 10;
  files.train_labels = labels_file(labels);
  files.test_images = images_file(3, 28, 28);
  auto raw = load(write_set("big-raw", files, false));
  auto gz = load(write_set("big-gz", files, true));
  CHECK(gz.train_inputs.sizes() == torch::IntArrayRef({200, 1, 28, 28}));
  CHECK(torch::equal(raw.train_inputs, gz.train_inputs));
}

TEST_CASE("idx: normalize standardises with the training set's mean and std") {
  auto dir = write_set("norm", good_files(), false);
  auto plain = load(dir);
  auto norm = load(dir, "normalize = true");
  const double mean = plain.train_inputs.mean().item<double>();
  const double stdev = plain.train_inputs.std(/*unbiased=*/false).item<double>();
  CHECK(norm.train_inputs.mean().item<double>() == doctest::Approx(0.0).epsilon(1e-5));
  CHECK(norm.train_inputs.std(false).item<double>() == doctest::Approx(1.0).epsilon(1e-5));
  // The test split uses the training statistics, not its own.
  CHECK(torch::allclose(norm.test_inputs, (plain.test_inputs - mean) / stdev, 1e-5, 1e-5));
}

TEST_CASE("idx: limit_train and limit_test keep the first examples") {
  auto dir = write_set("limit", good_files(), true);
  auto all = load(dir);
  auto some = load(dir, "limit_train = 4\nlimit_test = 1");
  CHECK(some.train_inputs.size(0) == 4);
  CHECK(some.test_inputs.size(0) == 1);
  CHECK(torch::equal(some.train_inputs, all.train_inputs.narrow(0, 0, 4)));
  CHECK(torch::equal(some.train_labels, all.train_labels.narrow(0, 0, 4)));
  CHECK(torch::equal(some.test_labels, all.test_labels.narrow(0, 0, 1)));
}

TEST_CASE("idx: truncated image data is reported with the file name") {
  for (bool gzipped : {false, true}) {
    CAPTURE(gzipped);
    Files files = good_files();
    files.train_images.resize(files.train_images.size() - 5);
    auto message = load_error(write_set(gzipped ? "trunc-gz" : "trunc", files, gzipped));
    CHECK(message.find("train-images-idx3-ubyte") != std::string::npos);
    CHECK(message.find("truncated") != std::string::npos);
    CHECK(message.find("declares 6 images") != std::string::npos);
  }
}

TEST_CASE("idx: a header that declares billions of items fails as truncated data, not in the allocator") {
  for (bool gzipped : {false, true}) {
    CAPTURE(gzipped);
    Files files = good_files();
    const std::uint32_t claimed = 0xFFFFFFF0;  // 4.29e9 images of 28x28: 3.4 TB if believed
    files.train_images = be32(0x00000803) + be32(claimed) + be32(28) + be32(28) + std::string(784 * 2, '\x01');
    files.train_labels = be32(0x00000801) + be32(claimed) + std::string(2, '\x01');
    files.test_images = images_file(3, 28, 28);
    auto message = load_error(write_set(gzipped ? "huge-gz" : "huge", files, gzipped));
    CHECK(message.find("train-images-idx3-ubyte") != std::string::npos);
    CHECK(message.find("truncated data (the header declares 4294967280 images") != std::string::npos);
  }
}

TEST_CASE("idx: a gzip stream cut short is reported as truncated with the file name") {
  auto dir = write_set("gz-cut", good_files(), true);
  const auto path = dir / "t10k-images-idx3-ubyte.gz";
  auto bytes = bulwark::test::read_file(path);
  bulwark::test::write_file(path, bytes.substr(0, bytes.size() - 20));  // trailer and some pixels
  auto message = load_error(dir);
  CHECK(message.find("t10k-images-idx3-ubyte.gz") != std::string::npos);
  CHECK(message.find("truncated") != std::string::npos);
}

TEST_CASE("idx: a truncated header is reported") {
  Files files = good_files();
  files.test_labels = files.test_labels.substr(0, 6);
  auto message = load_error(write_set("trunc-header", files, false));
  CHECK(message.find("t10k-labels-idx1-ubyte") != std::string::npos);
  CHECK(message.find("truncated header") != std::string::npos);
}

TEST_CASE("idx: a wrong magic number is reported with expected and found values") {
  Files files = good_files();
  files.train_labels = labels_file({0, 1, 2, 3, 4, 5}, /*magic=*/0x00000803);
  auto message = load_error(write_set("magic", files, false));
  CHECK(message.find("train-labels-idx1-ubyte") != std::string::npos);
  CHECK(message.find("wrong magic number (expected 0x00000801") != std::string::npos);
  CHECK(message.find("found 0x00000803") != std::string::npos);
}

TEST_CASE("idx: image and label counts must agree") {
  Files files = good_files();
  files.test_labels = labels_file({7, 8});
  auto message = load_error(write_set("count", files, true));
  CHECK(message.find("t10k-labels-idx1-ubyte.gz") != std::string::npos);
  CHECK(message.find("label count does not match") != std::string::npos);
  CHECK(message.find("expected 3") != std::string::npos);
  CHECK(message.find("found 2") != std::string::npos);
}

TEST_CASE("idx: a label >= num_classes is reported with its position") {
  Files files = good_files();
  files.train_labels = labels_file({0, 1, 2, 3, 10, 5});
  auto message = load_error(write_set("label", files, false));
  CHECK(message.find("train-labels-idx1-ubyte") != std::string::npos);
  CHECK(message.find("label out of range at item 4") != std::string::npos);
  CHECK(message.find("expected 0..9, found 10") != std::string::npos);
  // The same file is fine for a data set with more classes.
  CHECK(load(write_set("label-ok", files, false), "num_classes = 11").num_classes == 11);
}

TEST_CASE("idx: extra bytes after the declared data are an error") {
  Files files = good_files();
  files.test_images += "xyz";
  auto message = load_error(write_set("extra", files, false));
  CHECK(message.find("t10k-images-idx3-ubyte") != std::string::npos);
  CHECK(message.find("more data than the header declares") != std::string::npos);
}

TEST_CASE("idx: missing folder and missing files are reported") {
  auto missing = bulwark::test::scratch_dir("idx/missing") / "nowhere";
  auto message = load_error(missing);
  CHECK(message.find("nowhere") != std::string::npos);
  CHECK(message.find("folder not found") != std::string::npos);

  auto dir = write_set("missing-file", good_files(), false);
  fs::remove(dir / "t10k-labels-idx1-ubyte");
  message = load_error(dir);
  CHECK(message.find("t10k-labels-idx1-ubyte[.gz]: file not found") != std::string::npos);
}

TEST_CASE("idx: the real Fashion-MNIST files (60000 / 10000, balanced labels 0..9)") {
  const fs::path fmnist = "/usr/share/datasets/fashion-mnist";
  if (!fs::exists(fmnist / "train-images-idx3-ubyte.gz") &&
      !fs::exists(fmnist / "train-images-idx3-ubyte")) {
    MESSAGE("Fashion-MNIST not installed at " << fmnist << "; checking the install hint instead");
    CHECK(load_error(fmnist).find("apt-get install dataset-fashion-mnist") != std::string::npos);
    return;
  }
  const auto start = std::chrono::steady_clock::now();
  auto loader = bulwark::test::load<bulwark::DatasetLoader>("idx");  // the default path
  auto data = loader->load(bulwark::DatasetContext{0});
  const auto seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  MESSAGE("Fashion-MNIST loaded in " << seconds << " s: " << data.description);
  CHECK(data.train_inputs.sizes() == torch::IntArrayRef({60000, 1, 28, 28}));
  CHECK(data.test_inputs.sizes() == torch::IntArrayRef({10000, 1, 28, 28}));
  CHECK(data.description.rfind("Fashion-MNIST", 0) == 0);
  CHECK(data.train_inputs.min().item<float>() == 0.0f);
  CHECK(data.train_inputs.max().item<float>() == 1.0f);
  // Fashion-MNIST has exactly 6000 training and 1000 test images per class.
  CHECK(torch::equal(torch::bincount(data.train_labels), torch::full({10}, 6000, torch::kLong)));
  CHECK(torch::equal(torch::bincount(data.test_labels), torch::full({10}, 1000, torch::kLong)));
}

// CIFAR-10 and CIFAR-100 in their binary distribution format (Krizhevsky 2009).
//
// A file is a sequence of fixed-size records, no header:
//   CIFAR-10:  <label byte 0..9> <3072 pixel bytes>          data_batch_1..5.bin, test_batch.bin
//   CIFAR-100: <coarse 0..19> <fine 0..99> <3072 pixel bytes>  train.bin, test.bin
// The 3072 pixels are the 32x32 red plane, then green, then blue (row-major): exactly [3, 32, 32].
// Pixels p become x = p / 255; with normalize = true, x_c = (p / 255 - mean_c) / std_c with the
// training set's per-channel mean and std, the usual CIFAR preprocessing.
//
// A. Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", Tech. report, University
// of Toronto, 2009.
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "bulwark/error.hpp"
#include "bulwark/plugin.hpp"

namespace {

namespace fs = std::filesystem;

constexpr bulwark::OptionSpec kOptions[] = {
    {"path", bulwark::OptType::String, "\"\"", -bulwark::kInf, bulwark::kInf,
     "Folder with the binary files; empty = /usr/share/datasets/cifar-10-batches-bin or "
     "/usr/share/datasets/cifar-100-binary (the folders the official archives unpack to).",
     nullptr},
    {"variant", bulwark::OptType::String, "\"cifar10\"", -bulwark::kInf, bulwark::kInf,
     "cifar10 (data_batch_1..5.bin, test_batch.bin) or cifar100 (train.bin, test.bin).",
     "cifar10|cifar100"},
    {"label", bulwark::OptType::String, "\"fine\"", -bulwark::kInf, bulwark::kInf,
     "CIFAR-100 only: fine (100 classes) or coarse (20 superclasses).", "fine|coarse"},
    {"normalize", bulwark::OptType::Bool, "false", 0, 1,
     "Standardise each colour channel with the training set's mean and std (false: [0, 1]).",
     nullptr},
    {"limit_train", bulwark::OptType::Int, "0", 0, bulwark::kInf,
     "Keep only the first N training examples (0 = all).", nullptr},
    {"limit_test", bulwark::OptType::Int, "0", 0, bulwark::kInf,
     "Keep only the first N test examples (0 = all).", nullptr},
};

constexpr std::int64_t kPixels = 3 * 32 * 32;

[[noreturn]] void data_error(const std::string& message) {
  throw bulwark::Error(bulwark::ErrorKind::Data, message);
}

struct Layout {
  std::int64_t label_bytes;  // bytes before the pixels
  std::int64_t label_byte;   // which of them is the label used
  std::int64_t classes;
  std::vector<std::string> train_files, test_files;
  std::string name, default_path;
};

Layout layout_for(const std::string& variant, const std::string& label) {
  if (variant == "cifar100") {
    const bool fine = label == "fine";
    return {2,
            fine ? 1 : 0,
            fine ? 100 : 20,
            {"train.bin"},
            {"test.bin"},
            fine ? "CIFAR-100" : "CIFAR-100 (coarse labels)",
            "/usr/share/datasets/cifar-100-binary"};
  }
  return {1,
          0,
          10,
          {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin",
           "data_batch_5.bin"},
          {"test_batch.bin"},
          "CIFAR-10",
          "/usr/share/datasets/cifar-10-batches-bin"};
}

// Reads `files` (in order) into one uint8 [N, record] tensor, checking each file's size and labels
// so that an error names the file at fault. Stops after `limit` records when limit > 0.
torch::Tensor read_records(const fs::path& folder, const std::vector<std::string>& files,
                           const Layout& layout, std::int64_t limit) {
  const std::int64_t record = layout.label_bytes + kPixels;
  std::vector<std::int64_t> counts;
  for (const auto& file : files) {
    const auto path = folder / file;
    std::error_code ec;
    const auto bytes = static_cast<std::int64_t>(fs::file_size(path, ec));
    if (ec) {
      data_error(path.string() + ": file not found; set `path` to the folder of the " +
                 layout.name + " binary version (expected " + c10::Join(", ", files) + ")");
    }
    if (bytes == 0 || bytes % record != 0) {
      data_error(path.string() + ": truncated or not a " + layout.name +
                 " binary file (expected a multiple of " + std::to_string(record) +
                 "-byte records, found " + std::to_string(bytes) + " bytes = " +
                 std::to_string(bytes / record) + " records + " + std::to_string(bytes % record) +
                 " bytes); download the binary version again, and check `variant`");
    }
    counts.push_back(bytes / record);
  }
  std::int64_t total = 0;
  for (auto& count : counts) {
    if (limit > 0) count = std::min(count, limit - total);
    total += count;
  }
  auto out = torch::empty({total, record}, torch::kUInt8);
  std::int64_t row = 0;
  for (std::size_t f = 0; f < files.size() && counts[f] > 0; ++f) {
    const auto path = folder / files[f];
    std::ifstream in(path, std::ios::binary);
    auto chunk = out.narrow(0, row, counts[f]);
    in.read(static_cast<char*>(chunk.data_ptr()), counts[f] * record);
    if (in.gcount() != counts[f] * record) {
      data_error(path.string() + ": read failed after " + std::to_string(in.gcount()) +
                 " bytes; check that the file is readable");
    }
    const auto labels = chunk.select(1, layout.label_byte);
    const auto bad = (labels >= layout.classes).nonzero();
    if (bad.size(0) > 0) {
      const auto index = bad[0][0].item<std::int64_t>();
      data_error(path.string() + ": label out of range in record " + std::to_string(index) +
                 " (expected 0.." + std::to_string(layout.classes - 1) + ", found " +
                 std::to_string(labels[index].item<int>()) +
                 "); the file is corrupt, or `variant` "
                 "does not match it");
    }
    row += counts[f];
  }
  return out;
}

class CifarDataset final : public bulwark::DatasetLoader {
 public:
  explicit CifarDataset(const bulwark::Options& options)
      : layout_(layout_for(options.get<std::string>("variant"), options.get<std::string>("label"))),
        path_(options.get<std::string>("path")),
        normalize_(options.get<bool>("normalize")),
        limit_train_(options.get<std::int64_t>("limit_train")),
        limit_test_(options.get<std::int64_t>("limit_test")) {
    if (path_.empty()) path_ = layout_.default_path;
  }

  bulwark::Dataset load(const bulwark::DatasetContext&) override {
    if (!fs::is_directory(path_)) {
      data_error(path_ + ": dataset folder not found; set `path` to the unpacked " + layout_.name +
                 " binary version (the folder holding " + c10::Join(", ", layout_.train_files) +
                 ")");
    }
    auto train = read_records(path_, layout_.train_files, layout_, limit_train_);
    auto test = read_records(path_, layout_.test_files, layout_, limit_test_);

    bulwark::Dataset data;
    std::tie(data.train_inputs, data.train_labels) = split(train);
    std::tie(data.test_inputs, data.test_labels) = split(test);
    std::string scaling = "pixels in [0, 1]";
    if (normalize_) {
      const auto mean = data.train_inputs.mean({0, 2, 3}, /*keepdim=*/true);
      auto stdev = data.train_inputs.std({0, 2, 3}, /*unbiased=*/false, /*keepdim=*/true);
      stdev.masked_fill_(stdev == 0, 1.0);  // a constant channel stays constant
      data.train_inputs.sub_(mean).div_(stdev);
      data.test_inputs.sub_(mean).div_(stdev);
      scaling = "normalised per channel with train mean/std";
    }
    data.num_classes = layout_.classes;
    data.input_shape = {3, 32, 32};
    data.description = layout_.name + " (binary, " + std::to_string(data.train_labels.size(0)) +
                       " train / " + std::to_string(data.test_labels.size(0)) + " test, " +
                       scaling + ")";
    return data;
  }

 private:
  std::pair<torch::Tensor, torch::Tensor> split(const torch::Tensor& records) const {
    const auto n = records.size(0);
    auto inputs = records.narrow(1, layout_.label_bytes, kPixels)
                      .reshape({n, 3, 32, 32})
                      .to(torch::kFloat)
                      .div_(255.0);
    auto labels = records.select(1, layout_.label_byte).to(torch::kLong);
    return {inputs, labels};
  }

  Layout layout_;
  std::string path_;
  bool normalize_;
  std::int64_t limit_train_, limit_test_;
};

}  // namespace

BULWARK_PLUGIN(
    bulwark::DatasetLoader, CifarDataset, "cifar", "1.0.0", "CIFAR-10 / CIFAR-100 binary files",
    "Reads the binary version of CIFAR-10 (data_batch_1..5.bin, test_batch.bin; one "
    "label byte + 3072 pixel bytes per record) and CIFAR-100 (train.bin, test.bin; "
    "coarse and fine label bytes + 3072 pixels), Krizhevsky, 'Learning Multiple Layers "
    "of Features from Tiny Images', 2009. Images become float32 [N, 3, 32, 32] in [0, 1] "
    "or standardised per channel (normalize = true); labels int64. A truncated file, a "
    "label out of range or a missing file is reported by name.",
    kOptions)

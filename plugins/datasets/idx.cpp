// IDX image/label files: MNIST (LeCun et al. 1998), Fashion-MNIST (Xiao et al. 2017), KMNIST and
// the other drop-in replacements that ship the same four files.
//
// Format (big-endian header, then raw unsigned bytes):
//   images: magic 0x00000803 (ubyte, 3 dims), N, rows, cols, then N * rows * cols pixels
//   labels: magic 0x00000801 (ubyte, 1 dim),  N,             then N label bytes
// Each file may be gzipped (the distributed form) or raw. Pixels p become x = p / 255 in [0, 1];
// with normalize = true, x = (p / 255 - mean) / std with the training set's pixel mean and std.
//
// Y. LeCun, L. Bottou, Y. Bengio, P. Haffner, "Gradient-based learning applied to document
// recognition", Proc. IEEE 1998; H. Xiao, K. Rasul, R. Vollgraf, "Fashion-MNIST: a Novel Image
// Dataset for Benchmarking Machine Learning Algorithms", arXiv:1708.07747, 2017.
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "bulwark/error.hpp"
#include "bulwark/plugin.hpp"

namespace {

namespace fs = std::filesystem;

constexpr const char* kDefaultPath = "/usr/share/datasets/fashion-mnist";

constexpr bulwark::OptionSpec kOptions[] = {
    {"path", bulwark::OptType::String, "\"/usr/share/datasets/fashion-mnist\"", -bulwark::kInf,
     bulwark::kInf,
     "Folder holding train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte "
     "and t10k-labels-idx1-ubyte, each raw or .gz.",
     nullptr},
    {"name", bulwark::OptType::String, "\"\"", -bulwark::kInf, bulwark::kInf,
     "Display name; empty = derived from the folder (fashion-mnist -> Fashion-MNIST).", nullptr},
    {"normalize", bulwark::OptType::Bool, "false", 0, 1,
     "Standardise pixels with the training set's mean and std (false: pixels in [0, 1]).", nullptr},
    {"num_classes", bulwark::OptType::Int, "10", 2, 256,
     "Number of classes; a label byte >= num_classes is an error (10 for MNIST/Fashion-MNIST).",
     nullptr},
    {"limit_train", bulwark::OptType::Int, "0", 0, bulwark::kInf,
     "Keep only the first N training examples (0 = all).", nullptr},
    {"limit_test", bulwark::OptType::Int, "0", 0, bulwark::kInf,
     "Keep only the first N test examples (0 = all).", nullptr},
};

constexpr std::uint32_t kImageMagic = 0x00000803;
constexpr std::uint32_t kLabelMagic = 0x00000801;

[[noreturn]] void data_error(const std::string& message) {
  throw bulwark::Error(bulwark::ErrorKind::Data, message);
}

std::string hex(std::uint32_t value) {
  char buffer[11];
  std::snprintf(buffer, sizeof buffer, "0x%08X", value);
  return buffer;
}

// One IDX file opened through zlib, which reads gzipped and raw files alike.
class IdxFile {
 public:
  explicit IdxFile(fs::path path) : path_(std::move(path)), file_(gzopen(path_.c_str(), "rb")) {
    if (!file_) data_error(path_.string() + ": cannot open (" + std::strerror(errno) + ")");
    gzbuffer(file_.get(), 1 << 20);
  }

  const fs::path& path() const { return path_; }

  // Reads up to `size` bytes into `out`; returns how many arrived (fewer = end of data).
  std::int64_t read(void* out, std::int64_t size) {
    auto* bytes = static_cast<char*>(out);
    std::int64_t done = 0;
    while (done < size) {
      const auto chunk = static_cast<unsigned>(std::min<std::int64_t>(size - done, 1 << 30));
      const int got = gzread(file_.get(), bytes + done, chunk);
      if (got < 0) {
        int code = 0;
        data_error(path_.string() + ": corrupt gzip data (zlib: " + gzerror(file_.get(), &code) +
                   "); download the file again");
      }
      if (got == 0) break;
      done += got;
    }
    return done;
  }

  // Header: magic, then `dims` big-endian uint32 sizes.
  std::vector<std::int64_t> header(std::uint32_t magic, int dims, const char* what) {
    std::array<unsigned char, 16> raw{};
    const auto want = static_cast<std::int64_t>(4 * (1 + dims));
    const auto got = read(raw.data(), want);
    if (got < want) {
      data_error(path_.string() + ": truncated header (expected " + std::to_string(want) +
                 " bytes, found " + std::to_string(got) +
                 "); the file is incomplete, download it again");
    }
    auto word = [&](int i) {
      return (std::uint32_t{raw[4 * i]} << 24) | (std::uint32_t{raw[4 * i + 1]} << 16) |
             (std::uint32_t{raw[4 * i + 2]} << 8) | std::uint32_t{raw[4 * i + 3]};
    };
    if (word(0) != magic) {
      data_error(path_.string() + ": wrong magic number (expected " + hex(magic) + " for IDX " +
                 what + ", found " + hex(word(0)) + "); this is not an IDX " + what +
                 " file, or it is compressed in a format other than gzip");
    }
    std::vector<std::int64_t> sizes;
    for (int i = 1; i <= dims; ++i) sizes.push_back(word(i));
    return sizes;
  }

  // Reads exactly `count` records of `record` bytes into a uint8 [count, record] tensor; with
  // `whole` set, bytes after them are an error too (the header's count must describe the file).
  // Memory grows with the bytes that arrive, never with what the header claims: a corrupt header
  // that declares billions of items fails as "truncated", not in the allocator.
  torch::Tensor records(std::int64_t count, std::int64_t record, std::int64_t declared, bool whole,
                        const char* what) {
    constexpr std::int64_t kStep = std::int64_t{1} << 26;
    const std::int64_t want = count * record;
    std::vector<std::uint8_t> bytes;
    std::int64_t got = 0;
    while (got < want) {
      const auto chunk = std::min(kStep, want - got);
      bytes.resize(static_cast<std::size_t>(got + chunk));
      const auto arrived = read(bytes.data() + got, chunk);
      got += arrived;
      if (arrived < chunk) break;
    }
    if (got < want) {
      data_error(path_.string() + ": truncated data (the header declares " +
                 std::to_string(declared) + " " + what + ", " + std::to_string(declared * record) +
                 " bytes; found " + std::to_string(got) + " bytes for the first " +
                 std::to_string(count) + "); the file is incomplete, download it again");
    }
    char extra = 0;
    if (whole && read(&extra, 1) == 1) {
      data_error(path_.string() + ": more data than the header declares (expected " +
                 std::to_string(declared * record) + " bytes of " + what +
                 ", found more); the file is corrupt or not an IDX file, download it again");
    }
    auto out = torch::empty({count, record}, torch::kUInt8);
    if (want > 0) std::memcpy(out.data_ptr(), bytes.data(), static_cast<std::size_t>(want));
    return out;
  }

 private:
  struct Closer {
    void operator()(gzFile f) const { gzclose(f); }
  };
  fs::path path_;
  std::unique_ptr<gzFile_s, Closer> file_;
};

// The raw file when present (faster), else the .gz.
fs::path locate(const fs::path& folder, const std::string& stem, bool default_folder) {
  for (const auto& candidate : {folder / stem, folder / (stem + ".gz")}) {
    if (fs::is_regular_file(candidate)) return candidate;
  }
  std::string hint = default_folder
                         ? "install the data with `apt-get install dataset-fashion-mnist`, or set "
                           "`path` to a folder with the MNIST-format files"
                         : "set `path` to a folder with the four MNIST-format files "
                           "(train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
                           "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz])";
  data_error((folder / stem).string() + "[.gz]: file not found; " + hint);
}

struct Split {
  torch::Tensor images;  // uint8 [N, rows, cols]
  torch::Tensor labels;  // int64 [N]
};

Split read_split(const fs::path& folder, const std::string& prefix, std::int64_t limit,
                 std::int64_t num_classes, bool default_folder) {
  IdxFile images(locate(folder, prefix + "-images-idx3-ubyte", default_folder));
  IdxFile labels(locate(folder, prefix + "-labels-idx1-ubyte", default_folder));
  const auto dims = images.header(kImageMagic, 3, "images");
  const auto label_count = labels.header(kLabelMagic, 1, "labels")[0];
  const std::int64_t n = dims[0], rows = dims[1], cols = dims[2];
  if (rows == 0 || cols == 0 || rows > 4096 || cols > 4096) {
    data_error(images.path().string() +
               ": implausible image size (expected rows and cols in "
               "1..4096, found " +
               std::to_string(rows) + " x " + std::to_string(cols) + "); the header is corrupt");
  }
  if (label_count != n) {
    data_error(labels.path().string() + ": label count does not match the images (expected " +
               std::to_string(n) + " as in " + images.path().filename().string() + ", found " +
               std::to_string(label_count) +
               "); the two files come from different data sets, "
               "download both again");
  }
  const std::int64_t keep = limit > 0 ? std::min(limit, n) : n;
  Split split;
  split.images = images.records(keep, rows * cols, n, keep == n, "images").view({keep, rows, cols});
  split.labels = labels.records(keep, 1, n, keep == n, "labels").view({keep}).to(torch::kLong);
  if (keep > 0) {
    const auto bad = (split.labels >= num_classes).nonzero();
    if (bad.size(0) > 0) {
      const auto index = bad[0][0].item<std::int64_t>();
      data_error(labels.path().string() + ": label out of range at item " + std::to_string(index) +
                 " (expected 0.." + std::to_string(num_classes - 1) + ", found " +
                 std::to_string(split.labels[index].item<std::int64_t>()) +
                 "); the file is corrupt, or set num_classes for a data set with more classes");
    }
  }
  return split;
}

std::string display_name(const fs::path& folder) {
  auto stem = folder.filename().string();
  if (stem.empty()) stem = folder.parent_path().filename().string();
  if (stem == "fashion-mnist" || stem == "fashion_mnist" || stem == "fmnist")
    return "Fashion-MNIST";
  if (stem == "mnist") return "MNIST";
  if (stem == "kmnist") return "KMNIST";
  return stem;
}

class IdxDataset final : public bulwark::DatasetLoader {
 public:
  explicit IdxDataset(const bulwark::Options& options)
      : path_(options.get<std::string>("path")),
        name_(options.get<std::string>("name")),
        normalize_(options.get<bool>("normalize")),
        num_classes_(options.get<std::int64_t>("num_classes")),
        limit_train_(options.get<std::int64_t>("limit_train")),
        limit_test_(options.get<std::int64_t>("limit_test")) {}

  bulwark::Dataset load(const bulwark::DatasetContext&) override {
    const fs::path folder(path_);
    const bool default_folder = path_ == kDefaultPath;
    if (!fs::is_directory(folder)) {
      data_error(path_ + ": dataset folder not found; " +
                 (default_folder
                      ? std::string("install it with `apt-get install dataset-fashion-mnist`")
                      : std::string("set `path` to the folder with the IDX files")));
    }
    auto train = read_split(folder, "train", limit_train_, num_classes_, default_folder);
    auto test = read_split(folder, "t10k", limit_test_, num_classes_, default_folder);
    if (!train.images.sizes().slice(1).equals(test.images.sizes().slice(1))) {
      data_error(path_ + ": training and test images differ in size (" +
                 c10::str(train.images.sizes().slice(1)) + " vs " +
                 c10::str(test.images.sizes().slice(1)) +
                 "); the files come from different data sets");
    }
    if (train.images.size(0) == 0) data_error(path_ + ": the training files hold no examples");

    bulwark::Dataset data;
    // One conversion per split; the channel axis is a free view.
    data.train_inputs = train.images.unsqueeze(1).to(torch::kFloat).div_(255.0);
    data.test_inputs = test.images.unsqueeze(1).to(torch::kFloat).div_(255.0);
    std::string scaling = "pixels in [0, 1]";
    if (normalize_) {
      const double mean = data.train_inputs.mean().item<double>();
      double stdev = data.train_inputs.std(/*unbiased=*/false).item<double>();
      if (stdev == 0.0) stdev = 1.0;  // a constant image set stays constant
      data.train_inputs.sub_(mean).div_(stdev);
      data.test_inputs.sub_(mean).div_(stdev);
      scaling = "normalised with train mean " + c10::str(mean) + ", std " + c10::str(stdev);
    }
    data.train_labels = train.labels;
    data.test_labels = test.labels;
    data.num_classes = num_classes_;
    data.input_shape = {1, train.images.size(1), train.images.size(2)};
    data.description = (name_.empty() ? display_name(folder) : name_) + " (IDX, " +
                       std::to_string(data.train_labels.size(0)) + " train / " +
                       std::to_string(data.test_labels.size(0)) + " test, " + scaling + ")";
    return data;
  }

 private:
  std::string path_, name_;
  bool normalize_;
  std::int64_t num_classes_, limit_train_, limit_test_;
};

}  // namespace

BULWARK_PLUGIN(bulwark::DatasetLoader, IdxDataset, "idx", "1.0.0",
               "MNIST-family IDX files (MNIST, Fashion-MNIST, KMNIST), raw or gzipped",
               "Reads the four IDX files of MNIST (LeCun et al., Proc. IEEE 1998) and its drop-in "
               "replacements such as Fashion-MNIST (Xiao et al., arXiv:1708.07747, 2017): "
               "train/t10k images (magic 0x00000803) and labels (magic 0x00000801), gzipped or "
               "raw. Images become float32 [N, 1, rows, cols] in [0, 1], or standardised with the "
               "training set's mean and std (normalize = true); labels int64. Magic numbers, "
               "sizes, counts and label ranges are checked; a bad file is reported by name.",
               kOptions)

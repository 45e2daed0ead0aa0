// Labeled Faces in the Wild as its archive unpacks: one folder per person, JPEG images inside
// (lfw/<Name>/<Name>_0001.jpg, 250x250 RGB; the funneled and deep-funneled variants have the same
// layout). Huang, Ramesh, Berg, Learned-Miller, "Labeled Faces in the Wild: A Database for Studying
// Face Recognition in Unconstrained Environments", UMass Amherst Tech. Report 07-49, 2007.
//
// The classification task of the gradient-leakage studies (Wei et al., "Gradient-Leakage Resilient
// Federated Learning", ICDCS 2021, §V): the people with at least `min_images` images (20 gives
// their 62 classes and 3,023 images), each image cut to its central `crop` x `crop` square (the
// face) and averaged down to `size` x `size` (32 in the document). Classes are the people in
// name order. The split is fixed, not seeded: every `test_every`-th image of each person (in file
// name order) is a test image, so 4 gives the document's 3:1 train-validation ratio in every class.
// Pixels become x = p / 255 in [0, 1], as [3, size, size].
//
// libjpeg reports a damaged file through error_exit, which must not return: it jumps back to the
// decoder (setjmp/longjmp, the library's documented way) and the error names the file. Its
// warnings (a truncated file, corrupt data it would paper over with grey) are errors here too.
#include <algorithm>
#include <cctype>
#include <csetjmp>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <jpeglib.h>
#include <torch/torch.h>

#include "bulwark/error.hpp"
#include "bulwark/plugin.hpp"

namespace {

namespace fs = std::filesystem;

constexpr bulwark::OptionSpec kOptions[] = {
    {"path", bulwark::OptType::String, "\"/usr/share/datasets/lfw\"", -bulwark::kInf, bulwark::kInf,
     "Folder with one sub-folder of .jpg images per person (the unpacked lfw.tgz).", nullptr},
    {"min_images", bulwark::OptType::Int, "20", 1, bulwark::kInf,
     "Keep the people with at least this many images (20: the document's 62 classes).", nullptr},
    {"crop", bulwark::OptType::Int, "125", 0, bulwark::kInf,
     "Side in pixels of the central square kept from each image: 125 is the face region of the "
     "usual LFW preprocessing (0: the largest central square).",
     nullptr},
    {"size", bulwark::OptType::Int, "32", 1, 1024, "Side of the images after averaging the crop down.",
     nullptr},
    {"test_every", bulwark::OptType::Int, "4", 2, bulwark::kInf,
     "Every k-th image of each person is a test image (4: a 3:1 train-test split per class).", nullptr},
};

// Bigger than any face photograph; stops a damaged header from asking for gigabytes.
constexpr std::int64_t kMaxPixels = std::int64_t{1} << 26;

[[noreturn]] void data_error(const std::string& message) {
  throw bulwark::Error(bulwark::ErrorKind::Data, message);
}

struct JpegErrorManager {
  jpeg_error_mgr base;  // first, so libjpeg's pointer to it is a pointer to this
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jump_on_error(j_common_ptr info) {
  auto* errors = reinterpret_cast<JpegErrorManager*>(info->err);
  info->err->format_message(info, errors->message);
  std::longjmp(errors->jump, 1);
}

// msg_level -1 is a warning about damaged data; the others are trace messages.
void jump_on_warning(j_common_ptr info, int msg_level) {
  if (msg_level < 0) jump_on_error(info);
}

struct Image {
  std::int64_t width = 0, height = 0;
  std::vector<unsigned char> rgb;  // height x width x 3, row-major
};

// Decodes `bytes` into `image`; returns libjpeg's message on failure, empty on success. Only
// trivially destructible objects live between setjmp and a libjpeg call that may jump.
std::string decode_jpeg(const std::vector<unsigned char>& bytes, Image& image) {
  jpeg_decompress_struct info;
  JpegErrorManager errors;
  info.err = jpeg_std_error(&errors.base);
  errors.base.error_exit = jump_on_error;
  errors.base.emit_message = jump_on_warning;
  if (setjmp(errors.jump)) {
    jpeg_destroy_decompress(&info);
    return errors.message;
  }
  jpeg_create_decompress(&info);
  jpeg_mem_src(&info, bytes.data(), static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&info, TRUE);
  info.out_color_space = JCS_RGB;  // grey-scale files become three equal channels
  jpeg_calc_output_dimensions(&info);
  if (static_cast<std::int64_t>(info.output_width) * info.output_height > kMaxPixels) {
    jpeg_destroy_decompress(&info);
    return "image of " + std::to_string(info.output_width) + "x" + std::to_string(info.output_height) +
           " pixels is too large";
  }
  jpeg_start_decompress(&info);
  image.width = info.output_width;
  image.height = info.output_height;
  image.rgb.resize(static_cast<std::size_t>(image.width * image.height * 3));
  while (info.output_scanline < info.output_height) {
    JSAMPROW row = image.rgb.data() + static_cast<std::size_t>(info.output_scanline) * image.width * 3;
    jpeg_read_scanlines(&info, &row, 1);
  }
  jpeg_finish_decompress(&info);
  jpeg_destroy_decompress(&info);
  return {};
}

bool is_jpeg(const fs::path& path) {
  auto ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".jpg" || ext == ".jpeg";
}

struct Person {
  std::string name;
  std::vector<fs::path> images;  // in file name order
};

// Every sub-folder of `root` with its .jpg files, in name order.
std::vector<Person> list_people(const fs::path& root) {
  std::vector<Person> people;
  std::error_code ec;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    if (!it->is_directory()) continue;
    Person person{it->path().filename().string(), {}};
    for (fs::directory_iterator file(it->path(), ec); !ec && file != end; file.increment(ec)) {
      if (file->is_regular_file() && is_jpeg(file->path())) person.images.push_back(file->path());
    }
    std::sort(person.images.begin(), person.images.end());
    if (!person.images.empty()) people.push_back(std::move(person));
  }
  if (ec) data_error(root.string() + ": cannot list the folder (" + ec.message() + "); check its permissions");
  std::sort(people.begin(), people.end(), [](const Person& a, const Person& b) { return a.name < b.name; });
  return people;
}

class LfwDataset final : public bulwark::DatasetLoader {
 public:
  explicit LfwDataset(const bulwark::Options& options)
      : path_(options.get<std::string>("path")),
        min_images_(options.get<std::int64_t>("min_images")),
        crop_(options.get<std::int64_t>("crop")),
        size_(options.get<std::int64_t>("size")),
        test_every_(options.get<std::int64_t>("test_every")) {}

  bulwark::Dataset load(const bulwark::DatasetContext&) override {
    if (!fs::is_directory(path_)) {
      data_error(path_ + ": dataset folder not found; set `path` to the unpacked LFW archive (the folder "
                         "holding one sub-folder of .jpg images per person, e.g. George_W_Bush/)");
    }
    auto people = list_people(path_);
    if (people.empty()) {
      data_error(path_ + ": no sub-folder holds .jpg images; set `path` to the unpacked LFW archive "
                         "(<path>/<Name>/<Name>_0001.jpg)");
    }
    std::size_t most = 0;
    for (const auto& person : people) most = std::max(most, person.images.size());
    people.erase(std::remove_if(people.begin(), people.end(),
                                [&](const Person& p) { return static_cast<std::int64_t>(p.images.size()) < min_images_; }),
                 people.end());
    if (people.size() < 2) {
      data_error(path_ + ": people with at least min_images = " + std::to_string(min_images_) + " images: " +
                 std::to_string(people.size()) + " (the most anyone has is " + std::to_string(most) +
                 "); a classification task needs 2 or more: lower min_images");
    }

    std::vector<torch::Tensor> train_images, test_images;
    std::vector<std::int64_t> train_labels, test_labels;
    for (std::size_t label = 0; label < people.size(); ++label) {
      const auto& images = people[label].images;
      for (std::size_t i = 0; i < images.size(); ++i) {
        const bool test = static_cast<std::int64_t>(i + 1) % test_every_ == 0;
        (test ? test_images : train_images).push_back(read_image(images[i]));
        (test ? test_labels : train_labels).push_back(static_cast<std::int64_t>(label));
      }
    }
    if (test_images.empty()) {
      data_error(path_ + ": no person has test_every = " + std::to_string(test_every_) +
                 " images, so the test set is empty; lower test_every");
    }

    bulwark::Dataset data;
    data.train_inputs = torch::stack(train_images);
    data.test_inputs = torch::stack(test_images);
    data.train_labels = torch::tensor(train_labels, torch::kLong);
    data.test_labels = torch::tensor(test_labels, torch::kLong);
    data.num_classes = static_cast<std::int64_t>(people.size());
    data.input_shape = {3, size_, size_};
    const auto crop = crop_ > 0 ? std::to_string(crop_) + "x" + std::to_string(crop_) : std::string("largest");
    data.description = "LFW (" + std::to_string(people.size()) + " people with >= " + std::to_string(min_images_) +
                       " images, " + std::to_string(train_labels.size()) + " train / " +
                       std::to_string(test_labels.size()) + " test, central " + crop + " crop averaged to " +
                       std::to_string(size_) + "x" + std::to_string(size_) + ", pixels in [0, 1])";
    return data;
  }

 private:
  // One file -> float [3, size, size]: decode, cut the central square, average it down.
  torch::Tensor read_image(const fs::path& path) const {
    std::ifstream in(path, std::ios::binary);
    const std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (!in.eof() && in.fail()) data_error(path.string() + ": cannot read the file; check its permissions");
    if (bytes.empty()) data_error(path.string() + ": empty file; the archive was not unpacked completely");
    Image image;
    const auto failure = decode_jpeg(bytes, image);
    if (!failure.empty()) {
      data_error(path.string() + ": not a readable JPEG (" + failure + "); unpack the LFW archive again");
    }
    const auto side = crop_ > 0 ? crop_ : std::min(image.width, image.height);
    if (image.width < side || image.height < side) {
      data_error(path.string() + ": image is " + std::to_string(image.width) + "x" + std::to_string(image.height) +
                 ", smaller than crop = " + std::to_string(side) + "; lower crop (0 keeps the largest central square)");
    }
    const auto pixels = torch::from_blob(image.rgb.data(), {image.height, image.width, 3}, torch::kUInt8);
    const auto square = pixels.narrow(0, (image.height - side) / 2, side).narrow(1, (image.width - side) / 2, side);
    const auto planes = square.permute({2, 0, 1}).to(torch::kFloat).div_(255.0);
    return torch::adaptive_avg_pool2d(planes.unsqueeze(0), {size_, size_}).squeeze(0);
  }

  std::string path_;
  std::int64_t min_images_, crop_, size_, test_every_;
};

}  // namespace

BULWARK_PLUGIN(
    bulwark::DatasetLoader, LfwDataset, "lfw", "1.0.0", "Labeled Faces in the Wild (JPEG folders)",
    "Reads the LFW archive's folders of JPEG faces (Huang et al., 'Labeled Faces in the Wild', UMass "
    "Tech. Report 07-49, 2007) as the gradient-leakage studies use it (Wei et al., 'Gradient-Leakage "
    "Resilient Federated Learning', ICDCS 2021): the people with at least min_images images as classes "
    "in name order, each image's central crop x crop square averaged down to size x size, float32 "
    "[N, 3, size, size] in [0, 1]; every test_every-th image of each person is a test image (a fixed, "
    "stratified split). A damaged or truncated JPEG is reported by name.",
    kOptions)

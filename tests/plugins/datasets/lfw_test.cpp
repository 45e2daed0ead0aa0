// The lfw dataset plugin on small folders of JPEG faces written here with libjpeg.
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <jpeglib.h>
#include <torch/torch.h>

#include "dataset_loading.hpp"

namespace {

namespace fs = std::filesystem;
using Colour = std::array<int, 3>;

// A width x height JPEG: `inner` on the central `block` x `block` square, `outer` around it.
// Blocks on multiples of 8 sit on JPEG's coding units, so quality 100 without chroma subsampling
// keeps them flat to ~1/255.
void write_jpeg(const fs::path& path, int width, int height, int block, Colour inner, Colour outer = {0, 0, 0},
                bool grey = false) {
  const int channels = grey ? 1 : 3;
  std::vector<unsigned char> pixels(static_cast<std::size_t>(width * height * channels));
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      const bool in = std::abs(2 * x + 1 - width) < block && std::abs(2 * y + 1 - height) < block;
      for (int c = 0; c < channels; ++c) pixels[(y * width + x) * channels + c] = (in ? inner : outer)[c];
    }
  }
  fs::create_directories(path.parent_path());
  std::FILE* file = std::fopen(path.c_str(), "wb");
  REQUIRE(file != nullptr);
  jpeg_compress_struct info;
  jpeg_error_mgr errors;
  info.err = jpeg_std_error(&errors);
  jpeg_create_compress(&info);
  jpeg_stdio_dest(&info, file);
  info.image_width = width;
  info.image_height = height;
  info.input_components = channels;
  info.in_color_space = grey ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&info);
  jpeg_set_quality(&info, 100, TRUE);
  info.comp_info[0].h_samp_factor = info.comp_info[0].v_samp_factor = 1;  // 4:4:4, no chroma blur at edges
  jpeg_start_compress(&info, TRUE);
  while (info.next_scanline < info.image_height) {
    JSAMPROW row = pixels.data() + info.next_scanline * width * channels;
    jpeg_write_scanlines(&info, &row, 1);
  }
  jpeg_finish_compress(&info);
  jpeg_destroy_compress(&info);
  std::fclose(file);
}

// Person `name` with `count` 48x48 faces; face i has inner colour (base + 10 i, 100, 50).
void write_person(const fs::path& root, const std::string& name, int count, int base) {
  for (int i = 1; i <= count; ++i) {
    char file[64];
    std::snprintf(file, sizeof file, "%s_%04d.jpg", name.c_str(), i);
    write_jpeg(root / name / file, 48, 48, 16, {base + 10 * i, 100, 50});
  }
}

bulwark::Dataset load(const fs::path& dir, const std::string& extra = "") {
  return bulwark::test::load_dataset("lfw", bulwark::test::path_option(dir) + extra);
}

std::string load_error(const fs::path& dir, const std::string& extra = "") {
  return bulwark::test::dataset_error("lfw", bulwark::test::path_option(dir) + extra);
}

// Largest difference from `colour` / 255 over an image's pixels, per channel.
double distance(const torch::Tensor& image, Colour colour) {
  const auto expected = torch::tensor({colour[0], colour[1], colour[2]}, torch::kFloat).div(255).view({3, 1, 1});
  return (image - expected).abs().max().item<double>();
}

constexpr double kJpegTolerance = 4.0 / 255;

// Amy (4 faces) and Zed (5) qualify at min_images = 4; Bob (2), a folder with no JPEG and a stray
// file do not count.
fs::path people_dir(const std::string& name) {
  auto dir = bulwark::test::scratch_dir("lfw/" + name);
  write_person(dir, "Zed", 5, 100);
  write_person(dir, "Amy", 4, 10);
  write_person(dir, "Bob", 2, 200);
  fs::create_directories(dir / "Nobody");
  bulwark::test::write_file(dir / "Nobody" / "notes.txt", "not a face\n");
  bulwark::test::write_file(dir / "README.txt", "LFW\n");
  return dir;
}

}  // namespace

TEST_CASE("lfw: people with enough faces are classes in name order, every k-th face is a test face") {
  auto data = load(people_dir("classes"), "min_images = 4\ncrop = 16\nsize = 4");
  CHECK(data.num_classes == 2);
  CHECK(data.input_shape == std::vector<std::int64_t>{3, 4, 4});
  CHECK(data.train_inputs.sizes() == torch::IntArrayRef({7, 3, 4, 4}));
  // Amy's faces 1-3 and Zed's 1-3, 5 train; face 4 of each is a test face (test_every = 4).
  CHECK(torch::equal(data.train_labels, torch::tensor({0, 0, 0, 1, 1, 1, 1}, torch::kLong)));
  CHECK(torch::equal(data.test_labels, torch::tensor({0, 1}, torch::kLong)));
  CHECK(distance(data.train_inputs[2], {40, 100, 50}) < kJpegTolerance);   // Amy_0003
  CHECK(distance(data.train_inputs[6], {150, 100, 50}) < kJpegTolerance);  // Zed_0005
  CHECK(distance(data.test_inputs[0], {50, 100, 50}) < kJpegTolerance);    // Amy_0004
  CHECK(distance(data.test_inputs[1], {140, 100, 50}) < kJpegTolerance);   // Zed_0004
  CHECK(data.description.find("2 people with >= 4 images, 7 train / 2 test") != std::string::npos);

  // min_images = 2 admits Bob; test_every = 2 sends faces 2 and 4 to the test set.
  auto more = load(people_dir("more"), "min_images = 2\ntest_every = 2\ncrop = 16\nsize = 4");
  CHECK(more.num_classes == 3);
  CHECK(torch::equal(more.test_labels, torch::tensor({0, 0, 1, 2, 2}, torch::kLong)));
}

TEST_CASE("lfw: the central crop is averaged down, and grey faces get three channels") {
  auto dir = bulwark::test::scratch_dir("lfw/crop");
  for (const auto* person : {"A", "B"}) {
    write_jpeg(dir / person / "1.jpg", 48, 48, 16, {200, 100, 50});
    write_jpeg(dir / person / "2.jpg", 48, 48, 16, {90, 90, 90}, {30, 30, 30}, /*grey=*/true);
  }
  auto face = load(dir, "min_images = 2\ntest_every = 2\ncrop = 16\nsize = 4");
  CHECK(distance(face.train_inputs[0], {200, 100, 50}) < kJpegTolerance);
  CHECK(distance(face.test_inputs[0], {90, 90, 90}) < kJpegTolerance);

  // crop = 0 keeps all 48x48; averaged to 3x3, each output pixel is one 16x16 cell: the face in the
  // middle, the background in the corners.
  auto whole = load(dir, "min_images = 2\ntest_every = 2\ncrop = 0\nsize = 3");
  const auto image = whole.train_inputs[0];
  CHECK(distance(image.slice(1, 1, 2).slice(2, 1, 2), {200, 100, 50}) < kJpegTolerance);
  CHECK(distance(image.slice(1, 0, 1).slice(2, 0, 1), {0, 0, 0}) < kJpegTolerance);
  CHECK(distance(whole.test_inputs[0].slice(1, 2, 3).slice(2, 2, 3), {30, 30, 30}) < kJpegTolerance);
}

TEST_CASE("lfw: damaged faces, missing folders and too few people are reported") {
  auto dir = people_dir("damaged");
  const auto face = dir / "Zed" / "Zed_0002.jpg";
  const auto bytes = bulwark::test::read_file(face);
  bulwark::test::write_file(face, bytes.substr(0, bytes.size() / 2));
  const std::string options = "min_images = 4\ncrop = 16\n";
  auto message = load_error(dir, options);
  CHECK(message.find("Zed_0002.jpg: not a readable JPEG (Premature end of JPEG file)") != std::string::npos);

  bulwark::test::write_file(face, "GIF89a, not a JPEG");
  CHECK(load_error(dir, options).find("Zed_0002.jpg: not a readable JPEG") != std::string::npos);
  bulwark::test::write_file(face, "");
  CHECK(load_error(dir, options).find("Zed_0002.jpg: empty file") != std::string::npos);
  bulwark::test::write_file(face, bytes);

  message = load_error(dir, "min_images = 4\ncrop = 64");
  CHECK(message.find("Amy_0001.jpg: image is 48x48, smaller than crop = 64") != std::string::npos);
  message = load_error(dir, "min_images = 5");
  CHECK(message.find("people with at least min_images = 5 images: 1 (the most anyone has is 5)") !=
        std::string::npos);
  message = load_error(dir, options + "test_every = 6");
  CHECK(message.find("the test set is empty; lower test_every") != std::string::npos);
  CHECK(load_error(dir / "Nobody").find("no sub-folder holds .jpg images") != std::string::npos);
  CHECK(load_error(dir / "nowhere").find("nowhere: dataset folder not found") != std::string::npos);
}

TEST_CASE("lfw: the host binary trains on a folder of faces") {
  auto dir = people_dir("host");
  const auto experiment = dir.parent_path() / "host.toml";
  bulwark::test::write_file(experiment, R"(
[experiment]
name = "lfw_host"
seed = 1
rounds = 2

[data]
plugin = "lfw"
path = ")" + dir.string() + R"("
min_images = 4
crop = 32
size = 8

[model]
arch = "softmax"

[clients]
count = 2
batch_size = 2
lr = 0.1
)");
  const auto out = dir.parent_path() / "host_run";
  fs::remove_all(out);
  auto run = bulwark::test::run_bulwark({"run", experiment.string(), "--out", out.string()});
  INFO(run.output);
  REQUIRE(run.exit_code == 0);
  CHECK(bulwark::test::read_file(out / "summary.json")
            .find("LFW (2 people with >= 4 images, 7 train / 2 test, central 32x32 crop averaged to 8x8") !=
        std::string::npos);
}

// PNG output: the file format (signature, IHDR), the grid layout, atomic writes.
#include <doctest/doctest.h>

#include <torch/torch.h>

#include <cstdint>
#include <string>

#include "bulwark/error.hpp"
#include "bulwark/rng.hpp"
#include "png.hpp"
#include "test_support.hpp"

using namespace bulwark;

namespace {

/// A big-endian 32-bit field of the file.
std::uint32_t be32(const std::string& bytes, std::size_t offset) {
  std::uint32_t v = 0;
  for (std::size_t i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(bytes[offset + i]);
  return v;
}

const std::string kSignature("\x89PNG\r\n\x1a\n", 8);

}  // namespace

TEST_CASE("encode_png writes the PNG signature and an IHDR with the image's width and height") {
  PngImage image;
  image.width = 3;
  image.height = 2;
  image.channels = 1;
  image.pixels = {0, 50, 100, 150, 200, 250};
  auto bytes = encode_png(image);
  REQUIRE(bytes.size() > 33);
  CHECK(bytes.substr(0, 8) == kSignature);
  // The first chunk: length 13, type "IHDR", width, height, bit depth 8, colour type 0 (grey).
  CHECK(be32(bytes, 8) == 13);
  CHECK(bytes.substr(12, 4) == "IHDR");
  CHECK(be32(bytes, 16) == 3);
  CHECK(be32(bytes, 20) == 2);
  CHECK(static_cast<int>(bytes[24]) == 8);
  CHECK(static_cast<int>(bytes[25]) == 0);
  auto decoded = decode_png(bytes);
  CHECK(decoded.width == 3);
  CHECK(decoded.height == 2);
  CHECK(decoded.channels == 1);
  CHECK(decoded.pixels == image.pixels);
}

TEST_CASE("image_grid puts originals in one row and reconstructions below, scaled to [0, 255]") {
  // Two rows of three 1x4x5 images: width 3·(5 + 2) + 2 = 23, height 2·(4 + 2) + 2 = 14.
  auto originals = torch::zeros({3, 1, 4, 5});
  originals[1].fill_(1.0);
  auto reconstructions = torch::full({3, 1, 4, 5}, 0.5);
  reconstructions[2].fill_(7.0);  // outside the data range: clamped to white, not wrapped
  auto grid = image_grid({originals, reconstructions}, /*low=*/0.0, /*high=*/1.0, /*padding=*/2);
  REQUIRE(grid.width == 23);
  REQUIRE(grid.height == 14);
  auto at = [&](std::int64_t row, std::int64_t col) { return static_cast<int>(grid.pixels[row * grid.width + col]); };
  CHECK(at(0, 0) == 255);                 // padding
  CHECK(at(2, 2) == 0);                   // original 0: value 0 -> black
  CHECK(at(2, 2 + 7) == 255);             // original 1: value 1 -> white
  CHECK(at(2 + 6, 2) == 128);             // reconstruction 0: 0.5 -> round(127.5) = 128
  CHECK(at(2 + 6 + 3, 2 + 14 + 4) == 255);  // reconstruction 2, last pixel: 7 clamped to 255
  CHECK(at(2, 2 + 5) == 255);             // the gap between cells
}

TEST_CASE("write_png_grid writes RGB grids atomically") {
  auto dir = test::scratch_dir("png_grid");
  auto images = torch::rand({2, 3, 6, 6}, make_generator(3));
  write_png_grid(dir / "grid.png", {images, images}, 0.0, 1.0, /*padding=*/1);
  auto bytes = test::read_file(dir / "grid.png");
  CHECK(bytes.substr(0, 8) == kSignature);
  CHECK(be32(bytes, 16) == 2 * 7 + 1);
  CHECK(be32(bytes, 20) == 2 * 7 + 1);
  CHECK(static_cast<int>(bytes[25]) == 2);  // colour type 2: RGB
  CHECK(decode_png(bytes).channels == 3);
  std::size_t files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    ++files;
    CHECK(entry.path().filename() == "grid.png");  // no temporary file left behind
  }
  CHECK(files == 1);
}

TEST_CASE("image_grid refuses images that are not grey or RGB, and bytes that are not PNG") {
  CHECK_THROWS_WITH_AS(image_grid({torch::zeros({1, 2, 4, 4})}, 0, 1), doctest::Contains("C = 1 or 3"), Error);
  CHECK_THROWS_WITH_AS(image_grid({torch::zeros({1, 1, 4, 4}), torch::zeros({1, 1, 5, 5})}, 0, 1),
                       doctest::Contains("mixed shapes"), Error);
  CHECK_THROWS_WITH_AS(decode_png("not a png at all"), doctest::Contains("not a readable PNG"), Error);
}

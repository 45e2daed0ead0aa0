// PNG encoding and decoding with libpng's simplified API. It reports failures through
// png_image::message instead of longjmp, so no setjmp crosses C++ frames here.
#include "png.hpp"

#include <png.h>

#include <algorithm>
#include <cstring>

#include <torch/torch.h>

#include "bulwark/error.hpp"
#include "outputs.hpp"

namespace bulwark {

namespace {

png_uint_32 format_of(std::int64_t channels) {
  return channels == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
}

std::string shape_text(const torch::Tensor& t) {
  std::string text = "[";
  for (std::int64_t i = 0; i < t.dim(); ++i) text += (i ? ", " : "") + std::to_string(t.size(i));
  return text + "]";
}

}  // namespace

std::string encode_png(const PngImage& image) {
  if (image.width <= 0 || image.height <= 0 || (image.channels != 1 && image.channels != 3) ||
      static_cast<std::int64_t>(image.pixels.size()) != image.width * image.height * image.channels) {
    throw Error(ErrorKind::Runtime, "encode_png: expected " + std::to_string(image.width) + "x" +
                                        std::to_string(image.height) + " pixels with 1 or 3 channels, got " +
                                        std::to_string(image.pixels.size()) + " bytes and " +
                                        std::to_string(image.channels) + " channels");
  }
  png_image info;
  std::memset(&info, 0, sizeof(info));
  info.version = PNG_IMAGE_VERSION;
  info.width = static_cast<png_uint_32>(image.width);
  info.height = static_cast<png_uint_32>(image.height);
  info.format = format_of(image.channels);
  const auto stride = static_cast<png_int_32>(image.width * image.channels);
  // First call sizes the buffer, second call fills it.
  png_alloc_size_t size = 0;
  if (!png_image_write_to_memory(&info, nullptr, &size, /*convert_to_8bit=*/0, image.pixels.data(), stride,
                                 nullptr)) {
    throw Error(ErrorKind::Runtime, std::string("libpng could not encode the image: ") + info.message);
  }
  std::string bytes(size, '\0');
  if (!png_image_write_to_memory(&info, bytes.data(), &size, 0, image.pixels.data(), stride, nullptr)) {
    throw Error(ErrorKind::Runtime, std::string("libpng could not encode the image: ") + info.message);
  }
  bytes.resize(size);
  return bytes;
}

PngImage decode_png(const std::string& bytes) {
  png_image info;
  std::memset(&info, 0, sizeof(info));
  info.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&info, bytes.data(), bytes.size())) {
    throw Error(ErrorKind::Data, std::string("not a readable PNG: ") + info.message);
  }
  PngImage image;
  image.channels = (info.format & PNG_FORMAT_FLAG_COLOR) ? 3 : 1;
  info.format = format_of(image.channels);  // drop alpha and palettes: 8-bit grey or RGB out
  image.width = info.width;
  image.height = info.height;
  image.pixels.resize(PNG_IMAGE_SIZE(info));
  if (!png_image_finish_read(&info, nullptr, image.pixels.data(), 0, nullptr)) {
    png_image_free(&info);
    throw Error(ErrorKind::Data, std::string("not a readable PNG: ") + info.message);
  }
  return image;
}

PngImage image_grid(const std::vector<torch::Tensor>& rows, double low, double high, std::int64_t padding) {
  torch::Tensor first;
  std::int64_t columns = 0;
  for (const auto& row : rows) {
    if (row.dim() != 4 || (row.size(1) != 1 && row.size(1) != 3)) {
      throw Error(ErrorKind::Runtime, "image_grid: rows must be [N, C, H, W] with C = 1 or 3, got " +
                                          shape_text(row));
    }
    if (!first.defined() && row.size(0) > 0) first = row;
    if (first.defined() && row.size(0) > 0 && row.sizes().slice(1) != first.sizes().slice(1)) {
      throw Error(ErrorKind::Runtime, "image_grid: images of mixed shapes " + shape_text(first) + " and " +
                                          shape_text(row));
    }
    columns = std::max(columns, row.size(0));
  }
  if (!first.defined()) throw Error(ErrorKind::Runtime, "image_grid: no images to lay out");
  const auto channels = first.size(1), height = first.size(2), width = first.size(3);
  const auto grid_rows = static_cast<std::int64_t>(rows.size());
  const auto grid_height = grid_rows * (height + padding) + padding;
  const auto grid_width = columns * (width + padding) + padding;
  auto grid = torch::full({grid_height, grid_width, channels}, 255, torch::kUInt8);
  const double scale = high > low ? 255.0 / (high - low) : 0.0;
  for (std::int64_t r = 0; r < grid_rows; ++r) {
    if (rows[r].size(0) == 0) continue;
    // [N, C, H, W] -> [H, N, W, C] -> pixels of one row strip, cells side by side.
    auto pixels = ((rows[r].detach().to(torch::kDouble) - low) * scale)
                      .nan_to_num(0.0)
                      .clamp(0, 255)
                      .round()
                      .to(torch::kUInt8)
                      .permute({2, 0, 3, 1});
    auto strip = grid.narrow(0, padding + r * (height + padding), height);
    for (std::int64_t i = 0; i < rows[r].size(0); ++i) {
      strip.narrow(1, padding + i * (width + padding), width).copy_(pixels.select(1, i));
    }
  }
  grid = grid.contiguous();
  PngImage image;
  image.width = grid_width;
  image.height = grid_height;
  image.channels = channels;
  image.pixels.assign(grid.data_ptr<std::uint8_t>(), grid.data_ptr<std::uint8_t>() + grid.numel());
  return image;
}

void write_png_grid(const std::filesystem::path& path, const std::vector<torch::Tensor>& rows, double low,
                    double high, std::int64_t padding) {
  write_file_atomic(path, encode_png(image_grid(rows, low, high, padding)));
}

}  // namespace bulwark

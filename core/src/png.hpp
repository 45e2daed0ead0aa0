#pragma once

// PNG output through libpng's simplified API (png_image_*): image grids of originals and
// reconstructions for the leakage studies.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <torch/types.h>

namespace bulwark {

/// An 8-bit image: `channels` 1 (grey) or 3 (RGB), pixels row-major and interleaved (HWC).
struct PngImage {
  std::int64_t width = 0, height = 0, channels = 1;
  std::vector<std::uint8_t> pixels;  ///< height * width * channels bytes
};

/// The PNG file bytes of `image`. Throws Error(Runtime) when libpng refuses (e.g. a zero size).
std::string encode_png(const PngImage& image);

/// Decodes PNG bytes into 8-bit grey or RGB (whichever the file holds; palettes and alpha are
/// converted). Throws Error(Data) for bytes that are not a readable PNG.
PngImage decode_png(const std::string& bytes);

/// Lays out rows of images as one picture: row r holds rows[r][i] for i in [0, N_r), each image
/// [C, H, W] with C = 1 or 3, all of one shape. Values are mapped linearly from [low, high] to
/// [0, 255] and clamped, so reconstructions that leave the data range stay visible. Cells are
/// separated by `padding` white pixels; a row shorter than the longest leaves its tail white.
/// Throws Error(Runtime) for images that are not [C, H, W] with C = 1 or 3, or of mixed shapes.
PngImage image_grid(const std::vector<torch::Tensor>& rows, double low, double high,
                    std::int64_t padding = 2);

/// encode_png(image_grid(...)) written atomically to `path` (temporary file, then rename).
void write_png_grid(const std::filesystem::path& path, const std::vector<torch::Tensor>& rows,
                    double low, double high, std::int64_t padding = 2);

}  // namespace bulwark

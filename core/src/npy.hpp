#pragma once

// NumPy .npy files, the format researchers already save update matrices in (np.save). Supported:
// format versions 1.0, 2.0 and 3.0, little-endian float32 ('<f4') and float64 ('<f8'), C order,
// 1-D [d] and 2-D [n, d] arrays: what `bulwark aggregate` reads and writes. Anything else is
// refused with Error(Data, "<file>: ...") saying what was found and what is expected, never a
// crash.
// Specification: https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html

#include <filesystem>

#include <torch/types.h>

namespace bulwark {

/// Reads a .npy file into a new CPU tensor of the file's dtype (float32 or float64) and shape.
/// Throws Error(Data) for a missing/unreadable file, bad magic, an unsupported version, a malformed
/// header, an unsupported dtype (integers, big-endian, Fortran order, ...), a shape that is not
/// 1-D or 2-D, and data that is truncated or followed by extra bytes.
torch::Tensor read_npy(const std::filesystem::path& path);

/// Writes `tensor` (float32 or float64, 1-D or 2-D, any device/strides) as a version 1.0 .npy file
/// of the same dtype and shape (version 2.0 if the header would not fit). Atomic: the data goes to
/// a temporary file in the same folder, which is renamed over `path` only once complete (after
/// fsync), so a reader never sees a half-written file. Throws Error(Runtime) for an unsupported
/// tensor (another dtype or rank) and when the file cannot be written.
void write_npy(const std::filesystem::path& path, const torch::Tensor& tensor);

}  // namespace bulwark

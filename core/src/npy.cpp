#include "npy.hpp"

#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "bulwark/error.hpp"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "npy.cpp reads and writes little-endian data with plain memcpy");

namespace bulwark {

namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr std::size_t kMagicSize = 6;
constexpr std::size_t kAlign = 64;  // numpy pads the preamble + header to a multiple of 64 bytes

[[noreturn]] void fail(const std::filesystem::path& path, const std::string& what) {
  throw Error(ErrorKind::Data, path.string() + ": " + what);
}

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string text = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    text += std::to_string(shape[i]);
    text += (shape.size() == 1 || i + 1 < shape.size()) ? "," : "";
    if (i + 1 < shape.size()) text += " ";
  }
  return text + ")";
}

/// The header is a Python dict literal, e.g.
///   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
/// This parser accepts exactly what numpy writes and reads: string keys, and values that are
/// strings, True/False or tuples of integers. Anything else is a malformed header.
class HeaderParser {
 public:
  struct Value {
    enum class Type { String, Bool, Tuple } type = Type::String;
    std::string text;
    bool flag = false;
    std::vector<std::int64_t> numbers;
  };

  HeaderParser(std::string text, const std::filesystem::path& path)
      : text_(std::move(text)), path_(path) {}

  std::vector<std::pair<std::string, Value>> parse() {
    std::vector<std::pair<std::string, Value>> entries;
    skip_space();
    expect('{');
    skip_space();
    while (peek() != '}') {
      auto key = parse_string();
      skip_space();
      expect(':');
      skip_space();
      entries.emplace_back(std::move(key), parse_value());
      skip_space();
      if (peek() == ',') {
        ++pos_;
        skip_space();
      } else if (peek() != '}') {
        error("expected ',' or '}'");
      }
    }
    ++pos_;
    skip_space();
    if (pos_ != text_.size()) error("unexpected text after the closing '}'");
    return entries;
  }

 private:
  char peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }

  void skip_space() {
    while (pos_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[pos_]))) ++pos_;
  }

  [[noreturn]] void error(const std::string& what) const {
    fail(path_, "malformed .npy header: " + what + " at offset " + std::to_string(pos_) +
                    " of the header " + text_);
  }

  void expect(char c) {
    if (peek() != c) error(std::string("expected '") + c + "'");
    ++pos_;
  }

  std::string parse_string() {
    const char quote = peek();
    if (quote != '\'' && quote != '"') error("expected a quoted string");
    const auto end = text_.find(quote, pos_ + 1);
    if (end == std::string::npos) error("unterminated string");
    auto value = text_.substr(pos_ + 1, end - pos_ - 1);
    pos_ = end + 1;
    return value;
  }

  std::int64_t parse_integer() {
    const auto start = pos_;
    while (std::isdigit(static_cast<unsigned char>(peek()))) ++pos_;
    if (pos_ == start) error("expected a non-negative integer");
    const auto digits = text_.substr(start, pos_ - start);
    if (peek() == 'L') ++pos_;  // Python 2 long literal, written by old numpy versions
    if (digits.size() > 18) error("dimension " + digits + " is too large");
    return std::stoll(digits);
  }

  Value parse_value() {
    Value value;
    if (peek() == '\'' || peek() == '"') {
      value.type = Value::Type::String;
      value.text = parse_string();
    } else if (text_.compare(pos_, 4, "True") == 0) {
      value.type = Value::Type::Bool;
      value.flag = true;
      pos_ += 4;
    } else if (text_.compare(pos_, 5, "False") == 0) {
      value.type = Value::Type::Bool;
      pos_ += 5;
    } else if (peek() == '(') {
      value.type = Value::Type::Tuple;
      ++pos_;
      skip_space();
      while (peek() != ')') {
        value.numbers.push_back(parse_integer());
        skip_space();
        if (peek() == ',') {
          ++pos_;
          skip_space();
        } else if (peek() != ')') {
          error("expected ',' or ')' in the shape tuple");
        }
      }
      ++pos_;
    } else {
      error("expected a string, True, False or a tuple");
    }
    return value;
  }

  std::string text_;
  const std::filesystem::path& path_;
  std::size_t pos_ = 0;
};

std::uint64_t read_little_endian(const unsigned char* bytes, std::size_t count) {
  std::uint64_t value = 0;
  for (std::size_t i = 0; i < count; ++i) value |= static_cast<std::uint64_t>(bytes[i]) << (8 * i);
  return value;
}

}  // namespace

torch::Tensor read_npy(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, std::string("cannot open the .npy file: ") + std::strerror(errno));
  std::error_code size_error;
  const auto file_size = std::filesystem::file_size(path, size_error);
  if (size_error) fail(path, "cannot read the .npy file size: " + size_error.message());

  unsigned char preamble[kMagicSize + 2];
  if (!in.read(reinterpret_cast<char*>(preamble), sizeof preamble) ||
      std::memcmp(preamble, kMagic, kMagicSize) != 0) {
    fail(path, "not a .npy file: it does not start with the magic bytes \\x93NUMPY");
  }
  const int major = preamble[kMagicSize];
  const int minor = preamble[kMagicSize + 1];
  if ((major != 1 && major != 2 && major != 3) || minor != 0) {
    fail(path, "unsupported .npy format version " + std::to_string(major) + "." +
                   std::to_string(minor) + "; expected 1.0, 2.0 or 3.0");
  }
  const std::size_t length_bytes = major == 1 ? 2 : 4;
  unsigned char length_field[4];
  if (!in.read(reinterpret_cast<char*>(length_field), static_cast<std::streamsize>(length_bytes))) {
    fail(path, "truncated .npy header: the file ends inside the header length field");
  }
  const auto header_length = read_little_endian(length_field, length_bytes);
  const auto data_offset = kMagicSize + 2 + length_bytes + header_length;
  if (data_offset > file_size) {
    fail(path, "truncated .npy header: it declares " + std::to_string(header_length) +
                   " header bytes but the file has only " + std::to_string(file_size) + " bytes");
  }
  std::string header(header_length, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_length));

  std::string descr;
  bool fortran_order = false;
  std::vector<std::int64_t> shape;
  bool has_descr = false, has_order = false, has_shape = false;
  for (auto& [key, value] : HeaderParser(header, path).parse()) {
    using Type = HeaderParser::Value::Type;
    if (key == "descr" && value.type == Type::String) {
      descr = value.text;
      has_descr = true;
    } else if (key == "fortran_order" && value.type == Type::Bool) {
      fortran_order = value.flag;
      has_order = true;
    } else if (key == "shape" && value.type == Type::Tuple) {
      shape = value.numbers;
      has_shape = true;
    } else {
      fail(path, "malformed .npy header: unexpected key '" + key + "' or value type; expected "
                 "exactly 'descr' (string), 'fortran_order' (bool) and 'shape' (tuple); header " +
                     header);
    }
  }
  if (!has_descr || !has_order || !has_shape) {
    fail(path, "malformed .npy header: it must have the keys 'descr', 'fortran_order' and "
               "'shape'; header " + header);
  }

  torch::ScalarType dtype;
  if (descr == "<f4" || descr == "=f4") {
    dtype = torch::kFloat32;
  } else if (descr == "<f8" || descr == "=f8") {
    dtype = torch::kFloat64;
  } else {
    const bool big_endian = !descr.empty() && descr[0] == '>';
    fail(path, "unsupported dtype '" + descr + "'" +
                   (big_endian ? " (big-endian)" : "") +
                   "; expected little-endian float32 ('<f4') or float64 ('<f8'). Convert it with "
                   "np.save(path, array.astype('<f4'))");
  }
  if (fortran_order) {
    fail(path, "unsupported Fortran (column-major) order; expected C order. Save it with "
               "np.save(path, np.ascontiguousarray(array))");
  }
  if (shape.size() != 1 && shape.size() != 2) {
    fail(path, "unsupported shape " + shape_text(shape) + "; expected a 1-D [d] or 2-D [n, d] "
               "array");
  }

  const std::uint64_t item_size = dtype == torch::kFloat32 ? 4 : 8;
  std::uint64_t data_size = item_size;
  for (auto extent : shape) {
    if (extent != 0 && data_size > std::numeric_limits<std::uint64_t>::max() /
                                       static_cast<std::uint64_t>(extent)) {
      fail(path, "shape " + shape_text(shape) + " is too large");
    }
    data_size *= static_cast<std::uint64_t>(extent);
  }
  const auto available = file_size - data_offset;
  if (available != data_size) {
    fail(path, std::string(available < data_size ? "truncated data" : "unexpected trailing data") +
                   ": shape " + shape_text(shape) + " of " + descr + " needs " +
                   std::to_string(data_size) + " bytes after the header, the file has " +
                   std::to_string(available));
  }

  auto tensor = torch::empty(shape, torch::dtype(dtype));
  if (data_size > 0 &&
      !in.read(static_cast<char*>(tensor.data_ptr()), static_cast<std::streamsize>(data_size))) {
    fail(path, "truncated data: could not read " + std::to_string(data_size) + " bytes");
  }
  return tensor;
}

void write_npy(const std::filesystem::path& path, const torch::Tensor& tensor) {
  if (!tensor.defined() ||
      (tensor.scalar_type() != torch::kFloat32 && tensor.scalar_type() != torch::kFloat64) ||
      (tensor.dim() != 1 && tensor.dim() != 2)) {
    throw Error(ErrorKind::Runtime,
                path.string() + ": write_npy supports 1-D or 2-D float32/float64 tensors only");
  }
  auto data = tensor.detach().to(torch::kCPU).contiguous();
  std::vector<std::int64_t> shape(data.sizes().begin(), data.sizes().end());

  std::string header = std::string("{'descr': '") +
                       (data.scalar_type() == torch::kFloat32 ? "<f4" : "<f8") +
                       "', 'fortran_order': False, 'shape': " + shape_text(shape) + ", }";
  // Version 1.0 stores the header length in 2 bytes; longer headers need 2.0 (4 bytes).
  std::size_t length_bytes = 2;
  char major = 1;
  if (kMagicSize + 2 + 2 + header.size() + 1 > 65535) {
    length_bytes = 4;
    major = 2;
  }
  const auto preamble = kMagicSize + 2 + length_bytes;
  header.append((kAlign - (preamble + header.size() + 1) % kAlign) % kAlign, ' ');
  header += '\n';

  std::string head(kMagic, kMagicSize);
  head += major;
  head += '\0';
  for (std::size_t i = 0; i < length_bytes; ++i) {
    head += static_cast<char>((header.size() >> (8 * i)) & 0xff);
  }
  head += header;

  const auto temporary = path.parent_path() / ("." + path.filename().string() + ".tmp." +
                                               std::to_string(::getpid()));
  auto fail_write = [&](const std::string& what) {
    std::error_code ignored;
    std::filesystem::remove(temporary, ignored);
    throw Error(ErrorKind::Runtime, path.string() + ": cannot write the .npy file: " + what);
  };
  std::FILE* file = std::fopen(temporary.c_str(), "wb");
  if (!file) fail_write(std::strerror(errno));
  const auto bytes = static_cast<std::size_t>(data.numel()) * data.element_size();
  const bool written = std::fwrite(head.data(), 1, head.size(), file) == head.size() &&
                       (bytes == 0 || std::fwrite(data.data_ptr(), 1, bytes, file) == bytes) &&
                       std::fflush(file) == 0 && ::fsync(::fileno(file)) == 0;
  const int saved_errno = errno;
  if (std::fclose(file) != 0 || !written) fail_write(std::strerror(written ? errno : saved_errno));

  std::error_code rename_error;
  std::filesystem::rename(temporary, path, rename_error);
  if (rename_error) fail_write(rename_error.message());
}

}  // namespace bulwark

#include <cstdint>
#include <string>

// LibTorch first: it pulls in glog, whose CHECK macro would otherwise replace doctest's.
#include <torch/torch.h>
#include <doctest/doctest.h>

#include "bulwark/error.hpp"
#include "npy.hpp"
#include "test_support.hpp"

using namespace bulwark;

namespace {

/// A .npy file as numpy writes it: magic, version, little-endian header length, header padded with
/// spaces to a multiple of 64 bytes and ended by '\n', then the raw data.
std::string npy_bytes(const std::string& dict, const std::string& data, int major = 1) {
  const std::size_t length_bytes = major == 1 ? 2 : 4;
  std::string header = dict;
  const auto preamble = 6 + 2 + length_bytes;
  header.append((64 - (preamble + header.size() + 1) % 64) % 64, ' ');
  header += '\n';
  std::string out("\x93NUMPY", 6);
  out += static_cast<char>(major);
  out += '\0';
  for (std::size_t i = 0; i < length_bytes; ++i) {
    out += static_cast<char>((header.size() >> (8 * i)) & 0xff);
  }
  return out + header + data;
}

template <typename T>
std::string raw(std::initializer_list<T> values) {
  std::string out;
  for (T v : values) out.append(reinterpret_cast<const char*>(&v), sizeof v);
  return out;
}

std::filesystem::path put(const std::string& name, const std::string& bytes) {
  auto path = test::scratch_dir("npy-" + name) / (name + ".npy");
  test::write_file(path, bytes);
  return path;
}

}  // namespace

TEST_CASE("npy: reads a float32 [n, d] file as numpy writes it") {
  auto path = put("f4", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
                                  raw<float>({1, 2, 3, 4, 5, 6.5f})));
  auto t = read_npy(path);
  CHECK((t.scalar_type() == torch::kFloat32));
  CHECK((t.sizes() == torch::IntArrayRef({2, 3})));
  CHECK(torch::equal(t, torch::tensor({1.f, 2.f, 3.f, 4.f, 5.f, 6.5f}).reshape({2, 3})));
}

TEST_CASE("npy: reads float64 1-D, version 2.0 headers, and Python 2 long shapes") {
  auto one_d = put("f8", npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }",
                                   raw<double>({0.25, -1, 1e300})));
  auto t = read_npy(one_d);
  CHECK((t.scalar_type() == torch::kFloat64));
  CHECK(torch::equal(t, torch::tensor({0.25, -1.0, 1e300}, torch::kDouble)));

  auto v2 = put("v2", npy_bytes("{\"descr\": \"<f4\", \"shape\": (1, 2), \"fortran_order\": False}",
                                raw<float>({7, 8}), /*major=*/2));
  CHECK(torch::equal(read_npy(v2), torch::tensor({{7.f, 8.f}})));

  auto py2 = put("py2", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 1L), }",
                                  raw<float>({1, 2})));
  CHECK((read_npy(py2).sizes() == torch::IntArrayRef({2, 1})));
}

TEST_CASE("npy: write then read gives the same tensor and dtype") {
  auto dir = test::scratch_dir("npy-roundtrip");
  auto u = torch::randn({5, 7}, torch::kFloat32);
  write_npy(dir / "u.npy", u);
  auto back = read_npy(dir / "u.npy");
  CHECK((back.scalar_type() == torch::kFloat32));
  CHECK(torch::equal(back, u));

  auto g = torch::randn({9}, torch::kDouble);
  write_npy(dir / "g.npy", g);
  CHECK(torch::equal(read_npy(dir / "g.npy"), g));

  // Non-contiguous input is written in logical (C) order.
  auto transposed = torch::arange(6, torch::kDouble).reshape({2, 3}).t();
  write_npy(dir / "t.npy", transposed);
  CHECK(torch::equal(read_npy(dir / "t.npy"), transposed.contiguous()));
}

TEST_CASE("npy: the written header is byte-for-byte what numpy writes") {
  auto dir = test::scratch_dir("npy-bytes");
  write_npy(dir / "a.npy", torch::tensor({{1.f, 2.f, 3.f}, {4.f, 5.f, 6.5f}}));
  // np.save('a.npy', np.array([[1, 2, 3], [4, 5, 6.5]], dtype='<f4')): a 128-byte preamble +
  // header.
  const auto expected = npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
                                  raw<float>({1, 2, 3, 4, 5, 6.5f}));
  CHECK(expected.size() == 128 + 24);
  CHECK(test::read_file(dir / "a.npy") == expected);
  write_npy(dir / "b.npy", torch::zeros({4}, torch::kDouble));
  CHECK(test::read_file(dir / "b.npy").substr(10, 60) ==
        "{'descr': '<f8', 'fortran_order': False, 'shape': (4,), }   ");
}

TEST_CASE("npy: writes atomically and replaces an existing file") {
  auto dir = test::scratch_dir("npy-atomic");
  write_npy(dir / "g.npy", torch::ones({3}, torch::kDouble));
  write_npy(dir / "g.npy", torch::zeros({2}, torch::kFloat32));
  CHECK(torch::equal(read_npy(dir / "g.npy"), torch::zeros({2}, torch::kFloat32)));
  std::size_t entries = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator(dir)) ++entries;
  CHECK(entries == 1);  // no temporary file left behind
  CHECK_THROWS_WITH_AS(write_npy(dir / "missing" / "g.npy", torch::ones({3})),
                       doctest::Contains("cannot write the .npy file"), Error);
  CHECK_THROWS_WITH_AS(write_npy(dir / "i.npy", torch::ones({3}, torch::kInt)),
                       doctest::Contains("float32/float64"), Error);
}

TEST_CASE("npy: malformed files get a clear Data error naming the file") {
  const std::string f4 = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }";
  const auto data = raw<float>({1, 2, 3, 4});
  auto expect_error = [](const std::filesystem::path& path, const std::string& message) {
    CAPTURE(message);
    try {
      read_npy(path);
      FAIL("no error for " << path);
    } catch (const Error& e) {
      CHECK((e.kind() == ErrorKind::Data));
      CHECK(std::string(e.what()).rfind(path.string() + ": ", 0) == 0);
      CHECK(std::string(e.what()).find(message) != std::string::npos);
    }
  };

  auto bad_magic = npy_bytes(f4, data);
  bad_magic[1] = 'X';
  expect_error(put("magic", bad_magic), "does not start with the magic bytes");
  expect_error(put("text", "n,d\n1,2\n"), "not a .npy file");
  expect_error(put("version", npy_bytes(f4, data, /*major=*/1).replace(6, 1, "\x04")),
               "unsupported .npy format version 4.0");
  expect_error(put("int", npy_bytes("{'descr': '<i4', 'fortran_order': False, 'shape': (2, 2), }",
                                    data)),
               "unsupported dtype '<i4'");
  expect_error(put("big", npy_bytes("{'descr': '>f4', 'fortran_order': False, 'shape': (2, 2), }",
                                    data)),
               "unsupported dtype '>f4' (big-endian)");
  expect_error(put("fortran",
                   npy_bytes("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", data)),
               "Fortran (column-major) order");
  expect_error(put("3d", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 2), }",
                                   data)),
               "unsupported shape (1, 2, 2)");
  expect_error(put("keys", npy_bytes("{'descr': '<f4', 'shape': (2, 2), }", data)),
               "must have the keys");
  expect_error(put("syntax", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2) ",
                                       data)),
               "malformed .npy header");
  expect_error(put("truncated", npy_bytes(f4, data.substr(0, 12))),
               "truncated data: shape (2, 2) of <f4 needs 16 bytes after the header, the file "
               "has 12");
  expect_error(put("trailing", npy_bytes(f4, data + "xx")), "unexpected trailing data");
  expect_error(put("header", std::string("\x93NUMPY\x01\x00\xff\x00{'descr'", 16)),
               "truncated .npy header");
  expect_error(test::scratch_dir("npy-missing") / "none.npy", "cannot open the .npy file");
}

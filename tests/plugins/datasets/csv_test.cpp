// The csv dataset plugin on small files written here: encoding, label mapping, missing values,
// splits and the promised error messages.
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <torch/torch.h>

#include "dataset_loading.hpp"

namespace {

namespace fs = std::filesystem;

fs::path write(const std::string& dir, const std::string& name, const std::string& text) {
  auto path = bulwark::test::scratch_dir("csv/" + dir) / name;
  bulwark::test::write_file(path, text);
  return path;
}

bulwark::Dataset load(const std::string& options, std::uint64_t seed = 0) {
  return bulwark::test::load_dataset("csv", options, seed);
}

std::string paths(const fs::path& train, const fs::path& test) {
  return "path = \"" + train.string() + "\"\ntest_path = \"" + test.string() + "\"\n";
}

std::string load_error(const std::string& options) { return bulwark::test::dataset_error("csv", options); }

}  // namespace

TEST_CASE("csv: numeric columns standardised, categorical one-hot, labels sorted (Adult style)") {
  auto dir = bulwark::test::scratch_dir("csv/adult");
  bulwark::test::write_file(dir / "train.csv",
                            "age, color, income\n20, red, >50K\n30, blue, <=50K\n40, red, >50K\n");
  // Adult's test file: a '|' comment first, labels with a trailing '.', an unseen category.
  bulwark::test::write_file(dir / "test.csv",
                            "|1x3 Cross validator\nage, color, income\n25, green, <=50K.\n\n"
                            "40, blue, >50K.\n");
  auto data = load(paths(dir / "train.csv", dir / "test.csv") + "categorical = \"color\"");
  // age: mean 30, population std sqrt(200 / 3) = 8.16497; features [age, color=blue, color=red].
  const float z = 10.0f / std::sqrt(200.0f / 3.0f);  // 1.22474
  auto expected_train = torch::tensor({-z, 0.f, 1.f, 0.f, 1.f, 0.f, z, 0.f, 1.f}).view({3, 3});
  // Test: (25 - 30) / 8.16497 = -0.61237 and unseen "green" -> no category.
  auto expected_test = torch::tensor({-z / 2, 0.f, 0.f, z, 1.f, 0.f}).view({2, 3});
  CHECK(torch::allclose(data.train_inputs, expected_train, 1e-5, 1e-6));
  CHECK(torch::allclose(data.test_inputs, expected_test, 1e-5, 1e-6));
  // "<=50K" < ">50K" as strings ('<' before '>'): <=50K -> 0, >50K -> 1; ">50K." is ">50K".
  CHECK(torch::equal(data.train_labels, torch::tensor({1, 0, 1}, torch::kLong)));
  CHECK(torch::equal(data.test_labels, torch::tensor({0, 1}, torch::kLong)));
  CHECK(data.num_classes == 2);
  CHECK(data.input_shape == std::vector<std::int64_t>{3});
  CHECK(data.description.find("2 classes") != std::string::npos);
}

TEST_CASE("csv: numeric labels sort numerically, label_column by index without a header") {
  auto path = write("numeric", "data.csv", "1.5,a,10\n2.5,b,2\n3.5,a,1\n");
  auto last = load(paths(path, path) + "header = false\ncategorical = \"1\"");
  // Labels 10, 2, 1 sorted as numbers: 1 -> 0, 2 -> 1, 10 -> 2.
  CHECK(torch::equal(last.train_labels, torch::tensor({2, 1, 0}, torch::kLong)));
  CHECK(last.num_classes == 3);
  CHECK(last.input_shape == std::vector<std::int64_t>{3});  // x0, c=a, c=b

  auto first = load(paths(path, path) + "header = false\nlabel_column = \"0\"\ncategorical = \"1\"");
  CHECK(torch::equal(first.train_labels, torch::tensor({0, 1, 2}, torch::kLong)));
  // Features: c=a, c=b, then column 2 (10, 2, 1) standardised: mean 13/3.
  CHECK(first.train_inputs[0][0].item<float>() == 1.0f);
  CHECK(first.train_inputs[1][1].item<float>() == 1.0f);
  CHECK(first.train_inputs.select(1, 2).sum().item<float>() == doctest::Approx(0.0).epsilon(1e-5));
}

TEST_CASE("csv: label_column by name and the error for an unknown one") {
  auto path = write("named", "data.csv", "y,x\ncat,1\ndog,2\ncat,3\n");
  auto data = load(paths(path, path) + "label_column = \"y\"");
  CHECK(torch::equal(data.train_labels, torch::tensor({0, 1, 0}, torch::kLong)));
  CHECK(data.input_shape == std::vector<std::int64_t>{1});

  auto message = load_error(paths(path, path) + "label_column = \"label\"");
  CHECK(message.find("data.csv") != std::string::npos);
  CHECK(message.find("label column 'label' not found") != std::string::npos);
  CHECK(message.find("columns: y, x") != std::string::npos);
}

TEST_CASE("csv: a ragged row is reported with file, line, expected and found") {
  // Line 3 is empty and line 4 a comment: both skipped, yet counted for the line number.
  auto path = write("ragged", "bad.csv", "a,b,y\n1,2,p\n\n# note\n4,5\n");
  auto message = load_error(paths(path, path));
  CHECK(message.find("bad.csv:5: expected 3 fields, found 2") != std::string::npos);
}

TEST_CASE("csv: quoted fields may hold the delimiter") {
  auto path = write("quoted", "q.csv", "name,x,y\n\"Smith, J\",1,a\n\"O\"\"Brien\",2,b\n");
  auto data = load(paths(path, path) + "categorical = \"name\"");
  CHECK(data.input_shape == std::vector<std::int64_t>{3});  // 2 names + x
  CHECK(data.train_inputs[0][1].item<float>() == 1.0f);     // "Smith, J" sorts after "O\"Brien"
}

TEST_CASE("csv: missing values are dropped or zeroed, a missing label always drops the row") {
  auto path = write("missing", "m.csv", "x,c,y\n1,?,a\n2,u,b\n?,v,a\n4,u,a\n6,v,b\n5,u,?\n");
  // drop: rows (2,u,b), (4,u,a), (6,v,b); x mean 4, std sqrt(8 / 3) = 1.63299.
  const auto options = paths(path, path) + "categorical = \"c\"\n";
  auto dropped = load(options);
  const float z = 2.0f / std::sqrt(8.0f / 3.0f);  // 1.22474
  CHECK(torch::allclose(dropped.train_inputs,
                        torch::tensor({-z, 1.f, 0.f, 0.f, 1.f, 0.f, z, 0.f, 1.f}).view({3, 3}),
                        1e-5, 1e-6));
  CHECK(torch::equal(dropped.train_labels, torch::tensor({1, 0, 1}, torch::kLong)));

  // zero: every row but the unlabelled one; x stats over the present 1, 2, 4, 6: mean 3.25,
  // std sqrt(14.75 / 4) = 1.92029. A missing x is 0 (the mean); a missing c has no category.
  auto zeroed = load(options + "missing = \"zero\"");
  CHECK(zeroed.train_inputs.size(0) == 5);
  CHECK(torch::equal(zeroed.train_labels, torch::tensor({0, 1, 0, 0, 1}, torch::kLong)));
  const float sd = std::sqrt(14.75f / 4.0f);
  CHECK(torch::allclose(zeroed.train_inputs[0], torch::tensor({(1 - 3.25f) / sd, 0.f, 0.f}), 1e-5,
                        1e-6));
  CHECK(torch::allclose(zeroed.train_inputs[2], torch::tensor({0.f, 0.f, 1.f}), 1e-5, 1e-6));
}

TEST_CASE("csv: without test_path a seeded test_fraction is held out, no row lost or repeated") {
  std::string text = "x,id\n";
  for (int i = 0; i < 100; ++i)
    text += std::to_string(i % 7) + ",r" + std::to_string(1000 + i) + "\n";
  auto path = write("split", "all.csv", text);
  const std::string options = "path = \"" + path.string() + "\"\ntest_fraction = 0.25";
  auto a = load(options, 1), b = load(options, 1), c = load(options, 2);
  CHECK(a.train_labels.size(0) == 75);
  CHECK(a.test_labels.size(0) == 25);
  // Labels r1000..r1099 sort as their row order: ids 0..99, each exactly once over both parts.
  CHECK(a.num_classes == 100);
  auto all = std::get<0>(torch::sort(torch::cat({a.train_labels, a.test_labels})));
  CHECK(torch::equal(all, torch::arange(100, torch::kLong)));
  CHECK(torch::equal(a.test_labels, b.test_labels));
  CHECK(torch::equal(a.train_inputs, b.train_inputs));
  CHECK_FALSE(torch::equal(a.test_labels, c.test_labels));
  // Each part keeps file order.
  CHECK(torch::equal(a.test_labels, std::get<0>(torch::sort(a.test_labels))));
}

TEST_CASE("csv: a test label unknown to the training file is an error with file and line") {
  auto dir = bulwark::test::scratch_dir("csv/unseen");
  bulwark::test::write_file(dir / "train.csv", "x,y\n1,yes\n2,no\n");
  bulwark::test::write_file(dir / "test.csv", "x,y\n1,yes\n2,maybe\n");
  auto message = load_error(paths(dir / "train.csv", dir / "test.csv"));
  CHECK(message.find("test.csv:3: label 'maybe' does not occur") != std::string::npos);
  CHECK(message.find("expected one of no, yes") != std::string::npos);
}

TEST_CASE("csv: text in a numeric column of the test file is an error with file and line") {
  auto dir = bulwark::test::scratch_dir("csv/text");
  bulwark::test::write_file(dir / "train.csv", "age,y\n1,yes\n2,no\n");
  bulwark::test::write_file(dir / "test.csv", "age,y\nold,yes\n");
  auto message = load_error(paths(dir / "train.csv", dir / "test.csv"));
  CHECK(message.find("test.csv:2:1: column 'age' expected a finite number, found 'old'") !=
        std::string::npos);
}

TEST_CASE("csv: a bad cell in a numeric column is an error at file:line:column, never categories") {
  // Before: one 'abc' turned the column into one-hot categories and training went on silently.
  for (const std::string cell : {"abc", "nan", "1e999", "-inf", "1e39"}) {
    CAPTURE(cell);
    auto path = write("bad-cell", "cells.csv", "a, b,y\n1, 2,p\n3,  " + cell + ",q\n5, 6,p\n");
    auto message = load_error(paths(path, path));
    CHECK(message.find("cells.csv:3:5: column 'b' expected a finite number, found '" + cell + "'") !=
          std::string::npos);
    CHECK(message.find("categorical = \"b\"") != std::string::npos);
  }
  // A quoted cell: the column is the opening quote's.
  auto quoted = write("bad-quoted", "q.csv", "a,b,y\n1,\"x, y\",p\n");
  CHECK(load_error(paths(quoted, quoted)).find("q.csv:2:3: column 'b'") != std::string::npos);
}

TEST_CASE("csv: categorical names columns that exist and never the label") {
  auto path = write("declared", "d.csv", "x,kind,y\n1,a,p\n2,b,q\n");
  auto by_index = load(paths(path, path) + "categorical = \" 1 \"");
  CHECK(by_index.input_shape == std::vector<std::int64_t>{3});

  const auto error = [&](const std::string& categorical) {
    try {
      load(paths(path, path) + "categorical = \"" + categorical + "\"");
    } catch (const bulwark::Error& e) {
      CHECK(e.kind() == bulwark::ErrorKind::Config);
      return std::string(e.what());
    }
    FAIL("expected a bulwark::Error");
    return std::string();
  };
  CHECK(error("kind, colour").find("categorical column 'colour' is not a column of") !=
        std::string::npos);
  CHECK(error("kind, colour").find("columns: x, kind, y") != std::string::npos);
  CHECK(error("7").find("'7' is not a column") != std::string::npos);
  CHECK(error("y").find("names the label column 'y'") != std::string::npos);
}

TEST_CASE("csv: files without data rows are errors") {
  auto path = write("empty", "header-only.csv", "a,b,y\n\n");
  auto message = load_error(paths(path, path));
  CHECK(message.find("header-only.csv: no data rows") != std::string::npos);

  auto all_missing = write("all-missing", "q.csv", "a,y\n?,p\n?,q\n");
  message = load_error(paths(all_missing, all_missing));
  CHECK(message.find("q.csv: no usable data rows (2 rows read") != std::string::npos);
  CHECK(message.find("missing = \"zero\"") != std::string::npos);

  auto missing_file = bulwark::test::scratch_dir("csv/none") / "absent.csv";
  message = load_error("path = \"" + missing_file.string() + "\"");
  CHECK(message.find("absent.csv: cannot open") != std::string::npos);
}

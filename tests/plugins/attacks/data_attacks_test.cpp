// label_flip and backdoor change exactly the intended labels and pixels of a malicious batch.
#include <doctest/doctest.h>

#include "attack_helpers.hpp"

using namespace bulwark;

namespace {

DataAttackContext data_context(std::int64_t classes = 10) {
  return DataAttackContext{/*round=*/1, /*client=*/0, classes, make_generator(3)};
}

torch::Tensor labels_of(std::initializer_list<std::int64_t> values) {
  return torch::tensor(std::vector<std::int64_t>(values), torch::kLong);
}

}  // namespace

TEST_CASE("label_flip maps y to C - 1 - y and leaves the inputs alone") {
  auto attack = test::load<Attack>("label_flip");
  CHECK(attack->poisons_data());
  CHECK_FALSE(attack->poisons_updates());
  auto inputs = torch::randn({10, 1, 4, 4}, make_generator(1));
  const auto before = inputs.clone();
  auto labels = torch::arange(10, torch::kLong);
  attack->poison_batch(inputs, labels, data_context(10));
  CHECK(torch::equal(labels, labels_of({9, 8, 7, 6, 5, 4, 3, 2, 1, 0})));  // 9 - y
  CHECK(torch::equal(inputs, before));
  labels = labels_of({0, 1, 2});
  attack->poison_batch(inputs, labels, data_context(3));
  CHECK(torch::equal(labels, labels_of({2, 1, 0})));  // C = 3: 2 - y
}

TEST_CASE("label_flip with source/target lists changes only the listed labels") {
  auto attack = test::load<Attack>("label_flip", "source = [1, 7]\ntarget = [7, 1]");
  auto inputs = torch::zeros({6, 3});
  auto labels = labels_of({0, 1, 7, 3, 7, 1});
  attack->poison_batch(inputs, labels, data_context());
  // 1 -> 7 and 7 -> 1 at once (a swap, not a chain); 0 and 3 are not listed.
  CHECK(torch::equal(labels, labels_of({0, 7, 1, 3, 1, 7})));
  CHECK_THROWS_WITH_AS(test::load<Attack>("label_flip", "source = [1, 2]\ntarget = [3]"),
                       doctest::Contains("same length"), Error);
  CHECK_THROWS_WITH_AS(test::load<Attack>("label_flip", "source = [1.5]\ntarget = [3]"),
                       doctest::Contains("whole class labels"), Error);
  auto outside = test::load<Attack>("label_flip", "source = [1]\ntarget = [12]");
  CHECK_THROWS_WITH_AS(outside->poison_batch(inputs, labels, data_context()),
                       doctest::Contains("not a class of this dataset (0..9)"), Error);
}

TEST_CASE("semantic backdoor relabels the source class as the target, nothing else") {
  auto attack = test::load<Attack>("backdoor", "source_label = 4\ntarget_label = 9");
  CHECK(attack->poisons_data());
  CHECK_FALSE(attack->poisons_updates());  // boost = 1: no update rewrite
  auto inputs = torch::randn({6, 1, 4, 4}, make_generator(2));
  const auto before = inputs.clone();
  auto labels = labels_of({4, 1, 4, 9, 4, 4});
  attack->poison_batch(inputs, labels, data_context());
  CHECK(torch::equal(labels, labels_of({9, 1, 9, 9, 9, 9})));
  CHECK(torch::equal(inputs, before));

  SUBCASE("poison_fraction relabels the first share of the source examples") {
    auto half = test::load<Attack>("backdoor", "poison_fraction = 0.5");
    auto y = labels_of({4, 1, 4, 9, 4, 4});
    half->poison_batch(inputs, y, data_context());
    // four 4s, round(0.5 * 4) = 2: the first two.
    CHECK(torch::equal(y, labels_of({9, 1, 9, 9, 4, 4})));
  }
}

TEST_CASE("pixel-pattern backdoor stamps exactly the trigger pixels of the poisoned share") {
  auto attack = test::load<Attack>("backdoor", "mode = \"trigger\"\ntarget_label = 2\npoison_fraction = 0.5");
  auto inputs = torch::zeros({4, 2, 6, 6});
  auto labels = labels_of({0, 1, 3, 3});
  attack->poison_batch(inputs, labels, data_context());
  // round(0.5 * 4) = 2 examples: rows 0 and 1, relabelled 2, with a 3x3 square of 1.0 at the top
  // left of both channels: 2 examples x 2 channels x 9 pixels = 36 changed values.
  CHECK(torch::equal(labels, labels_of({2, 2, 3, 3})));
  auto expected = torch::zeros({4, 2, 6, 6});
  expected.slice(0, 0, 2).slice(2, 0, 3).slice(3, 0, 3).fill_(1.0);
  CHECK(torch::equal(inputs, expected));
  CHECK(inputs.ne(0).sum().item<std::int64_t>() == 36);

  SUBCASE("position, size and value are options") {
    auto corner = test::load<Attack>(
        "backdoor", "mode = \"trigger\"\ntarget_label = 2\npoison_fraction = 0.25\ntrigger_size = 2\n"
                    "trigger_position = \"bottom_right\"\ntrigger_value = 3.0");
    auto x = torch::zeros({4, 6, 6});  // [B, H, W] without a channel axis
    auto y = labels_of({0, 1, 3, 3});
    corner->poison_batch(x, y, data_context());
    auto want = torch::zeros({4, 6, 6});
    want[0].slice(0, 4, 6).slice(1, 4, 6).fill_(3.0);  // round(0.25 * 4) = 1 example, rows/cols 4-5
    CHECK(torch::equal(x, want));
    CHECK(torch::equal(y, labels_of({2, 1, 3, 3})));
  }
  SUBCASE("flat inputs get size^2 features at the matching end") {
    auto flat = test::load<Attack>("backdoor", "mode = \"trigger\"\ntarget_label = 2\npoison_fraction = 1.0\n"
                                               "trigger_size = 2\ntrigger_position = \"top_right\"");
    auto x = torch::zeros({2, 10});
    auto y = labels_of({0, 1});
    flat->poison_batch(x, y, data_context());
    auto want = torch::zeros({2, 10});
    want.slice(1, 6, 10).fill_(1.0);  // 2^2 = 4 features at the right end
    CHECK(torch::equal(x, want));
  }
  SUBCASE("the paper's share by default: 20 of every 64") {
    auto paper = test::load<Attack>("backdoor", "mode = \"trigger\"\ntarget_label = 2");
    auto x = torch::zeros({64, 1, 8, 8});
    auto y = torch::zeros({64}, torch::kLong);
    paper->poison_batch(x, y, data_context());
    CHECK(y.eq(2).sum().item<std::int64_t>() == 20);
    CHECK(x.ne(0).sum().item<std::int64_t>() == 20 * 9);
  }
  SUBCASE("a pattern larger than the image is a clear error") {
    auto big = test::load<Attack>("backdoor", "mode = \"trigger\"\ntrigger_size = 7\ntarget_label = 2");
    auto x = torch::zeros({2, 1, 6, 6});
    auto y = labels_of({0, 1});
    CHECK_THROWS_WITH_AS(big->poison_batch(x, y, data_context()), doctest::Contains("lower trigger_size"), Error);
  }
}

TEST_CASE("backdoor test sets: source-class inputs (semantic), stamped non-target inputs (trigger)") {
  auto inputs = torch::arange(4 * 16, torch::kFloat).reshape({4, 1, 4, 4}).div_(100.0);
  auto labels = labels_of({4, 0, 3, 9});

  auto semantic = test::load<Attack>("backdoor");
  auto set = semantic->backdoor_test_set(inputs, labels);
  REQUIRE(set.has_value());
  CHECK(torch::equal(set->inputs, inputs.slice(0, 0, 1)));  // the only 4
  CHECK(torch::equal(set->labels, labels_of({9})));

  auto trigger = test::load<Attack>("backdoor", "mode = \"trigger\"\ntarget_label = 9\ntrigger_size = 2");
  set = trigger->backdoor_test_set(inputs, labels);
  REQUIRE(set.has_value());
  auto expected = inputs.slice(0, 0, 3).clone();  // labels 4, 0, 3: every one but the 9
  expected.slice(2, 0, 2).slice(3, 0, 2).fill_(1.0);
  CHECK(torch::equal(set->inputs, expected));
  CHECK(torch::equal(set->labels, labels_of({9, 9, 9})));
  CHECK(labels.equal(labels_of({4, 0, 3, 9})));  // the test set itself is untouched
}

TEST_CASE("backdoor boost scales the malicious update (model replacement)") {
  auto attack = test::load<Attack>("backdoor", "boost = 4.0");
  CHECK(attack->poisons_updates());
  CHECK_FALSE(attack->omniscient());
  auto own = test::matrix({{1, -0.5}});
  attack->poison_updates(own, test::own_context(1, 10, 1));
  CHECK_TENSOR_CLOSE(own, test::matrix({{4, -2}}), 1e-12);  // 4 * (1, -0.5)
  CHECK_THROWS_WITH_AS(test::load<Attack>("backdoor", "source_label = 9\ntarget_label = 9"),
                       doctest::Contains("relabels one class as another"), Error);
}

TEST_CASE("dba: client c plants local trigger c mod 4, the paper's 1x4 bars, on 20 of every 64 examples") {
  auto attack = test::load<Attack>("dba");
  CHECK(attack->poisons_data());
  CHECK_FALSE(attack->poisons_updates());
  // Xie et al.'s MNIST layout: part 0 at row 0, columns 0-3; part 1 row 0, columns 6-9; part 2 row
  // 3, columns 0-3; part 3 row 3, columns 6-9 (bars 4 long, gap 2).
  const std::vector<std::pair<std::int64_t, std::int64_t>> corners = {{0, 0}, {0, 6}, {3, 0}, {3, 6}};
  for (std::int64_t client : {0, 1, 2, 3, 5, 11}) {
    CAPTURE(client);
    auto x = torch::zeros({64, 1, 28, 28});
    auto y = torch::zeros({64}, torch::kLong);
    attack->poison_batch(x, y, DataAttackContext{1, client, 10, make_generator(3)});
    auto want = torch::zeros({64, 1, 28, 28});
    const auto [row, column] = corners[static_cast<std::size_t>(client % 4)];
    want.slice(0, 0, 20).slice(2, row, row + 1).slice(3, column, column + 4).fill_(1.0);
    CHECK(torch::equal(x, want));
    CHECK(y.slice(0, 0, 20).eq(2).all().item<bool>());  // the paper's target label 2
    CHECK(y.slice(0, 20).eq(0).all().item<bool>());
  }
}

TEST_CASE("dba: the test set carries the whole global trigger, and geometry options move the bars") {
  auto inputs = torch::zeros({3, 1, 12, 12});
  auto labels = labels_of({2, 0, 7});
  auto set = test::load<Attack>("dba")->backdoor_test_set(inputs, labels);
  REQUIRE(set.has_value());
  auto want = torch::zeros({2, 1, 12, 12});  // labels 0 and 7: the non-target ones
  for (auto [row, column] : std::vector<std::pair<int, int>>{{0, 0}, {0, 6}, {3, 0}, {3, 6}}) {
    want.slice(2, row, row + 1).slice(3, column, column + 4).fill_(1.0);
  }
  CHECK(torch::equal(set->inputs, want));
  CHECK(torch::equal(set->labels, labels_of({2, 2})));

  auto moved = test::load<Attack>("dba", "parts = 3\nbar_length = 2\ngap = 1\nshift = 1\ntrigger_value = 5.0\n"
                                         "target_label = 0");
  set = moved->backdoor_test_set(inputs, labels);
  want = torch::zeros({2, 1, 12, 12});  // labels 2 and 7; bars at (1, 1-2), (1, 4-5), (3, 1-2)
  want.slice(2, 1, 2).slice(3, 1, 3).fill_(5.0);
  want.slice(2, 1, 2).slice(3, 4, 6).fill_(5.0);
  want.slice(2, 3, 4).slice(3, 1, 3).fill_(5.0);
  CHECK(torch::equal(set->inputs, want));
}

TEST_CASE("dba: a trigger that does not fit, flat inputs and a target outside the classes are clear errors") {
  auto attack = test::load<Attack>("dba");
  auto small = torch::zeros({2, 1, 6, 6});  // part 1 needs columns 6-9
  auto y = labels_of({0, 1});
  CHECK_THROWS_WITH_AS(attack->backdoor_test_set(small, y), doctest::Contains("does not fit inputs of shape"), Error);
  auto flat = torch::zeros({4, 784});
  auto four = labels_of({0, 1, 3, 4});
  CHECK_THROWS_WITH_AS(attack->poison_batch(flat, four, data_context()), doctest::Contains("DBA stamps images"), Error);
  auto image = torch::zeros({4, 1, 28, 28});
  CHECK_THROWS_WITH_AS(attack->poison_batch(image, four, data_context(2)),
                       doctest::Contains("target_label = 2 is not a class"), Error);
}

TEST_CASE("neurotoxin: keep_fraction masks the gradient where the last global update moved most") {
  auto attack = test::load<Attack>("backdoor", "keep_fraction = 0.5");
  CHECK(attack->shapes_steps());
  CHECK_FALSE(test::load<Attack>("backdoor")->shapes_steps());  // 1 = off
  const StepAttackContext step{2, 0, 0};
  auto gradient = torch::ones({4});
  attack->begin_round(1, torch::tensor({1.0f, 1.0f, 1.0f, 1.0f}));
  attack->shape_step(gradient, step);
  CHECK(torch::equal(gradient, torch::ones({4})));  // no global update seen yet: nothing masked
  // Δ = (0.1, −3, 0.5, 2): the ⌈0.5 · 4⌉ = 2 largest |Δ| are coordinates 1 and 3.
  attack->begin_round(2, torch::tensor({1.1f, -2.0f, 1.5f, 3.0f}));
  attack->shape_step(gradient, step);
  CHECK(torch::equal(gradient, torch::tensor({1.0f, 0.0f, 1.0f, 0.0f})));

  // The mask and θ_{t−1} are state: a fresh instance loaded from it masks the same way and moves on
  // from the same θ.
  StateDict state;
  attack->save_state(state);
  auto resumed = test::load<Attack>("backdoor", "keep_fraction = 0.5");
  resumed->load_state(state);
  auto again = torch::ones({4});
  resumed->shape_step(again, step);
  CHECK(torch::equal(again, gradient));
  resumed->begin_round(3, torch::tensor({5.1f, -2.0f, 1.5f, 3.1f}));  // Δ = (4, 0, 0, 0.1)
  again = torch::ones({4});
  resumed->shape_step(again, step);
  CHECK(torch::equal(again, torch::tensor({0.0f, 1.0f, 1.0f, 0.0f})));
  CHECK_THROWS_WITH_AS(test::load<Attack>("backdoor", "keep_fraction = 0"), doctest::Contains("keep_fraction must be in (0, 1]"),
                       Error);
}

// The synthetic Gaussian-mixture dataset plugin: determinism, shapes, balance, the geometry its
// options promise, and that softmax regression learns it.
#include <cstdint>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <torch/torch.h>

#include "test_support.hpp"

namespace {

bulwark::Dataset make(const std::string& options, std::uint64_t seed = 7) {
  auto loader = bulwark::test::load<bulwark::DatasetLoader>("synthetic", options);
  return loader->load(bulwark::DatasetContext{seed});
}

}  // namespace

TEST_CASE("synthetic: same options and seed give identical data, another seed does not") {
  const std::string options = "train_size = 500\ntest_size = 100";
  auto a = make(options, 3), b = make(options, 3), c = make(options, 4);
  CHECK(torch::equal(a.train_inputs, b.train_inputs));
  CHECK(torch::equal(a.train_labels, b.train_labels));
  CHECK(torch::equal(a.test_inputs, b.test_inputs));
  CHECK(torch::equal(a.test_labels, b.test_labels));
  CHECK_FALSE(torch::equal(a.train_inputs, c.train_inputs));
  CHECK_FALSE(torch::equal(a.train_labels, c.train_labels));
}

TEST_CASE("synthetic: default and image-like shapes") {
  auto flat = make("");
  CHECK(flat.train_inputs.sizes() == torch::IntArrayRef({10000, 20}));
  CHECK(flat.test_inputs.sizes() == torch::IntArrayRef({2000, 20}));
  CHECK((flat.train_inputs.scalar_type() == torch::kFloat));
  CHECK((flat.train_labels.scalar_type() == torch::kLong));
  CHECK(flat.num_classes == 10);
  CHECK(flat.input_shape == std::vector<std::int64_t>{20});

  auto image = make("shape = [1, 8, 8]\nclasses = 3\ntrain_size = 30\ntest_size = 6");
  CHECK(image.train_inputs.sizes() == torch::IntArrayRef({30, 1, 8, 8}));
  CHECK(image.test_inputs.sizes() == torch::IntArrayRef({6, 1, 8, 8}));
  CHECK(image.input_shape == std::vector<std::int64_t>{1, 8, 8});
  CHECK(image.num_classes == 3);
}

TEST_CASE("synthetic: classes are balanced to within one example, in random order") {
  auto data = make("classes = 7\ntrain_size = 1003\ntest_size = 50");
  auto counts = torch::bincount(data.train_labels, {}, 7);
  CHECK(counts.min().item<std::int64_t>() == 1003 / 7);      // 143
  CHECK(counts.max().item<std::int64_t>() == 1003 / 7 + 1);  // 144 (1003 = 7 * 143 + 2)
  CHECK(data.train_labels.max().item<std::int64_t>() == 6);
  // Not sorted or cyclic: some neighbours repeat a label.
  auto same = data.train_labels.narrow(0, 1, 1002) == data.train_labels.narrow(0, 0, 1002);
  CHECK(same.any().item<bool>());
}

TEST_CASE("synthetic: class means lie `separation` apart and the noise has std `noise`") {
  // 4000 examples per class in 20 dimensions: each empirical mean is off by about
  // noise * sqrt(20 / 4000) = 0.14 in norm, so pairwise distances land within 0.35 of 4.
  auto data =
      make("classes = 5\nseparation = 4.0\nnoise = 0.5\ntrain_size = 20000\ntest_size = 10");
  std::vector<torch::Tensor> means;
  std::vector<torch::Tensor> residuals;
  for (int c = 0; c < 5; ++c) {
    auto members = data.train_inputs.index({data.train_labels == c});
    means.push_back(members.mean(0));
    residuals.push_back(members - means.back());
  }
  for (int a = 0; a < 5; ++a) {
    for (int b = a + 1; b < 5; ++b) {
      CAPTURE(a);
      CAPTURE(b);
      CHECK((means[a] - means[b]).norm().item<double>() == doctest::Approx(4.0).epsilon(0.09));
    }
  }
  CHECK(torch::cat(residuals).std().item<double>() == doctest::Approx(0.5).epsilon(0.02));
}

TEST_CASE("synthetic: softmax regression learns the default task to high accuracy") {
  auto data = make("");
  torch::manual_seed(0);
  auto weights = torch::zeros({20, 10}, torch::requires_grad());
  auto bias = torch::zeros({10}, torch::requires_grad());
  torch::optim::SGD optimizer({weights, bias}, torch::optim::SGDOptions(0.5));
  for (int step = 0; step < 200; ++step) {
    optimizer.zero_grad();
    auto loss = torch::cross_entropy_loss(torch::matmul(data.train_inputs, weights) + bias,
                                          data.train_labels);
    loss.backward();
    optimizer.step();
  }
  torch::NoGradGuard no_grad;
  auto predicted = (torch::matmul(data.test_inputs, weights) + bias).argmax(1);
  const double accuracy = (predicted == data.test_labels).to(torch::kDouble).mean().item<double>();
  MESSAGE("softmax regression test accuracy on the default synthetic task: " << accuracy);
  // Bayes pairwise error Phi(-5/2) = 0.6%; with 9 rivals the optimum is about 95%.
  CHECK(accuracy > 0.9);
}

TEST_CASE("synthetic: a size this machine cannot hold is refused when the plugin is opened, not in the allocator") {
  CHECK_THROWS_WITH_AS(bulwark::test::load<bulwark::DatasetLoader>("synthetic", "train_size = 1000000000000"),
                       doctest::Contains("GiB for their inputs; this machine has"), bulwark::Error);
}

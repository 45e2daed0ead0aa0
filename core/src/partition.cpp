#include "partition.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include <torch/torch.h>

#include "bulwark/error.hpp"
#include "bulwark/rng.hpp"

namespace bulwark {

namespace {

// A draw of Dirichlet proportions can leave a client below min_samples; like the reference
// implementations (NIID-Bench, FedLab) we draw again, but only this many times.
constexpr int kMaxDirichletDraws = 100;

// "full" materialises num_clients * N indices; beyond this it is a configuration mistake.
constexpr std::int64_t kMaxFullEntries = std::int64_t{1} << 28;

[[noreturn]] void fail(const std::string& message) {
  throw Error(ErrorKind::Config, "[data.partition] " + message);
}

// Positions that sort `values` (ties keep index order). The explicit optional matters: a plain
// `true` would bind to sort(self, dim, descending) as dim = 1.
torch::Tensor stable_argsort(const torch::Tensor& values, bool descending = false) {
  return std::get<1>(torch::sort(values, c10::optional<bool>(true), /*dim=*/0, descending));
}

// Position p of M items -> part floor(p * P / M): P contiguous parts whose sizes differ by at most
// one. Vectorised; int64 is ample (M * P stays far below 2^63 for any real data set).
torch::Tensor near_equal_parts(std::int64_t items, std::int64_t parts) {
  return torch::arange(items, torch::kLong).mul_(parts).div_(items, "floor");
}

// Finishes every scheme but "full": owner[i] is the client of example i. One stable sort groups
// the examples by client, so each client's list is in increasing example order (deterministic,
// and independent of how the scheme drew the owners); offsets come from one bincount.
Partition group_by_owner(const torch::Tensor& owner, std::int64_t num_clients) {
  Partition partition;
  partition.indices = stable_argsort(owner);
  auto counts = torch::bincount(owner, /*weights=*/{}, /*minlength=*/num_clients);
  auto ends = counts.cumsum(0);
  partition.offsets.resize(num_clients + 1);
  partition.offsets[0] = 0;
  std::copy_n(ends.data_ptr<std::int64_t>(), num_clients, partition.offsets.begin() + 1);
  return partition;
}

void require_min_size(std::int64_t smallest, std::int64_t min_samples, const std::string& scheme,
                      std::int64_t n, std::int64_t num_clients) {
  if (smallest < min_samples) {
    fail("scheme '" + scheme + "' gives the smallest client " + std::to_string(smallest) +
         " examples (" + std::to_string(n) + " examples over " + std::to_string(num_clients) +
         " clients), below min_samples = " + std::to_string(min_samples) +
         "; use fewer clients or lower min_samples");
  }
}

torch::Tensor iid_owner(std::int64_t n, std::int64_t k, at::Generator& gen) {
  auto owner = torch::empty({n}, torch::kLong);
  owner.index_put_({torch::randperm(n, gen, torch::kLong)}, near_equal_parts(n, k));
  return owner;
}

torch::Tensor sorted_owner(const torch::Tensor& labels, std::int64_t k) {
  auto order = stable_argsort(labels);
  auto owner = torch::empty_like(labels);
  owner.index_put_({order}, near_equal_parts(labels.size(0), k));
  return owner;
}

// McMahan et al. 2017: sort by label, cut into k * s equal shards, deal s random shards to each
// client. A shard straddles two labels when a class size is not a multiple of the shard size.
torch::Tensor shards_owner(const torch::Tensor& labels, std::int64_t k, std::int64_t s,
                           at::Generator& gen) {
  const std::int64_t n = labels.size(0);
  const std::int64_t num_shards = k * s;
  auto order = stable_argsort(labels);
  auto shard_of_position = near_equal_parts(n, num_shards);
  // Shard perm[j] goes to client j / s.
  auto shard_owner = torch::empty({num_shards}, torch::kLong);
  shard_owner.index_put_({torch::randperm(num_shards, gen, torch::kLong)},
                         torch::arange(num_shards, torch::kLong).div_(s, "floor"));
  auto owner = torch::empty_like(labels);
  owner.index_put_({order}, shard_owner.index({shard_of_position}));
  return owner;
}

// Dirichlet label skew (Hsu et al., arXiv:1909.06335, 2019), in the per-class form of Yurochkin et
// al. (ICML 2019) that NIID-Bench (Li et al., ICDE 2022) and FedLab implement: for each class c in
// order, p ~ Dir_K(alpha); clients already holding >= N/K examples get p_j = 0
// (the reference code's balancing step); the shuffled class-c examples are cut at
// floor(cumsum(p) * n_c). Whole draws repeat until every client has min_samples.
torch::Tensor dirichlet_owner(const torch::Tensor& labels, std::int64_t num_classes, std::int64_t k,
                              double alpha, std::int64_t min_samples, at::Generator& gen) {
  const std::int64_t n = labels.size(0);
  const double fair_share = static_cast<double>(n) / static_cast<double>(k);
  std::vector<torch::Tensor> class_members(num_classes);
  for (std::int64_t c = 0; c < num_classes; ++c) {
    class_members[c] = torch::nonzero(labels == c).flatten();
  }
  auto concentration = torch::full({k}, alpha, torch::kDouble);
  std::int64_t smallest = 0;
  for (int draw = 0; draw < kMaxDirichletDraws; ++draw) {
    auto owner = torch::empty({n}, torch::kLong);
    auto sizes = torch::zeros({k}, torch::kLong);
    for (std::int64_t c = 0; c < num_classes; ++c) {
      const std::int64_t n_c = class_members[c].size(0);
      if (n_c == 0) continue;
      auto p = at::_standard_gamma(concentration, gen);
      p.mul_(sizes.to(torch::kDouble).lt(fair_share));
      p.div_(p.sum());
      auto cuts =
          p.cumsum(0).mul_(static_cast<double>(n_c)).floor_().to(torch::kLong).clamp_max_(n_c);
      cuts[k - 1] = n_c;  // rounding must not drop the last examples of the class
      auto counts =
          torch::diff(cuts, /*n=*/1, /*dim=*/0, /*prepend=*/torch::zeros({1}, torch::kLong));
      auto members = class_members[c].index({torch::randperm(n_c, gen, torch::kLong)});
      owner.index_put_({members},
                       torch::repeat_interleave(counts, c10::optional<std::int64_t>(n_c)));
      sizes.add_(counts);
    }
    smallest = sizes.min().item<std::int64_t>();
    if (smallest >= min_samples) return owner;
  }
  fail("scheme 'dirichlet' (alpha = " + std::to_string(alpha) + ") left a client with " +
       std::to_string(smallest) + " examples, below min_samples = " + std::to_string(min_samples) +
       ", in each of " + std::to_string(kMaxDirichletDraws) + " draws (" + std::to_string(n) +
       " examples over " + std::to_string(k) +
       " clients); raise alpha, lower min_samples (0 allows empty clients) or use fewer clients");
}

// Client sizes from heavy-tailed weights, data otherwise IID. Each client first gets min_samples;
// the rest is shared in proportion to the weights by largest remainders, so sizes sum to N.
torch::Tensor quantity_owner(std::int64_t n, std::int64_t k, const Options& options,
                             std::int64_t min_samples, at::Generator& gen) {
  torch::Tensor weights;
  if (options.get<std::string>("distribution") == "lognormal") {
    // w = exp(sigma * z), z ~ N(0, 1) (FedLab's unbalanced split).
    weights =
        torch::randn({k}, gen, torch::kDouble).mul_(options.get<double>("lognormal_sigma")).exp_();
  } else {
    // Pareto: density p(w) ∝ w^(-a) for w >= 1, by inversion w = u^(-1/(a-1)), u ~ U(0, 1].
    const double a = options.get<double>("power_law_exponent");
    weights = torch::rand({k}, gen, torch::kDouble).neg_().add_(1.0).pow_(-1.0 / (a - 1.0));
  }
  const std::int64_t rest = n - k * min_samples;
  auto exact = weights.div_(weights.sum()).mul_(static_cast<double>(rest));
  auto sizes = exact.floor();
  const auto leftover =
      std::clamp<std::int64_t>(rest - static_cast<std::int64_t>(sizes.sum().item<double>()), 0, k);
  auto by_remainder = stable_argsort(exact - sizes, /*descending=*/true);
  auto sizes_long = sizes.to(torch::kLong).add_(min_samples);
  sizes_long.index_add_(0, by_remainder.narrow(0, 0, leftover),
                        torch::ones({leftover}, torch::kLong));
  auto owner = torch::empty({n}, torch::kLong);
  owner.index_put_({torch::randperm(n, gen, torch::kLong)},
                   torch::repeat_interleave(sizes_long, c10::optional<std::int64_t>(n)));
  return owner;
}

}  // namespace

const std::vector<OptionSpec>& partition_option_specs() {
  static const std::vector<OptionSpec> specs = {
      {"scheme", OptType::String, "\"iid\"", -kInf, kInf,
       "How the training set is split among clients: iid (random equal parts), dirichlet (label "
       "skew: per class, shares ~ Dir(alpha) over clients; Hsu et al. 2019), shards (sort by "
       "label, deal shards_per_client shards to each client; McMahan et al. 2017), sorted "
       "(label-sorted contiguous blocks), quantity (IID data, sizes from `distribution`), full "
       "(every client holds the whole training set).",
       "iid|dirichlet|shards|sorted|quantity|full"},
      {"alpha", OptType::Float, "0.5", 1e-4, kInf,
       "dirichlet: concentration; smaller alpha = more label skew (0.1 extreme, 100 near IID).",
       nullptr},
      {"shards_per_client", OptType::Int, "2", 1, kInf,
       "shards: shards per client (McMahan et al.: 2 shards of 300 MNIST examples each).", nullptr},
      {"distribution", OptType::String, "\"power_law\"", -kInf, kInf,
       "quantity: client size weights, power_law (Pareto, density ~ w^-exponent) or lognormal "
       "(w = exp(sigma z)).",
       "power_law|lognormal"},
      {"power_law_exponent", OptType::Float, "3.0", 1.01, kInf,
       "quantity, power_law: tail exponent a of the density w^-a, w >= 1; smaller = more skew.",
       nullptr},
      {"lognormal_sigma", OptType::Float, "1.0", 0, kInf,
       "quantity, lognormal: sigma of log client size; 0 = equal sizes.", nullptr},
      {"min_samples", OptType::Int, "1", 0, kInf,
       "Fewest examples any client may get (dirichlet draws again until it holds, at most 100 "
       "times); 0 allows empty clients.",
       nullptr},
  };
  return specs;
}

Partition make_partition(const torch::Tensor& labels, std::int64_t num_classes,
                         std::int64_t num_clients, const Options& options, std::uint64_t seed) {
  const auto scheme = options.get<std::string>("scheme");
  const auto min_samples = options.get<std::int64_t>("min_samples");
  if (labels.dim() != 1) {
    fail("labels must be a vector [N]; found " + std::to_string(labels.dim()) + " dimensions");
  }
  auto y = labels.to(torch::kCPU, torch::kLong).contiguous();
  const std::int64_t n = y.size(0);
  if (num_clients < 1) fail("need at least one client; found " + std::to_string(num_clients));
  if (n == 0) fail("the training set is empty");
  if ((y.min().item<std::int64_t>() < 0 || y.max().item<std::int64_t>() >= num_classes)) {
    fail("labels must lie in [0, " + std::to_string(num_classes) + "); found [" +
         std::to_string(y.min().item<std::int64_t>()) + ", " +
         std::to_string(y.max().item<std::int64_t>()) + "]");
  }

  if (scheme == "full") {
    if (num_clients * n > kMaxFullEntries) {
      fail("scheme 'full' would store " + std::to_string(num_clients) + " x " + std::to_string(n) +
           " indices; use fewer clients or scheme = \"iid\"");
    }
    Partition partition;
    partition.indices = torch::arange(n, torch::kLong).repeat({num_clients});
    partition.offsets.resize(num_clients + 1);
    for (std::int64_t i = 0; i <= num_clients; ++i) partition.offsets[i] = i * n;
    return partition;
  }

  if (num_clients > n || num_clients * min_samples > n) {
    fail("scheme '" + scheme + "' cannot give " + std::to_string(num_clients) + " clients " +
         std::to_string(std::max<std::int64_t>(min_samples, 1)) + " examples each (min_samples = " +
         std::to_string(min_samples) + ") from " + std::to_string(n) +
         " training examples; use fewer clients, lower min_samples or scheme = \"full\"");
  }
  auto gen = stream_generator(seed, /*round=*/0, kServer, Stream::Partition);
  torch::Tensor owner;
  if (scheme == "iid") {
    require_min_size(n / num_clients, min_samples, scheme, n, num_clients);
    owner = iid_owner(n, num_clients, gen);
  } else if (scheme == "sorted") {
    require_min_size(n / num_clients, min_samples, scheme, n, num_clients);
    owner = sorted_owner(y, num_clients);
  } else if (scheme == "shards") {
    const auto s = options.get<std::int64_t>("shards_per_client");
    if (num_clients * s > n) {
      fail("scheme 'shards' needs " + std::to_string(num_clients) + " x " + std::to_string(s) +
           " shards but there are only " + std::to_string(n) +
           " training examples; lower shards_per_client or use fewer clients");
    }
    require_min_size(s * (n / (num_clients * s)), min_samples, scheme, n, num_clients);
    owner = shards_owner(y, num_clients, s, gen);
  } else if (scheme == "dirichlet") {
    owner = dirichlet_owner(y, num_classes, num_clients, options.get<double>("alpha"), min_samples,
                            gen);
  } else if (scheme == "quantity") {
    owner = quantity_owner(n, num_clients, options, min_samples, gen);
  } else {
    fail("unknown scheme '" + scheme +
         "'; valid schemes: iid, dirichlet, shards, sorted, quantity, full");
  }
  return group_by_owner(owner, num_clients);
}

Partition draw_shared_samples(const Partition& partition, double fraction, std::uint64_t seed) {
  Partition shared;
  std::vector<torch::Tensor> pieces;
  shared.offsets.assign(1, 0);
  for (std::int64_t client = 0; client < partition.num_clients(); ++client) {
    const auto n = partition.size(client);
    const auto k = std::min<std::int64_t>(n, static_cast<std::int64_t>(std::ceil(fraction * static_cast<double>(n))));
    auto pick = torch::randperm(n, stream_generator(seed, 0, client, Stream::Aggregator), torch::kLong).narrow(0, 0, k);
    pieces.push_back(partition.client(client).index_select(0, pick));
    shared.offsets.push_back(shared.offsets.back() + k);
  }
  shared.indices = torch::cat(pieces);
  return shared;
}

torch::Tensor draw_root_samples(std::int64_t train_size, std::int64_t size, std::uint64_t seed) {
  return torch::randperm(train_size, stream_generator(seed, 0, kServer, Stream::Aggregator), torch::kLong).narrow(0, 0, size);
}

}  // namespace bulwark

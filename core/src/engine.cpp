// The round loop (DESIGN.md §2). Determinism rule: every random draw comes from a stream derived
// from (seed, round, client, purpose) and every client writes only its own row of U, so the
// result does not depend on how many worker threads run the clients or in which order.
#include "engine.hpp"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <exception>
#include <map>
#include <mutex>
#include <numeric>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "accountant.hpp"
#include "bulwark/rng.hpp"
#include "bulwark/rows.hpp"
#include "checkpoint.hpp"
#include "config.hpp"
#include "leakage.hpp"
#include "models.hpp"
#include "schedule.hpp"

namespace bulwark {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

// clients.batching = "auto" batches models up to this size. A stacked step reads K separate
// parameter sets, so on a CPU it pays while they are small and per-operation overhead dominates
// (bench/batching_bench, 2 workers: softmax d = 7,850 2.5-3.7x, MLP d = 50,890 1.4-2.0x; the
// GroupNorm CNN d = 107,722 0.7-0.9x, where even ideal batching gains at most 1.6x on a CPU).
constexpr std::int64_t kAutoBatchingMaxParameters = 65536;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

/// Runs fn(i) for i in [0, n) on `threads` workers. Work is handed out by an atomic counter, so
/// which thread runs which i varies; callers make fn(i) depend on i alone.
void parallel_for(std::int64_t n, int threads, const std::function<void(std::int64_t)>& fn) {
  if (n <= 0) return;
  threads = static_cast<int>(std::min<std::int64_t>(threads, n));
  if (threads <= 1) {
    for (std::int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::atomic<std::int64_t> next{0};
  std::exception_ptr failure;
  std::mutex failure_mutex;
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      at::init_num_threads();  // one intra-op thread per worker: parallelism is across clients
      try {
        for (std::int64_t i = next++; i < n; i = next++) fn(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(failure_mutex);
        if (!failure) failure = std::current_exception();
        next = n;
      }
    });
  }
  for (auto& w : workers) w.join();
  if (failure) std::rethrow_exception(failure);
}

std::vector<std::int64_t> to_vector(const torch::Tensor& t) {
  auto c = t.to(torch::kLong).contiguous();
  return {c.data_ptr<std::int64_t>(), c.data_ptr<std::int64_t>() + c.numel()};
}

toml::table options_table(const Options& options) {
  toml::table table;
  for (const auto& [name, value] : options.values()) {
    std::visit(
        [&, &name = name](const auto& v) {
          using T = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<T, std::vector<double>>) {
            toml::array array;
            for (double x : v) array.push_back(x);
            table.insert(name, array);
          } else {
            table.insert(name, v);
          }
        },
        value);
  }
  return table;
}

/// Rethrows a plugin's exception with the plugin and the hook named.
template <typename Fn>
auto guarded(const std::string& who, const char* hook, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const Error& e) {
    throw Error(e.kind(), who + " failed in " + hook + "(): " + e.what());
  } catch (const std::exception& e) {
    throw Error(ErrorKind::Runtime, who + " failed in " + hook + "(): " + e.what());
  }
}

/// One attack: its plugin, its schedule (ByzantineSchedule draws the sets) and backdoor test set.
struct ActiveAttack {
  PluginHandle<Attack> plugin;
  std::string label;             // "attack 'sign_flip'"
  ScheduleSpec schedule;
  std::optional<LabeledData> backdoor;            // triggered test set, when the attack has one
};

}  // namespace

struct Engine::Impl {
  ExperimentConfig config;
  PluginRegistry& registry;

  // Keep plugin handles after the registry reference: they are destroyed first, libraries stay
  // loaded in the registry until main() ends.
  PluginHandle<DatasetLoader> dataset_loader;
  PluginHandle<Aggregator> aggregator;
  std::vector<PluginHandle<Aggregator>> pre_aggregators;
  std::vector<ActiveAttack> attacks;
  PluginHandle<PrivacyMechanism> privacy;
  Options privacy_options;  // as validated; target_epsilon re-creates the mechanism from them
  std::unique_ptr<LeakageStudy> leakage;  // [leakage]; declared after privacy, whose hooks it calls
  std::string aggregator_label, privacy_label;
  toml::table resolved;

  // Run state.
  std::uint64_t seed = 0;
  Dataset data;
  Partition partition;
  Partition shared_samples;                  // DiverseFL: what each client shared with the server
  std::unique_ptr<Model> model;
  std::vector<std::string> summary_notices;  // each said once, kept for summary.json
  torch::Tensor theta;                       // θ [d], the global model
  torch::Tensor server_momentum, adam_m, adam_v;
  int threads = 1;
  const detail::StackedModel* stacked_model = nullptr;  // the model's client-batched form, if any
  bool batching = false;                                // clients.batching resolved for this model
  ByzantineSchedule schedule;                // who is malicious when (schedule.hpp)
  std::optional<PrivacyLedger> ledger;       // ε per level, round by round (accountant.hpp)
  double solved_noise_multiplier = std::nan("");  // [privacy] target_epsilon's solution
  // [experiment] device: where data, θ, U, client models and noise live (docs/architecture.md,
  // "Devices"). Index bookkeeping (partitions, sampling, batch order) stays on the host.
  torch::Device device = torch::kCPU;

  Impl(ExperimentConfig c, PluginRegistry& r) : config(std::move(c)), registry(r) {
    device = resolve_device();
    open_plugins();
    if (leakage && !device.is_cpu()) {
      throw Error(ErrorKind::Config, config.file + ": [leakage] runs on the CPU only in this version (its attacks "
                                     "optimise on host tensors); set [experiment] device = \"cpu\" for leakage studies");
    }
  }

  torch::Device resolve_device() const {
    if (config.experiment.get<std::string>("device") == "cpu") return torch::kCPU;
    if (!torch::cuda::is_available()) {
      throw Error(ErrorKind::Config, config.file + ": [experiment] device = \"cuda\", but this LibTorch " +
                                         (torch::cuda::device_count() == 0 && torch::hasCUDA()
                                              ? std::string("sees no GPU")
                                              : std::string("was built without CUDA")) +
                                         "; set device = \"cpu\", or build against a CUDA LibTorch (docs/performance.md, \"On a GPU\")");
    }
    init_cuda_runtime();
    return torch::Device(torch::kCUDA, 0);
  }

  template <typename I>
  PluginHandle<I> open(const ComponentSpec& spec, const std::string& role, toml::table* resolved_section,
                       Options* validated = nullptr) {
    auto library = registry.open(InterfaceKind<I>::value, spec.plugin);
    static const toml::table kNoOptions;
    auto options = validate_options(spec.table ? *spec.table : kNoOptions, library->option_specs(),
                                    role + " '" + library->info().name + "'", spec.ignored, config.file);
    if (resolved_section) {
      auto table = options_table(options);
      table.insert("plugin", spec.plugin);
      for (auto&& [k, v] : table) resolved_section->insert_or_assign(k, v);
    }
    if (validated) *validated = options;
    return PluginHandle<I>(library, options);
  }

  void open_plugins() {
    resolved.insert("experiment", options_table(config.experiment));
    resolved.insert("clients", options_table(config.clients));
    resolved.insert("server", options_table(config.server));
    resolved.insert("model", options_table(config.model));

    toml::table data_section;
    dataset_loader = open<DatasetLoader>(config.data, "dataset", &data_section);
    data_section.insert("partition", options_table(config.partition));
    resolved.insert("data", data_section);

    toml::table aggregator_section;
    aggregator = open<Aggregator>(config.aggregator, "aggregator", &aggregator_section);
    aggregator_label = "aggregator '" + aggregator.name() + "'";
    toml::array pre;
    for (const auto& spec : config.pre_aggregators) {
      toml::table pre_section;
      pre_aggregators.push_back(open<Aggregator>(spec, "pre-aggregator", &pre_section));
      pre.push_back(pre_section);
    }
    if (!pre.empty()) aggregator_section.insert("pre", pre);
    resolved.insert("aggregator", aggregator_section);

    toml::array attack_sections;
    for (const auto& spec : config.attacks) {
      toml::table section;
      ActiveAttack attack;
      attack.plugin = open<Attack>(spec.component, "attack", &section);
      attack.label = "attack '" + attack.plugin.name() + "'";
      const auto& s = spec.schedule;
      attack.schedule = ScheduleSpec::from_options(s, attack.label);
      for (auto&& [k, v] : options_table(s)) section.insert_or_assign(k, v);
      attack_sections.push_back(section);
      attacks.push_back(std::move(attack));
    }
    if (!attack_sections.empty()) resolved.insert("attack", attack_sections);
    // Drawn again with the run's seed in run(); built here so that `bulwark validate` already
    // rejects fixed sets larger than the client population.
    schedule = ByzantineSchedule(schedule_specs(), config.clients.get<std::int64_t>("count"), 0);

    if (config.has_privacy) {
      toml::table section;
      privacy = open<PrivacyMechanism>(config.privacy.component, "privacy", &section, &privacy_options);
      privacy_label = "privacy '" + privacy.name() + "'";
      for (auto&& [k, v] : options_table(config.privacy.accounting)) section.insert_or_assign(k, v);
      check_accounting_options();
      // With target_epsilon the noise multiplier is solved at run time (summary.json records it).
      if (config.privacy.accounting.get<double>("target_epsilon") > 0) section.erase(kNoiseMultiplierOption);
      resolved.insert("privacy", section);
    }

    if (auto spec = parse_leakage(*config.root, config.file, total_rounds())) {
      toml::table section;
      auto attack = open<Attack>(spec->attack, "leakage attack", &section);
      section.erase("plugin");  // [leakage] names its plugin with `attack`
      leakage = std::make_unique<LeakageStudy>(std::move(*spec), std::move(attack), config,
                                               privacy ? &*privacy : nullptr, privacy_label);
      leakage->add_settings(section);
      resolved.insert("leakage", section);
    }
  }

  // ---- setup -------------------------------------------------------------------------------

  void load_data() {
    data = guarded("dataset '" + dataset_loader.name() + "'", "load",
                   [&] { return dataset_loader->load(DatasetContext{seed}); });
    if (!data.train_inputs.defined() || data.train_inputs.size(0) == 0 || data.num_classes < 2) {
      throw Error(ErrorKind::Data, "error: dataset '" + dataset_loader.name() +
                                       "' returned no training data or fewer than 2 classes");
    }
    data.train_inputs = data.train_inputs.to(torch::kFloat).contiguous();
    data.test_inputs = data.test_inputs.to(torch::kFloat).contiguous();
    data.train_labels = data.train_labels.to(torch::kLong).contiguous();
    data.test_labels = data.test_labels.to(torch::kLong).contiguous();
    const auto clients = config.clients.get<std::int64_t>("count");
    partition = make_partition(data.train_labels, data.num_classes, clients, config.partition,
                               derive_seed(seed, 0, kServer, Stream::Partition));
    // Once, here: every batch is then gathered on the device from index windows.
    for (auto* tensor : {&data.train_inputs, &data.train_labels, &data.test_inputs, &data.test_labels}) {
      *tensor = tensor->to(device);
    }
  }

  std::vector<ScheduleSpec> schedule_specs() const {
    std::vector<ScheduleSpec> specs;
    for (const auto& attack : attacks) specs.push_back(attack.schedule);
    return specs;
  }

  void resolve_attack_sets() {
    schedule = ByzantineSchedule(schedule_specs(), config.clients.get<std::int64_t>("count"), seed);
    for (auto& attack : attacks) {
      auto backdoor = guarded(attack.label, "backdoor_test_set", [&] {
        return attack.plugin->backdoor_test_set(data.test_inputs, data.test_labels);
      });
      if (backdoor) backdoor = LabeledData{backdoor->inputs.to(device), backdoor->labels.to(device)};
      attack.backdoor = std::move(backdoor);
    }
  }

  // ---- privacy accounting (accountant.hpp) -------------------------------------------------

  /// The [privacy] accounting keys, checked with the mechanism so that `bulwark validate` catches
  /// them: δ, orders and conversion (by building a ledger), and what target_epsilon needs.
  void check_accounting_options() const {
    const auto& accounting = config.privacy.accounting;
    const auto& where = config.privacy.component.location;
    try {
      PrivacyLedger check(accounting);
    } catch (const Error& e) {
      throw Error(e.kind(), where + ": " + e.what());
    }
    const double target = accounting.get<double>("target_epsilon"), budget = accounting.get<double>("max_epsilon");
    if (!(target > 0)) return;
    auto fail = [&](const std::string& message) { throw Error(ErrorKind::Config, where + ": error: " + message); };
    if (!privacy_options.contains(kNoiseMultiplierOption)) {
      fail("target_epsilon needs a mechanism with a noise_multiplier option, and " + privacy_label +
           " has none; set its noise level directly and drop target_epsilon");
    }
    if (privacy_options.is_set(kNoiseMultiplierOption)) {
      fail("give either noise_multiplier or target_epsilon, not both (target_epsilon solves for noise_multiplier)");
    }
    if (budget > 0 && target > budget) {
      fail(fmt::format("target_epsilon = {} exceeds max_epsilon = {}; the run would stop early", target, budget));
    }
    if (config.root->contains("leakage")) {
      // LeakageStudy holds the mechanism created here; the solved one replaces it in run().
      fail("target_epsilon cannot be combined with [leakage] yet; solve once with `bulwark privacy "
           "--target-epsilon` and set noise_multiplier");
    }
  }

  /// Local SGD steps of a client with n > 0 examples; train_client and the accountant share it.
  std::int64_t local_steps(std::int64_t n) const {
    const auto& c = config.clients;
    if (config.experiment.get<std::string>("mode") == "fedsgd") return 1;
    const auto iterations = c.get<std::int64_t>("local_iterations");
    if (iterations > 0) return iterations;
    const auto batch = std::min<std::int64_t>(c.get<std::int64_t>("batch_size"), n);
    return c.get<std::int64_t>("local_epochs") * ((n + batch - 1) / batch);
  }

  /// K_t as sample_clients() draws it (the mean for Poisson sampling).
  std::int64_t expected_clients_per_round() const {
    const auto& c = config.clients;
    const auto total = c.get<std::int64_t>("count");
    const double rate = c.get<double>("poisson_rate") > 0 ? c.get<double>("poisson_rate") : c.get<double>("fraction");
    if (rate > 0) return std::max<std::int64_t>(1, std::llround(rate * static_cast<double>(total)));
    if (c.get<std::int64_t>("per_round") > 0) return c.get<std::int64_t>("per_round");
    return total;
  }

  /// The accountant's view of a round in which `sampled` of K clients take part, `clients` being
  /// them (or, for a projection, every client: the worst case). Example-level rate and steps are
  /// the worst over those clients: the smallest N_i gives the largest rate B/N_i, the largest
  /// N_i the most steps (equal for all when local_iterations is set).
  RoundAccountingInfo accounting_info(std::int64_t round, const std::vector<std::int64_t>& clients,
                                      std::int64_t sampled) const {
    const auto& c = config.clients;
    RoundAccountingInfo info;
    info.round = round;
    info.total_rounds = total_rounds();
    info.clients_total = c.get<std::int64_t>("count");
    info.clients_sampled = sampled;
    info.client_sampling_rate = c.get<double>("poisson_rate") > 0
                                    ? c.get<double>("poisson_rate")
                                    : static_cast<double>(sampled) / static_cast<double>(info.clients_total);
    info.batch_size = c.get<std::int64_t>("batch_size");
    info.train_samples = data.train_labels.size(0);
    info.layout = &model->layout();
    std::int64_t smallest = 0, largest = 0;  // among clients with data
    for (auto k : clients) {
      const auto size = partition.size(k);
      if (size == 0) continue;
      smallest = smallest == 0 ? size : std::min(smallest, size);
      largest = std::max(largest, size);
    }
    info.min_client_samples = smallest;
    info.local_steps = sampled > 0 && largest > 0 ? local_steps(largest) : 0;
    const auto batch = static_cast<double>(info.batch_size);
    if (config.privacy.accounting.get<std::string>("example_rate") == "global") {
      info.example_sampling_rate = std::min(1.0, batch * static_cast<double>(sampled) / static_cast<double>(info.train_samples));
    } else {
      info.example_sampling_rate = smallest > 0 ? std::min(1.0, batch / static_cast<double>(smallest)) : 0.0;
    }
    return info;
  }

  /// A fresh ledger for the run. With target_epsilon, first the noise multiplier that spends the
  /// budget over the projected run (every round as accounting_info() sees it over all clients, so
  /// the real run spends at most the target): bisection on throw-away instances of the mechanism
  /// with noise_multiplier overridden (privacy.hpp), then the mechanism re-created with the
  /// solution. The solution is derived, not configuration: summary.json records it, config.toml
  /// (the fingerprint studies and --resume compare) stays as written.
  void start_accounting() {
    ledger.emplace(config.privacy.accounting);
    const double target = config.privacy.accounting.get<double>("target_epsilon");
    if (!(target > 0)) return;
    std::vector<std::int64_t> everyone(config.clients.get<std::int64_t>("count"));
    std::iota(everyone.begin(), everyone.end(), 0);
    auto info = accounting_info(0, everyone, expected_clients_per_round());
    auto library = registry.open(BULWARK_KIND_PRIVACY, config.privacy.component.plugin);
    auto epsilon_of = [&](double sigma) {
      auto options = privacy_options;
      options.set(kNoiseMultiplierOption, sigma);
      PluginHandle<PrivacyMechanism> trial(library, options);
      PrivacyLedger projected(config.privacy.accounting);
      for (std::int64_t round = 1; round <= total_rounds(); ++round) {
        info.round = round;
        projected.add(guarded(privacy_label, "accounting", [&] { return trial->accounting(info); }));
      }
      return projected.epsilon().max();
    };
    const double sigma = solve_noise_multiplier(epsilon_of, target);
    privacy_options.set(kNoiseMultiplierOption, sigma);
    privacy = PluginHandle<PrivacyMechanism>(library, privacy_options);
    solved_noise_multiplier = sigma;
  }

  // ---- one round ---------------------------------------------------------------------------

  std::vector<std::int64_t> sample_clients(std::int64_t round) {
    const auto& c = config.clients;
    const auto total = c.get<std::int64_t>("count");
    auto generator = stream_generator(seed, round, kServer, Stream::Sampling);
    if (c.get<double>("poisson_rate") > 0) {
      auto draws = torch::rand({total}, generator, torch::kDouble);
      return to_vector(torch::nonzero(draws < c.get<double>("poisson_rate")).flatten());
    }
    std::int64_t count = total;
    if (c.get<std::int64_t>("per_round") > 0) count = c.get<std::int64_t>("per_round");
    if (c.get<double>("fraction") > 0) {
      count = std::max<std::int64_t>(1, std::llround(c.get<double>("fraction") * total));
    }
    if (count == total) {
      std::vector<std::int64_t> all(total);
      std::iota(all.begin(), all.end(), 0);
      return all;
    }
    auto chosen = to_vector(torch::randperm(total, generator, torch::kLong).narrow(0, 0, count));
    std::sort(chosen.begin(), chosen.end());
    return chosen;
  }

  /// attack index per row (-1 = honest); see ByzantineSchedule for the semantics.
  std::vector<int> assign_attacks(std::int64_t round, const std::vector<std::int64_t>& participants) {
    return schedule.malicious(round, participants);
  }

  /// DiverseFL: before training, each client shares ceil(fraction × N_i) of its examples, drawn
  /// at random, with the server. Stored like the partition: one index tensor plus offsets.
  void share_samples() {
    const double fraction = aggregator->shared_sample_fraction();
    if (fraction <= 0) return;
    std::vector<torch::Tensor> pieces;
    shared_samples.offsets.assign(1, 0);
    for (std::int64_t client = 0; client < partition.num_clients(); ++client) {
      const auto n = partition.size(client);
      const auto k = std::min<std::int64_t>(n, static_cast<std::int64_t>(std::ceil(fraction * static_cast<double>(n))));
      auto pick = torch::randperm(n, stream_generator(seed, 0, client, Stream::Aggregator), torch::kLong).narrow(0, 0, k);
      pieces.push_back(partition.client(client).index_select(0, pick));
      shared_samples.offsets.push_back(shared_samples.offsets.back() + k);
    }
    shared_samples.indices = torch::cat(pieces);
  }

  /// One client's local training in a round: its examples, step count and upload row.
  struct LocalJob {
    torch::Tensor indices;
    std::int64_t steps = 0;
    std::int64_t client = 0;
    int attack_index = -1;  // -1 = honest
    torch::Tensor row;      // Δ (FedAvg) or the gradient (FedSGD), written by train_local
  };

  /// Rows of the round that train together.
  struct Chunk {
    std::vector<std::int64_t> rows;
    std::int64_t width = 0;  // rows per client in the stacked batch; 0: one row, on the model itself
  };

  /// Client-batched training (DESIGN.md §7): rows with data and equal step counts form a group,
  /// cut in row order into chunks of at most clients.batch_clients, and further so that every
  /// worker has one. A client's stacked arithmetic depends on its own data and on the group's
  /// batch width only, not on its chunk (batching_test holds that bit for bit), so the cut may
  /// follow the thread count. Without batching every row is a chunk of its own.
  std::vector<Chunk> plan_chunks(const std::vector<std::int64_t>& participants) const {
    std::vector<Chunk> chunks;
    std::map<std::int64_t, std::vector<std::int64_t>> groups;  // step count -> rows
    for (std::size_t i = 0; i < participants.size(); ++i) {
      const auto n = partition.size(participants[i]);
      const auto row = static_cast<std::int64_t>(i);
      if (batching && n > 0) {
        groups[local_steps(n)].push_back(row);
      } else {
        chunks.push_back({{row}});
      }
    }
    const auto batch_size = config.clients.get<std::int64_t>("batch_size");
    const auto cap = config.clients.get<std::int64_t>("batch_clients");
    for (const auto& [steps, rows] : groups) {
      std::int64_t width = 0;
      for (auto row : rows) width = std::max(width, std::min(batch_size, partition.size(participants[row])));
      const auto size = static_cast<std::int64_t>(rows.size());
      const auto count = std::min(size, std::max<std::int64_t>((size + cap - 1) / cap, threads));
      for (std::int64_t c = 0; c < count; ++c) {
        chunks.push_back({{rows.begin() + c * size / count, rows.begin() + (c + 1) * size / count}, width});
      }
    }
    return chunks;
  }

  /// A malicious client's data hook on its rows of the step's batch (views, rewritten in place).
  void poison(std::int64_t round, const LocalJob& job, at::Generator& generator, torch::Tensor inputs,
              torch::Tensor labels) {
    const auto& attack = attacks[job.attack_index];
    DataAttackContext context{round, job.client, data.num_classes, generator};
    auto poisoned_inputs = inputs, poisoned_labels = labels;  // the hook may also hand back new tensors
    guarded(attack.label, "poison_batch", [&] { attack.plugin->poison_batch(poisoned_inputs, poisoned_labels, context); });
    if (poisoned_inputs.sizes() != inputs.sizes() || poisoned_labels.sizes() != labels.sizes()) {
      throw Error(ErrorKind::Runtime, attack.label + " changed the size of a batch in poison_batch; rewrite it in place");
    }
    if (!poisoned_inputs.is_same(inputs)) inputs.copy_(poisoned_inputs);
    if (!poisoned_labels.is_same(labels)) labels.copy_(poisoned_labels);
  }

  /// Local SGD of one or more clients from θ, each with every hook that applies to it. With
  /// `width` > 0 the clients (equal step counts) train as one stacked model — Θ [K, d], the
  /// model's StackedModel form, each client's batch padded to `width` rows with rows that carry no
  /// loss — otherwise the single client trains on the model itself. Returns each client's mean
  /// train loss. `server_side` runs (DiverseFL's guiding updates) skip the attack and privacy hooks.
  std::vector<double> train_local(std::int64_t round, const std::vector<LocalJob>& jobs, bool server_side,
                                  std::int64_t width = 0) {
    const auto& c = config.clients;
    const auto clients = static_cast<std::int64_t>(jobs.size());
    const auto d = theta.size(0);
    std::vector<double> losses(clients, 0.0);
    if (clients == 1 && jobs[0].indices.size(0) == 0) {
      jobs[0].row.zero_();
      return {std::nan("")};
    }
    const bool stacked = width > 0;
    const bool fedsgd = config.experiment.get<std::string>("mode") == "fedsgd";
    const double lr = c.get<double>("lr"), momentum = c.get<double>("momentum"),
                 weight_decay = c.get<double>("weight_decay");
    PrivacyMechanism* mechanism = server_side ? nullptr : privacy.operator->();
    const bool per_example = mechanism && mechanism->per_example();
    const auto steps = jobs[0].steps;

    // Each client keeps its own random streams and epoch order: its numbers are those it would
    // get training alone.
    struct Cursor {
      std::int64_t n, batch, batches_per_epoch;
      at::Generator batches, attack, privacy;
      bool poisons_data;
      torch::Tensor epoch;  // this epoch's shuffled example indices
    };
    std::vector<Cursor> cursors;
    for (const auto& job : jobs) {
      const auto n = job.indices.size(0);
      const auto batch = std::min<std::int64_t>(c.get<std::int64_t>("batch_size"), n);
      cursors.push_back({n, batch, (n + batch - 1) / batch,
                         stream_generator(seed, round, job.client, server_side ? Stream::Aggregator : Stream::Batches),
                         stream_generator(seed, round, job.client, Stream::Attack, device),
                         stream_generator(seed, round, job.client, Stream::Privacy, device),
                         job.attack_index >= 0 && attacks[job.attack_index].plugin->poisons_data(),
                         {}});
    }

    auto local = theta.unsqueeze(0).repeat({clients, 1}).requires_grad_(true);  // Θ [K, d]
    torch::Tensor velocity, loss_sums;
    for (std::int64_t step = 0; step < steps; ++step) {
      // Each client's batch is a window of its epoch's shuffled indices; stacked, client k's fills
      // rows [k·width, k·width + size_k), and shorter batches (an epoch's last, a client with
      // fewer than B examples) are padded with zero rows that carry no loss. One gather serves all.
      std::vector<torch::Tensor> takes;
      std::vector<std::int64_t> sizes;
      for (std::int64_t k = 0; k < clients; ++k) {
        auto& cursor = cursors[k];
        const auto position = (step % cursor.batches_per_epoch) * cursor.batch;
        if (position == 0) {
          cursor.epoch = jobs[k].indices.index_select(0, torch::randperm(cursor.n, cursor.batches, torch::kLong)).to(device);
        }
        const auto size = std::min(cursor.batch, cursor.n - position);
        takes.push_back(cursor.epoch.narrow(0, position, size));
        if (stacked && size < width) takes.push_back(cursor.epoch.narrow(0, 0, 1).expand({width - size}));
        sizes.push_back(size);
      }
      const auto stride = stacked ? width : sizes[0];
      const auto take = takes.size() == 1 ? takes[0] : torch::cat(takes);
      auto inputs = data.train_inputs.index_select(0, take);
      auto labels = data.train_labels.index_select(0, take);
      for (std::int64_t k = 0; k < clients; ++k) {
        if (sizes[k] < stride) {
          inputs.narrow(0, k * stride + sizes[k], stride - sizes[k]).zero_();
          labels.narrow(0, k * stride + sizes[k], stride - sizes[k]).zero_();
        }
        if (cursors[k].poisons_data) poison(round, jobs[k], cursors[k].attack, inputs.narrow(0, k * stride, sizes[k]),
                                           labels.narrow(0, k * stride, sizes[k]));
      }
      // Each client's mean cross-entropy over its own rows, from per-row values [K·width]; the
      // sum's gradient is each client's own.
      auto client_losses = [&](const torch::Tensor& row_losses) {
        if (!stacked) return row_losses.mean().view({1});
        auto size = torch::tensor(sizes, torch::kLong).to(device).unsqueeze(1);
        auto weight = (torch::arange(width, size.options()).unsqueeze(0) < size).to(torch::kFloat) / size;
        return (row_losses.view({clients, width}) * weight).sum(1);
      };
      auto row_losses_of = [&](const torch::Tensor& params) {
        auto logits = stacked ? stacked_model->forward_stacked(params, inputs) : model->forward(params.view({d}), inputs);
        return torch::cross_entropy_loss(logits, labels, {}, at::Reduction::None);
      };

      torch::Tensor gradient, step_losses;
      if (per_example) {
        // The zoo models hand back the per-row losses of the pass; others cost one more forward.
        torch::Tensor rows, row_losses;
        if (stacked_model) {
          rows = stacked_model->per_example_gradients_stacked(stacked ? local : local.view({d}), inputs, labels, &row_losses);
        } else {
          rows = model->per_example_gradients(local.view({d}), inputs, labels);
          torch::NoGradGuard no_grad;
          row_losses = row_losses_of(local);
        }
        gradient = torch::empty({clients, d}, theta.options());
        for (std::int64_t k = 0; k < clients; ++k) {
          PrivacyStepContext context{round, total_rounds(), jobs[k].client, step, steps, sizes[k],
                                     &model->layout(), cursors[k].privacy};
          context.rows_observed = false;  // nothing reads the rows after the hook during training
          auto own = rows.narrow(0, k * stride, sizes[k]);
          gradient[k].copy_(guarded(privacy_label, "privatize_gradients",
                                    [&] { return privacy->privatize_gradients(own, context); }));
        }
        step_losses = client_losses(row_losses);
      } else {
        step_losses = client_losses(row_losses_of(local));
        gradient = torch::autograd::grad({step_losses.sum()}, {local})[0];
      }
      // Summed where the losses are (no device-to-host copy per step), in double as before.
      loss_sums = loss_sums.defined() ? loss_sums.add_(step_losses.detach().to(torch::kDouble))
                                      : step_losses.detach().to(torch::kDouble);
      if (fedsgd) {
        for (std::int64_t k = 0; k < clients; ++k) jobs[k].row.copy_(gradient[k]);
        break;
      }
      // torch.optim.SGD's arithmetic (add_ with alpha), in place: a stacked Θ [K, d] outgrows the
      // cache, and every extra pass over it costs as much as a small layer. `gradient` is this
      // step's own tensor.
      torch::NoGradGuard no_grad;
      if (weight_decay > 0) gradient.add_(local, weight_decay);
      if (momentum > 0) {
        velocity = velocity.defined() ? velocity.mul_(momentum).add_(gradient) : gradient.clone();
        gradient = velocity;
      }
      local.sub_(gradient, lr);
    }

    torch::NoGradGuard no_grad;
    if (loss_sums.defined()) {
      const auto sums = loss_sums.cpu();
      for (std::int64_t k = 0; k < clients; ++k) losses[k] = sums.data_ptr<double>()[k];
    }
    for (std::int64_t k = 0; k < clients; ++k) {
      const auto& job = jobs[k];
      auto row = job.row;  // a handle on the same storage, for the hook's non-const reference
      if (!fedsgd) row.copy_(local[k] - theta);
      if (mechanism && mechanism->on_client_update()) {
        ClientUpdateContext context{round, total_rounds(), job.client, cursors[k].n, &model->layout(), cursors[k].privacy};
        guarded(privacy_label, "privatize_update", [&] { privacy->privatize_update(row, context); });
      }
      losses[k] /= static_cast<double>(fedsgd ? 1 : steps);
    }
    return losses;
  }

  /// DiverseFL's guiding update for a client: the server repeats the client's local training
  /// (same step count, so the norms are comparable) on the sample the client shared, honestly
  /// and without privacy hooks.
  torch::Tensor guiding_update(std::int64_t round, std::int64_t client) {
    auto row = torch::empty({theta.size(0)}, theta.options());
    LocalJob job{shared_samples.client(client), local_steps(partition.size(client)), client, -1, row};
    train_local(round, {job}, /*server_side=*/true);
    return row;
  }

  /// Runs the pre-aggregators and the rule. With `probe`, stateful plugins are restored after.
  AggregationResult aggregate(const torch::Tensor& updates, const torch::Tensor& weights,
                              AggregationContext& context, bool probe) {
    StateDict saved;
    if (probe) {
      aggregator->save_state(saved);
    }
    auto current = UpdateSet{updates, weights};
    for (auto& pre : pre_aggregators) {
      current = guarded("pre-aggregator '" + pre.name() + "'", "preprocess",
                        [&] { return pre->preprocess(current.updates, current.weights, context); });
    }
    auto result = guarded(aggregator_label, "aggregate",
                          [&] { return aggregator->aggregate(current.updates, current.weights, context); });
    if (probe) aggregator->load_state(saved);
    // After a pre-aggregator that regroups rows (bucketing), flags name buckets, not clients.
    if (current.updates.size(0) != updates.size(0)) result.reports_flags = false;
    if (!result.aggregate.defined() || result.aggregate.numel() != updates.size(1)) {
      throw Error(ErrorKind::Runtime, aggregator_label + " returned an aggregate of the wrong size");
    }
    return result;
  }

  struct Evaluation {
    double accuracy = std::nan(""), loss = std::nan("");
  };

  /// Accuracy (of predicting `labels`) and mean cross-entropy over a set, in fixed chunks whose
  /// partial sums are added in chunk order: the same numbers for any thread count.
  Evaluation evaluate(const torch::Tensor& inputs, const torch::Tensor& labels) {
    const auto n = inputs.size(0);
    if (n == 0) return {};
    const auto chunk = config.experiment.get<std::int64_t>("eval_batch_size");
    const auto chunks = (n + chunk - 1) / chunk;
    std::vector<torch::Tensor> correct(chunks), loss(chunks);  // where the model runs: one copy at the end
    parallel_for(chunks, threads, [&](std::int64_t i) {
      torch::NoGradGuard no_grad;
      const auto start = i * chunk, length = std::min(chunk, n - start);
      auto logits = model->forward(theta, inputs.narrow(0, start, length));
      auto y = labels.narrow(0, start, length);
      correct[i] = logits.argmax(1).eq(y).sum().to(torch::kDouble);
      loss[i] = torch::cross_entropy_loss(logits, y, {}, at::Reduction::Sum).to(torch::kDouble);
    });
    const auto correct_host = torch::stack(correct).cpu(), loss_host = torch::stack(loss).cpu();
    const auto* correct_values = correct_host.data_ptr<double>();
    const auto* loss_values = loss_host.data_ptr<double>();
    return {std::accumulate(correct_values, correct_values + chunks, 0.0) / static_cast<double>(n),
            std::accumulate(loss_values, loss_values + chunks, 0.0) / static_cast<double>(n)};
  }

  void server_step(const torch::Tensor& aggregate) {
    torch::NoGradGuard no_grad;
    const auto& s = config.server;
    // A descent direction: FedAvg uploads are deltas (θ moves along them), FedSGD uploads are
    // gradients (θ moves against them).
    auto direction = config.experiment.get<std::string>("mode") == "fedsgd" ? aggregate : -aggregate;
    direction = direction.to(theta.scalar_type());
    const double lr = s.get<double>("lr");
    if (s.get<std::string>("optimizer") == "adam") {
      const double b1 = s.get<double>("beta1"), b2 = s.get<double>("beta2");
      if (!adam_m.defined()) {
        adam_m = torch::zeros_like(theta);
        adam_v = torch::zeros_like(theta);
      }
      adam_m.mul_(b1).add_(direction, 1 - b1);
      adam_v.mul_(b2).addcmul_(direction, direction, 1 - b2);
      theta.sub_(lr * adam_m / (adam_v.sqrt() + s.get<double>("tau")));
      return;
    }
    const double momentum = s.get<double>("momentum");
    if (momentum > 0) {
      server_momentum = server_momentum.defined() ? server_momentum.mul_(momentum).add_(direction)
                                                  : direction.clone();
      direction = server_momentum;
    }
    theta.sub_(lr * direction);
  }

  std::int64_t total_rounds() const { return config.experiment.get<std::int64_t>("rounds"); }

  // ---- checkpoints (checkpoint.hpp) --------------------------------------------------------
  // Random streams are derived from (seed, round, client, purpose), data, partition and θ0 from
  // the seed, and the Byzantine schedule replays its chains from (seed, round): what one round
  // hands to the next is only θ, the server optimiser, the plugins' own state and the metrics.

  std::string resolved_text() const {
    std::stringstream text;
    text << resolved;
    return text.str();
  }

  Checkpoint capture(std::int64_t round, const MetricsLog& log, const RunSummary& summary, double elapsed) const {
    Checkpoint checkpoint;
    checkpoint.round = round;
    checkpoint.elapsed_seconds = elapsed;
    checkpoint.fingerprint = resolved_text();
    checkpoint.metrics = log.rows();
    checkpoint.tensors = {{"theta", theta},
                          {"server/momentum", server_momentum},
                          {"server/adam_m", adam_m},
                          {"server/adam_v", adam_v},
                          {"run/accuracy", torch::tensor({summary.final_accuracy, summary.best_accuracy, summary.final_loss},
                                                         torch::kDouble)}};
    auto save = [&](const std::string& prefix, const std::string& who, const auto& plugin) {
      StateDict state;
      guarded(who, "save_state", [&] { plugin->save_state(state); });
      checkpoint.put(prefix, state);
    };
    save("aggregator", aggregator_label, aggregator);
    for (std::size_t i = 0; i < pre_aggregators.size(); ++i) {
      save(fmt::format("pre/{}", i), "pre-aggregator '" + pre_aggregators[i].name() + "'", pre_aggregators[i]);
    }
    for (std::size_t a = 0; a < attacks.size(); ++a) save(fmt::format("attack/{}", a), attacks[a].label, attacks[a].plugin);
    if (privacy) save("privacy", privacy_label, privacy);
    if (ledger) checkpoint.put("accountant", ledger->state());
    return checkpoint;
  }

  void restore(const Checkpoint& checkpoint, const fs::path& file, MetricsLog& log, RunSummary& summary) {
    if (checkpoint.fingerprint != resolved_text()) {
      throw Error(ErrorKind::Config, "error: " + file.string() + " was written by a run of another configuration "
                                     "(the experiment file or a --set changed); run without --resume to start over");
    }
    auto tensor = [&](const std::string& name) {
      auto it = checkpoint.tensors.find(name);
      return it == checkpoint.tensors.end() ? torch::Tensor() : it->second.to(theta.device());
    };
    const auto saved_theta = tensor("theta");
    if (!saved_theta.defined() || !saved_theta.sizes().equals(theta.sizes()) || saved_theta.scalar_type() != theta.scalar_type()) {
      throw Error(ErrorKind::Data, "error: " + file.string() + " holds no θ of this model's shape; delete it to start over");
    }
    theta.copy_(saved_theta);
    server_momentum = tensor("server/momentum");
    adam_m = tensor("server/adam_m");
    adam_v = tensor("server/adam_v");
    auto load = [&](const std::string& prefix, const std::string& who, auto& plugin) {
      auto state = checkpoint.take(prefix);
      for (auto& entry : state) entry.second = entry.second.to(device);  // saved from the run's device
      guarded(who, "load_state", [&] { plugin->load_state(state); });
    };
    load("aggregator", aggregator_label, aggregator);
    for (std::size_t i = 0; i < pre_aggregators.size(); ++i) {
      load(fmt::format("pre/{}", i), "pre-aggregator '" + pre_aggregators[i].name() + "'", pre_aggregators[i]);
    }
    for (std::size_t a = 0; a < attacks.size(); ++a) load(fmt::format("attack/{}", a), attacks[a].label, attacks[a].plugin);
    if (privacy) load("privacy", privacy_label, privacy);
    if (ledger) ledger->load(checkpoint.take("accountant"));
    log.assign(checkpoint.metrics);
    const auto accuracy = tensor("run/accuracy").to(torch::kCPU);
    summary.final_accuracy = accuracy[0].item<double>();
    summary.best_accuracy = accuracy[1].item<double>();
    summary.final_loss = accuracy[2].item<double>();
    summary.rounds_run = checkpoint.round;
    summary.resumed_from = checkpoint.round;
  }

  RunSummary run(const RunOptions& options) {
    const auto start = Clock::now();
    const auto& e = config.experiment;
    seed = static_cast<std::uint64_t>(e.get<std::int64_t>("seed"));
    threads = options.threads >= 0 ? options.threads : static_cast<int>(e.get<std::int64_t>("threads"));
    if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));

    fs::path out = options.output_dir;
    if (out.empty()) out = e.get<std::string>("output");
    if (out.empty()) out = fs::path("runs") / e.get<std::string>("name");
    fs::create_directories(out);
    std::stringstream config_text;
    config_text << resolved;
    write_file_atomic(out / "config.toml", config_text.str() + "\n");

    load_data();
    // A relative TorchScript path is relative to the experiment file, not to the working folder.
    auto model_options = config.model;
    const auto model_path = fs::path(model_options.get<std::string>("path"));
    if (!model_path.empty() && model_path.is_relative() && !config.file.empty()) {
      model_options.set("path", (fs::path(config.file).parent_path() / model_path).string(), true);
    }
    model = build_model(model_options, data.input_shape, data.num_classes);
    if (privacy && privacy->per_example() && !model->vectorised()) {
      summary_notices.push_back("model '" + model_options.get<std::string>("arch") +
                                "' has layers without a vectorised per-example rule: per-example gradients "
                                "use a loop of batch-size-1 backward passes (correct, slower)");
      if (options.on_notice) options.on_notice(summary_notices.back());
    }
    stacked_model = dynamic_cast<const detail::StackedModel*>(model.get());
    const auto batching_mode = config.clients.get<std::string>("batching");
    batching = stacked_model && (batching_mode == "on" ||
                                 (batching_mode == "auto" && model->layout().total <= kAutoBatchingMaxParameters));
    theta = model->initial_parameters(derive_seed(seed, 0, kServer, Stream::Init)).to(device);
    resolve_attack_sets();
    share_samples();
    if (privacy) start_accounting();
    if (leakage) leakage->start(*model, data, partition, seed, out);

    MetricsLog log(out);
    RunSummary summary;
    summary.output_dir = out;
    summary.best_accuracy = 0.0;
    const auto rounds = total_rounds();
    const auto eval_every = e.get<std::int64_t>("eval_every");
    const auto d = model->layout().total;

    // summary.json marks a finished run (a study skips those): it goes until this run finishes.
    std::error_code no_error;
    fs::remove(out / "summary.json", no_error);
    const auto checkpoint_file = checkpoint_path(out);
    const auto checkpoint_every = e.get<std::int64_t>("checkpoint_every");
    std::int64_t first_round = 1;
    double elapsed_before = 0.0;  // wall time of the rounds a resumed run does not repeat
    if (options.resume && fs::exists(checkpoint_file)) {
      const auto checkpoint = load_checkpoint(checkpoint_file);
      restore(checkpoint, checkpoint_file, log, summary);
      first_round = checkpoint.round + 1;
      elapsed_before = checkpoint.elapsed_seconds;
    }

    for (std::int64_t round = first_round; round <= rounds; ++round) {
      const auto round_start = Clock::now();
      const auto participants = sample_clients(round);
      const auto owner = assign_attacks(round, participants);
      const auto n = static_cast<std::int64_t>(participants.size());
      std::vector<std::int64_t> malicious_rows, honest_rows;
      for (std::int64_t i = 0; i < n; ++i) (owner[i] >= 0 ? malicious_rows : honest_rows).push_back(i);

      // The round's privacy cost is known once its clients are: stop before it exceeds the budget.
      std::vector<AccountingEvent> privacy_events;
      if (ledger) {
        const auto info = accounting_info(round, participants, n);
        privacy_events = guarded(privacy_label, "accounting", [&] { return privacy->accounting(info); });
        const double budget = config.privacy.accounting.get<double>("max_epsilon");
        const double next = ledger->epsilon_after(privacy_events).max();
        if (budget > 0 && next > budget) {
          summary.stopped_reason = fmt::format("privacy budget: round {} would reach epsilon = {:.4g} > max_epsilon = {:.4g}",
                                               round, next, budget);
          break;
        }
      }

      // Step 3: clients train concurrently, each into its own row.
      auto updates = torch::empty({n, d}, theta.options());
      auto weights = torch::empty({n}, torch::kDouble);  // filled on the host, then moved
      std::vector<double> client_loss(n);
      auto phase = Clock::now();
      const auto chunks = plan_chunks(participants);
      parallel_for(static_cast<std::int64_t>(chunks.size()), threads, [&](std::int64_t c) {
        std::vector<LocalJob> jobs;
        for (auto i : chunks[c].rows) {
          const auto indices = partition.client(participants[i]);
          jobs.push_back({indices, indices.size(0) > 0 ? local_steps(indices.size(0)) : 0, participants[i], owner[i], updates[i]});
        }
        const auto losses = train_local(round, jobs, /*server_side=*/false, chunks[c].width);
        for (std::size_t k = 0; k < chunks[c].rows.size(); ++k) client_loss[chunks[c].rows[k]] = losses[k];
      });
      for (std::int64_t i = 0; i < n; ++i) weights[i] = static_cast<double>(partition.size(participants[i]));
      weights = weights.to(device);
      const double time_train = seconds_since(phase);

      // Step 6: leakage observers replay honest victims' first local step at this round's θ.
      if (leakage && leakage->observes(round)) {
        std::vector<std::int64_t> honest;
        for (auto i : honest_rows) honest.push_back(participants[i]);
        leakage->observe(round, theta, honest);
      }

      // Step 5: model-poisoning hooks see the finished uploads.
      phase = Clock::now();
      AggregationContext context;
      context.round = round;
      context.params = theta;
      context.layout = &model->layout();
      context.model = model.get();
      context.byzantine_bound = static_cast<std::int64_t>(malicious_rows.size());
      context.client_ids = participants;
      context.generator = stream_generator(seed, round, kServer, Stream::Aggregator, device);
      if (aggregator->wants_ground_truth()) context.true_malicious_rows = malicious_rows;
      if (shared_samples.indices.defined()) {
        context.guiding_update = [&, round](std::int64_t row) { return guiding_update(round, participants.at(row)); };
      }
      for (std::size_t a = 0; a < attacks.size(); ++a) {
        auto& attack = attacks[a];
        std::vector<std::int64_t> rows;
        for (std::int64_t i = 0; i < n; ++i) {
          if (owner[i] == static_cast<int>(a)) rows.push_back(i);
        }
        if (rows.empty() || !attack.plugin->poisons_updates()) continue;
        UpdateAttackContext attack_context;
        attack_context.round = round;
        attack_context.params = theta;
        attack_context.layout = &model->layout();
        attack_context.num_clients = n;
        attack_context.num_malicious = static_cast<std::int64_t>(malicious_rows.size());
        attack_context.generator = stream_generator(seed, round, kServer - 1 - static_cast<std::int64_t>(a), Stream::Attack, device);
        if (attack.plugin->omniscient()) {
          attack_context.malicious_rows = rows;
          attack_context.honest_rows = honest_rows;
          attack_context.aggregate_probe = [&](const torch::Tensor& candidate) {
            AggregationContext probe_context = context;
            probe_context.generator = stream_generator(seed, round, kServer, Stream::Aggregator, device);
            return aggregate(candidate, weights, probe_context, /*probe=*/true).aggregate;
          };
          guarded(attack.label, "poison_updates", [&] { attack.plugin->poison_updates(updates, attack_context); });
        } else {
          auto index = row_index(rows, updates);
          auto own = updates.index_select(0, index);
          attack_context.malicious_rows.resize(rows.size());
          std::iota(attack_context.malicious_rows.begin(), attack_context.malicious_rows.end(), 0);
          guarded(attack.label, "poison_updates", [&] { attack.plugin->poison_updates(own, attack_context); });
          updates.index_copy_(0, index, own);
        }
      }
      const double time_attack = seconds_since(phase);
      const auto nonfinite = n > 0 ? (~torch::isfinite(updates).all(1)).sum().item<std::int64_t>() : 0;

      // Steps 7-8: aggregate, central privacy, server step.
      phase = Clock::now();
      double precision = std::nan(""), recall = std::nan("");
      if (n > 0) {
        auto result = aggregate(updates, weights, context, /*probe=*/false);
        if (result.reports_flags) {
          std::set<std::int64_t> flagged(result.flagged_rows.begin(), result.flagged_rows.end());
          double hits = 0;
          for (auto r : malicious_rows) hits += flagged.count(r);
          if (!flagged.empty()) precision = hits / static_cast<double>(flagged.size());
          if (!malicious_rows.empty()) recall = hits / static_cast<double>(malicious_rows.size());
        }
        auto aggregate_vector = result.aggregate;
        if (privacy && privacy->on_server()) {
          ServerPrivacyContext server_context{round, rounds, n, &model->layout(),
                                              stream_generator(seed, round, kServer, Stream::Privacy, device)};
          guarded(privacy_label, "privatize_aggregate",
                  [&] { privacy->privatize_aggregate(aggregate_vector, server_context); });
        }
        server_step(aggregate_vector);
      }
      const double time_aggregate = seconds_since(phase);

      // Step 9: evaluate.
      phase = Clock::now();
      Evaluation test;
      std::vector<double> backdoor_accuracy;
      if (round % eval_every == 0 || round == rounds) {
        test = evaluate(data.test_inputs, data.test_labels);
        for (auto& attack : attacks) {
          if (attack.backdoor) backdoor_accuracy.push_back(evaluate(attack.backdoor->inputs, attack.backdoor->labels).accuracy);
        }
        summary.final_accuracy = test.accuracy;
        summary.final_loss = test.loss;
        summary.best_accuracy = std::max(summary.best_accuracy, test.accuracy);
      }
      const double time_eval = seconds_since(phase);

      double train_loss = 0.0, trained = 0.0;
      for (auto l : client_loss) {
        if (!std::isnan(l)) {
          train_loss += l;
          trained += 1;
        }
      }
      MetricsRow row = {{"round", static_cast<double>(round)},
                        {"clients", static_cast<double>(n)},
                        {"malicious", static_cast<double>(malicious_rows.size())},
                        {"nonfinite_updates", static_cast<double>(nonfinite)},
                        {"test_accuracy", test.accuracy},
                        {"test_loss", test.loss},
                        {"train_loss", trained > 0 ? train_loss / trained : std::nan("")}};
      std::size_t backdoor_index = 0;
      for (auto& attack : attacks) {
        if (!attack.backdoor) continue;
        const double value = backdoor_index < backdoor_accuracy.size() ? backdoor_accuracy[backdoor_index] : std::nan("");
        row.emplace_back(attacks.size() == 1 ? "backdoor_accuracy" : "backdoor_accuracy_" + attack.plugin.name(), value);
        ++backdoor_index;
      }
      if (!attacks.empty()) {
        row.emplace_back("detection_precision", precision);
        row.emplace_back("detection_recall", recall);
      }
      LevelEpsilon epsilon;  // NaN without privacy
      if (ledger) {
        ledger->add(privacy_events);
        epsilon = ledger->epsilon();
        row.emplace_back("epsilon_example", epsilon.example);
        row.emplace_back("epsilon_client", epsilon.client);
      }
      const double round_seconds = seconds_since(round_start);
      row.insert(row.end(), {{"time_train", time_train},
                             {"time_attack", time_attack},
                             {"time_aggregate", time_aggregate},
                             {"time_eval", time_eval},
                             {"time_round", round_seconds}});
      log.append(std::move(row));
      summary.rounds_run = round;
      if (checkpoint_every > 0 && round % checkpoint_every == 0 && round < rounds) {
        save_checkpoint(checkpoint_file, capture(round, log, summary, elapsed_before + seconds_since(start)));
      }

      if (options.on_round) {
        RoundProgress progress;
        progress.round = round;
        progress.rounds = rounds;
        progress.test_accuracy = test.accuracy;
        progress.test_loss = test.loss;
        progress.epsilon = epsilon.max();
        progress.round_seconds = round_seconds;
        progress.elapsed_seconds = seconds_since(start);
        progress.eta_seconds = progress.elapsed_seconds / static_cast<double>(round - first_round + 1) *
                               static_cast<double>(rounds - round);
        options.on_round(progress);
      }
    }

    summary.wall_seconds = elapsed_before + seconds_since(start);
    summary.metrics = log.rows();
    summary.notices = summary_notices;
    write_summary(out, summary);
    fs::remove(checkpoint_file, no_error);  // summary.json now marks the run as complete
    return summary;
  }

  void write_summary(const fs::path& out, const RunSummary& summary) const {
    nlohmann::ordered_json json;
    json["name"] = config.experiment.get<std::string>("name");
    json["seed"] = seed;
    json["rounds"] = summary.rounds_run;
    json["final_test_accuracy"] = summary.final_accuracy;
    json["best_test_accuracy"] = summary.best_accuracy;
    json["final_test_loss"] = summary.final_loss;
    json["wall_seconds"] = summary.wall_seconds;
    json["stopped_reason"] = summary.stopped_reason;
    json["notices"] = summary.notices;
    if (!std::isnan(solved_noise_multiplier)) json["solved_noise_multiplier"] = solved_noise_multiplier;
    json["threads"] = threads;
    json["dataset"] = data.description;
    json["model"] = model->describe();
    json["parameters"] = model->layout().total;
    json["aggregator"] = aggregator.name();
    nlohmann::ordered_json plugins = nlohmann::ordered_json::array();
    auto add = [&](const PluginLibrary& library) {
      plugins.push_back({{"kind", kind_name(library.info().kind)},
                         {"name", library.info().name},
                         {"version", library.info().version},
                         {"path", library.path().string()}});
    };
    add(dataset_loader.library());
    for (const auto& pre : pre_aggregators) add(pre.library());
    add(aggregator.library());
    for (const auto& attack : attacks) add(attack.plugin.library());
    if (privacy) add(privacy.library());
    json["plugins"] = plugins;
    if (leakage) leakage->add_summary(json);
    if (!summary.metrics.empty()) {
      nlohmann::ordered_json last;
      for (const auto& [name, value] : summary.metrics.back()) {
        last[name] = std::isfinite(value) ? nlohmann::ordered_json(value) : nlohmann::ordered_json(nullptr);
      }
      json["last_round"] = last;
    }
    write_file_atomic(out / "summary.json", json.dump(2) + "\n");
  }
};

Engine::Engine(ExperimentConfig config, PluginRegistry& registry)
    : impl_(std::make_unique<Impl>(std::move(config), registry)) {}

Engine::~Engine() = default;

RunSummary Engine::run(const RunOptions& options) { return impl_->run(options); }

std::string Engine::resolved_config() const {
  std::stringstream text;
  text << impl_->resolved;
  return text.str();
}

}  // namespace bulwark

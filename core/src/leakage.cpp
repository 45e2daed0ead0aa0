// Gradient-leakage studies: the [leakage] section, the three observation points, the metrics and
// the files. See leakage.hpp for what each point observes. Determinism: victims come from the
// (seed, round) leakage stream, a victim's batch and privacy noise from the same (seed, round,
// client) streams its real training uses, and each attack's randomness from (seed, round, client)
// of the leakage stream, so a study gives the same numbers for any worker-thread count.
#include "leakage.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "bulwark/error.hpp"
#include "bulwark/rng.hpp"
#include "config.hpp"
#include "local_trainer.hpp"
#include "outputs.hpp"
#include "png.hpp"

namespace bulwark {

namespace fs = std::filesystem;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();


/// `key` as an integer or a non-empty array of integers, each in [low, high]; sorted, distinct.
std::vector<std::int64_t> integer_list(const toml::table& table, const std::string& key, std::int64_t low,
                                       std::int64_t high, const std::string& range_text,
                                       std::vector<std::int64_t> fallback, const std::string& file) {
  const auto* node = table.get(key);
  if (!node) return fallback;
  std::vector<const toml::node*> items;
  if (const auto* array = node->as_array()) {
    if (array->empty()) config_error(where(*node, file), "[leakage] " + key + " must not be an empty list");
    for (const auto& item : *array) items.push_back(&item);
  } else {
    items.push_back(node);
  }
  std::vector<std::int64_t> values;
  for (const auto* item : items) {
    if (!item->is_integer()) {
      config_error(where(*item, file), "[leakage] " + key + " must be an integer or a list of integers, e.g. " +
                                           key + " = [" + std::to_string(low) + "]");
    }
    const auto value = *item->value<std::int64_t>();
    if (value < low || value > high) {
      config_error(where(*item, file), fmt::format("[leakage] {} = {} is out of range: {}", key, value, range_text));
    }
    values.push_back(value);
  }
  std::sort(values.begin(), values.end());
  values.erase(std::unique(values.begin(), values.end()), values.end());
  return values;
}

/// NaN-ignoring mean (NaN when nothing is finite): a diverged attack counts as a failure in the
/// success rate but does not turn every average into NaN.
double finite_mean(const std::vector<double>& values) {
  double sum = 0.0;
  std::size_t count = 0;
  for (double v : values) {
    if (std::isfinite(v)) {
      sum += v;
      ++count;
    }
  }
  return count ? sum / static_cast<double>(count) : kNaN;
}

nlohmann::ordered_json json_number(double value) {
  return std::isfinite(value) ? nlohmann::ordered_json(value) : nlohmann::ordered_json(nullptr);
}

const char* point_name(int point) {
  switch (point) {
    case 0: return "type 0 (what the server receives)";
    case 1: return "type 1 (the client's local update, after its client-level hook)";
    default: return "type 2 (a per-example gradient during local training)";
  }
}

/// One attack on one observation.
struct Record {
  std::int64_t round = 0, client = 0;
  int point = 0;
  double example = kNaN;  ///< index in the victim's batch for point 2; NaN for a batch attack
  bool success = false;
  double mse = kNaN, psnr = kNaN, ssim = kNaN, label_accuracy = kNaN, seconds = 0.0;
  std::int64_t iterations = 0;
};

/// Averages over a set of attacks, as leakage.csv and summary.json report them.
struct Averages {
  double attacks = 0, success_rate = kNaN, mse = kNaN, psnr = kNaN, ssim = kNaN, iterations = kNaN,
         iterations_to_success = kNaN, label_accuracy = kNaN, seconds = kNaN;
};

Averages average(const std::vector<const Record*>& records) {
  Averages a;
  a.attacks = static_cast<double>(records.size());
  if (records.empty()) return a;
  std::vector<double> mse, psnr, ssim, iterations, to_success, labels, seconds;
  double successes = 0;
  for (const auto* r : records) {
    successes += r->success;
    mse.push_back(r->mse);
    psnr.push_back(r->psnr);
    ssim.push_back(r->ssim);
    iterations.push_back(static_cast<double>(r->iterations));
    if (r->success) to_success.push_back(static_cast<double>(r->iterations));
    labels.push_back(r->label_accuracy);
    seconds.push_back(r->seconds);
  }
  a.success_rate = successes / a.attacks;
  a.mse = finite_mean(mse);
  a.psnr = finite_mean(psnr);
  a.ssim = finite_mean(ssim);
  a.iterations = finite_mean(iterations);
  a.iterations_to_success = finite_mean(to_success);
  a.label_accuracy = finite_mean(labels);
  a.seconds = finite_mean(seconds);
  return a;
}

const std::vector<std::string> kAverageColumns = {"attacks", "success_rate", "mse", "psnr", "ssim", "iterations",
                                                  "iterations_to_success", "label_accuracy", "seconds"};

std::vector<double> average_values(const Averages& a) {
  return {a.attacks, a.success_rate, a.mse, a.psnr, a.ssim, a.iterations, a.iterations_to_success,
          a.label_accuracy, a.seconds};
}

}  // namespace

const std::vector<OptionSpec>& leakage_option_specs() {
  static const std::vector<OptionSpec> specs = {
      {"attack", OptType::String, nullptr, 0, 0,
       "Leakage attack plugin: dlg, idlg, inverting_gradients, or a path to a .so. Every key of [leakage] "
       "not listed here is that plugin's option.",
       nullptr},
      {"point", OptType::List, "[0]", 0, 2,
       "Observation point(s), an integer or a list: 0 = the upload the server receives (after client-level "
       "privacy), 1 = the client's local update at the client (after its own client-level hook, as in the Fed-CDP paper), 2 = one example's gradient after the "
       "per-example hook.",
       nullptr},
      {"rounds", OptType::List, "[1]", 1, kInf,
       "Round(s) at which victims are attacked, an integer or a list (default the first: early gradients leak "
       "most).",
       nullptr},
      {"victims", OptType::Int, "1", 1, kInf,
       "Victim clients per observed round, drawn from the round's honest participants.", nullptr},
      {"batch_size", OptType::Int, "1", 1, kInf,
       "Examples in the victim's observed local iteration; must equal [clients] batch_size when a privacy "
       "mechanism runs.",
       nullptr},
      {"threshold", OptType::Float, "0.01", 0, kInf,
       "An attack succeeds when its reconstruction MSE per feature is below this (0.01 = PSNR 20 dB for data "
       "in [0, 1]).",
       nullptr},
      {"known_labels", OptType::Bool, "false", 0, 1,
       "Grant the attacker the victims' labels (otherwise attacks infer or optimise them).", nullptr},
  };
  return specs;
}

std::optional<LeakageSpec> parse_leakage(const toml::table& root, const std::string& file,
                                         std::int64_t total_rounds) {
  const auto* node = root.get("leakage");
  if (!node) return std::nullopt;
  const auto* table = node->as_table();
  if (!table) config_error(where(*node, file), "[leakage] must be a table");

  LeakageSpec spec;
  const auto& specs = leakage_option_specs();
  const auto* attack = table->get("attack");
  if (!attack) {
    config_error(where(*table, file),
                 "[leakage] needs an attack: add attack = \"dlg\" (or \"idlg\", \"inverting_gradients\", or a "
                 "path to a .so)");
  }
  if (!attack->is_string()) config_error(where(*attack, file), "[leakage] attack must be a string naming the plugin");
  spec.attack.plugin = *attack->value<std::string>();
  spec.attack.table = table;
  spec.attack.location = where(*table, file);
  for (const auto& s : specs) spec.attack.ignored.emplace_back(s.name);

  for (auto point : integer_list(*table, "point", 0, 2,
                                 "0 (what the server receives), 1 (the client's update before it is shared) or 2 "
                                 "(a per-example gradient during local training)",
                                 {0}, file)) {
    spec.points.push_back(static_cast<int>(point));
  }
  spec.rounds = integer_list(*table, "rounds", 1, total_rounds,
                             fmt::format("the run has rounds 1..{} ([experiment] rounds = {})", total_rounds,
                                         total_rounds),
                             {1}, file);

  // The scalar keys through the common validator; `attack`, `point`, `rounds` and the plugin's own
  // options are skipped here (the plugin's are checked against its schema when it is opened).
  std::vector<OptionSpec> scalar_specs(specs.begin() + 3, specs.end());
  std::vector<std::string> others;
  for (const auto& [key, value] : *table) {
    const std::string name(key.str());
    if (std::none_of(scalar_specs.begin(), scalar_specs.end(), [&](const OptionSpec& s) { return name == s.name; })) {
      others.push_back(name);
    }
  }
  spec.settings = validate_options(*table, scalar_specs, "[leakage]", others, file);
  return spec;
}

torch::Tensor reconstruction_mse(const torch::Tensor& reconstruction, const torch::Tensor& original) {
  auto difference = reconstruction.detach().to(torch::kDouble) - original.detach().to(torch::kDouble);
  return difference.pow(2).reshape({original.size(0), -1}).mean(1);
}

torch::Tensor reconstruction_psnr(const torch::Tensor& reconstruction, const torch::Tensor& original, double peak) {
  return 10.0 * torch::log10(peak * peak / reconstruction_mse(reconstruction, original));
}

torch::Tensor reconstruction_ssim(const torch::Tensor& reconstruction, const torch::Tensor& original, double range) {
  const auto batch = original.size(0);
  if (original.dim() != 4) return torch::full({batch}, kNaN, torch::kDouble);
  const auto channels = original.size(1), height = original.size(2), width = original.size(3);
  auto size = std::min<std::int64_t>({11, height, width});
  if (size % 2 == 0) --size;
  auto offsets = torch::arange(size, torch::kDouble) - static_cast<double>(size - 1) / 2.0;
  auto gauss = torch::exp(-offsets.pow(2) / (2.0 * 1.5 * 1.5));
  gauss = gauss / gauss.sum();
  auto window = torch::outer(gauss, gauss).view({1, 1, size, size});
  // Channels are filtered separately: fold them into the batch.
  auto x = reconstruction.detach().to(torch::kDouble).reshape({batch * channels, 1, height, width});
  auto y = original.detach().to(torch::kDouble).reshape({batch * channels, 1, height, width});
  auto filter = [&](const torch::Tensor& t) { return torch::conv2d(t, window); };
  auto mu_x = filter(x), mu_y = filter(y);
  auto var_x = filter(x * x) - mu_x * mu_x;
  auto var_y = filter(y * y) - mu_y * mu_y;
  auto cov = filter(x * y) - mu_x * mu_y;
  const double c1 = std::pow(0.01 * range, 2), c2 = std::pow(0.03 * range, 2);
  auto map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2));
  return map.reshape({batch, -1}).mean(1);
}

std::vector<std::int64_t> match_reconstructions(const torch::Tensor& reconstruction, const torch::Tensor& original) {
  const auto batch = original.size(0);
  std::vector<std::int64_t> order(batch);
  std::iota(order.begin(), order.end(), 0);
  if (batch <= 1) return order;
  // cost[i][j]: MSE between reconstruction i and original j.
  auto r = reconstruction.detach().to(torch::kDouble).reshape({batch, 1, -1});
  auto o = original.detach().to(torch::kDouble).reshape({1, batch, -1});
  auto cost_tensor = (r - o).pow(2).mean(2).nan_to_num(std::numeric_limits<double>::max()).contiguous();
  const double* cost = cost_tensor.data_ptr<double>();
  auto total = [&](const std::vector<std::int64_t>& p) {
    double sum = 0.0;
    for (std::int64_t j = 0; j < batch; ++j) sum += cost[p[j] * batch + j];
    return sum;
  };
  if (batch <= 8) {
    auto best = order;
    double best_cost = total(order);
    auto candidate = order;
    while (std::next_permutation(candidate.begin(), candidate.end())) {
      const double c = total(candidate);
      if (c < best_cost) {
        best_cost = c;
        best = candidate;
      }
    }
    return best;
  }
  // Greedy: repeatedly pair the closest remaining reconstruction and original.
  std::vector<bool> used_r(batch, false), used_o(batch, false);
  for (std::int64_t k = 0; k < batch; ++k) {
    double best_cost = std::numeric_limits<double>::infinity();
    std::int64_t bi = 0, bj = 0;
    for (std::int64_t i = 0; i < batch; ++i) {
      if (used_r[i]) continue;
      for (std::int64_t j = 0; j < batch; ++j) {
        if (!used_o[j] && cost[i * batch + j] < best_cost) {
          best_cost = cost[i * batch + j];
          bi = i;
          bj = j;
        }
      }
    }
    used_r[bi] = used_o[bj] = true;
    order[bj] = bi;
  }
  return order;
}

struct LeakageStudy::Impl {
  LeakageSpec spec;
  const Labelled<Attack>* attack = nullptr;

  // What turns an observed upload back into a gradient.
  bool fedsgd = false;
  LrSchedule lr;
  std::int64_t rounds = 1;
  double weight_decay = 0.0;
  // [leakage] settings.
  std::int64_t victims = 1, batch = 1;
  double threshold = 0.01;
  bool known_labels = false;

  // Run state.
  const Model* model = nullptr;
  const Dataset* data = nullptr;
  const Partition* partition = nullptr;
  const LocalTrainer* trainer = nullptr;
  std::uint64_t seed = 0;
  fs::path output_dir;
  double low = 0.0, high = 1.0;  // the training inputs' range: PSNR/SSIM peak and PNG scale
  std::vector<Record> records;
  std::vector<torch::Tensor> originals;                     // one [B, ...] per observed victim
  std::map<int, std::vector<torch::Tensor>> reconstructions;  // per point, aligned with originals

  bool wants(int point) const { return std::find(spec.points.begin(), spec.points.end(), point) != spec.points.end(); }

  /// Runs the attack on one observation and scores it against the truth; returns the
  /// reconstruction in the originals' order.
  torch::Tensor attack_one(Record record, const torch::Tensor& theta, const torch::Tensor& observed,
                           const torch::Tensor& x, const torch::Tensor& y, at::Generator generator) {
    LeakageProblem problem;
    problem.model = model;
    problem.params = theta;
    problem.observed = observed;
    problem.observed_is_mean = true;
    problem.batch_size = x.size(0);
    problem.input_shape = data->input_shape;
    problem.num_classes = data->num_classes;
    if (known_labels) problem.known_labels = y;
    problem.generator = std::move(generator);

    const auto start = std::chrono::steady_clock::now();
    auto result = call_plugin(attack->label, "reconstruct", [&] { return (*attack)->reconstruct(problem); });
    record.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!result.inputs.defined() || result.inputs.numel() != x.numel() || !result.labels.defined() ||
        result.labels.numel() != y.numel()) {
      throw Error(ErrorKind::Runtime, attack->label + " returned a reconstruction of the wrong size: expected " +
                                          std::to_string(x.size(0)) + " inputs and labels");
    }
    // Scored as an image: clamped to the data's value range, as an attacker would show it. A
    // diverged reconstruction would otherwise reach MSEs of 1e9 and swamp every average.
    auto inputs = result.inputs.detach().to(torch::kFloat).reshape(x.sizes()).clamp(low, high);
    auto labels = result.labels.detach().to(torch::kLong).flatten();
    auto order = torch::tensor(match_reconstructions(inputs, x), torch::kLong);
    inputs = inputs.index_select(0, order);
    labels = labels.index_select(0, order);

    const double range = high > low ? high - low : 1.0;
    record.mse = reconstruction_mse(inputs, x).mean().item<double>();
    record.psnr = reconstruction_psnr(inputs, x, range).mean().item<double>();
    record.ssim = reconstruction_ssim(inputs, x, range).mean().item<double>();
    record.label_accuracy = known_labels ? kNaN : labels.eq(y).to(torch::kDouble).mean().item<double>();
    record.success = record.mse < threshold;  // false for NaN
    record.iterations = result.iterations;
    records.push_back(record);
    return inputs;
  }

  void observe_victim(std::int64_t round, std::int64_t client, const torch::Tensor& theta) {
    // The victim's real first step (LocalTrainer): its batch, the per-example rows after the
    // per-example hook (point 2) and its upload after the client-level hook. The client-level
    // mechanism runs at the client (Fed-CDP paper, Algorithm 1), so the client's own copy (type 1)
    // and what the server receives (type 0) carry the same noise; both are turned back into the
    // loss gradient as the server would: −Δ/lr − λθ in fedavg mode, g − λθ in fedsgd mode.
    auto step = trainer->observe_first_step(round, theta, partition->client(client), client, batch);
    const auto& x = step.inputs;
    const auto& y = step.labels;
    const auto& rows = step.rows;
    torch::Tensor uploaded;
    if (wants(0) || wants(1)) {
      torch::NoGradGuard no_grad;
      uploaded = (fedsgd ? step.upload : -step.upload / lr.at(round, rounds)) - weight_decay * theta;
    }

    const auto attack_seed = derive_seed(seed, round, client, Stream::Leakage);
    originals.push_back(x);
    for (int point : spec.points) {
      Record record;
      record.round = round;
      record.client = client;
      record.point = point;
      if (point < 2) {
        // The same dummy initialisation for points 0 and 1.
        reconstructions[point].push_back(attack_one(record, theta, uploaded, x, y,
                                                    make_generator(attack_seed)));
        continue;
      }
      std::vector<torch::Tensor> parts;
      for (std::int64_t b = 0; b < batch; ++b) {
        record.example = static_cast<double>(b);
        // Example 0 shares the dummy initialisation of points 0 and 1.
        const auto example_seed = b == 0 ? attack_seed : derive_seed(attack_seed, b, kServer, Stream::Leakage);
        parts.push_back(attack_one(record, theta, rows[b], x.narrow(0, b, 1), y.narrow(0, b, 1),
                                   make_generator(example_seed)));
      }
      reconstructions[point].push_back(torch::cat(parts));
    }
  }

  std::vector<const Record*> select(std::int64_t round, int point) const {
    std::vector<const Record*> out;
    for (const auto& r : records) {
      if ((round < 0 || r.round == round) && r.point == point) out.push_back(&r);
    }
    return out;
  }

  void write_outputs() const {
    std::string summary = "round,point";
    for (const auto& c : kAverageColumns) summary += "," + c;
    summary += "\n";
    for (auto round : spec.rounds) {
      for (int point : spec.points) {
        auto selected = select(round, point);
        if (selected.empty()) continue;
        summary += fmt::format("{},{}", round, point);
        for (double v : average_values(average(selected))) summary += "," + format_csv_number(v);
        summary += "\n";
      }
    }
    write_file_atomic(output_dir / "leakage.csv", summary);

    std::string detail = "round,point,client,example,success,mse,psnr,ssim,iterations,label_accuracy,seconds\n";
    for (const auto& r : records) {
      detail += fmt::format("{},{},{},{},{},{},{},{},{},{},{}\n", r.round, r.point, r.client,
                            format_csv_number(r.example), r.success ? 1 : 0, format_csv_number(r.mse),
                            format_csv_number(r.psnr), format_csv_number(r.ssim), r.iterations,
                            format_csv_number(r.label_accuracy), format_csv_number(r.seconds));
    }
    write_file_atomic(output_dir / "leakage_attacks.csv", detail);

    // Pictures only for images: [C, H, W] with 1 or 3 channels (or [H, W], shown as grey).
    const auto& shape = data->input_shape;
    const bool image = (shape.size() == 3 && (shape[0] == 1 || shape[0] == 3)) || shape.size() == 2;
    if (!image || originals.empty()) return;
    auto as_images = [&](const torch::Tensor& t) { return shape.size() == 2 ? t.unsqueeze(1) : t; };
    std::vector<torch::Tensor> grid{as_images(torch::cat(originals))};
    for (int point : spec.points) grid.push_back(as_images(torch::cat(reconstructions.at(point))));
    write_png_grid(output_dir / "leakage.png", grid, low, high);
  }
};

LeakageStudy::LeakageStudy(const LeakageSpec& spec, const Labelled<Attack>& attack, const RunSettings& settings,
                           const Labelled<PrivacyMechanism>& privacy)
    : impl_(std::make_unique<Impl>()) {
  auto& s = *impl_;
  s.spec = spec;
  s.attack = &attack;
  s.fedsgd = settings.mode == Mode::FedSgd;
  s.lr = settings.clients.lr;
  s.rounds = settings.rounds;
  s.weight_decay = settings.clients.weight_decay;
  s.victims = s.spec.settings.get<std::int64_t>("victims");
  s.batch = s.spec.settings.get<std::int64_t>("batch_size");
  s.threshold = s.spec.settings.get<double>("threshold");
  s.known_labels = s.spec.settings.get<bool>("known_labels");
  const auto client_batch = settings.clients.schedule.batch_size;

  const auto& location = s.spec.attack.location;
  if (!attack->reconstructs()) {
    config_error(location, "[leakage] attack '" + attack.plugin.name() +
                            "' has no leakage hook (it does not reconstruct inputs from gradients); use dlg, idlg "
                            "or inverting_gradients");
  }
  if (privacy && settings.clients.schedule.batch_fraction > 0) {
    config_error(location, fmt::format("[leakage] with {} configured observes the protocol's own step, which needs one "
                                       "batch size for every client: set [clients] batch_size instead of batch_fraction",
                                       privacy.label));
  }
  if (privacy && s.batch != client_batch) {
    config_error(location, fmt::format("[leakage] batch_size = {} differs from [clients] batch_size = {}; with {} "
                                    "configured the observation must be the protocol's own step (the mechanism's "
                                    "noise is calibrated to its batch): set both to the same value",
                                    s.batch, client_batch, privacy.label));
  }
  const bool per_example = privacy && privacy->per_example();
  if (s.wants(2) && !per_example && s.batch > 1) {
    config_error(location,
                 fmt::format("[leakage] point 2 observes a per-example gradient, but no per-example privacy "
                             "mechanism computes them in this experiment and a victim batch of {} examples only "
                             "ever yields their mean; set [leakage] batch_size = 1 (the batch gradient is then the "
                             "example's own) or configure a per-example mechanism such as dp_sgd or fed_cdp",
                             s.batch));
  }
  const auto clients = settings.clients.count;
  if (s.victims > clients) {
    config_error(location, fmt::format("[leakage] victims = {} exceeds [clients] count = {}", s.victims, clients));
  }
  if (s.wants(0) && !s.fedsgd) {
    for (auto round : s.spec.rounds) {
      if (s.lr.at(round, s.rounds) > 0) continue;
      config_error(location, fmt::format("[leakage] point 0 in fedavg mode needs a [clients] lr > 0 in every observed "
                                         "round, but round {} has lr = 0 and every upload is zero",
                                         round));
    }
  }
}

LeakageStudy::~LeakageStudy() = default;

void add_leakage_settings(const LeakageSpec& spec, const std::string& attack_name, toml::table& section) {
  section.insert_or_assign("attack", attack_name);
  toml::array points, rounds;
  for (int p : spec.points) points.push_back(static_cast<std::int64_t>(p));
  for (auto r : spec.rounds) rounds.push_back(r);
  section.insert_or_assign("point", points);
  section.insert_or_assign("rounds", rounds);
  section.insert_or_assign("victims", spec.settings.get<std::int64_t>("victims"));
  section.insert_or_assign("batch_size", spec.settings.get<std::int64_t>("batch_size"));
  section.insert_or_assign("threshold", spec.settings.get<double>("threshold"));
  section.insert_or_assign("known_labels", spec.settings.get<bool>("known_labels"));
}

void LeakageStudy::start(const Model& model, const Dataset& data, const Partition& partition,
                         const LocalTrainer& trainer, std::uint64_t seed, const fs::path& output_dir) {
  auto& s = *impl_;
  s.trainer = &trainer;
  s.model = &model;
  s.data = &data;
  s.partition = &partition;
  s.seed = seed;
  s.output_dir = output_dir;
  s.low = data.train_inputs.min().item<double>();
  s.high = data.train_inputs.max().item<double>();
}

bool LeakageStudy::observes(std::int64_t round) const {
  const auto& rounds = impl_->spec.rounds;
  return std::binary_search(rounds.begin(), rounds.end(), round);
}

void LeakageStudy::observe(std::int64_t round, const torch::Tensor& theta,
                           const std::vector<std::int64_t>& candidates) {
  auto& s = *impl_;
  std::vector<std::int64_t> eligible;
  for (auto client : candidates) {
    if (s.partition->size(client) >= s.batch) eligible.push_back(client);
  }
  if (eligible.empty()) return;
  auto order = torch::randperm(static_cast<std::int64_t>(eligible.size()),
                               stream_generator(s.seed, round, kServer, Stream::Leakage), torch::kLong);
  const auto count = std::min<std::int64_t>(s.victims, static_cast<std::int64_t>(eligible.size()));
  std::vector<std::int64_t> chosen;
  for (std::int64_t i = 0; i < count; ++i) chosen.push_back(eligible[order[i].item<std::int64_t>()]);
  std::sort(chosen.begin(), chosen.end());
  auto params = theta.detach().clone();  // attacks must not see later server steps
  for (auto client : chosen) s.observe_victim(round, client, params);
  s.write_outputs();
}

void LeakageStudy::add_summary(nlohmann::ordered_json& json) const {
  const auto& s = *impl_;
  nlohmann::ordered_json leakage;
  leakage["attack"] = s.attack->plugin.name();
  leakage["threshold"] = s.threshold;
  leakage["victims"] = s.victims;
  leakage["batch_size"] = s.batch;
  leakage["known_labels"] = s.known_labels;
  leakage["rounds"] = s.spec.rounds;
  nlohmann::ordered_json points = nlohmann::ordered_json::array();
  for (int point : s.spec.points) {
    nlohmann::ordered_json entry;
    entry["point"] = point;
    entry["observes"] = point_name(point);
    const auto values = average_values(average(s.select(-1, point)));
    for (std::size_t i = 0; i < kAverageColumns.size(); ++i) entry[kAverageColumns[i]] = json_number(values[i]);
    points.push_back(entry);
  }
  leakage["points"] = points;
  json["leakage"] = leakage;

}

}  // namespace bulwark

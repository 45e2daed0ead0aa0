// The experiment file: sections, their schemas, and the split between keys the kernel handles
// and keys that belong to a plugin.
#include "experiment.hpp"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (moved here in fmt 11)

#include "bulwark/error.hpp"
#include "audit.hpp"
#include "config.hpp"
#include "leakage.hpp"
#include "models.hpp"
#include "partition.hpp"

namespace bulwark {

namespace {

using bulwark::kInf;


const std::vector<std::string> kSections = {"experiment", "data",   "model",   "clients", "aggregator",
                                            "attack",     "privacy", "server", "leakage", "audit", "sweep"};

const toml::table& section(const toml::table& root, const std::string& name, const std::string& file,
                           bool required) {
  static const toml::table empty;
  const auto* node = root.get(name);
  if (!node) {
    if (required) config_error(file, "missing section [" + name + "]");
    return empty;
  }
  const auto* table = node->as_table();
  if (!table) config_error(where(*node, file), "[" + name + "] must be a table");
  return *table;
}

/// A component table: `plugin` names the plugin, `host_keys` belong to the kernel, every other
/// key is the plugin's option.
ComponentSpec component(const toml::table& table, const std::string& what, const std::string& file,
                        const std::vector<std::string>& host_keys) {
  ComponentSpec spec;
  spec.location = where(table, file);
  const auto* plugin = table.get("plugin");
  if (!plugin && table.source().begin.line == 0) {
    config_error(spec.location, what + " is not in the file and --set gave it no plugin: add --set " +
                                    what.substr(1, what.size() - 2) + ".plugin=NAME, or write the section in the file");
  }
  if (!plugin) config_error(spec.location, what + " needs a plugin: add plugin = \"name\" (or a path to a .so)");
  if (!plugin->is_string()) config_error(where(*plugin, file), "plugin must be a string");
  spec.plugin = *plugin->value<std::string>();
  spec.table = &table;
  spec.ignored = host_keys;
  spec.ignored.push_back("plugin");
  return spec;
}

/// The kernel's share of a component table, validated against its schema (other keys skipped).
Options host_options(const toml::table& table, const std::vector<OptionSpec>& specs,
                     const std::string& what, const std::string& file) {
  std::vector<std::string> others;
  for (const auto& [key, node] : table) {
    const std::string name(key.str());
    if (std::none_of(specs.begin(), specs.end(), [&](const OptionSpec& s) { return name == s.name; })) {
      others.push_back(name);
    }
  }
  return validate_options(table, specs, what, others, file);
}

// [model] with `layers` written as a TOML array of strings turned into the one string the schema
// holds (specs joined by newlines, which the model splits again).
toml::table model_section(const toml::table& model, const std::string& file) {
  toml::table copy = model;
  const auto* layers = model.get("layers");
  if (const auto* list = layers ? layers->as_array() : nullptr) {
    std::string joined;
    for (const auto& item : *list) {
      const auto* text = item.as_string();
      if (!text) config_error(where(item, file), "[model] layers: every layer is a string, e.g. \"conv 6 5\"");
      if (text->get().find(',') != std::string::npos) {
        config_error(where(item, file), "[model] layers: one layer per string, found \"" + text->get() + "\"");
      }
      joined += (joined.empty() ? "" : "\n") + text->get();
    }
    copy.insert_or_assign("layers", joined);
  }
  return copy;
}

std::vector<std::string> names_of(const std::vector<OptionSpec>& specs) {
  std::vector<std::string> names;
  for (const auto& s : specs) names.emplace_back(s.name);
  return names;
}

}  // namespace

const std::vector<OptionSpec>& experiment_option_specs() {
  static const std::vector<OptionSpec> specs = {
      {"name", OptType::String, "\"experiment\"", 0, 0, "Name shown in progress lines and outputs.", nullptr},
      {"seed", OptType::Int, "1", 0, kInf, "Seed of every random stream (data split, sampling, noise, attacks).", nullptr},
      {"rounds", OptType::Int, "10", 1, kInf, "Number of federated rounds.", nullptr},
      {"eval_every", OptType::Int, "1", 1, kInf, "Evaluate on the test set every k rounds (and after the last).", nullptr},
      {"output", OptType::String, "\"\"", 0, 0, "Output folder; default runs/<name>. --out overrides it.", nullptr},
      {"threads", OptType::Int, "0", 0, 1024, "Worker threads for clients and evaluation; 0 = all cores.", nullptr},
      {"mode", OptType::String, "\"fedavg\"", 0, 0,
       "fedavg: clients upload Δ = θ_local − θ after local training; fedsgd: one gradient at θ on one batch.",
       "fedavg|fedsgd"},
      {"eval_batch_size", OptType::Int, "1000", 1, kInf, "Batch size for evaluation.", nullptr},
      {"eval_subset", OptType::Int, "0", 0, kInf,
       "Evaluate the rounds before the last on a fixed random subset of this many test examples "
       "(drawn once from the seed; metrics gain a test_examples column); the last round always on "
       "the full test set. 0 = the full set every time.",
       nullptr},
      {"device", OptType::String, "\"cpu\"", 0, 0, "cpu, or cuda: data, models and updates on the first GPU (needs a CUDA LibTorch; docs/performance.md, On a GPU).", "cpu|cuda"},
      {"checkpoint_every", OptType::Int, "0", 0, kInf,
       "Save a checkpoint every k rounds (0 = never); `bulwark run --resume` continues from it with "
       "the same results as an uninterrupted run.",
       nullptr},
      {"save_updates", OptType::List, "[]", 1, kInf,
       "Rounds whose update matrix U [n, d] (after the attacks, before any pre-aggregator) is saved as "
       "updates/round_<r>.npy, with round_<r>.json (the rows' client ids, malicious rows, the rows the rule "
       "flagged): `bulwark aggregate --updates` then compares rules on the very same local training.",
       nullptr},
  };
  return specs;
}

/// `specs` followed by the learning-rate schedule's options, shared by [clients] and [server].
std::vector<OptionSpec> with_lr_schedule(std::vector<OptionSpec> specs) {
  const std::vector<OptionSpec> schedule = {
      {"lr_schedule", OptType::String, "\"constant\"", 0, 0,
       "How lr changes with the round r of R: constant; step = lr * lr_gamma^(milestones <= r); inv_sqrt = lr / "
       "sqrt(r); exponential = lr * lr_gamma^(r-1); cosine = lr_min + (lr - lr_min)(1 + cos(pi (r-1)/R))/2.",
       "constant|step|inv_sqrt|exponential|cosine"},
      {"lr_milestones", OptType::List, "[]", 1, kInf,
       "step: ascending rounds from which the rate is multiplied by lr_gamma once more.", nullptr},
      {"lr_gamma", OptType::Float, "0.1", 0, kInf, "step and exponential: the factor.", nullptr},
      {"lr_min", OptType::Float, "0", 0, kInf, "cosine: the rate the curve falls towards.", nullptr},
      {"lr_warmup_rounds", OptType::Int, "0", 0, kInf,
       "Linear warm-up: rounds 1..W go in equal steps from lr_warmup_from to the schedule's rate at round W+1.",
       nullptr},
      {"lr_warmup_from", OptType::Float, "0", 0, kInf, "The warm-up's rate in round 1.", nullptr},
  };
  specs.insert(specs.end(), schedule.begin(), schedule.end());
  return specs;
}

/// The schedule options that only mean something with another option: a key written where it has
/// no effect is an error rather than silently ignored.
void check_lr_schedule(const toml::table& table, const Options& options, const std::string& owner,
                       const std::string& file) {
  const auto kind = options.get<std::string>("lr_schedule");
  auto refuse_unless = [&](const char* key, bool used, const std::string& why) {
    if (options.is_set(key) && !used) config_error(where(*table.get(key), file), fmt::format("{} {} {}", owner, key, why));
  };
  refuse_unless("lr_milestones", kind == "step", "is read by lr_schedule = \"step\" only; set lr_schedule = \"step\" or remove it");
  refuse_unless("lr_gamma", kind == "step" || kind == "exponential",
                "is read by lr_schedule = \"step\" or \"exponential\" only; set one of them or remove it");
  refuse_unless("lr_min", kind == "cosine", "is read by lr_schedule = \"cosine\" only; set it or remove lr_min");
  refuse_unless("lr_warmup_from", options.get<std::int64_t>("lr_warmup_rounds") > 0,
                "needs lr_warmup_rounds >= 1 (the rounds the warm-up lasts)");
  const auto milestones = options.get<std::vector<double>>("lr_milestones");
  if (kind == "step" && milestones.empty()) {
    config_error(where(table, file), owner + " lr_schedule = \"step\" needs lr_milestones, e.g. lr_milestones = [500, 950]");
  }
  for (std::size_t i = 0; i < milestones.size(); ++i) {
    if (milestones[i] != std::floor(milestones[i]) || (i > 0 && milestones[i] <= milestones[i - 1])) {
      config_error(where(*table.get("lr_milestones"), file),
                   owner + " lr_milestones must be whole rounds in ascending order, e.g. [500, 950]");
    }
  }
  if (kind == "cosine" && options.get<double>("lr_min") > options.get<double>("lr")) {
    config_error(where(*table.get("lr_min"), file), fmt::format("{} lr_min = {} exceeds lr = {}: cosine falls from lr to lr_min",
                                                                owner, options.get<double>("lr_min"), options.get<double>("lr")));
  }
}

const std::vector<OptionSpec>& client_option_specs() {
  static const std::vector<OptionSpec> specs = with_lr_schedule({
      {"count", OptType::Int, "10", 1, 1e8, "K: total number of clients (at most 10^8: per-client state is kept for each).", nullptr},
      {"per_round", OptType::Int, "0", 0, kInf, "Clients sampled per round (fixed count); 0 = all unless fraction/poisson_rate.", nullptr},
      {"fraction", OptType::Float, "0", 0, 1, "Fraction of K sampled per round (rounded, at least 1).", nullptr},
      {"poisson_rate", OptType::Float, "0", 0, 1, "Each client takes part independently with probability q (what DP accounting assumes).", nullptr},
      {"local_epochs", OptType::Int, "1", 0, kInf, "E: passes over the local data per round (used when local_iterations = 0).", nullptr},
      {"local_iterations", OptType::Int, "0", 0, kInf, "L: local SGD steps per round (overrides local_epochs when > 0).", nullptr},
      {"batch_size", OptType::Int, "32", 1, kInf, "B: local batch size.", nullptr},
      {"batch_fraction", OptType::Float, "0", 0, 1,
       "Instead of batch_size: each client's batch is this share of its N_i examples, max(1, round(f N_i)); "
       "1 = full-batch gradients.", nullptr},
      {"lr", OptType::Float, "0.01", 0, kInf, "Local learning rate.", nullptr},
      {"momentum", OptType::Float, "0", 0, 1, "Local SGD momentum (PyTorch semantics, reset every round).", nullptr},
      {"weight_decay", OptType::Float, "0", 0, kInf, "Local L2 weight decay λ: every local gradient gets + λθ (torch.optim.SGD); in fedsgd mode the upload is ∇ℓ + λθ.", nullptr},
      {"batching", OptType::String, "\"auto\"", 0, 0,
       "Client-batched local training: clients of a round with equal step counts train as one stacked "
       "model (the same numbers to float rounding). auto = on for softmax and mlp models with d <= 65,536 "
       "parameters, where it is faster on a CPU (never for convolutions); on; off = one client at a time.", "auto|on|off"},
      {"batch_clients", OptType::Int, "32", 1, kInf,
       "Most clients trained together in one stacked model (memory: K x (d + batch activations), and "
       "K x B x d for per-example privacy).", nullptr},
  });
  return specs;
}

const std::vector<OptionSpec>& server_option_specs() {
  static const std::vector<OptionSpec> specs = with_lr_schedule({
      {"optimizer", OptType::String, "\"sgd\"", 0, 0,
       "Server optimiser on the aggregate: sgd (FedAvg/FedAvgM) or adam (FedAdam, Reddi et al. 2021).", "sgd|adam"},
      {"lr", OptType::Float, "1.0", 0, kInf, "Server learning rate η_s (1 = plain FedAvg; the step size in fedsgd mode).", nullptr},
      {"momentum", OptType::Float, "0", 0, 1, "Server momentum β (FedAvgM).", nullptr},
      {"beta1", OptType::Float, "0.9", 0, 1, "FedAdam β1.", nullptr},
      {"beta2", OptType::Float, "0.99", 0, 1, "FedAdam β2.", nullptr},
      {"tau", OptType::Float, "0.001", 0, kInf, "FedAdam adaptivity τ.", nullptr},
      {"weight_decay", OptType::Float, "0", 0, kInf,
       "Server L2 term λ: the step direction gets + λθ, θ ← θ − lr (g + λθ) in fedsgd mode (DiverseFL's update "
       "(13), the median and trimmed-mean baselines of Prakash et al.).", nullptr},
  });
  return specs;
}

const std::vector<OptionSpec>& schedule_option_specs() {
  static const std::vector<OptionSpec> specs = {
      {"byzantine", OptType::Int, "0", 0, kInf, "Malicious clients: of all K for fixed; for markov the pool of clients that may turn malicious (0 = every client); of the round's participants for per_round.", nullptr},
      {"byzantine_fraction", OptType::Float, "0", 0, 1, "Malicious fraction, instead of byzantine.", nullptr},
      {"schedule", OptType::String, "\"fixed\"", 0, 0,
       "fixed: the same clients all run; per_round: a fresh random set among each round's participants; "
       "markov: a benign client turns malicious with probability markov_p and stays so for markov_k rounds.",
       "fixed|per_round|markov"},
      {"start_round", OptType::Int, "1", 1, kInf, "First round in which the attack is active.", nullptr},
      {"end_round", OptType::Int, "0", 0, kInf,
       "Last round in which the attack is active (0: to the end of the run); later rounds show how long its effect "
       "lasts (a backdoor's durability).", nullptr},
      {"markov_p", OptType::Float, "0.1", 0, 1, "markov: probability that a benign client turns malicious in a round.", nullptr},
      {"markov_k", OptType::Int, "1", 1, kInf, "markov: length of each malicious spell (exactly k rounds, then at least one benign round).", nullptr},
      {"pool_class", OptType::Int, "-1", -1, kInf,
       "fixed, markov: draw the malicious clients only among those whose data holds this label (-1: any client).",
       nullptr},
  };
  return specs;
}

const std::vector<OptionSpec>& accounting_option_specs() {
  static const std::vector<OptionSpec> specs = {
      {"delta", OptType::Float, "1e-5", 0, 1, "δ of the reported (ε, δ).", nullptr},
      {"start_round", OptType::Int, "1", 1, kInf,
       "First round in which the mechanism runs and is accounted (DP switched on after an attack starts, or "
       "before it); earlier rounds train without privacy and cost no ε.", nullptr},
      {"max_epsilon", OptType::Float, "0", 0, kInf, "Stop the run before a round would exceed this ε (0 = no limit).", nullptr},
      {"target_epsilon", OptType::Float, "0", 0, kInf, "Solve for the noise multiplier that spends this ε over the run (0 = off).", nullptr},
      {"example_rate", OptType::String, "\"local\"", 0, 0,
       "Example-level sampling rate: local = B/N_i of the client; global = B·K_t/N (the Fed-CDP paper's view).",
       "local|global"},
      {"accountant", OptType::String, "\"rdp\"", 0, 0,
       "rdp: Rényi DP of the subsampled Gaussian (Mironov et al. 2019), as Opacus's RDPAccountant; prv: numerical "
       "composition of privacy loss random variables (Gopi et al. 2021), as Opacus's PRVAccountant, tighter; gdp: "
       "Gaussian DP through the central limit theorem (Bu et al. 2020), as Opacus's GaussianAccountant: an "
       "approximation that can understate epsilon.",
       "rdp|prv|gdp"},
      {"prv_eps_error", OptType::Float, "0.01", 0, 1,
       "prv: the accountant's epsilon error (its mesh); the reported epsilon is an upper bound within 2x this of "
       "the true one. delta_error is delta/1000, as in Opacus.", nullptr},
      {"orders", OptType::List, "[]", 1, kInf, "RDP orders; default 1.1..10.9 step 0.1 and 12..63 (Opacus's).",
       nullptr},
      {"extend_orders", OptType::Bool, "true", 0, 0,
       "With the default orders: when epsilon sits at the largest, 63, also try 128, 256, 512 (TF-Privacy's "
       "list) and report the smaller epsilon, with a notice giving Opacus's value; false keeps Opacus's orders "
       "alone.", nullptr},
      {"conversion", OptType::String, "\"improved\"", 0, 0,
       "RDP to (epsilon, delta): improved = Balle et al. 2020, Thm 21 (what Opacus reports); standard = "
       "Mironov 2017, Prop. 3 (TF-Privacy's compute_dp_sgd_privacy, older papers).",
       "improved|standard"},
  };
  return specs;
}

ExperimentConfig parse_experiment(std::shared_ptr<const toml::table> root_table, const std::string& file) {
  ExperimentConfig config;
  config.file = file;
  config.root = root_table;
  const toml::table& root = *root_table;

  for (const auto& [key, node] : root) {
    const std::string name(key.str());
    if (std::find(kSections.begin(), kSections.end(), name) == kSections.end()) {
      std::string message = "unknown section [" + name + "]";
      auto guess = nearest(name, kSections);
      if (guess) message += "; did you mean [" + *guess + "]?";
      message += fmt::format("{} valid sections: {}", guess ? "" : ";", fmt::join(kSections, ", "));
      config_error(where(node, file), message);
    }
  }

  config.experiment = validate_options(section(root, "experiment", file, false), experiment_option_specs(),
                                       "[experiment]", {}, file);
  config.clients = validate_options(section(root, "clients", file, false), client_option_specs(), "[clients]", {}, file);
  config.server = validate_options(section(root, "server", file, false), server_option_specs(), "[server]", {}, file);
  check_lr_schedule(section(root, "clients", file, false), config.clients, "[clients]", file);
  check_lr_schedule(section(root, "server", file, false), config.server, "[server]", file);
  config.model = validate_options(model_section(section(root, "model", file, false), file), model_option_specs(),
                                  "[model]", {}, file);

  const auto& data = section(root, "data", file, true);
  config.data = component(data, "[data]", file, {"partition"});
  const toml::table* partition = data.get_as<toml::table>("partition");
  config.partition = validate_options(partition ? *partition : toml::table{}, partition_option_specs(),
                                      "[data.partition]", {}, file);

  const auto& aggregator = section(root, "aggregator", file, false);
  if (aggregator.empty()) {
    config.aggregator.plugin = "fedavg";
    config.aggregator.location = file;
    config.aggregator.ignored = {"plugin"};
  } else {
    config.aggregator = component(aggregator, "[aggregator]", file, {"pre"});
  }
  if (const auto* pre = aggregator.get("pre")) {
    const auto* list = pre->as_array();
    if (!list) config_error(where(*pre, file), "pre must be an array, e.g. pre = [\"clip\", \"nnm\"]");
    for (const auto& item : *list) {
      if (item.is_string()) {
        ComponentSpec spec;
        spec.plugin = *item.value<std::string>();
        spec.location = where(item, file);
        // Options of a pre-aggregator named by string come from [aggregator.<name>], if present.
        spec.table = aggregator.get_as<toml::table>(spec.plugin);
        config.pre_aggregators.push_back(std::move(spec));
      } else if (const auto* table = item.as_table()) {
        config.pre_aggregators.push_back(component(*table, "a pre-aggregator", file, {}));
      } else {
        config_error(where(item, file), "pre entries are plugin names or {plugin = \"name\", ...} tables");
      }
    }
    // [aggregator.<pre name>] tables are not the rule's options.
    for (const auto& spec : config.pre_aggregators) config.aggregator.ignored.push_back(spec.plugin);
  }

  if (const auto* attack = root.get("attack")) {
    std::vector<const toml::table*> tables;
    if (const auto* table = attack->as_table()) {
      tables.push_back(table);
    } else if (const auto* array = attack->as_array()) {
      for (const auto& item : *array) {
        if (!item.as_table()) config_error(where(item, file), "[[attack]] entries must be tables");
        tables.push_back(item.as_table());
      }
    } else {
      config_error(where(*attack, file), "attack must be a table [attack] or a list [[attack]]");
    }
    for (const auto* table : tables) {
      AttackSpec spec;
      spec.component = component(*table, "[attack]", file, names_of(schedule_option_specs()));
      spec.schedule = host_options(*table, schedule_option_specs(), "[attack] schedule", file);
      if (spec.schedule.is_set("byzantine") && spec.schedule.is_set("byzantine_fraction")) {
        config_error(where(*table, file), "give either byzantine or byzantine_fraction, not both");
      }
      config.attacks.push_back(std::move(spec));
    }
  }

  const auto& privacy = section(root, "privacy", file, false);
  if (!privacy.empty()) {
    config.has_privacy = true;
    config.privacy.component = component(privacy, "[privacy]", file, names_of(accounting_option_specs()));
    config.privacy.accounting = host_options(privacy, accounting_option_specs(), "[privacy] accounting", file);
  }

  config.leakage = parse_leakage(root, file, config.experiment.get<std::int64_t>("rounds"));
  if (root.get("audit")) {
    config.audit = validate_options(section(root, "audit", file, false), audit_option_specs(), "[audit]", {}, file);
  }

  const auto& clients = config.clients;
  int sampling_modes = (clients.get<std::int64_t>("per_round") > 0) + (clients.get<double>("fraction") > 0) +
                       (clients.get<double>("poisson_rate") > 0);
  if (sampling_modes > 1) {
    config_error(where(section(root, "clients", file, false), file),
                 "give at most one of per_round, fraction and poisson_rate");
  }
  if (clients.get<std::int64_t>("per_round") > clients.get<std::int64_t>("count")) {
    config_error(where(section(root, "clients", file, false), file),
                 fmt::format("per_round = {} exceeds count = {}", clients.get<std::int64_t>("per_round"),
                             clients.get<std::int64_t>("count")));
  }
  if (clients.is_set("batch_size") && clients.get<double>("batch_fraction") > 0) {
    config_error(where(section(root, "clients", file, false), file), "give either batch_size or batch_fraction, not both");
  }
  if (clients.get<std::int64_t>("local_epochs") == 0 && clients.get<std::int64_t>("local_iterations") == 0) {
    config_error(where(section(root, "clients", file, false), file),
                 "clients train for nothing: set local_epochs >= 1 or local_iterations >= 1");
  }
  for (double round : config.experiment.get<std::vector<double>>("save_updates")) {
    if (round != std::floor(round) || round > static_cast<double>(config.experiment.get<std::int64_t>("rounds"))) {
      config_error(location_of(config, "experiment.save_updates"),
                   fmt::format("[experiment] save_updates lists round {}; give whole rounds from 1 to rounds = {}",
                               round, config.experiment.get<std::int64_t>("rounds")));
    }
  }
  config.settings = decode_settings(config.experiment, config.clients, config.server);
  if (config.has_privacy) config.settings.privacy_start_round = config.privacy.accounting.get<std::int64_t>("start_round");
  return config;
}

bool is_plain_folder_name(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find_first_of("/\\") == std::string::npos &&
         std::none_of(name.begin(), name.end(), [](unsigned char c) { return c < 0x20; });
}

std::string location_of(const ExperimentConfig& config, const char* key) {
  const auto node = config.root ? config.root->at_path(key) : toml::node_view<const toml::node>();
  return node ? where(*node.node(), config.file) : config.file;
}

std::filesystem::path default_output_dir(const ExperimentConfig& config) {
  if (!config.settings.output.empty()) return config.settings.output;
  const auto& name = config.settings.name;
  if (!is_plain_folder_name(name)) {
    config_error(location_of(config, "experiment.name"),
                 fmt::format("name = \"{}\" must be a plain folder name to name the output folder runs/<name> "
                             "(no '/', no '..'); or set [experiment] output, or pass --out",
                             name));
  }
  return std::filesystem::path("runs") / name;
}

ExperimentConfig load_experiment(const std::string& file, const std::vector<std::string>& overrides) {
  auto root = std::make_shared<toml::table>(parse_toml_file(file));
  for (const auto& assignment : overrides) apply_override(*root, assignment);
  return parse_experiment(root, file);
}

}  // namespace bulwark

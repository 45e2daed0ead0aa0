// The round loop (docs/architecture.md, "A round"): run() reads as the phases of a round in
// order, each a short function below it. Determinism rule: every random draw comes from a stream
// derived from (seed, round, client, purpose) and every client writes only its own row of U, so
// the result does not depend on how many worker threads run the clients or in which order.
#include "engine.hpp"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join
#include <nlohmann/json.hpp>

#include "bulwark/rng.hpp"
#include "bulwark/rows.hpp"
#include "audit.hpp"
#include "checkpoint.hpp"
#include "client_models.hpp"
#include "cluster.hpp"
#include "config.hpp"
#include "distributed_executor.hpp"
#include "evaluation.hpp"
#include "executor.hpp"
#include "leakage.hpp"
#include "local_trainer.hpp"
#include "models.hpp"
#include "npy.hpp"
#include "plugin_set.hpp"
#include "run_accounting.hpp"
#include "runtime.hpp"
#include "schedule.hpp"
#include "server_optimizer.hpp"

namespace bulwark {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

/// flags.csv's rows as a checkpoint keeps them: an [k, 4] int64 table, and back.
torch::Tensor flag_table(const std::vector<FlagsLog::Row>& rows) {
  auto table = torch::empty({static_cast<std::int64_t>(rows.size()), 4}, torch::kLong);
  auto cells = table.accessor<std::int64_t, 2>();
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const auto k = static_cast<std::int64_t>(i);
    cells[k][0] = rows[i].round;
    cells[k][1] = rows[i].client;
    cells[k][2] = rows[i].malicious;
    cells[k][3] = rows[i].flagged;
  }
  return table;
}

std::vector<FlagsLog::Row> flag_rows(const torch::Tensor& table, const fs::path& file) {
  if (!table.defined() || table.dim() != 2 || table.size(1) != 4 || table.scalar_type() != torch::kLong) {
    throw Error(ErrorKind::Data, file.string() + " holds no flags table (written by an older Bulwark?); delete it "
                                                 "to start over");
  }
  const auto values = table.to(torch::kCPU).contiguous();
  const auto cells = values.accessor<std::int64_t, 2>();
  std::vector<FlagsLog::Row> rows;
  for (std::int64_t k = 0; k < values.size(0); ++k) rows.push_back({cells[k][0], cells[k][1], cells[k][2] != 0, cells[k][3] != 0});
  return rows;
}

std::vector<ScheduleSpec> schedule_specs(const PluginSet& plugins) {
  std::vector<ScheduleSpec> specs;
  for (const auto& attack : plugins.attacks) specs.push_back(attack.schedule);
  return specs;
}

/// What one round carries from phase to phase.
struct Round {
  std::int64_t number = 0;
  RoundWork work;                                   // participants, who attacks, θ
  std::vector<std::int64_t> malicious_rows, honest_rows;
  std::vector<AccountingEvent> privacy_events;
  torch::Tensor updates, weights;                   // U [n, d] and the rows' sample counts
  std::vector<double> losses;                       // per row; NaN for a client without data
  std::int64_t nonfinite = 0;
  std::optional<std::vector<std::int64_t>> flagged_rows;  // when the rule names them
  Evaluation test;
  double test_examples = std::nan("");              // how many test examples `test` saw
  std::vector<double> backdoor_accuracy;            // per attack with a triggered test set
  // The server's own updates, made on first use and reused by omniscient probes: FLTrust's root
  // update and DiverseFL's guiding update per row.
  mutable torch::Tensor root_update;
  mutable std::vector<torch::Tensor> guiding_updates;
  double time_train = 0, time_attack = 0, time_aggregate = 0, time_eval = 0;
  std::int64_t size() const { return static_cast<std::int64_t>(work.participants.size()); }
};

}  // namespace

struct Engine::Impl {
  ExperimentConfig config;
  const RunSettings& settings = config.settings;
  PluginRegistry& registry;  // the audit's shadow runs open the same plugins
  PluginSet plugins;
  std::unique_ptr<LeakageStudy> leakage;
  // [experiment] device: where data, θ, U, client models and noise live (docs/architecture.md,
  // "Devices"). Index bookkeeping (partitions, sampling, batch order) stays on the host.
  torch::Device device;

  // Run state.
  int threads = 1;
  Dataset data;
  Partition partition;
  Partition shared_samples;  // DiverseFL: what each client shared with the server
  ClientModels client_models;  // RSA: x_i of every client that has taken part
  torch::Tensor root_samples;  // FLTrust: the server's clean root dataset
  std::unique_ptr<Model> model;
  std::unique_ptr<LocalTrainer> trainer;
  std::unique_ptr<ThreadExecutor> local_executor;    // this process's worker threads
  std::unique_ptr<DistributedExecutor> distributed;  // under mpirun with more than one rank
  ClientExecutor* executor = nullptr;                // the one the round uses
  std::optional<RunAccounting> accounting;
  std::optional<PrivacyAudit> audit;     // [audit]: canaries and membership targets
  nlohmann::ordered_json audit_results;  // what it measured, for summary.json
  ByzantineSchedule schedule;  // who is malicious when (schedule.hpp)
  torch::Tensor theta;         // θ [d], the global model
  torch::Tensor eval_inputs, eval_labels;  // what rounds before the last are tested on (eval_subset)
  ServerOptimizer server{settings.server, settings.mode};
  std::vector<std::string> notices;  // each said once, kept for summary.json
  fs::path output_dir;               // where this run writes (rank 0)

  Impl(ExperimentConfig c, PluginRegistry& r)
      : config(std::move(c)), registry(r), plugins(config, registry), device(resolve_device(settings.device, config.file)) {
    if (config.leakage) {
      if (!device.is_cpu()) {
        config_error(config.file, "[leakage] runs on the CPU only in this version (its attacks optimise on host "
                                  "tensors); set [experiment] device = \"cpu\" for leakage studies");
      }
      leakage = std::make_unique<LeakageStudy>(*config.leakage, plugins.leakage_attack, settings, plugins.privacy);
    }
    const auto protocol = plugins.aggregator->client_protocol();
    if (protocol.persistent_models || protocol.sign_penalty > 0) {
      const std::string what = plugins.aggregator.label + " trains every client from its own model (RSA)";
      if (settings.mode == Mode::FedSgd) {
        config_error(config.file, what + ", which needs [experiment] mode = \"fedavg\": fedsgd clients upload a "
                                         "gradient at θ");
      }
      if (plugins.privacy) {
        config_error(config.file, what + "; it is not combined with a [privacy] mechanism in this version (their "
                                         "sensitivity is stated for updates from θ); remove one of them");
      }
      if (config.leakage) {
        config_error(config.file, what + "; [leakage] observes steps from θ and is not combined with it; remove one "
                                         "of them");
      }
    }
    // Drawn again with the run's seed in run(); built here so that `bulwark validate` already
    // rejects fixed sets larger than the client population.
    schedule = ByzantineSchedule(schedule_specs(plugins), settings.clients.count, 0);
  }

  RunSummary run(const RunOptions& options) {
    const auto start = Clock::now();
    fs::path out;
    if (options.alone || !cluster::distributed()) {
      out = prepare(options, false);
    } else {
      // Every rank prepares the same run from the seed, once all run the same build and
      // experiment; a failure on any rank is reported once.
      check_same_build(plugins.build_fingerprint().dump());
      std::exception_ptr failure;
      try {
        out = prepare(options, true);
      } catch (...) {
        failure = std::current_exception();
      }
      cluster::agree(failure);
      if (cluster::rank() != 0) {
        distributed->serve(device);
        return {};
      }
    }
    output_dir = out;
    MetricsLog log(out);
    FlagsLog flags(out);
    RunSummary summary;
    summary.output_dir = out;
    const auto checkpoint_file = checkpoint_path(out);
    std::int64_t first_round = 1;
    double elapsed_before = 0.0;  // wall time of the rounds a resumed run does not repeat
    if (options.resume && fs::exists(checkpoint_file)) {
      const auto checkpoint = load_checkpoint(checkpoint_file);
      restore(checkpoint, checkpoint_file, log, flags, summary);
      first_round = checkpoint.round + 1;
      elapsed_before = checkpoint.elapsed_seconds;
    } else if (options.resume && options.on_notice) {
      options.on_notice(fmt::format("--resume: {} holds no checkpoint, so the run starts at round 1",
                                    out.string()));
    }

    std::string recovery = first_round > 1 ? resume_note(checkpoint_file, first_round - 1) : no_checkpoint_note();
    for (std::int64_t number = first_round; number <= settings.rounds; ++number) {
      if (distributed) cluster::set_fault_note(fmt::format("it was running round {}; {}", number, recovery));
      const auto round_start = Clock::now();
      Round round;
      round.number = number;
      sample(round);
      if (!within_budget(round, summary)) break;
      train(round);
      attack(round);
      observe(round);
      aggregate_and_step(round);
      evaluate_round(round, summary);
      const double round_seconds = seconds_since(round_start);
      const auto epsilon = record(round, log, flags, round_seconds);
      summary.rounds_run = number;
      if (options.on_round) {
        RoundProgress progress;
        progress.round = number;
        progress.rounds = settings.rounds;
        progress.test_accuracy = round.test.accuracy;
        progress.test_loss = round.test.loss;
        progress.epsilon = epsilon;
        progress.round_seconds = round_seconds;
        progress.elapsed_seconds = seconds_since(start);
        progress.eta_seconds = progress.elapsed_seconds / static_cast<double>(number - first_round + 1) *
                               static_cast<double>(settings.rounds - number);
        options.on_round(progress);
      }
      // A checkpoint every checkpoint_every rounds, and one when asked to stop (Ctrl-C).
      const bool stop = number < settings.rounds && options.stop_requested && options.stop_requested();
      const bool due = settings.checkpoint_every > 0 && number % settings.checkpoint_every == 0 && number < settings.rounds;
      if (due || stop) {
        save_checkpoint(checkpoint_file, capture(number, log, flags, summary, elapsed_before + seconds_since(start)));
        recovery = resume_note(checkpoint_file, number);
      }
      if (stop) {
        throw RunInterrupted(fmt::format("interrupted after round {} of {} (checkpoint: {})", number, settings.rounds,
                                         checkpoint_file.string()));
      }
    }

    if (distributed) distributed->stop();
    if (accounting) {
      const auto note = accounting->ledger().order_note();
      if (!note.empty()) {
        notices.push_back(note);
        if (options.on_notice) options.on_notice(note);
      }
    }
    if (options.on_finish) options.on_finish(*model, theta);
    if (audit) {
      run_shadows(options, out);
      const double privacy_delta = config.has_privacy ? config.privacy.accounting.get<double>("delta") : std::nan("");
      audit_results = audit->finish(*model, theta, data, accounting ? accounting->epsilon() : LevelEpsilon{},
                                    audit->delta(privacy_delta), out);
    }
    summary.wall_seconds = elapsed_before + seconds_since(start);
    summary.metrics = log.rows();
    summary.backdoors = backdoor_summaries(summary.metrics);
    summary.notices = notices;
    write_summary(out, summary);
    std::error_code no_error;
    fs::remove(checkpoint_file, no_error);  // summary.json now marks the run as complete
    return summary;
  }

  /// Offline LiRA's shadow runs ([audit] shadow_models): this experiment again, each with its own
  /// seed, on the audit's held-out data, in this process; each hands the audit its final model.
  void run_shadows(const RunOptions& options, const fs::path& out) {
    for (std::int64_t s = 1; s <= audit->shadow_models(); ++s) {
      auto shadow = config;
      shadow.audit.reset();
      shadow.settings.seed = audit->shadow_seed(s);
      shadow.experiment.set("seed", static_cast<std::int64_t>(shadow.settings.seed));
      RunOptions run;
      run.output_dir = out / "audit_shadows" / std::to_string(s);
      fs::remove_all(run.output_dir);  // a shadow left by an interrupted attempt starts over
      run.threads = threads;
      run.alone = true;
      run.stop_requested = options.stop_requested;
      run.adjust_data = [&](Dataset& shadow_data) { audit->use_shadow_data(data, shadow_data); };
      run.on_finish = [&](const Model& shadow_model, const torch::Tensor& shadow_theta) {
        audit->record_shadow(shadow_model, shadow_theta, data);
      };
      if (options.on_notice) {
        options.on_notice(fmt::format("[audit] shadow run {} of {} (offline LiRA), in {}", s, audit->shadow_models(),
                                      run.output_dir.string()));
      }
      Engine(std::move(shadow), registry).run(run);
    }
  }

  // ---- setup -------------------------------------------------------------------------------

  /// The output folder with config.toml in it; data, model, θ0, trainer and executor, attack
  /// sets, DiverseFL's shared samples, the accountant and the leakage study, all from the seed.
  /// `spread`: this run's clients are trained by every rank of the MPI job.
  fs::path prepare(const RunOptions& options, bool spread) {
    threads = options.threads >= 0 ? options.threads : settings.threads;
    if (threads <= 0) threads = default_threads();
    fs::path out = options.output_dir;
    if (out.empty()) out = default_output_dir(config);
    const bool writes = !spread || cluster::rank() == 0;  // rank 0 writes every output file
    if (writes) {
      if (fs::exists(out / "summary.json")) {
        throw Error(ErrorKind::Config, fmt::format("{} holds a finished run (its summary.json): a new run would "
                                                   "replace its results; choose another --out, or delete that folder "
                                                   "first",
                                                   out.string()));
      }
      create_output_dir(out);
      write_file_atomic(out / "config.toml", plugins.resolved_text() + "\n");
    }

    load_data(options);
    if (config.audit) {
      audit.emplace(*config.audit, settings.seed, config.file);
      audit->prepare(data, partition);
    }
    model = build_model(model_options(), data.input_shape, data.num_classes);
    if (plugins.privacy && plugins.privacy->per_example() && !model->vectorised()) {
      notices.push_back("model '" + config.model.get<std::string>("arch") +
                        "' has layers without a vectorised per-example rule: per-example gradients "
                        "use a loop of batch-size-1 backward passes (correct, slower)");
      if (options.on_notice && writes) options.on_notice(notices.back());
    }
    if (settings.mode == Mode::FedSgd) {
      std::vector<std::string> unused;
      for (const auto& [key, value] : config.clients.values()) {
        if ((key.rfind("lr", 0) == 0 || key == "momentum") && config.clients.is_set(key)) unused.push_back(key);
      }
      if (!unused.empty()) {
        notices.push_back(fmt::format("mode = \"fedsgd\" takes one gradient per client, so [clients] {} has no "
                                      "effect; the step is [server] lr (and its lr_schedule)",
                                      fmt::join(unused, ", ")));
        if (options.on_notice && writes) options.on_notice(notices.back());
      }
    }
    trainer = std::make_unique<LocalTrainer>(settings, plugins, data, *model);
    const bool batched = trainer->stacked_model() &&
                         settings.clients.batches(config.model.get<std::string>("arch"), model->layout().total);
    local_executor = std::make_unique<ThreadExecutor>(*trainer, partition, settings.clients, threads, batched);
    executor = local_executor.get();
    if (spread) {
      if (!device.is_cpu()) config_error(config.file, "device = \"cuda\" under mpirun is not supported in this version; use device = \"cpu\"");
      distributed = std::make_unique<DistributedExecutor>(*local_executor, plugins);
      executor = distributed.get();
    }
    theta = model->initial_parameters(derive_seed(settings.seed, 0, kServer, Stream::Init)).to(device);
    auto holds = [&](std::int64_t client, std::int64_t label) {
      const auto labels = data.train_labels.index_select(0, partition.client(client).to(data.train_labels.device()));
      return (labels == label).any().item<bool>();
    };
    schedule = ByzantineSchedule(schedule_specs(plugins), settings.clients.count, settings.seed, holds);
    for (auto& attack : plugins.attacks) {
      auto backdoor = call_plugin(attack.label, "backdoor_test_set", [&] {
        return attack->backdoor_test_set(data.test_inputs, data.test_labels);
      });
      if (backdoor) backdoor = LabeledData{backdoor->inputs.to(device), backdoor->labels.to(device)};
      attack.backdoor = std::move(backdoor);
    }
    const double shared_fraction = plugins.aggregator->shared_sample_fraction();
    if (shared_fraction > 0) shared_samples = draw_shared_samples(partition, shared_fraction, settings.seed);
    const auto root_size = plugins.aggregator->root_sample_size();
    if (root_size > data.train_labels.size(0)) {
      throw Error(ErrorKind::Config, fmt::format("{} asks for a root dataset of {} examples but {} has only {} training "
                                                 "examples; lower its root size",
                                                 plugins.aggregator.label, root_size, plugins.dataset.label,
                                                 data.train_labels.size(0)));
    }
    if (root_size > 0) root_samples = draw_root_samples(data.train_labels.size(0), root_size, settings.seed);
    if (plugins.privacy) accounting.emplace(config, plugins, partition, data, *model);
    if (leakage && writes) leakage->start(*model, data, partition, *trainer, settings.seed, out);
    return out;
  }

  void load_data(const RunOptions& options) {
    data = call_plugin(plugins.dataset.label, "load", [&] { return plugins.dataset->load(DatasetContext{settings.seed}); });
    if (options.adjust_data) options.adjust_data(data);
    if (!data.train_inputs.defined() || data.train_inputs.size(0) == 0 || data.num_classes < 2) {
      throw Error(ErrorKind::Data, plugins.dataset.label + " returned no training data or fewer than 2 classes");
    }
    data.train_inputs = data.train_inputs.to(torch::kFloat).contiguous();
    data.test_inputs = data.test_inputs.to(torch::kFloat).contiguous();
    data.train_labels = data.train_labels.to(torch::kLong).contiguous();
    data.test_labels = data.test_labels.to(torch::kLong).contiguous();
    if (settings.clients.count > data.train_inputs.size(0)) {
      config_error(location_of(config, "clients.count"),
                   fmt::format("[clients] count = {} exceeds the {} training examples of {}: most clients would hold "
                               "no data; lower count",
                               settings.clients.count, data.train_inputs.size(0), plugins.dataset.label));
    }
    partition = make_partition(data.train_labels, data.num_classes, settings.clients.count, config.partition,
                               derive_seed(settings.seed, 0, kServer, Stream::Partition));
    // Once, here: every batch is then gathered on the device from index windows.
    for (auto* tensor : {&data.train_inputs, &data.train_labels, &data.test_inputs, &data.test_labels}) {
      *tensor = tensor->to(device);
    }
    // eval_subset: one random subset for every intermediate evaluation, so that rounds compare.
    eval_inputs = data.test_inputs;
    eval_labels = data.test_labels;
    const auto test_size = data.test_inputs.size(0);
    if (settings.eval_subset > 0 && settings.eval_subset < test_size) {
      auto generator = make_generator(derive_seed(settings.seed, 0, kServer, Stream::Evaluation));
      auto chosen = std::get<0>(torch::randperm(test_size, generator).narrow(0, 0, settings.eval_subset).sort());
      chosen = chosen.to(device);
      eval_inputs = data.test_inputs.index_select(0, chosen);
      eval_labels = data.test_labels.index_select(0, chosen);
    }
  }

  /// [model] with a relative TorchScript path made relative to the experiment file, not to the
  /// working folder.
  Options model_options() const {
    auto options = config.model;
    const auto path = fs::path(options.get<std::string>("path"));
    if (!path.empty() && path.is_relative() && !config.file.empty()) {
      options.set("path", (fs::path(config.file).parent_path() / path).string(), true);
    }
    return options;
  }

  // ---- the phases of a round ---------------------------------------------------------------

  /// Sample: the round's participants and which of them attack (ByzantineSchedule).
  void sample(Round& round) {
    round.work.round = round.number;
    round.work.theta = theta;
    round.work.participants = settings.clients.sampling.draw(settings.seed, round.number, settings.clients.count);
    round.work.attack_of = schedule.malicious(round.number, round.work.participants);
    for (std::int64_t i = 0; i < round.size(); ++i) {
      (round.work.attack_of[i] >= 0 ? round.malicious_rows : round.honest_rows).push_back(i);
    }
  }

  /// Account: the round's privacy cost is known once its clients are; stop before it exceeds the
  /// budget.
  bool within_budget(Round& round, RunSummary& summary) {
    if (!accounting) return true;
    round.privacy_events = accounting->round_events(round.number, round.work.participants);
    const double next = accounting->epsilon_after(round.privacy_events);
    if (!accounting->over_budget(next)) return true;
    summary.stopped_reason = fmt::format("privacy budget: round {} would reach epsilon = {:.4g} > max_epsilon = {:.4g}",
                                         round.number, next, accounting->max_epsilon());
    return false;
  }

  /// Train: the executor runs every client's local training (with its data-poisoning and
  /// client-side privacy hooks) into its own row of U.
  void train(Round& round) {
    const auto phase = Clock::now();
    const auto n = round.size();
    round.updates = torch::empty({n, theta.size(0)}, theta.options());
    round.losses.assign(n, 0.0);
    for (auto& attack : plugins.attacks) {
      call_plugin(attack.label, "begin_round", [&] { attack->begin_round(round.number, theta); });
    }
    const bool own_models = plugins.aggregator->client_protocol().persistent_models;
    if (own_models) round.work.starts = client_models.starts(round.work.participants, theta);
    executor->train(round.work, round.updates, round.losses);
    if (own_models) client_models.finish(round.work.participants, round.work.starts, theta, round.updates);
    auto weights = torch::empty({n}, torch::kDouble);  // filled on the host, then moved
    for (std::int64_t i = 0; i < n; ++i) weights[i] = static_cast<double>(partition.size(round.work.participants[i]));
    round.weights = weights.to(device);
    round.time_train = seconds_since(phase);
  }

  /// The context every aggregation of this round sees (the real one and omniscient probes).
  AggregationContext aggregation_context(const Round& round) const {
    AggregationContext context;
    context.round = round.number;
    context.params = theta;
    context.layout = &model->layout();
    context.model = model.get();
    context.byzantine_bound = static_cast<std::int64_t>(round.malicious_rows.size());
    context.client_ids = round.work.participants;
    context.generator = stream_generator(settings.seed, round.number, kServer, Stream::Aggregator, device);
    if (plugins.aggregator->wants_ground_truth()) context.true_malicious_rows = round.malicious_rows;
    if (shared_samples.indices.defined()) {
      round.guiding_updates.resize(round.work.participants.size());
      context.guiding_update = [this, &round](std::int64_t row) {
        auto& update = round.guiding_updates.at(row);
        if (!update.defined()) {
          const auto client = round.work.participants[row];
          update = trainer->server_update(round.number, theta, shared_samples.client(client), client,
                                          settings.clients.schedule.steps(partition.size(client)));
        }
        return update;
      };
    }
    if (root_samples.defined()) {
      // As many local steps as the round's clients take (FLTrust's shared R; with epochs, the most
      // of any participant).
      context.root_update = [this, &round] {
        if (!round.root_update.defined()) {
          std::int64_t steps = 0;
          for (auto client : round.work.participants) {
            const auto n = partition.size(client);
            if (n > 0) steps = std::max(steps, settings.clients.schedule.steps(n));
          }
          round.root_update = trainer->server_update(round.number, theta, root_samples, kServer, steps);
        }
        return round.root_update;
      };
    }
    return context;
  }

  /// Attack: each model-poisoning attack rewrites its rows of the finished uploads; an omniscient
  /// one sees every row and may probe the aggregator (its state restored after each probe).
  void attack(Round& round) {
    const auto phase = Clock::now();
    const auto n = round.size();
    for (std::size_t a = 0; a < plugins.attacks.size(); ++a) {
      auto& attack = plugins.attacks[a];
      std::vector<std::int64_t> rows;
      for (std::int64_t i = 0; i < n; ++i) {
        if (round.work.attack_of[i] == static_cast<int>(a)) rows.push_back(i);
      }
      if (rows.empty() || !attack->poisons_updates()) continue;
      UpdateAttackContext context;
      context.round = round.number;
      context.params = theta;
      context.layout = &model->layout();
      context.num_clients = n;
      context.num_malicious = static_cast<std::int64_t>(round.malicious_rows.size());
      context.generator = stream_generator(settings.seed, round.number, kServer - 1 - static_cast<std::int64_t>(a),
                                           Stream::Attack, device);
      if (attack->omniscient()) {
        context.malicious_rows = rows;
        context.honest_rows = round.honest_rows;
        context.aggregate_probe = [&](const torch::Tensor& candidate) {
          auto probe_context = aggregation_context(round);
          return run_aggregator(candidate, round.weights, probe_context, /*probe=*/true).aggregate;
        };
        call_plugin(attack.label, "poison_updates", [&] { attack->poison_updates(round.updates, context); });
      } else {
        auto index = row_index(rows, round.updates);
        auto own = round.updates.index_select(0, index);
        context.malicious_rows.resize(rows.size());
        std::iota(context.malicious_rows.begin(), context.malicious_rows.end(), 0);
        call_plugin(attack.label, "poison_updates", [&] { attack->poison_updates(own, context); });
        round.updates.index_copy_(0, index, own);
      }
    }
    round.time_attack = seconds_since(phase);
    round.nonfinite = n > 0 ? (~torch::isfinite(round.updates).all(1)).sum().item<std::int64_t>() : 0;
  }

  /// Observe: leakage attacks on honest victims' first local step at this round's θ.
  void observe(const Round& round) {
    if (!leakage || !leakage->observes(round.number)) return;
    std::vector<std::int64_t> honest;
    for (auto i : round.honest_rows) honest.push_back(round.work.participants[i]);
    leakage->observe(round.number, theta, honest);
  }

  /// Runs the pre-aggregators and the rule. With `probe`, the rule's state is restored after.
  AggregationResult run_aggregator(const torch::Tensor& updates, const torch::Tensor& weights,
                                   AggregationContext& context, bool probe) {
    StateDict saved;
    if (probe) plugins.aggregator->save_state(saved);
    auto current = UpdateSet{updates, weights};
    for (auto& pre : plugins.pre_aggregators) {
      current = call_plugin(pre.label, "preprocess", [&] { return pre->preprocess(current.updates, current.weights, context); });
    }
    auto result = call_plugin(plugins.aggregator.label, "aggregate",
                              [&] { return plugins.aggregator->aggregate(current.updates, current.weights, context); });
    if (probe) plugins.aggregator->load_state(saved);
    // After a pre-aggregator that regroups rows (bucketing), flags name buckets, not clients.
    if (current.updates.size(0) != updates.size(0)) result.reports_flags = false;
    if (!result.aggregate.defined() || result.aggregate.numel() != updates.size(1)) {
      throw Error(ErrorKind::Runtime, plugins.aggregator.label + " returned an aggregate of the wrong size");
    }
    return result;
  }

  /// Aggregate, then the server-side privacy hook and the server optimiser step.
  void aggregate_and_step(Round& round) {
    const auto phase = Clock::now();
    if (round.size() > 0) {
      auto context = aggregation_context(round);
      auto result = run_aggregator(round.updates, round.weights, context, /*probe=*/false);
      if (result.reports_flags) round.flagged_rows = result.flagged_rows;
      if (std::binary_search(settings.save_updates.begin(), settings.save_updates.end(), round.number)) {
        save_updates(round, result);
      }
      auto aggregate = result.aggregate;
      if (plugins.privacy && plugins.privacy->on_server() && round.number >= settings.privacy_start_round) {
        ServerPrivacyContext context{round.number, settings.rounds, round.size(), &model->layout(),
                                     stream_generator(settings.seed, round.number, kServer, Stream::Privacy, device)};
        call_plugin(plugins.privacy.label, "privatize_aggregate",
                    [&] { plugins.privacy->privatize_aggregate(aggregate, context); });
      }
      server.step(theta, aggregate, round.number, settings.rounds);
    }
    round.time_aggregate = seconds_since(phase);
  }

  /// updates/round_<r>.npy (U as the rule saw it, before pre-aggregators) and round_<r>.json.
  void save_updates(const Round& round, const AggregationResult& result) const {
    const auto folder = output_dir / "updates";
    create_output_dir(folder);
    const auto stem = folder / fmt::format("round_{}", round.number);
    write_npy(stem.string() + ".npy", round.updates);
    nlohmann::ordered_json json;
    json["round"] = round.number;
    json["clients"] = round.work.participants;
    json["malicious_rows"] = round.malicious_rows;
    json["flagged_rows"] = result.reports_flags ? nlohmann::ordered_json(result.flagged_rows) : nlohmann::ordered_json();
    write_file_atomic(stem.string() + ".json", json.dump(2) + "\n");
  }

  /// Evaluate: test accuracy and loss (and each backdoor's success) every eval_every rounds and
  /// after the last.
  void evaluate_round(Round& round, RunSummary& summary) {
    const auto phase = Clock::now();
    if (round.number % settings.eval_every == 0 || round.number == settings.rounds) {
      const bool last = round.number == settings.rounds;
      const auto& inputs = last ? data.test_inputs : eval_inputs;
      const auto& labels = last ? data.test_labels : eval_labels;
      round.test = evaluate(*model, theta, inputs, labels, settings.eval_batch_size, threads);
      round.test_examples = static_cast<double>(inputs.size(0));
      for (auto& attack : plugins.attacks) {
        if (attack.backdoor) round.backdoor_accuracy.push_back(evaluate(*model, theta, attack.backdoor->inputs, attack.backdoor->labels, settings.eval_batch_size, threads).accuracy);
      }
      summary.final_accuracy = round.test.accuracy;
      summary.final_loss = round.test.loss;
      summary.best_accuracy = std::max(summary.best_accuracy, round.test.accuracy);
    }
    round.time_eval = seconds_since(phase);
  }

  /// Record: the round's lines of flags.csv and row of metrics.csv, with the detection precision
  /// and recall of the flags; returns ε after the round (NaN without privacy).
  double record(const Round& round, MetricsLog& log, FlagsLog& flags, double round_seconds) {
    double precision = std::nan(""), recall = std::nan("");
    if (round.flagged_rows) {
      const std::set<std::int64_t> flagged(round.flagged_rows->begin(), round.flagged_rows->end());
      std::vector<FlagsLog::Row> lines;
      double hits = 0;
      for (std::int64_t i = 0; i < round.size(); ++i) {
        const bool malicious = round.work.attack_of[static_cast<std::size_t>(i)] >= 0, caught = flagged.count(i) > 0;
        lines.push_back({round.number, round.work.participants[static_cast<std::size_t>(i)], malicious, caught});
        hits += malicious && caught;
      }
      flags.append(lines);
      if (!flagged.empty()) precision = hits / static_cast<double>(flagged.size());
      if (!round.malicious_rows.empty()) recall = hits / static_cast<double>(round.malicious_rows.size());
    }
    double train_loss = 0.0, trained = 0.0;
    for (auto l : round.losses) {
      if (!std::isnan(l)) {
        train_loss += l;
        trained += 1;
      }
    }
    MetricsRow row = {{"round", static_cast<double>(round.number)},
                      {"clients", static_cast<double>(round.size())},
                      {"malicious", static_cast<double>(round.malicious_rows.size())},
                      {"nonfinite_updates", static_cast<double>(round.nonfinite)},
                      {"test_accuracy", round.test.accuracy},
                      {"test_loss", round.test.loss},
                      {"train_loss", trained > 0 ? train_loss / trained : std::nan("")}};
    if (settings.eval_subset > 0) row.emplace_back("test_examples", round.test_examples);
    std::size_t backdoor_index = 0;
    for (auto& attack : plugins.attacks) {
      if (!attack.backdoor) continue;
      const double value = backdoor_index < round.backdoor_accuracy.size() ? round.backdoor_accuracy[backdoor_index] : std::nan("");
      row.emplace_back(plugins.attacks.size() == 1 ? "backdoor_accuracy" : "backdoor_accuracy_" + attack.plugin.name(), value);
      ++backdoor_index;
    }
    if (!plugins.attacks.empty()) {
      row.emplace_back("detection_precision", precision);
      row.emplace_back("detection_recall", recall);
    }
    LevelEpsilon epsilon;  // NaN without privacy
    if (accounting) {
      accounting->charge(round.privacy_events);
      epsilon = accounting->epsilon();
      row.emplace_back("epsilon_example", epsilon.example);
      row.emplace_back("epsilon_client", epsilon.client);
    }
    row.insert(row.end(), {{"time_train", round.time_train},
                           {"time_attack", round.time_attack},
                           {"time_aggregate", round.time_aggregate},
                           {"time_eval", round.time_eval},
                           {"time_round", round_seconds}});
    log.append(std::move(row));
    return epsilon.max();
  }

  // ---- checkpoints (checkpoint.hpp) --------------------------------------------------------

  static std::string resume_note(const fs::path& file, std::int64_t round) {
    return fmt::format("the last checkpoint is round {} ({}): run the same command with --resume, with any "
                       "number of ranks, to go on from it",
                       round, file.string());
  }

  std::string no_checkpoint_note() const {
    return settings.checkpoint_every > 0
               ? "no checkpoint was written yet: run the same command again"
               : "no checkpoint was written ([experiment] checkpoint_every = 0): run the same command again, "
                 "and set checkpoint_every so that a long run can resume";
  }
  // Random streams are derived from (seed, round, client, purpose), data, partition and θ0 from
  // the seed, and the Byzantine schedule replays its chains from (seed, round): what one round
  // hands to the next is only θ, the server optimiser, the clients' own models (RSA), the plugins'
  // own state and the metrics.

  Checkpoint capture(std::int64_t round, const MetricsLog& log, const FlagsLog& flags, const RunSummary& summary,
                     double elapsed) const {
    Checkpoint checkpoint;
    checkpoint.round = round;
    checkpoint.elapsed_seconds = elapsed;
    checkpoint.fingerprint = plugins.resolved_text();
    checkpoint.metrics = log.rows();
    checkpoint.tensors = {{"theta", theta},
                          {"run/accuracy", torch::tensor({summary.final_accuracy, summary.best_accuracy, summary.final_loss},
                                                         torch::kDouble)},
                          {"run/flags", flag_table(flags.rows())}};
    checkpoint.put("server", server.state());
    checkpoint.put("client_model", client_models.state());
    plugins.save_state(checkpoint);
    if (accounting) checkpoint.put("accountant", accounting->ledger().state());
    return checkpoint;
  }

  void restore(const Checkpoint& checkpoint, const fs::path& file, MetricsLog& log, FlagsLog& flags,
               RunSummary& summary) {
    if (checkpoint.fingerprint != plugins.resolved_text()) {
      throw Error(ErrorKind::Config, file.string() + " was written by a run of another configuration "
                                     "(the experiment file or a --set changed); run without --resume to start over");
    }
    auto tensor = [&](const std::string& name) {
      auto it = checkpoint.tensors.find(name);
      return it == checkpoint.tensors.end() ? torch::Tensor() : it->second.to(device);
    };
    const auto saved_theta = tensor("theta");
    if (!saved_theta.defined() || !saved_theta.sizes().equals(theta.sizes()) || saved_theta.scalar_type() != theta.scalar_type()) {
      throw Error(ErrorKind::Data, file.string() + " holds no θ of this model's shape; delete it to start over");
    }
    theta.copy_(saved_theta);
    auto server_state = checkpoint.take("server");
    for (auto& entry : server_state) {
      if (entry.second.defined()) entry.second = entry.second.to(device);
    }
    server.load(server_state);
    client_models.load(checkpoint.take("client_model"), device);
    plugins.load_state(checkpoint, device);
    if (accounting) accounting->ledger().load(checkpoint.take("accountant"));
    log.assign(checkpoint.metrics);
    flags.assign(flag_rows(tensor("run/flags"), file));
    const auto accuracy = tensor("run/accuracy").to(torch::kCPU);
    summary.final_accuracy = accuracy[0].item<double>();
    summary.best_accuracy = accuracy[1].item<double>();
    summary.final_loss = accuracy[2].item<double>();
    summary.rounds_run = checkpoint.round;
    summary.resumed_from = checkpoint.round;
  }

  /// Each backdoor column's last, mean and largest value over the rounds that evaluated it.
  static std::vector<BackdoorSummary> backdoor_summaries(const std::vector<MetricsRow>& rows) {
    std::vector<BackdoorSummary> out;
    if (rows.empty()) return out;
    for (const auto& [name, ignored] : rows.front()) {
      if (name.rfind("backdoor_accuracy", 0) != 0) continue;
      BackdoorSummary backdoor{name, std::nan(""), 0.0, 0.0, 0};
      for (const auto& row : rows) {
        for (const auto& [column, value] : row) {
          if (column != name || std::isnan(value)) continue;
          backdoor.last = value;
          backdoor.mean += value;
          backdoor.max = backdoor.evaluations == 0 ? value : std::max(backdoor.max, value);
          ++backdoor.evaluations;
        }
      }
      if (backdoor.evaluations > 0) backdoor.mean /= static_cast<double>(backdoor.evaluations);
      out.push_back(backdoor);
    }
    return out;
  }

  void write_summary(const fs::path& out, const RunSummary& summary) const {
    nlohmann::ordered_json json;
    json["name"] = settings.name;
    json["seed"] = settings.seed;
    json["rounds"] = summary.rounds_run;
    json["final_test_accuracy"] = summary.final_accuracy;
    json["best_test_accuracy"] = summary.best_accuracy;
    json["final_test_loss"] = summary.final_loss;
    json["wall_seconds"] = summary.wall_seconds;
    json["stopped_reason"] = summary.stopped_reason;
    json["notices"] = summary.notices;
    if (accounting && !std::isnan(accounting->solved_noise_multiplier())) {
      json["solved_noise_multiplier"] = accounting->solved_noise_multiplier();
    }
    json["threads"] = threads;
    if (distributed) json["ranks"] = cluster::size();
    json["dataset"] = data.description;
    json["model"] = model->describe();
    json["parameters"] = model->layout().total;
    json["aggregator"] = plugins.aggregator.plugin.name();
    json["plugins"] = plugins.describe();
    for (const auto& backdoor : summary.backdoors) {
      json["backdoor"][backdoor.metric] = {{"last", backdoor.last},
                                           {"mean", backdoor.mean},
                                           {"max", backdoor.max},
                                           {"evaluations", backdoor.evaluations}};
    }
    if (leakage) leakage->add_summary(json);
    if (audit) json["audit"] = audit_results;
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

std::string Engine::resolved_config() const { return impl_->plugins.resolved_text(); }

std::string Engine::build_fingerprint() const { return impl_->plugins.build_fingerprint().dump(); }

}  // namespace bulwark

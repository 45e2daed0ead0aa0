// The `bulwark` host binary: command-line parsing and printing only. Everything it does is a
// call into libbulwark_core, where tests reach it too.
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <functional>
#include <iostream>
#include <tuple>

#include <ATen/Parallel.h>
#include <CLI/CLI.hpp>
#include <c10/util/Exception.h>
#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (moved here in fmt 11)
#include <nlohmann/json.hpp>

#include "accountant.hpp"
#include "audit.hpp"
#include "bulwark/error.hpp"
#include "bulwark/plugin_abi.h"
#include "bulwark/rng.hpp"
#include "cluster.hpp"
#include "config.hpp"
#include "engine.hpp"
#include "experiment.hpp"
#include "layer_specs.hpp"
#include "leakage.hpp"
#include "loader.hpp"
#include "models.hpp"
#include "npy.hpp"
#include "partition.hpp"
#include "report.hpp"
#include "study.hpp"

namespace {

using namespace bulwark;

// Ctrl-C (and SIGTERM) stop a run at the end of the round in progress, with a checkpoint; a
// second one stops at once. Not under mpirun, where a signal means the launcher is ending the job.
std::atomic<bool> stop_asked{false};

extern "C" void ask_to_stop(int signal_number) {
  if (stop_asked.exchange(true)) {
    std::signal(signal_number, SIG_DFL);
    std::raise(signal_number);
    return;
  }
  const char note[] = "\nstopping after the round in progress (Ctrl-C again stops at once)\n";
  [[maybe_unused]] auto written = ::write(STDERR_FILENO, note, sizeof(note) - 1);
}

/// What a run asks after each round; also installs the handlers.
std::function<bool()> stop_on_signals() {
  if (cluster::distributed()) return {};
  std::signal(SIGINT, ask_to_stop);
  std::signal(SIGTERM, ask_to_stop);
  return [] { return stop_asked.load(); };
}

std::string format_seconds(double s) {
  if (!std::isfinite(s)) return "-";
  if (s < 90) return fmt::format("{:.1f}s", s);
  return fmt::format("{}m{:02d}s", static_cast<int>(s) / 60, static_cast<int>(s) % 60);
}

void print_options(const std::vector<OptionSpec>& specs) {
  for (const auto& spec : specs) {
    static const char* types[] = {"bool", "int", "float", "string", "list"};
    std::string range;
    if (spec.type == BULWARK_OPT_INT || spec.type == BULWARK_OPT_FLOAT || spec.type == BULWARK_OPT_LIST) {
      auto bound = [](double v) { return std::isinf(v) ? std::string(v > 0 ? "inf" : "-inf") : fmt::format("{}", v); };
      range = fmt::format(" in [{}, {}]", bound(spec.min), bound(spec.max));
    }
    if (spec.choices) range = fmt::format(" one of {}", spec.choices);
    fmt::print("  {:<22} {:<6} default {}{}\n      {}\n", spec.name, types[spec.type],
               spec.default_value ? spec.default_value : "(required)", range, spec.doc ? spec.doc : "");
  }
}

// Lower bounds said in one line (CLI11's NonNegativeNumber prints the largest double in full).
const CLI::Validator not_negative(
    [](std::string& text) {
      const double value = std::strtod(text.c_str(), nullptr);
      return value >= 0 ? std::string() : "must be >= 0, found " + text;
    },
    "NONNEGATIVE");
const CLI::Validator positive(
    [](std::string& text) {
      const double value = std::strtod(text.c_str(), nullptr);
      return value > 0 && std::isfinite(value) ? std::string() : "must be a finite number > 0, found " + text;
    },
    "POSITIVE");

/// `bulwark frobnicate`: CLI11 would say only that a subcommand is required.
void check_command_name(const CLI::App& app, int argc, char** argv) {
  if (argc < 2 || argv[1][0] == '-') return;
  std::vector<std::string> names;
  const auto every = [](const CLI::App*) { return true; };
  for (const auto* command : app.get_subcommands(every)) names.push_back(command->get_name());
  if (std::find(names.begin(), names.end(), argv[1]) != names.end()) return;
  std::string message = fmt::format("unknown command '{}'", argv[1]);
  if (auto guess = nearest(argv[1], names)) message += fmt::format("; did you mean '{}'?", *guess);
  throw CLI::ValidationError(message + fmt::format(" (commands: {})", fmt::join(names, ", ")));
}

enum class Verbosity { Quiet, Normal, Verbose };

struct RunFlags {
  std::string out;
  int threads = -1;
  int jobs = 1;
  bool resume = false, dry_run = false;
  Verbosity verbosity = Verbosity::Normal;
};

/// The command that resumes this run: the same file, output and --set values, with --resume.
std::string resume_command(const std::string& file, const std::vector<std::string>& overrides, const RunFlags& flags) {
  std::string command = "bulwark run " + file;
  if (!flags.out.empty()) command += " --out " + flags.out;
  for (const auto& assignment : overrides) command += " --set '" + assignment + "'";
  return command + " --resume";
}

std::string round_line(const RoundProgress& p) {
  std::string accuracy = std::isnan(p.test_accuracy) ? "   -   " : fmt::format("{:.4f}", p.test_accuracy);
  std::string loss = std::isnan(p.test_loss) ? "  -   " : fmt::format("{:.4f}", p.test_loss);
  std::string line = fmt::format("round {:>{}}/{}  acc {}  loss {}", p.round, std::to_string(p.rounds).size(),
                                 p.rounds, accuracy, loss);
  if (!std::isnan(p.epsilon)) line += fmt::format("  eps {:.3f}", p.epsilon);
  return line + fmt::format("  {}/round  ETA {}", format_seconds(p.round_seconds), format_seconds(p.eta_seconds));
}

std::size_t terminal_width() {
  winsize size{};
  if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col > 20) return size.ws_col;
  return 100;
}

void print_report(const ReportOutput& report, Verbosity verbosity) {
  if (verbosity == Verbosity::Quiet) return;
  fmt::print("\n{}\n", summary_markdown(report.summary));
  for (const auto& notice : report.notices) std::fprintf(stderr, "note: %s\n", notice.c_str());
  fmt::print("report: {} (and {}, for a browser)\n", report.report.string(), report.html.string());
}

/// A study: cells `jobs` at a time, a live study line on terminals (plain lines in logs), and
/// the summary table and report at the end.
int command_study(const std::string& file, const std::vector<std::string>& overrides, const RunFlags& flags) {
  Study study;
  std::exception_ptr failure;
  try {
    study = load_study(file, overrides);
  } catch (...) {
    failure = std::current_exception();
  }
  cluster::agree(failure);  // under mpirun a file error is reported once, by rank 0
  PluginRegistry registry;
  const auto out = study_output_dir(study, flags.out);
  const bool terminal = ::isatty(STDOUT_FILENO);
  if (flags.dry_run) {
    if (cluster::rank() != 0) return 0;
    const auto statuses = check_study(study, registry, out);
    std::vector<std::string> axes;
    for (const auto& axis : study.axes) axes.push_back(fmt::format("{} ({})", axis.name(), axis.size()));
    if (!study.seeds.empty()) axes.push_back(fmt::format("seeds ({})", study.seeds.size()));
    fmt::print("{}: {} cells over {}; output {}\n", file, study.cells.size(),
               axes.empty() ? std::string("no varied key") : fmt::format("{}", fmt::join(axes, " × ")), out.string());
    std::size_t to_run = 0;
    for (std::size_t i = 0; i < study.cells.size(); ++i) {
      std::string status = "pending";
      if (statuses[i].finished) {
        status = "finished";
      } else if (statuses[i].checkpoint_round > 0) {
        status = fmt::format("resumes after round {}", statuses[i].checkpoint_round);
      }
      to_run += !statuses[i].finished;
      fmt::print("  {:<24} {}\n", status, study.cells[i].name);
    }
    fmt::print("{} to run, {} finished\n", to_run, study.cells.size() - to_run);
    return 0;
  }

  StudyOptions options;
  options.stop_requested = stop_on_signals();
  options.output_dir = out;
  options.jobs = flags.jobs;
  options.threads = flags.threads;
  const auto verbosity = flags.verbosity;
  const auto width = terminal_width();
  bool live = false;  // a live line is on screen and must be cleared before a plain line
  auto plain = [&](const std::string& line) {
    fmt::print("{}{}\n", live ? "\r\x1b[K" : "", line);
    live = false;
    std::fflush(stdout);
  };
  if (verbosity != Verbosity::Quiet) {
    options.on_event = [&](const StudyEvent& event) {
      const auto& p = event.progress;
      const auto counter = fmt::format("[{}/{}]", p.done, p.total);
      const auto eta = fmt::format("ETA {}", format_seconds(p.eta_seconds));
      switch (event.kind) {
        case StudyEvent::Kind::Skipped:
          if (verbosity == Verbosity::Verbose) plain(fmt::format("skip {} {} (finished earlier)", counter, event.cell->name));
          break;
        case StudyEvent::Kind::Started:
          if (verbosity == Verbosity::Verbose || !terminal || event.resumed_from > 0) {
            plain(fmt::format("start {} {}{}", counter, event.cell->name,
                              event.resumed_from > 0 ? fmt::format(" (resumes after round {})", event.resumed_from) : ""));
          }
          break;
        case StudyEvent::Kind::Round:
          if (verbosity == Verbosity::Verbose) {
            plain(fmt::format("{}: {}", event.cell->name, round_line(*event.round)));
          } else if (terminal) {
            auto line = fmt::format("{} {} running, {} | {}: round {}/{}", counter, p.running, eta, event.cell->name,
                                    event.round->round, event.round->rounds);
            if (line.size() >= width) line = line.substr(0, width - 1);
            fmt::print("\r{}\x1b[K", line);
            live = true;
            std::fflush(stdout);
          }
          break;
        case StudyEvent::Kind::Finished:
          plain(fmt::format("done  {} {}  final acc {:.4f}  best {:.4f}  {}  {}", counter, event.cell->name,
                            event.summary->final_accuracy, event.summary->best_accuracy,
                            format_seconds(event.summary->wall_seconds), eta));
          break;
        case StudyEvent::Kind::Failed:
          plain(fmt::format("FAILED {} {}: {}", counter, event.cell->name, event.error));
          break;
      }
    };
  }
  const auto result = run_study(study, registry, options);
  if (cluster::rank() != 0) return 0;  // rank 0 reports the study
  if (verbosity != Verbosity::Quiet) {
    plain(fmt::format("study: {} cells, {} run now, {} finished earlier, {} failed; {}", result.cells, result.finished,
                      result.skipped, result.failed.size(), format_seconds(result.wall_seconds)));
  }
  print_report(write_report(result.output_dir), verbosity);
  for (const auto& failure : result.failed) std::fprintf(stderr, "error: cell %s\n", failure.c_str());
  if (result.interrupted) {
    std::fprintf(stderr, "interrupted: the cells that were running keep a checkpoint; run the same command again to "
                         "go on (finished cells are skipped)\n");
    return 130;
  }
  return result.failed.empty() ? 0 : 1;
}

int command_run(const std::string& file, const std::vector<std::string>& overrides, const RunFlags& flags) {
  // Under mpirun every rank reads the file and builds the engine; a rank that cannot is reported
  // once, by rank 0.
  PluginRegistry registry;
  std::unique_ptr<Engine> built;
  bool study = false;
  std::exception_ptr failure;
  try {
    auto root = std::make_shared<toml::table>(parse_toml_file(file));
    for (const auto& assignment : overrides) apply_override(*root, assignment);
    study = has_sweep(*root);
    if (!study) built = std::make_unique<Engine>(parse_experiment(root, file), registry);
  } catch (...) {
    failure = std::current_exception();
  }
  cluster::agree(failure);
  if (study) return command_study(file, overrides, flags);
  auto& engine = *built;
  if (flags.dry_run) {
    if (cluster::rank() == 0) fmt::print("{}: ok; a single experiment (no [sweep]), nothing run\n", file);
    return 0;
  }
  RunOptions options;
  options.output_dir = flags.out;
  options.threads = flags.threads;
  options.resume = flags.resume;
  const bool terminal = ::isatty(STDOUT_FILENO);
  const bool quiet = flags.verbosity == Verbosity::Quiet;
  if (!quiet) {
    options.on_notice = [](const std::string& notice) { std::fprintf(stderr, "notice: %s\n", notice.c_str()); };
    options.on_round = [terminal, verbose = flags.verbosity == Verbosity::Verbose](const RoundProgress& p) {
      const auto line = round_line(p);
      // Terminals get one updating line per evaluation; logs (and --verbose) every round as a plain line.
      if (terminal && !verbose && std::isnan(p.test_accuracy) && p.round != p.rounds) {
        fmt::print("\r{}\x1b[K", line);
      } else {
        fmt::print("{}{}\n", terminal ? "\r" : "", line);
      }
      std::fflush(stdout);
    };
  }
  options.stop_requested = stop_on_signals();
  RunSummary summary;
  try {
    summary = engine.run(options);
  } catch (const RunInterrupted& e) {
    std::fprintf(stderr, "\n%s — resume with `%s`\n", e.what(), resume_command(file, overrides, flags).c_str());
    return 130;
  }
  if (!quiet && cluster::rank() == 0) {
    fmt::print("\n{:<26} {}\n", "output", summary.output_dir.string());
    if (summary.resumed_from > 0) fmt::print("{:<26} {}\n", "resumed after round", summary.resumed_from);
    fmt::print("{:<26} {}\n", "rounds", summary.rounds_run);
    fmt::print("{:<26} {:.4f}\n", "final test accuracy", summary.final_accuracy);
    fmt::print("{:<26} {:.4f}\n", "best test accuracy", summary.best_accuracy);
    fmt::print("{:<26} {:.4f}\n", "final test loss", summary.final_loss);
    for (const auto& backdoor : summary.backdoors) {
      fmt::print("{:<26} last {:.4f}, mean {:.4f}, max {:.4f} over {} evaluations\n", backdoor.metric, backdoor.last,
                 backdoor.mean, backdoor.max, backdoor.evaluations);
    }
    fmt::print("{:<26} {}\n", "wall time", format_seconds(summary.wall_seconds));
    if (!summary.stopped_reason.empty()) fmt::print("{:<26} {}\n", "stopped early", summary.stopped_reason);
  }
  return 0;
}

int command_validate(const std::string& file, const std::vector<std::string>& overrides) {
  PluginRegistry registry;
  Engine engine(load_experiment(file, overrides), registry);
  fmt::print("{}: ok\n", file);
  return 0;
}

int command_plugins() {
  PluginRegistry registry;
  auto listings = registry.discover();
  fmt::print("{:<11} {:<20} {:<8} {:<4} {}\n", "kind", "name", "version", "abi", "path");
  for (const auto& l : listings) {
    fmt::print("{:<11} {:<20} {:<8} {:<4} {}\n", l.kind, l.name, l.version.empty() ? "-" : l.version,
               l.abi_version, l.path.string());
    if (!l.problem.empty()) fmt::print("{:<11} {}\n", "", l.problem);
  }
  if (listings.empty()) {
    fmt::print("no plugins found; searched:");
    for (const auto& dir : registry.search_dirs()) fmt::print(" {}", dir.string());
    fmt::print("\n");
  }
  return 0;
}

struct AggregateQuery {
  std::string plugin, updates, weights, out, emit_pre, permutation;
  std::vector<std::string> options, pre, state;
  std::int64_t byzantine = 0;
  std::int64_t seed = 1;
};

/// `--permutation perm.npy` as the TOML list of the option that takes it (bucketing's).
toml::array permutation_option(const std::string& path) {
  const auto values = read_npy(path).to(torch::kDouble).flatten().contiguous();
  toml::array list;
  for (std::int64_t i = 0; i < values.numel(); ++i) {
    const double row = values.data_ptr<double>()[i];
    if (row != std::floor(row) || row < 0) {
      throw Error(ErrorKind::Data, fmt::format("{}: entry {} is {}; a permutation lists row indices 0..n-1", path,
                                               i, row));
    }
    list.push_back(static_cast<std::int64_t>(row));
  }
  return list;
}

/// Runs one aggregator, with the pre-aggregators an experiment would chain in front, on saved
/// updates: how a researcher checks a rule against known answers and other libraries.
int command_aggregate(const AggregateQuery& query) {
  // Stages in order, the rule last; --set key=value goes to the rule, --set <pre>.key=value to
  // that pre-aggregator.
  std::vector<std::string> names = query.pre;
  names.push_back(query.plugin);
  std::vector<toml::table> tables(names.size());
  for (const auto& assignment : query.options) apply_override(tables.back(), assignment);
  for (std::size_t i = 0; i + 1 < names.size(); ++i) {
    if (const auto* own = tables.back().get_as<toml::table>(names[i])) tables[i] = *own;
    tables.back().erase(names[i]);
  }
  PluginRegistry registry;
  std::vector<std::shared_ptr<const PluginLibrary>> libraries;
  for (const auto& name : names) libraries.push_back(registry.open(BULWARK_KIND_AGGREGATOR, name));
  if (!query.permutation.empty()) {
    // The fixed permutation goes to the first stage with a `permutation` option.
    auto takes_permutation = [](const std::shared_ptr<const PluginLibrary>& library) {
      const auto specs = library->option_specs();
      return std::any_of(specs.begin(), specs.end(),
                         [](const OptionSpec& spec) { return std::string(spec.name) == "permutation"; });
    };
    const auto stage = std::find_if(libraries.begin(), libraries.end(), takes_permutation);
    if (stage == libraries.end()) {
      throw Error(ErrorKind::Config, "--permutation: neither the rule nor a --pre stage takes a permutation "
                                     "(bucketing does: --pre bucketing)");
    }
    tables[static_cast<std::size_t>(stage - libraries.begin())].insert_or_assign(
        "permutation", permutation_option(query.permutation));
  }
  std::vector<PluginHandle<Aggregator>> stages;
  for (std::size_t i = 0; i < names.size(); ++i) {
    const std::string role = i + 1 < names.size() ? "pre-aggregator" : "aggregator";
    auto options = validate_options(tables[i], libraries[i]->option_specs(),
                                    role + " '" + std::string(libraries[i]->info().name) + "'", {}, "--set");
    stages.emplace_back(libraries[i], options);
  }
  auto& aggregator = stages.back();

  auto updates = read_npy(query.updates);
  if (updates.dim() != 2) {
    throw Error(ErrorKind::Data, query.updates + ": expected a 2-D array [n, d] of updates, found " +
                                     std::to_string(updates.dim()) + " dimensions");
  }
  auto weights = query.weights.empty() ? torch::ones({updates.size(0)}, torch::kDouble)
                                       : read_npy(query.weights).to(torch::kDouble);
  if (updates.size(0) == 0 || updates.size(1) == 0) {
    throw Error(ErrorKind::Data, fmt::format("{}: holds {} x {} updates; give at least one row and one column",
                                             query.updates, updates.size(0), updates.size(1)));
  }
  if (weights.dim() != 1 || weights.size(0) != updates.size(0)) {
    throw Error(ErrorKind::Data, query.weights + ": expected " + std::to_string(updates.size(0)) +
                                     " weights (one per row of the updates)");
  }
  // Weights are sample counts: finite, not negative, and not all zero (a weighted mean of nothing).
  if (!torch::isfinite(weights).all().item<bool>() || (weights < 0).any().item<bool>() ||
      weights.sum().item<double>() <= 0) {
    throw Error(ErrorKind::Data, query.weights + ": weights must be finite, non-negative and not all zero "
                                                 "(they are the rows' sample counts)");
  }
  AggregationContext context;
  context.params = torch::zeros({updates.size(1)}, updates.options());
  context.byzantine_bound = query.byzantine;
  context.generator = make_generator(static_cast<std::uint64_t>(query.seed));
  for (std::int64_t i = 0; i < updates.size(0); ++i) context.client_ids.push_back(i);
  if (!query.state.empty()) {
    // --state KEY=FILE.npy: the rule's state as a checkpoint would restore it (centred clipping's
    // start m0 is "previous"), in a round after the first so that the rule uses it.
    StateDict state;
    for (const auto& entry : query.state) {
      const auto equals = entry.find('=');
      if (equals == std::string::npos || equals == 0) {
        throw Error(ErrorKind::Config, "--state " + entry + ": expected KEY=FILE.npy, e.g. --state previous=m0.npy");
      }
      state[entry.substr(0, equals)] = read_npy(entry.substr(equals + 1));
    }
    aggregator->load_state(state);
    context.round = 1;
  }

  UpdateSet current{updates, weights};
  for (std::size_t i = 0; i + 1 < stages.size(); ++i) {
    current = stages[i]->preprocess(current.updates, current.weights, context);
  }
  if (!query.emit_pre.empty()) {
    if (query.pre.empty()) throw Error(ErrorKind::Config, "--emit-pre needs at least one --pre stage");
    write_npy(query.emit_pre, current.updates.to(updates.scalar_type()).contiguous());
  }
  auto result = aggregator->aggregate(current.updates, current.weights, context);
  write_npy(query.out, result.aggregate.to(updates.scalar_type()).contiguous());
  std::string pipeline;
  for (std::size_t i = 0; i + 1 < stages.size(); ++i) pipeline += std::string(stages[i].library().info().name) + " -> ";
  fmt::print("aggregated {} x {} updates with '{}{}' -> {}\n", updates.size(0), updates.size(1), pipeline,
             aggregator.library().info().name, query.out);
  if (!query.emit_pre.empty()) {
    fmt::print("pre-aggregated rows: {} x {} -> {}\n", current.updates.size(0), current.updates.size(1),
               query.emit_pre);
  }
  if (result.reports_flags) {
    const bool regrouped = current.updates.size(0) != updates.size(0);
    fmt::print("flagged rows{}: [{}]\n", regrouped ? " (of the pre-aggregated rows)" : "",
               fmt::join(result.flagged_rows, ", "));
  }
  return 0;
}

// `describe model` ends with the named networks, each with the layer list it stands for.
void print_preset_networks() {
  fmt::print("\nnamed networks (arch = \"<name>\"; the same lists work in layers = [...]):\n");
  for (const auto& preset : bulwark::detail::preset_networks()) {
    fmt::print("  {}\n    {}\n    layers = [\"{}\"]\n", preset.name, preset.description,
               fmt::join(preset.layers, "\", \""));
  }
}

int command_describe(const std::string& name, const std::string& kind) {
  static const std::vector<std::pair<std::string, const std::vector<OptionSpec>& (*)()>> sections = {
      {"experiment", experiment_option_specs}, {"clients", client_option_specs},
      {"server", server_option_specs},         {"model", model_option_specs},
      {"partition", partition_option_specs},   {"schedule", schedule_option_specs},
      {"accounting", accounting_option_specs}, {"leakage", leakage_option_specs},
      {"audit", audit_option_specs}};
  for (const auto& [section, specs] : sections) {
    if (name == section) {
      fmt::print("[{}] options:\n", section);
      print_options(specs());
      if (section == "model") print_preset_networks();
      return 0;
    }
  }
  PluginRegistry registry;
  std::vector<std::uint32_t> kinds;
  for (std::uint32_t k = BULWARK_KIND_DATASET; k <= BULWARK_KIND_PRIVACY; ++k) {
    if (kind.empty() || kind == kind_name(k)) kinds.push_back(k);
  }
  std::vector<std::string> everything;
  for (auto k : kinds) {
    auto names = registry.available(k);
    if (std::find(names.begin(), names.end(), name) != names.end() || name.find('/') != std::string::npos) {
      auto library = registry.open(k, name);
      const auto& info = library->info();
      fmt::print("{} '{}' {} ({})\n{}\n\n{}\n\noptions:\n", kind_name(info.kind), info.name, info.version,
                 library->path().string(), info.summary, info.doc);
      print_options(library->option_specs());
      return 0;
    }
    everything.insert(everything.end(), names.begin(), names.end());
  }
  std::string message = "no plugin or section named '" + name + "'";
  if (auto guess = nearest(name, everything)) message += "; did you mean '" + *guess + "'?";
  throw Error(ErrorKind::Plugin, message + " (`bulwark plugins` lists them; sections: experiment, clients, server, "
                                           "model, partition, schedule, accounting, leakage)");
}

/// `bulwark privacy`: the calculator researchers know from TF-Privacy's compute_dp_sgd_privacy and
/// Opacus, over the accountants a run uses (accountant.hpp): T steps of the Poisson-subsampled
/// Gaussian mechanism at rate q with noise multiplier σ; or σ for a target ε.
struct PrivacyQuery {
  double sampling_rate = 0.0, noise_multiplier = -1.0, delta = 1e-5, target_epsilon = 0.0, eps_error = 0.01;
  std::int64_t steps = 0;
  std::vector<double> orders;
  std::string accountant = "rdp", conversion = "improved";
  bool extend_orders = true, extend_orders_given = false, json = false;
};

int command_privacy(const PrivacyQuery& query) {
  if (query.noise_multiplier < 0 && !(query.target_epsilon > 0)) {
    throw Error(ErrorKind::Config, "give --noise-multiplier (to get epsilon) or --target-epsilon (to get the "
                                   "noise multiplier)");
  }
  if (!(query.delta > 0 && query.delta < 1)) {
    throw Error(ErrorKind::Config, fmt::format("--delta = {} must be in (0, 1), e.g. 1e-5", query.delta));
  }
  const auto kind = parse_accountant(query.accountant);
  if (kind != AccountantKind::Rdp && !query.orders.empty()) {
    throw Error(ErrorKind::Config, fmt::format("--orders are RDP orders; the {} accountant has none (drop --orders, "
                                               "or use --accountant rdp)", query.accountant));
  }
  check_order_extension(query.extend_orders_given && query.extend_orders, query.orders, "--extend-orders");
  const auto conversion = parse_conversion(query.conversion);
  auto spent = [&](double sigma) {
    if (kind == AccountantKind::Prv) {
      PrvAccountant accountant;
      accountant.compose(query.sampling_rate, sigma, query.steps);
      return std::tuple(PrivacySpent{accountant.epsilon(query.delta, query.eps_error)}, 0.0, std::string());
    }
    if (kind == AccountantKind::Gdp) {
      GdpAccountant accountant;
      accountant.compose(query.sampling_rate, sigma, query.steps);
      return std::tuple(PrivacySpent{accountant.epsilon(query.delta)}, accountant.mu(), std::string());
    }
    RdpAccountant accountant(query.orders, query.extend_orders);
    accountant.compose(query.sampling_rate, sigma, query.steps);
    const auto result = accountant.spent(query.delta, conversion);
    return std::tuple(result, 0.0, accountant.order_note(result));
  };
  const bool solve = query.target_epsilon > 0;
  const double sigma = solve ? solve_noise_multiplier([&](double s) { return std::get<0>(spent(s)).epsilon; },
                                                      query.target_epsilon)
                             : query.noise_multiplier;
  const auto [result, mu, note] = spent(sigma);

  if (query.json) {
    // Every number as the shortest text that reads back to the same double: comparisons with
    // Opacus to the last bit.
    nlohmann::json out = {{"accountant", query.accountant},     {"sampling_rate", query.sampling_rate},
                          {"noise_multiplier", sigma},          {"steps", query.steps},
                          {"delta", query.delta},               {"epsilon", result.epsilon}};
    if (solve) out["target_epsilon"] = query.target_epsilon;
    if (kind == AccountantKind::Gdp) {
      out["mu"] = mu;
    } else if (kind == AccountantKind::Prv) {
      out["eps_error"] = query.eps_error;
      out["delta_error"] = query.delta / 1000;
    } else {
      out["order"] = result.order;
      out["conversion"] = query.conversion;
      if (!std::isnan(result.opacus_epsilon)) out["opacus_epsilon"] = result.opacus_epsilon;
      if (!note.empty()) out["note"] = note;
    }
    fmt::print("{}\n", out.dump());
    return 0;
  }
  fmt::print("{:<20} {}\n", "sampling rate q", query.sampling_rate);
  fmt::print("{:<20} {:.6g}{}\n", "noise multiplier", sigma,
             solve ? fmt::format("  (solved for target epsilon {})", query.target_epsilon) : "");
  fmt::print("{:<20} {}\n", "steps", query.steps);
  fmt::print("{:<20} {}\n", "delta", query.delta);
  if (kind == AccountantKind::Gdp) {
    fmt::print("{:<20} {:.6g}\n", "mu (GDP)", mu);
    fmt::print("{:<20} {:.6g}  (GDP through the central limit theorem, Bu et al. 2020, as Opacus's "
               "GaussianAccountant: an approximation)\n", "epsilon", result.epsilon);
  } else if (kind == AccountantKind::Prv) {
    fmt::print("{:<20} {:.6g}  (PRV upper bound, Gopi et al. 2021 as Opacus's PRVAccountant; eps_error {}, "
               "delta_error delta/1000)\n", "epsilon", result.epsilon, query.eps_error);
  } else {
    fmt::print("{:<20} {:.6g}  (RDP order {}; {} conversion{})\n", "epsilon", result.epsilon, result.order,
               query.conversion,
               conversion == EpsilonConversion::Improved ? ", Balle et al. 2020 as in Opacus" : ", Mironov 2017");
    if (!note.empty()) {
      std::fflush(stdout);  // the notice after the numbers it is about
      std::fprintf(stderr, "notice: %s\n", note.c_str());
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  cluster::Session mpi(argc, argv);  // a world of one unless launched by mpirun/srun
  init_runtime();

  CLI::App app{"bulwark: federated learning under Byzantine clients and privacy attacks"};
  app.require_subcommand(1);
  app.set_version_flag("--version", BULWARK_SDK_VERSION);

  std::string file, name, kind, report_dir;
  std::vector<std::string> overrides;
  RunFlags flags;
  bool quiet = false, verbose = false;

  auto* run = app.add_subcommand("run", "Run an experiment file");
  run->add_option("file", file, "Experiment TOML file")->required();
  run->add_option("--out", flags.out, "Output folder (default: [experiment] output, else runs/<name>)");
  run->add_option("--set", overrides, "Override a key, e.g. --set clients.batch_size=32")->take_all();
  run->add_option("--threads", flags.threads, "Worker threads (default: [experiment] threads, 0 = all cores); a study splits them among its jobs")
      ->check(CLI::Range(0, 1024));
  run->add_option("--jobs,-j", flags.jobs, "Study cells run at once (a file with [sweep])")->check(CLI::Range(1, 1024));
  run->add_flag("--resume", flags.resume,
                "Continue an interrupted run from its checkpoint (studies always resume: finished cells are skipped)");
  run->add_flag("--dry-run", flags.dry_run, "Validate and list the study's cells (and what is finished) without running");
  auto* quiet_flag = run->add_flag("--quiet,-q", quiet, "Print nothing but errors");
  run->add_flag("--verbose,-v", verbose, "Print every round (of every cell) as a plain line")->excludes(quiet_flag);

  auto* report = app.add_subcommand("report", "Write a study's summary table, figures, report.md and report.html (any time)");
  report->add_option("dir", report_dir, "A study's output folder (or a single run's)")->required();

  auto* validate = app.add_subcommand("validate", "Check an experiment file and its plugins without running");
  validate->add_option("file", file, "Experiment TOML file")->required();
  validate->add_option("--set", overrides, "Override a key")->take_all();

  auto* plugins = app.add_subcommand("plugins", "List the plugins found");
  auto* describe = app.add_subcommand("describe", "Print a plugin's (or a core section's) doc and options");
  describe->add_option("name", name, "Plugin name or path, or a section: experiment, clients, server, model, partition, schedule, accounting, leakage")->required();
  describe->add_option("--kind", kind, "dataset, aggregator, attack or privacy (when names collide)");

  PrivacyQuery privacy_query;
  AggregateQuery aggregate_query;
  auto* aggregate = app.add_subcommand("aggregate", "Run one aggregator on saved updates (.npy) and save the result");
  aggregate->add_option("--plugin", aggregate_query.plugin, "Aggregator name or path to a .so")->required();
  aggregate->add_option("--updates", aggregate_query.updates, "U.npy: float32/float64 [n, d], C order")->required();
  aggregate->add_option("--weights", aggregate_query.weights, "w.npy: [n] row weights (default: all 1)");
  aggregate->add_option("--set", aggregate_query.options, "A plugin option, e.g. --set f=2")->take_all();
  aggregate->add_option("--byzantine", aggregate_query.byzantine, "Declared Byzantine bound given to the rule's context (rules whose f = -1 use it)")
      ->check(not_negative);
  aggregate->add_option("--seed", aggregate_query.seed, "Seed of the rule's generator (randomised rules such as bucketing)")
      ->check(not_negative);
  aggregate->add_option("--out", aggregate_query.out, "g.npy: the aggregate, float64 when the updates are")->required();
  aggregate->add_option("--pre", aggregate_query.pre,
                        "Pre-aggregators run in front of the rule, in order, e.g. --pre clip,nnm; their options with "
                        "--set clip.threshold=1")->delimiter(',');
  aggregate->add_option("--emit-pre", aggregate_query.emit_pre, "P.npy: the rows after the --pre stages (what the rule sees)");
  aggregate->add_option("--permutation", aggregate_query.permutation,
                        "perm.npy: a fixed permutation for the stage that takes one (bucketing), to compare with other "
                        "libraries");
  aggregate->add_option("--state", aggregate_query.state,
                        "KEY=FILE.npy: the rule's state as a checkpoint restores it, e.g. centered_clipping's start "
                        "--state previous=m0.npy")->take_all();

  auto* privacy = app.add_subcommand("privacy", "Epsilon of T steps of the subsampled Gaussian mechanism (RDP, PRV or GDP accountant)");
  privacy->add_option("--sampling-rate,-q", privacy_query.sampling_rate, "Sampling rate q (e.g. B/N)")
      ->required()->check(CLI::Range(0.0, 1.0));
  auto* sigma_option = privacy->add_option("--noise-multiplier,-s", privacy_query.noise_multiplier,
                                           "Noise multiplier sigma (noise std / L2 sensitivity)")->check(not_negative);
  privacy->add_option("--steps,-T", privacy_query.steps, "Number of steps T")->required()->check(not_negative);
  privacy->add_option("--delta", privacy_query.delta, "delta (default 1e-5)");
  privacy->add_option("--target-epsilon", privacy_query.target_epsilon, "Print the noise multiplier that spends this epsilon")
      ->check(positive)->excludes(sigma_option);
  privacy->add_option("--orders", privacy_query.orders, "RDP orders (default 1.1..10.9 step 0.1 and 12..63, Opacus's)");
  privacy->add_flag("--extend-orders,!--no-extend-orders", privacy_query.extend_orders,
                    "With the default orders: when epsilon sits at 63, also try 128, 256, 512 as TF-Privacy does "
                    "(the default; --no-extend-orders gives Opacus's value)");
  privacy->add_option("--accountant", privacy_query.accountant,
                      "rdp (Renyi DP, as Opacus's RDPAccountant), prv (privacy loss random variables, as Opacus's "
                      "PRVAccountant) or gdp (Gaussian DP through the CLT, as Opacus's GaussianAccountant)")
      ->check(CLI::IsMember({"rdp", "prv", "gdp"}));
  privacy->add_option("--eps-error", privacy_query.eps_error,
                      "prv: epsilon error of the discretisation (default 0.01, as Opacus)")->check(positive);
  privacy->add_flag("--json", privacy_query.json, "Print one JSON object, every number to full precision");
  privacy->add_option("--conversion", privacy_query.conversion,
                      "RDP to (epsilon, delta): improved (Balle et al. 2020, Opacus) or standard (Mironov 2017, TF-Privacy)")
      ->check(CLI::IsMember({"improved", "standard"}));

  try {
    check_command_name(app, argc, argv);
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (cluster::rank() != 0) return e.get_exit_code() == 0 ? 0 : 2;  // every rank parsed the same line
    return app.exit(e) == 0 ? 0 : 2;
  }

  // Under mpirun only `run` is distributed; other commands run on rank 0 alone, and only rank 0
  // reports errors (every rank sees the same ones).
  if (cluster::rank() != 0 && !*run) return 0;
  // Rank 0 speaks for the job; another rank prints only a failure of its own, marked with its rank.
  const auto tell = [rank = cluster::rank()](const std::string& line) {
    if (rank == 0) {
      cluster::clear_fault_note();  // this error is the report; other ranks may be ended now
      std::fprintf(stderr, "%s\n", line.c_str());
    } else {
      std::fprintf(stderr, "rank %d: %s\n", rank, line.c_str());
    }
  };
  try {
    cluster::check_launch();
    if (*run) {
      flags.verbosity = quiet ? Verbosity::Quiet : verbose ? Verbosity::Verbose : Verbosity::Normal;
      return command_run(file, overrides, flags);
    }
    if (*report) {
      print_report(write_report(report_dir), Verbosity::Normal);
      return 0;
    }
    if (*validate) return command_validate(file, overrides);
    if (*plugins) return command_plugins();
    if (*describe) return command_describe(name, kind);
    if (*privacy) {
      privacy_query.extend_orders_given = privacy->count("--extend-orders") > 0;
      return command_privacy(privacy_query);
    }
    if (*aggregate) return command_aggregate(aggregate_query);
  } catch (const cluster::ReportedByRank0&) {
    // Rank 0 reports it and exits with its code; a non-zero exit here could make the launcher
    // end rank 0 before it has.
    return 0;
  } catch (const LocatedError& e) {
    tell(e.location() + ": error: " + e.message());
    return e.kind() == ErrorKind::Runtime ? 1 : 2;
  } catch (const Error& e) {
    tell(std::string("error: ") + e.what());
    return e.kind() == ErrorKind::Runtime ? 1 : 2;
  } catch (const c10::Error& e) {
    // LibTorch's own messages carry a C++ backtrace that helps nobody running an experiment.
    tell(std::string("error: ") + e.what_without_backtrace());
    return 1;
  } catch (const std::exception& e) {
    tell(std::string("error: ") + e.what());
    return 1;
  }
  return 0;
}

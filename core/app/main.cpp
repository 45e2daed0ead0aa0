// The `bulwark` host binary: command-line parsing and printing only. Everything it does is a
// call into libbulwark_core, where tests reach it too.
#include <sys/ioctl.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <iostream>

#include <ATen/Parallel.h>
#include <CLI/CLI.hpp>
#include <c10/util/Exception.h>
#include <fmt/format.h>

#include "bulwark/error.hpp"
#include "bulwark/plugin_abi.h"
#include "config.hpp"
#include "engine.hpp"
#include "experiment.hpp"
#include "loader.hpp"
#include "models.hpp"
#include "partition.hpp"
#include "report.hpp"
#include "study.hpp"

namespace {

using namespace bulwark;

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

enum class Verbosity { Quiet, Normal, Verbose };

struct RunFlags {
  std::string out;
  int threads = -1;
  int jobs = 1;
  bool resume = false, dry_run = false;
  Verbosity verbosity = Verbosity::Normal;
};

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
  fmt::print("report: {}\n", report.report.string());
}

/// A study: cells `jobs` at a time, a live study line on terminals (plain lines in logs), and
/// the summary table and report at the end.
int command_study(const std::string& file, const std::vector<std::string>& overrides, const RunFlags& flags) {
  const auto study = load_study(file, overrides);
  PluginRegistry registry;
  const auto out = study_output_dir(study, flags.out);
  const bool terminal = ::isatty(STDOUT_FILENO);
  if (flags.dry_run) {
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
  if (verbosity != Verbosity::Quiet) {
    plain(fmt::format("study: {} cells, {} run now, {} finished earlier, {} failed; {}", result.cells, result.finished,
                      result.skipped, result.failed.size(), format_seconds(result.wall_seconds)));
  }
  print_report(write_report(result.output_dir), verbosity);
  for (const auto& failure : result.failed) std::fprintf(stderr, "error: cell %s\n", failure.c_str());
  return result.failed.empty() ? 0 : 1;
}

int command_run(const std::string& file, const std::vector<std::string>& overrides, const RunFlags& flags) {
  {
    auto root = parse_toml_file(file);
    for (const auto& assignment : overrides) apply_override(root, assignment);
    if (has_sweep(root)) return command_study(file, overrides, flags);
  }
  PluginRegistry registry;
  Engine engine(load_experiment(file, overrides), registry);
  if (flags.dry_run) {
    fmt::print("{}: ok; a single experiment (no [sweep]), nothing run\n", file);
    return 0;
  }
  RunOptions options;
  options.output_dir = flags.out;
  options.threads = flags.threads;
  options.resume = flags.resume;
  const bool terminal = ::isatty(STDOUT_FILENO);
  const bool quiet = flags.verbosity == Verbosity::Quiet;
  if (!quiet) {
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
  auto summary = engine.run(options);
  if (!quiet) {
    fmt::print("\n{:<26} {}\n", "output", summary.output_dir.string());
    if (summary.resumed_from > 0) fmt::print("{:<26} {}\n", "resumed after round", summary.resumed_from);
    fmt::print("{:<26} {}\n", "rounds", summary.rounds_run);
    fmt::print("{:<26} {:.4f}\n", "final test accuracy", summary.final_accuracy);
    fmt::print("{:<26} {:.4f}\n", "best test accuracy", summary.best_accuracy);
    fmt::print("{:<26} {:.4f}\n", "final test loss", summary.final_loss);
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

int command_describe(const std::string& name, const std::string& kind) {
  static const std::vector<std::pair<std::string, const std::vector<OptionSpec>& (*)()>> sections = {
      {"experiment", experiment_option_specs}, {"clients", client_option_specs},
      {"server", server_option_specs},         {"model", model_option_specs},
      {"partition", partition_option_specs},   {"schedule", schedule_option_specs},
      {"accounting", accounting_option_specs}};
  for (const auto& [section, specs] : sections) {
    if (name == section) {
      fmt::print("[{}] options:\n", section);
      print_options(specs());
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
  std::string message = "error: no plugin or section named '" + name + "'";
  if (auto guess = nearest(name, everything)) message += "; did you mean '" + *guess + "'?";
  throw Error(ErrorKind::Plugin, message + " (`bulwark plugins` lists them; sections: experiment, clients, server, "
                                           "model, partition, schedule, accounting)");
}

}  // namespace

int main(int argc, char** argv) {
  // Parallelism comes from client workers; one intra-op thread each keeps 2 cores busy without
  // oversubscription and keeps reductions bit-identical across thread counts.
  at::set_num_threads(1);

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
  run->add_option("--threads", flags.threads, "Worker threads (default: [experiment] threads); a study splits them among its jobs");
  run->add_option("--jobs,-j", flags.jobs, "Study cells run at once (a file with [sweep])")->check(CLI::Range(1, 1024));
  run->add_flag("--resume", flags.resume,
                "Continue an interrupted run from its checkpoint (studies always resume: finished cells are skipped)");
  run->add_flag("--dry-run", flags.dry_run, "Validate and list the study's cells (and what is finished) without running");
  auto* quiet_flag = run->add_flag("--quiet,-q", quiet, "Print nothing but errors");
  run->add_flag("--verbose,-v", verbose, "Print every round (of every cell) as a plain line")->excludes(quiet_flag);

  auto* report = app.add_subcommand("report", "Write a study's summary table, figures and report.md (any time)");
  report->add_option("dir", report_dir, "A study's output folder (or a single run's)")->required();

  auto* validate = app.add_subcommand("validate", "Check an experiment file and its plugins without running");
  validate->add_option("file", file, "Experiment TOML file")->required();
  validate->add_option("--set", overrides, "Override a key")->take_all();

  auto* plugins = app.add_subcommand("plugins", "List the plugins found");
  auto* describe = app.add_subcommand("describe", "Print a plugin's (or a core section's) doc and options");
  describe->add_option("name", name, "Plugin name or path, or a section: experiment, clients, server, model, partition, schedule, accounting")->required();
  describe->add_option("--kind", kind, "dataset, aggregator, attack or privacy (when names collide)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  try {
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
  } catch (const Error& e) {
    std::string message = e.what();
    if (message.find("error: ") == std::string::npos) message = "error: " + message;
    std::fprintf(stderr, "%s\n", message.c_str());
    return e.kind() == ErrorKind::Runtime ? 1 : 2;
  } catch (const c10::Error& e) {
    // LibTorch's own messages carry a C++ backtrace that helps nobody running an experiment.
    std::fprintf(stderr, "error: %s\n", e.what_without_backtrace());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}

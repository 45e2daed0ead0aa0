// Running a study: every cell's plugins opened first, then the unfinished cells `jobs` at a time
// (or, under mpirun, handed to ranks as they ask). A finished cell (summary.json present) is never
// run again, so re-running the command resumes the study and an interruption loses at most the
// cells in progress (less with checkpoint_every).
#include "study.hpp"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <map>
#include <mutex>
#include <thread>

#include <c10/util/Exception.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "bulwark/error.hpp"
#include "checkpoint.hpp"
#include "cluster.hpp"
#include "config.hpp"
#include "distributed_executor.hpp"
#include "experiment.hpp"
#include "outputs.hpp"
#include "report.hpp"
#include "runtime.hpp"
#include "task_queue.hpp"

namespace bulwark {

namespace fs = std::filesystem;

fs::path study_output_dir(const Study& study, const fs::path& requested) {
  if (!requested.empty()) return requested;
  if (!study.output.empty()) return study.output;
  if (!is_plain_folder_name(study.name)) {
    throw Error(ErrorKind::Config, fmt::format("{}: [experiment] name = \"{}\" must be a plain folder name to name the "
                                               "output folder runs/<name> (no '/', no '..'); or set [experiment] "
                                               "output, or pass --out",
                                               study.file, study.name));
  }
  return fs::path("runs") / study.name;
}

fs::path cell_dir(const fs::path& study_dir, const StudyCell& cell) { return study_dir / "cells" / cell.name; }

CellStatus cell_status(const fs::path& dir) {
  CellStatus status;
  status.finished = fs::exists(dir / "summary.json");
  if (!status.finished && fs::exists(checkpoint_path(dir))) {
    status.checkpoint_round = load_checkpoint(checkpoint_path(dir)).round;
  }
  return status;
}

namespace {

std::string message_of(const std::exception& e) {
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) return c10_error->what_without_backtrace();
  return e.what();
}

struct PreparedCell {
  const StudyCell* cell = nullptr;
  fs::path dir;
  std::unique_ptr<Engine> engine;
  std::int64_t rounds = 0;
  CellStatus status;
};

/// Opens every cell's plugins on this thread (the registry is not thread-safe) and, with
/// `check_disk` (the process that writes the output), checks that results already on disk belong
/// to the configuration the file now describes.
std::vector<PreparedCell> prepare(const Study& study, PluginRegistry& registry, const fs::path& out,
                                  bool check_disk = true) {
  std::vector<PreparedCell> prepared;
  for (const auto& cell : study.cells) {
    PreparedCell p;
    p.cell = &cell;
    p.dir = cell_dir(out, cell);
    try {
      auto config = parse_experiment(cell.table, study.file);
      p.rounds = config.experiment.get<std::int64_t>("rounds");
      p.engine = std::make_unique<Engine>(std::move(config), registry);
    } catch (const Error& e) {
      rethrow_with_note(e, " (in sweep cell '" + cell.name + "')");
    }
    if (!check_disk) {
      prepared.push_back(std::move(p));
      continue;
    }
    p.status = cell_status(p.dir);
    const auto resolved = p.engine->resolved_config();
    bool stale = false;
    if (p.status.finished) {
      const auto saved = p.dir / "config.toml";
      stale = !fs::exists(saved) || read_whole_file(saved) != resolved + "\n";
    } else if (p.status.checkpoint_round > 0) {
      stale = load_checkpoint(checkpoint_path(p.dir)).fingerprint != resolved;
    }
    if (stale) {
      throw Error(ErrorKind::Config,
                  fmt::format("{} holds results of another configuration than cell '{}' of {} describes "
                              "(was the study file changed?); delete that folder to run the cell again, or "
                              "choose another --out",
                              p.dir.string(), cell.name, study.file));
    }
    prepared.push_back(std::move(p));
  }
  return prepared;
}

StudyManifest manifest_of(const Study& study) {
  StudyManifest manifest;
  manifest.name = study.name;
  manifest.file = study.file;
  manifest.rank_axis = study.rank_axis;
  for (const auto& axis : study.axes) manifest.axes.push_back({axis.keys, axis.labels});
  for (const auto& cell : study.cells) {
    manifest.cells.push_back({cell.name, cell.group, cell.choice, cell.seed, (fs::path("cells") / cell.name).string()});
  }
  return manifest;
}

/// What the ranks of an MPI job compare before a study starts: the first cell's build
/// fingerprint with the plugins and configurations of every cell.
std::string study_fingerprint(const std::vector<PreparedCell>& prepared) {
  nlohmann::ordered_json print;
  std::string configs;
  for (const auto& p : prepared) {
    auto cell = nlohmann::ordered_json::parse(p.engine->build_fingerprint());
    if (print.empty()) print = cell, print["plugins"] = nlohmann::ordered_json::array();
    for (auto& plugin : cell.at("plugins")) print["plugins"].push_back(std::move(plugin));
    configs += cell.at("config").get<std::string>();
  }
  if (!print.empty()) print["config"] = fmt::format("{:016x}", fnv1a(configs));
  return print.dump();
}

/// A folder's files as a JSON object of binary values (sent as CBOR), and back.
nlohmann::json files_json(const FolderFiles& files) {
  auto out = nlohmann::json::object();
  for (const auto& [name, bytes] : files) out[name] = nlohmann::json::binary({bytes.begin(), bytes.end()});
  return out;
}

FolderFiles files_of(const nlohmann::json& json) {
  FolderFiles files;
  for (const auto& [name, bytes] : json.items()) {
    files[name] = std::string(bytes.get_binary().begin(), bytes.get_binary().end());
  }
  return files;
}

std::string to_cbor(const nlohmann::json& json) {
  const auto bytes = nlohmann::json::to_cbor(json);
  return std::string(bytes.begin(), bytes.end());
}

/// The progress of a study and its events. Cells report here from the threads that run them and,
/// under mpirun, from rank 0's main thread as other ranks return theirs; one lock serialises all.
class StudyLedger {
 public:
  StudyLedger(StudyResult& result, const StudyOptions& options, std::size_t cells)
      : result_(result), options_(options), start_(std::chrono::steady_clock::now()) {
    progress_.total = cells;
  }

  double seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(); }

  void skipped(const PreparedCell& job) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++progress_.done;
    ++result_.skipped;
    emit(StudyEvent::Kind::Skipped, job);
  }

  void queued(const PreparedCell& job) { rounds_total_ += job.rounds - job.status.checkpoint_round; }

  void started(const PreparedCell& job) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++progress_.running;
    StudyEvent event = make(StudyEvent::Kind::Started, job);
    event.resumed_from = job.status.checkpoint_round;
    emit(event);
  }

  /// `last_round`: the cell's last round counted so far (its checkpoint's at the start).
  void round(const PreparedCell& job, const RoundProgress& round, std::int64_t& last_round) {
    std::lock_guard<std::mutex> lock(mutex_);
    rounds_done_ += round.round - last_round;
    last_round = round.round;
    StudyEvent event = make(StudyEvent::Kind::Round, job);
    event.round = &round;
    emit(event);
  }

  void finished(const PreparedCell& job, const RunSummary& summary, std::int64_t last_round) {
    std::lock_guard<std::mutex> lock(mutex_);
    rounds_done_ += job.rounds - last_round;  // a run stopped early (ε budget) has no more rounds
    --progress_.running;
    ++progress_.done;
    ++result_.finished;
    StudyEvent event = make(StudyEvent::Kind::Finished, job);
    event.summary = &summary;
    emit(event);
  }

  /// Stopped at a checkpoint on request: neither finished nor failed.
  void interrupted(const PreparedCell& job, std::int64_t last_round) {
    std::lock_guard<std::mutex> lock(mutex_);
    rounds_total_ -= job.rounds - last_round;
    --progress_.running;
    result_.interrupted = true;
  }

  void failed(const PreparedCell& job, const std::string& error, std::int64_t last_round) {
    std::lock_guard<std::mutex> lock(mutex_);
    rounds_total_ -= job.rounds - last_round;
    --progress_.running;
    ++progress_.failed;
    result_.failed.push_back(job.cell->name + ": " + error);
    StudyEvent event = make(StudyEvent::Kind::Failed, job);
    event.error = error;
    emit(event);
  }

 private:
  static StudyEvent make(StudyEvent::Kind kind, const PreparedCell& job) {
    StudyEvent event;
    event.kind = kind;
    event.cell = job.cell;
    return event;
  }

  void emit(StudyEvent event) {
    progress_.elapsed_seconds = seconds();
    progress_.eta_seconds = rounds_done_ > 0 ? progress_.elapsed_seconds / static_cast<double>(rounds_done_) *
                                                   static_cast<double>(rounds_total_ - rounds_done_)
                                             : std::nan("");
    event.progress = progress_;
    if (options_.on_event) options_.on_event(event);
  }
  void emit(StudyEvent::Kind kind, const PreparedCell& job) { emit(make(kind, job)); }

  StudyResult& result_;
  const StudyOptions& options_;
  const std::chrono::steady_clock::time_point start_;
  std::mutex mutex_;
  StudyProgress progress_;
  std::int64_t rounds_total_ = 0, rounds_done_ = 0;
};

/// How a cell runs on any rank: into `dir`, on from a checkpoint there, in this process alone (under
/// mpirun a cell runs on one rank).
RunOptions cell_options(const RunOptions& base, const fs::path& dir) {
  RunOptions run = base;
  run.output_dir = dir;
  run.resume = true;
  run.alone = true;
  return run;
}

/// Runs a cell in this process into its folder, reporting to the ledger; a failed cell is recorded,
/// not thrown.
void run_cell(PreparedCell& job, const RunOptions& base, StudyLedger& ledger) {
  std::int64_t last_round = job.status.checkpoint_round;
  ledger.started(job);
  auto run = cell_options(base, job.dir);
  run.on_round = [&](const RoundProgress& round) { ledger.round(job, round, last_round); };
  try {
    const auto summary = job.engine->run(run);
    job.engine.reset();  // frees the cell's data and model before the next cell loads its own
    ledger.finished(job, summary, last_round);
  } catch (const RunInterrupted&) {
    job.engine.reset();
    ledger.interrupted(job, last_round);
  } catch (const std::exception& e) {
    job.engine.reset();
    ledger.failed(job, message_of(e), last_round);
  }
}

// ---- a study's cells on the ranks of an MPI job (task_queue.hpp) ----------------------------

/// A cell on a rank other than 0: run in a private scratch folder seeded with the files rank 0
/// holds for the cell (a checkpoint to resume from), and every file of that folder sent back, so
/// that rank 0 writes all outputs. The answer is CBOR {files, and error when the cell failed}.
std::string run_cell_for_rank0(PreparedCell& job, const std::string& order, int threads) {
  nlohmann::json answer;
  const auto scratch =
      fs::temp_directory_path() / fmt::format("bulwark-{}-rank{}", ::getpid(), cluster::rank()) / job.cell->name;
  try {
    fs::remove_all(scratch);
    write_folder(scratch, files_of(nlohmann::json::from_cbor(order)), "");
    RunOptions base;
    base.threads = threads;
    job.engine->run(cell_options(base, scratch));  // its summary.json travels with the other files
  } catch (const std::exception& e) {
    answer["error"] = message_of(e);
  }
  job.engine.reset();
  try {
    answer["files"] = files_json(read_folder(scratch));
  } catch (const std::exception& e) {
    answer["files"] = nlohmann::json::object();
    answer["error"] = message_of(e);
  }
  std::error_code ignored;
  fs::remove_all(scratch.parent_path(), ignored);
  return to_cbor(answer);
}

/// Rank 0 under mpirun: runs the pending cells across the job, one at a time on each rank (rank 0
/// on a second thread), and writes the files of the cells other ranks ran.
void run_cells_across_ranks(std::vector<PreparedCell>& prepared, const std::vector<PreparedCell*>& pending,
                            const RunOptions& base, const fs::path& study_dir, StudyLedger& ledger) {
  // What rank 0 says if the job is ended under it: which cells other ranks were running.
  std::map<int, std::string> running;
  const auto note = [&] {
    std::string cells;
    for (const auto& [rank, name] : running) cells += fmt::format("{}rank {} was running cell '{}'", cells.empty() ? "" : ", ", rank, name);
    cluster::set_fault_note(fmt::format("{}{}finished cells are kept in {}: run the same command again, with any "
                                        "number of ranks, to run the others (cells with a checkpoint resume)",
                                        cells, cells.empty() ? "" : "; ", (study_dir / "cells").string()));
  };
  note();
  std::vector<std::size_t> tasks;
  for (const auto* p : pending) tasks.push_back(static_cast<std::size_t>(p - prepared.data()));
  TaskQueueHooks hooks;
  hooks.order_of = [&](std::size_t i) { return to_cbor(files_json(read_folder(prepared[i].dir))); };
  hooks.run_here = [&](std::size_t i) { run_cell(prepared[i], base, ledger); };
  hooks.sent = [&](std::size_t i, int rank) {
    prepared[i].engine.reset();  // another rank runs it
    running[rank] = prepared[i].cell->name;
    note();
    ledger.started(prepared[i]);
  };
  hooks.returned = [&](std::size_t i, int rank, const std::string& bytes) {
    const auto& job = prepared[i];
    running.erase(rank);
    note();
    const auto answer = nlohmann::json::from_cbor(bytes);
    write_folder(job.dir, files_of(answer.at("files")), "summary.json");
    if (answer.contains("error")) {
      ledger.failed(job, fmt::format("{} (on rank {})", answer.at("error").get<std::string>(), rank),
                    job.status.checkpoint_round);
      return;
    }
    // The event's figures, from the summary.json just written (report.hpp reads it the same way).
    const auto record = read_run(job.dir);
    RunSummary summary;
    summary.output_dir = job.dir;
    summary.final_accuracy = record.final_accuracy;
    summary.best_accuracy = record.best_accuracy;
    summary.wall_seconds = record.wall_seconds;
    ledger.finished(job, summary, job.status.checkpoint_round);
  };
  schedule_tasks(tasks, hooks);
}

}  // namespace

std::vector<CellStatus> check_study(const Study& study, PluginRegistry& registry, const fs::path& study_dir) {
  std::vector<CellStatus> statuses;
  for (const auto& p : prepare(study, registry, study_dir)) statuses.push_back(p.status);
  return statuses;
}

StudyResult run_study(const Study& study, PluginRegistry& registry, const StudyOptions& options) {
  StudyResult result;
  result.output_dir = study_output_dir(study, options.output_dir);
  result.cells = study.cells.size();
  StudyLedger ledger(result, options, study.cells.size());
  // Under mpirun every rank opens every cell; a failure anywhere is reported once, by rank 0.
  std::vector<PreparedCell> prepared;
  std::exception_ptr failure;
  try {
    prepared = prepare(study, registry, result.output_dir, cluster::rank() == 0);
  } catch (...) {
    failure = std::current_exception();
  }
  cluster::agree(failure);
  check_same_build(study_fingerprint(prepared));
  int threads = options.threads >= 0 ? options.threads : study.threads;
  if (threads <= 0) threads = default_threads();
  if (cluster::rank() != 0) {
    serve_tasks([&](std::size_t i, const std::string& order) { return run_cell_for_rank0(prepared[i], order, threads); });
    return result;
  }
  write_manifest(result.output_dir, manifest_of(study));

  std::vector<PreparedCell*> pending;
  for (auto& p : prepared) {
    if (p.status.finished) {
      p.engine.reset();
      ledger.skipped(p);
    } else {
      pending.push_back(&p);
      ledger.queued(p);
    }
  }

  RunOptions base;
  base.stop_requested = options.stop_requested;
  if (cluster::distributed()) {
    base.threads = threads;  // each rank runs one cell at a time with all its threads
    run_cells_across_ranks(prepared, pending, base, result.output_dir, ledger);
  } else {
    const int jobs = std::max(1, std::min<int>(options.jobs, static_cast<int>(pending.size())));
    base.threads = std::max(1, threads / jobs);
    std::atomic<std::size_t> next{0};
    auto worker = [&] {
      for (std::size_t i = next++; i < pending.size(); i = next++) {
        if (base.stop_requested && base.stop_requested()) break;  // no new cell after Ctrl-C
        run_cell(*pending[i], base, ledger);
      }
    };
    std::vector<std::thread> workers;
    for (int j = 1; j < jobs; ++j) workers.emplace_back(worker);
    worker();
    for (auto& w : workers) w.join();
  }
  result.wall_seconds = ledger.seconds();
  return result;
}

}  // namespace bulwark

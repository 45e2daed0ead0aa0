#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <toml++/toml.h>

#include "engine.hpp"
#include "loader.hpp"

namespace bulwark {

/// One dimension of a study: a grid key ("aggregator.plugin" = [...]) or a zipped group (keys
/// that take their i-th values together). `values[k]` holds key k's values, all of one length.
struct SweepAxis {
  std::vector<std::string> keys;
  std::vector<toml::array> values;
  std::vector<std::string> labels;  ///< per value: "median", "0.1", or "1,4" for a zipped group

  std::size_t size() const { return labels.size(); }
  /// "aggregator.plugin", or "privacy.noise_multiplier+privacy.clip" for a zipped group.
  std::string name() const;
};

/// One experiment of a study: the base file with the cell's values applied.
struct StudyCell {
  /// Unique and file-name safe, from the varied keys in file order and the seed:
  /// "aggregator.plugin=median__attack.byzantine_fraction=0.1__seed=2".
  std::string name;
  /// The name without its seed: cells of one group differ only by seed ("all" when only the
  /// seed varies).
  std::string group;
  std::vector<std::size_t> choice;  ///< value index per varied axis (Study::axes)
  std::int64_t seed = 0;
  std::shared_ptr<const toml::table> table;  ///< the cell's experiment, without [sweep]
};

/// A study file expanded into cells (docs/studies.md). The grid is the cartesian product of the
/// axes in file order (the first axis varies slowest) and then of the seeds.
struct Study {
  std::string file;
  std::string name;                   ///< [experiment] name of the base
  std::string output;                 ///< [experiment] output of the base ("" = runs/<name>)
  int threads = 0;                    ///< [experiment] threads of the base (0 = all cores)
  std::vector<SweepAxis> axes;        ///< axes with two or more values, in file order
  std::vector<std::int64_t> seeds;    ///< [sweep] seeds; empty: the base seed, not in names
  /// The axis ranked in the worst-case table (the defence); the others are the conditions it is
  /// ranked over. The first varied axis unless [sweep] rank_by names another key.
  std::size_t rank_axis = 0;
  std::vector<StudyCell> cells;
};

/// True when the file's top level has a [sweep] section.
bool has_sweep(const toml::table& root);

/// Reads a study file: applies `overrides` ("key=value", as --set) to the base, expands [sweep]
/// and parses every cell with parse_experiment (plugins are not opened here). Errors name the
/// file, the [sweep] entry or the cell.
Study load_study(const std::string& file, const std::vector<std::string>& overrides = {});

/// Keeps [A-Za-z0-9._,=+-], replaces anything else by '_'; names longer than 150 characters are
/// cut and end in a hash of the whole name, so they stay unique.
std::string sanitize_name(const std::string& name);

/// A TOML value as a cell-name fragment: strings as written, numbers in shortest form, arrays
/// joined by '-', a table by its plugin and options ("krum,f=2"), an empty table "none".
std::string value_label(const toml::node& value);

/// Where a study writes: --out, else the base's [experiment] output, else runs/<name>.
std::filesystem::path study_output_dir(const Study& study, const std::filesystem::path& requested);

/// A cell's folder: <study output>/cells/<cell name>.
std::filesystem::path cell_dir(const std::filesystem::path& study_dir, const StudyCell& cell);

/// Where a cell stands on disk.
struct CellStatus {
  bool finished = false;              ///< summary.json present: never run again
  std::int64_t checkpoint_round = 0;  ///< > 0: an interrupted run that will continue from here
};
CellStatus cell_status(const std::filesystem::path& dir);

/// Study progress, as shown on the study's live line.
struct StudyProgress {
  std::size_t total = 0;     ///< cells in the study
  std::size_t done = 0;      ///< finished, including cells skipped as already finished
  std::size_t running = 0;
  std::size_t failed = 0;
  double elapsed_seconds = 0.0;
  double eta_seconds = 0.0;  ///< NaN until a round has run
};

struct StudyEvent {
  enum class Kind { Skipped, Started, Round, Finished, Failed };
  Kind kind = Kind::Started;
  const StudyCell* cell = nullptr;
  StudyProgress progress;
  const RoundProgress* round = nullptr;  ///< Round
  const RunSummary* summary = nullptr;   ///< Finished
  std::int64_t resumed_from = 0;         ///< Started: the checkpoint's round, 0 = from scratch
  std::string error;                     ///< Failed
};

struct StudyOptions {
  std::filesystem::path output_dir;  ///< empty: study_output_dir's default
  int jobs = 1;                      ///< cells run concurrently
  /// Threads split among the jobs (each cell gets max(1, threads / jobs)); -1: the base's
  /// [experiment] threads; 0: all cores.
  int threads = -1;
  /// Called one event at a time (under a lock), from worker threads.
  std::function<void(const StudyEvent&)> on_event;
  /// Asked after every round of every cell (Ctrl-C in the binary): true stops the running cells
  /// at a checkpoint and starts no other; StudyResult::interrupted says so.
  std::function<bool()> stop_requested;
};

struct StudyResult {
  std::filesystem::path output_dir;
  std::size_t cells = 0, skipped = 0, finished = 0;
  std::vector<std::string> failed;  ///< "cell: message"
  bool interrupted = false;         ///< stopped by StudyOptions::stop_requested; rerun to go on
  double wall_seconds = 0.0;
};

/// Opens every cell's plugins first (so a bad cell fails before anything runs), writes
/// study.json, then runs the unfinished cells `jobs` at a time. A cell with summary.json is
/// skipped; an interrupted cell continues from its checkpoint. A cell whose saved configuration
/// differs from the file's is an error (the study file changed under existing results). A cell
/// that fails at run time does not stop the others; it is listed in StudyResult::failed.
StudyResult run_study(const Study& study, PluginRegistry& registry, const StudyOptions& options);

/// Checks every cell (plugins opened and options validated) and returns each cell's status,
/// without running anything: `bulwark run --dry-run`.
std::vector<CellStatus> check_study(const Study& study, PluginRegistry& registry,
                                    const std::filesystem::path& study_dir);

}  // namespace bulwark

// Studies: one TOML file with a [sweep] section expands into cells, each a complete experiment
// with its own folder. Cells are validated before any runs, run `jobs` at a time, and a finished
// cell (summary.json present) is never run again, so re-running the command resumes the study
// and an interruption loses at most the cells in progress (less with checkpoint_every).
#include "study.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include <unistd.h>

#include <c10/util/Exception.h>
#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (moved here in fmt 11)
#include <nlohmann/json.hpp>

#include "bulwark/error.hpp"
#include "checkpoint.hpp"
#include "config.hpp"
#include "experiment.hpp"
#include "cluster.hpp"
#include "distributed_executor.hpp"
#include "outputs.hpp"
#include "report.hpp"
#include "runtime.hpp"
#include "task_queue.hpp"

namespace bulwark {

namespace fs = std::filesystem;

namespace {


std::vector<std::string> split_key(const std::string& key) {
  std::vector<std::string> parts;
  std::stringstream in(key);
  std::string part;
  while (std::getline(in, part, '.')) parts.push_back(part);
  return parts;
}

bool is_index(const std::string& part) {
  return !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
}

/// Sets `key` (dotted) in `root` to a copy of `value`; an empty table removes the key, so a study
/// can compare "no [privacy]" with a mechanism. An array of tables with one entry ([[attack]]) is
/// addressed without its index; with several, the key names one ("attack.1.byzantine").
void set_key(toml::table& root, const std::string& key, const toml::node& value, const std::string& location) {
  const auto parts = split_key(key);
  const bool remove = value.is_table() && value.as_table()->empty();
  toml::node* current = &root;
  for (std::size_t i = 0; i < parts.size();) {
    if (auto* array = current->as_array()) {
      if (is_index(parts[i])) {
        const auto index = std::stoul(parts[i]);
        if (index >= array->size()) {
          config_error(location, fmt::format("'{}': index {} is out of range; the list has {} entries", key, index,
                                            array->size()));
        }
        current = array->get(index);
        ++i;
        continue;
      }
      if (array->size() == 1 && (*array)[0].is_table()) {
        current = array->get(0);
        continue;
      }
      config_error(location, fmt::format("'{}': '{}' is a list of {} entries; name one by index, e.g. '{}.0.{}'", key,
                                        parts[i - 1], array->size(), parts[i - 1], parts[i]));
    }
    auto* table = current->as_table();
    if (!table) config_error(location, fmt::format("'{}': '{}' is not a table", key, i ? parts[i - 1] : key));
    if (i + 1 == parts.size()) {
      if (remove) {
        table->erase(parts[i]);
      } else {
        value.visit([&](auto&& v) { table->insert_or_assign(parts[i], v); });
      }
      return;
    }
    if (!table->contains(parts[i])) {
      if (remove) return;
      table->insert(parts[i], toml::table{});
    }
    current = table->get(parts[i]);
    ++i;
  }
}

/// An axis with the file position that orders it. Entries without a position (set by --set)
/// sort last, in the order they were read.
struct PlacedAxis {
  SweepAxis axis;
  std::uint32_t line = 0, column = 0;
  std::string location;
};

bool before(const PlacedAxis& a, const PlacedAxis& b) {
  auto key = [](const PlacedAxis& p) {
    return std::pair<std::uint64_t, std::uint32_t>(p.line ? p.line : UINT64_MAX, p.column);
  };
  return key(a) < key(b);
}

/// Flattens `node` (the value of `key` in [sweep]) into (dotted key, value list) pairs: both
/// `"aggregator.plugin" = [...]` and `aggregator.plugin = [...]` (nested tables) name the same key.
void collect(const toml::node& node, const std::string& key, const std::string& file,
             std::vector<std::pair<std::string, const toml::array*>>& out) {
  if (const auto* table = node.as_table()) {
    for (const auto& [k, v] : *table) collect(v, key + "." + std::string(k.str()), file, out);
    return;
  }
  const auto* array = node.as_array();
  if (!array) {
    std::stringstream text;
    node.visit([&](auto&& v) { text << v; });
    config_error(where(node, file), fmt::format("[sweep] '{}' must be a list of values, e.g. \"{}\" = [{}]", key, key,
                                               text.str()));
  }
  if (array->empty()) config_error(where(node, file), fmt::format("[sweep] '{}' has no values", key));
  out.emplace_back(key, array);
}

PlacedAxis make_axis(std::vector<std::pair<std::string, const toml::array*>> entries, const toml::node& anchor,
                     const std::string& file) {
  std::stable_sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
    const auto& sa = a.second->source().begin;
    const auto& sb = b.second->source().begin;
    return std::pair(sa.line ? sa.line : UINT32_MAX, sa.column) < std::pair(sb.line ? sb.line : UINT32_MAX, sb.column);
  });
  PlacedAxis placed;
  placed.location = where(anchor, file);
  placed.line = anchor.source().begin.line;
  placed.column = anchor.source().begin.column;
  const auto length = entries.front().second->size();
  for (const auto& [key, array] : entries) {
    if (array->size() != length) {
      std::vector<std::string> sizes;
      for (const auto& [k, a] : entries) sizes.push_back(fmt::format("'{}' has {}", k, a->size()));
      config_error(placed.location, fmt::format("zipped keys vary together and need lists of one length: {}",
                                               fmt::join(sizes, ", ")));
    }
    placed.axis.keys.push_back(key);
    placed.axis.values.push_back(*array);
  }
  for (std::size_t i = 0; i < length; ++i) {
    std::vector<std::string> parts;
    for (const auto& values : placed.axis.values) parts.push_back(value_label(values[i]));
    placed.axis.labels.push_back(fmt::format("{}", fmt::join(parts, ",")));
  }
  std::set<std::string> seen;
  for (const auto& label : placed.axis.labels) {
    if (!seen.insert(label).second) {
      config_error(placed.location, fmt::format("[sweep] '{}' lists the value '{}' twice", placed.axis.name(), label));
    }
  }
  return placed;
}

std::string override_key(const std::string& assignment) {
  auto key = assignment.substr(0, assignment.find('='));
  key.erase(key.find_last_not_of(" \t") + 1);
  return key;
}

/// Sanitised names; distinct raw names that collide once sanitised ("a b" and "a_b") get a hash
/// of the raw name. Equal raw names (a group's cells) keep equal names.
std::vector<std::string> unique_names(const std::vector<std::string>& raw) {
  std::map<std::string, std::set<std::string>> sources;  // sanitised -> distinct raw names
  for (const auto& r : raw) sources[sanitize_name(r)].insert(r);
  std::vector<std::string> names;
  for (const auto& r : raw) {
    auto name = sanitize_name(r);
    if (sources[name].size() > 1) name = sanitize_name(fmt::format("{}~{:08x}", name, fnv1a(r) & 0xffffffffu));
    names.push_back(name);
  }
  return names;
}

std::string message_of(const std::exception& e) {
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) return c10_error->what_without_backtrace();
  return e.what();
}

}  // namespace

std::string SweepAxis::name() const { return fmt::format("{}", fmt::join(keys, "+")); }

bool has_sweep(const toml::table& root) { return root.contains("sweep"); }

std::string value_label(const toml::node& value) {
  switch (value.type()) {
    case toml::node_type::string: return *value.value<std::string>();
    case toml::node_type::integer: return std::to_string(*value.value<std::int64_t>());
    case toml::node_type::floating_point: return fmt::format("{}", *value.value<double>());
    case toml::node_type::boolean: return *value.value<bool>() ? "true" : "false";
    case toml::node_type::array: {
      std::vector<std::string> parts;
      for (const auto& item : *value.as_array()) parts.push_back(value_label(item));
      return fmt::format("{}", fmt::join(parts, "-"));
    }
    case toml::node_type::table: {
      const auto& table = *value.as_table();
      if (table.empty()) return "none";
      std::vector<std::string> parts;
      if (const auto* plugin = table.get("plugin")) parts.push_back(value_label(*plugin));
      for (const auto& [k, v] : table) {
        if (k.str() != "plugin") parts.push_back(std::string(k.str()) + "=" + value_label(v));
      }
      return fmt::format("{}", fmt::join(parts, ","));
    }
    default: {
      std::stringstream text;
      value.visit([&](auto&& v) { text << v; });
      return text.str();
    }
  }
}

std::string sanitize_name(const std::string& name) {
  std::string out;
  for (char c : name) {
    const bool keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      std::string_view("._,=+-~").find(c) != std::string_view::npos;
    out += keep ? c : '_';
  }
  if (out.empty() || out == "." || out == "..") out = "_" + out;
  constexpr std::size_t kMaxLength = 150;
  if (out.size() > kMaxLength) out = fmt::format("{}~{:016x}", out.substr(0, kMaxLength - 17), fnv1a(name));
  return out;
}

Study load_study(const std::string& file, const std::vector<std::string>& overrides) {
  toml::table base = parse_toml_file(file);
  for (const auto& assignment : overrides) apply_override(base, assignment);
  const auto* sweep_node = base.get("sweep");
  if (!sweep_node) config_error(file, "no [sweep] section: this is a single experiment, not a study");
  const auto* sweep = sweep_node->as_table();
  if (!sweep) config_error(where(*sweep_node, file), "[sweep] must be a table");

  Study study;
  study.file = file;
  std::vector<PlacedAxis> placed;
  std::string rank_by;
  for (const auto& [key_name, node] : *sweep) {
    const std::string key(key_name.str());
    if (key == "seeds") {
      const auto* array = node.as_array();
      if (!array || array->empty()) config_error(where(node, file), "[sweep] seeds must be a non-empty list of integers, e.g. seeds = [1, 2, 3]");
      for (const auto& item : *array) {
        if (!item.is_integer() || *item.value<std::int64_t>() < 0) {
          config_error(where(item, file), "[sweep] seeds must be non-negative integers");
        }
        const auto seed = *item.value<std::int64_t>();
        if (std::find(study.seeds.begin(), study.seeds.end(), seed) != study.seeds.end()) {
          config_error(where(item, file), fmt::format("[sweep] seeds lists {} twice", seed));
        }
        study.seeds.push_back(seed);
      }
    } else if (key == "rank_by") {
      if (!node.is_string()) config_error(where(node, file), "[sweep] rank_by must be a key, e.g. rank_by = \"aggregator.plugin\"");
      rank_by = *node.value<std::string>();
    } else if (key == "zip") {
      const auto* groups = node.as_array();
      if (!groups) config_error(where(node, file), "[sweep] zip must be a list of tables, e.g. zip = [{\"privacy.clip\" = [4, 2], \"privacy.noise_multiplier\" = [1, 2]}]");
      for (const auto& group : *groups) {
        const auto* table = group.as_table();
        if (!table || table->empty()) config_error(where(group, file), "[sweep] zip entries are tables of key = [values]");
        std::vector<std::pair<std::string, const toml::array*>> entries;
        for (const auto& [k, v] : *table) collect(v, std::string(k.str()), file, entries);
        placed.push_back(make_axis(std::move(entries), group, file));
      }
    } else {
      std::vector<std::pair<std::string, const toml::array*>> entries;
      collect(node, key, file, entries);
      for (auto& entry : entries) placed.push_back(make_axis({entry}, *entry.second, file));
    }
  }
  std::stable_sort(placed.begin(), placed.end(), before);

  std::set<std::string> keys;
  for (const auto& p : placed) {
    for (const auto& key : p.axis.keys) {
      if (!keys.insert(key).second) config_error(p.location, fmt::format("[sweep] varies '{}' twice", key));
      if (key == "experiment.seed" && !study.seeds.empty()) {
        config_error(p.location, "give the seeds as [sweep] seeds = [...] only (results are averaged over them), not also as experiment.seed");
      }
    }
  }
  for (const auto& assignment : overrides) {
    const auto key = override_key(assignment);
    if (keys.count(key)) {
      config_error("--set " + assignment, fmt::format("'{}' is varied by the study's [sweep]; change it there", key));
    }
  }

  std::vector<const PlacedAxis*> fixed;
  for (const auto& p : placed) {
    if (p.axis.size() > 1) {
      study.axes.push_back(p.axis);
    } else {
      fixed.push_back(&p);
    }
  }
  if (!rank_by.empty()) {
    bool found = false;
    for (std::size_t a = 0; a < study.axes.size() && !found; ++a) {
      const auto& axis_keys = study.axes[a].keys;
      if (rank_by == study.axes[a].name() || std::find(axis_keys.begin(), axis_keys.end(), rank_by) != axis_keys.end()) {
        study.rank_axis = a;
        found = true;
      }
    }
    if (!found) {
      std::vector<std::string> names;
      for (const auto& axis : study.axes) names.push_back(axis.name());
      config_error(where(*sweep->get("rank_by"), file),
                  fmt::format("rank_by = \"{}\" is not a varied key; varied keys: {}", rank_by,
                              names.empty() ? std::string("none") : fmt::format("{}", fmt::join(names, ", "))));
    }
  }

  // Cells in grid order: the first axis varies slowest, the seed fastest, so a group's seeds run
  // next to each other and a partial report has complete groups early.
  std::vector<std::vector<std::size_t>> choices(1);
  for (const auto& axis : study.axes) {
    std::vector<std::vector<std::size_t>> next;
    for (const auto& choice : choices) {
      for (std::size_t i = 0; i < axis.size(); ++i) {
        next.push_back(choice);
        next.back().push_back(i);
      }
    }
    choices = std::move(next);
  }
  const std::vector<std::int64_t> seeds = study.seeds.empty() ? std::vector<std::int64_t>{-1} : study.seeds;
  std::vector<std::string> raw_names, raw_groups;
  std::vector<std::pair<std::size_t, std::int64_t>> order;
  for (std::size_t c = 0; c < choices.size(); ++c) {
    std::vector<std::string> parts;
    for (std::size_t a = 0; a < study.axes.size(); ++a) {
      const auto& axis = study.axes[a];
      for (std::size_t k = 0; k < axis.keys.size(); ++k) {
        parts.push_back(axis.keys[k] + "=" + value_label(axis.values[k][choices[c][a]]));
      }
    }
    const std::string group = parts.empty() ? "all" : fmt::format("{}", fmt::join(parts, "__"));
    for (auto seed : seeds) {
      auto name_parts = parts;
      if (seed >= 0) name_parts.push_back(fmt::format("seed={}", seed));
      raw_names.push_back(name_parts.empty() ? "default" : fmt::format("{}", fmt::join(name_parts, "__")));
      raw_groups.push_back(group);
      order.emplace_back(c, seed);
    }
  }
  const auto names = unique_names(raw_names);
  const auto groups = unique_names(raw_groups);

  const toml::table* experiment = base.get_as<toml::table>("experiment");
  auto base_string = [&](const char* key, const char* fallback) {
    const auto* node = experiment ? experiment->get(key) : nullptr;
    return node && node->is_string() ? *node->value<std::string>() : std::string(fallback);
  };
  study.name = base_string("name", "experiment");
  study.output = base_string("output", "");

  for (std::size_t i = 0; i < order.size(); ++i) {
    const auto [c, seed] = order[i];
    StudyCell cell;
    cell.name = names[i];
    cell.group = groups[i];
    cell.choice = choices[c];
    // Each cell re-reads the file: copies of TOML nodes lose their source positions, and the
    // base's line:column is what makes a cell's error message useful.
    auto table = std::make_shared<toml::table>(parse_toml_file(file));
    for (const auto& assignment : overrides) apply_override(*table, assignment);
    table->erase("sweep");
    for (const auto* p : fixed) {
      for (std::size_t k = 0; k < p->axis.keys.size(); ++k) set_key(*table, p->axis.keys[k], p->axis.values[k][0], p->location);
    }
    for (std::size_t a = 0; a < study.axes.size(); ++a) {
      const auto& axis = study.axes[a];
      for (std::size_t k = 0; k < axis.keys.size(); ++k) {
        set_key(*table, axis.keys[k], axis.values[k][cell.choice[a]], file + ": [sweep]");
      }
    }
    if (seed >= 0) set_key(*table, "experiment.seed", toml::value<std::int64_t>(seed), file + ": [sweep] seeds");
    set_key(*table, "experiment.name", toml::value<std::string>(study.name + "/" + cell.name), file);
    cell.seed = seed;
    try {
      auto config = parse_experiment(table, file);
      cell.seed = config.experiment.get<std::int64_t>("seed");
      if (i == 0) study.threads = static_cast<int>(config.experiment.get<std::int64_t>("threads"));
    } catch (const Error& e) {
      rethrow_with_note(e, " (in sweep cell '" + cell.name + "')");
    }
    cell.table = table;
    study.cells.push_back(std::move(cell));
  }
  return study;
}

fs::path study_output_dir(const Study& study, const fs::path& requested) {
  if (!requested.empty()) return requested;
  if (!study.output.empty()) return study.output;
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
      std::ifstream in(p.dir / "config.toml", std::ios::binary);
      std::stringstream saved;
      saved << in.rdbuf();
      stale = saved.str() != resolved + "\n";
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

/// A cell on a rank other than 0: run in a private scratch folder seeded with the files rank 0
/// holds for the cell (a checkpoint to resume from), and every file of that folder sent back, so
/// that rank 0 writes all outputs. The answer is CBOR {summary | error, files}.
std::string run_cell_for_rank0(PreparedCell& job, const std::string& order, int threads) {
  nlohmann::json answer;
  const auto scratch =
      fs::temp_directory_path() / fmt::format("bulwark-{}-rank{}", ::getpid(), cluster::rank()) / job.cell->name;
  try {
    fs::remove_all(scratch);
    write_folder(scratch, files_of(nlohmann::json::from_cbor(order)), "");
    RunOptions run;
    run.output_dir = scratch;
    run.threads = threads;
    run.resume = true;
    run.alone = true;
    const auto summary = job.engine->run(run);
    answer["summary"] = {{"final_accuracy", summary.final_accuracy},
                         {"best_accuracy", summary.best_accuracy},
                         {"final_loss", summary.final_loss},
                         {"wall_seconds", summary.wall_seconds},
                         {"rounds_run", summary.rounds_run},
                         {"resumed_from", summary.resumed_from},
                         {"stopped_reason", summary.stopped_reason}};
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


}  // namespace

std::vector<CellStatus> check_study(const Study& study, PluginRegistry& registry, const fs::path& study_dir) {
  std::vector<CellStatus> statuses;
  for (const auto& p : prepare(study, registry, study_dir)) statuses.push_back(p.status);
  return statuses;
}

StudyResult run_study(const Study& study, PluginRegistry& registry, const StudyOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  StudyResult result;
  result.output_dir = study_output_dir(study, options.output_dir);
  result.cells = study.cells.size();
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

  std::mutex mutex;  // guards everything below that workers touch, and serialises events
  StudyProgress progress;
  progress.total = study.cells.size();
  std::int64_t rounds_total = 0, rounds_done = 0;
  auto emit = [&](StudyEvent event) {
    progress.elapsed_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    progress.eta_seconds = rounds_done > 0 ? progress.elapsed_seconds / static_cast<double>(rounds_done) *
                                                 static_cast<double>(rounds_total - rounds_done)
                                           : std::nan("");
    event.progress = progress;
    if (options.on_event) options.on_event(event);
  };

  std::vector<PreparedCell*> pending;
  for (auto& p : prepared) {
    if (p.status.finished) {
      ++progress.done;
      ++result.skipped;
      p.engine.reset();
      StudyEvent event;
      event.kind = StudyEvent::Kind::Skipped;
      event.cell = p.cell;
      emit(event);
    } else {
      pending.push_back(&p);
      rounds_total += p.rounds - p.status.checkpoint_round;
    }
  }

  // Under mpirun each rank runs one cell at a time with all its threads; otherwise `jobs` cells
  // share this process's threads.
  const int jobs = cluster::distributed() ? 1 : std::max(1, std::min<int>(options.jobs, static_cast<int>(pending.size())));
  const int threads_per_cell = std::max(1, threads / jobs);

  auto run_here = [&](PreparedCell& job) {
    std::int64_t last_round = job.status.checkpoint_round;
    {
      std::lock_guard<std::mutex> lock(mutex);
      ++progress.running;
      StudyEvent event;
      event.kind = StudyEvent::Kind::Started;
      event.cell = job.cell;
      event.resumed_from = job.status.checkpoint_round;
      emit(event);
    }
    RunOptions run;
    run.output_dir = job.dir;
    run.threads = threads_per_cell;
    run.resume = true;
    run.alone = true;
    run.on_round = [&](const RoundProgress& round) {
      std::lock_guard<std::mutex> lock(mutex);
      rounds_done += round.round - last_round;
      last_round = round.round;
      StudyEvent event;
      event.kind = StudyEvent::Kind::Round;
      event.cell = job.cell;
      event.round = &round;
      emit(event);
    };
    try {
      const auto summary = job.engine->run(run);
      job.engine.reset();  // frees the cell's data and model before the next cell loads its own
      std::lock_guard<std::mutex> lock(mutex);
      rounds_done += job.rounds - last_round;  // a run stopped early (ε budget) has no more rounds
      --progress.running;
      ++progress.done;
      ++result.finished;
      StudyEvent event;
      event.kind = StudyEvent::Kind::Finished;
      event.cell = job.cell;
      event.summary = &summary;
      emit(event);
    } catch (const std::exception& e) {
      job.engine.reset();
      std::lock_guard<std::mutex> lock(mutex);
      rounds_total -= job.rounds - last_round;
      --progress.running;
      ++progress.failed;
      result.failed.push_back(job.cell->name + ": " + message_of(e));
      StudyEvent event;
      event.kind = StudyEvent::Kind::Failed;
      event.cell = job.cell;
      event.error = message_of(e);
      emit(event);
    }
  };

  if (!cluster::distributed()) {
    std::atomic<std::size_t> next{0};
    auto worker = [&] {
      for (std::size_t i = next++; i < pending.size(); i = next++) run_here(*pending[i]);
    };
    std::vector<std::thread> workers;
    for (int j = 1; j < jobs; ++j) workers.emplace_back(worker);
    worker();
    for (auto& w : workers) w.join();
  } else {
    std::vector<std::size_t> tasks;
    for (const auto* p : pending) tasks.push_back(static_cast<std::size_t>(p - prepared.data()));
    cluster::set_fault_note(fmt::format("finished cells are kept in {}: run the same command again, with any "
                                        "number of ranks, to run the others (cells with a checkpoint resume)",
                                        (result.output_dir / "cells").string()));
    TaskQueueHooks hooks;
    hooks.order_of = [&](std::size_t i) { return to_cbor(files_json(read_folder(prepared[i].dir))); };
    hooks.run_here = [&](std::size_t i) { run_here(prepared[i]); };
    hooks.sent = [&](std::size_t i, int) {
      std::lock_guard<std::mutex> lock(mutex);
      ++progress.running;
      StudyEvent event;
      event.kind = StudyEvent::Kind::Started;
      event.cell = prepared[i].cell;
      event.resumed_from = prepared[i].status.checkpoint_round;
      emit(event);
    };
    hooks.returned = [&](std::size_t i, int rank, const std::string& bytes) {
      auto& job = prepared[i];
      job.engine.reset();
      const auto answer = nlohmann::json::from_cbor(bytes);
      write_folder(job.dir, files_of(answer.at("files")), "summary.json");
      std::lock_guard<std::mutex> lock(mutex);
      --progress.running;
      StudyEvent event;
      event.cell = job.cell;
      if (answer.contains("error")) {
        rounds_total -= job.rounds - job.status.checkpoint_round;
        ++progress.failed;
        event.kind = StudyEvent::Kind::Failed;
        event.error = fmt::format("{} (on rank {})", answer.at("error").get<std::string>(), rank);
        result.failed.push_back(job.cell->name + ": " + event.error);
        emit(event);
        return;
      }
      const auto& s = answer.at("summary");
      RunSummary summary;
      summary.output_dir = job.dir;
      summary.final_accuracy = s.at("final_accuracy").get<double>();
      summary.best_accuracy = s.at("best_accuracy").get<double>();
      summary.final_loss = s.at("final_loss").get<double>();
      summary.wall_seconds = s.at("wall_seconds").get<double>();
      summary.rounds_run = s.at("rounds_run").get<std::int64_t>();
      summary.resumed_from = s.at("resumed_from").get<std::int64_t>();
      summary.stopped_reason = s.at("stopped_reason").get<std::string>();
      rounds_done += job.rounds - job.status.checkpoint_round;
      ++progress.done;
      ++result.finished;
      event.kind = StudyEvent::Kind::Finished;
      event.summary = &summary;
      emit(event);
    };
    schedule_tasks(tasks, hooks);
  }
  result.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace bulwark

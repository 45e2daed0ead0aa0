// Studies: one TOML file with a [sweep] section expands into cells, each a complete experiment
// with its own folder (running them: study_run.cpp).
#include "study.hpp"

#include <algorithm>
#include <map>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (moved here in fmt 11)

#include "bulwark/error.hpp"
#include "config.hpp"
#include "experiment.hpp"

namespace bulwark {

namespace fs = std::filesystem;

namespace {

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
      for (std::size_t k = 0; k < p->axis.keys.size(); ++k) set_dotted_key(*table, p->axis.keys[k], p->axis.values[k][0], p->location);
    }
    for (std::size_t a = 0; a < study.axes.size(); ++a) {
      const auto& axis = study.axes[a];
      for (std::size_t k = 0; k < axis.keys.size(); ++k) {
        set_dotted_key(*table, axis.keys[k], axis.values[k][cell.choice[a]], file + ": [sweep]");
      }
    }
    if (seed >= 0) set_dotted_key(*table, "experiment.seed", toml::value<std::int64_t>(seed), file + ": [sweep] seeds");
    set_dotted_key(*table, "experiment.name", toml::value<std::string>(study.name + "/" + cell.name), file);
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

}  // namespace bulwark

#include "plugin_set.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <sstream>
#include <variant>

#include <boost/dll/runtime_symbol_info.hpp>
#include <torch/version.h>

#include "accountant.hpp"
#include "config.hpp"
#include "leakage.hpp"
#include "outputs.hpp"

namespace bulwark {

namespace {

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

/// Opens `spec`'s plugin with its options validated against the plugin's schema; adds the
/// resolved options (and the plugin's name) to `section`.
template <typename I>
Labelled<I> open(PluginRegistry& registry, const ComponentSpec& spec, const std::string& role,
                 const std::string& file, toml::table& section, Options* validated = nullptr) {
  auto library = registry.open(InterfaceKind<I>::value, spec.plugin);
  static const toml::table kNoOptions;
  const auto label = role + " '" + library->info().name + "'";
  auto options = validate_options(spec.table ? *spec.table : kNoOptions, library->option_specs(), label,
                                  spec.ignored, file);
  for (auto&& [k, v] : options_table(options)) section.insert_or_assign(k, v);
  section.insert_or_assign("plugin", spec.plugin);
  if (validated) *validated = options;
  return {PluginHandle<I>(library, options), label};
}

/// The [privacy] accounting keys, checked with the mechanism so that `bulwark validate` catches
/// them: δ, orders and conversion (by building a ledger), and what target_epsilon needs.
void check_accounting(const PrivacySpec& spec, const Options& mechanism_options, const std::string& label) {
  const auto& where = spec.component.location;
  try {
    PrivacyLedger check(spec.accounting);
  } catch (const Error& e) {
    throw LocatedError(e.kind(), where, e.what());
  }
  const double target = spec.accounting.get<double>("target_epsilon");
  const double budget = spec.accounting.get<double>("max_epsilon");
  if (!(target > 0)) return;
  auto fail = [&](const std::string& message) { config_error(where, message); };
  if (!mechanism_options.contains(kNoiseMultiplierOption)) {
    fail("target_epsilon needs a mechanism with a noise_multiplier option, and " + label +
         " has none; set its noise level directly and drop target_epsilon");
  }
  if (mechanism_options.is_set(kNoiseMultiplierOption)) {
    fail("give either noise_multiplier or target_epsilon, not both (target_epsilon solves for noise_multiplier)");
  }
  if (budget > 0 && target > budget) {
    fail(fmt::format("target_epsilon = {} exceeds max_epsilon = {}; the run would stop early", target, budget));
  }
}

}  // namespace

PluginSet::PluginSet(const ExperimentConfig& config, PluginRegistry& registry) : registry_(registry) {
  const auto& file = config.file;
  resolved_.insert("experiment", options_table(config.experiment));
  resolved_.insert("clients", options_table(config.clients));
  resolved_.insert("server", options_table(config.server));
  resolved_.insert("model", options_table(config.model));

  toml::table data_section;
  dataset = open<DatasetLoader>(registry, config.data, "dataset", file, data_section);
  data_section.insert("partition", options_table(config.partition));
  resolved_.insert("data", data_section);

  toml::table aggregator_section;
  aggregator = open<Aggregator>(registry, config.aggregator, "aggregator", file, aggregator_section);
  toml::array pre;
  for (const auto& spec : config.pre_aggregators) {
    toml::table pre_section;
    pre_aggregators.push_back(open<Aggregator>(registry, spec, "pre-aggregator", file, pre_section));
    pre.push_back(pre_section);
  }
  if (!pre.empty()) aggregator_section.insert("pre", pre);
  resolved_.insert("aggregator", aggregator_section);

  toml::array attack_sections;
  for (const auto& spec : config.attacks) {
    toml::table section;
    ActiveAttack attack;
    static_cast<Labelled<Attack>&>(attack) = open<Attack>(registry, spec.component, "attack", file, section);
    attack.schedule = ScheduleSpec::from_options(spec.schedule, attack.label);
    for (auto&& [k, v] : options_table(spec.schedule)) section.insert_or_assign(k, v);
    attack_sections.push_back(section);
    attacks.push_back(std::move(attack));
  }
  if (!attack_sections.empty()) resolved_.insert("attack", attack_sections);

  if (config.has_privacy) {
    toml::table section;
    privacy = open<PrivacyMechanism>(registry, config.privacy.component, "privacy", file, section, &privacy_options_);
    for (auto&& [k, v] : options_table(config.privacy.accounting)) section.insert_or_assign(k, v);
    check_accounting(config.privacy, privacy_options_, privacy.label);
    // With target_epsilon the noise multiplier is solved at run time (summary.json records it).
    if (config.privacy.accounting.get<double>("target_epsilon") > 0) section.erase(kNoiseMultiplierOption);
    resolved_.insert("privacy", section);
  }

  if (config.leakage) {
    toml::table section;
    leakage_attack = open<Attack>(registry, config.leakage->attack, "leakage attack", file, section);
    section.erase("plugin");  // [leakage] names its plugin with `attack`
    add_leakage_settings(*config.leakage, leakage_attack.plugin.name(), section);
    resolved_.insert("leakage", section);
  }
  if (config.audit) resolved_.insert("audit", options_table(*config.audit));
}

PluginHandle<PrivacyMechanism> PluginSet::privacy_with_noise(double sigma) const {
  auto options = privacy_options_;
  options.set(kNoiseMultiplierOption, sigma);
  return {registry_.open(BULWARK_KIND_PRIVACY, privacy.plugin.library().path().string()), options};
}

std::string PluginSet::resolved_text() const {
  std::stringstream text;
  text << resolved_;
  return text.str();
}

namespace {

/// Each plugin with state, under its checkpoint prefix.
template <typename Fn>
void for_each_stateful(const PluginSet& plugins, Fn&& fn) {
  fn("aggregator", plugins.aggregator);
  for (std::size_t i = 0; i < plugins.pre_aggregators.size(); ++i) fn(fmt::format("pre/{}", i), plugins.pre_aggregators[i]);
  for (std::size_t a = 0; a < plugins.attacks.size(); ++a) fn(fmt::format("attack/{}", a), plugins.attacks[a]);
  if (plugins.privacy) fn("privacy", plugins.privacy);
}

}  // namespace

void PluginSet::save_state(Checkpoint& checkpoint) const {
  for_each_stateful(*this, [&](const std::string& prefix, const auto& plugin) {
    StateDict state;
    call_plugin(plugin.label, "save_state", [&] { plugin->save_state(state); });
    checkpoint.put(prefix, state);
  });
}

void PluginSet::load_state(const Checkpoint& checkpoint, c10::Device device) {
  for_each_stateful(*this, [&](const std::string& prefix, const auto& plugin) {
    auto state = checkpoint.take(prefix);
    for (auto& entry : state) entry.second = entry.second.to(device);  // saved from the run's device
    call_plugin(plugin.label, "load_state", [&] { plugin->load_state(state); });
  });
}

nlohmann::ordered_json PluginSet::describe() const {
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  auto add = [&](const PluginLibrary& library) {
    list.push_back({{"kind", kind_name(library.info().kind)},
                    {"name", library.info().name},
                    {"version", library.info().version},
                    {"path", library.path().string()}});
  };
  add(dataset.plugin.library());
  for (const auto& pre : pre_aggregators) add(pre.plugin.library());
  add(aggregator.plugin.library());
  for (const auto& attack : attacks) add(attack.plugin.library());
  if (privacy) add(privacy.plugin.library());
  if (leakage_attack) add(leakage_attack.plugin.library());
  return list;
}

nlohmann::ordered_json PluginSet::build_fingerprint() const {
  auto file_hash = [](const std::string& path) { return fmt::format("{:016x}", fnv1a(read_whole_file(path))); };
  nlohmann::ordered_json print;
  print["sdk"] = BULWARK_SDK_VERSION;
  print["torch"] = TORCH_VERSION;
  print["program"] = file_hash(boost::dll::program_location().string());
  print["kernel"] = file_hash(boost::dll::this_line_location().string());
  auto plugins = describe();
  for (auto& plugin : plugins) {
    plugin["hash"] = file_hash(plugin.at("path").get<std::string>());
    plugin.erase("path");  // nodes may install the same files under other prefixes
  }
  print["plugins"] = plugins;
  print["config"] = fmt::format("{:016x}", fnv1a(resolved_text()));
  return print;
}

}  // namespace bulwark

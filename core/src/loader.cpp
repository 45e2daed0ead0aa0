// Plugin discovery, handshake checks and creation. Follows gz-plugin's rule: a library is
// rejected from its C handshake alone, before any C++ object crosses the boundary.
#include "loader.hpp"

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <set>
#include <sstream>

#include <boost/dll/runtime_symbol_info.hpp>
#include <boost/dll/shared_library_load_mode.hpp>
#include <torch/version.h>

#include "bulwark/plugin.hpp"
#include "config.hpp"

namespace bulwark {

namespace fs = std::filesystem;

const char* kind_name(std::uint32_t kind) {
  switch (kind) {
    case BULWARK_KIND_DATASET: return "dataset";
    case BULWARK_KIND_AGGREGATOR: return "aggregator";
    case BULWARK_KIND_ATTACK: return "attack";
    case BULWARK_KIND_PRIVACY: return "privacy";
    default: return "unknown";
  }
}

const char* kind_folder(std::uint32_t kind) {
  switch (kind) {
    case BULWARK_KIND_DATASET: return "datasets";
    case BULWARK_KIND_AGGREGATOR: return "aggregators";
    case BULWARK_KIND_ATTACK: return "attacks";
    case BULWARK_KIND_PRIVACY: return "privacy";
    default: return "unknown";
  }
}

namespace {

[[noreturn]] void plugin_error(const std::string& message) {
  throw Error(ErrorKind::Plugin, message);
}

std::string describe_plugin(const fs::path& path, const char* name) {
  return name ? "plugin '" + std::string(name) + "' (" + path.string() + ")" : path.string();
}

}  // namespace

PluginLibrary::PluginLibrary(const fs::path& path) : path_(path) {
  if (!fs::exists(path)) plugin_error("plugin file " + path.string() + " does not exist");
  // The throwing overload keeps dlerror's text (a missing dependency or symbol names itself).
  try {
    library_ = boost::dll::shared_library(
        boost::dll::fs::path(path.string()),
        boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local);
  } catch (const std::exception& e) {
    const char* detail = dlerror();
    plugin_error("cannot load " + path.string() + ": " + (detail ? detail : e.what()) +
                 ". Is it a shared library built for this machine?");
  }
  if (!library_.has(BULWARK_PLUGIN_ENTRY)) {
    plugin_error(path.string() + " is not a Bulwark plugin: it does not export '" +
                 BULWARK_PLUGIN_ENTRY + "'. Build plugins with bulwark_add_plugin() and end the "
                 "source with BULWARK_PLUGIN(...).");
  }
  auto entry = library_.get<const struct bulwark_plugin_info*()>(BULWARK_PLUGIN_ENTRY);
  info_ = entry();
  if (!info_) plugin_error(path.string() + ": bulwark_plugin_info() returned null");
}

namespace {

// A schema the host can validate against: each entry named once, of a known type, with a range
// that is one, and a default (when given) that is a value of its type inside that range.
void check_option_schema(const struct bulwark_plugin_info& info, const std::string& where) {
  if (info.num_options == 0) return;
  if (!info.options) plugin_error(where + " declares " + std::to_string(info.num_options) + " options but no table");
  std::set<std::string> names;
  std::vector<OptionSpec> with_default;
  for (std::uint32_t i = 0; i < info.num_options; ++i) {
    const auto& spec = info.options[i];
    const auto entry = where + ": option " + std::to_string(i) +
                       (spec.name ? " '" + std::string(spec.name) + "'" : std::string());
    if (!spec.name || !*spec.name) plugin_error(entry + " has no name");
    if (!names.insert(spec.name).second) plugin_error(entry + " is declared twice");
    if (spec.type > BULWARK_OPT_LIST) plugin_error(entry + " has unknown type " + std::to_string(spec.type));
    if (!(spec.min <= spec.max)) plugin_error(entry + " has an empty range [min, max]");
    if (spec.default_value) with_default.push_back(spec);
  }
  try {
    options_from_string("", with_default, where);
  } catch (const Error& e) {
    plugin_error(std::string(e.what()) + "; fix the plugin's option table");
  }
}

}  // namespace

void check_plugin_info(const struct bulwark_plugin_info& info, const fs::path& path, std::uint32_t expected_kind) {
  // Keep this order: abi_version is the only field guaranteed to be where we read it.
  if (info.abi_version != BULWARK_PLUGIN_ABI_VERSION) {
    plugin_error(describe_plugin(path, nullptr) + " was built for plugin ABI " +
                 std::to_string(info.abi_version) + "; this bulwark needs ABI " +
                 std::to_string(BULWARK_PLUGIN_ABI_VERSION) + ". Rebuild it against this SDK.");
  }
  if (info.struct_size < sizeof(struct bulwark_plugin_info)) {
    plugin_error(describe_plugin(path, nullptr) + " has a plugin info struct of " +
                 std::to_string(info.struct_size) + " bytes; this bulwark expects " +
                 std::to_string(sizeof(struct bulwark_plugin_info)) + ". Rebuild it against this SDK.");
  }
  const auto where = describe_plugin(path, info.name);
  if (expected_kind != 0 && info.kind != expected_kind) {
    plugin_error(where + " is a " + kind_name(info.kind) + " plugin, but a " +
                 kind_name(expected_kind) + " was requested here.");
  }
  if (std::string(info.torch_version ? info.torch_version : "") != TORCH_VERSION) {
    plugin_error(where + " was built with LibTorch " +
                 (info.torch_version ? info.torch_version : "?") + "; this bulwark uses " +
                 TORCH_VERSION + ". Rebuild it against this installation.");
  }
  if (info.glibcxx_cxx11_abi != _GLIBCXX_USE_CXX11_ABI) {
    plugin_error(where + " was built with _GLIBCXX_USE_CXX11_ABI=" +
                 std::to_string(info.glibcxx_cxx11_abi) + "; this bulwark uses " +
                 std::to_string(_GLIBCXX_USE_CXX11_ABI) + ". Rebuild it with the same flag.");
  }
  if (std::string(info.compiler ? info.compiler : "") != BULWARK_COMPILER_ID) {
    plugin_error(where + " was built with " + (info.compiler ? info.compiler : "?") +
                 "; this bulwark was built with " + BULWARK_COMPILER_ID +
                 ". C++ plugins must use the host's compiler; rebuild it.");
  }
  if (!info.name || !*info.name || !info.create || !info.destroy) {
    plugin_error(path.string() + ": plugin info lacks a name, create or destroy function");
  }
  if (info.kind < BULWARK_KIND_DATASET || info.kind > BULWARK_KIND_PRIVACY) {
    plugin_error(where + " declares unknown kind " + std::to_string(info.kind) + "; rebuild it against this SDK");
  }
  check_option_schema(info, where);
}

void PluginLibrary::check(std::uint32_t expected_kind) const { check_plugin_info(*info_, path_, expected_kind); }

std::vector<OptionSpec> PluginLibrary::option_specs() const {
  return {info_->options, info_->options + info_->num_options};
}

void* PluginLibrary::create(const Options& options) const {
  void* instance = nullptr;
  try {
    instance = info_->create(&options);
  } catch (const Error& e) {
    throw Error(e.kind(), std::string(kind_name(info_->kind)) + " '" + info_->name +
                              "' failed in create(): " + e.what());
  } catch (const std::exception& e) {
    plugin_error(std::string(kind_name(info_->kind)) + " '" + info_->name +
                 "' failed in create(): " + e.what());
  } catch (...) {
    plugin_error(std::string(kind_name(info_->kind)) + " '" + info_->name +
                 "' failed in create() with an unknown exception");
  }
  if (!instance) plugin_error(std::string(kind_name(info_->kind)) + " '" + info_->name + "' create() returned null");
  return instance;
}

PluginRegistry::PluginRegistry() : PluginRegistry(default_search_dirs()) {}

PluginRegistry::PluginRegistry(std::vector<fs::path> search_dirs) : search_dirs_(std::move(search_dirs)) {}

std::vector<fs::path> PluginRegistry::default_search_dirs() {
  std::vector<fs::path> dirs;
  // The installed layout, relative to the running binary's real folder (symlinks resolved):
  // "../lib/bulwark", or "../lib/x86_64-linux-gnu/bulwark" for a /usr build (core/CMakeLists.txt).
  const fs::path exe = boost::dll::program_location().string();
  const fs::path installed = (exe.parent_path() / BULWARK_INSTALL_PLUGIN_RELDIR).lexically_normal();
  const bool running_installed = fs::is_directory(installed);
  // A build-tree binary finds the build tree's plugins first; an installed one never looks there.
  if (!running_installed && fs::exists(BULWARK_BUILD_PLUGIN_DIR)) dirs.emplace_back(BULWARK_BUILD_PLUGIN_DIR);
  if (const char* env = std::getenv("BULWARK_PLUGIN_PATH")) {
    std::stringstream paths(env);
    std::string dir;
    while (std::getline(paths, dir, ':')) {
      if (!dir.empty()) dirs.emplace_back(dir);
    }
  }
  if (running_installed) dirs.push_back(installed);
  return dirs;
}

std::shared_ptr<const PluginLibrary> PluginRegistry::open(std::uint32_t kind,
                                                          const std::string& name_or_path) {
  fs::path path;
  const bool is_path = name_or_path.find('/') != std::string::npos ||
                       (name_or_path.size() > 3 &&
                        name_or_path.compare(name_or_path.size() - 3, 3, ".so") == 0);
  if (is_path) {
    path = fs::absolute(name_or_path);
  } else {
    for (const auto& dir : search_dirs_) {
      auto candidate = dir / kind_folder(kind) / (name_or_path + ".so");
      if (fs::exists(candidate)) {
        path = candidate;
        break;
      }
    }
    if (path.empty()) {
      const auto names = available(kind);
      std::string message = "unknown " + std::string(kind_name(kind)) + " plugin '" + name_or_path + "'";
      auto guess = nearest(name_or_path, names);
      if (guess) message += "; did you mean '" + *guess + "'?";
      message += names.empty() ? "; no " + std::string(kind_name(kind)) + " plugins were found"
                               : std::string(guess ? "" : ";") + " available: ";
      for (std::size_t i = 0; i < names.size(); ++i) message += (i ? ", " : "") + names[i];
      message += ". Searched:";
      for (const auto& dir : search_dirs_) message += " " + dir.string();
      message += " (add folders with BULWARK_PLUGIN_PATH, or give a path to the .so)";
      plugin_error(message);
    }
  }
  path = fs::weakly_canonical(path);
  for (const auto& library : opened_) {
    if (library->path() == path) {
      library->check(kind);
      return library;
    }
  }
  auto library = std::make_shared<const PluginLibrary>(path);
  library->check(kind);
  opened_.push_back(library);
  return library;
}

std::vector<PluginListing> PluginRegistry::discover() const {
  std::vector<PluginListing> listings;
  std::set<fs::path> seen;
  for (const auto& dir : search_dirs_) {
    for (std::uint32_t kind = BULWARK_KIND_DATASET; kind <= BULWARK_KIND_PRIVACY; ++kind) {
      auto folder = dir / kind_folder(kind);
      std::error_code ec;
      if (!fs::is_directory(folder, ec)) continue;
      std::vector<fs::path> files;
      for (const auto& entry : fs::directory_iterator(folder, ec)) {
        if (entry.path().extension() == ".so") files.push_back(fs::weakly_canonical(entry.path()));
      }
      std::sort(files.begin(), files.end());
      for (const auto& file : files) {
        if (!seen.insert(file).second) continue;
        PluginListing listing;
        listing.path = file;
        listing.kind = kind_name(kind);
        listing.name = file.stem().string();
        try {
          PluginLibrary library(file);
          const auto& info = library.info();
          listing.abi_version = info.abi_version;
          if (info.abi_version != BULWARK_PLUGIN_ABI_VERSION) {
            listing.problem = "incompatible: built for ABI " + std::to_string(info.abi_version) +
                              ", host is " + std::to_string(BULWARK_PLUGIN_ABI_VERSION);
          } else {
            library.check(kind);
            listing.name = info.name;
            listing.version = info.version ? info.version : "";
            listing.summary = info.summary ? info.summary : "";
          }
        } catch (const Error& e) {
          listing.problem = e.what();
        }
        listings.push_back(std::move(listing));
      }
    }
  }
  return listings;
}

std::vector<std::string> PluginRegistry::available(std::uint32_t kind) const {
  std::vector<std::string> names;
  for (const auto& listing : discover()) {
    if (listing.kind == kind_name(kind) && listing.problem.empty()) names.push_back(listing.name);
  }
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return names;
}

}  // namespace bulwark

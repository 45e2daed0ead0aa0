#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <boost/dll/shared_library.hpp>

#include "bulwark/aggregator.hpp"
#include "bulwark/attack.hpp"
#include "bulwark/dataset.hpp"
#include "bulwark/error.hpp"
#include "bulwark/options.hpp"
#include "bulwark/plugin_abi.h"
#include "bulwark/privacy.hpp"

namespace bulwark {

/// "dataset", "aggregator", "attack", "privacy".
const char* kind_name(std::uint32_t kind);
/// The folder a kind's plugins live in: "datasets", "aggregators", "attacks", "privacy" (the same
/// names as the source folders under plugins/).
const char* kind_folder(std::uint32_t kind);

/// The handshake on a plugin's info struct: ABI version, struct size, kind (when `expected_kind`
/// != 0), LibTorch version, compiler, C++11 ABI, then the option schema (names unique, types known,
/// min <= max, defaults valid). Throws Error(Plugin) with a message that says what to rebuild or
/// fix; `path` names the library in it.
void check_plugin_info(const struct bulwark_plugin_info& info, const std::filesystem::path& path,
                       std::uint32_t expected_kind);

/// A loaded, checked plugin library. Held by shared_ptr; never unloaded during a run: the
/// registry that owns the libraries lives in main() and dies last (tensors and exceptions can
/// carry plugin code).
class PluginLibrary {
 public:
  /// Loads `path` (RTLD_NOW | RTLD_LOCAL) and finds the entry symbol; throws Error(Plugin) when
  /// the file cannot be loaded or is not a Bulwark plugin. Runs no plugin code but the entry.
  explicit PluginLibrary(const std::filesystem::path& path);

  /// check_plugin_info() on this library's info.
  void check(std::uint32_t expected_kind) const;

  /// Only abi_version may be read before check() passed.
  const struct bulwark_plugin_info& info() const { return *info_; }
  const std::filesystem::path& path() const { return path_; }
  std::vector<OptionSpec> option_specs() const;

  /// Wraps info().create with the kind's interface type. Exceptions from the plugin's
  /// constructor come back as Error(Plugin) naming the plugin.
  void* create(const Options& options) const;

 private:
  std::filesystem::path path_;
  boost::dll::shared_library library_;
  const struct bulwark_plugin_info* info_ = nullptr;
};

template <typename I>
struct InterfaceKind;
template <>
struct InterfaceKind<DatasetLoader> { static constexpr std::uint32_t value = BULWARK_KIND_DATASET; };
template <>
struct InterfaceKind<Aggregator> { static constexpr std::uint32_t value = BULWARK_KIND_AGGREGATOR; };
template <>
struct InterfaceKind<Attack> { static constexpr std::uint32_t value = BULWARK_KIND_ATTACK; };
template <>
struct InterfaceKind<PrivacyMechanism> { static constexpr std::uint32_t value = BULWARK_KIND_PRIVACY; };

/// An instance created by a plugin, destroyed by the plugin's own `destroy`.
template <typename I>
class PluginHandle {
 public:
  PluginHandle() = default;
  PluginHandle(std::shared_ptr<const PluginLibrary> library, const Options& options)
      : library_(std::move(library)), instance_(static_cast<I*>(library_->create(options))) {}
  PluginHandle(PluginHandle&& other) noexcept { *this = std::move(other); }
  PluginHandle& operator=(PluginHandle&& other) noexcept {
    reset();
    library_ = std::move(other.library_);
    instance_ = other.instance_;
    other.instance_ = nullptr;
    return *this;
  }
  PluginHandle(const PluginHandle&) = delete;
  PluginHandle& operator=(const PluginHandle&) = delete;
  ~PluginHandle() { reset(); }

  I* operator->() const { return instance_; }
  I& operator*() const { return *instance_; }
  explicit operator bool() const { return instance_ != nullptr; }
  const std::string name() const { return library_ ? library_->info().name : ""; }
  const PluginLibrary& library() const { return *library_; }

 private:
  void reset() {
    if (instance_) library_->info().destroy(instance_);
    instance_ = nullptr;
  }
  // Keep this order: the library is declared first so it is destroyed last, after the instance.
  std::shared_ptr<const PluginLibrary> library_;
  I* instance_ = nullptr;
};

/// One row of `bulwark plugins`.
struct PluginListing {
  std::filesystem::path path;
  std::string kind, name, version, summary;
  std::uint32_t abi_version = 0;
  std::string problem;  ///< empty when compatible; else e.g. "incompatible: built for ABI 2, host is 1"
};

/// Finds plugins by name or path and keeps every library it opened loaded until it dies.
/// Search order for a name: each directory's <kind>s/<name>.so, over (1) the build tree's plugin
/// folder, (2) BULWARK_PLUGIN_PATH (':'-separated), (3) <prefix>/lib/bulwark next to the running
/// executable's installation.
class PluginRegistry {
 public:
  PluginRegistry();  ///< default search directories
  explicit PluginRegistry(std::vector<std::filesystem::path> search_dirs);

  static std::vector<std::filesystem::path> default_search_dirs();
  const std::vector<std::filesystem::path>& search_dirs() const { return search_dirs_; }

  /// A name ("krum") or a path ("./my_rule.so", anything containing '/' or ending in ".so").
  /// Unknown names get an Error listing the nearest and all available plugins of that kind.
  std::shared_ptr<const PluginLibrary> open(std::uint32_t kind, const std::string& name_or_path);

  template <typename I>
  PluginHandle<I> create(const std::string& name_or_path, const Options& options) {
    return PluginHandle<I>(open(InterfaceKind<I>::value, name_or_path), options);
  }

  /// Every plugin library under the search directories, compatible or not.
  std::vector<PluginListing> discover() const;
  /// Names of the compatible plugins of a kind, sorted.
  std::vector<std::string> available(std::uint32_t kind) const;

 private:
  std::vector<std::filesystem::path> search_dirs_;
  std::vector<std::shared_ptr<const PluginLibrary>> opened_;
};

}  // namespace bulwark

#pragma once

// The declarative side of the model zoo: `[model] layers`, a list of one-line layer specs such as
// "conv 6 5" or "linear classes bias=false", and the named networks of the reference studies
// written as such lists. The grammar is in docs/user-guide.md ("Models").
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "layers.hpp"

namespace bulwark::detail {

/// A named network: the arch value that selects it, one line for `describe`, its layer specs.
struct PresetNetwork {
  const char* name;
  const char* description;
  std::vector<std::string> layers;
};

/// Every preset, in the order the docs list them.
const std::vector<PresetNetwork>& preset_networks();

/// The preset called `name`, or nullptr.
const PresetNetwork* find_preset(const std::string& name);

/// Splits the text of `[model] layers` (specs separated by commas or newlines) into specs.
std::vector<std::string> split_layer_specs(const std::string& text);

/// Builds the layers that `specs` describe. "linear classes" takes `num_classes` as its width and
/// "act" (and each residual block) uses `act`, the [model] activation. Throws Error(Config) naming
/// `where` and the spec's index for a spec that is not well formed.
std::vector<std::unique_ptr<Layer>> parse_layer_specs(const std::vector<std::string>& specs,
                                                      std::int64_t num_classes, Activation act,
                                                      const std::string& where);

}  // namespace bulwark::detail

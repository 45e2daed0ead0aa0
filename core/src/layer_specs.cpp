#include "layer_specs.hpp"

#include <algorithm>
#include <charconv>
#include <map>
#include <sstream>

#include "bulwark/error.hpp"

namespace bulwark::detail {

const std::vector<PresetNetwork>& preset_networks() {
  static const std::vector<PresetNetwork> presets = {
      {"lenet5_gn",
       "the DP-clipping study's CNN: conv 6@5x5, tanh, avgpool 2, GroupNorm(2), conv 16@5x5, tanh, avgpool 2, "
       "GroupNorm(4), linear 120, tanh, linear 84, tanh, linear",
       {"conv 6 5", "tanh", "avgpool 2", "groupnorm 2", "conv 16 5", "tanh", "avgpool 2", "groupnorm 4", "flatten",
        "linear 120", "tanh", "linear 84", "tanh", "linear classes"}},
      {"cnn4",
       "4 conv + 1 linear (the Krum/IPM study's shape; widths ours): conv 32, 32, maxpool 2, conv 64, 64, "
       "maxpool 2, all 3x3 padded, [model] activation",
       {"conv 32 3 padding=1", "act", "conv 32 3 padding=1", "act", "maxpool 2", "conv 64 3 padding=1", "act",
        "conv 64 3 padding=1", "act", "maxpool 2", "flatten", "linear classes"}},
      {"cnn2",
       "2 conv + 1 linear without bias, as in the Fed-CDP authors' code: conv 32@3x3, maxpool 2, conv 64@3x3, "
       "maxpool 2, linear, [model] activation (sigmoid for the Fashion-MNIST leakage study)",
       {"conv 32 3 bias=false", "act", "maxpool 2", "conv 64 3 bias=false", "act", "maxpool 2", "flatten",
        "linear classes bias=false"}},
      {"vgg11_gn",
       "VGG-11 with GroupNorm of 16 channels per group (DiverseFL on CIFAR): 8 conv 3x3 (64, M, 128, M, 256, "
       "256, M, 512, 512, M, 512, 512, M) + linear 512, 512, classes; 32x32 inputs",
       {"conv 64 3 padding=1", "groupnorm per_group=16", "act", "maxpool 2",
        "conv 128 3 padding=1", "groupnorm per_group=16", "act", "maxpool 2",
        "conv 256 3 padding=1", "groupnorm per_group=16", "act",
        "conv 256 3 padding=1", "groupnorm per_group=16", "act", "maxpool 2",
        "conv 512 3 padding=1", "groupnorm per_group=16", "act",
        "conv 512 3 padding=1", "groupnorm per_group=16", "act", "maxpool 2",
        "conv 512 3 padding=1", "groupnorm per_group=16", "act",
        "conv 512 3 padding=1", "groupnorm per_group=16", "act", "maxpool 2",
        "flatten", "linear 512", "act", "linear 512", "act", "linear classes"}},
      {"resnet18",
       "ResNet-18 for 32x32 inputs with GroupNorm (16 channels per group): conv 64@3x3, 8 basic blocks "
       "(64, 64, 128/2, 128, 256/2, 256, 512/2, 512), global average pool, linear; [model] activation (sigmoid "
       "for the leakage study)",
       {"conv 64 3 padding=1 bias=false", "groupnorm per_group=16", "act", "residual 64", "residual 64",
        "residual 128 stride=2", "residual 128", "residual 256 stride=2", "residual 256", "residual 512 stride=2",
        "residual 512", "globalavgpool", "linear classes"}},
  };
  return presets;
}

const PresetNetwork* find_preset(const std::string& name) {
  for (const auto& preset : preset_networks()) {
    if (name == preset.name) return &preset;
  }
  return nullptr;
}

std::vector<std::string> split_layer_specs(const std::string& text) {
  std::vector<std::string> specs;
  std::string current;
  auto flush = [&] {
    const auto begin = current.find_first_not_of(" \t\r");
    if (begin != std::string::npos) specs.push_back(current.substr(begin, current.find_last_not_of(" \t\r") + 1 - begin));
    current.clear();
  };
  for (char c : text) {
    if (c == ',' || c == '\n') {
      flush();
    } else {
      current += c;
    }
  }
  flush();
  return specs;
}

namespace {

// One spec, "kind positional... key=value...", with the checks every kind shares.
class Spec {
 public:
  Spec(const std::string& text, std::string where) : where_(std::move(where)) {
    std::istringstream words(text);
    words >> kind_;
    for (std::string word; words >> word;) {
      const auto equals = word.find('=');
      if (equals == std::string::npos) {
        positional_.push_back(word);
      } else {
        keyed_[word.substr(0, equals)] = word.substr(equals + 1);
      }
    }
  }

  const std::string& kind() const { return kind_; }

  /// Refuses positional words beyond `max_positional` and keys outside `keys`.
  void allow(std::size_t max_positional, const std::vector<std::string>& keys, const std::string& example) const {
    if (positional_.size() > max_positional) fail("too many values; write it as \"" + example + "\"");
    for (const auto& [key, value] : keyed_) {
      if (std::find(keys.begin(), keys.end(), key) == keys.end()) {
        std::string valid;
        for (const auto& k : keys) valid += (valid.empty() ? "" : ", ") + k;
        fail("unknown key '" + key + "'" + (keys.empty() ? "; " + kind_ + " takes none" : "; valid: " + valid));
      }
    }
  }

  bool has(std::size_t index) const { return index < positional_.size(); }
  bool has(const std::string& key) const { return keyed_.count(key) != 0; }

  std::int64_t number(std::size_t index, const std::string& what, const std::string& example) const {
    if (!has(index)) fail("needs " + what + ", e.g. \"" + example + "\"");
    return parse(positional_[index], what, 1);
  }

  std::int64_t number(const std::string& key, std::int64_t fallback, std::int64_t minimum) const {
    auto it = keyed_.find(key);
    return it == keyed_.end() ? fallback : parse(it->second, key, minimum);
  }

  bool flag(const std::string& key, bool fallback) const {
    auto it = keyed_.find(key);
    if (it == keyed_.end()) return fallback;
    if (it->second == "true") return true;
    if (it->second == "false") return false;
    fail(key + " must be true or false, found '" + it->second + "'");
  }

  const std::string& word(std::size_t index) const { return positional_.at(index); }

  [[noreturn]] void fail(const std::string& why) const { throw Error(ErrorKind::Config, where_ + ": " + why); }

 private:
  std::int64_t parse(const std::string& text, const std::string& what, std::int64_t minimum) const {
    std::int64_t value = 0;
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (error != std::errc() || end != text.data() + text.size() || value < minimum) {
      fail(what + " must be a whole number >= " + std::to_string(minimum) + ", found '" + text + "'");
    }
    return value;
  }

  std::string where_;
  std::string kind_;
  std::vector<std::string> positional_;
  std::map<std::string, std::string> keyed_;
};

}  // namespace

std::vector<std::unique_ptr<Layer>> parse_layer_specs(const std::vector<std::string>& specs,
                                                      std::int64_t num_classes, Activation act,
                                                      const std::string& where) {
  if (specs.empty()) {
    throw Error(ErrorKind::Config, where + " is empty; list the layers, e.g. [\"flatten\", \"linear classes\"]");
  }
  std::vector<std::unique_ptr<Layer>> layers;
  std::map<std::string, int> count;  // per name stem, for conv1, conv2, fc1, gn1, block1, ...
  auto next_name = [&](const std::string& stem) { return stem + std::to_string(++count[stem]); };
  for (std::size_t i = 0; i < specs.size(); ++i) {
    const Spec spec(specs[i], where + "[" + std::to_string(i) + "] = \"" + specs[i] + "\"");
    const auto& kind = spec.kind();
    if (kind == "linear") {
      spec.allow(1, {"bias"}, "linear 120 bias=false");
      if (!spec.has(0)) spec.fail("needs a width or 'classes', e.g. \"linear 120\"");
      const auto width = spec.word(0) == "classes" ? num_classes : spec.number(0, "the width", "linear 120");
      layers.push_back(linear(next_name("fc"), width, spec.flag("bias", true)));
    } else if (kind == "conv") {
      spec.allow(2, {"stride", "padding", "bias"}, "conv 16 5 stride=1 padding=2");
      const auto out = spec.number(0, "output channels", "conv 16 5");
      const auto kernel = spec.number(1, "a kernel size after the channels", "conv 16 5");
      layers.push_back(conv2d(next_name("conv"), out, kernel, spec.number("stride", 1, 1),
                              spec.number("padding", 0, 0), spec.flag("bias", true)));
    } else if (kind == "maxpool" || kind == "avgpool") {
      spec.allow(1, {}, kind + " 2");
      const auto window = spec.number(0, "a window size", kind + " 2");
      layers.push_back(kind == "maxpool" ? max_pool2d(window) : avg_pool2d(window));
    } else if (kind == "globalavgpool") {
      spec.allow(0, {}, kind);
      layers.push_back(global_avg_pool());
    } else if (kind == "groupnorm") {
      spec.allow(1, {"per_group"}, "groupnorm 4");
      if (spec.has(0) == spec.has("per_group")) {
        spec.fail("give the number of groups or per_group=<channels>, e.g. \"groupnorm 4\" or "
                  "\"groupnorm per_group=16\"");
      }
      layers.push_back(spec.has(0) ? group_norm(next_name("gn"), spec.number(0, "groups", "groupnorm 4"))
                                   : group_norm_by_size(next_name("gn"), spec.number("per_group", 0, 1)));
    } else if (kind == "residual") {
      spec.allow(1, {"stride", "per_group"}, "residual 128 stride=2");
      const auto out = spec.number(0, "output channels", "residual 128 stride=2");
      layers.push_back(residual_block(next_name("block"), out, spec.number("stride", 1, 1),
                                      spec.number("per_group", 16, 1), act));
    } else if (kind == "relu" || kind == "tanh" || kind == "sigmoid" || kind == "act") {
      spec.allow(0, {}, kind);
      layers.push_back(activation(kind == "act" ? act : parse_activation(kind)));
    } else if (kind == "flatten") {
      spec.allow(0, {}, kind);
      layers.push_back(flatten());
    } else {
      spec.fail("unknown layer '" + kind +
                "'; expected linear, conv, maxpool, avgpool, globalavgpool, groupnorm, residual, flatten, relu, "
                "tanh, sigmoid or act");
    }
  }
  return layers;
}

}  // namespace bulwark::detail

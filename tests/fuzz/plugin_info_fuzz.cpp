// Fuzzes the plugin handshake: the input describes a plugin info struct (what a plugin library
// exports) field by field, and the host's check must accept it or refuse it with Error(Plugin).
// Layout: ABI / struct size / kind / expected kind bytes, a flags byte (bit 0 this LibTorch
// version, 1 this compiler, 2 this C++11 ABI flag, 3 create, 4 destroy), five texts (name,
// version, summary, doc, SDK version), then up to five option entries (name, type, default, min,
// max, doc, choices).
#include <torch/version.h>

#include <vector>

#include "bulwark/plugin.hpp"
#include "fuzz_support.hpp"

namespace {
void* create_nothing(const void*) { return nullptr; }
void destroy_nothing(void*) {}
}  // namespace

BULWARK_FUZZ_TARGET(plugin_info) {
  using namespace bulwark;
  fuzz::ByteReader input(data, size);
  struct bulwark_plugin_info info {};
  const auto abi = input.byte();
  info.abi_version = (abi & 1) ? BULWARK_PLUGIN_ABI_VERSION : abi >> 1;
  const auto struct_size = input.byte();
  info.struct_size = (struct_size & 1) ? sizeof info : struct_size >> 1;
  info.kind = input.byte() % 6;
  const std::uint32_t expected_kind = input.byte() % 5;
  const auto flags = input.byte();
  info.name = input.text_or_null();
  info.version = input.text_or_null();
  info.summary = input.text_or_null();
  info.doc = input.text_or_null();
  info.sdk_version = input.text_or_null();
  info.torch_version = (flags & 1) ? TORCH_VERSION : input.text_or_null();
  info.compiler = (flags & 2) ? BULWARK_COMPILER_ID : input.text_or_null();
  info.glibcxx_cxx11_abi = (flags & 4) ? _GLIBCXX_USE_CXX11_ABI : 2;
  info.create = (flags & 8) ? create_nothing : nullptr;
  info.destroy = (flags & 16) ? destroy_nothing : nullptr;
  std::vector<OptionSpec> options(input.byte() % 6);
  for (auto& spec : options) {
    spec.name = input.text_or_null();
    spec.type = static_cast<bulwark_opt_type>(input.byte() % 6);
    spec.default_value = input.text_or_null();
    spec.min = input.number();
    spec.max = input.number();
    spec.doc = input.text_or_null();
    spec.choices = input.text_or_null();
  }
  info.options = options.empty() ? nullptr : options.data();
  info.num_options = static_cast<std::uint32_t>(options.size());
  fuzz::expect_clean_error([&] { check_plugin_info(info, "fuzz-plugin.so", expected_kind); });
  return 0;
}

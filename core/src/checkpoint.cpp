// Checkpoint files. The format is deliberately plain so that a reader needs neither LibTorch's
// pickler nor this code to inspect one:
//
//   "BULWARK-CHECKPOINT 1\n"                 magic and format version
//   uint64 little-endian                     length of the JSON header in bytes
//   JSON header                              round, elapsed time, config fingerprint, metric
//                                            columns, and per tensor: name, dtype, shape, offset
//   raw bytes                                every tensor's contiguous CPU storage, back to back
//
// Byte order is the machine's (little-endian on every platform LibTorch 1.13 supports here).
#include "checkpoint.hpp"

#include <torch/torch.h>

#include <cstring>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "bulwark/error.hpp"
#include "outputs.hpp"

namespace bulwark {

namespace fs = std::filesystem;

namespace {

constexpr char kMagic[] = "BULWARK-CHECKPOINT 1\n";
constexpr std::size_t kMagicSize = sizeof(kMagic) - 1;

struct DtypeName {
  c10::ScalarType type;
  const char* name;
};
constexpr DtypeName kDtypes[] = {
    {c10::ScalarType::Float, "float32"}, {c10::ScalarType::Double, "float64"},
    {c10::ScalarType::Half, "float16"},  {c10::ScalarType::BFloat16, "bfloat16"},
    {c10::ScalarType::Long, "int64"},    {c10::ScalarType::Int, "int32"},
    {c10::ScalarType::Short, "int16"},   {c10::ScalarType::Char, "int8"},
    {c10::ScalarType::Byte, "uint8"},    {c10::ScalarType::Bool, "bool"},
};

const char* dtype_name(c10::ScalarType type, const std::string& tensor) {
  for (const auto& d : kDtypes) {
    if (d.type == type) return d.name;
  }
  throw Error(ErrorKind::Runtime, fmt::format("cannot checkpoint tensor '{}' of dtype {}", tensor,
                                              c10::toString(type)));
}

[[noreturn]] void corrupt(const std::string& source, const std::string& what) {
  throw Error(ErrorKind::Data, source + " is not a usable checkpoint: " + what + ". Delete it to start the run from round 1.");
}

}  // namespace

void Checkpoint::put(const std::string& prefix, const StateDict& state) {
  for (const auto& [key, tensor] : state) tensors[prefix + "/" + key] = tensor;
}

StateDict Checkpoint::take(const std::string& prefix) const {
  StateDict state;
  const auto head = prefix + "/";
  for (auto it = tensors.lower_bound(head); it != tensors.end() && it->first.rfind(head, 0) == 0; ++it) {
    state[it->first.substr(head.size())] = it->second;
  }
  return state;
}

fs::path checkpoint_path(const fs::path& run_dir) { return run_dir / "checkpoint.bin"; }

std::string encode_checkpoint(const Checkpoint& checkpoint) {
  nlohmann::ordered_json header;
  header["round"] = checkpoint.round;
  header["elapsed_seconds"] = checkpoint.elapsed_seconds;
  header["fingerprint"] = checkpoint.fingerprint;

  std::vector<torch::Tensor> blobs;
  std::size_t offset = 0;
  auto add_blob = [&](const torch::Tensor& tensor) {
    auto cpu = tensor.detach().to(torch::kCPU).contiguous();
    const auto bytes = static_cast<std::size_t>(cpu.numel()) * cpu.element_size();
    const auto at = offset;
    offset += bytes;
    blobs.push_back(cpu);
    return std::pair<std::size_t, std::size_t>{at, bytes};
  };

  // Metrics as one float64 matrix: NaN ("not measured") survives, which JSON could not carry.
  std::vector<std::string> columns;
  if (!checkpoint.metrics.empty()) {
    for (const auto& [name, value] : checkpoint.metrics.front()) columns.push_back(name);
  }
  std::vector<double> values;
  for (const auto& row : checkpoint.metrics) {
    if (row.size() != columns.size()) {
      throw Error(ErrorKind::Runtime, "cannot checkpoint metrics whose columns change between rounds");
    }
    for (std::size_t c = 0; c < row.size(); ++c) {
      if (row[c].first != columns[c]) {
        throw Error(ErrorKind::Runtime, "cannot checkpoint metrics whose columns change between rounds");
      }
      values.push_back(row[c].second);
    }
  }
  auto matrix = torch::tensor(values, torch::kDouble);
  auto [metrics_offset, metrics_bytes] = add_blob(matrix);
  header["metrics"] = {{"columns", columns},
                       {"rows", checkpoint.metrics.size()},
                       {"offset", metrics_offset},
                       {"bytes", metrics_bytes}};

  nlohmann::ordered_json entries = nlohmann::ordered_json::array();
  for (const auto& [name, tensor] : checkpoint.tensors) {
    if (!tensor.defined()) continue;  // an unset optional state (e.g. no momentum yet)
    const char* dtype = dtype_name(tensor.scalar_type(), name);
    auto [at, bytes] = add_blob(tensor);
    entries.push_back({{"name", name}, {"dtype", dtype}, {"shape", tensor.sizes().vec()}, {"offset", at}, {"bytes", bytes}});
  }
  header["tensors"] = entries;
  header["blob_bytes"] = offset;

  const std::string header_text = header.dump();
  std::string content;
  content.reserve(kMagicSize + 8 + header_text.size() + offset);
  content.append(kMagic, kMagicSize);
  std::uint64_t length = header_text.size();
  char length_bytes[8];
  for (int i = 0; i < 8; ++i) length_bytes[i] = static_cast<char>((length >> (8 * i)) & 0xff);
  content.append(length_bytes, 8);
  content += header_text;
  for (const auto& blob : blobs) {
    content.append(static_cast<const char*>(blob.data_ptr()), static_cast<std::size_t>(blob.numel()) * blob.element_size());
  }
  return content;
}

void save_checkpoint(const fs::path& file, const Checkpoint& checkpoint) {
  write_file_atomic(file, encode_checkpoint(checkpoint));
}

Checkpoint load_checkpoint(const fs::path& file) { return decode_checkpoint(read_whole_file(file), file.string()); }

Checkpoint decode_checkpoint(const std::string& content, const std::string& file) {
  if (content.size() < kMagicSize + 8 || content.compare(0, kMagicSize, kMagic) != 0) {
    corrupt(file, "wrong magic (expected a Bulwark checkpoint, format 1)");
  }
  std::uint64_t length = 0;
  for (int i = 0; i < 8; ++i) {
    length |= static_cast<std::uint64_t>(static_cast<unsigned char>(content[kMagicSize + i])) << (8 * i);
  }
  const std::size_t header_start = kMagicSize + 8;
  if (length > content.size() - header_start) corrupt(file, "truncated header");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(content.substr(header_start, length));
  } catch (const nlohmann::json::exception& e) {
    corrupt(file, std::string("malformed header: ") + e.what());
  }
  const std::size_t blob_start = header_start + length;

  Checkpoint checkpoint;
  try {
    const auto blob_bytes = header.at("blob_bytes").get<std::size_t>();
    if (content.size() - blob_start != blob_bytes) {
      corrupt(file, fmt::format("truncated data ({} of {} bytes)", content.size() - blob_start, blob_bytes));
    }
    auto read_blob = [&](std::size_t offset, std::size_t bytes, c10::ScalarType type, std::vector<std::int64_t> shape) {
      if (offset > blob_bytes || bytes > blob_bytes - offset) corrupt(file, "a tensor lies outside the data");
      auto tensor = torch::empty(shape, torch::TensorOptions().dtype(type));
      if (static_cast<std::size_t>(tensor.numel()) * tensor.element_size() != bytes) {
        corrupt(file, "a tensor's size does not match its shape");
      }
      if (bytes > 0) std::memcpy(tensor.data_ptr(), content.data() + blob_start + offset, bytes);
      return tensor;
    };

    checkpoint.round = header.at("round").get<std::int64_t>();
    checkpoint.elapsed_seconds = header.at("elapsed_seconds").get<double>();
    checkpoint.fingerprint = header.at("fingerprint").get<std::string>();

    const auto& metrics = header.at("metrics");
    const auto columns = metrics.at("columns").get<std::vector<std::string>>();
    const auto rows = metrics.at("rows").get<std::int64_t>();
    auto matrix = read_blob(metrics.at("offset").get<std::size_t>(), metrics.at("bytes").get<std::size_t>(),
                            c10::ScalarType::Double, {rows * static_cast<std::int64_t>(columns.size())});
    const double* values = matrix.data_ptr<double>();
    for (std::int64_t r = 0; r < rows; ++r) {
      MetricsRow row;
      for (std::size_t c = 0; c < columns.size(); ++c) row.emplace_back(columns[c], values[r * columns.size() + c]);
      checkpoint.metrics.push_back(std::move(row));
    }

    for (const auto& entry : header.at("tensors")) {
      const auto name = entry.at("name").get<std::string>();
      const auto dtype = entry.at("dtype").get<std::string>();
      const DtypeName* match = nullptr;
      for (const auto& d : kDtypes) {
        if (dtype == d.name) match = &d;
      }
      if (!match) corrupt(file, "tensor '" + name + "' has unknown dtype " + dtype);
      checkpoint.tensors[name] = read_blob(entry.at("offset").get<std::size_t>(), entry.at("bytes").get<std::size_t>(),
                                           match->type, entry.at("shape").get<std::vector<std::int64_t>>());
    }
  } catch (const nlohmann::json::exception& e) {
    corrupt(file, std::string("malformed header: ") + e.what());
  }
  return checkpoint;
}

}  // namespace bulwark

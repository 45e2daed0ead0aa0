#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "bulwark/layout.hpp"
#include "outputs.hpp"

namespace bulwark {

/// Everything a run needs to continue after round `round` as if it had never stopped
/// (docs/architecture.md, "Checkpoints"). Random streams are derived from (seed, round, client, purpose), so no generator
/// state is stored: only state that one round hands to the next.
///
/// `tensors` is one flat dictionary; the engine namespaces its entries ("theta",
/// "server/momentum", "aggregator/<key>", "attack/0/<key>", "schedule/0/markov_remaining", ...)
/// with put()/take().
struct Checkpoint {
  std::int64_t round = 0;          ///< last completed round
  double elapsed_seconds = 0.0;    ///< wall time spent before the checkpoint (for summary.json)
  std::string fingerprint;         ///< the resolved config text: a resume refuses a different one
  StateDict tensors;
  std::vector<MetricsRow> metrics; ///< rows of rounds 1..round, exactly as logged

  /// Adds every entry of `state` as "<prefix>/<key>".
  void put(const std::string& prefix, const StateDict& state);
  /// The entries saved under `prefix`, with the prefix removed.
  StateDict take(const std::string& prefix) const;
};

/// The checkpoint file of a run folder.
std::filesystem::path checkpoint_path(const std::filesystem::path& run_dir);

/// Writes `checkpoint` atomically (temporary file + rename): a run killed at any instant leaves
/// either the previous checkpoint or the new one, never a torn file. Tensors are written as raw
/// bytes of their CPU, contiguous form, so values (NaN and signed zeros included) come back bit
/// for bit.
void save_checkpoint(const std::filesystem::path& file, const Checkpoint& checkpoint);

/// Reads a checkpoint; a file that is not one, or is truncated, is Error(Data) naming the file.
Checkpoint load_checkpoint(const std::filesystem::path& file);

/// The file format in memory (also what ranks of an MPI job send each other, cluster.hpp), and
/// back; `source` names the bytes in errors.
std::string encode_checkpoint(const Checkpoint& checkpoint);
Checkpoint decode_checkpoint(const std::string& content, const std::string& source);

}  // namespace bulwark

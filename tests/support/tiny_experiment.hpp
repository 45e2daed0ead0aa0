#pragma once

// A small synthetic experiment that trains in about a second: used wherever a test needs a real
// run of the engine or of the host binary.
#include <string>

namespace bulwark::test {

inline std::string tiny_experiment(const std::string& extra = "") {
  return R"(
[experiment]
name = "tiny"
seed = 7
rounds = 3
threads = 2

[data]
plugin = "synthetic"
train_size = 600
test_size = 200

[data.partition]
scheme = "iid"

[model]
arch = "mlp"
hidden = [16]

[clients]
count = 6
per_round = 4
local_epochs = 1
batch_size = 16
lr = 0.1
momentum = 0.5
)" + extra;
}

}  // namespace bulwark::test

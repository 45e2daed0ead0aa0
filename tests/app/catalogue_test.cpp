// The bad-input catalogue (docs/reliability.md): each entry is a mistake a researcher makes, run
// through the real host binary. Every one must end with the promised exit code, a message that
// names the culprit (the key, the file, the flag), no LibTorch backtrace or crash, and no
// temporary file left behind. New mistakes found in the field are added here as one line each.
#include <torch/torch.h>

#include <doctest/doctest.h>

#include <cmath>

#include "npy.hpp"
#include "test_support.hpp"
#include "tiny_experiment.hpp"

using namespace bulwark;
namespace fs = std::filesystem;

namespace {

/// One mistake: the arguments after `bulwark` ({dir} is the case's scratch folder, {tiny} the
/// tiny experiment in it), what the message must contain, and the exit code.
struct BadInput {
  std::vector<std::string> args;
  std::string needle;
  int exit_code = 2;
};

std::string expand(std::string text, const fs::path& dir) {
  for (const auto& [from, to] : {std::pair<std::string, std::string>{"{tiny}", (dir / "tiny.toml").string()},
                                 {"{dir}", dir.string()}}) {
    for (auto at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
      text.replace(at, from.size(), to);
    }
  }
  return text;
}

// What only a crash or an unhandled library error prints.
constexpr const char* kCrashMarks[] = {"Exception raised from", "frame #", "terminate called", "what():",
                                       "Segmentation fault", "Aborted", "core dumped", "AddressSanitizer",
                                       "runtime error:", "std::bad_alloc", "Assertion"};

void check_catalogue(const fs::path& dir, const std::vector<BadInput>& cases) {
  test::write_file(dir / "tiny.toml", test::tiny_experiment());
  for (const auto& bad : cases) {
    std::vector<std::string> args;
    for (const auto& arg : bad.args) args.push_back(expand(arg, dir));
    const auto result = test::run_bulwark(args);
    std::string command = "bulwark";
    for (const auto& arg : args) command += " " + arg;
    INFO(command, "\n", result.output);
    CHECK(result.exit_code == bad.exit_code);
    CHECK(result.output.find(expand(bad.needle, dir)) != std::string::npos);
    for (const auto* mark : kCrashMarks) CHECK(result.output.find(mark) == std::string::npos);
    CHECK(std::count(result.output.begin(), result.output.end(), '\n') <= 3);
  }
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    INFO(entry.path().string());
    CHECK(entry.path().filename().string().find(".tmp.") == std::string::npos);
  }
}

BadInput set(std::vector<std::string> assignments, std::string needle, int exit_code = 2) {
  std::vector<std::string> args = {"run", "{tiny}", "--out", "{dir}/out", "-q"};
  for (auto& assignment : assignments) {
    args.push_back("--set");
    args.push_back(std::move(assignment));
  }
  return {std::move(args), std::move(needle), exit_code};
}

/// An IDX file: magic, big-endian dimensions, then `payload` bytes.
std::string idx(std::uint32_t magic, const std::vector<std::uint32_t>& dims, std::size_t payload) {
  std::string bytes;
  auto put = [&](std::uint32_t word) {
    for (int shift = 24; shift >= 0; shift -= 8) bytes.push_back(static_cast<char>(word >> shift));
  };
  put(magic);
  for (auto d : dims) put(d);
  bytes.append(payload, '\1');
  return bytes;
}

/// A good 4-file IDX folder of `n` 4x4 training and test images.
void write_idx_folder(const fs::path& dir, std::uint32_t n = 12) {
  test::write_file(dir / "train-images-idx3-ubyte", idx(0x803, {n, 4, 4}, n * 16));
  test::write_file(dir / "train-labels-idx1-ubyte", idx(0x801, {n}, n));
  test::write_file(dir / "t10k-images-idx3-ubyte", idx(0x803, {n, 4, 4}, n * 16));
  test::write_file(dir / "t10k-labels-idx1-ubyte", idx(0x801, {n}, n));
}

/// The tiny experiment on dataset plugin `plugin` (written as {dir}/<plugin>.toml) with its
/// options and `assignments` set: real-format files the test wrote stand in for real data.
BadInput on_data(const std::string& plugin, std::vector<std::string> assignments, std::string needle) {
  std::vector<std::string> args = {"run", "{dir}/" + plugin + ".toml", "--out", "{dir}/out", "-q"};
  for (auto& assignment : assignments) {
    args.push_back("--set");
    args.push_back("data." + assignment);
  }
  return {std::move(args), std::move(needle)};
}

void write_data_experiment(const fs::path& dir, const std::string& plugin) {
  auto text = test::tiny_experiment();
  const auto begin = text.find("[data]"), end = text.find("[data.partition]");
  text.replace(begin, end - begin, "[data]\nplugin = \"" + plugin + "\"\n\n");
  text.replace(text.find("count = 6"), 9, "count = 2");
  text.replace(text.find("per_round = 4"), 13, "per_round = 2");
  test::write_file(dir / (plugin + ".toml"), text);
}

}  // namespace

TEST_CASE("catalogue: experiment keys with impossible, non-finite or overflowing values name the key") {
  check_catalogue(test::scratch_dir("catalogue_keys"), {
      set({"clients.count=100000000000"}, "option 'count' for [clients] must be in [1, 100000000]"),
      set({"clients.count=9223372036854775807"}, "option 'count' for [clients]"),
      set({"data.train_size=1000000000000"}, "train_size"),
      set({"data.train_size=1e12"}, "option 'train_size' for dataset 'synthetic' must be an integer"),
      set({"data.train_size=3"}, "count = 6 exceeds the 3 training examples"),
      set({"clients.lr=inf"}, "option 'lr' for [clients] must be a finite number"),
      set({"clients.lr=1e308"}, "option 'lr' for [clients] must be a finite number"),
      set({"clients.lr=nan"}, "option 'lr' for [clients] must be a finite number"),
      set({"clients.lr=-1"}, "option 'lr' for [clients] must be in [0, inf], found -1"),
      set({"clients.momentum=nan"}, "option 'momentum' for [clients]"),
      set({"clients.batch_size=0"}, "option 'batch_size' for [clients]"),
      set({"clients.local_epochs=0"}, "clients train for nothing"),
      set({"clients.per_round=7"}, "per_round = 7 exceeds count = 6"),
      set({"clients.batchsize=3"}, "did you mean 'batch_size'?"),
      set({"experiment.rounds=0"}, "option 'rounds' for [experiment]"),
      set({"experiment.rounds=3.5"}, "must be an integer, found the float 3.5"),
      set({"experiment.rounds=\"3\""}, "must be an integer, found the string \"3\""),
      set({"experiment.threads=-3"}, "option 'threads' for [experiment]"),
      set({"experiment.seed=-1"}, "option 'seed' for [experiment]"),
      set({"experiment.checkpoint_every=-1"}, "option 'checkpoint_every' for [experiment]"),
      set({"data.partition.alpha=-1"}, "option 'alpha' for [data.partition]"),
      set({"data.partition.scheme=\"nope\""}, "scheme"),
      set({"model.arch=\"resnet99\""}, "must be one of softmax, mlp, cnn, lenet, layers, lenet5_gn, cnn4, cnn2, vgg11_gn, resnet18, torchscript"),
      set({"model.hidden=[0]"}, "option 'hidden' for [model]"),
      set({"model.arch=\"torchscript\""}, "needs path = \"model.pt\""),
      set({"model.arch=\"torchscript\"", "model.path=\"{tiny}\""}, "cannot load TorchScript model"),
      set({"bogus.key=1"}, "unknown section [bogus]"),
      set({"experiment"}, "--set experiment: error: expected key=value"),
      set({"=1"}, "expected key=value"),
      set({"attack.3.byzantine=1"}, "attack.3.byzantine"),
      set({"attack.byzantine=1"}, "--set attack.plugin=NAME"),
      set({"audit.canary_clients=4"}, "canary_clients = 4 is more than half of the 6 clients"),
      set({"audit.shadow_models=1"}, "shadow_models = 1 gives no spread to fit"),
      set({"audit.membership_examples=500"}, "membership_examples = 500 exceeds the 200 test examples"),
      set({"audit.canaries=1000"}, "lower them"),
      set({"audit.canaries=100", "audit.membership_examples=10", "audit.guesses=[300]"}, "guesses lists 300"),
      set({"audit.confidence=1.5"}, "option 'confidence' for [audit]"),
      set({"audit.canary=3"}, "unknown option 'canary' for [audit]; valid options: membership_examples"),
  });
}

TEST_CASE("catalogue: plugins that do not exist, do not load, or get options they refuse") {
  auto dir = test::scratch_dir("catalogue_plugins");
  test::write_file(dir / "not-a-library.so", "plain text, not ELF\n");
  check_catalogue(dir, {
      set({"aggregator.plugin=\"krumm\""}, "unknown aggregator plugin 'krumm'"),
      set({"aggregator.plugin=\"{dir}/not-a-library.so\""}, "not-a-library.so"),
      set({"aggregator.plugin=\"{dir}/missing.so\""}, "missing.so"),
      set({"aggregator.plugin=\"fedavg\"", "aggregator.weigted=true"}, "did you mean 'weighted'?"),
      set({"aggregator.plugin=\"krum\"", "aggregator.f=5"}, "krum: needs n > 2f + 2 updates"),
      set({"aggregator.plugin=\"trimmed_mean\"", "aggregator.beta=0.7"}, "beta"),
      set({"aggregator.plugin=\"multi_krum\"", "aggregator.f=\"two\""}, "option 'f' for aggregator 'multi_krum'"),
      set({"attack.plugin=\"nope\""}, "unknown attack plugin 'nope'"),
      set({"attack.plugin=\"sign_flip\"", "attack.byzantine=9"}, "asks for 9 malicious clients"),
      set({"attack.plugin=\"sign_flip\"", "attack.byzantine_fraction=1.5"}, "byzantine_fraction"),
      set({"privacy.plugin=\"dp_sgd\"", "privacy.noise_multiplier=-1"}, "option 'noise_multiplier' for privacy"),
      set({"privacy.plugin=\"dp_sgd\"", "privacy.clip=nan"}, "option 'clip' for privacy 'dp_sgd'"),
      set({"privacy.plugin=\"dp_sgd\"", "privacy.clipping=\"sideways\""}, "clipping"),
      set({"data.plugin=\"idx\"", "data.test_size=10"}, "unknown option 'test_size' for dataset 'idx'"),
      {{"describe", "fedavgg"}, "did you mean 'fedavg'?"},
  });
}

TEST_CASE("catalogue: experiment files that are missing, folders, empty, binary or malformed") {
  auto dir = test::scratch_dir("catalogue_files");
  test::write_file(dir / "empty.toml", "");
  test::write_file(dir / "broken.toml", "[experiment]\nname = \"x\"\nrounds = [1,\n");
  test::write_file(dir / "twice.toml", "[experiment]\nrounds = 2\nrounds = 3\n");
  test::write_file(dir / "typed.toml", test::tiny_experiment("\n[server]\nlr = \"fast\"\n"));
  test::write_file(dir / "sweep.toml", test::tiny_experiment("\n[sweep]\n\"clients.lrr\" = [0.1, 0.2]\n"));
  std::string binary(3000, '\0');
  for (std::size_t i = 0; i < binary.size(); ++i) binary[i] = static_cast<char>((i * 7919 + 13) % 256);
  test::write_file(dir / "binary.toml", binary);
  check_catalogue(dir, {
      {{"run", "{dir}/missing.toml"}, "{dir}/missing.toml"},
      {{"run", "{dir}"}, "is a folder, not an experiment file"},
      {{"run", "{dir}/empty.toml", "--out", "{dir}/out"}, "missing section [data]"},
      {{"run", "{dir}/binary.toml", "--out", "{dir}/out"}, "binary.toml:1:"},
      {{"run", "{dir}/broken.toml"}, "broken.toml:3:14: error: malformed TOML"},
      {{"run", "{dir}/twice.toml"}, "twice.toml:3:"},
      {{"validate", "{dir}/typed.toml"}, "typed.toml:"},
      {{"run", "{dir}/sweep.toml", "--out", "{dir}/out", "-q"}, "clients.lrr"},
      {{"validate"}, "file is required"},
      {{"frobnicate"}, "unknown command 'frobnicate'"},
      {{"rn", "{tiny}"}, "did you mean 'run'?"},
      {{"run", "{tiny}", "--threads", "-1"}, "--threads"},
      {{"run", "{tiny}", "--jobs", "0"}, "--jobs"},
  });
}

TEST_CASE("catalogue: damaged dataset files are named with what is wrong") {
  auto dir = test::scratch_dir("catalogue_data");
  write_idx_folder(dir / "idx_truncated");
  test::write_file(dir / "idx_truncated" / "train-images-idx3-ubyte", idx(0x803, {12, 4, 4}, 100));
  write_idx_folder(dir / "idx_huge");
  test::write_file(dir / "idx_huge" / "train-images-idx3-ubyte", idx(0x803, {0xFFFFFFF0u, 28, 28}, 64));
  write_idx_folder(dir / "idx_magic");
  test::write_file(dir / "idx_magic" / "train-labels-idx1-ubyte", idx(0x802, {12}, 12));
  write_idx_folder(dir / "idx_counts");
  test::write_file(dir / "idx_counts" / "train-labels-idx1-ubyte", idx(0x801, {11}, 11));
  write_idx_folder(dir / "idx_label");
  auto labels = idx(0x801, {12}, 12);
  labels.back() = 42;
  test::write_file(dir / "idx_label" / "train-labels-idx1-ubyte", labels);
  write_idx_folder(dir / "idx_extra");
  test::write_file(dir / "idx_extra" / "t10k-labels-idx1-ubyte", idx(0x801, {12}, 13));

  test::write_file(dir / "cifar" / "data_batch_1.bin", std::string(2 * (1 + 3072) - 5, '\1'));  // 2 records, cut
  test::write_file(dir / "lfw" / "Ann" / "Ann_0001.jpg", "GIF89a, not a JPEG");
  test::write_file(dir / "lfw" / "Ben" / "Ben_0001.jpg", "");

  const std::string header = "a,b,label\n";
  test::write_file(dir / "abc.csv", header + "1,2,x\n3,abc,y\n5,6,x\n7,8,y\n");
  test::write_file(dir / "nan.csv", header + "1,2,x\n3,nan,y\n5,6,x\n7,8,y\n");
  test::write_file(dir / "huge.csv", header + "1,2,x\n3,1e999,y\n5,6,x\n7,8,y\n");
  test::write_file(dir / "ragged.csv", header + "1,2,x\n3,4\n5,6,x\n7,8,y\n");
  test::write_file(dir / "header_only.csv", header);
  for (const auto* plugin : {"idx", "cifar", "lfw", "csv"}) write_data_experiment(dir, plugin);
  auto idx_run = [](const std::string& folder, std::string needle) {
    return on_data("idx", {"path=\"{dir}/" + folder + "\""}, std::move(needle));
  };
  auto csv = [](const std::string& file, std::string needle, std::vector<std::string> more = {}) {
    more.insert(more.begin(), "path=\"{dir}/" + file + "\"");
    return on_data("csv", std::move(more), std::move(needle));
  };
  check_catalogue(dir, {
      idx_run("idx_missing", "idx_missing"),
      idx_run("idx_truncated", "train-images-idx3-ubyte"),
      idx_run("idx_huge", "train-images-idx3-ubyte"),
      idx_run("idx_magic", "train-labels-idx1-ubyte"),
      idx_run("idx_counts", "train-labels-idx1-ubyte"),
      idx_run("idx_label", "42"),
      idx_run("idx_extra", "t10k-labels-idx1-ubyte"),
      on_data("cifar", {"path=\"{dir}/cifar\""}, "data_batch_1.bin"),
      on_data("lfw", {"path=\"{dir}/lfw\"", "min_images=1"}, "Ann_0001.jpg: not a readable JPEG"),
      on_data("lfw", {"path=\"{dir}/lfw\""}, "people with at least min_images = 20 images: 0"),
      csv("abc.csv", "abc.csv:3:3: column 'b' expected a finite number, found 'abc'"),
      csv("nan.csv", "nan.csv:3:3"),
      csv("huge.csv", "huge.csv:3:3"),
      csv("ragged.csv", "ragged.csv:3"),
      csv("header_only.csv", "header_only.csv"),
      csv("abc.csv", "label", {"categorical=\"label\""}),
      csv("abc.csv", "'c'", {"categorical=\"c\""}),
      csv("abc.csv", "'nope'", {"label_column=\"nope\""}),
  });
}

TEST_CASE("catalogue: output folders and checkpoints are never overwritten or trusted blindly") {
  auto dir = test::scratch_dir("catalogue_outputs");
  test::write_file(dir / "tiny.toml", test::tiny_experiment());
  test::write_file(dir / "a-file", "not a folder\n");
  auto finished = test::run_bulwark({"run", (dir / "tiny.toml").string(), "--out", (dir / "finished").string(), "-q"});
  REQUIRE(finished.exit_code == 0);
  const auto summary = test::read_file(dir / "finished" / "summary.json");
  fs::create_directories(dir / "damaged");
  test::write_file(dir / "damaged" / "checkpoint.bin", "BULWARK? truncated");
  check_catalogue(dir, {
      {{"run", "{tiny}", "--out", "{dir}/a-file"}, "a-file: is a file, not a folder"},
      {{"run", "{tiny}", "--out", "{dir}/a-file/below"}, "a-file: is a file, not a folder"},
      {{"run", "{tiny}", "--out", "{dir}/finished"}, "holds a finished run"},
      {{"run", "{tiny}", "--out", "{dir}/finished", "--set", "experiment.rounds=5"}, "holds a finished run"},
      {{"run", "{tiny}", "--out", "{dir}/damaged", "--resume"}, "damaged/checkpoint.bin"},
  });
  CHECK(test::read_file(dir / "finished" / "summary.json") == summary);
  CHECK(test::read_file(dir / "finished" / "config.toml").find("rounds = 3") != std::string::npos);

  // Not an error, but not silent either: --resume on a folder without a checkpoint.
  auto fresh = test::run_bulwark({"run", (dir / "tiny.toml").string(), "--out", (dir / "fresh").string(), "--resume"});
  INFO(fresh.output);
  CHECK(fresh.exit_code == 0);
  CHECK(fresh.output.find("holds no checkpoint, so the run starts at round 1") != std::string::npos);
}

TEST_CASE("catalogue: report, privacy and aggregate refuse what they cannot read or compute") {
  auto dir = test::scratch_dir("catalogue_commands");
  write_npy(dir / "u.npy", torch::arange(12, torch::kFloat).reshape({4, 3}));
  write_npy(dir / "empty.npy", torch::zeros({0, 5}));
  write_npy(dir / "vector.npy", torch::zeros({5}));
  write_npy(dir / "zero_weights.npy", torch::zeros({4}, torch::kDouble));
  write_npy(dir / "nan_weights.npy", torch::tensor({1.0, std::nan(""), 1.0, 1.0}, torch::kDouble));
  write_npy(dir / "three_weights.npy", torch::ones({3}, torch::kDouble));
  test::write_file(dir / "text.npy", "not numpy\n");
  fs::create_directories(dir / "not-a-run");
  auto aggregate = [](std::vector<std::string> more, std::string needle) {
    std::vector<std::string> args = {"aggregate", "--plugin", "fedavg", "--out", "{dir}/g.npy"};
    args.insert(args.end(), more.begin(), more.end());
    return BadInput{std::move(args), std::move(needle)};
  };
  check_catalogue(dir, {
      {{"report", "{dir}/missing"}, "{dir}/missing is neither a study folder"},
      {{"report", "{dir}/not-a-run"}, "not-a-run is neither a study folder"},
      {{"privacy", "-q", "0.01", "-T", "100"}, "give --noise-multiplier"},
      {{"privacy", "-q", "0.01", "-s", "1", "-T", "100", "--delta", "2"}, "--delta = 2 must be in (0, 1)"},
      {{"privacy", "-q", "0.01", "-s", "-1", "-T", "100"}, "--noise-multiplier: must be >= 0, found -1"},
      {{"privacy", "-q", "0.01", "-s", "1", "-T", "-5"}, "--steps: must be >= 0, found -5"},
      {{"privacy", "-q", "2", "-s", "1", "-T", "5"}, "--sampling-rate"},
      {{"privacy", "-q", "0.01", "-s", "nan", "-T", "5"}, "--noise-multiplier: must be >= 0, found nan"},
      {{"privacy", "-q", "0.01", "-s", "1", "-T", "5", "--orders", "0.5"}, "RDP order 0.5 is not > 1"},
      {{"privacy", "-q", "1", "-T", "1000", "--target-epsilon", "0.001"}, "cannot be reached"},
      {{"privacy", "-q", "0.01", "-T", "5", "--target-epsilon", "inf"}, "--target-epsilon: must be a finite number > 0"},
      aggregate({"--updates", "{dir}/missing.npy"}, "missing.npy"),
      aggregate({"--updates", "{dir}/text.npy"}, "text.npy"),
      aggregate({"--updates", "{dir}/empty.npy"}, "empty.npy: holds 0 x 5 updates"),
      aggregate({"--updates", "{dir}/vector.npy"}, "vector.npy: expected a 2-D array"),
      aggregate({"--updates", "{dir}/u.npy", "--weights", "{dir}/zero_weights.npy"}, "zero_weights.npy: weights must"),
      aggregate({"--updates", "{dir}/u.npy", "--weights", "{dir}/nan_weights.npy"}, "nan_weights.npy: weights must"),
      aggregate({"--updates", "{dir}/u.npy", "--weights", "{dir}/three_weights.npy"}, "three_weights.npy: expected 4"),
      aggregate({"--updates", "{dir}/u.npy", "--set", "weighted=maybe"}, "weighted"),
      aggregate({"--updates", "{dir}/u.npy", "--byzantine", "-1"}, "--byzantine: must be >= 0"),
      {{"aggregate", "--plugin", "krum", "--updates", "{dir}/u.npy", "--out", "{dir}/g.npy", "--set", "f=1"},
       "krum: needs n > 2f + 2"},
      {{"aggregate", "--plugin", "nope", "--updates", "{dir}/u.npy", "--out", "{dir}/g.npy"}, "unknown aggregator"},
  });
  CHECK_FALSE(fs::exists(dir / "g.npy"));
}

// Fuzzes the experiment decoder: the input is an experiment file, read as `bulwark run` reads it
// (TOML parse, every section's schema, the cross-key checks, the output folder), or as a study
// when it has a [sweep].
#include "config.hpp"
#include "experiment.hpp"
#include "fuzz_support.hpp"
#include "study.hpp"

BULWARK_FUZZ_TARGET(experiment) {
  using namespace bulwark;
  const auto file = (fuzz::scratch() / "experiment.toml").string();
  fuzz::write_bytes(file, data, size);
  fuzz::expect_clean_error([&] {
    if (has_sweep(parse_toml_file(file))) {
      const auto study = load_study(file);
      study_output_dir(study, {});
    } else {
      default_output_dir(load_experiment(file));
    }
  });
  return 0;
}

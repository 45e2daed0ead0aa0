#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <ATen/Parallel.h>

int main(int argc, char** argv) {
  // Same threading as the host binary: parallelism comes from client workers, not intra-op.
  at::set_num_threads(1);
  doctest::Context context(argc, argv);
  return context.run();
}

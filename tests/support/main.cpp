#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include "engine.hpp"

int main(int argc, char** argv) {
  // Same threading as the host binary.
  bulwark::init_runtime();
  doctest::Context context(argc, argv);
  return context.run();
}

#pragma once

// Peak memory of a bench configuration, measured in a child process (the bench re-executed with
// its own arguments) so that peaks of different configurations never mix. The child prints
// "peak_kib N"; the parent reads it.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

namespace bulwark::bench {

/// A field of /proc/self/status in KiB ("VmHWM", the peak resident set; "VmRSS", the current), or -1.
inline long status_kib(const std::string& field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::atol(line.c_str() + field.size() + 1);
  }
  return -1;
}

/// Runs `command` (a child that prints "peak_kib N") and returns N, or -1 when it failed.
inline long child_peak_kib(const std::string& command) {
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) return -1;
  long kib = -1;
  char line[256];
  while (std::fgets(line, sizeof line, pipe)) {
    if (std::sscanf(line, "peak_kib %ld", &kib) == 1) break;
  }
  return ::pclose(pipe) == 0 ? kib : -1;
}

}  // namespace bulwark::bench

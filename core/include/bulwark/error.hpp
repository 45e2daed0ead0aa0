#pragma once

#include <stdexcept>
#include <string>

#include "bulwark/export.hpp"

namespace bulwark {

/// What went wrong, so the host can pick the exit code and the wording.
enum class ErrorKind {
  Config,   ///< experiment file, command line or option values (exit code 2)
  Plugin,   ///< a plugin could not be found, loaded or matched (exit code 2)
  Data,     ///< a dataset or input file is malformed (exit code 2)
  Runtime,  ///< a failure while running (exit code 1)
};

/// The one exception type library code throws. The message is complete and user-facing, in the
/// compiler format "file:line:col: what; expected X, found Y; what to do". Library code never
/// prints; `bulwark` turns an Error into one line on stderr.
class BULWARK_API Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message);
  ~Error() override;
  ErrorKind kind() const noexcept { return kind_; }

 private:
  ErrorKind kind_;
};

}  // namespace bulwark

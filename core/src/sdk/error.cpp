#include "bulwark/error.hpp"

namespace bulwark {

Error::Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}

// Out of line: anchors the typeinfo in libbulwark_sdk.so, so a catch in the host matches an
// Error thrown from a plugin.
Error::~Error() = default;

}  // namespace bulwark

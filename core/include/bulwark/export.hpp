#pragma once

/// BULWARK_API marks the SDK's exported classes and functions (default visibility). Plugins are
/// built with hidden visibility, so everything else they define stays inside their library.
#define BULWARK_API __attribute__((visibility("default")))

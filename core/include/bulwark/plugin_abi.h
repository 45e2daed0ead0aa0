/* Bulwark plugin handshake: the only thing the host reads before any C++ object crosses.
 *
 * Every plugin library exports exactly one symbol,
 *     extern "C" const bulwark_plugin_info* bulwark_plugin_info(void);
 * returning a constant-initialised struct. The host checks, in order: the symbol exists,
 * abi_version, struct_size, kind and name, then the LibTorch version, compiler and C++11 ABI flag.
 * Only then does it call create().
 *
 * Plain C on purpose: the layout is fixed by the C ABI, reading it runs no plugin code, and the
 * struct grows OBS-style (new fields at the end, struct_size tells the host what it may read).
 * Bump BULWARK_PLUGIN_ABI_VERSION on any change that breaks an already-built plugin: a field moved
 * or removed, an interface class changed (virtual added, removed or reordered, a hook signature
 * changed), or an SDK value type that crosses the boundary changed layout. See
 * docs/writing-plugins.md.
 */
#pragma once

#include <stdint.h>

#define BULWARK_PLUGIN_ABI_VERSION 3u
#define BULWARK_SDK_VERSION "0.1.0"
#define BULWARK_PLUGIN_ENTRY "bulwark_plugin_info"

#ifdef __cplusplus
extern "C" {
#endif

/* What a plugin is. The host never uses RTTI across the boundary: this enum decides the cast. */
typedef enum bulwark_kind {
  BULWARK_KIND_DATASET = 1,
  BULWARK_KIND_AGGREGATOR = 2,
  BULWARK_KIND_ATTACK = 3,
  BULWARK_KIND_PRIVACY = 4
} bulwark_kind;

/* The type of one option value, as written in TOML. */
typedef enum bulwark_opt_type {
  BULWARK_OPT_BOOL = 0,
  BULWARK_OPT_INT = 1,
  BULWARK_OPT_FLOAT = 2,   /* TOML floats and integers both accepted */
  BULWARK_OPT_STRING = 3,
  BULWARK_OPT_LIST = 4     /* array of numbers, e.g. [0.1, 1, 10] */
} bulwark_opt_type;

/* One entry of a plugin's options schema. The host validates a TOML table against it (type,
 * range [min, max] for numbers and list items, choices for strings) and fills in defaults. */
typedef struct bulwark_option_spec {
  const char* name;           /* key in TOML */
  bulwark_opt_type type;
  const char* default_value;  /* TOML literal: "0", "0.5", "true", "\"flat\"", "[1, 2]"; NULL = required */
  double min;                 /* inclusive; -inf for none */
  double max;                 /* inclusive; +inf for none */
  const char* doc;            /* one sentence; shown by `bulwark describe` */
  const char* choices;        /* strings only: "a|b|c" or NULL for any string */
} bulwark_option_spec;

/* No typedef: the exported entry point is called bulwark_plugin_info, so in C++ the type is
 * spelled `struct bulwark_plugin_info` wherever the function is also in scope. */
struct bulwark_plugin_info {
  uint32_t abi_version;                 /* FIRST; never moves. BULWARK_PLUGIN_ABI_VERSION */
  uint32_t struct_size;                 /* sizeof(bulwark_plugin_info) at build time */
  uint32_t kind;                        /* bulwark_kind */
  const char* name;                     /* what TOML names, e.g. "krum" */
  const char* version;                  /* the plugin's own semver */
  const char* summary;                  /* one line for `bulwark plugins` */
  const char* doc;                      /* paragraph + paper citation */
  const char* sdk_version;              /* BULWARK_SDK_VERSION it was built against */
  const char* torch_version;            /* TORCH_VERSION */
  const char* compiler;                 /* e.g. "GCC 12.2.0" */
  int32_t glibcxx_cxx11_abi;            /* _GLIBCXX_USE_CXX11_ABI */
  const bulwark_option_spec* options;   /* schema array */
  uint32_t num_options;
  void* (*create)(const void* options); /* const bulwark::Options* -> the kind's interface pointer */
  void (*destroy)(void* instance);      /* deletes in plugin code */
};

typedef const struct bulwark_plugin_info* (*bulwark_plugin_entry_fn)(void);

#ifdef __cplusplus
}
#endif

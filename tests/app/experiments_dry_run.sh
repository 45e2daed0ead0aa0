#!/usr/bin/env bash
# Every shipped experiment file still parses and names real plugins with valid options: `bulwark
# run --dry-run` on each (it validates without loading data), so a renamed key or option breaks
# this test instead of a user's first run.
set -euo pipefail

: "${BULWARK_BINARY:?}" "${BULWARK_SOURCE_DIR:?}"
count=0
for file in "$BULWARK_SOURCE_DIR"/experiments/*.toml "$BULWARK_SOURCE_DIR"/experiments/seeds/*.toml; do
  if ! output=$("$BULWARK_BINARY" run "$file" --dry-run 2>&1); then
    echo "FAIL: $file does not validate:" >&2
    echo "$output" >&2
    exit 1
  fi
  count=$((count + 1))
done
[ "$count" -gt 0 ] || { echo "FAIL: no experiments/*.toml found" >&2; exit 1; }

# The second runs that two seeds files' headers give, as a --set on the file.
seeds="$BULWARK_SOURCE_DIR/experiments/seeds"
for variant in "diversefl_mlp.toml|attack.plugin=sign_flip" \
               "dp_clipping_lenet.toml|sweep.privacy.noise_multiplier=[1.66, 1.15, 0.79, 0.55, 0.38, 0.26]"; do
  if ! output=$("$BULWARK_BINARY" run "$seeds/${variant%%|*}" --dry-run --set "${variant#*|}" 2>&1); then
    echo "FAIL: ${variant%%|*} with --set '${variant#*|}' does not validate:" >&2
    echo "$output" >&2
    exit 1
  fi
  count=$((count + 1))
done
echo "$count experiment files and variants validate"

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
echo "$count experiment files validate"

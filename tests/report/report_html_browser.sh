#!/usr/bin/env bash
# report.html as a person meets it: a real study through the host binary, then the page loaded by
# headless Chromium (Debian's `chromium`), offline. The rendered DOM must hold the summary and
# worst-case tables, every figure inline as SVG, each cell with its configuration, and nothing may
# be fetched from elsewhere. Exits 77 (CTest: skipped) when Chromium is not installed.
set -euo pipefail

: "${BULWARK_BINARY:?}" "${BULWARK_TEST_TMP_DIR:?}"
browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
  echo "SKIP: chromium is not installed (apt-get install chromium)"
  exit 77
fi
work=$BULWARK_TEST_TMP_DIR/report_html
rm -rf "$work"
mkdir -p "$work"
fail() { echo "FAIL: $*" >&2; exit 1; }

# 2 rules × 2 attacks × 2 seeds: a summary table, a worst-case table, curves and a heatmap.
cat >"$work/study.toml" <<'TOML'
[experiment]
name = "report_html"
rounds = 2

[data]
plugin = "synthetic"
train_size = 600
test_size = 200

[model]
arch = "mlp"
hidden = [16]

[clients]
count = 8
per_round = 8
batch_size = 16
lr = 0.1

[attack]
plugin = "sign_flip"
byzantine_fraction = 0.25

[sweep]
"aggregator.plugin" = ["fedavg", "median"]
"attack.plugin" = ["sign_flip", "gaussian"]
seeds = [1, 2]
TOML
"$BULWARK_BINARY" run "$work/study.toml" --out "$work/out" --threads 2 -q
page=$work/out/report.html
[ -f "$page" ] || fail "no report.html"

# Self-contained: no scripts, no stylesheets or images from elsewhere.
! grep -Eiq '<script|<link|<img|src="http|href="https?:' "$page" || fail "report.html refers to outside resources"

# What the browser built from it (no network: a proxy that does not exist).
timeout 120 "$browser" --headless --no-sandbox --disable-gpu --proxy-server=127.0.0.1:9 \
  --dump-dom "file://$page" >"$work/dom.html" 2>"$work/chromium.log" || {
  tail -5 "$work/chromium.log"
  fail "chromium could not render report.html"
}
dom=$work/dom.html
count() { grep -o "$1" "$dom" | wc -l; }
[ "$(count '<table')" -ge 3 ] || fail "expected the summary, worst-case and cell tables, found $(count '<table') tables"
grep -q "Worst case of each aggregator.plugin" "$dom" || fail "the worst-case table is missing"
figures=$(ls "$work/out/figures/"*.svg 2>/dev/null | wc -l)
if command -v gnuplot >/dev/null; then [ "$figures" -ge 2 ] || fail "gnuplot drew $figures figures"; fi
[ "$(count '<svg')" -ge "$figures" ] || fail "$figures figures drawn, $(count '<svg') inline in the page"
[ "$(count '<details')" = 8 ] || fail "expected the configuration of the 8 cells, found $(count '<details')"
for cell in "$work"/out/cells/*; do
  grep -qF "$(basename "$cell")" "$dom" || fail "cell $(basename "$cell") is not listed"
done
grep -q 'href="summary.csv"' "$dom" || fail "no link to summary.csv"
echo "PASS: report.html renders with $(count '<table') tables and $(count '<svg') figures"

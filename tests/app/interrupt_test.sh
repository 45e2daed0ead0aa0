#!/usr/bin/env bash
# Ctrl-C through the real host binary: SIGINT during a run stops it after the round in progress,
# exit code 130, one line that says how to resume, a checkpoint kept although checkpoint_every is
# 0; the resume command it prints finishes the run with the numbers of a run never interrupted.
set -euo pipefail

: "${BULWARK_BINARY:?}" "${BULWARK_SOURCE_DIR:?}" "${BULWARK_TEST_TMP_DIR:?}"
work=$BULWARK_TEST_TMP_DIR/interrupt
rm -rf "$work"
mkdir -p "$work"
fail() { echo "FAIL: $*" >&2; exit 1; }
experiment=$BULWARK_SOURCE_DIR/tests/mpi/experiment.toml
long=(--set experiment.rounds=300 --threads 1 -q)

# A CSV without its time columns.
untimed() {
  awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) keep[i] = ($i !~ /^time_/) }
           { line = ""; for (i = 1; i <= NF; i++) if (keep[i]) line = line $i ","; print line }' "$1"
}

"$BULWARK_BINARY" run "$experiment" --out "$work/whole" "${long[@]}"

"$BULWARK_BINARY" run "$experiment" --out "$work/cut" "${long[@]}" 2>"$work/cut.err" &
run=$!
for _ in $(seq 600); do
  [ "$(wc -l <"$work/cut/metrics.csv" 2>/dev/null || echo 0)" -ge 4 ] && break
  sleep 0.05
done
kill -INT "$run"
status=0
wait "$run" || status=$?
[ "$status" = 130 ] || fail "exit code $status after Ctrl-C, expected 130: $(cat "$work/cut.err")"
grep -q "interrupted after round" "$work/cut.err" || fail "no 'interrupted after round': $(cat "$work/cut.err")"
resume=$(sed -n 's/.*resume with `\(.*\)`$/\1/p' "$work/cut.err")
[[ $resume == *"--resume" ]] || fail "no resume command in: $(cat "$work/cut.err")"
[ -f "$work/cut/checkpoint.bin" ] || fail "no checkpoint kept"
[ ! -f "$work/cut/summary.json" ] || fail "the run finished before the signal (raise experiment.rounds)"

# The printed command, with the build's binary for `bulwark`.
eval "\"$BULWARK_BINARY\" ${resume#bulwark } -q"
[ -f "$work/cut/summary.json" ] || fail "the resumed run did not finish"
cmp -s <(untimed "$work/whole/metrics.csv") <(untimed "$work/cut/metrics.csv") ||
  fail "the resumed run's metrics differ from the uninterrupted run's"
echo "PASS: interrupted, resumed with: $resume"

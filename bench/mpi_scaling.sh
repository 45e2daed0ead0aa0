#!/usr/bin/env bash
# One process with 2 worker threads against 2 MPI ranks with 1 thread each, on this machine, through
# the host binary (docs/distributed.md), for
#   (a) one experiment: the small-batch workload (bench/small_batch.toml: real Fashion-MNIST, 100
#       clients, 10 per round, L = 100, B = 5, the GroupNorm CNN), 8 rounds, a round's clients
#       split over ranks: the whole run's wall time (start-up included) and one round's;
#   (b) a 12-cell study of that workload (3 rules × 4 seeds, 2 rounds, L = 20), cells handed to ranks.
# Prints the wall times and their ratio, and checks that both ways gave the same numbers. Asserts
# nothing about speed.
#
#   BULWARK=build/bin/bulwark bench/mpi_scaling.sh
set -euo pipefail

bulwark=${BULWARK:-build/bin/bulwark}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mpi=(mpirun --oversubscribe)
if [ "$(id -u)" = 0 ]; then mpi+=(--allow-run-as-root); fi

# Wall seconds of a command.
timed() {
  local start end
  start=$(date +%s.%N)
  "$@" >/dev/null
  end=$(date +%s.%N)
  awk -v a="$start" -v b="$end" 'BEGIN { print b - a }'
}

# Metrics without the time columns, for every metrics.csv under $1.
numbers() {
  find "$1" -name metrics.csv | sort | while read -r file; do
    awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) keep[i] = ($i !~ /^time_/) }
             { line = ""; for (i = 1; i <= NF; i++) if (keep[i]) line = line $i ","; print line }' "$file"
  done
}

# Mean time_round of the rounds after the first (warm-up) in $1/metrics.csv.
round_seconds() {
  awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "time_round") c = i; next }
           NR > 2 { total += $c; n++ } END { print total / n }' "$1/metrics.csv"
}

report() {  # name, one-process seconds, two-rank seconds, folders
  printf '%-46s %10.2f %10.2f %8.2fx  %s\n' "$1" "$2" "$3" "$(awk -v a="$2" -v b="$3" 'BEGIN { print a / b }')" \
    "$(cmp -s <(numbers "$4") <(numbers "$5") && echo "same numbers" || echo "NUMBERS DIFFER")"
}

printf '%-46s %10s %10s %9s\n' "workload" "1p×2t (s)" "2r×1t (s)" "speed-up"

rounds=(--set experiment.rounds=8 --set experiment.eval_every=8)
one=$(timed "$bulwark" run "$here/small_batch.toml" --out "$work/one" --threads 2 -q "${rounds[@]}")
two=$(timed "${mpi[@]}" -np 2 "$bulwark" run "$here/small_batch.toml" --out "$work/two" --threads 1 -q "${rounds[@]}")
report "small-batch experiment, 8 rounds: wall time" "$one" "$two" "$work/one" "$work/two"
report "  one round (mean of rounds 2-8)" "$(round_seconds "$work/one")" "$(round_seconds "$work/two")" \
  "$work/one" "$work/two"

study="$work/study.toml"
sed -e 's/^name = "small_batch"/name = "small_batch_study"/' -e 's/^rounds = 3/rounds = 2/' \
  -e 's/^local_iterations = 100/local_iterations = 20/' "$here/small_batch.toml" >"$study"
printf '\n[sweep]\n"aggregator.plugin" = ["fedavg", "median", "trimmed_mean"]\nseeds = [1, 2, 3, 4]\n' >>"$study"
one=$(timed "$bulwark" run "$study" --out "$work/study_one" --jobs 2 --threads 2 -q)
two=$(timed "${mpi[@]}" -np 2 "$bulwark" run "$study" --out "$work/study_two" --threads 1 -q)
report "12-cell study (cells: --jobs 2 vs 2 ranks)" "$one" "$two" "$work/study_one" "$work/study_two"

#!/usr/bin/env python3
"""Bulwark on a GPU against Bulwark on the CPU and the plain PyTorch loop on the same GPU, in one run
(docs/performance.md, "On a GPU"). Needs the host binary built against a CUDA LibTorch and a
python3 with torch (the lent GPU machine has both; scripts/device-check runs this there).

  bench/gpu_compare.py BULWARK_BINARY OUT_DIR

Times are per round of local training and aggregation (time_train + time_attack + time_aggregate
from metrics.csv; the plain loop times the same work), the median over the rounds after the first.
Quickstart is also run to the end on both devices: accuracy and per-round train loss compared.
"""
import csv
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def bulwark(binary, out, name, experiment, sets):
    folder = os.path.join(out, name)
    cmd = [binary, "run", experiment, "--out", folder]
    for s in sets:
        cmd += ["--set", s]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    with open(os.path.join(folder, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    return rows, wall


def round_seconds(rows):
    work = [float(r["time_train"]) + float(r["time_attack"]) + float(r["time_aggregate"]) for r in rows]
    return statistics.median(work[1:]) if len(work) > 1 else work[0]


def plain_loop(per_round, fed_cdp, rounds=3):
    cmd = [sys.executable, os.path.join(HERE, "torch_loop.py"), "--per-round", str(per_round),
           "--rounds", str(rounds)]
    if fed_cdp:
        cmd.append("--fed-cdp")
    text = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return float(text.strip().split("seconds_per_round=")[1])


def main():
    binary, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    lines = []

    def say(text):
        print(text, flush=True)
        lines.append(text)

    quick = os.path.join(ROOT, "experiments", "quickstart.toml")
    gpu_rows, gpu_wall = bulwark(binary, out, "quickstart_cuda", quick, ["experiment.device=\"cuda\""])
    cpu_rows, cpu_wall = bulwark(binary, out, "quickstart_cpu", quick, [])
    worst = max(abs(float(g["train_loss"]) - float(c["train_loss"])) / abs(float(c["train_loss"]))
                for g, c in zip(gpu_rows, cpu_rows))
    say(f"quickstart: test accuracy cuda {float(gpu_rows[-1]['test_accuracy']):.4f}, "
        f"cpu {float(cpu_rows[-1]['test_accuracy']):.4f}; largest relative train-loss difference over "
        f"{len(cpu_rows)} rounds {worst:.2e}")
    say(f"quickstart: seconds per round (whole round, evaluation included) cuda "
        f"{statistics.median(float(r['time_round']) for r in gpu_rows):.3f}, cpu "
        f"{statistics.median(float(r['time_round']) for r in cpu_rows):.3f}; wall cuda {gpu_wall:.1f} s, cpu {cpu_wall:.1f} s")
    again, _ = bulwark(binary, out, "quickstart_cuda_again", quick, ["experiment.device=\"cuda\""])
    identical = all({k: v for k, v in a.items() if not k.startswith("time_")} ==
                    {k: v for k, v in b.items() if not k.startswith("time_")} for a, b in zip(gpu_rows, again))
    say(f"quickstart on cuda run twice: metrics identical = {identical}")

    say("")
    say("| workload | clients/round | Bulwark cuda, one by one | Bulwark cuda, batched | Bulwark cpu | plain PyTorch loop, cuda | loop / Bulwark cuda best |")
    say("|---|---|---|---|---|---|---|")
    for name, fed_cdp in (("small_batch", False), ("small_batch_fed_cdp", True)):
        experiment = os.path.join(HERE, name + ".toml")
        for per_round in (10, 100):
            # Two rounds at 100 clients per round (the second is timed): the plain loop is slow there.
            rounds = 3 if per_round == 10 else 2
            base = [f"clients.per_round={per_round}", f"experiment.rounds={rounds}"]
            one, _ = bulwark(binary, out, f"{name}_{per_round}_cuda_one", experiment,
                             base + ["experiment.device=\"cuda\"", "clients.batching=\"off\""])
            batched, _ = bulwark(binary, out, f"{name}_{per_round}_cuda_batched", experiment,
                                 base + ["experiment.device=\"cuda\"", "clients.batching=\"on\"",
                                         f"clients.batch_clients={per_round}"])
            cpu = round_seconds(bulwark(binary, out, f"{name}_{per_round}_cpu", experiment, base)[0]) \
                if per_round == 10 else float("nan")
            loop = plain_loop(per_round, fed_cdp, rounds)
            best = min(round_seconds(one), round_seconds(batched))
            say(f"| {name} | {per_round} | {round_seconds(one):.3f} s | {round_seconds(batched):.3f} s | "
                f"{cpu:.3f} s | {loop:.3f} s | {loop / best:.1f}x |")
    with open(os.path.join(out, "gpu_compare.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

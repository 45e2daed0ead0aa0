#!/usr/bin/env python3
"""The plain PyTorch loop that Bulwark's GPU path is compared with (docs/performance.md).

The small-batch workload written as a researcher would in a page of PyTorch: the real
Fashion-MNIST on the device once, 100 IID clients, 10 per round, each a copy of the global CNN
(Bulwark's zoo "cnn": conv 16 3x3 -> maxpool 2 -> GroupNorm(4) -> tanh -> conv 32 3x3 -> maxpool 2
-> GroupNorm(4) -> tanh -> fc 64 -> tanh -> fc 32 -> tanh -> fc 10) trained with torch.optim.SGD for
L local steps of batch B, FedAvg of the deltas. --fed-cdp adds Fed-CDP's per-example step
(per-example gradients by torch.func.vmap, each layer clipped to C, N(0, sigma^2 C^2) per example).
Prints `seconds_per_round=<median over the timed rounds>`.
"""
import argparse
import gzip
import statistics
import time

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def cnn(groups=4):
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.MaxPool2d(2), nn.GroupNorm(groups, 16), nn.Tanh(),
        nn.Conv2d(16, 32, 3, padding=1), nn.MaxPool2d(2), nn.GroupNorm(groups, 32), nn.Tanh(),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.Tanh(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--per-round", type=int, default=10)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--fed-cdp", action="store_true")
    parser.add_argument("--clip", type=float, default=4.0)
    parser.add_argument("--sigma", type=float, default=6.0)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    images = torch.tensor(read_idx(f"{args.data}/train-images-idx3-ubyte.gz"), dtype=torch.float32)
    x = (images / 255.0).unsqueeze(1).to(device)
    y = torch.tensor(read_idx(f"{args.data}/train-labels-idx1-ubyte.gz"), dtype=torch.long).to(device)
    shards = torch.randperm(x.shape[0], device=device).chunk(args.clients)

    model = cnn().to(device)
    global_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    loss_fn = nn.CrossEntropyLoss()

    def example_loss(params, xb, yb):
        out = functional_call(model, params, (xb.unsqueeze(0),))
        return loss_fn(out, yb.unsqueeze(0))

    per_example_grads = vmap(grad(example_loss), in_dims=(None, 0, 0))

    times = []
    for _ in range(args.rounds):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        chosen = torch.randperm(args.clients)[:args.per_round].tolist()
        deltas = {k: torch.zeros_like(v) for k, v in global_state.items()}
        for c in chosen:
            model.load_state_dict(global_state)
            optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
            shard = shards[c]
            for _ in range(args.steps):
                idx = shard[torch.randint(len(shard), (args.batch,), device=device)]
                xb, yb = x[idx], y[idx]
                optimizer.zero_grad(set_to_none=True)
                if args.fed_cdp:
                    params = {k: v.detach() for k, v in model.named_parameters()}
                    grads = per_example_grads(params, xb, yb)
                    for (name, p) in model.named_parameters():
                        g = grads[name].flatten(1)
                        g = g * (args.clip / g.norm(dim=1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)
                        g = g + torch.randn_like(g) * args.sigma * args.clip
                        p.grad = g.mean(0).view_as(p)
                else:
                    loss_fn(model(xb), yb).backward()
                optimizer.step()
            for k, v in model.state_dict().items():
                deltas[k] += (v - global_state[k]) / args.per_round
        for k in global_state:
            global_state[k] += deltas[k]
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    print(f"seconds_per_round={statistics.median(times[1:]):.4f}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Per-step overhead of the Python API (regtopk.torch) against the C++ worker, same model.

Both train the same TorchScript CNN (scripted here) on the same Fashion-MNIST .npz data, one
worker, RegTop-k at 1 %, OMP_NUM_THREADS=1, against a local server; the model runs through
LibTorch in both (torch.jit.load in Python), so the difference is the API: gradient
flattening, the pybind11 call, copying the aggregate back. Runs C++, Python, C++, Python and
reports the median step time of each and the ratio (Python / C++), measured in this one run.

Usage: python_overhead.py BIN_DIR PYTHON_DIR [ROUNDS]
C++ step = compute_s + sparsify_s + communicate_s + apply_s from its metrics (everything in its
loop but the metrics line); Python step = wall time of one loop iteration.
"""
import gzip
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

BIN, PYDIR = sys.argv[1], sys.argv[2]
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 300
os.environ["OMP_NUM_THREADS"] = "1"
sys.path.insert(0, PYDIR)
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import regtopk.torch as rt  # noqa: E402

TMP = tempfile.mkdtemp(prefix="regtopk_pybench_")
WARMUP = 30


class Cnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 5, padding=2)
        self.conv2 = nn.Conv2d(16, 32, 5, padding=2)
        self.fc1 = nn.Linear(32 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def data():
    d = "/usr/share/datasets/fashion-mnist"
    with gzip.open(f"{d}/train-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)[:12000]
    with gzip.open(f"{d}/train-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)[:12000].astype(np.int64)
    path = os.path.join(TMP, "train.npz")
    np.savez(path, x=(x.astype(np.float32) / 255.0 - 0.2860) / 0.3530, y=y)
    return path


def server():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = subprocess.Popen([f"{BIN}/regtopk-server", "--host=127.0.0.1", f"--port={port}", "--workers=1",
                          f"--rounds={ROUNDS}", "--algorithm=regtopk", "--density=0.01", "--lr=0.05",
                          "--log-every=0", "--linger-seconds=1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return p, f"127.0.0.1:{port}"


def cpp(model, train):
    srv, address = server()
    metrics = os.path.join(TMP, "cpp.jsonl")
    subprocess.run([f"{BIN}/regtopk-worker", f"--server={address}", "--worker-id=0", f"--model={model}",
                    f"--train-data={train}", "--batch-size=64", "--log-every=0", "--evaluate=no",
                    f"--metrics={metrics}"], check=True)
    srv.wait()
    steps = []
    for line in open(metrics):
        m = json.loads(line)
        if m["round"] >= WARMUP:
            steps.append(m["compute_s"] + m["sparsify_s"] + m["communicate_s"] + m["apply_s"])
    return statistics.median(steps)


def python(model_path, train):
    srv, address = server()
    model = torch.jit.load(model_path)
    d = np.load(train)
    x, y = torch.from_numpy(d["x"]), torch.from_numpy(d["y"])
    opt = rt.DistributedOptimizer(model, server=address, worker_id=0, num_samples=len(x))
    g = torch.Generator().manual_seed(1)
    perm = torch.randperm(len(x), generator=g)
    steps, at = [], 0
    while not opt.finished:
        t0 = time.perf_counter()
        if at + 64 > len(x):
            perm, at = torch.randperm(len(x), generator=g), 0
        idx = perm[at:at + 64]
        at += 64
        opt.zero_grad()
        F.cross_entropy(model(x.index_select(0, idx)), y.index_select(0, idx)).backward()
        opt.step()
        if opt.round > WARMUP:
            steps.append(time.perf_counter() - t0)
    srv.wait()
    return statistics.median(steps)


def main():
    torch.manual_seed(0)
    model = os.path.join(TMP, "cnn.pt")
    torch.jit.script(Cnn()).save(model)
    train = data()
    results = []
    for _ in range(2):
        c, p = cpp(model, train), python(model, train)
        results.append((c, p))
        print(f"C++ worker {c * 1e3:.2f} ms/step, Python API {p * 1e3:.2f} ms/step, "
              f"ratio {p / c:.3f}", flush=True)
    ratios = [p / c for c, p in results]
    print(json.dumps({"rounds": ROUNDS, "cpp_ms": [c * 1e3 for c, _ in results],
                      "python_ms": [p * 1e3 for _, p in results], "ratio": ratios,
                      "goal_met": max(ratios) <= 1.10}))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Train your own PyTorch model in a regtopk job: your model class, your DataLoader, and
regtopk.torch.DistributedOptimizer in place of torch.optim.

Start the server first (it holds the job's config, including the optimizer), then one process
per worker:

    regtopk-server --workers=2 --rounds=500 --algorithm=regtopk --density=0.01 --lr=0.05 &
    python3 examples/train_pytorch.py --server=localhost:50051 --worker-id=0 &
    python3 examples/train_pytorch.py --server=localhost:50051 --worker-id=1

--dataset=fashion-mnist (default) trains the CNN below on Debian's Fashion-MNIST (or your
--train-data/--test-data .npz files with x and y); --dataset=linreg trains the paper's linear
regression on the same numbers as the C++ workers' --dataset=linreg, so both give the same
final parameter digest. The last line on stdout is a JSON summary.
"""
import argparse
import gzip
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import regtopk.torch as rt
from regtopk import _core


class Cnn(nn.Module):
    """Your model: any nn.Module with float32 parameters."""

    def __init__(self, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 5, padding=2)
        self.conv2 = nn.Conv2d(16, 32, 5, padding=2)
        self.fc1 = nn.Linear(32 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class LinReg(nn.Module):
    """The C++ worker's --model=linear: the same parameter names and the same computation."""

    def __init__(self, dim=100):
        super().__init__()
        self.fc = nn.Linear(dim, 1, bias=False)

    def forward(self, x):
        return self.fc(x.reshape(x.size(0), -1)).squeeze(1)


def fashion_mnist(directory, train):
    prefix = "train" if train else "t10k"
    with gzip.open(os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz")) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    with gzip.open(os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz")) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    x = ((x.astype(np.float32) / 255.0) - 0.2860) / 0.3530
    return torch.from_numpy(x), torch.from_numpy(y)


def npz(path):
    d = np.load(path)
    return torch.from_numpy(d["x"]), torch.from_numpy(d["y"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", required=True)
    ap.add_argument("--worker-id", type=int, required=True)
    ap.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "linreg"])
    ap.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--train-data", default="", help="PATH.npz with x and y instead of Fashion-MNIST")
    ap.add_argument("--test-data", default="")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--local-steps", type=int, default=1,
                    help="mini-batches per round: L-1 local SGD steps, then the L-th gradient is sent")
    ap.add_argument("--max-eval-examples", type=int, default=0)
    ap.add_argument("--state-dir", default="")
    ap.add_argument("--save-model", default="", help="torch.save the state_dict here at the end")
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="threads that sparsify each gradient and step the replica")
    for flag in ("tls-ca", "tls-cert", "tls-key", "tls-server-name", "job-secret-file"):
        ap.add_argument(f"--{flag}", default="", help="as regtopk-worker's")
    a = ap.parse_args()
    security = dict(tls_ca=a.tls_ca, tls_cert=a.tls_cert, tls_key=a.tls_key,
                    tls_server_name=a.tls_server_name, job_secret_file=a.job_secret_file)
    torch.manual_seed(a.seed)

    if a.dataset == "linreg":
        model = LinReg()
        job = rt.job_config(model, a.server, a.worker_id, **security)  # the data depends on the job
        features, labels, initial = _core.linreg_data(job["num_workers"], job["seed"])
        with torch.no_grad():
            model.fc.weight.copy_(torch.from_numpy(initial).view(1, -1))
        train = TensorDataset(torch.from_numpy(features[a.worker_id]), torch.from_numpy(labels[a.worker_id]))
        loader = DataLoader(train, batch_size=len(train), shuffle=False)  # full batch, as the paper
        test = None
        loss_fn = lambda out, y: (out - y).pow(2).mean()
    else:
        model = Cnn()
        x, y = npz(a.train_data) if a.train_data else fashion_mnist(a.data_dir, True)
        tx, ty = npz(a.test_data) if a.test_data else fashion_mnist(a.data_dir, False)
        if a.max_eval_examples:
            tx, ty = tx[:a.max_eval_examples], ty[:a.max_eval_examples]
        job = rt.job_config(model, a.server, a.worker_id, **security)
        # This worker's share of the training set: a strided iid split.
        mine = torch.arange(a.worker_id, len(x), job["num_workers"])
        train = TensorDataset(x[mine], y[mine])
        g = torch.Generator().manual_seed(a.seed * 1000 + a.worker_id)
        loader = DataLoader(train, batch_size=a.batch_size, shuffle=True, drop_last=True, generator=g)
        test = (tx, ty)
        loss_fn = F.cross_entropy

    opt = rt.DistributedOptimizer(model, server=a.server, worker_id=a.worker_id,
                                  num_samples=len(train), state_dir=a.state_dir,
                                  threads=a.threads, **security)
    sent = 0
    loss = torch.tensor(float("nan"))
    local = 0
    while not opt.finished:
        for xb, yb in loader:
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            # The authors' loop: L - 1 local steps on this worker's copy, then the L-th
            # mini-batch's gradient is the round's (step() resets the model to the replica).
            local += 1
            if local < a.local_steps:
                opt.local_step()
                continue
            local = 0
            stats = opt.step()
            sent += stats["bytes_pushed"]
            if a.log_every and opt.round % a.log_every == 0:
                print(f"worker {a.worker_id}: round {opt.round}, loss {loss.item():.4f}, "
                      f"sent {sent / 1e6:.2f} MB", file=sys.stderr)
            if opt.finished:
                break

    summary = {"worker": a.worker_id, "rounds": opt.round, "final_loss": loss.item(),
               "param_digest": f"{opt.parameters_digest():016x}", "resyncs": opt.resyncs,
               "bytes_pushed": sent}
    if test is not None:
        model.eval()
        with torch.no_grad():
            out = torch.cat([model(test[0][i:i + 1000]) for i in range(0, len(test[0]), 1000)])
            summary["test_accuracy"] = (out.argmax(1) == test[1]).double().mean().item()
    if a.save_model:
        torch.save(model.state_dict(), a.save_model)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

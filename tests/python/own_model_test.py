#!/usr/bin/env python3
"""The user's own model and data, end to end, as a PyTorch user does it.

A small CNN with BatchNorm is defined here, scripted with python3-torch and trained by two C++
workers on .npz files that this test writes from Fashion-MNIST with NumPy. Then:
  - both workers end with the same parameter digest (replicas identical to the server);
  - worker 0's saved model loads with torch.load + load_state_dict into the same nn.Module and
    evaluates to the accuracy that worker reported;
  - parameters are identical in both workers' saved models, BatchNorm statistics are each
    worker's own (the documented behaviour: buffers stay local);
  - a malformed or mismatched .npz and a TorchScript file that does not load each fail with a
    message that names the file;
  - fine-tuning: the file's weights are where training starts, frozen parameters
    (requires_grad=False) stay out of the flat vector and come back unchanged, and the authors'
    loop (--local-steps) keeps the replicas identical.
Usage: own_model_test.py BIN_DIR
"""
import gzip
import json
import os
import socket
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

BIN = sys.argv[1]
FMNIST = "/usr/share/datasets/fashion-mnist"
TMP = tempfile.mkdtemp(prefix="regtopk_own_model_")


class SmallCnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16 * 7 * 7, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        return self.fc(x.flatten(1))


def read_idx(name, offset):
    with gzip.open(os.path.join(FMNIST, name)) as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def write_data():
    x = read_idx("train-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28)
    y = read_idx("train-labels-idx1-ubyte.gz", 8).astype(np.int64)
    tx = read_idx("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28)
    ty = read_idx("t10k-labels-idx1-ubyte.gz", 8).astype(np.int64)
    norm = lambda a: ((a.astype(np.float32) / 255.0) - 0.2860) / 0.3530
    paths = {k: os.path.join(TMP, k + ".npz") for k in ("train", "test")}
    np.savez(paths["train"], x=norm(x[:12000]), y=y[:12000])
    np.savez_compressed(paths["test"], x=norm(tx[:2000]), y=ty[:2000])
    return paths


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(workers, rounds, extra=()):
    port = free_port()
    server = subprocess.Popen(
        [os.path.join(BIN, "regtopk-server"), f"--port={port}", "--host=127.0.0.1",
         f"--workers={workers}", f"--rounds={rounds}", "--algorithm=regtopk", "--density=0.1",
         "--lr=0.05", "--momentum=0.9", "--log-every=0", "--linger-seconds=5", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return server, f"127.0.0.1:{port}"


def worker(address, w, *flags):
    return subprocess.Popen(
        [os.path.join(BIN, "regtopk-worker"), f"--server={address}", f"--worker-id={w}",
         "--batch-size=64", "--eval-every=0", "--evaluate=yes", "--log-every=0",
         "--reconnect-timeout-seconds=20", *flags],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"})


def final_line(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()][-1]


def evaluate(model, path):
    d = np.load(path)
    model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(d["x"]))
        return (out.argmax(1) == torch.from_numpy(d["y"])).double().mean().item()


def check(cond, what):
    if not cond:
        print("FAIL:", what)
        sys.exit(1)
    print("ok:", what)


def expect_failure(what, flags, needle):
    """A worker with these flags exits non-zero before joining, naming `needle`."""
    p = worker("127.0.0.1:1", 0, *flags)
    _, err = p.communicate(timeout=60)
    check(p.returncode != 0 and needle in err, f"{what}: fails naming {needle!r} ({err.strip()[-200:]!r})")


def main():
    torch.manual_seed(0)
    model_path = os.path.join(TMP, "cnn.pt")
    torch.jit.script(SmallCnn()).save(model_path)
    data = write_data()

    rounds = 150
    server, address = start_server(2, rounds)
    saved = [os.path.join(TMP, f"model_{w}.pt") for w in range(2)]
    metrics = [os.path.join(TMP, f"w{w}.jsonl") for w in range(2)]
    procs = [worker(address, w, f"--model={model_path}", f"--train-data={data['train']}",
                    f"--test-data={data['test']}", f"--save-model={saved[w]}",
                    f"--metrics={metrics[w]}", "--partition=dirichlet:0.5")
             for w in range(2)]
    for w, p in enumerate(procs):
        _, err = p.communicate(timeout=600)
        check(p.returncode == 0, f"worker {w} finished ({err.strip()[-300:]!r})")
    server.wait(timeout=60)
    finals = [final_line(m) for m in metrics]
    check(finals[0]["round"] == rounds - 1 and finals[0]["final"], "the job ran to its last round")
    check(finals[0]["param_digest"] == finals[1]["param_digest"], "both replicas end identical")
    reported = finals[0]["test_accuracy"]
    check(reported > 0.6, f"the CNN learned (test accuracy {reported:.4f})")

    state = [torch.load(p) for p in saved]
    model = SmallCnn()
    model.load_state_dict(state[0])  # strict: every key of the module, no other
    acc = evaluate(model, data["test"])
    check(abs(acc - reported) < 1e-5,
          f"the saved model evaluates in Python to the reported accuracy ({acc:.6f} vs {reported})")
    names = [n for n, _ in SmallCnn().named_parameters()]
    check(all(torch.equal(state[0][n], state[1][n]) for n in names),
          "every parameter is equal in both workers' saved models")
    check(not torch.equal(state[0]["bn1.running_mean"], state[1]["bn1.running_mean"]),
          "BatchNorm statistics are each worker's own (kept local)")

    # A worker SIGKILLed and restarted: with checkpoints, its saved model (parameters and
    # BatchNorm statistics, which travel in the worker's saved state) equals the uninterrupted
    # run's, tensor for tensor.
    def checkpointed_run(tag, kill_at=None):
        srv, addr = start_server(2, 60, ["--checkpoint-dir=" + os.path.join(TMP, tag, "server"),
                                         "--checkpoint-every=10"])
        out = [os.path.join(TMP, f"{tag}_model_{w}.pt") for w in range(2)]
        flags = lambda w: [f"--model={model_path}", f"--train-data={data['train']}",
                           f"--save-model={out[w]}", f"--metrics={os.path.join(TMP, f'{tag}_w{w}.jsonl')}",
                           f"--state-dir={os.path.join(TMP, tag, f'w{w}')}", "--evaluate=no"]
        ps = [worker(addr, w, *flags(w)) for w in range(2)]
        if kill_at is not None:
            metrics0 = os.path.join(TMP, f"{tag}_w0.jsonl")
            import time
            deadline = time.time() + 120
            while time.time() < deadline:
                if os.path.exists(metrics0) and sum(1 for _ in open(metrics0)) >= kill_at:
                    break
                time.sleep(0.05)
            ps[0].kill()
            ps[0].wait()
            ps[0] = worker(addr, 0, *flags(0))
        for w, p in enumerate(ps):
            _, err = p.communicate(timeout=600)
            check(p.returncode == 0, f"{tag}: worker {w} finished ({err.strip()[-200:]!r})")
        srv.wait(timeout=60)
        return torch.load(out[0])
    want = checkpointed_run("straight")
    got = checkpointed_run("killed", kill_at=35)
    check(list(got) == list(want) and all(torch.equal(got[k], want[k]) for k in want),
          "after a SIGKILL and restart, worker 0's saved model (BatchNorm statistics included) "
          "equals the uninterrupted run's")

    # Fine-tuning: a "pretrained" module (weights set here, carried by the TorchScript file)
    # with its first convolution frozen (requires_grad=False), trained with the authors' loop
    # (--local-steps=3). The frozen weights stay out of the flat vector (the pushes' dense size
    # says so), come back unchanged in the saved model, and training starts from the file's
    # weights: they move by far less than the distance to another initialisation.
    torch.manual_seed(1)
    pretrained = SmallCnn()
    pretrained.conv1.weight.requires_grad_(False)
    pretrained.conv1.bias.requires_grad_(False)
    tuned_path = os.path.join(TMP, "pretrained.pt")
    torch.jit.script(pretrained).save(tuned_path)
    trained_dim = sum(p.numel() for p in pretrained.parameters() if p.requires_grad)
    # A small learning rate (the later flag wins), so that the start stays recognisable.
    srv, addr = start_server(2, 20, ["--lr=0.0005"])
    out = [os.path.join(TMP, f"tuned_{w}.pt") for w in range(2)]
    tuned_metrics = [os.path.join(TMP, f"tuned_w{w}.jsonl") for w in range(2)]
    ps = [worker(addr, w, f"--model={tuned_path}", f"--train-data={data['train']}",
                 f"--save-model={out[w]}", f"--metrics={tuned_metrics[w]}", "--evaluate=no",
                 "--local-steps=3") for w in range(2)]
    for w, p in enumerate(ps):
        _, err = p.communicate(timeout=600)
        check(p.returncode == 0, f"fine-tuning: worker {w} finished ({err.strip()[-200:]!r})")
    srv.wait(timeout=60)
    tuned_finals = [final_line(m) for m in tuned_metrics]
    check(tuned_finals[0]["dense_bytes"] == 4 * trained_dim,
          f"frozen parameters stay out of the flat vector ({trained_dim} trained entries)")
    check(tuned_finals[0]["param_digest"] == tuned_finals[1]["param_digest"],
          "fine-tuning with local steps: both replicas end identical")
    tuned = torch.load(out[0])
    start = pretrained.state_dict()
    check(torch.equal(tuned["conv1.weight"], start["conv1.weight"]) and
          torch.equal(tuned["conv1.bias"], start["conv1.bias"]),
          "the frozen convolution is saved, unchanged")
    moved = (tuned["fc.weight"] - start["fc.weight"]).norm().item()
    other = (SmallCnn().state_dict()["fc.weight"] - start["fc.weight"]).norm().item()
    check(0 < moved < other / 5,
          f"training started from the file's weights (moved {moved:.3f}, another init is {other:.3f} away)")

    # Bad input: each fails before joining, naming the file.
    bad = os.path.join(TMP, "bad.npz")
    with open(bad, "wb") as f:
        f.write(b"PK\x03\x04 not really a zip")
    expect_failure("a malformed .npz", [f"--model={model_path}", f"--train-data={bad}"], bad)
    wrong = os.path.join(TMP, "wrong.npz")
    np.savez(wrong, x=np.zeros((10, 1, 28, 28), np.float32), y=np.zeros(9, np.int64))
    expect_failure("x and y of different lengths", [f"--model={model_path}", f"--train-data={wrong}"], wrong)
    other = os.path.join(TMP, "other.npz")
    np.savez(other, x=np.zeros((10, 3, 32, 32), np.float32), y=np.zeros(10, np.int64))
    expect_failure("test data that does not match the training data",
                   [f"--model={model_path}", f"--train-data={data['train']}", f"--test-data={other}"], other)
    f64 = os.path.join(TMP, "f64.npz")
    np.savez(f64, x=np.zeros((10, 1, 28, 28)), y=np.zeros(10, np.int64))
    expect_failure("float64 features", [f"--model={model_path}", f"--train-data={f64}"], "float32")
    junk = os.path.join(TMP, "junk.pt")
    with open(junk, "wb") as f:
        f.write(b"this is not a TorchScript archive")
    expect_failure("a file that is not TorchScript", [f"--model={junk}", f"--train-data={data['train']}"], junk)
    expect_failure("a missing TorchScript file",
                   [f"--model={os.path.join(TMP, 'missing.pt')}", f"--train-data={data['train']}"], "missing.pt")
    print("PASS")


if __name__ == "__main__":
    main()

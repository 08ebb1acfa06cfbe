#!/usr/bin/env python3
"""regtopk.torch, the Python API, against the real server:
  - examples/train_pytorch.py with 2 Python workers on linreg ends with the same parameter
    digest as 2 C++ workers on the same job (same C++ session, same LibTorch computation);
  - the example trains its own CNN with a DataLoader on Fashion-MNIST and learns;
  - regtopk._core.Optimizer follows torch.optim's SGD, Adam and AdamW.
Usage: python_api_test.py BIN_DIR PYTHON_DIR EXAMPLE
"""
import json
import os
import socket
import subprocess
import sys
import tempfile

BIN, PYDIR, EXAMPLE = sys.argv[1:4]
sys.path.insert(0, PYDIR)
import numpy as np  # noqa: E402
import torch  # noqa: E402

from regtopk import _core  # noqa: E402

TMP = tempfile.mkdtemp(prefix="regtopk_python_api_")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": PYDIR}


def check(cond, what):
    if not cond:
        print("FAIL:", what)
        sys.exit(1)
    print("ok:", what)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server(*flags):
    port = free_port()
    p = subprocess.Popen([os.path.join(BIN, "regtopk-server"), "--host=127.0.0.1", f"--port={port}",
                          "--log-every=0", "--linger-seconds=5", *flags],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return p, f"127.0.0.1:{port}"


def run_all(procs):
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        check(p.returncode == 0, f"{p.args[0] if isinstance(p.args, list) else p.args} exited 0 ({err.strip()[-300:]!r})")
        outs.append(out)
    return outs


def linreg_digests(local_steps=1):
    job = ["--workers=2", "--rounds=60", "--algorithm=regtopk", "--density=0.1", "--mu=2",
           "--lr=0.01", "--momentum=0.5", "--digest-every=5"]
    srv, address = server(*job)
    metrics = [os.path.join(TMP, f"cpp{w}_L{local_steps}.jsonl") for w in range(2)]
    cpp = [subprocess.Popen([os.path.join(BIN, "regtopk-worker"), f"--server={address}",
                             f"--worker-id={w}", "--model=linear", "--dataset=linreg",
                             "--log-every=0", f"--metrics={metrics[w]}",
                             f"--local-steps={local_steps}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
           for w in range(2)]
    run_all(cpp)
    srv.wait(timeout=60)
    cpp_digests = [json.loads(open(m).read().strip().splitlines()[-1])["param_digest"] for m in metrics]

    srv, address = server(*job)
    # The Python workers sparsify on 1 and 3 threads, the C++ ones on 1: the same replica.
    py = [subprocess.Popen([sys.executable, EXAMPLE, f"--server={address}", f"--worker-id={w}",
                            "--dataset=linreg", "--log-every=0", f"--local-steps={local_steps}",
                            f"--threads={1 + 2 * w}"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
          for w in range(2)]
    summaries = [json.loads(o.strip().splitlines()[-1]) for o in run_all(py)]
    srv.wait(timeout=60)
    return cpp_digests, summaries


def mixed_job():
    """One C++ and one Python worker in the same job, with worker tokens: the same layout
    digest, one replica; a Python worker without the secret is refused."""
    secret = os.path.join(TMP, "job.secret")
    with open(secret, "w") as f:
        f.write("a secret of more than sixteen bytes\n")
    os.chmod(secret, 0o600)
    srv, address = server("--workers=2", "--rounds=40", "--algorithm=topk", "--density=0.1",
                          "--lr=0.01", "--optimizer=adam", "--digest-every=4",
                          "--checkpoint-dir=" + os.path.join(TMP, "ckpt"), "--checkpoint-every=10",
                          f"--job-secret-file={secret}")
    intruder = subprocess.run([sys.executable, EXAMPLE, f"--server={address}", "--worker-id=1",
                               "--dataset=linreg", "--log-every=0"],
                              capture_output=True, text=True, env=ENV, timeout=120)
    check(intruder.returncode != 0 and "UNAUTHENTICATED" in intruder.stderr,
          "a Python worker without the job secret is refused (UNAUTHENTICATED)")
    metrics = os.path.join(TMP, "mixed_cpp.jsonl")
    state = os.path.join(TMP, "state-cpp")
    cpp = subprocess.Popen([os.path.join(BIN, "regtopk-worker"), f"--server={address}", "--worker-id=0",
                            "--model=linear", "--dataset=linreg", "--log-every=0", f"--metrics={metrics}",
                            f"--state-dir={state}", f"--save-model={os.path.join(TMP, 'linear.pt')}",
                            f"--job-secret-file={secret}"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    py = subprocess.Popen([sys.executable, EXAMPLE, f"--server={address}", "--worker-id=1",
                           "--dataset=linreg", "--log-every=0", f"--state-dir={os.path.join(TMP, 'state-py')}",
                           f"--job-secret-file={secret}"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    cpp_out, cpp_err = cpp.communicate(timeout=600)
    py_out, py_err = py.communicate(timeout=600)
    srv.wait(timeout=60)
    check(cpp.returncode == 0 and py.returncode == 0, f"mixed job ran ({cpp_err[-200:]!r} {py_err[-200:]!r})")
    digest = json.loads(open(metrics).read().strip().splitlines()[-1])["param_digest"]
    summary = json.loads(py_out.strip().splitlines()[-1])
    check(summary["param_digest"] == digest and summary["resyncs"] == 0,
          f"a C++ and a Python worker share one replica under Adam ({digest})")
    saves = [l for l in cpp_err.splitlines() if "saved the model after round" in l]
    check([l.split("round ")[1].split(" ")[0] for l in saves] == ["10", "20", "30", "40"],
          f"--save-model writes at every checkpoint round and the end ({len(saves)} saves)")
    saved = torch.load(os.path.join(TMP, "linear.pt"))
    check(list(saved) == ["fc.weight"] and saved["fc.weight"].shape == (1, 100), "the saved linear model")


def main():
    mixed_job()
    cpp, py = linreg_digests()
    check(cpp[0] == cpp[1], f"the C++ workers agree ({cpp[0]})")
    check([s["param_digest"] for s in py] == cpp,
          f"the Python workers end with the C++ workers' digest ({py[0]['param_digest']})")
    check(all(s["rounds"] == 60 and s["resyncs"] == 0 for s in py), "60 rounds, no resync")
    # The authors' loop (--local-steps=3; DistributedOptimizer.local_step in Python): the same
    # computation in both, and a different one from a single step per round.
    cpp3, py3 = linreg_digests(local_steps=3)
    check([s["param_digest"] for s in py3] == cpp3,
          f"with 3 local steps, Python's local_step() and the C++ worker's loop agree ({cpp3[0]})")
    check(cpp3[0] != cpp[0], "local steps change the training")

    srv, address = server("--workers=2", "--rounds=120", "--algorithm=regtopk", "--density=0.05",
                          "--lr=0.05", "--momentum=0.9")
    py = [subprocess.Popen([sys.executable, EXAMPLE, f"--server={address}", f"--worker-id={w}",
                            "--max-eval-examples=2000", "--log-every=0"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
          for w in range(2)]
    summaries = [json.loads(o.strip().splitlines()[-1]) for o in run_all(py)]
    srv.wait(timeout=60)
    check(summaries[0]["param_digest"] == summaries[1]["param_digest"], "CNN replicas identical")
    check(summaries[0]["test_accuracy"] > 0.6,
          f"the example's CNN learned (accuracy {summaries[0]['test_accuracy']:.3f})")

    # The job's optimizer against torch.optim, 20 steps of random gradients.
    rng = np.random.default_rng(3)
    cases = [("sgd", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
              lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
             ("adam", dict(lr=0.01, weight_decay=0.01),
              lambda ps: torch.optim.Adam(ps, lr=0.01, weight_decay=0.01)),
             ("adamw", dict(lr=0.01, weight_decay=0.1),
              lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1))]
    for kind, kw, make in cases:
        p0 = rng.standard_normal(1000).astype(np.float32)
        ours = p0.copy()
        opt = _core.Optimizer(kind, dim=1000, **kw)
        t = torch.nn.Parameter(torch.from_numpy(p0.copy()))
        ref = make([t])
        for r in range(20):
            g = rng.standard_normal(1000).astype(np.float32)
            opt.step_dense(ours, g, r)
            t.grad = torch.from_numpy(g.copy())
            ref.step()
        err = np.max(np.abs(ours - t.detach().numpy()) / (np.abs(t.detach().numpy()) + 1e-3))
        check(err < 1e-5, f"{kind} follows torch.optim (max relative difference {err:.1e})")
    print("PASS")


if __name__ == "__main__":
    main()

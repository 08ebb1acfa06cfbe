#!/usr/bin/python3
"""regtopk-launch: runs one regtopk job on this machine.

Starts a regtopk-server on 127.0.0.1 (free port) and N regtopk-worker processes, shows one live
progress line, forwards Ctrl-C to every process, stops everything and says which process failed
if one does, and writes metrics, a summary and PNG plots into the output folder.
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=4, help="worker processes (default 4)")
    p.add_argument("--algorithm", default="regtopk", choices=["dense", "topk", "randk", "regtopk"])
    p.add_argument("--density", type=float, default=0.01, help="fraction sent per round")
    p.add_argument("--mu", type=float, default=5.0, help="RegTop-k's mu")
    p.add_argument("--lr", type=float, default=0.1, help="learning rate")
    p.add_argument("--momentum", type=float, default=0.0)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--weighting", default="uniform", choices=["uniform", "samples"])
    p.add_argument("--rounds", type=int, default=1000, help="rounds in the job")
    p.add_argument("--model", default="mlp")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--partition", default="iid", help="iid, dirichlet:ALPHA or quantity[:RATIO]")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--max-eval-examples", type=int, default=0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--output", default="out/job", help="folder for metrics, logs and plots")
    p.add_argument("--bin-dir", default=HERE, help="folder holding regtopk-server and regtopk-worker")
    p.add_argument("--threads-per-worker", type=int, default=0,
                   help="OMP_NUM_THREADS of each worker; 0 = cores / workers, at least 1")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    args = p.parse_args()
    if args.workers < 1:
        p.error("--workers must be >= 1")
    if args.rounds < 1:
        p.error("--rounds must be >= 1 (a launched job must end)")
    return args


class Follower:
    """Reads the JSON lines a worker appends to its metrics file, incrementally."""

    def __init__(self, path):
        self.path, self.offset, self.rows, self.partial = path, 0, [], ""

    def poll(self):
        try:
            with open(self.path) as f:
                f.seek(self.offset)
                data = f.read()
                self.offset = f.tell()
        except FileNotFoundError:
            return
        data = self.partial + data
        lines = data.split("\n")
        self.partial = lines.pop()
        for line in lines:
            if line.strip():
                self.rows.append(json.loads(line))


def fmt_seconds(s):
    s = int(max(0, s))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def main():
    args = parse_args()
    os.makedirs(args.output, exist_ok=True)
    server_bin = os.path.join(args.bin_dir, "regtopk-server")
    worker_bin = os.path.join(args.bin_dir, "regtopk-worker")
    for b in (server_bin, worker_bin):
        if not os.access(b, os.X_OK):
            sys.exit(f"regtopk-launch: {b} not found or not executable (build first, or --bin-dir)")

    server_log = open(os.path.join(args.output, "server.log"), "w")
    server = subprocess.Popen(
        [server_bin, "--host=127.0.0.1", "--port=0", f"--workers={args.workers}",
         f"--algorithm={args.algorithm}", f"--density={args.density}", f"--mu={args.mu}",
         f"--lr={args.lr}", f"--momentum={args.momentum}", f"--weight-decay={args.weight_decay}",
         f"--weighting={args.weighting}", f"--rounds={args.rounds}", f"--seed={args.seed}",
         "--log-every=0", "--linger-seconds=1"],
        stdout=subprocess.PIPE, stderr=server_log, text=True)
    line = server.stdout.readline()
    m = re.search(r"listening on [0-9.]+:(\d+)", line)
    if not m:
        server.wait()
        server_log.close()
        log = open(os.path.join(args.output, "server.log")).read().strip()
        sys.exit(f"regtopk-launch: the server did not start (exit {server.returncode}): {log}")
    address = f"127.0.0.1:{m.group(1)}"
    print(f"regtopk-launch: server on {address}, {args.workers} workers, output in {args.output}", flush=True)

    threads = args.threads_per_worker or max(1, (os.cpu_count() or 1) // args.workers)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    workers, followers, logs = [], [], []
    for w in range(args.workers):
        metrics = os.path.join(args.output, f"worker_{w}.jsonl")
        log = open(os.path.join(args.output, f"worker_{w}.log"), "w")
        logs.append(log)
        workers.append(subprocess.Popen(
            [worker_bin, f"--server={address}", f"--worker-id={w}", f"--model={args.model}",
             f"--dataset={args.dataset}", f"--data-dir={args.data_dir}",
             f"--partition={args.partition}", f"--batch-size={args.batch_size}",
             f"--device={args.device}", f"--eval-every={args.eval_every}",
             f"--max-eval-examples={args.max_eval_examples}", f"--seed={args.seed}",
             f"--metrics={metrics}"],
            stdout=log, stderr=subprocess.STDOUT, env=env))
        followers.append(Follower(metrics))

    procs = [("server", server)] + [(f"worker {w}", p) for w, p in enumerate(workers)]
    interrupted = []
    signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    signal.signal(signal.SIGTERM, lambda *_: interrupted.append(True))

    def stop_all():
        for _, p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.time() + 10
        for _, p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()

    try:
        run_job(args, procs, workers, followers, server, stop_all, interrupted)
    except BaseException:
        # Whatever went wrong in here (a bug, an unreadable metrics file), never leave the
        # server and the workers running behind the user's back.
        stop_all()
        raise


def run_job(args, procs, workers, followers, server, stop_all, interrupted):
    start = time.time()
    failed = None
    last_acc = None
    tty = sys.stdout.isatty()
    last_print = 0.0
    while True:
        time.sleep(0.25)
        for f in followers:
            f.poll()
        if interrupted:
            print("\nregtopk-launch: interrupted; stopping the server and the workers", flush=True)
            stop_all()
            sys.exit(130)
        for name, p in procs:
            code = p.poll()
            if code is not None and code != 0:
                failed = (name, code)
                break
        if failed:
            break
        done = all(p.poll() is not None for p in workers)
        rows0 = followers[0].rows
        if rows0:
            r = rows0[-1]
            accs = [x["test_accuracy"] for x in rows0 if "test_accuracy" in x]
            last_acc = accs[-1] if accs else last_acc
            sent = sum(sum(x["bytes_pushed"] for x in f.rows) for f in followers)
            rnd = r["round"] + 1
            elapsed = time.time() - start
            eta = elapsed / rnd * (args.rounds - rnd)
            metric = f"gap {r['gap']:.3g}" if "gap" in r else f"loss {r['train_loss']:.4f}"
            acc = f" | acc {100 * last_acc:.1f}%" if last_acc is not None else ""
            status = (f"round {rnd}/{args.rounds} | {metric}{acc} | sent {sent / 1e6:.2f} MB"
                      f" | ETA {fmt_seconds(eta)}")
            if tty:
                print("\r" + status.ljust(90), end="", flush=True)
            elif time.time() - last_print > 10 or done:
                print(status, flush=True)
                last_print = time.time()
        if done:
            break
    if tty:
        print()
    if failed:
        name, code = failed
        path = "server.log" if name == "server" else f"worker_{name.split()[1]}.log"
        tail = ""
        try:
            tail = open(os.path.join(args.output, path)).read().strip().splitlines()[-1]
        except (OSError, IndexError):
            pass
        print(f"regtopk-launch: {name} failed with exit code {code}: {tail}", file=sys.stderr)
        print(f"regtopk-launch: full log: {os.path.join(args.output, path)}", file=sys.stderr)
        stop_all()
        sys.exit(1)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        stop_all()
    if server.returncode not in (0, None):
        print(f"regtopk-launch: server exited with {server.returncode}", file=sys.stderr)
        sys.exit(1)
    for f in followers:
        f.poll()
    elapsed = time.time() - start

    rows0 = followers[0].rows
    final = rows0[-1] if rows0 else {}
    sent = sum(sum(x["bytes_pushed"] for x in f.rows) for f in followers)
    received = sum(sum(x["bytes_received"] for x in f.rows) for f in followers)
    dense = sum(sum(x["dense_bytes"] for x in f.rows) for f in followers)
    step = [x for x in rows0]
    mean = lambda key: sum(x[key] for x in step) / max(1, len(step))
    summary = {
        "algorithm": args.algorithm, "density": args.density, "workers": args.workers,
        "rounds": len(rows0), "seconds": elapsed,
        "final_test_accuracy": final.get("test_accuracy"), "final_test_loss": final.get("test_loss"),
        "final_gap": final.get("gap"), "final_train_loss": final.get("train_loss"),
        "bytes_sent": sent, "bytes_received": received, "dense_bytes_equivalent": dense,
        "upstream_compression": dense / sent if sent else None,
        "downstream_compression": dense / received if received else None,
        "worker0_mean_seconds": {k: mean(k) for k in ("compute_s", "sparsify_s", "communicate_s", "wait_s", "apply_s")},
        "param_digests": [f.rows[-1].get("param_digest") if f.rows else None for f in followers],
    }
    with open(os.path.join(args.output, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)

    plots = []
    if not args.no_plots:
        try:
            plots = make_plots(args, followers)
        except Exception as e:  # plotting is a convenience: report and carry on
            print(f"regtopk-launch: no plots ({e})", file=sys.stderr)

    print(f"job finished: {len(rows0)} rounds in {fmt_seconds(elapsed)}, {args.algorithm} at density {args.density}")
    if final.get("test_accuracy") is not None:
        print(f"final test accuracy: {100 * final['test_accuracy']:.2f}% (test loss {final['test_loss']:.4f})")
    if final.get("gap") is not None:
        print(f"final gap ||theta - theta*||^2: {final['gap']:.4g}")
    if sent:
        print(f"sent upstream: {sent / 1e6:.2f} MB vs {dense / 1e6:.1f} MB dense ({dense / sent:.1f}x smaller); "
              f"received: {received / 1e6:.2f} MB ({dense / received:.1f}x smaller than dense)")
    print(f"metrics: {args.output}/worker_*.jsonl, summary: {args.output}/summary.json")
    for p in plots:
        print(f"plot: {p}")


def make_plots(args, followers):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows0 = followers[0].rows
    out = []
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    rounds = [x["round"] + 1 for x in rows0]
    key = "gap" if rows0 and "gap" in rows0[0] else "train_loss"
    ax[0].plot(rounds, [x[key] for x in rows0], lw=0.8)
    ax[0].set_xlabel("round")
    ax[0].set_ylabel("gap ||θ-θ*||²" if key == "gap" else "train loss (worker 0 batch)")
    if key == "gap":
        ax[0].set_yscale("log")
    ev = [x for x in rows0 if "test_accuracy" in x]
    if ev:
        ax[1].plot([x["round"] + 1 for x in ev], [100 * x["test_accuracy"] for x in ev], marker="o")
        ax[1].set_ylabel("test accuracy (%)")
    ax[1].set_xlabel("round")
    fig.suptitle(f"{args.algorithm}, density {args.density}, {args.workers} workers, {args.partition}")
    fig.tight_layout()
    path = os.path.join(args.output, "loss_accuracy.png")
    fig.savefig(path, dpi=110)
    out.append(path)

    fig, ax = plt.subplots(figsize=(6, 4))
    n = min(len(f.rows) for f in followers)
    cum_sent, cum_dense, s, d = [], [], 0, 0
    for i in range(n):
        s += sum(f.rows[i]["bytes_pushed"] for f in followers)
        d += sum(f.rows[i]["dense_bytes"] for f in followers)
        cum_sent.append(s / 1e6)
        cum_dense.append(d / 1e6)
    ax.plot(range(1, n + 1), cum_dense, label="dense equivalent")
    ax.plot(range(1, n + 1), cum_sent, label=f"{args.algorithm} (sent upstream)")
    ax.set_yscale("log")
    ax.set_xlabel("round")
    ax.set_ylabel("MB on the wire, all workers (cumulative)")
    ax.legend()
    fig.tight_layout()
    path = os.path.join(args.output, "bytes.png")
    fig.savefig(path, dpi=110)
    out.append(path)
    return out


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Regenerates the tables and figures of docs/REPRODUCTION.md.

    deploy/reproduce.py toy       # 2 workers, real server + worker processes
    deploy/reproduce.py linreg    # simulator sweeps + S = 0.6 through the real system
    deploy/reproduce.py fmnist    # Fashion-MNIST, 8 workers, 3 skews x 2 densities x 3 methods x 3 seeds
    deploy/reproduce.py downlink  # Fashion-MNIST, the compressed downlink at N = 8 and 16
    deploy/reproduce.py finetune  # a pretrained CNN fine-tuned under label skew, 1 and 40 local steps
    deploy/reproduce.py mechanism # the mask diagnostic: when RegTop-k picks differently from Top-k
    deploy/reproduce.py all

Needs a build (deploy/build.sh). Writes docs/figures/*.png and the raw results as
docs/figures/*.json, and prints every table as Markdown. Every method gets the same seeds,
rounds and learning rate; nothing is tuned per method.
"""
import json
import math
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# REGTOPK_BIN: where the binaries are (default build/bin); a copy keeps long runs safe from rebuilds.
BIN = os.environ.get("REGTOPK_BIN", os.path.join(ROOT, "build", "bin"))
FIG = os.path.join(ROOT, "docs", "figures")
WORK = os.path.join(ROOT, "out", "reproduce")


def plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as p
    return p


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
    return r.stdout


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def launch(name, **flags):
    out = os.path.join(WORK, name)
    cmd = [os.path.join(BIN, "regtopk-launch"), "--no-plots", f"--output={out}", f"--bin-dir={BIN}"]
    cmd += [f"--{k.replace('_', '-')}={v}" for k, v in flags.items()]
    run(cmd)
    return read_jsonl(os.path.join(out, "worker_0.jsonl")), json.load(open(os.path.join(out, "summary.json")))


def sim(name, **flags):
    out = os.path.join(WORK, name + ".jsonl")
    cmd = [os.path.join(BIN, "regtopk-sim"), f"--output={out}"]
    cmd += [f"--{k.replace('_', '-')}={v}" for k, v in flags.items()]
    run(cmd)
    return read_jsonl(out)


def median_tail_log10(rows, key="gap", n=100):
    return statistics.median(math.log10(max(r[key], 1e-300)) for r in rows[-n:])


def save(fig, name):
    path = os.path.join(FIG, name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"\nfigure: docs/figures/{name}")


def plot_methods(ax, dens, runs_of):
    """Dense, Top-k and RegTop-k at density `dens` on `ax`: test accuracy over rounds, the mean
    over seeds with the seeds' range shaded. runs_of(algo, density) gives the runs' results."""
    for algo, d, style in (("dense", 1.0, "k-"), ("topk", dens, "C0-"), ("regtopk", dens, "C3-")):
        runs = runs_of(algo, d)
        ys = [[100 * a for a in r["accuracy"]] for r in runs]
        ax.plot(runs[0]["rounds"], [statistics.mean(v) for v in zip(*ys)], style,
                label={"dense": "dense", "topk": "Top-k", "regtopk": "RegTop-k"}[algo])
        ax.fill_between(runs[0]["rounds"], [min(v) for v in zip(*ys)], [max(v) for v in zip(*ys)],
                        color=style[:-1], alpha=0.15)


def toy():
    p = plt()
    results = {}
    for algo in ("dense", "topk", "regtopk"):
        rows, _ = launch(f"toy_{algo}", workers=2, dataset="toy", model="logistic", algorithm=algo,
                         density=0.5, mu=1, lr=0.9, rounds=150)
        results[algo] = [r["loss"] for r in rows]
    json.dump(results, open(os.path.join(FIG, "toy.json"), "w"))
    print("\n### Toy (2 workers, real system), training loss after round r\n")
    print("| method | r = 1 | r = 99 | r = 100 | r = 101 | r = 150 |")
    print("|---|---|---|---|---|---|")
    label = {"dense": "centralized GD (dense)", "topk": "Top-k", "regtopk": "RegTop-k"}
    for algo, loss in results.items():
        print(f"| {label[algo]} | {loss[0]:.4f} | {loss[98]:.4f} | {loss[99]:.4g} | {loss[100]:.4g} | {loss[149]:.4g} |")
    fig, ax = p.subplots(figsize=(6, 4))
    for algo, loss in results.items():
        ax.plot(range(1, len(loss) + 1), loss, label=label[algo])
    ax.set_yscale("log")
    ax.set_xlabel("round")
    ax.set_ylabel("training loss")
    ax.set_title("toy: 2 workers, k = 1 of 2, lr 0.9, mu 1")
    ax.legend()
    save(fig, "toy_loss.png")


def linreg():
    p = plt()
    densities = [0.2, 0.4, 0.5, 0.55, 0.6, 0.8, 1.0]
    rounds = 2500
    table, curves = {}, {}
    for s in densities:
        for algo in ("topk", "regtopk"):
            rows = sim(f"lr_{algo}_{s}", problem="linreg", algorithm=algo, density=s, rounds=rounds)
            curves[(algo, s)] = [math.log10(max(r["gap"], 1e-300)) for r in rows]
            table[(algo, s)] = median_tail_log10(rows)
    dense = sim("lr_dense", problem="linreg", algorithm="dense", rounds=rounds)
    print("\n### Linear regression (simulator, N = 20, float32, 2500 rounds): median log10 gap over the last 100 rounds\n")
    print("| S | " + " | ".join(str(s) for s in densities) + " |")
    print("|---|" + "---|" * len(densities))
    for algo in ("topk", "regtopk"):
        print(f"| {'Top-k' if algo == 'topk' else 'RegTop-k'} | " + " | ".join(f"{table[(algo, s)]:.2f}" for s in densities) + " |")
    print(f"\ndense (S = 1, no compression): {median_tail_log10(dense):.2f}")
    for algo in ("topk", "regtopk"):
        conv = [s for s in densities if table[(algo, s)] < -6]
        print(f"smallest S at which {algo} converges (median log10 gap < -6): {min(conv) if conv else 'none'}")
    fig, axes = p.subplots(2, 4, figsize=(15, 6.5), sharey=True)
    for ax, s in zip(axes.flat, densities):
        for algo in ("topk", "regtopk"):
            ax.plot(curves[(algo, s)], lw=0.8, label="Top-k" if algo == "topk" else "RegTop-k")
        ax.set_title(f"S = {s}")
        ax.set_xlabel("round")
    axes.flat[0].set_ylabel("log10 gap")
    axes.flat[4].set_ylabel("log10 gap")
    axes.flat[0].legend()
    axes.flat[-1].plot([math.log10(max(r["gap"], 1e-300)) for r in dense], lw=0.8, color="k")
    axes.flat[-1].set_title("dense (no compression)")
    save(fig, "linreg_sparsity_sweep.png")

    # mu sweep at S = 0.5.
    print("\n### mu sweep, RegTop-k at S = 0.5 (simulator): median log10 gap, last 100 of 2500 rounds\n")
    print("| mu | 1 | 2 | 4 | 8 | 16 |")
    print("|---|---|---|---|---|---|")
    mus = [1, 2, 4, 8, 16]
    mu_rows = {mu: sim(f"lr_mu_{mu}", problem="linreg", algorithm="regtopk", density=0.5, mu=mu, rounds=rounds) for mu in mus}
    print("| median log10 gap | " + " | ".join(f"{median_tail_log10(mu_rows[mu]):.2f}" for mu in mus) + " |")
    fig, ax = p.subplots(figsize=(6, 4))
    for mu in mus:
        ax.plot([math.log10(max(r["gap"], 1e-300)) for r in mu_rows[mu]], lw=0.8, label=f"mu = {mu}")
    ax.set_xlabel("round")
    ax.set_ylabel("log10 gap")
    ax.set_title("RegTop-k, S = 0.5")
    ax.legend()
    save(fig, "linreg_mu_sweep.png")

    # float32 against float64, and the step guard.
    print("\n### Precision and the step guard, RegTop-k at S = 0.6 (simulator, 2500 rounds)\n")
    print("| run | median log10 gap (last 100) | min log10 gap | late rounds (last 500) with log10 gap > -6 | skipped steps |")
    print("|---|---|---|---|---|")
    variants = {
        "float32": dict(precision="float32"),
        "float64 (reference)": dict(precision="float64"),
        "float32, step guard 100": dict(precision="float32", step_guard=100),
        "float64, step guard 100": dict(precision="float64", step_guard=100),
    }
    fig, ax = p.subplots(figsize=(7, 4))
    for name, extra in variants.items():
        rows = sim("lr_prec_" + name.replace(" ", "_").replace(",", "").replace("(", "").replace(")", ""),
                   problem="linreg", algorithm="regtopk", density=0.6, rounds=rounds, **extra)
        logs = [math.log10(max(r["gap"], 1e-300)) for r in rows]
        bursts = sum(1 for v in logs[-500:] if v > -6)
        skipped = sum(1 for r in rows if r.get("skipped"))
        print(f"| {name} | {median_tail_log10(rows):.2f} | {min(logs):.2f} | {bursts} | {skipped} |")
        ax.plot(logs, lw=0.7, label=name)
    ax.set_xlabel("round")
    ax.set_ylabel("log10 gap")
    ax.set_title("RegTop-k, S = 0.6: precision and step guard")
    ax.legend(fontsize=8)
    save(fig, "linreg_precision_guard.png")

    # S = 0.6 through the real system (20 worker processes).
    print("\n### S = 0.6 through the real system (20 worker processes, 2500 rounds)\n")
    print("| method | final gap | median log10 gap (last 100) | simulator's median |")
    print("|---|---|---|---|")
    fig, ax = p.subplots(figsize=(6, 4))
    for algo in ("topk", "regtopk"):
        rows, summary = launch(f"lr_real_{algo}", workers=20, dataset="linreg", model="linear", algorithm=algo,
                               density=0.6, mu=4, lr=0.01, rounds=rounds, eval_every=0)
        print(f"| {algo} | {rows[-1]['gap']:.3g} | {median_tail_log10(rows):.2f} | {table[(algo, 0.6)]:.2f} |")
        ax.plot([math.log10(max(r["gap"], 1e-300)) for r in rows], lw=0.8, label=f"{algo} (real system)")
        ax.plot(curves[(algo, 0.6)], lw=0.8, ls="--", label=f"{algo} (simulator)")
    ax.set_xlabel("round")
    ax.set_ylabel("log10 gap")
    ax.set_title("S = 0.6: 20 worker processes vs simulator")
    ax.legend(fontsize=8)
    save(fig, "linreg_real_system.png")


def fmnist():
    p = plt()
    # quantity: the paper's size skew (shares from 1 to 10x, labels iid).
    partitions = ["quantity", "dirichlet:0.1", "dirichlet:0.5", "iid"]
    densities = [0.001, 0.01]
    seeds = [1, 2, 3]
    rounds = 1000
    results_path = os.path.join(FIG, "fmnist.json")
    results = json.load(open(results_path)) if os.path.exists(results_path) else {}
    configs = []
    for part in partitions:
        for seed in seeds:
            configs.append((part, "dense", 1.0, seed))
            for dens in densities:
                for algo in ("topk", "regtopk"):
                    configs.append((part, algo, dens, seed))
    for part, algo, dens, seed in configs:
        key = f"{part}|{algo}|{dens}|{seed}"
        if key in results:
            continue  # resumable: results are deterministic for a seed
        rows, summary = launch("fm_" + key.replace("|", "_").replace(":", ""), workers=8, dataset="fashion-mnist",
                               model="mlp", partition=part, algorithm=algo, density=dens, mu=5, lr=0.1,
                               rounds=rounds, batch_size=64, eval_every=100, seed=seed)
        results[key] = {"rounds": [r["round"] + 1 for r in rows if "test_accuracy" in r],
                        "accuracy": [r["test_accuracy"] for r in rows if "test_accuracy" in r],
                        "upstream_compression": summary["upstream_compression"],
                        "mask": summary.get("mask_diagnostic")}
        json.dump(results, open(results_path, "w"))
        print(f"  {key}: {100 * results[key]['accuracy'][-1]:.2f}%", file=sys.stderr, flush=True)

    def final(part, algo, dens):
        # The mean of the last 3 evaluations (rounds 800, 900, 1000): under strong skew a single
        # evaluation swings by several points.
        accs = [100 * statistics.mean(results[f"{part}|{algo}|{dens}|{s}"]["accuracy"][-3:]) for s in seeds]
        return statistics.mean(accs), (max(accs) - min(accs)) / 2

    print(f"\n### Fashion-MNIST, MLP, N = 8, {rounds} rounds: test accuracy (%), mean of the last 3 evaluations, "
          f"mean ± half-range over seeds {seeds}\n")
    print("| partition | dense | Top-k 0.1 % | RegTop-k 0.1 % | Top-k 1 % | RegTop-k 1 % |")
    print("|---|---|---|---|---|---|")
    for part in partitions:
        cells = ["%.2f ± %.2f" % final(part, "dense", 1.0)]
        for dens in densities:
            for algo in ("topk", "regtopk"):
                cells.append("%.2f ± %.2f" % final(part, algo, dens))
        print(f"| {part} | " + " | ".join(cells) + " |")
    comp = {d: statistics.mean(results[f"{part}|regtopk|{d}|{s}"]["upstream_compression"] for part in partitions for s in seeds) for d in densities}
    print("\nupstream bytes, dense / RegTop-k: " + ", ".join(f"{100 * d:g} %: {c:.0f}x" for d, c in comp.items()))

    fig, axes = p.subplots(len(densities), len(partitions), figsize=(18, 7.5), sharey=True)
    for i, dens in enumerate(densities):
        for j, part in enumerate(partitions):
            ax = axes[i][j]
            plot_methods(ax, dens, lambda algo, d: [results[f"{part}|{algo}|{d}|{s}"] for s in seeds])
            ax.set_title(f"{part}, density {100 * dens:g} %")
            ax.set_xlabel("round")
            if j == 0:
                ax.set_ylabel("test accuracy (%)")
    axes[0][0].legend()
    save(fig, "fmnist_accuracy.png")


def downlink():
    """The opt-in compressed downlink (--downlink-density) against the lossless aggregate: the
    main job's recipe (MLP, Dirichlet 0.5, RegTop-k at 1 %), N = 8 and 16, 1000 rounds."""
    workers = [8, 16]
    downlinks = [0, 0.02, 0.01]  # 0 = lossless (the default)
    seeds = [1, 2]
    rounds = 1000
    results_path = os.path.join(FIG, "downlink.json")
    results = json.load(open(results_path)) if os.path.exists(results_path) else {}
    for n in workers:
        for dl in downlinks:
            for seed in seeds:
                key = f"{n}|{dl}|{seed}"
                if key in results:
                    continue
                rows, summary = launch(f"dl_{n}_{dl}_{seed}", workers=n, dataset="fashion-mnist",
                                       model="mlp", partition="dirichlet:0.5", algorithm="regtopk",
                                       density=0.01, mu=5, lr=0.1, rounds=rounds, batch_size=64,
                                       eval_every=100, seed=seed, downlink_density=dl)
                accs = [r["test_accuracy"] for r in rows if "test_accuracy" in r]
                digests = set(summary["param_digests"])
                results[key] = {"accuracy": accs, "bytes_received": summary["bytes_received"],
                                "bytes_sent": summary["bytes_sent"],
                                "dense_bytes": summary["dense_bytes_equivalent"],
                                "replicas_equal": len(digests) == 1 and None not in digests}
                json.dump(results, open(results_path, "w"))
                print(f"  {key}: {100 * accs[-1]:.2f}%", file=sys.stderr, flush=True)
    print(f"\n### Compressed downlink, Fashion-MNIST MLP, Dirichlet 0.5, RegTop-k 1 %, {rounds} rounds, "
          f"seeds {seeds}\n")
    print("| N | downlink | test accuracy, mean of the last 3 evaluations (%) | final (%) | "
          "received per worker per round (KB) | received vs lossless | up / down bytes | replicas equal |")
    print("|---|---|---|---|---|---|---|---|")
    for n in workers:
        base = statistics.mean(results[f"{n}|0|{s}"]["bytes_received"] for s in seeds)
        for dl in downlinks:
            rs = [results[f"{n}|{dl}|{s}"] for s in seeds]
            tail = [100 * statistics.mean(r["accuracy"][-3:]) for r in rs]
            final = [100 * r["accuracy"][-1] for r in rs]
            recv = statistics.mean(r["bytes_received"] for r in rs)
            sent = statistics.mean(r["bytes_sent"] for r in rs)
            name = "lossless" if dl == 0 else f"{100 * dl:g} % of d"
            print(f"| {n} | {name} | {statistics.mean(tail):.2f} ({', '.join(f'{t:.2f}' for t in tail)}) | "
                  f"{statistics.mean(final):.2f} | {recv / n / rounds / 1e3:.1f} | {recv / base:.2f}x | "
                  f"1 : {recv / sent:.1f} | {all(r['replicas_equal'] for r in rs)} |")


def mechanism():
    """The mask diagnostic, every worker, every round, of RegTop-k runs in each regime studied:
    how often RegTop-k's picks differ from plain Top-k's, and how often Top-k would repeat last
    round's picks (the only picks RegTop-k can change), over windows of the run."""
    cases = [
        ("toy (2 workers, k = 1 of 2)", dict(workers=2, dataset="toy", model="logistic", density=0.5,
                                             mu=1, lr=0.9, rounds=150)),
        ("linear regression, N = 20, S = 0.6", dict(workers=20, dataset="linreg", model="linear",
                                                    density=0.6, mu=4, lr=0.01, rounds=2500, eval_every=0)),
        ("linear regression, N = 20, S = 0.1", dict(workers=20, dataset="linreg", model="linear",
                                                    density=0.1, mu=4, lr=0.01, rounds=2500, eval_every=0)),
        ("Fashion-MNIST MLP, N = 8, Dirichlet 0.1, 0.1 %", dict(workers=8, dataset="fashion-mnist", model="mlp",
                                                               partition="dirichlet:0.1", density=0.001, mu=5,
                                                               lr=0.1, rounds=1000, eval_every=0)),
        ("Fashion-MNIST MLP, N = 8, Dirichlet 0.1, 1 %", dict(workers=8, dataset="fashion-mnist", model="mlp",
                                                             partition="dirichlet:0.1", density=0.01, mu=5,
                                                             lr=0.1, rounds=1000, eval_every=0)),
    ]
    results_path = os.path.join(FIG, "mechanism.json")
    results = json.load(open(results_path)) if os.path.exists(results_path) else {}
    for name, flags in cases:
        for algo in ("topk", "regtopk"):
            key = f"{name}|{algo}"
            if key in results:
                continue
            tag = "mech_" + "".join(c if c.isalnum() else "_" for c in key)
            launch(tag, algorithm=algo, **flags)
            out = os.path.join(WORK, tag)
            per_round = {}
            for w in range(flags["workers"]):
                for r in read_jsonl(os.path.join(out, f"worker_{w}.jsonl")):
                    if "not_topk" in r:
                        per_round.setdefault(r["round"], []).append((r["not_topk"], r["topk_repeat"]))
            rounds = sorted(per_round)
            results[key] = {"not_topk": [statistics.mean(v[0] for v in per_round[r]) for r in rounds],
                            "topk_repeat": [statistics.mean(v[1] for v in per_round[r]) for r in rounds]}
            json.dump(results, open(results_path, "w"))
            print(f"  {key}: done", file=sys.stderr, flush=True)

    def window(series, lo, hi):
        part = series[int(lo * len(series)):max(int(hi * len(series)), int(lo * len(series)) + 1)]
        return 100 * statistics.mean(part)

    print("\n### When RegTop-k picks differently from Top-k: mean over workers and rounds (%)\n")
    print("| regime | Top-k: picks repeating last round's, first 10 % / rest | RegTop-k: picks Top-k would not make, first 10 % / rest | RegTop-k: Top-k's picks repeating, rest |")
    print("|---|---|---|---|")
    for name, _ in cases:
        top, reg = results[f"{name}|topk"], results[f"{name}|regtopk"]
        print(f"| {name} | {window(top['topk_repeat'], 0, 0.1):.3g} / {window(top['topk_repeat'], 0.1, 1):.3g} | "
              f"{window(reg['not_topk'], 0, 0.1):.3g} / {window(reg['not_topk'], 0.1, 1):.3g} | "
              f"{window(reg['topk_repeat'], 0.1, 1):.3g} |")


def finetune_inputs():
    """A CNN pretrained densely (Adam, 2 epochs, in-process with python3-torch) on classes 0-4 of
    Fashion-MNIST, its head replaced by a fresh 10-class one, saved as TorchScript; and the
    whole data set as .npz, normalised as in pretraining. Deterministic; cached in WORK."""
    import gzip
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    paths = {k: os.path.join(WORK, f"finetune_{k}") for k in ("model.pt", "train.npz", "test.npz")}
    if all(os.path.exists(p) for p in paths.values()):
        return paths

    def load(prefix):
        d = "/usr/share/datasets/fashion-mnist"
        with gzip.open(os.path.join(d, f"{prefix}-images-idx3-ubyte.gz")) as f:
            x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
        with gzip.open(os.path.join(d, f"{prefix}-labels-idx1-ubyte.gz")) as f:
            y = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
        return ((x.astype(np.float32) / 255.0) - 0.2860) / 0.3530, y

    class Cnn(nn.Module):
        def __init__(self, classes: int):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
            self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
            self.fc1 = nn.Linear(32 * 7 * 7, 64)
            self.head = nn.Linear(64, classes)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.conv1(x)), 2)
            x = F.max_pool2d(F.relu(self.conv2(x)), 2)
            return self.head(F.relu(self.fc1(x.flatten(1))))

    x, y = load("train")
    tx, ty = load("t10k")
    torch.manual_seed(0)
    model = Cnn(5)
    half = y < 5
    xs, ys = torch.from_numpy(x[half]), torch.from_numpy(y[half])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    for epoch in range(2):
        order = torch.randperm(len(xs), generator=g)
        for i in range(0, len(xs) - 63, 64):
            b = order[i:i + 64]
            opt.zero_grad()
            F.cross_entropy(model(xs[b]), ys[b]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        th = torch.from_numpy(ty < 5)
        acc = (model(torch.from_numpy(tx)[th]).argmax(1) == torch.from_numpy(ty)[th]).double().mean().item()
    print(f"  pretrained on classes 0-4: {100 * acc:.2f}% on their test images", file=sys.stderr)
    tuned = Cnn(10)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    tuned.load_state_dict(state, strict=False)  # a fresh 10-class head (seeded above)
    torch.jit.script(tuned).save(paths["model.pt"])
    np.savez(paths["train.npz"], x=x, y=y)
    np.savez(paths["test.npz"], x=tx[:3000], y=ty[:3000])
    return paths


def finetune():
    """Fine-tuning through the real system, the regime closest to the authors' CIFAR-10 one
    that runs here: a pretrained CNN, all parameters trained, 4 workers under strong label skew
    (Dirichlet 0.1), Top-k and RegTop-k at 0.1 % and 0.01 % and dense, 3 seeds, with one
    mini-batch per round and with the authors' 40 local steps per round."""
    p = plt()
    inputs = finetune_inputs()
    seeds = [1, 2, 3]
    densities = [0.001, 0.0001]
    # The local steps only move the point where the sent gradient is taken: the model is reset
    # to the replica after each round, so the job still makes one optimizer step per round and
    # needs as many rounds as the single-step regime to learn (15 rounds of 40 steps reached
    # 20 %). 100 rounds of 40 steps (4000 mini-batches per worker) is what fits here.
    regimes = {1: dict(rounds=300, eval_every=30), 40: dict(rounds=100, eval_every=10)}
    results_path = os.path.join(FIG, "finetune.json")
    results = json.load(open(results_path)) if os.path.exists(results_path) else {}
    methods = [("dense", 1.0)] + [(a, d) for d in densities for a in ("topk", "regtopk")]
    for steps, regime in regimes.items():
        for algo, dens in methods:
            for seed in seeds:
                key = f"{steps}|{algo}|{dens}|{seed}"
                if key in results:
                    continue  # resumable: results are deterministic for a seed
                rows, summary = launch(f"ft_{steps}_{algo}_{dens}_{seed}", workers=4,
                                       model=inputs["model.pt"], train_data=inputs["train.npz"],
                                       test_data=inputs["test.npz"], partition="dirichlet:0.1",
                                       algorithm=algo, density=dens, mu=5, lr=0.01, momentum=0.9,
                                       batch_size=32, local_steps=steps, seed=seed, **regime)
                ev = [r for r in rows if "test_accuracy" in r]
                results[key] = {"rounds": [r["round"] + 1 for r in ev],
                                "accuracy": [r["test_accuracy"] for r in ev],
                                "mask": summary.get("mask_diagnostic"),
                                "upstream_compression": summary["upstream_compression"]}
                json.dump(results, open(results_path, "w"))
                print(f"  {key}: {100 * ev[-1]['test_accuracy']:.2f}%", file=sys.stderr, flush=True)

    def cell(steps, algo, dens):
        tails = [100 * statistics.mean(results[f"{steps}|{algo}|{dens}|{s}"]["accuracy"][-3:]) for s in seeds]
        return statistics.mean(tails), (max(tails) - min(tails)) / 2

    def diag(steps, algo, dens, what, window="all"):
        return statistics.mean(results[f"{steps}|{algo}|{dens}|{s}"]["mask"][window][what] for s in seeds)

    print(f"\n### Fine-tuning a pretrained CNN, Fashion-MNIST, 4 workers, Dirichlet 0.1: test accuracy (%), "
          f"mean of the last 3 evaluations, mean ± half-range over seeds {seeds}\n")
    print("| local steps | rounds | dense | " + " | ".join(f"{n} {100 * d:g} %" for d in densities for n in ("Top-k", "RegTop-k")) + " |")
    print("|---|---|---|" + "---|" * (2 * len(densities)))
    for steps, regime in regimes.items():
        cells = ["%.2f ± %.2f" % cell(steps, "dense", 1.0)]
        cells += ["%.2f ± %.2f" % cell(steps, a, d) for d in densities for a in ("topk", "regtopk")]
        print(f"| {steps} | {regime['rounds']} | " + " | ".join(cells) + " |")
    print("\n### The mask diagnostic in those runs (mean over workers, rounds and seeds)\n")
    print("| local steps | density | Top-k: picks repeating last round's | RegTop-k: picks Top-k would not make, all rounds | first 10 % | second half | RegTop-k: Top-k's picks repeating |")
    print("|---|---|---|---|---|---|---|")
    for steps in regimes:
        for d in densities:
            print(f"| {steps} | {100 * d:g} % | {100 * diag(steps, 'topk', d, 'topk_repeat'):.3g} % | "
                  f"{100 * diag(steps, 'regtopk', d, 'not_topk'):.3g} % | "
                  f"{100 * diag(steps, 'regtopk', d, 'not_topk', 'first_10pct'):.3g} % | "
                  f"{100 * diag(steps, 'regtopk', d, 'not_topk', 'second_half'):.3g} % | "
                  f"{100 * diag(steps, 'regtopk', d, 'topk_repeat'):.3g} % |")

    fig, axes = p.subplots(len(regimes), len(densities), figsize=(11, 7.5), sharey=True)
    for i, steps in enumerate(regimes):
        for j, dens in enumerate(densities):
            ax = axes[i][j]
            plot_methods(ax, dens, lambda algo, d: [results[f"{steps}|{algo}|{d}|{s}"] for s in seeds])
            ax.set_title(f"{steps} local step(s) per round, density {100 * dens:g} %")
            ax.set_xlabel("round")
            if j == 0:
                ax.set_ylabel("test accuracy (%)")
    axes[0][0].legend()
    save(fig, "finetune_accuracy.png")


if __name__ == "__main__":
    os.makedirs(FIG, exist_ok=True)
    os.makedirs(WORK, exist_ok=True)
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    steps = {"toy": [toy], "linreg": [linreg], "fmnist": [fmnist], "downlink": [downlink],
             "finetune": [finetune], "mechanism": [mechanism],
             "all": [toy, linreg, fmnist, downlink, mechanism, finetune]}
    if what not in steps:
        sys.exit(__doc__)
    for step in steps[what]:
        step()

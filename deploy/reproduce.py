#!/usr/bin/python3
"""Regenerates the tables and figures of docs/REPRODUCTION.md.

    deploy/reproduce.py toy       # 2 workers, real server + worker processes
    deploy/reproduce.py linreg    # simulator sweeps + S = 0.6 through the real system
    deploy/reproduce.py fmnist    # Fashion-MNIST, 8 workers, 3 skews x 2 densities x 3 methods x 3 seeds
    deploy/reproduce.py downlink  # Fashion-MNIST, the compressed downlink at N = 8 and 16
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
    partitions = ["dirichlet:0.1", "dirichlet:0.5", "iid"]
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
                        "upstream_compression": summary["upstream_compression"]}
        json.dump(results, open(results_path, "w"))
        print(f"  {key}: {100 * results[key]['accuracy'][-1]:.2f}%", file=sys.stderr, flush=True)

    def final(part, algo, dens):
        accs = [100 * results[f"{part}|{algo}|{dens}|{s}"]["accuracy"][-1] for s in seeds]
        return statistics.mean(accs), (max(accs) - min(accs)) / 2

    print(f"\n### Fashion-MNIST, MLP, N = 8, {rounds} rounds: final test accuracy (%), mean ± half-range over seeds {seeds}\n")
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

    fig, axes = p.subplots(len(densities), len(partitions), figsize=(14, 7.5), sharey=True)
    for i, dens in enumerate(densities):
        for j, part in enumerate(partitions):
            ax = axes[i][j]
            for algo, d, style in (("dense", 1.0, "k-"), ("topk", dens, "C0-"), ("regtopk", dens, "C3-")):
                runs = [results[f"{part}|{algo}|{d}|{s}"] for s in seeds]
                xs = runs[0]["rounds"]
                ys = [[100 * a for a in r["accuracy"]] for r in runs]
                mean = [statistics.mean(v) for v in zip(*ys)]
                ax.plot(xs, mean, style, label={"dense": "dense", "topk": "Top-k", "regtopk": "RegTop-k"}[algo])
                ax.fill_between(xs, [min(v) for v in zip(*ys)], [max(v) for v in zip(*ys)], color=style[:-1], alpha=0.15)
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


if __name__ == "__main__":
    os.makedirs(FIG, exist_ok=True)
    os.makedirs(WORK, exist_ok=True)
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    steps = {"toy": [toy], "linreg": [linreg], "fmnist": [fmnist], "downlink": [downlink],
             "all": [toy, linreg, fmnist, downlink]}
    if what not in steps:
        sys.exit(__doc__)
    for step in steps[what]:
        step()

#!/usr/bin/python3
"""regtopk against PyTorch's gloo on emulated networks (issue: "Prove it where it matters").

Every process runs in its own network namespace. The namespaces are joined by a bridge in a hub
namespace; each host's link is a veth pair shaped with `tc ... tbf rate R` at both ends, so a host
sends at most R and receives at most R (full duplex, like a NIC on a switch). Three systems move
the same d float32 gradients per round over the same links:

  regtopk      the real regtopk-server (own namespace) and N worker sessions (the C++ WorkerSession
               through the Python binding: RegTop-k sparsify with error feedback, push, exact
               aggregate, apply with SGD), one per worker namespace;
  gloo-dense   torch.distributed all_reduce over gloo of the dense gradient, divide by N, apply
               (DDP's data path);
  gloo-topk    Top-k with error feedback (torch.topk), all_gather of indices and values over gloo,
               scatter-add, divide, apply (GRACE's data path).

Reported per configuration: the median round time (slowest worker of each round), and the bytes
each worker sent and received per round on its link (interface counters, so TCP/IP framing
included). No model compute is timed: a round is everything between having a gradient and
holding the updated parameters.

Usage (root; CI does not run it):
  /usr/bin/python3 deploy/netbench.py [--build=build] [--rates=1,10] [--workers=2,4,8]
      [--dims=11200000,100000000] [--densities=0.001,0.01] [--rounds=8] [--out=out/netbench]
Writes OUT/results.json, OUT/results.md (the table) and OUT/netbench.png. Exits 77 with a message
where network namespaces are not permitted. Removes every namespace it made on any exit.
"""
import argparse
import datetime
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

TAG = f"nb{os.getpid()}"
SUBNET = "10.123.0"  # only inside the namespaces this script creates
SERVER_PORT = 50051
GLOO_PORT = 29500


# ----------------------------------------------------------------------------------------------
# Worker roles (run inside a namespace by the driver)

def role_regtopk(a):
    import numpy as np
    if a.pythonpath:
        sys.path.insert(0, a.pythonpath)
    from regtopk import _core
    rng = np.random.default_rng(1000 + a.rank)
    grads = [rng.standard_normal(a.dim, dtype=np.float32) for _ in range(2)]
    session = _core.Session(f"{SUBNET}.1:{SERVER_PORT}", a.rank, np.zeros(a.dim, np.float32),
                            "netbench", start_timeout=120.0, reconnect_timeout=120.0)
    times, stats = [], []
    for r in range(a.rounds):
        t0 = time.perf_counter()
        s = session.step(grads[r % 2])
        times.append(time.perf_counter() - t0)
        stats.append({k: s[k] for k in ("compress_seconds", "communicate_seconds", "wait_seconds",
                                         "apply_seconds", "bytes_pushed", "bytes_received")})
        if a.mark_after is not None and r == a.mark_after:
            print(json.dumps({"mark": r}), flush=True)
            sys.stdin.readline()  # the driver reads the link counters, then lets us go on
    print(json.dumps({"times": times, "stats": stats}), flush=True)


def role_gloo(a):
    import torch
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://{SUBNET}.2:{GLOO_PORT}",
                            rank=a.rank, world_size=a.world, timeout=datetime.timedelta(seconds=120))
    g = torch.Generator().manual_seed(1000 + a.rank)
    grads = [torch.randn(a.dim, generator=g) for _ in range(2)]
    params = torch.zeros(a.dim)
    lr = 0.01
    k = max(1, int(round(a.density * a.dim)))
    error = torch.zeros(a.dim)
    buf = torch.empty(a.dim)
    times = []
    for r in range(a.rounds):
        dist.barrier()
        t0 = time.perf_counter()
        if a.system == "gloo-dense":
            buf.copy_(grads[r % 2])
            dist.all_reduce(buf)
            buf.div_(a.world)
            params.add_(buf, alpha=-lr)
        else:  # gloo-topk: Top-k with error feedback, allgather of (indices, values)
            acc = grads[r % 2] + error
            idx = torch.topk(acc.abs(), k, sorted=False).indices
            vals = acc[idx]
            error = acc
            error[idx] = 0
            all_idx = [torch.empty_like(idx) for _ in range(a.world)]
            all_vals = [torch.empty_like(vals) for _ in range(a.world)]
            dist.all_gather(all_idx, idx)
            dist.all_gather(all_vals, vals)
            buf.zero_()
            for i, v in zip(all_idx, all_vals):
                buf.index_add_(0, i, v)
            buf.div_(a.world)
            params.add_(buf, alpha=-lr)
        times.append(time.perf_counter() - t0)
        if a.mark_after is not None and r == a.mark_after:
            print(json.dumps({"mark": r}), flush=True)
            sys.stdin.readline()
    dist.barrier()
    print(json.dumps({"times": times}), flush=True)
    dist.destroy_process_group()


def role_sink(a):
    """Calibration: accept one connection and read until it closes."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 5001))
    s.listen(1)
    print(json.dumps({"ready": True}), flush=True)
    c, _ = s.accept()
    n = 0
    while True:
        b = c.recv(1 << 20)
        if not b:
            break
        n += len(b)
    print(json.dumps({"bytes": n}), flush=True)


def role_source(a):
    s = socket.create_connection((f"{SUBNET}.1", 5001))
    chunk = b"\0" * (1 << 20)
    total = a.dim
    t0 = time.perf_counter()
    sent = 0
    while sent < total:
        s.sendall(chunk)
        sent += len(chunk)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
    dt = time.perf_counter() - t0
    print(json.dumps({"gbit_per_s": sent * 8 / dt / 1e9}), flush=True)


# ----------------------------------------------------------------------------------------------
# The emulated network

def sh(*cmd, check=True):
    return subprocess.run(list(cmd), check=check, capture_output=True, text=True)


class Network:
    """A hub namespace with a bridge; host i (0 = server) at SUBNET.(i+1), its link shaped to
    `rate_gbit` in both directions."""

    def __init__(self, hosts, rate_gbit):
        self.hub = f"{TAG}h"
        self.hosts = [f"{TAG}x{i}" for i in range(hosts)]
        self.made = []
        sh("ip", "netns", "add", self.hub)
        self.made.append(self.hub)
        sh("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.hub, "link", "set", "br0", "up")
        rate = f"{rate_gbit}gbit"
        # tbf needs a bucket of at least one rate/HZ tick; 256 KiB measured 0.93 Gbit/s at 1 Gbit.
        burst = f"{int(256 * max(1, rate_gbit))}kb"
        for i, ns in enumerate(self.hosts):
            sh("ip", "netns", "add", ns)
            self.made.append(ns)
            port = f"{TAG}p{i}"
            sh("ip", "link", "add", f"{TAG}e{i}", "netns", ns, "type", "veth", "peer", "name", port,
               "netns", self.hub)
            sh("ip", "-n", ns, "link", "set", f"{TAG}e{i}", "name", "eth0")
            sh("ip", "-n", self.hub, "link", "set", port, "master", "br0", "up")
            sh("ip", "-n", ns, "addr", "add", f"{SUBNET}.{i + 1}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            for where, dev in ((ns, "eth0"), (self.hub, port)):
                sh("tc", "-n", where, "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate,
                   "burst", burst, "latency", "50ms")

    def counters(self, i):
        """(tx_bytes, rx_bytes) of host i's interface."""
        out = sh("ip", "-n", self.hosts[i], "-j", "-s", "link", "show", "dev", "eth0").stdout
        st = json.loads(out)[0]["stats64"]
        return st["tx"]["bytes"], st["rx"]["bytes"]

    def close(self):
        for ns in reversed(self.made):
            sh("ip", "netns", "del", ns, check=False)
        self.made = []


def spawn(net, host, argv, env=None):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.Popen(["ip", "netns", "exec", net.hosts[host]] + argv, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)


def read_json(p):
    line = p.stdout.readline()
    if not line:
        raise RuntimeError(f"process exited: {p.stderr.read()[-3000:]}")
    return json.loads(line)


def me(role, **kw):
    argv = ["/usr/bin/python3", os.path.abspath(__file__), f"--role={role}"]
    for k, v in kw.items():
        if v is not None:
            argv.append(f"--{k.replace('_', '-')}={v}")
    return argv


def calibrate(net):
    sink = spawn(net, 0, me("sink"))
    read_json(sink)
    src = spawn(net, 1, me("source", dim=400 << 20))
    r = read_json(src)
    read_json(sink)
    src.wait()
    sink.wait()
    return r["gbit_per_s"]


def run_system(net, system, n, dim, density, rounds, build, tmp):
    """Runs one system once; returns per-round times and per-worker bytes per round."""
    warm = 2
    mark = warm - 1
    env = {"OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "eth0"}
    server = None
    if system == "regtopk":
        server = subprocess.Popen(
            ["ip", "netns", "exec", net.hosts[0], f"{build}/bin/regtopk-server",
             f"--host={SUBNET}.1", f"--port={SERVER_PORT}", "--insecure", f"--workers={n}",
             "--algorithm=regtopk", f"--density={density}", "--mu=5", "--lr=0.01",
             f"--rounds={rounds}", "--linger-seconds=2", "--log-every=0", "--digest-every=10",
             f"--max-dim={max(dim, 1)}"],
            stdout=open(f"{tmp}/server.out", "w"), stderr=open(f"{tmp}/server.err", "w"),
            env=dict(os.environ, **env))
        procs = [spawn(net, w + 1, me("regtopk", rank=w, dim=dim, rounds=rounds, mark_after=mark,
                                      pythonpath=f"{build}/python"), env) for w in range(n)]
    else:
        procs = [spawn(net, w + 1, me("gloo", system=system, rank=w, world=n, dim=dim,
                                      density=density, rounds=rounds, mark_after=mark), env)
                 for w in range(n)]
    try:
        for p in procs:
            read_json(p)  # every worker has finished its warm-up rounds
        before = [net.counters(w + 1) for w in range(n)]
        for p in procs:
            p.stdin.write("\n")
            p.stdin.flush()
        results = [read_json(p) for p in procs]
        after = [net.counters(w + 1) for w in range(n)]
        for p in procs:
            p.wait(timeout=120)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        if server is not None:
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
    measured = rounds - warm
    per_round = [max(r["times"][i] for r in results) for i in range(warm, rounds)]
    up = statistics.mean((a[0] - b[0]) / measured for a, b in zip(after, before))
    down = statistics.mean((a[1] - b[1]) / measured for a, b in zip(after, before))
    out = {"round_s": statistics.median(per_round), "up_bytes": up, "down_bytes": down}
    if system == "regtopk":
        st = [s for r in results for s in r["stats"][warm:]]
        for key in ("compress_seconds", "communicate_seconds", "wait_seconds", "apply_seconds"):
            out[key] = statistics.median(s[key] for s in st)
    return out


def plot(rows, path):
    """One panel per (link, d, density): round time against N for the three systems."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rates = sorted({r["rate_gbit"] for r in rows})
    cases = sorted({(r["dim"], r["density"]) for r in rows if r["system"] != "gloo-dense"})
    fig, axes = plt.subplots(len(rates), len(cases), figsize=(3.6 * len(cases), 3.2 * len(rates)),
                             squeeze=False)
    styles = {"regtopk": ("o-", "C0"), "gloo-dense": ("s--", "C1"), "gloo-topk": ("^:", "C2")}
    for i, rate in enumerate(rates):
        for j, (dim, density) in enumerate(cases):
            ax = axes[i][j]
            for system, (style, color) in styles.items():
                pts = sorted((r["workers"], r["round_s"]) for r in rows
                             if r["rate_gbit"] == rate and r["dim"] == dim and r["system"] == system
                             and (system == "gloo-dense" or r["density"] == density))
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=color, label=system)
            ax.set_yscale("log")
            ax.set_xticks(sorted({r["workers"] for r in rows}))
            ax.set_title(f"{rate:g} Gbit/s, d = {dim / 1e6:g} M, {density * 100:g} %", fontsize=9)
            ax.grid(alpha=0.3)
            if i == len(rates) - 1:
                ax.set_xlabel("workers N")
            if j == 0:
                ax.set_ylabel("round time (s)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--role", default="driver")
    ap.add_argument("--build", default="build")
    ap.add_argument("--rates", default="1,10", help="link rates in Gbit/s")
    ap.add_argument("--workers", default="2,4,8")
    ap.add_argument("--dims", default="11200000,100000000")
    ap.add_argument("--densities", default="0.001,0.01")
    ap.add_argument("--systems", default="regtopk,gloo-dense,gloo-topk")
    ap.add_argument("--rounds", type=int, default=8, help="rounds per run, the first 2 untimed")
    ap.add_argument("--max-memory-gib", type=float, default=20.0,
                    help="skip a configuration whose processes would need more than this")
    ap.add_argument("--out", default="out/netbench")
    ap.add_argument("--replot", action="store_true",
                    help="only rewrite OUT/results.md and OUT/netbench.png from OUT/results.json")
    ap.add_argument("--append", action="store_true",
                    help="keep OUT/results.json's rows and run only the configurations it lacks")
    # role arguments
    ap.add_argument("--rank", type=int)
    ap.add_argument("--world", type=int)
    ap.add_argument("--dim", type=int)
    ap.add_argument("--density", type=float)
    ap.add_argument("--system")
    ap.add_argument("--mark-after", type=int)
    ap.add_argument("--pythonpath")
    a = ap.parse_args()
    roles = {"regtopk": role_regtopk, "gloo": role_gloo, "sink": role_sink, "source": role_source}
    if a.role in roles:
        return roles[a.role](a)
    if a.replot:
        with open(f"{a.out}/results.json") as f:
            rows = json.load(f)["rows"]
        write_table(rows, a, None)
        plot([r for r in rows if "round_s" in r], f"{a.out}/netbench.png")
        return 0

    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("tc"):
        print("SKIP: netbench needs root, iproute2 and tc (network namespaces)")
        return 77
    probe = f"{TAG}probe"
    if sh("ip", "netns", "add", probe, check=False).returncode != 0:
        print("SKIP: network namespaces are not permitted here")
        return 77
    sh("ip", "netns", "del", probe, check=False)
    os.makedirs(a.out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="netbench")
    # Run a copy of the server and the Python package, so that a rebuild meanwhile cannot
    # change (or break) what is being measured.
    build = f"{tmp}/build"
    os.makedirs(f"{build}/bin")
    shutil.copy2(os.path.join(a.build, "bin", "regtopk-server"), f"{build}/bin/")
    shutil.copytree(os.path.join(a.build, "python"), f"{build}/python")
    rows = []
    if a.append and os.path.exists(f"{a.out}/results.json"):
        with open(f"{a.out}/results.json") as f:
            rows = json.load(f)["rows"]
    done = {(r["rate_gbit"], r["workers"], r["dim"], r["density"], r["system"]) for r in rows}
    rates = [float(x) for x in a.rates.split(",")]
    workers = [int(x) for x in a.workers.split(",")]
    dims = [int(x) for x in a.dims.split(",")]
    densities = [float(x) for x in a.densities.split(",")]
    systems = a.systems.split(",")
    net = None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    started = time.time()
    try:
        for rate in rates:
            net = Network(1 + max(workers), int(rate) if rate == int(rate) else rate)
            link = calibrate(net)
            print(f"link {rate:g} Gbit/s: measured {link:.2f} Gbit/s (one TCP stream, 400 MiB)",
                  flush=True)
            for dim in dims:
                for n in workers:
                    # float32 state per process, generously: regtopk ~10 d (params, error, history,
                    # scores, gradients, the initial copy), gloo ~7 d; the server ~5 d.
                    need = n * 10 * 4 * dim / 2**30 + (5 * 4 * dim / 2**30)
                    for density in densities:
                        for system in systems:
                            if system == "gloo-dense" and density != densities[0]:
                                continue  # dense does not depend on the density
                            if (rate, n, dim, density, system) in done:
                                continue
                            row = {"rate_gbit": rate, "link_gbit_measured": link, "workers": n,
                                   "dim": dim, "density": density, "system": system}
                            if need > a.max_memory_gib:
                                row["skipped"] = f"needs ~{need:.0f} GiB > --max-memory-gib"
                                print(f"skip {row}", flush=True)
                                rows.append(row)
                                continue
                            t0 = time.time()
                            row.update(run_system(net, system, n, dim, density, a.rounds, build, tmp))
                            row["wall_s"] = time.time() - t0
                            rows.append(row)
                            print(json.dumps(row), flush=True)
                            with open(f"{a.out}/results.json", "w") as f:
                                json.dump({"date": time.strftime("%Y-%m-%d"), "rows": rows}, f,
                                          indent=1)
            net.close()
            net = None
    finally:
        if net is not None:
            net.close()
        shutil.rmtree(tmp, ignore_errors=True)
    write_table(rows, a, time.time() - started)
    plot([r for r in rows if "round_s" in r], f"{a.out}/netbench.png")
    print(f"wrote {a.out}/results.json, {a.out}/results.md, {a.out}/netbench.png")
    return 0


def write_table(rows, a, seconds):
    def find(r, system):
        for x in rows:
            if (x["rate_gbit"], x["workers"], x["dim"], x["system"]) == \
                    (r["rate_gbit"], r["workers"], r["dim"], system) and \
                    (system == "gloo-dense" or x["density"] == r["density"]) and "round_s" in x:
                return x
        return None
    lines = ["| link (measured) | N | d | density | regtopk round | gloo dense | gloo top-k | "
             "dense / regtopk | top-k / regtopk | regtopk MB up / down per worker | "
             "dense MB up / down | top-k MB up / down |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["system"] != "regtopk" or "round_s" not in r:
            continue
        d, t = find(r, "gloo-dense"), find(r, "gloo-topk")
        def ms(x):
            return f"{x['round_s'] * 1e3:.0f} ms" if x else "-"
        def ratio(x):
            return f"{x['round_s'] / r['round_s']:.1f}x" if x else "-"
        def mb(x):
            return f"{x['up_bytes'] / 1e6:.2f} / {x['down_bytes'] / 1e6:.2f}" if x else "-"
        lines.append(f"| {r['rate_gbit']:g} Gbit/s ({r['link_gbit_measured']:.2f}) | "
                     f"{r['workers']} | {r['dim'] / 1e6:g} M | {r['density'] * 100:g} % | "
                     f"{ms(r)} | {ms(d)} | {ms(t)} | {ratio(d)} | {ratio(t)} | {mb(r)} | "
                     f"{mb(d)} | {mb(t)} |")
    skipped = [r for r in rows if "skipped" in r]
    with open(f"{a.out}/results.md", "w") as f:
        f.write("\n".join(lines) + "\n")
        if skipped:
            f.write("\nSkipped: " + "; ".join(
                f"{r['system']} N={r['workers']} d={r['dim']} {r['density'] * 100:g}% "
                f"({r['skipped']})" for r in skipped) + "\n")
        if seconds is not None:
            f.write(f"\n{len(rows) - len(skipped)} runs in {seconds / 60:.1f} min, "
                    f"{a.rounds - 2} timed rounds each.\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())

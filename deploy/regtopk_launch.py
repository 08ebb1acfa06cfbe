#!/usr/bin/python3
"""regtopk-launch: runs one regtopk job on this machine.

Starts a regtopk-server on 127.0.0.1 (free port) and N regtopk-worker processes, shows one live
progress line, forwards Ctrl-C to every process, stops everything and says which process failed
if one does, and writes metrics, a summary and PNG plots into the output folder.

Every flag of regtopk-server (except --host and --port, which the launcher picks) is accepted
and forwarded: the list is read from `regtopk-server --help`, so it cannot drift from the
server. The processes it started, with their pids and command lines, are in OUTPUT/launch.json.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import select
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import IO, Callable, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
PROGRAM = "regtopk-launch"

# Server flags the launcher sets itself: where it listens, and where its checkpoints go (a
# subfolder of the launcher's own --checkpoint-dir).
LAUNCHER_OWNED = {"host", "port", "checkpoint-dir", "tls-cert", "tls-key", "tls-ca",
                  "job-secret-file", "insecure"}
# Server flags whose launcher default differs from the server's (a launched job must end; the
# paper's RegTop-k settings; a quiet server log).
LAUNCHER_DEFAULTS = {"algorithm": "regtopk", "seed": "1", "workers": "4", "density": "0.01", "mu": "5.0", "lr": "0.1",
                     "rounds": "1000", "log-every": "0", "linger-seconds": "1"}


@dataclass
class ServerFlag:
    name: str
    help: str
    default: str
    is_bool: bool


def server_flags(server_bin: str) -> list[ServerFlag]:
    """The server's own flags, parsed from its --help ("  --name  help (default: value) [ENV]")."""
    try:
        out = subprocess.run([server_bin, "--help"], capture_output=True, text=True, timeout=30,
                             check=True).stdout
    except (OSError, subprocess.SubprocessError) as e:
        sys.exit(f"{PROGRAM}: cannot read the flags of {server_bin} ({e}); build first, or --bin-dir")
    flags = []
    for line in out.splitlines():
        m = re.match(r"^  --([a-z0-9-]+)  (.*) \(default: (.*)\)(?: \[REGTOPK_[A-Z0-9_]+\])?$", line)
        if m:
            name, text, default = m.groups()
            flags.append(ServerFlag(name, text, default, default in ("true", "false")))
    if not flags:
        sys.exit(f"{PROGRAM}: {server_bin} --help listed no flags")
    return flags


def bin_dir_from(argv: list[str]) -> str:
    """--bin-dir must be known before the parser can be built (it holds the server)."""
    for i, a in enumerate(argv):
        if a.startswith("--bin-dir="):
            return a.split("=", 1)[1]
        if a == "--bin-dir" and i + 1 < len(argv):
            return argv[i + 1]
    return HERE


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[ServerFlag]]:
    bin_dir = bin_dir_from(argv)
    flags = server_flags(os.path.join(bin_dir, "regtopk-server"))
    p = argparse.ArgumentParser(prog=PROGRAM, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    srv = p.add_argument_group("server flags (forwarded to regtopk-server when given)")
    for f in flags:
        if f.name in LAUNCHER_OWNED:
            continue
        # Unset flags are not forwarded (the server's default applies), except where the
        # launcher has a default of its own.
        default = LAUNCHER_DEFAULTS.get(f.name)
        shown = default if default is not None else f.default
        if f.is_bool:
            srv.add_argument(f"--{f.name}", nargs="?", const="true", default=default,
                             metavar="true|false", help=f"{f.help} (default: {shown})")
        else:
            srv.add_argument(f"--{f.name}", default=default, help=f"{f.help} (default: {shown})")
    wrk = p.add_argument_group("worker flags")
    wrk.add_argument("--model", default="mlp", help="a built-in model or PATH.pt (TorchScript)")
    wrk.add_argument("--dataset", default="", help="default: npz with --train-data, else fashion-mnist")
    wrk.add_argument("--train-data", default="", help="PATH.npz with x and y (your own data)")
    wrk.add_argument("--test-data", default="", help="PATH.npz with x and y")
    wrk.add_argument("--loss", default="", help="cross_entropy or mse (default: see regtopk-worker --help)")
    wrk.add_argument("--save-model", default="",
                     help="worker 0 writes the trained state_dict here (torch.load reads it)")
    wrk.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    wrk.add_argument("--partition", default="iid", help="iid, dirichlet:ALPHA or quantity[:RATIO]")
    wrk.add_argument("--batch-size", type=int, default=64)
    wrk.add_argument("--local-steps", type=int, default=1,
                     help="mini-batches per round: L-1 local SGD steps, then the L-th gradient is sent "
                          "(the RegTop-k authors' loop)")
    wrk.add_argument("--eval-every", type=int, default=100)
    wrk.add_argument("--max-eval-examples", type=int, default=0)
    wrk.add_argument("--device", default="auto")
    lau = p.add_argument_group("launcher flags")
    lau.add_argument("--output", default="out/job", help="folder for metrics, logs and plots")
    lau.add_argument("--bin-dir", default=bin_dir, help="folder holding regtopk-server and regtopk-worker")
    lau.add_argument("--threads-per-worker", type=int, default=0,
                     help="OMP_NUM_THREADS of each worker; 0 = cores / workers, at least 1")
    lau.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    lau.add_argument("--checkpoint-dir", default="",
                     help="checkpoints of the server (DIR/server) and saved states of the workers "
                          "(DIR/worker-N); a launch on a folder that holds them resumes the job")
    lau.add_argument("--restart-on-failure", type=int, default=0, metavar="M",
                     help="restart a crashed server or worker up to M times each (default: 0)")
    lau.add_argument("--tls-dir", default="",
                     help="mutual TLS for every process with the files deploy/make-certs.sh wrote "
                          "(ca.pem, server.pem/.key, worker-N.pem/.key)")
    lau.add_argument("--job-secret-file", default="",
                     help="the job's secret (default: a fresh one in OUTPUT/job.secret): every "
                          "worker proves its id with a token derived from it")
    lau.add_argument("--server-start-seconds", type=float, default=30.0,
                     help="give up if the server has not printed its address by then (default: 30)")
    args = p.parse_args(argv)
    try:
        workers, rounds = int(args.workers), int(args.rounds)
    except ValueError:
        p.error("--workers and --rounds must be integers")
    if workers < 1:
        p.error("--workers must be >= 1")
    if rounds < 1:
        p.error("--rounds must be >= 1 (a launched job must end)")
    if args.restart_on_failure < 0:
        p.error("--restart-on-failure must be >= 0")
    args.workers, args.rounds = workers, rounds
    return args, flags


class Follower:
    """Reads the JSON lines a worker appends to its metrics file, incrementally."""

    def __init__(self, path: str) -> None:
        self.path, self.offset, self.rows, self.partial = path, 0, [], ""
        self.broken = 0  # lines cut short by a killed worker

    def rounds(self) -> list[dict]:
        """One row per round, the last one written (a rolled-back worker writes rounds again)."""
        by_round: dict[int, dict] = {}
        for r in self.rows:
            if "round" in r:
                by_round[r["round"]] = r
        return [by_round[k] for k in sorted(by_round)]

    def poll(self) -> None:
        try:
            with open(self.path) as f:
                f.seek(self.offset)
                data = f.read()
                self.offset = f.tell()
        except FileNotFoundError:
            return
        lines = (self.partial + data).split("\n")
        self.partial = lines.pop()
        for line in lines:
            if not line.strip():
                continue
            try:
                self.rows.append(json.loads(line))
            except json.JSONDecodeError:
                self.broken += 1


def fmt_seconds(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


@dataclass
class Process:
    name: str  # "server" or "worker N"
    log_name: str
    argv: list[str]
    popen: Optional[subprocess.Popen] = None
    restarts: int = 0


@dataclass
class Job:
    """One server and N workers, started, watched and stopped together."""

    args: argparse.Namespace
    flags: list[ServerFlag]
    processes: list[Process] = field(default_factory=list)
    followers: list[Follower] = field(default_factory=list)
    address: str = ""
    interrupted: bool = False
    _logs: list[IO] = field(default_factory=list)

    @property
    def server_bin(self) -> str:
        return os.path.join(self.args.bin_dir, "regtopk-server")

    @property
    def worker_bin(self) -> str:
        return os.path.join(self.args.bin_dir, "regtopk-worker")

    def server_argv(self, port: int = 0) -> list[str]:
        argv = [self.server_bin, "--host=127.0.0.1", f"--port={port}",
                f"--job-secret-file={self.args.job_secret_file}"]
        if self.args.tls_dir:
            d = self.args.tls_dir
            argv += [f"--tls-cert={d}/server.pem", f"--tls-key={d}/server.key", f"--tls-ca={d}/ca.pem"]
        if self.args.checkpoint_dir:
            argv.append(f"--checkpoint-dir={os.path.join(self.args.checkpoint_dir, 'server')}")
        for f in self.flags:
            value = getattr(self.args, f.name.replace("-", "_"), None)
            if f.name not in LAUNCHER_OWNED and value is not None:
                argv.append(f"--{f.name}={value}")
        return argv

    def worker_argv(self, w: int) -> list[str]:
        a = self.args
        dataset = a.dataset or ("npz" if a.train_data else "fashion-mnist")
        argv = [self.worker_bin, f"--server={self.address}", f"--worker-id={w}",
                f"--model={a.model}", f"--dataset={dataset}", f"--data-dir={a.data_dir}",
                f"--partition={a.partition}", f"--batch-size={a.batch_size}",
                f"--local-steps={a.local_steps}", f"--device={a.device}", f"--eval-every={a.eval_every}",
                f"--max-eval-examples={a.max_eval_examples}", f"--seed={a.seed}",
                f"--metrics={os.path.join(a.output, f'worker_{w}.jsonl')}"]
        argv.append(f"--job-secret-file={a.job_secret_file}")
        if a.tls_dir:
            argv += [f"--tls-ca={a.tls_dir}/ca.pem", f"--tls-cert={a.tls_dir}/worker-{w}.pem",
                     f"--tls-key={a.tls_dir}/worker-{w}.key", "--tls-server-name=localhost"]
        for flag, value in (("train-data", a.train_data), ("test-data", a.test_data),
                            ("loss", a.loss)):
            if value:
                argv.append(f"--{flag}={value}")
        if a.save_model and w == 0:
            argv.append(f"--save-model={a.save_model}")
        if a.checkpoint_dir:
            argv.append(f"--state-dir={os.path.join(a.checkpoint_dir, f'worker-{w}')}")
        elif a.restart_on_failure:
            # Without saved states a restarted worker can only go on with fresh state.
            argv.append("--allow-fresh-state")
        return argv

    def output(self, name: str) -> str:
        return os.path.join(self.args.output, name)

    def _open_log(self, name: str, append: bool = False) -> IO:
        log = open(self.output(name), "a" if append else "w")
        self._logs.append(log)
        return log

    def start_server(self) -> None:
        proc = Process("server", "server.log", self.server_argv())
        proc.popen = subprocess.Popen(proc.argv, stdout=subprocess.PIPE,
                                      stderr=self._open_log(proc.log_name))
        self.processes.append(proc)
        self.write_manifest()
        line = read_line(proc.popen.stdout, self.args.server_start_seconds)
        m = re.search(r"listening on [0-9.]+:(\d+)", line or "")
        if not m:
            if proc.popen.poll() is None:
                proc.popen.kill()
            proc.popen.wait()
            with open(self.output("server.log")) as f:
                log = f.read().strip()
            why = (f"exit {proc.popen.returncode}" if line is not None
                   else f"no address within {self.args.server_start_seconds:g} s")
            sys.exit(f"{PROGRAM}: the server did not start ({why}): {log}")
        self.address = f"127.0.0.1:{m.group(1)}"

    def worker_env(self) -> dict[str, str]:
        threads = self.args.threads_per_worker or max(1, (os.cpu_count() or 1) // self.args.workers)
        return dict(os.environ, OMP_NUM_THREADS=str(threads))

    def start_workers(self) -> None:
        env = self.worker_env()
        for w in range(self.args.workers):
            proc = Process(f"worker {w}", f"worker_{w}.log", self.worker_argv(w))
            proc.popen = subprocess.Popen(proc.argv, stdout=self._open_log(proc.log_name),
                                          stderr=subprocess.STDOUT, env=env)
            self.processes.append(proc)
            self.followers.append(Follower(self.output(f"worker_{w}.jsonl")))
        self.write_manifest()

    def write_manifest(self) -> None:
        """launch.json: what runs, so that a user (or a test) can check on every process."""
        with open(self.output("launch.json"), "w") as f:
            json.dump({"server": self.address, "processes": [
                {"name": p.name, "pid": p.popen.pid if p.popen else None, "argv": p.argv,
                 "restarts": p.restarts}
                for p in self.processes]}, f, indent=2)

    def stop_all(self) -> None:
        live = [p.popen for p in self.processes if p.popen and p.popen.poll() is None]
        for p in live:
            p.send_signal(signal.SIGTERM)
        deadline = time.time() + 10
        for p in live:
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def close_logs(self) -> None:
        for log in self._logs:
            log.close()

    def restart(self, proc: Process) -> None:
        """Starts a crashed process again with the same command (the server on the same port)."""
        proc.restarts += 1
        log = self._open_log(proc.log_name, append=True)
        log.write(f"--- {PROGRAM}: restart {proc.restarts} after exit code {proc.popen.returncode} ---\n")
        log.flush()
        if proc.name == "server":
            proc.argv = self.server_argv(int(self.address.rsplit(":", 1)[1]))
            proc.popen = subprocess.Popen(proc.argv, stdout=subprocess.DEVNULL, stderr=log)
        else:
            proc.popen = subprocess.Popen(proc.argv, stdout=log, stderr=subprocess.STDOUT,
                                          env=self.worker_env())
        self.write_manifest()

    def failed(self) -> Optional[Process]:
        for p in self.processes:
            code = p.popen.poll() if p.popen else None
            if code is not None and code != 0:
                return p
        return None

    def workers_done(self) -> bool:
        return all(p.popen.poll() is not None for p in self.processes if p.name != "server")


def read_line(pipe: IO[bytes], timeout: float) -> Optional[str]:
    """One line from a child's stdout within `timeout` seconds; "" at EOF, None on timeout."""
    fd, data, end = pipe.fileno(), b"", time.time() + timeout
    while b"\n" not in data:
        left = end - time.time()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                return data.decode(errors="replace")
            data += chunk
    return data.split(b"\n", 1)[0].decode(errors="replace")


def main() -> None:
    args, flags = parse_args(sys.argv[1:])
    os.makedirs(args.output, exist_ok=True)
    if not args.job_secret_file:
        # A fresh secret per launch, readable by this user only: only this job's workers can
        # act as its workers, even on a shared machine.
        args.job_secret_file = os.path.join(args.output, "job.secret")
        fd = os.open(args.job_secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        os.chmod(args.job_secret_file, 0o600)
    job = Job(args, flags)
    for b in (job.server_bin, job.worker_bin):
        if not os.access(b, os.X_OK):
            sys.exit(f"{PROGRAM}: {b} not found or not executable (build first, or --bin-dir)")

    # Before any child exists: a Ctrl-C from here on stops everything the launcher started.
    def on_signal(*_: object) -> None:
        job.interrupted = True
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        job.start_server()
        print(f"{PROGRAM}: server on {job.address}, {args.workers} workers, output in {args.output}",
              flush=True)
        job.start_workers()
        run_job(job)
    except BaseException:
        # Whatever went wrong in here (a bug, an unreadable metrics file, sys.exit), never leave
        # the server and the workers running behind the user's back.
        job.stop_all()
        raise
    finally:
        job.close_logs()


def progress_line(job: Job, start: float, last_acc: Optional[float]) -> tuple[str, Optional[float]]:
    rows0 = job.followers[0].rounds()
    r = rows0[-1]
    accs = [x["test_accuracy"] for x in rows0 if "test_accuracy" in x]
    last_acc = accs[-1] if accs else last_acc
    sent = sum(sum(x["bytes_pushed"] for x in f.rounds()) for f in job.followers)
    rnd = r["round"] + 1
    elapsed = time.time() - start
    eta = elapsed / rnd * (job.args.rounds - rnd)
    metric = f"gap {r['gap']:.3g}" if "gap" in r else f"loss {r['train_loss']:.4f}"
    acc = f" | acc {100 * last_acc:.1f}%" if last_acc is not None else ""
    return (f"round {rnd}/{job.args.rounds} | {metric}{acc} | sent {sent / 1e6:.2f} MB"
            f" | ETA {fmt_seconds(eta)}"), last_acc


def run_job(job: Job) -> None:
    args = job.args
    start = time.time()
    last_acc: Optional[float] = None
    tty = sys.stdout.isatty()
    last_print = 0.0
    failed: Optional[Process] = None
    while True:
        time.sleep(0.25)
        for f in job.followers:
            f.poll()
        if job.interrupted:
            print(f"\n{PROGRAM}: interrupted; stopping the server and the workers", flush=True)
            job.stop_all()
            sys.exit(130)
        failed = job.failed()
        if failed and failed.restarts < args.restart_on_failure:
            print(f"{PROGRAM}: {failed.name} exited with code {failed.popen.returncode}; restarting it "
                  f"({failed.restarts + 1} of {args.restart_on_failure})", flush=True)
            job.restart(failed)
            failed = None
            continue
        if failed:
            break
        done = job.workers_done()
        if job.followers[0].rounds():
            status, last_acc = progress_line(job, start, last_acc)
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
        report_failure(job, failed)
    server = job.processes[0].popen
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        job.stop_all()
    if server.returncode not in (0, None):
        print(f"{PROGRAM}: server exited with {server.returncode}", file=sys.stderr)
        sys.exit(1)
    for f in job.followers:
        f.poll()
    write_summary(job, time.time() - start)


def report_failure(job: Job, failed: Process) -> None:
    tail = ""
    try:
        with open(job.output(failed.log_name)) as f:
            tail = f.read().strip().splitlines()[-1]
    except (OSError, IndexError):
        pass
    print(f"{PROGRAM}: {failed.name} failed with exit code {failed.popen.returncode}: {tail}",
          file=sys.stderr)
    print(f"{PROGRAM}: full log: {job.output(failed.log_name)}", file=sys.stderr)
    job.stop_all()
    sys.exit(1)


def write_summary(job: Job, elapsed: float) -> None:
    args, followers = job.args, job.followers
    rows0 = followers[0].rounds()
    final = rows0[-1] if rows0 else {}
    total: Callable[[str], int] = lambda key: sum(sum(x[key] for x in f.rounds()) for f in followers)
    sent, received, dense = total("bytes_pushed"), total("bytes_received"), total("dense_bytes")
    mean: Callable[[str], float] = lambda key: sum(x[key] for x in rows0) / max(1, len(rows0))
    mask = mask_summary(followers)
    summary = {
        "algorithm": args.algorithm or "regtopk", "density": float(args.density), "workers": args.workers,
        "rounds": len(rows0), "seconds": elapsed,
        "final_test_accuracy": final.get("test_accuracy"), "final_test_loss": final.get("test_loss"),
        "final_gap": final.get("gap"), "final_train_loss": final.get("train_loss"),
        "bytes_sent": sent, "bytes_received": received, "dense_bytes_equivalent": dense,
        "upstream_compression": dense / sent if sent else None,
        "downstream_compression": dense / received if received else None,
        "worker0_mean_seconds": {k: mean(k) for k in ("compute_s", "sparsify_s", "communicate_s", "wait_s", "apply_s")},
        "param_digests": [f.rounds()[-1].get("param_digest") if f.rounds() else None for f in followers],
        "restarts": {p.name: p.restarts for p in job.processes if p.restarts},
        "total_restarts": sum(p.restarts for p in job.processes),
        "rollbacks": sum(sum(1 for x in f.rows if "rollback_to" in x) for f in followers),
        "mask_diagnostic": mask,
    }
    with open(job.output("summary.json"), "w") as f:
        json.dump(summary, f, indent=2)

    plots: list[str] = []
    if not args.no_plots:
        try:
            plots = make_plots(args, followers)
        except Exception as e:  # plotting is a convenience: report and carry on
            print(f"{PROGRAM}: no plots ({e})", file=sys.stderr)

    print(f"job finished: {len(rows0)} rounds in {fmt_seconds(elapsed)}, {args.algorithm} at density {args.density}")
    if final.get("test_accuracy") is not None:
        print(f"final test accuracy: {100 * final['test_accuracy']:.2f}% (test loss {final['test_loss']:.4f})")
    if final.get("gap") is not None:
        print(f"final gap ||theta - theta*||^2: {final['gap']:.4g}")
    if sent:
        print(f"sent upstream: {sent / 1e6:.2f} MB vs {dense / 1e6:.1f} MB dense ({dense / sent:.1f}x smaller); "
              f"received: {received / 1e6:.2f} MB ({dense / received:.1f}x smaller than dense)")
    if mask:
        print(describe_mask(mask, args.algorithm or "regtopk"))
    if summary["total_restarts"]:
        print(f"restarts: {summary['total_restarts']} ({', '.join(f'{k}: {v}' for k, v in summary['restarts'].items())}); "
              f"worker rollbacks to a committed checkpoint: {summary['rollbacks']}")
    print(f"metrics: {args.output}/worker_*.jsonl, summary: {args.output}/summary.json")
    for p in plots:
        print(f"plot: {p}")


def mask_summary(followers: list[Follower]) -> Optional[dict]:
    """The mask diagnostic over all workers: the mean fraction of picks plain Top-k would not
    have made ("not_topk") and of Top-k's picks that repeat last round's ("topk_repeat"), over
    the whole run, its first 10 % of rounds and its second half. None without a diagnostic
    (dense, Rand-k)."""
    per_round: dict[int, list[tuple[float, float]]] = {}
    for f in followers:
        for x in f.rounds():
            if "not_topk" in x:
                per_round.setdefault(x["round"], []).append((x["not_topk"], x["topk_repeat"]))
    if not per_round:
        return None
    rounds = sorted(per_round)

    def window(lo: float, hi: float) -> dict:
        first = int(lo * len(rounds))
        picked = rounds[first:max(int(hi * len(rounds)), first + 1)]
        values = [v for r in picked for v in per_round[r]]
        return {"rounds": [picked[0] + 1, picked[-1] + 1],
                "not_topk": sum(v[0] for v in values) / len(values),
                "topk_repeat": sum(v[1] for v in values) / len(values)}

    return {"all": window(0.0, 1.0), "first_10pct": window(0.0, 0.1), "second_half": window(0.5, 1.0)}


def describe_mask(mask: dict, algorithm: str) -> str:
    """One line a user choosing between Top-k and RegTop-k can act on."""
    late = mask["second_half"]
    pct = lambda x: f"{100 * x:.3g}%"
    if algorithm == "topk":
        return (f"mask diagnostic: {pct(mask['all']['topk_repeat'])} of Top-k's picks repeated last round's "
                f"({pct(late['topk_repeat'])} in the second half); RegTop-k can change only those picks")
    line = (f"mask diagnostic: {pct(mask['all']['not_topk'])} of the picks differed from plain Top-k's "
            f"(first 10%: {pct(mask['first_10pct']['not_topk'])}, second half: {pct(late['not_topk'])}); "
            f"Top-k's picks repeating last round's: {pct(mask['all']['topk_repeat'])}")
    if late["not_topk"] < 1e-3:
        line += " -- in the second half RegTop-k picked as Top-k would"
    return line


def make_plots(args: argparse.Namespace, followers: list[Follower]) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows0 = followers[0].rounds()
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
    per_worker = [f.rounds() for f in followers]
    n = min(len(r) for r in per_worker)
    cum_sent, cum_dense, s, d = [], [], 0, 0
    for i in range(n):
        s += sum(r[i]["bytes_pushed"] for r in per_worker)
        d += sum(r[i]["dense_bytes"] for r in per_worker)
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

    # The mask diagnostic, worker 0, averaged over windows of ~1 % of the run.
    diag = [x for x in rows0 if "not_topk" in x]
    if diag:
        w = max(1, len(diag) // 100)
        xs = [diag[i]["round"] + 1 for i in range(0, len(diag), w)]
        avg = lambda key: [100 * sum(x[key] for x in diag[i:i + w]) / len(diag[i:i + w])
                           for i in range(0, len(diag), w)]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(xs, avg("topk_repeat"), label="Top-k's picks that repeat last round's")
        if args.algorithm != "topk":
            ax.plot(xs, avg("not_topk"), label="picks plain Top-k would not make")
        ax.set_xlabel("round")
        ax.set_ylabel(f"% of k (worker 0, mean over {w} rounds)")
        ax.legend()
        fig.tight_layout()
        path = os.path.join(args.output, "mask_diagnostic.png")
        fig.savefig(path, dpi=110)
        out.append(path)
    return out


if __name__ == "__main__":
    main()

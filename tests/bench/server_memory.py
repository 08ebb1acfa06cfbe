#!/usr/bin/python3
"""Peak resident memory of a real regtopk-server while N workers join and pull the parameters at
once, then run a few rounds: the server's VmHWM (from /proc) against the model's size.

    /usr/bin/python3 tests/bench/server_memory.py BUILD_DIR [DIM] [N...]

Workers are regtopk._core sessions (the C++ WorkerSession) on threads of this process; only the
server's own memory is measured. Prints one line per N.
"""
import os
import re
import subprocess
import sys
import threading
import time


def peak_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1))


def main():
    build = sys.argv[1]
    dim = int(sys.argv[2]) if len(sys.argv) > 2 else 11_200_000
    counts = [int(x) for x in sys.argv[3:]] or [2, 4, 8, 16]
    sys.path.insert(0, os.path.join(build, "python"))
    import numpy as np
    from regtopk import _core
    model_mib = 4 * dim / 2**20
    print(f"d = {dim} ({model_mib:.1f} MiB of float32), plain SGD, RegTop-k 0.1 %, 3 rounds")
    for n in counts:
        server = subprocess.Popen(
            [os.path.join(build, "bin", "regtopk-server"), "--port=0", f"--workers={n}",
             "--algorithm=regtopk", "--density=0.001", "--rounds=3", "--linger-seconds=1",
             "--log-every=0", f"--max-dim={dim}"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = server.stdout.readline()
        port = re.search(r":(\d+)", line.split("listening on")[1]).group(1)
        idle = peak_kib(server.pid)
        init = np.zeros(dim, np.float32)
        grad = np.random.default_rng(0).standard_normal(dim, dtype=np.float32)
        errors = []
        joined = threading.Barrier(n + 1)

        def worker(w):
            try:
                s = _core.Session(f"127.0.0.1:{port}", w, init, "memory-bench")
                joined.wait()  # every worker has joined and holds the parameters
                joined.wait()
                while not s.finished:
                    s.step(grad)
            except Exception as e:  # reported below
                errors.append(f"worker {w}: {e}")

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(n)]
        for t in threads:
            t.start()
        joined.wait()
        after_pulls = peak_kib(server.pid)
        joined.wait()
        for t in threads:
            t.join()
        peak = peak_kib(server.pid)
        server.wait(timeout=60)
        if errors:
            sys.exit("\n".join(errors))
        print(f"N = {n:2d}: server peak {peak / 1024:7.1f} MiB = {peak / 1024 / model_mib:5.2f} x the model "
              f"(idle {idle / 1024:.1f} MiB; above idle {(peak - idle) / 1024 / model_mib:.2f} x the model; "
              f"after the joins and pulls {(after_pulls - idle) / 1024 / model_mib:.2f} x)", flush=True)
        time.sleep(0.5)


if __name__ == "__main__":
    main()

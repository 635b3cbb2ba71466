#!/usr/bin/env python3
"""CPU affinity, measured before it is built (issue #30, part 5): `hello` with
as many nodes as CPUs under wrk (1 thread, 64 keep-alive connections, 5 s),
its nodes left to the scheduler, against the same with node k pinned to CPU k
of the allowed set (`taskset -p`, what `sched_setaffinity` in each node would
do), rounds alternating. Prints req/s and p99 for both.

python3 bench/affinity.py  (ROUNDS=5 by default)
"""
import os
import re
import signal
import statistics
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELLO = os.path.join(ROOT, "target", "dist", "examples", "hello")
ROUNDS = int(os.environ.get("ROUNDS", "5"))
CPUS = sorted(os.sched_getaffinity(0))


def start():
    proc = subprocess.Popen([HELLO], env=dict(os.environ, MULTINODE_PORT="0",
                                              MULTINODE_NODES=str(len(CPUS)), RUST_LOG="info"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    addr, pids = None, {}
    deadline = time.time() + 10
    while time.time() < deadline:
        line = proc.stderr.readline()
        found = re.search(r"listening on http://(\S+)", line)
        if found:
            addr = found.group(1)
        started = re.search(r"node started node=(\d+) generation=\d+ pid=(\d+)", line)
        if started:
            pids[int(started.group(1))] = int(started.group(2))
        if "nodes ready" in line:
            pids[0] = proc.pid
            subprocess.Popen(["cat"], stdin=proc.stderr, stdout=subprocess.DEVNULL)
            return proc, addr, pids
    raise RuntimeError("hello did not start")


def stop(proc):
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=10)


def wrk(addr):
    out = subprocess.run(["wrk", "-t1", "-c64", "-d5s", "--latency", f"http://{addr}/"],
                         capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return rate, float(p99.group(1)) * scale


def main():
    subprocess.run(["cargo", "build", "-q", "--profile", "dist", "--example", "hello"],
                   cwd=ROOT, check=True)
    rows = {"free": [], "pinned": []}
    for round in range(ROUNDS):
        order = ["free", "pinned"] if round % 2 == 0 else ["pinned", "free"]
        for mode in order:
            proc, addr, pids = start()
            try:
                if mode == "pinned":
                    for node, pid in pids.items():
                        cpu = CPUS[node % len(CPUS)]
                        # -a: every thread of the process (the master's supervisor too)
                        subprocess.run(["taskset", "-a", "-p", "-c", str(cpu), str(pid)],
                                       check=True, stdout=subprocess.DEVNULL)
                rows[mode].append(wrk(addr))
            finally:
                stop(proc)
        print(f"  round {round + 1}: " + ", ".join(
            f"{m} {rows[m][-1][0]:.0f} req/s p99 {rows[m][-1][1]:.2f} ms" for m in rows), flush=True)
    for mode, runs in rows.items():
        rate = statistics.median(r for r, _ in runs)
        p99 = statistics.median(p for _, p in runs)
        print(f"{mode}: {rate:.0f} req/s, p99 {p99:.2f} ms (medians of {ROUNDS})")
    print(f"pinned / free: {statistics.median(r for r, _ in rows['pinned']) / statistics.median(r for r, _ in rows['free']):.2f}")


if __name__ == "__main__":
    main()

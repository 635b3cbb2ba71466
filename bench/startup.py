#!/usr/bin/env python3
"""Start-up against the node count (issue #31, part 4): `hello` (dist profile)
with 16, 64 and 256 nodes, the master's own `all N nodes ready elapsed_ms`,
then, once ready and idle, each worker's resident and private memory and open
descriptors (medians), and the master's. ROUNDS starts of each, alternating;
medians. Also the CPU time the workers (together) and the master had used
when it said so (`/proc/PID/task/*/schedstat`): on a machine with few cores the
start takes at least their sum divided by the core count. Prints a Markdown
table.

python3 bench/startup.py  (ROUNDS=3, NODES="16 64 256" by default;
                           HELLO=path: another build of hello, which it then does not build)
"""
import os
import re
import signal
import statistics
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELLO = os.environ.get("HELLO", os.path.join(ROOT, "target", "dist", "examples", "hello"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
NODES = [int(n) for n in os.environ.get("NODES", "16 64 256").split()]


def children(pid):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            if stat.rsplit(") ", 1)[1].split()[1] == str(pid):
                found.append(int(entry))
    return found


def figures(pid):
    status = open(f"/proc/{pid}/status").read()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024
    private = int(re.search(r"RssAnon:\s+(\d+)", status).group(1)) / 1024
    return rss, private, len(os.listdir(f"/proc/{pid}/fd"))


def cpu_ms(pid):
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        total += int(open(f"/proc/{pid}/task/{task}/schedstat").read().split()[0])
    return total / 1e6


def start(nodes):
    proc = subprocess.Popen([HELLO], env=dict(os.environ, MULTINODE_PORT="0",
                                              MULTINODE_NODES=str(nodes), RUST_LOG="info"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        line = proc.stderr.readline()
        found = re.search(r"all \d+ nodes ready elapsed_ms=([\d.]+)", line)
        if found:
            subprocess.Popen(["cat"], stdin=proc.stderr, stdout=subprocess.DEVNULL)
            return proc, float(found.group(1))
    raise RuntimeError(f"{nodes} nodes did not start")


def main():
    if "HELLO" not in os.environ:
        subprocess.run(["cargo", "build", "-q", "--profile", "dist", "--example", "hello"],
                       cwd=ROOT, check=True)
    rows = {n: [] for n in NODES}
    for round in range(ROUNDS):
        for nodes in (NODES if round % 2 == 0 else NODES[::-1]):
            proc, ready_ms = start(nodes)
            try:
                cpu = sum(cpu_ms(pid) for pid in children(proc.pid)), cpu_ms(proc.pid)
                time.sleep(1 + nodes / 64)  # the last meshes settle
                workers = [figures(pid) for pid in children(proc.pid)]
                master = figures(proc.pid)
            finally:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=60)
            rows[nodes].append((ready_ms, workers, master, cpu))
            print(f"  round {round + 1}: {nodes} nodes ready in {ready_ms:.0f} ms", flush=True)
    base = statistics.median(r[0] for r in rows[NODES[0]])
    print("\n| nodes | all ready, ms (× the first) | CPU when ready, ms: workers / master (per worker) "
          "| per worker: RSS MiB / private MiB / descriptors | master: RSS / private / descriptors |")
    print("| --- | --- | --- | --- | --- |")
    for nodes, runs in rows.items():
        ready = statistics.median(r[0] for r in runs)
        workers = [w for r in runs for w in r[1]]
        med = lambda i, xs: statistics.median(x[i] for x in xs)
        masters = [r[2] for r in runs]
        cpu = [r[3] for r in runs]
        print(f"| {nodes} | {ready:.0f} ({ready / base:.1f} ×) | {med(0, cpu):.0f} / {med(1, cpu):.0f} "
              f"({med(0, cpu) / (nodes - 1):.2f}) | {med(0, workers):.1f} / {med(1, workers):.2f} / "
              f"{med(2, workers):.0f} | {med(0, masters):.1f} / {med(1, masters):.1f} / {med(2, masters):.0f} |")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The cross-machine section of the benchmark: two "machines" of 2 nodes on this
one over a redis-server of its own (free port, no persistence), node 0 of a
broadcasting to the nodes of b (bench/cluster_bench.rs), against the floor of a
bare client publishing to and subscribing from the same redis-server with the
same payloads. Rounds alternate the two.

Run by bench/run.py, or alone (after bench/run.sh built the dist examples):
python3 bench/cluster.py. Writes bench/results/cluster.md.
"""
import os
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import EXAMPLES, OUT, QUICK  # noqa: E402

ROUNDS = 1 if QUICK else 5
BENCH = os.path.join(EXAMPLES, "cluster_bench")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server(populate=0):
    """A redis-server of its own; with `populate`, holding that many unrelated keys."""
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no",
                             "--enable-debug-command", "local"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            connection = socket.create_connection(("127.0.0.1", port), timeout=0.2)
        except OSError:
            time.sleep(0.05)
            continue
        with connection:
            if populate:
                connection.settimeout(60)
                args = ["DEBUG", "POPULATE", str(populate), "app"]
                command = f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)
                connection.sendall(command.encode())
                assert connection.recv(16).startswith(b"+OK")
        return proc, f"redis://127.0.0.1:{port}"
    proc.kill()
    raise RuntimeError("redis-server did not start")


def figures_of(out):
    """{figure: [value per receiver]} from the `cluster,what,figure,value` lines."""
    values = {}
    for line in out.splitlines():
        if line.startswith("cluster,"):
            _, _, figure, value = line.split(",")
            values.setdefault(figure, []).append(float(value))
    return values


def one_round(url):
    env = dict(os.environ, MULTINODE_CLUSTER=url, RUST_LOG="warn", MULTINODE_PORT="0")
    b = subprocess.Popen([BENCH], env=dict(env, MULTINODE_MACHINE="b"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        a = subprocess.run([BENCH], env=dict(env, MULTINODE_MACHINE="a"), capture_output=True,
                           text=True, timeout=180, check=True)
    finally:
        os.killpg(b.pid, 9)
        b.wait()
    floor = subprocess.run([BENCH], env=dict(env, FLOOR="1"), capture_output=True, text=True,
                           timeout=180, check=True)
    return figures_of(a.stdout), figures_of(floor.stdout)


POPULATED = 2_000_000


def figures():
    print("cluster: 2 machines of 2 nodes over one redis-server", flush=True)
    mesh, floor, crowded = {}, {}, {}
    for round in range(2 * ROUNDS):
        # Odd rounds: a Redis that also holds 2 million unrelated keys.
        populate = POPULATED if round % 2 else 0
        server, url = redis_server(populate)
        try:
            m, f = one_round(url)
        finally:
            server.kill()
            server.wait()
        for figure, values in m.items():
            (crowded if populate else mesh).setdefault(figure, []).append(statistics.median(values))
        if not populate:
            for figure, values in f.items():
                floor.setdefault(figure, []).append(statistics.median(values))
        print(f"  {populate} keys: multinode {m}  floor {f}", flush=True)
    med = {k: statistics.median(v) for k, v in mesh.items()}
    fmed = {k: statistics.median(v) for k, v in floor.items()}
    cmed = {k: statistics.median(v) for k, v in crowded.items()}
    lines = ["", f"## Across machines (bench/cluster_bench.rs; {ROUNDS} rounds of each, medians)", "",
             "| path | broadcast msgs/s (64 B) | p50 µs | p99 µs |", "| --- | --- | --- | --- |",
             f"| multinode, node 0 of a to the 2 nodes of b | {med['msgs_per_s']:.0f} | "
             f"{med['p50_us']:.0f} | {med['p99_us']:.0f} |",
             f"| bare redis client, 1 publisher to 2 subscribers | {fmed['msgs_per_s']:.0f} | "
             f"{fmed['p50_us']:.0f} | {fmed['p99_us']:.0f} |",
             f"| multinode, with {POPULATED:,} unrelated keys in Redis | {cmed['msgs_per_s']:.0f} | "
             f"{cmed['p50_us']:.0f} | {cmed['p99_us']:.0f} |",
             "", f"multinode / floor: {med['msgs_per_s'] / fmed['msgs_per_s']:.2f} × the rate, "
             f"p50 {med['p50_us'] / fmed['p50_us']:.2f} × (rate: a flood of 100 000, first to last "
             f"arrival; latency: 2 000 one at a time, 0.5 ms apart)"]
    return lines


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    section = "\n".join(figures()) + "\n"
    with open(os.path.join(OUT, "cluster.md"), "w") as f:
        f.write(section)
    print(section)

#!/usr/bin/env python3
"""Compares two builds of bench/mesh_bench/, alternated so that both see the
same machine: `bench/mesh_ab.py OLD NEW [RUNS]` (RUNS, default 4, of each). Prints
each run's medians, then per build the median messages/s and the median ratio to
the bare socketpair of the same run, and NEW / OLD. With ONLY=broadcast in the
environment, it compares the latency figures instead (broadcast and round trip
p50 and p99, and the floors measured in the same runs). Build the binaries
first, e.g. `cargo build --profile dist --example mesh_bench` and copy
target/dist/examples/mesh_bench aside before and after the change."""
import os
import re
import statistics
import subprocess
import sys

FIGURES = {"64": "64 B", "4k": "4096 B"}
LATENCY = re.compile(r"mesh,(.*?),(p\d\d)_us,([\d.]+)")


def output(binary):
    return subprocess.run([binary], capture_output=True, text=True, timeout=300, check=True).stdout


def throughput(out):
    got = {}
    for key, what in FIGURES.items():
        for path in ("mesh", "bare socketpair"):
            values = [float(v) for v in re.findall(rf"mesh,{path} {what},msgs_per_s,([\d.]+)", out)]
            got[path, key] = statistics.median(values)
    return got


def latency(out):
    return {(what, p): float(v) for what, p, v in LATENCY.findall(out)}


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    builds = {"old": sys.argv[1], "new": sys.argv[2]}
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    latencies = os.environ.get("ONLY") == "broadcast"
    results = {name: [] for name in builds}
    for i in range(runs):
        for name, binary in builds.items():
            out = output(binary)
            got = latency(out) if latencies else throughput(out)
            results[name].append(got)
            if latencies:
                print(i, name, {f"{w} {p}": v for (w, p), v in got.items()}, "us", flush=True)
            else:
                print(i, name, {f"{p} {k}": round(v / 1e3) for (p, k), v in got.items()}, "k msgs/s", flush=True)
    if latencies:
        medians = {name: {key: statistics.median(r[key] for r in rows) for key in rows[0]}
                   for name, rows in results.items()}
        for key in medians["old"]:
            old, new = medians["old"][key], medians["new"][key]
            print(f"{key[0]} {key[1]}: old {old:.1f} us, new {new:.1f} us, new / old {new / old:.3f}")
        return
    medians = {}
    for name, rows in results.items():
        line = [name]
        for key in FIGURES:
            mesh = statistics.median(r["mesh", key] for r in rows)
            ratio = statistics.median(r["mesh", key] / r["bare socketpair", key] for r in rows)
            medians[name, key] = mesh
            line.append(f"{FIGURES[key]}: mesh {mesh / 1e3:.0f} k msgs/s, {ratio:.3f} of bare")
        print("; ".join(line))
    print("new / old: " + ", ".join(f"{FIGURES[k]} {medians['new', k] / medians['old', k]:.3f}" for k in FIGURES))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Compares two builds of bench/mesh_bench.rs, alternated so that both see the
same machine: `bench/mesh_ab.py OLD NEW [RUNS]` (RUNS, default 4, of each). Prints
each run's medians, then per build the median messages/s and the median ratio to
the bare socketpair of the same run, and NEW / OLD. Build the binaries first, e.g.
`cargo build --profile dist --example mesh_bench` and copy
target/dist/examples/mesh_bench aside before and after the change."""
import re
import statistics
import subprocess
import sys

FIGURES = {"64": "64 B", "4k": "4096 B"}


def run(binary):
    out = subprocess.run([binary], capture_output=True, text=True, timeout=300, check=True).stdout
    got = {}
    for key, what in FIGURES.items():
        for path in ("mesh", "bare socketpair"):
            values = [float(v) for v in re.findall(rf"mesh,{path} {what},msgs_per_s,([\d.]+)", out)]
            got[path, key] = statistics.median(values)
    return got


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    builds = {"old": sys.argv[1], "new": sys.argv[2]}
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    results = {name: [] for name in builds}
    for i in range(runs):
        for name, binary in builds.items():
            got = run(binary)
            results[name].append(got)
            print(i, name, {f"{p} {k}": round(v / 1e3) for (p, k), v in got.items()}, "k msgs/s", flush=True)
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

#!/usr/bin/env python3
"""Instructions per 64-byte message, counted by callgrind: the message layer
(node 1 to node 0 of `mesh_bench`, every process of the program counted) against
the bare socketpair loop with the same codec (tokio-util's length-delimited
frames written by one thread and read by another, each on its own
current_thread runtime, as in `mesh_bench`). Unlike messages/s on a shared VM,
which move by a third between rounds, the count is nearly the same from one run
to the next.

    bench/mesh_instructions.sh                # release build; installs valgrind if missing
    PROFILE=dist bench/mesh_instructions.sh   # the profile bench/run.sh measures

Each side runs twice under `valgrind --tool=callgrind --trace-children=yes`,
with SMALL and with LARGE messages; the instructions of every process are added
up, and the difference between the two runs, divided by the difference in
messages, is the cost of one message, without the start and the stop. The
bare loop's frames are encoded once and never decoded; a second bare loop
encodes each message (`postcard::to_slice`, in place in the write buffer) and
decodes each frame (`postcard::from_bytes`), as a program without the mesh
would: the floor with the same codec. Both
payloads of `mesh_bench` are measured: a `Bytes` (allocated, copied and freed
on receipt) and a `[u8; 64]` (decoded without an allocation)."""

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

SMALL, LARGE = 20_000, 120_000
RUNS = int(os.environ.get("RUNS", "2"))


def instructions(binary, env):
    """The instructions of every process of one run, added up."""
    out = tempfile.mkdtemp(prefix="callgrind-mesh-")
    try:
        run = subprocess.run(
            ["valgrind", "--tool=callgrind", "--trace-children=yes",
             f"--callgrind-out-file={out}/cg.%p", binary],
            env=dict(os.environ, **env), capture_output=True, text=True, timeout=600)
        if run.returncode != 0:
            sys.exit(f"{binary} {env} failed ({run.returncode}):\n{run.stderr[-3000:]}")
        dumps = glob.glob(f"{out}/cg.*")
        total = 0
        for dump in dumps:
            found = re.search(r"^(?:summary|totals): (\d+)", open(dump).read(), re.M)
            total += int(found.group(1)) if found else 0
        return total, len(dumps)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def per_message(binary, side, payload):
    env = {"ONLY": "64", "PAYLOAD": payload, "SIDE": side, "ROUNDS": "1", "RUST_LOG": "off"}
    small, processes = instructions(binary, dict(env, COUNT=str(SMALL)))
    large, _ = instructions(binary, dict(env, COUNT=str(LARGE)))
    return (large - small) / (LARGE - SMALL), processes


def main():
    binary = f"target/{os.environ.get('PROFILE', 'release')}/examples/mesh_bench"
    for payload in ("bytes", "array"):
        for run in range(RUNS):
            mesh, processes = per_message(binary, "mesh", payload)
            bare, _ = per_message(binary, "bare", payload)
            coded, _ = per_message(binary, "bare-postcard", payload)
            print(f"64 B {payload}: instructions per message: mesh {mesh:.0f} "
                  f"({processes} processes), bare socketpair {bare:.0f} "
                  f"(mesh / bare = {mesh / bare:.3f}), bare socketpair encoding and decoding "
                  f"with postcard {coded:.0f} (mesh / that = {mesh / coded:.3f})", flush=True)


if __name__ == "__main__":
    main()

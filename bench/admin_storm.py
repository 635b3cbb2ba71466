#!/usr/bin/env python3
"""A stopped node's take-over, with and without a storm of scrapes on the admin
listener: does `/metrics` under `wrk -c256` slow the supervision?

The probe runs 4 nodes with `reuse_port` and an admin listener; one worker is
stopped (SIGSTOP), and 200 sequential requests on fresh connections go to the
port, each timed: the master must notice the stopped node's queue and steer
around it. Rounds alternate: no storm, then `wrk -t1 -c256` on `/metrics`.

    cargo build --release --example probe
    python3 bench/admin_storm.py                       # target/release/examples/probe
    PROBE=/path/to/other/probe python3 bench/admin_storm.py   # another build

Prints, per round, how many of the 200 requests took over 15 ms, and their p99."""

import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time

PROBE = os.environ.get("PROBE", "target/release/examples/probe")
ROUNDS, REQUESTS = int(os.environ.get("ROUNDS", "3")), 200


def start():
    env = dict(os.environ, MULTINODE_PORT="0", MULTINODE_NODES="4", PROBE_BALANCE="reuse_port",
               MULTINODE_ADMIN="127.0.0.1:0", RUST_LOG="info")
    proc = subprocess.Popen([PROBE], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    port = admin = None
    deadline = time.time() + 20
    while time.time() < deadline and (port is None or admin is None):
        line = proc.stderr.readline()
        if m := re.search(r"listening on http://127\.0\.0\.1:(\d+)", line):
            port = int(m.group(1))
        if m := re.search(r"admin on http://127\.0\.0\.1:(\d+)", line):
            admin = int(m.group(1))
    if port is None or admin is None:
        sys.exit("the probe did not start")
    while "nodes ready" not in proc.stderr.readline():
        pass
    return proc, port, admin


def workers(pid):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(") ", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def timed_requests(port):
    times = []
    for _ in range(REQUESTS):
        started = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            while s.recv(4096):
                pass
        times.append(time.perf_counter() - started)
    return times


def round_(proc, port, admin, storm):
    wrk = None
    if storm:
        wrk = subprocess.Popen(["wrk", "-t1", "-c256", "-d30s", f"http://127.0.0.1:{admin}/metrics"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)  # the storm is on
    stopped = workers(proc.pid)[0]
    os.kill(stopped, signal.SIGSTOP)
    try:
        times = timed_requests(port)
    finally:
        os.kill(stopped, signal.SIGCONT)
        if wrk:
            wrk.terminate()
            wrk.wait()
    slow = sum(t > 0.015 for t in times)
    p99 = statistics.quantiles(times, n=100)[98] * 1000
    return slow, p99


def main():
    proc, port, admin = start()
    try:
        rows = {False: [], True: []}
        for _ in range(ROUNDS):
            for storm in (False, True):
                rows[storm].append(round_(proc, port, admin, storm))
                time.sleep(0.5)
        for storm, label in ((False, "no storm"), (True, "wrk -c256 on /metrics")):
            slow = [r[0] for r in rows[storm]]
            p99 = [r[1] for r in rows[storm]]
            print(f"{label:24} slow (>15 ms) of {REQUESTS}: {slow}  p99 ms: "
                  + ", ".join(f"{p:.1f}" for p in p99))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()

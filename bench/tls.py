#!/usr/bin/env python3
"""HTTPS side by side, in one run (rounds alternate the servers):

- keep-alive requests/s (wrk, 1 thread, 64 connections, 5 s): `hello` with one
  node and `MULTINODE_TLS_CERT`, against bare hyper + tokio-rustls with the same
  handler (bench/bare_hyper.rs with TLS_CERT);
- full handshakes/s (`openssl s_time -new`, one client, 5 s): those two, and
  `hello` with 2 nodes;
- resumed handshakes/s across 4 nodes (`openssl s_time -reuse`): the shared
  ticket keys against per-node keys (MULTINODE_TLS_TICKETS=node), and how many
  of the connections resumed.

Builds the dist examples with the `tls` feature; writes bench/results/tls.md.
python3 bench/tls.py  (ROUNDS=3 by default)
"""
import os
import re
import signal
import statistics
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "target", "dist", "examples")
ROUNDS = int(os.environ.get("ROUNDS", "3"))
SECONDS = int(os.environ.get("SECONDS", "5"))


def certificates(dir):
    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=dir, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=bench CA",
            "-keyout", "ca.key", "-out", "ca.pem")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
            "-keyout", "key.pem", "-out", "req.csr")
    with open(os.path.join(dir, "san.cnf"), "w") as f:
        f.write("subjectAltName=DNS:localhost\n")
    openssl("x509", "-req", "-in", "req.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "1", "-extfile", "san.cnf", "-out", "cert.pem")
    return os.path.join(dir, "cert.pem"), os.path.join(dir, "key.pem")


def start(name, env):
    """Starts an example; its address from its `listening on` line."""
    proc = subprocess.Popen([os.path.join(EXAMPLES, name)], env=dict(os.environ, **env),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 10
    while time.time() < deadline:
        line = proc.stderr.readline()
        found = re.search(r"listening on https?://(\S+)", line)
        if found:
            if "nodes=" in line:  # multinode: wait until its nodes are ready
                while "nodes ready" not in proc.stderr.readline():
                    pass
            subprocess.Popen(["cat"], stdin=proc.stderr, stdout=subprocess.DEVNULL)
            return proc, found.group(1)
    stop(proc)
    raise RuntimeError(f"{name} did not start")


def stop(proc):
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def wrk(addr):
    out = subprocess.run(["wrk", "-t1", "-c64", f"-d{SECONDS}s", f"https://{addr}/"],
                         capture_output=True, text=True, check=True).stdout
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def s_time(addr, mode):
    """Connections a second, and the share resumed (`r` in s_time's trace)."""
    out = subprocess.run(["openssl", "s_time", "-connect", addr, mode, "-time", str(SECONDS),
                          "-www", "/"], capture_output=True, text=True).stdout
    count, seconds = re.search(r"(\d+) connections in (\d+) real seconds", out).groups()
    trace = "".join(l for l in out.splitlines() if set(l) <= set("r*") and l)
    resumed = trace.count("r") / max(1, len(trace))
    return int(count) / int(seconds), resumed


def figures(cert, key):
    tls = {"MULTINODE_TLS_CERT": cert, "MULTINODE_TLS_KEY": key, "MULTINODE_PORT": "0",
           "RUST_LOG": "info"}
    bare_env = {"TLS_CERT": cert, "TLS_KEY": key, "PORT": "0"}
    rows = {}

    def add(what, value):
        rows.setdefault(what, []).append(value)

    for round in range(ROUNDS):
        servers = [("bare", "bare_hyper", bare_env), ("n=1", "hello", dict(tls, MULTINODE_NODES="1")),
                   ("n=2", "hello", dict(tls, MULTINODE_NODES="2"))]
        if round % 2:
            servers.reverse()
        for label, name, env in servers:
            proc, addr = start(name, env)
            try:
                if label != "n=2":
                    add(f"keep-alive {label}", wrk(addr))
                add(f"full {label}", s_time(addr, "-new")[0])
            finally:
                stop(proc)
        for label, extra in [("shared", {}), ("per-node", {"MULTINODE_TLS_TICKETS": "node"})]:
            proc, addr = start("hello", dict(tls, MULTINODE_NODES="4", **extra))
            try:
                rate, share = s_time(addr, "-reuse")
                add(f"resumed {label}", rate)
                add(f"resumed share {label}", share)
            finally:
                stop(proc)
        print(f"  round {round + 1}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in rows.items()),
              flush=True)
    return {k: statistics.median(v) for k, v in rows.items()}


def main():
    subprocess.run(["cargo", "build", "-q", "--profile", "dist", "--features", "tls",
                    "--example", "hello", "--example", "bare_hyper"], cwd=ROOT, check=True)
    with tempfile.TemporaryDirectory() as dir:
        cert, key = certificates(dir)
        m = figures(cert, key)
    lines = ["", f"## HTTPS (bench/tls.py; {ROUNDS} rounds, medians)", "",
             "| what | bare hyper + tokio-rustls | multinode n=1 | multinode n=2 |",
             "| --- | --- | --- | --- |",
             f"| keep-alive req/s (wrk -t1 -c64) | {m['keep-alive bare']:.0f} | "
             f"{m['keep-alive n=1']:.0f} ({m['keep-alive n=1'] / m['keep-alive bare']:.2f} ×) | |",
             f"| full handshakes/s (s_time -new) | {m['full bare']:.0f} | {m['full n=1']:.0f} | "
             f"{m['full n=2']:.0f} |",
             "", "| resumption across 4 nodes (s_time -reuse) | handshakes/s | resumed |",
             "| --- | --- | --- |",
             f"| shared ticket keys (the default) | {m['resumed shared']:.0f} | "
             f"{m['resumed share shared'] * 100:.0f} % |",
             f"| per-node keys (MULTINODE_TLS_TICKETS=node) | {m['resumed per-node']:.0f} | "
             f"{m['resumed share per-node'] * 100:.0f} % |"]
    section = "\n".join(lines) + "\n"
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "tls.md"), "w") as f:
        f.write(section)
    print(section)


if __name__ == "__main__":
    main()

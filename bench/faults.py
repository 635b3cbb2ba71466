#!/usr/bin/env python3
"""The faults section of the benchmark: fresh-connection load (wrk -t1 -c16,
`Connection: close`) on 4 nodes while one node is stopped, drains after SIGTTOU,
or while a SIGHUP reload runs, for each balance mode and Node's cluster where it
has the situation, side by side with the healthy figure of the same run; and
normal requests under a slow-loris flood of 2000 connections.

Run by bench/run.py, or alone (after bench/run.sh built the dist examples):
python3 bench/faults.py. Writes bench/results/faults.md.
"""
import os
import signal
import socket
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import OUT, QUICK, SERVERS, Server, hello, wrk  # noqa: E402

SECONDS = 2 if QUICK else 4
SLOW = 8  # long requests in flight during a drain or a reload
LORIS = 2000


def slow_requests(port, n, ms):
    """`n` requests that take `ms` each, in threads; returns the threads."""
    def one():
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/slow?ms={ms}", timeout=30).read()
        except OSError:
            pass
    threads = [threading.Thread(target=one, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    time.sleep(0.3)  # they reached their nodes
    return threads


def situation(name, command, env, what):
    """One run: start, set up `what`, measure, undo, stop."""
    server = Server(command, env)
    workers = server.pids()[1:]
    if what == "stopped":
        os.kill(workers[0], signal.SIGSTOP)
    elif what == "draining":
        slow_requests(server.port, SLOW, 8000)
        server.proc.send_signal(signal.SIGTTOU)
        time.sleep(0.1)
    elif what == "reload":
        slow_requests(server.port, SLOW, 8000)
        server.proc.send_signal(signal.SIGHUP)
    result = wrk(server.port, 16, SECONDS, close=True)
    if what == "stopped":
        os.kill(workers[0], signal.SIGCONT)
    server.stop()
    print(f"  {name:22} {what:10} {result['rps']:>9.0f} req/s  p99 {result['p99_ms']:7.2f} ms"
          f"  err {result['errors']}", flush=True)
    return result


def loris(command, env):
    """Normal requests while LORIS connections send half a request head and wait."""
    server = Server(command, env)
    flood = []
    for _ in range(LORIS):
        s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        flood.append(s)
    time.sleep(1)  # until the nodes took them from the backlog
    result = wrk(server.port, 16, SECONDS, close=True)
    for s in flood:
        s.close()
    server.stop()
    print(f"  under {LORIS} slow-loris connections: {result['rps']:.0f} req/s, "
          f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, err {result['errors']}",
          flush=True)
    return result


def figures():
    print("faults: 4 nodes, wrk -t1 -c16, Connection: close", flush=True)
    rows = []
    cases = [(f"multinode {mode}", hello(4, mode), ["stopped", "draining", "reload"])
             for mode in ("least_conn", "reuse_port", "shared")]
    cases.append(("node cluster w=4", SERVERS["node cluster w=4"], ["stopped"]))
    for name, (command, env), situations in cases:
        healthy = situation(name, command, env, "healthy")
        for what in situations:
            r = situation(name, command, env, what)
            rows.append((name, what, r, healthy))
    base = situation("multinode least_conn", *hello(4), "healthy")
    flood = loris(*hello(4))
    lines = ["", f"## Faults (4 nodes, wrk -t1 -c16 {SECONDS} s, a new connection per request)", "",
             "| server | situation | req/s | × healthy | p99 ms | × healthy p99 | errors |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, what, r, h in rows:
        lines.append(f"| {name} | {what} | {r['rps']:.0f} | {r['rps'] / h['rps']:.2f} | "
                     f"{r['p99_ms']:.2f} | {r['p99_ms'] / h['p99_ms']:.1f} | {r['errors']} |")
    lines += ["", f"- healthy = the same server's run just before, in the same round; "
              f"stopped = one worker SIGSTOPped; draining = SIGTTOU with {SLOW} requests of 8 s "
              f"in flight; reload = SIGHUP with {SLOW} requests of 8 s in flight",
              f"- normal requests under {LORIS} slow-loris connections (least_conn): "
              f"{flood['rps']:.0f} req/s ({flood['rps'] / base['rps']:.2f} × healthy), "
              f"p50 {flood['p50_ms']:.2f} ms, p99 {flood['p99_ms']:.2f} ms "
              f"(healthy p99 {base['p99_ms']:.2f} ms), errors {flood['errors']}"]
    return lines


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    section = "\n".join(figures()) + "\n"
    with open(os.path.join(OUT, "faults.md"), "w") as f:
        f.write(section)
    print(section)

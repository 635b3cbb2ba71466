#!/usr/bin/env python3
"""The cost of metrics in req/s: hello (dist profile) with 4 nodes, without and
with the admin listener (scraped once a second meanwhile, as a busy Prometheus
would), side by side: rounds alternate, each `wrk -t2 -c64 -d5s`.

    cargo build --profile dist --example hello && python3 bench/admin_ab.py
"""
import os
import re
import signal
import socket
import statistics
import subprocess
import threading
import time
import urllib.request

HELLO = "target/dist/examples/hello"
ROUNDS = int(os.environ.get("ROUNDS", "3"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one(admin):
    port = free_port()
    env = dict(os.environ, MULTINODE_PORT=str(port), MULTINODE_NODES="4", RUST_LOG="warn")
    admin_port = free_port() if admin else None
    if admin:
        env["MULTINODE_ADMIN"] = f"127.0.0.1:{admin_port}"
    server = subprocess.Popen([HELLO], env=env, stderr=subprocess.DEVNULL, start_new_session=True)
    stop = threading.Event()
    try:
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        time.sleep(0.3)

        def scrape():
            while not stop.wait(1.0):
                urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5).read()

        if admin:
            threading.Thread(target=scrape, daemon=True).start()
        out = subprocess.run(["wrk", "-t2", "-c64", "-d5s", f"http://127.0.0.1:{port}/"],
                             capture_output=True, text=True, check=True).stdout
        return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    finally:
        stop.set()
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def main():
    off, on = [], []
    for _ in range(ROUNDS):
        off.append(one(False))
        on.append(one(True))
    print(f"req/s without the admin listener: {[round(x) for x in off]}, median {statistics.median(off):.0f}")
    print(f"req/s with it, scraped every second: {[round(x) for x in on]}, median {statistics.median(on):.0f}")
    print(f"with / without: {statistics.median(on) / statistics.median(off):.3f}")


if __name__ == "__main__":
    main()

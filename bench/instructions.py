#!/usr/bin/env python3
"""Instructions per request, counted by callgrind: `hello` with one node against
bare hyper (same handler). Unlike req/s on a shared VM, the count is the same from
one run to the next, so it shows small changes. User-space instructions only: the
kernel's share of a request (the same system calls for both) is not in it.

    bench/instructions.sh             # builds in release mode, installs valgrind if missing
    PROFILE=dist bench/instructions.sh  # the profile bench/run.sh measures (fat LTO)
    HELLO=path/to/hello bench/instructions.sh  # another build of hello (an older commit)

Each server runs under `valgrind --tool=callgrind` with instrumentation off; 16
keep-alive connections send 800 requests to warm it up, instrumentation is turned
on, 4000 more requests are sent, and the count is dumped. Also a worker (node 1 of
2, both under callgrind, the sticky balance and a client address that it sends
to node 1): only its count, over the requests its /metrics line says it served
meanwhile."""

import glob
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

WARM_UP, MEASURED, CONNECTIONS = 800, 4000, 16
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def ask(s):
    """One request on connection `s`: the answer's body."""
    s.sendall(REQUEST)
    buf = b""
    while True:
        head_end = buf.find(b"\r\n\r\n")
        if head_end >= 0:
            length = int(re.search(rb"(?i)content-length:\s*(\d+)", buf[:head_end]).group(1))
            if len(buf) >= head_end + 4 + length:
                return buf[head_end + 4:head_end + 4 + length]
        data = s.recv(65536)
        if not data:
            raise RuntimeError("the server closed the connection")
        buf += data


def connect(port, source="127.0.0.1", node=None):
    """CONNECTIONS keep-alive connections from the address `source`; with
    `node`, each one answered by that node. A worker under callgrind can be slow
    enough to accept that the master hands what waits in its queue to another
    node (supervisor/rescue.rs): such a connection is replaced, and the same
    connections are used for the warm-up and the count."""
    connections, deadline = [], time.monotonic() + 60
    while len(connections) < CONNECTIONS:
        if time.monotonic() > deadline:
            sys.exit(f"no {CONNECTIONS} connections answered by node {node} within 60 s")
        s = socket.create_connection(("127.0.0.1", port), source_address=(source, 0))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if node is None or ask(s).startswith(f"hello from node {node} ".encode()):
            connections.append(s)
        else:
            s.close()
    return connections


def load(connections, total):
    """`total` requests over `connections`, one thread each, each answer read whole."""
    threads = [threading.Thread(target=lambda s=s: [ask(s) for _ in range(total // len(connections))])
               for s in connections]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def wait_for(name, server, log, pattern):
    """The first match of `pattern` in the server's log, within a minute."""
    deadline = time.monotonic() + 60
    while True:
        log.seek(0)
        found = re.search(pattern, log.read())
        if found:
            return found
        if time.monotonic() > deadline or server.poll() is not None:
            log.seek(0)
            sys.exit(f"{name} did not start:\n{log.read()}")
        time.sleep(0.1)


def of_worker(admin, metric):
    """Node 1's line of `metric`, from the admin listener's /metrics."""
    with socket.create_connection(("127.0.0.1", admin)) as s:
        s.sendall(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        text = b"".join(iter(lambda: s.recv(65536), b"")).decode()
    return int(re.search(rf'^{metric}\{{node="1"\}} (\d+)', text, re.M).group(1))


def worker_source(port):
    """A loopback address that the sticky balance sends to node 1: then the
    worker gets all the connections, as the one node does in the n=1 run."""
    for last in range(2, 255):
        source = f"127.0.0.{last}"
        with socket.create_connection(("127.0.0.1", port), source_address=(source, 0)) as s:
            s.sendall(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            answer = b"".join(iter(lambda: s.recv(65536), b""))
        if b"hello from node 1 " in answer:
            return source
    sys.exit("no loopback address reached node 1")


def instructions_per_request(name, command, env, worker=False):
    """Per request of the server, or with `worker` of its node 1 (a worker
    process, the master's child): its count over what /metrics says it served."""
    out = tempfile.mkdtemp(prefix=f"callgrind-{name}-")
    log = open(os.path.join(out, "log"), "w+")
    trace = ["--trace-children=yes"] if worker else []
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", *trace,
         f"--callgrind-out-file={out}/cg.%p", command],
        env=dict(os.environ, **env), stdout=log, stderr=log, start_new_session=True)
    try:
        port = int(wait_for(name, server, log, r"listening on http://127\.0\.0\.1:(\d+)").group(1))
        pid = server.pid
        if worker:
            wait_for(name, server, log, r"all 2 nodes ready")
            pid = int(wait_for(name, server, log, r"node started node=1 generation=1 pid=(\d+)").group(1))
            admin = int(wait_for(name, server, log, r"admin on http://127\.0\.0\.1:(\d+)").group(1))
        source = worker_source(port) if worker else "127.0.0.1"
        connections = connect(port, source, 1 if worker else None)
        load(connections, WARM_UP)
        before = of_worker(admin, "multinode_node_requests_total") if worker else 0
        subprocess.run(["callgrind_control", "-i", "on", str(pid)], check=True, capture_output=True)
        load(connections, MEASURED)
        subprocess.run(["callgrind_control", "--dump", str(pid)], check=True, capture_output=True)
        served = of_worker(admin, "multinode_node_requests_total") - before if worker else MEASURED
        if served != MEASURED:
            sys.exit(f"{name}: node 1 served {served} of the {MEASURED} requests")
        dumps = glob.glob(f"{out}/cg.{pid}.1")
        if not dumps:
            sys.exit(f"{name}: callgrind wrote no dump in {out}")
        total = int(re.search(r"^(?:summary|totals): (\d+)", open(dumps[0]).read(), re.M).group(1))
        return total / served
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def main():
    examples = f"target/{os.environ.get('PROFILE', 'release')}/examples"
    hello = os.environ.get("HELLO", f"{examples}/hello")
    multinode = instructions_per_request(
        "hello", hello, {"MULTINODE_PORT": "0", "MULTINODE_NODES": "1"})
    # With the admin listener on (metrics, status page): the same request path.
    admin = instructions_per_request(
        "hello-admin", hello,
        {"MULTINODE_PORT": "0", "MULTINODE_NODES": "1", "MULTINODE_ADMIN": "127.0.0.1:0"})
    # A worker: a process of one thread, where the master has a second (its
    # supervisor), which sends glibc's system calls through their slow path.
    worker = instructions_per_request(
        "hello-worker", hello,
        {"MULTINODE_PORT": "0", "MULTINODE_NODES": "2", "MULTINODE_ADMIN": "127.0.0.1:0",
         "MULTINODE_BALANCE": "sticky"},
        worker=True)
    bare = instructions_per_request("bare", f"{examples}/bare_hyper", {"PORT": "0"})
    print(f"instructions per request: multinode n=1 {multinode:.0f}, with the admin listener "
          f"{admin:.0f} ({admin / multinode:.4f}), a worker of n=2 {worker:.0f}, "
          f"bare hyper {bare:.0f}, bare / multinode = {bare / multinode:.3f}, "
          f"bare / worker = {bare / worker:.3f}")


if __name__ == "__main__":
    main()

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
on, 4000 more requests are sent, and the count is dumped."""

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


def load(port, total):
    """`total` requests over CONNECTIONS keep-alive connections, each answer read whole."""

    def one_connection(count):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            buf = b""
            for _ in range(count):
                s.sendall(REQUEST)
                while True:
                    head_end = buf.find(b"\r\n\r\n")
                    if head_end >= 0:
                        length = int(re.search(rb"(?i)content-length:\s*(\d+)", buf[:head_end]).group(1))
                        if len(buf) >= head_end + 4 + length:
                            buf = buf[head_end + 4 + length:]
                            break
                    data = s.recv(65536)
                    if not data:
                        raise RuntimeError("the server closed the connection")
                    buf += data

    threads = [threading.Thread(target=one_connection, args=(total // CONNECTIONS,)) for _ in range(CONNECTIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def instructions_per_request(name, command, env):
    out = tempfile.mkdtemp(prefix=f"callgrind-{name}-")
    log = open(os.path.join(out, "log"), "w+")
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}/cg.%p", command],
        env=dict(os.environ, **env), stdout=log, stderr=log, start_new_session=True)
    try:
        port = None
        deadline = time.monotonic() + 60
        while port is None:
            if time.monotonic() > deadline or server.poll() is not None:
                log.seek(0)
                sys.exit(f"{name} did not start:\n{log.read()}")
            log.seek(0)
            found = re.search(r"listening on http://127\.0\.0\.1:(\d+)", log.read())
            port = found and int(found.group(1))
            time.sleep(0.1)
        load(port, WARM_UP)
        subprocess.run(["callgrind_control", "-i", "on", str(server.pid)], check=True, capture_output=True)
        load(port, MEASURED)
        subprocess.run(["callgrind_control", "--dump", str(server.pid)], check=True, capture_output=True)
        dumps = glob.glob(f"{out}/cg.{server.pid}.1")
        if not dumps:
            sys.exit(f"{name}: callgrind wrote no dump in {out}")
        total = int(re.search(r"^(?:summary|totals): (\d+)", open(dumps[0]).read(), re.M).group(1))
        return total / MEASURED
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
    bare = instructions_per_request("bare", f"{examples}/bare_hyper", {"PORT": "0"})
    print(f"instructions per request: multinode n=1 {multinode:.0f}, with the admin listener "
          f"{admin:.0f} ({admin / multinode:.4f}), bare hyper {bare:.0f}, "
          f"bare / multinode = {bare / multinode:.3f}")


if __name__ == "__main__":
    main()

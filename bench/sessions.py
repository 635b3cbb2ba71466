#!/usr/bin/env python3
"""The replicated map and the sessions example, side by side in one run
(rounds alternate the servers):

- a read of the map in ns against a HashMap behind a RwLock, and a bare one
  (bench/map_bench.rs);
- a write's time until the 3 other nodes have it, p50 and p99, against the
  mesh's broadcast to 3 nodes and the bare socketpair floor to 3 processes
  (bench/mesh_bench/, ONLY=broadcast);
- examples/sessions under wrk (1 thread, 64 keep-alive connections, 5 s), one
  logged-in session: GET / (a read) and POST /count (a write), with 4 nodes
  and with 1, against the same app keeping its sessions in one
  Mutex<HashMap> in one process (SESSIONS_STORE=local).

Builds the dist examples; writes bench/results/sessions.md.
python3 bench/sessions.py  (ROUNDS=3 by default)
"""
import os
import re
import signal
import statistics
import subprocess
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "target", "dist", "examples")
ROUNDS = int(os.environ.get("ROUNDS", "3"))
SECONDS = int(os.environ.get("SECONDS", "5"))


def start(env):
    """Starts the sessions example; its address once every node is ready."""
    proc = subprocess.Popen([os.path.join(EXAMPLES, "sessions")],
                            env=dict(os.environ, MULTINODE_PORT="0", RUST_LOG="info", **env),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 10
    while time.time() < deadline:
        line = proc.stderr.readline()
        found = re.search(r"listening on http://(\S+)", line)
        if found:
            while "nodes ready" not in proc.stderr.readline():
                pass
            subprocess.Popen(["cat"], stdin=proc.stderr, stdout=subprocess.DEVNULL)
            return proc, found.group(1)
    stop(proc)
    raise RuntimeError("sessions did not start")


def stop(proc):
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args):
        return None


def login(addr):
    opener = urllib.request.build_opener(NoRedirect)
    try:
        opener.open(f"http://{addr}/login", data=b"user=bench")
    except urllib.error.HTTPError as answer:  # the 303
        return answer.headers["Set-Cookie"].split(";")[0]
    raise RuntimeError("no redirect after the login")


def wrk(addr, cookie, script):
    out = subprocess.run(["wrk", "-t1", "-c64", f"-d{SECONDS}s", "-s", script,
                          "-H", f"Cookie: {cookie}", f"http://{addr}/"],
                         capture_output=True, text=True, check=True).stdout
    assert "Non-2xx" not in out, out
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def csv(name, env=None):
    out = subprocess.run([os.path.join(EXAMPLES, name)], env=dict(os.environ, **(env or {})),
                         capture_output=True, text=True, check=True, timeout=300).stdout
    return [line.split(",") for line in out.splitlines() if line.startswith(("map,", "mesh,"))]


def figures(scripts):
    rows = {}

    def add(what, value):
        rows.setdefault(what, []).append(float(value))

    for round in range(ROUNDS):
        for fields in csv("map_bench"):
            add(f"{fields[1]} {fields[-2]}", fields[-1])
        for fields in csv("mesh_bench", {"ONLY": "broadcast"}):
            add(f"{fields[1]} {fields[2]}", fields[3])
        servers = [("local", {"SESSIONS_STORE": "local", "MULTINODE_NODES": "1"}),
                   ("map n=1", {"MULTINODE_NODES": "1"}), ("map n=4", {"MULTINODE_NODES": "4"})]
        if round % 2:
            servers.reverse()
        for label, env in servers:
            proc, addr = start(env)
            try:
                cookie = login(addr)
                for what, script in scripts.items():
                    add(f"{what} {label}", wrk(addr, cookie, script))
            finally:
                stop(proc)
        print(f"  round {round + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in rows.items()),
              flush=True)
    return {k: statistics.median(v) for k, v in rows.items()}


def main():
    subprocess.run(["cargo", "build", "-q", "--profile", "dist", "--example", "sessions",
                    "--example", "map_bench", "--example", "mesh_bench"], cwd=ROOT, check=True)
    with tempfile.TemporaryDirectory() as dir:
        scripts = {}
        for what, lua in [("read", ""), ("write", 'wrk.method = "POST"\nwrk.path = "/count"\n')]:
            scripts[what] = os.path.join(dir, f"{what}.lua")
            with open(scripts[what], "w") as f:
                f.write(lua)
        m = figures(scripts)
    r = lambda a, b: f"{m[a] / m[b]:.2f} ×"
    lines = ["", f"## The replicated map and examples/sessions (bench/sessions.py; {ROUNDS} rounds, medians)",
             "", "| read of one key among 10 000, cloned | ns |", "| --- | --- |",
             f"| `Map::get` | {m['read map_ns']:.1f} ({r('read map_ns', 'read rwlock_hashmap_ns')} the RwLock's) |",
             f"| `RwLock<HashMap>` read, get | {m['read rwlock_hashmap_ns']:.1f} |",
             f"| `HashMap::get` | {m['read hashmap_ns']:.1f} |",
             "", "| until the 3 other nodes have it | p50 µs | p99 µs |", "| --- | --- | --- |",
             f"| a map write (`Map::insert`) | {m['write to 3 nodes p50_us']:.1f} | {m['write to 3 nodes p99_us']:.1f} |",
             f"| a mesh broadcast (`Sender::broadcast`) | {m['broadcast to 3 nodes p50_us']:.1f} | {m['broadcast to 3 nodes p99_us']:.1f} |",
             f"| bare socketpairs to 3 processes (floor) | {m['bare broadcast to 3 processes p50_us']:.1f} | {m['bare broadcast to 3 processes p99_us']:.1f} |",
             "", "| examples/sessions, wrk -t1 -c64, req/s | GET / (read) | POST /count (write) |",
             "| --- | --- | --- |",
             f"| one process, `Mutex<HashMap>` | {m['read local']:.0f} | {m['write local']:.0f} |",
             f"| 1 node, `multinode::map` | {m['read map n=1']:.0f} ({r('read map n=1', 'read local')}) | {m['write map n=1']:.0f} ({r('write map n=1', 'write local')}) |",
             f"| 4 nodes, `multinode::map` | {m['read map n=4']:.0f} ({r('read map n=4', 'read local')}) | {m['write map n=4']:.0f} ({r('write map n=4', 'write local')}) |"]
    section = "\n".join(lines) + "\n"
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "sessions.md"), "w") as f:
        f.write(section)
    print(section)


if __name__ == "__main__":
    main()

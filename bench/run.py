#!/usr/bin/env python3
"""The benchmark: multinode's hello against bare hyper and Node's cluster, and
the spread of load over nodes. Run by bench/run.sh (which installs and builds).

Every server runs on a free loopback port; wrk -t1 drives it for a bounded time.
Servers are interleaved within each round, and rounds repeat, so that the noise
of this 2-core machine shows as min/median/max. Writes bench/results/.
"""
import csv
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = os.environ.get("QUICK") == "1"
ROUNDS = 1 if QUICK else int(os.environ.get("ROUNDS", "3"))
SECONDS = 2 if QUICK else int(os.environ.get("SECONDS", "5"))
CONNECTIONS = [64] if QUICK else [64, 256]
OUT = os.path.join(ROOT, "bench", "results")
EXAMPLES = os.path.join(ROOT, "target", "dist", "examples")
CLK = os.sysconf("SC_CLK_TCK")


def hello(nodes, balance="least_conn"):
    env = {"MULTINODE_NODES": str(nodes), "MULTINODE_BALANCE": balance, "RUST_LOG": "info"}
    return ([os.path.join(EXAMPLES, "hello")], env)


SERVERS = {
    "multinode n=1": hello(1),
    "multinode n=2": hello(2),
    "multinode n=4": hello(4),
    "bare hyper": ([os.path.join(EXAMPLES, "bare_hyper")], {"PORT": "0"}),
    # Thread per core (TechEmpower's hyper setup): one process, a current_thread
    # runtime and a SO_REUSEPORT listener per thread: what processes cost.
    "bare hyper threads=2": ([os.path.join(EXAMPLES, "bare_hyper")], {"PORT": "0", "THREADS": "2"}),
    "bare hyper threads=4": ([os.path.join(EXAMPLES, "bare_hyper")], {"PORT": "0", "THREADS": "4"}),
    "node single": (["node", os.path.join(ROOT, "bench", "node_cluster.js")], {"WORKERS": "0", "PORT": "0"}),
    "node cluster w=2": (["node", os.path.join(ROOT, "bench", "node_cluster.js")], {"WORKERS": "2", "PORT": "0"}),
    "node cluster w=4": (["node", os.path.join(ROOT, "bench", "node_cluster.js")], {"WORKERS": "4", "PORT": "0"}),
}
SPREAD = {
    "multinode least_conn": hello(4, "least_conn"),
    "multinode reuse_port": hello(4, "reuse_port"),
    "multinode shared": hello(4, "shared"),
    "node cluster w=4": SERVERS["node cluster w=4"],
}


class Server:
    """A server process (a process group of its own) and its stderr."""

    def __init__(self, command, env):
        self.log_path = os.path.join(OUT, "server.log")
        self.log = open(self.log_path, "w+")
        full_env = dict(os.environ, MULTINODE_PORT="0", **env)
        self.started = time.monotonic()
        self.proc = subprocess.Popen(command, env=full_env, stdout=subprocess.DEVNULL,
                                     stderr=self.log, start_new_session=True)
        self.port = self.wait_port()

    def text(self):
        with open(self.log_path) as f:
            return f.read()

    def wait_port(self):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            m = re.search(r"listening on http://[\d.]+:(\d+)", self.text())
            if m and (("multinode" not in self.text()) or "nodes ready" in self.text()):
                return int(m.group(1))
            if self.proc.poll() is not None:
                raise RuntimeError("server exited:\n" + self.text())
            time.sleep(0.01)
        raise RuntimeError("server did not start:\n" + self.text())

    def pids(self):
        """The server's processes: the leader and its children."""
        pids = [self.proc.pid]
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = open(f"/proc/{entry}/stat").read()
                except OSError:
                    continue
                if stat.rsplit(") ", 1)[1].split()[1] == str(self.proc.pid):
                    pids.append(int(entry))
        return pids

    def cpu_ticks(self):
        total = 0
        for pid in self.pids():
            try:
                fields = open(f"/proc/{pid}/stat").read().rsplit(") ", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
            except OSError:
                pass
        return total

    def stop(self):
        """SIGTERM, wait; returns {node: (connections, requests)}."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        time.sleep(0.2)  # node's workers print after the primary exits
        totals = {}
        for m in re.finditer(r"node totals node=(\d+) connections=(\d+) requests=(\d+)", self.text()):
            totals[int(m.group(1))] = (int(m.group(2)), int(m.group(3)))
        self.log.close()
        return totals


def wrk(port, connections, seconds, close=False):
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    if close:
        command += ["-H", "Connection: close"]
    out = subprocess.run(command + [f"http://127.0.0.1:{port}/"], capture_output=True,
                         text=True, timeout=seconds + 30).stdout

    def latency(pct):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
        return float(m.group(1)) * scale[m.group(2)] if m else float("nan")

    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(m.group(1)) if m else 0
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return {"rps": rps, "p50_ms": latency(50), "p99_ms": latency(99), "errors": errors}


def jain(values):
    values = list(values)
    square = sum(v * v for v in values)
    return (sum(values) ** 2) / (len(values) * square) if square else float("nan")


def measure(name, command, env, connections, close=False):
    server = Server(command, env)
    before = server.cpu_ticks()
    result = wrk(server.port, connections, SECONDS, close)
    cpu = (server.cpu_ticks() - before) / CLK / SECONDS * 100
    totals = server.stop()
    result.update(server=name, connections=connections, load="close" if close else "keep-alive",
                  cpu_pct=cpu, per_node=totals,
                  jain_conn=jain(c for c, _ in totals.values()),
                  jain_req=jain(r for _, r in totals.values()))
    print(f"  {name:22} c={connections:<3} {result['load']:10} {result['rps']:>10.0f} req/s "
          f"p99 {result['p99_ms']:7.2f} ms  err {result['errors']}  cpu {cpu:4.0f}%  "
          f"nodes {sorted(totals.items())}", flush=True)
    return result


def startup(command, env, expected, tries):
    """Median time from exec to `expected` distinct pids answering."""
    times = []
    for _ in range(tries):
        full_env = dict(os.environ, MULTINODE_PORT="0", **env)
        start = time.monotonic()
        log = open(os.path.join(OUT, "startup.log"), "w+")
        proc = subprocess.Popen(command, env=full_env, stdout=subprocess.DEVNULL, stderr=log,
                                start_new_session=True)
        port, pids = None, set()
        deadline = start + 20
        while len(pids) < expected and time.monotonic() < deadline:
            if port is None:
                log.seek(0)
                m = re.search(r"listening on http://[\d.]+:(\d+)", log.read())
                port = int(m.group(1)) if m else None
                continue
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read().decode()
                pids.add(re.search(r"pid (\d+)", body).group(1))
            except OSError:
                pass
        times.append((time.monotonic() - start) * 1000)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
    return statistics.median(times)


def rss_mib(command, env):
    """Median (RSS, private RSS) of the worker processes after a short load, MiB.
    Private (RssAnon) excludes the binary's and libraries' pages, which the page
    cache shares between processes."""
    server = Server(command, env)
    wrk(server.port, 64, 1)
    rss, private = [], []
    for pid in server.pids()[1:]:
        status = open(f"/proc/{pid}/status").read()
        rss.append(int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024)
        private.append(int(re.search(r"RssAnon:\s+(\d+)", status).group(1)) / 1024)
    server.stop()
    return statistics.median(rss), statistics.median(private)


def mesh_figures():
    """Runs bench/mesh_bench/ (4 nodes; it measures and exits) and reads its
    `mesh,...` lines: msgs/s per round for the mesh and a bare socketpair with the
    same framing, and broadcast latency percentiles. Writes mesh.csv."""
    env = dict(os.environ, MULTINODE_PORT="0", RUST_LOG="warn")
    out = subprocess.run([os.path.join(EXAMPLES, "mesh_bench")], env=env, capture_output=True,
                         text=True, timeout=600, check=True).stdout
    rows = [line.split(",")[1:] for line in out.splitlines() if line.startswith("mesh,")]
    with open(os.path.join(OUT, "mesh.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["what", "figure", "value", "more"])
        for row in rows:
            writer.writerow(row[:3] + [" ".join(row[3:])])
    rates, latency = {}, {}
    for row in rows:
        if row[1] == "msgs_per_s":
            rates.setdefault(row[0], []).append(float(row[2]))
        else:
            latency[row[0], row[1]] = float(row[2])
    lines = ["", "## Mesh (bench/mesh_bench/: node 1 to node 0; min / median / max msgs/s)", "",
             "| path | msgs/s | MB/s (median) | mesh / bare (medians) |", "| --- | --- | --- | --- |"]
    for size, payload in ((64, ""), (4096, ""), (64, " array")):
        mesh, bare = rates[f"mesh {size} B{payload}"], rates[f"bare socketpair {size} B{payload}"]
        kind = ", `[u8; 64]` payload" if payload else ""
        for name, values in ((f"mesh, {size} B{kind}", mesh), (f"bare socketpair, {size} B{kind}", bare)):
            ratio = statistics.median(mesh) / statistics.median(bare) if values is mesh else 1
            lines.append(f"| {name} | {spread(values)} | {statistics.median(values) * size / 1e6:.0f} | "
                         f"{ratio:.2f} |")
    for what, label in (("broadcast to 3 nodes", "Broadcast from node 0 to 3 nodes, until the last has it"),
                        ("bare broadcast to 3 threads", "The same over bare socketpairs to 3 threads in a blocking read (the floor)"),
                        ("bare broadcast to 3 processes", "The same to 3 processes in a blocking read (the floor for processes)"),
                        ("bare broadcast to 3 tokio processes", "The same to 3 processes, each reading on a current_thread tokio runtime (the floor for async receivers)"),
                        ("round trip to 3 nodes", "A request from node 0 to 3 nodes, until the last answer is back")):
        lines.append(f"\n{label}: p50 {latency[what, 'p50_us']:.1f} µs, "
                     f"p99 {latency[what, 'p99_us']:.1f} µs")
    floor = "bare broadcast to 3 processes"
    lines.append("\nBroadcast / the floor for processes, measured by turns in one run: "
                 f"p50 {latency['broadcast to 3 nodes', 'p50_us'] / latency[floor, 'p50_us']:.2f}, "
                 f"p99 {latency['broadcast to 3 nodes', 'p99_us'] / latency[floor, 'p99_us']:.2f}")
    return lines


def spread(values):
    return f"{min(values):.0f} / {statistics.median(values):.0f} / {max(values):.0f}"


def main():
    os.makedirs(OUT, exist_ok=True)
    runs = []
    for round_ in range(ROUNDS):
        print(f"round {round_ + 1}/{ROUNDS}: throughput", flush=True)
        for c in CONNECTIONS:
            for name, (command, env) in SERVERS.items():
                runs.append(measure(name, command, env, c) | {"round": round_ + 1, "part": "throughput"})
        print(f"round {round_ + 1}/{ROUNDS}: spread over 4 nodes, c=64", flush=True)
        for close in (False, True):
            for name, (command, env) in SPREAD.items():
                runs.append(measure(name, command, env, 64, close) | {"round": round_ + 1, "part": "spread"})

    with open(os.path.join(OUT, "results.csv"), "w", newline="") as f:
        fields = ["part", "round", "server", "connections", "load", "rps", "p50_ms", "p99_ms",
                  "errors", "cpu_pct", "jain_conn", "jain_req", "per_node"]
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for run in runs:
            row = {k: run[k] for k in fields if k != "per_node"}
            row["per_node"] = " ".join(f"{n}:{c}/{r}" for n, (c, r) in sorted(run["per_node"].items()))
            writer.writerow(row)

    def group(part):
        keys = []
        for run in runs:
            key = (run["server"], run["connections"], run["load"])
            if run["part"] == part and key not in keys:
                keys.append(key)
        return [(k, [r for r in runs if r["part"] == part and (r["server"], r["connections"], r["load"]) == k])
                for k in keys]

    lines = [f"## Throughput (wrk -t1, {SECONDS} s, {ROUNDS} rounds; min / median / max)", "",
             "| server | c | req/s | p50 ms | p99 ms | errors | server CPU % |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    medians = {}
    for (server, c, load), rs in group("throughput"):
        medians[(server, c)] = statistics.median(r["rps"] for r in rs)
        lines.append(f"| {server} | {c} | {spread([r['rps'] for r in rs])} | "
                     f"{statistics.median(r['p50_ms'] for r in rs):.2f} | "
                     f"{statistics.median(r['p99_ms'] for r in rs):.2f} | "
                     f"{sum(r['errors'] for r in rs)} | {statistics.median(r['cpu_pct'] for r in rs):.0f} |")
    lines += ["", "## Spread over 4 nodes, c=64 (Jain index: 1 is perfectly fair)", "",
              "| mode | load | req/s | Jain connections | Jain requests | connections per node (last round) |",
              "| --- | --- | --- | --- | --- | --- |"]
    for (server, c, load), rs in group("spread"):
        last = sorted(rs[-1]["per_node"].items())
        lines.append(f"| {server} | {load} | {spread([r['rps'] for r in rs])} | "
                     f"{min(r['jain_conn'] for r in rs):.3f} – {max(r['jain_conn'] for r in rs):.3f} | "
                     f"{min(r['jain_req'] for r in rs):.3f} – {max(r['jain_req'] for r in rs):.3f} | "
                     f"{' '.join(str(c) for _, (c, _) in last)} |")

    tries = 3 if QUICK else 10
    up_mn = startup(*hello(4), 4, tries)
    up_node = startup(*SERVERS["node cluster w=4"], 4, tries)
    rss_mn = rss_mib(*hello(4))
    rss_node = rss_mib(*SERVERS["node cluster w=4"])
    c = CONNECTIONS[0]
    p99 = {}
    for (server, conns, load), rs in group("throughput"):
        p99[(server, conns)] = statistics.median(r["p99_ms"] for r in rs)
    threads = [f"multinode n={n} / bare hyper threads={n} = "
               f"{medians[(f'multinode n={n}', cc)] / medians[(f'bare hyper threads={n}', cc)]:.2f} req/s, "
               f"{p99[(f'multinode n={n}', cc)] / p99[(f'bare hyper threads={n}', cc)]:.2f} p99 at c={cc}"
               for n in (2, 4) for cc in CONNECTIONS]
    lines += ["", "## Other figures", "",
              "- processes against threads (medians): " + "; ".join(threads),
              f"- exec to 4 nodes answering (median of {tries}): multinode {up_mn:.1f} ms, "
              f"node cluster {up_node:.1f} ms",
              f"- RSS per worker process (median): multinode {rss_mn[0]:.1f} MiB ({rss_mn[1]:.2f} MiB private), "
              f"node cluster {rss_node[0]:.1f} MiB ({rss_node[1]:.2f} MiB private)",
              f"- ratios at c={c} (medians): multinode n=1 / bare hyper = "
              f"{medians[('multinode n=1', c)] / medians[('bare hyper', c)]:.3f}; "
              f"multinode n=2 / node cluster w=2 = "
              f"{medians[('multinode n=2', c)] / medians[('node cluster w=2', c)]:.2f}; "
              f"multinode n=4 / node cluster w=4 = "
              f"{medians[('multinode n=4', c)] / medians[('node cluster w=4', c)]:.2f}"]
    import faults  # the faults section, also runnable alone
    lines += faults.figures()
    lines += mesh_figures()
    import cluster  # the cross-machine section, also runnable alone
    lines += cluster.figures()
    report = "\n".join(lines) + "\n"
    with open(os.path.join(OUT, "report.md"), "w") as f:
        f.write(report)
    chart(medians, group("spread"))
    print("\n" + report)
    print(f"written: {OUT}/results.csv, report.md, chart.svg")


def chart(medians, spread_groups):
    """Two panels: req/s per server (c=64), and per-node request shares at 4 nodes."""
    c = CONNECTIONS[0]
    servers = [s for s in SERVERS if (s, c) in medians]
    top = max(medians[(s, c)] for s in servers)
    width, bar = 760, 26
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{90 + 34 * (len(servers) + len(spread_groups))}" '
           'font-family="sans-serif" font-size="13">',
           f'<text x="10" y="22" font-size="16" font-weight="bold">Requests/s, hello, wrk -t1 -c{c} (median of rounds)</text>']
    y = 40
    for s in servers:
        w = 440 * medians[(s, c)] / top
        color = "#2a7ae2" if s.startswith("multinode") else "#999"
        svg += [f'<text x="10" y="{y + 17}">{s}</text>',
                f'<rect x="170" y="{y}" width="{w:.0f}" height="{bar}" fill="{color}"/>',
                f'<text x="{175 + w:.0f}" y="{y + 17}">{medians[(s, c)]:.0f}</text>']
        y += 32
    y += 10
    svg.append(f'<text x="10" y="{y + 12}" font-size="16" font-weight="bold">Share of requests per node, 4 nodes, c=64 (last round)</text>')
    y += 24
    palette = ["#2a7ae2", "#f28e2b", "#59a14f", "#e15759", "#76b7b2"]
    for (server, _, load), rs in spread_groups:
        nodes = sorted(rs[-1]["per_node"].items())
        total = sum(r for _, (_, r) in nodes) or 1
        x = 250
        svg.append(f'<text x="10" y="{y + 17}">{server} ({load})</text>')
        for i, (_, (_, r)) in enumerate(nodes):
            w = 440 * r / total
            svg.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar}" fill="{palette[i % 5]}" stroke="white"/>')
            x += w
        y += 32
    svg.append("</svg>")
    with open(os.path.join(OUT, "chart.svg"), "w") as f:
        f.write("\n".join(svg))


if __name__ == "__main__":
    sys.exit(main())

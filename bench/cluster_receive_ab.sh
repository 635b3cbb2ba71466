#!/bin/bash
# The receiving side across machines, two builds side by side: a bare client
# publishes multinode's envelopes to machine b (BARE_SENDER=1 in
# bench/cluster_bench.rs), alternating build A and build B, each round over a
# fresh redis-server (free port, no persistence), then the floor's two
# subscribers. Prints the p50 (µs) of b's two nodes and of the floor's two.
#
#   bench/cluster_receive_ab.sh OLD_BINARY NEW_BINARY [ROUNDS]
#
# The binaries are `cluster_bench` builds (`cargo build --profile dist
# --features cluster --example cluster_bench`, copied aside for each commit).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 OLD_BINARY NEW_BINARY [ROUNDS]" >&2; exit 2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
p50s() { grep p50 | cut -d, -f4 | tr '\n' ' '; }
for _ in $(seq "${3:-4}"); do
    for which in old new; do
        bench=$1; [ $which = new ] && bench=$2
        port=$(free_port)
        redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 &
        redis=$!
        for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
        export MULTINODE_CLUSTER=redis://127.0.0.1:$port RUST_LOG=warn MULTINODE_PORT=0
        MULTINODE_MACHINE=b setsid "$bench" >/dev/null 2>&1 &
        b=$!
        echo "$which b: $(BARE_SENDER=1 timeout 120 "$bench" | p50s) floor: $(FLOOR=1 timeout 120 "$bench" | p50s)"
        kill -9 -- -$b; kill $redis; wait 2>/dev/null || true
    done
done

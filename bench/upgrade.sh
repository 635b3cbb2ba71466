#!/usr/bin/env bash
# Usage: bench/upgrade.sh [least_conn|reuse_port|shared], after
# `cargo build --profile dist --example hello`. Prints the time from SIGUSR2
# to the old master's exit and wrk's summary (socket errors and non-2xx
# answers show only when there are some).
# An upgrade under wrk: hello (dist), 4 nodes, 64 keep-alive connections for 10 s;
# at 4 s the binary is replaced by another file and SIGUSR2 sent. CLOSE=1: a
# fresh connection for each request.
set -u
MODE=${1:-least_conn}
D=$(mktemp -d)
cp "$(dirname "$0")/../target/dist/examples/hello" $D/app
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
MULTINODE_PORT=$PORT MULTINODE_NODES=4 MULTINODE_BALANCE=$MODE RUST_LOG=info setsid $D/app 2> $D/log &
OLD=$!
for i in $(seq 100); do grep -q "nodes ready" $D/log && break; sleep 0.05; done
wrk -t2 -c64 -d10s ${CLOSE:+-H "Connection: close"} http://127.0.0.1:$PORT/ > $D/wrk 2>&1 &
W=$!
sleep 4
cp $D/app $D/app.next && printf 'another build' >> $D/app.next && mv $D/app.next $D/app
T0=$(date +%s.%N)
kill -USR2 $OLD
while kill -0 $OLD 2>/dev/null; do sleep 0.005; done
T1=$(date +%s.%N)
wait $W
echo "mode=$MODE USR2 -> old master exit: $(python3 -c "print(round(($T1-$T0)*1000))") ms"
grep -E "requests in|Socket errors|Non-2xx|Requests/sec" $D/wrk
NEW=$(grep -o "the new master (pid [0-9]*" $D/log | grep -o "[0-9]*$")
echo "new master $NEW exe: $(readlink /proc/$NEW/exe)"
kill -TERM $NEW; sleep 0.5; kill -9 -$OLD 2>/dev/null
grep -c "" $D/log >/dev/null
rm -rf $D

#!/usr/bin/env bash
# The benchmark in one command: installs wrk and Node.js if missing (Debian
# packages), builds with the dist profile (release + LTO), runs bench/run.py. QUICK=1: a smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v node >/dev/null || need+=(nodejs)
command -v redis-server >/dev/null || need+=(redis-server)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq "${need[@]}"
fi
cargo build --profile dist --example hello --example bare_hyper --example mesh_bench
cargo build --profile dist --features cluster --example cluster_bench
exec python3 bench/run.py

#!/usr/bin/env bash
# Instructions per request (callgrind): hello with one node against bare hyper.
# Installs valgrind if missing (Debian package), builds in release mode (symbols
# kept, for callgrind_annotate on the dumps it leaves in /tmp).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind; }
cargo build --release --example hello --example bare_hyper
exec python3 bench/instructions.py

#!/usr/bin/env bash
# Instructions per 64-byte mesh message (callgrind) against the bare socketpair
# loop with the same codec: see bench/mesh_instructions.py. Installs valgrind if
# missing; builds mesh_bench in release mode, or in the profile PROFILE names.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind; }
cargo build --profile "${PROFILE:=release}" --example mesh_bench
export PROFILE
exec python3 bench/mesh_instructions.py

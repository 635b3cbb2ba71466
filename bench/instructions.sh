#!/usr/bin/env bash
# Instructions per request (callgrind): hello with one node against bare hyper.
# Installs valgrind if missing (Debian package), builds in release mode (quick to
# build; function names kept for callgrind_annotate on the dumps it leaves in /tmp),
# or in the profile PROFILE names (PROFILE=dist: what bench/run.sh measures).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind; }
cargo build --profile "${PROFILE:=release}" --example hello --example bare_hyper
export PROFILE
exec python3 bench/instructions.py

#!/usr/bin/env bash
# Benchmark (never part of the test suite): release build of the handler, the bare axum
# baselines (hello, and a JSON GET) and a local identity provider, driven by wrk over loopback.
# Arguments go to scripts/bench.py (--duration, --runs, --connections, --threads, --no-pin,
# --starts, --failures, --only).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null; then
  echo "installing wrk (Debian package)"
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq wrk >/dev/null
  else sudo apt-get update -qq && sudo apt-get install -y -qq wrk >/dev/null; fi
fi
cargo build --release --quiet --bin handler --example hello --example bench_idp
exec python3 scripts/bench.py "$@"

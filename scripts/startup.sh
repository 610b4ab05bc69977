#!/usr/bin/env bash
# Release binary size and start-up time (exec → first answered GET /, median of 20).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin handler
binary=target/release/handler
echo "release binary: $(stat -c %s "$binary") bytes ($(( $(stat -c %s "$binary") / 1024 / 1024 )) MiB)"
python3 scripts/startup.py "$binary" "${1:-20}"

#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need (pinned), starts the
# local servers they use on free loopback ports, runs every test, and stops the servers again.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== format and lints"
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings

echo "== Azurite (storage emulator for the Azure-backed tests)"
# An assignment keeps the start's exit status, so a failed start stops here (eval would not).
azurite_env="$(scripts/azurite.sh start)"
eval "$azurite_env"
trap 'scripts/azurite.sh stop' EXIT

echo "== conformance (schemathesis against the live OpenAPI document)"
scripts/conformance.sh 25

echo "== OpenAPI contract (lint, conformance preferring problem+json, generated client)"
scripts/lint-openapi.sh
scripts/conformance.sh --problem-json 25
scripts/client-test.sh

echo "== tests"
# The examples (benchmark helpers) only need to build; they hold no tests.
cargo build --examples --quiet
log="$(mktemp)"
set +e
cargo test --lib --bins --tests 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
passed=$(grep -Eo '^test result: .* ([0-9]+) passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s += $1} END {print s + 0}')
failed=$(grep -Eo '; ([0-9]+) failed' "$log" | grep -Eo '[0-9]+' | awk '{s += $1} END {print s + 0}')
rm -f "$log"
echo
echo "tests: $passed passed, $failed failed"
exit "$status"

#!/usr/bin/env bash
# Conformance fuzzing: schemathesis (pinned, with its whole environment) runs every check
# against the live service's /api/openapi.json: no 5xx, responses match the schema, every status
# is documented, invalid input is rejected, valid input accepted.
#
# With --problem-json, the contract pass instead: every request prefers RFC 9457 problem details
# (`Accept: application/problem+json, application/json;q=0.9`), so every error comes back as
# application/problem+json and must be documented as such; and besides schemathesis' own
# response_headers_conformance (declared headers valid, required ones present), the
# undeclared_response_headers check of scripts/schemathesis_hooks.py fails on every header with
# meaning for a client (ETag, Location, Retry-After, RateLimit-*, x-request-id, ...) that a
# response carries but its definition does not declare.
#
# Usage: scripts/conformance.sh [--problem-json] [max examples per operation, default 25]
set -euo pipefail
cd "$(dirname "$0")/.."
problem_json=false
if [ "${1:-}" = "--problem-json" ]; then
  problem_json=true
  shift
fi
examples="${1:-25}"

venv=.venv/conformance
if ! "$venv/bin/st" --version 2>/dev/null | grep -q "4.32.5"; then
  echo "installing schemathesis 4.32.5 into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/conformance-requirements.txt
fi

cargo build --quiet --bin handler
handler=target/debug/handler
log=$(mktemp)
PORT=0 ORDERS_LOG_FORMAT=text NO_COLOR=1 RUST_LOG=info ORDERS_RATE_LIMIT_PER_MINUTE=1000000 \
  "$handler" >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 300); do
  port=$(sed -n 's/.*listening address=[^ ]*:\([0-9]*\).*/\1/p' "$log" | head -n1)
  [ -n "$port" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$log"; echo "handler did not start"; exit 1; }
  sleep 0.1
done
[ -n "${port:-}" ] || { cat "$log"; echo "handler did not report its port"; exit 1; }
base="http://127.0.0.1:$port"
token=$("$handler" token --sub conformance --scope Orders.Read --scope Orders.Write)

if [ "$problem_json" = true ]; then
  SCHEMATHESIS_HOOKS=scripts/schemathesis_hooks.py \
    "$venv/bin/st" --config-file scripts/schemathesis.toml run "$base/api/openapi.json" \
    --url "$base" \
    --checks all \
    --max-examples "$examples" \
    --generation-deterministic \
    --header "Authorization: Bearer $token" \
    --header "Accept: application/problem+json, application/json;q=0.9" \
    --no-color
  exit
fi

SCHEMATHESIS_HOOKS=scripts/schemathesis_hooks.py \
"$venv/bin/st" --config-file scripts/schemathesis.toml run "$base/api/openapi.json" \
  --url "$base" \
  --checks all \
  --max-examples "$examples" \
  --generation-deterministic \
  --header "Authorization: Bearer $token" \
  --no-color

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

. scripts/common.sh
venv=.venv/conformance
pinned_venv "$venv" scripts/conformance-requirements.txt

log=$(mktemp)
trap 'kill "${handler_pid:-}" 2>/dev/null || true; rm -f "$log"' EXIT
start_handler "$log"
base="http://127.0.0.1:$handler_port"
token=$("$handler" token --sub conformance --scope Orders.Read --scope Orders.Write)

extra=()
if [ "$problem_json" = true ]; then
  extra=(--header "Accept: application/problem+json, application/json;q=0.9")
fi
SCHEMATHESIS_HOOKS=scripts/schemathesis_hooks.py \
  "$venv/bin/st" --config-file scripts/schemathesis.toml run "$base/api/openapi.json" \
  --url "$base" \
  --checks all \
  --max-examples "$examples" \
  --generation-deterministic \
  --header "Authorization: Bearer $token" \
  "${extra[@]}" \
  --no-color

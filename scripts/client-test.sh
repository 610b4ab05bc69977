#!/usr/bin/env bash
# Generated-client test: generates a Python client from the checked-in openapi/openapi.json with
# openapi-python-client (pinned, with its whole environment, by scripts/client-requirements.txt)
# into a temporary directory, starts the service (debug handler, in-memory store, a free port)
# and drives the main flow through that client only (tests/client/flow.py): create, read with
# ETag, 304, patch with and without a stale If-Match, paging, delete, 404 as problem+json, and an
# export through 202, status and 302. Generator warnings fail the test: a client generated with
# parts left out is not one the document can promise.
# Usage: scripts/client-test.sh [--document PATH]   (default openapi/openapi.json; another path
#        tries a candidate document against the same service)
set -euo pipefail

document=
while [ $# -gt 0 ]; do
  case "$1" in
    --document)
      document=$(realpath "${2:?--document needs a path}")
      shift 2
      ;;
    *)
      echo "usage: $0 [--document PATH]" >&2
      exit 2
      ;;
  esac
done
cd "$(dirname "$0")/.."
document="${document:-openapi/openapi.json}"
[ -f "$document" ] || { echo "no OpenAPI document at $document" >&2; exit 2; }

. scripts/common.sh
venv=.venv/client
pinned_venv "$venv" scripts/client-requirements.txt

work=$(mktemp -d "${TMPDIR:-/tmp}/orders-client.XXXXXX")
cleanup() {
  if [ -n "${handler_pid:-}" ]; then
    kill "$handler_pid" 2>/dev/null || true
    wait "$handler_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "-- generating the client ($("$venv/bin/openapi-python-client" --version)) from $document"
"$venv/bin/openapi-python-client" generate \
  --path "$document" \
  --meta none \
  --config tests/client/generator.yaml \
  --output-path "$work/orders_client" \
  --fail-on-warning

start_handler "$work/handler.log"
token=$("$handler" token --sub client-flow --scope Orders.Read --scope Orders.Write)

echo "-- the main flow through the generated client"
PYTHONPATH="$work" PYTHONDONTWRITEBYTECODE=1 "$venv/bin/python" tests/client/flow.py \
  --base-url "http://127.0.0.1:$handler_port" --token "$token"

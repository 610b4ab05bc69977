# Sourced by the scripts that run a pinned Python tool or the service itself; run from the
# repository root, under `set -euo pipefail`.

# pinned_venv DIR REQUIREMENTS: a virtual environment in DIR holding exactly the pinned
# REQUIREMENTS (a pip freeze), installed again whenever that file changes.
pinned_venv() {
  local venv=$1 requirements=$2
  if ! cmp -s "$requirements" "$venv/installed-requirements.txt" 2>/dev/null; then
    echo "installing $requirements into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$venv/installed-requirements.txt"
  fi
}

# start_handler LOG: builds the debug handler and starts it in the background (in-memory store,
# a port the kernel picks, rate limits out of the way of the tools' request rates), logging to
# LOG. Sets handler (the binary), handler_pid and handler_port; the caller stops it.
start_handler() {
  local log=$1
  cargo build --quiet --bin handler
  handler=target/debug/handler
  PORT=0 ORDERS_LOG_FORMAT=text NO_COLOR=1 RUST_LOG=info ORDERS_RATE_LIMIT_PER_MINUTE=1000000 \
    "$handler" >"$log" 2>&1 &
  handler_pid=$!
  handler_port=
  for _ in $(seq 1 300); do
    handler_port=$(sed -n 's/.*listening address=[^ ]*:\([0-9]*\).*/\1/p' "$log" | head -n1)
    [ -n "$handler_port" ] && return 0
    kill -0 "$handler_pid" 2>/dev/null || { cat "$log"; echo "handler did not start"; return 1; }
    sleep 0.1
  done
  cat "$log"
  echo "handler did not report its port"
  return 1
}

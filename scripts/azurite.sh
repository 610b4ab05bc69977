#!/usr/bin/env bash
# Azurite (the Azure Storage emulator) for tests and local runs, pinned by package-lock.json.
#
#   scripts/azurite.sh start   installs it if needed (npm ci), starts it on free loopback ports
#                              with in-memory persistence, waits until it answers, and prints
#                              shell lines to eval: ORDERS_TEST_STORAGE (a connection string)
#                              and AZURITE_PID
#   scripts/azurite.sh stop    stops the instance started by `start` (AZURITE_PID)
#
# Usage: env="$(scripts/azurite.sh start)" && eval "$env"; trap 'scripts/azurite.sh stop' EXIT
set -euo pipefail
cd "$(dirname "$0")/.."

# The emulator's well-known development account (public, from Microsoft's documentation).
ACCOUNT=devstoreaccount1
KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='

install() {
    # The stamp is a copy of the lockfile that was installed: a changed lockfile reinstalls.
    if [ ! -x node_modules/.bin/azurite ] || ! cmp -s package-lock.json node_modules/.installed-lock.json; then
        echo "installing the npm packages (npm ci: Azurite, Spectral)" >&2
        npm ci --no-audit --no-fund --loglevel=error >&2
        cp package-lock.json node_modules/.installed-lock.json
    fi
}

# Three distinct free loopback ports, chosen by the kernel.
free_ports() {
    node -e '
        const net = require("net");
        const servers = [0, 1, 2].map(() => net.createServer());
        Promise.all(servers.map(s => new Promise(r => s.listen(0, "127.0.0.1", () => r(s.address().port)))))
            .then(ports => { console.log(ports.join(" ")); servers.forEach(s => s.close()); });
    '
}

answers() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

start() {
    install
    local blob queue table
    read -r blob queue table < <(free_ports)
    # Console output only (in-memory persistence writes nothing else).
    local workspace
    workspace="$(mktemp -d "${TMPDIR:-/tmp}/azurite.XXXXXX")"
    node_modules/.bin/azurite \
        --blobHost 127.0.0.1 --blobPort "$blob" \
        --queueHost 127.0.0.1 --queuePort "$queue" \
        --tableHost 127.0.0.1 --tablePort "$table" \
        --inMemoryPersistence --disableTelemetry --skipApiVersionCheck --loose --silent \
        >"$workspace/azurite.out" 2>&1 </dev/null &
    local pid=$!
    # Wait (bounded) until all three services accept connections.
    for _ in $(seq 1 300); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "Azurite exited while starting:" >&2
            cat "$workspace/azurite.out" >&2
            exit 1
        fi
        if answers "$blob" && answers "$queue" && answers "$table"; then
            local cs="DefaultEndpointsProtocol=http;AccountName=$ACCOUNT;AccountKey=$KEY;BlobEndpoint=http://127.0.0.1:$blob/$ACCOUNT;QueueEndpoint=http://127.0.0.1:$queue/$ACCOUNT;TableEndpoint=http://127.0.0.1:$table/$ACCOUNT;"
            echo "Azurite $(node_modules/.bin/azurite --version) on 127.0.0.1: blob $blob, queue $queue, table $table (pid $pid)" >&2
            printf 'export ORDERS_TEST_STORAGE=%q\n' "$cs"
            printf 'export AZURITE_PID=%q\n' "$pid"
            return 0
        fi
        sleep 0.1
    done
    kill "$pid" 2>/dev/null || true
    echo "Azurite did not answer on its ports" >&2
    exit 1
}

stop() {
    local pid="${AZURITE_PID:-}"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        wait "$pid" 2>/dev/null || true
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    install) install ;;
    *)
        echo "usage: $0 start|stop|install" >&2
        exit 2
        ;;
esac

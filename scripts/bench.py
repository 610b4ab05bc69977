#!/usr/bin/env python3
"""Benchmark of the release build against a bare axum baseline, in one invocation.

Drives each scenario with wrk over loopback and prints one table: requests/s, p50 and p99
latency and the ratio to the baseline; then idle and peak RSS, binary size and start-up time.
Run through scripts/bench.sh, which builds everything and installs wrk."""
import argparse
import http.server
import os
import re
import socketserver
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "target", "release")
HANDLER = os.path.join(RELEASE, "handler")


# Server and load generator each get their own core (when pinning), so neither steals the
# other's CPU and the figures measure the server on one core. Set by main().
SERVER_CPU = []
CLIENT_CPU = []


def start(argv, env, pattern):
    """Starts a process and waits for the line matching `pattern` on stdout/stderr."""
    process = subprocess.Popen(SERVER_CPU + argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 30
    for line in process.stdout:
        match = re.search(pattern, line)
        if match:
            threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()
            return process, match
        if time.time() > deadline:
            break
    process.kill()
    raise SystemExit(f"{argv[0]} did not start")


def rss_kib(pid, field):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def to_ms(value):
    number, unit = re.match(r"([\d.]+)(us|ms|s)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url, args, headers=(), script=None):
    """The median run (by requests/s) of `args.runs` runs: one slow or fast run on a shared
    machine does not make the figure."""
    warmup = argparse.Namespace(**{**vars(args), "duration": 1})
    wrk_once(url, warmup, headers, script)  # connections, caches and CPU clocks settle first
    runs = sorted((wrk_once(url, args, headers, script) for _ in range(args.runs)), key=lambda r: r["rps"])
    return runs[len(runs) // 2]


def wrk_once(url, args, headers, script):
    argv = CLIENT_CPU + ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s", "--latency"]
    for header in headers:
        argv += ["-H", header]
    if script:
        argv += ["-s", script]
    out = subprocess.run(argv + [url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = to_ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = to_ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = int(non2xx.group(1)) if non2xx else 0
    return {"rps": rps, "p50": p50, "p99": p99, "errors": errors}


class Sink(http.server.BaseHTTPRequestHandler):
    """Accepts Application Insights envelopes and throws them away."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b'{"itemsReceived":1,"itemsAccepted":1,"errors":[]}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def handler_env(issuer, extra):
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PORT": "0",
        "RUST_LOG": "warn,handler=info",
        "ORDERS_LOG_FORMAT": "text",
        "NO_COLOR": "1",
        "ORDERS_AUTH_ISSUER": issuer,
        "ORDERS_AUTH_AUDIENCE": "api://orders-bench",
        # The limiter stays on, with a limit no run reaches.
        "ORDERS_RATE_LIMIT_PER_MINUTE": "4000000000",
    }
    env.update(extra)
    return env


def request(method, url, token, body=None):
    req = urllib.request.Request(url, data=body, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req) as response:
        return response.read()


ORDER = '{"items":[{"sku":"A-1","quantity":2,"unitPrice":"9.99"}],"currency":"EUR"}'


def run_handler(name, issuer, token, args, results, extra=None, scenarios=("health", "get", "post")):
    process, match = start([HANDLER], handler_env(issuer, extra or {}), r"address=([\d.]+:\d+)")
    base = f"http://{match.group(1)}"
    try:
        urllib.request.urlopen(base + "/").read()
        time.sleep(0.5)
        idle = rss_kib(process.pid, "VmRSS")
        created = request("POST", base + "/api/orders", token, ORDER.encode())
        order_id = re.search(rb'"id":"(o_[0-9a-f]+)"', created).group(1).decode()
        auth = f"Authorization: Bearer {token}"
        if "health" in scenarios:
            results[f"(b) GET /api/health{name}"] = wrk(base + "/api/health", args)
        if "get" in scenarios:
            results[f"(c) GET /api/orders/{{id}}{name}"] = wrk(f"{base}/api/orders/{order_id}", args, [auth])
        if "post" in scenarios:
            with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
                lua.write('wrk.method = "POST"\n')
                lua.write(f"wrk.body = '{ORDER}'\n")
                lua.write('wrk.headers["Content-Type"] = "application/json"\n')
            results[f"(d) POST /api/orders{name}"] = wrk(base + "/api/orders", args, [auth], lua.name)
            os.unlink(lua.name)
        return idle, rss_kib(process.pid, "VmHWM")
    finally:
        process.terminate()
        process.wait()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=5, help="seconds per run")
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario; the median is reported")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="wrk threads (default: 1 pinned, 2 unpinned)")
    parser.add_argument("--no-pin", action="store_true", help="let server and wrk share all cores")
    parser.add_argument("--starts", type=int, default=20)
    args = parser.parse_args()
    pinned = not args.no_pin and (os.cpu_count() or 1) >= 2
    if pinned:
        SERVER_CPU.extend(["taskset", "-c", "1"])
        CLIENT_CPU.extend(["taskset", "-c", "0"])
    if args.threads is None:
        args.threads = 1 if pinned else 2

    results = {}
    hello, match = start([os.path.join(RELEASE, "examples", "hello")], {"PORT": "0"}, r"listening on ([\d.]+:\d+)")
    try:
        results["(a) baseline: bare axum hello"] = wrk(f"http://{match.group(1)}/", args)
    finally:
        hello.terminate()
        hello.wait()

    idp, match = start([os.path.join(RELEASE, "examples", "bench_idp")], {}, r"^(\S+) (\S+)$")
    issuer, token = match.group(1), match.group(2)
    sink = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    sink_url = f"http://127.0.0.1:{sink.server_address[1]}/"
    try:
        idle, peak = run_handler("", issuer, token, args, results)
        run_handler(" — verified-token cache off", issuer, token, args, results,
                    {"ORDERS_AUTH_VERIFIED_TOKEN_CACHE": "0"}, ("get",))
        run_handler(" — telemetry to a local sink", issuer, token, args, results,
                    {"APPLICATIONINSIGHTS_CONNECTION_STRING":
                     f"InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint={sink_url}"},
                    ("get",))
    finally:
        idp.terminate()
        idp.wait()
        sink.shutdown()

    baseline = results["(a) baseline: bare axum hello"]["rps"]
    placement = "server pinned to CPU 1, wrk to CPU 0" if pinned else "server and wrk share all CPUs"
    print(f"\nwrk: {args.connections} connections, {args.threads} thread(s), median of {args.runs} runs of {args.duration} s per scenario, loopback; {placement}\n")
    print("| scenario | requests/s | p50 ms | p99 ms | vs (a) | non-2xx |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['rps'] / baseline:.0%} | {r['errors']} |")

    startup = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "startup.py"), HANDLER, str(args.starts)],
                             capture_output=True, text=True, check=True).stdout
    median = re.search(r"median of \d+: ([\d.]+) ms", startup).group(1)
    size = os.path.getsize(HANDLER)
    print()
    print("| figure | value |")
    print("|---|---:|")
    print(f"| idle RSS (after start) | {idle / 1024:.1f} MiB |")
    print(f"| peak RSS (after all scenarios) | {peak / 1024:.1f} MiB |")
    print(f"| release binary | {size / 1024 / 1024:.1f} MiB |")
    print(f"| start-up, exec → first answered GET / (median of {args.starts}) | {median} ms |")


if __name__ == "__main__":
    main()

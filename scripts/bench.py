#!/usr/bin/env python3
"""Benchmark of the release build against bare axum baselines, in one invocation.

Drives each scenario with wrk over loopback and prints one table: requests/s, p50 and p99
latency and the ratios to the baselines (the bare axum JSON GET, and "hello"); then idle RSS,
start-up, binary size, the telemetry checks (every injected failure reached the sink) and the
targets, met or not. Run through scripts/bench.sh, which builds everything and installs wrk."""
import argparse
import gzip
import http.server
import json
import os
import re
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "target", "release")
HANDLER = os.path.join(RELEASE, "handler")

# Server and load generator each get their own core (when pinning), so neither steals the
# other's CPU and the figures measure the server on one core. Set by main().
SERVER_CPU = []
CLIENT_CPU = []

SCENARIOS = ["hello", "json", "health", "get", "post", "nocache", "telemetry", "everything"]
NAMES = {
    "hello": "(a) baseline: bare axum hello",
    "json": "(j) baseline: bare axum JSON GET /api/orders/{id}",
    "health": "(b) GET /api/health",
    "get": "(c) authenticated GET /api/orders/{id}, telemetry off",
    "post": "(d) POST /api/orders",
    "nocache": "(c) with the verified-token cache off",
    "telemetry": "(c) telemetry exported, default sampling",
    "everything": "(c) telemetry exported, every request (sampling off)",
}
TARGETS = {"on_vs_json": 0.5, "off_vs_json": 0.6, "p99_ms": 5.0, "telemetry_cost": 0.10,
           "rss_mib": 15.0, "startup_ms": 10.0, "binary_mib": 15.0}


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


def stop(process):
    process.terminate()
    process.wait()


def rss_kib(pid, field):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def to_ms(value):
    number, unit = re.match(r"([\d.]+)(us|ms|s)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk_once(url, args, headers, script):
    argv = CLIENT_CPU + ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s", "--latency"]
    for header in headers:
        argv += ["-H", header]
    if script:
        argv += ["-s", script]
    out = subprocess.run(argv + [url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    p50 = to_ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = to_ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = int(non2xx.group(1)) if non2xx else 0
    return {"rps": rps, "p50": p50, "p99": p99, "errors": errors, "requests": requests}


class Sink(http.server.BaseHTTPRequestHandler):
    """Accepts Application Insights envelopes. A sink made with `keep` keeps the (gzip) bodies,
    so the checks can read them after the run without parsing on the measured cores meanwhile;
    the other throws them away."""
    keep = False
    bodies = None
    lock = None

    @classmethod
    def start(cls, keep):
        handler = type("KeepingSink" if keep else "Sink", (cls,), {"keep": keep, "bodies": [], "lock": threading.Lock()})
        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        connection = f"InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint={url}"
        return server, handler, connection

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.keep:
            gzipped = self.headers.get("Content-Encoding", "").lower() == "gzip"
            with self.lock:
                self.bodies.append((gzipped, body))
        reply = b'{"itemsReceived":1,"itemsAccepted":1,"errors":[]}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass

    @classmethod
    def envelopes(cls):
        with cls.lock:
            bodies = list(cls.bodies)
        for gzipped, body in bodies:
            yield from json.loads(gzip.decompress(body) if gzipped else body)


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
        "ORDERS_FAULT_INJECTION": "true",
    }
    env.update(extra)
    return env


def request(method, url, token, body=None):
    """(status, body) of one request; error statuses are answers too."""
    req = urllib.request.Request(url, data=body, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


ORDER = '{"items":[{"sku":"A-1","quantity":2,"unitPrice":"9.99"}],"currency":"EUR"}'
# Injected during the telemetry run: 500s (with an exception each) and the other 5xx.
FAULTS = ["error", "panic", "unavailable", "bad-gateway"]


class Injector:
    """Sends failing requests evenly over each measured run of the telemetry scenario, beside the
    load, keeping the trace id each error body names."""

    def __init__(self, base, token, total):
        self.base, self.token, self.total = base, token, total
        self.run = 0
        self.threads = []
        self.sent = []  # (fault, status, trace id)

    def during_next_run(self, args):
        # Run i of n sends its share of the total: every failure is sent, whatever n.
        i, self.run = self.run, self.run + 1
        count = self.total * (i + 1) // args.runs - self.total * i // args.runs
        thread = threading.Thread(target=self.send, args=(count, args.duration), daemon=True)
        thread.start()
        self.threads.append(thread)

    def wait(self):
        for thread in self.threads:
            thread.join()

    def send(self, count, seconds):
        for _ in range(count):
            # Spread over the run, starting a little into it.
            time.sleep(seconds / (count + 1))
            fault = FAULTS[len(self.sent) % len(FAULTS)]
            status, body = request("GET", f"{self.base}/api/faults/{fault}", self.token)
            trace_id = json.loads(body).get("traceId", "")
            self.sent.append((fault, status, trace_id))


class Target:
    """One scenario: a URL on a running server, and the wrk runs made against it."""

    def __init__(self, key, url, headers=(), script=None, before=None):
        self.key, self.url, self.headers, self.script, self.before = key, url, headers, script, before
        self.runs = []
        self.warmup = None


def start_handler(issuer, token, extra=None):
    """A handler process, its base URL, its idle RSS (KiB) and an order to read."""
    process, match = start([HANDLER], handler_env(issuer, extra or {}), r"address=([\d.]+:\d+)")
    base = f"http://{match.group(1)}"
    urllib.request.urlopen(base + "/").read()
    time.sleep(0.5)
    idle = rss_kib(process.pid, "VmRSS")
    _, created = request("POST", base + "/api/orders", token, ORDER.encode())
    order_id = re.search(rb'"id":"(o_[0-9a-f]+)"', created).group(1).decode()
    return process, base, idle, order_id


def run_rounds(targets, args):
    """A warm-up run of every scenario, then `args.runs` rounds of one run each: scenarios
    measured side by side in every round, so load from elsewhere on the machine falls on all of
    them alike, and ratios are taken within a round."""
    warmup = argparse.Namespace(**{**vars(args), "duration": 1})
    for target in targets:
        target.warmup = wrk_once(target.url, warmup, target.headers, target.script)
    for _ in range(args.runs):
        for target in targets:
            if target.before:
                target.before(args)
            target.runs.append(wrk_once(target.url, args, target.headers, target.script))
            # What a run leaves to do in the background (exporting telemetry) is done before the
            # next scenario's run.
            time.sleep(0.5)


def check_telemetry(sink, injector, served):
    """What reached the sink in the telemetry run: every injected failure (a failed request,
    and an exception for each 500), and the sampled successes with their sampleRate."""
    requests, exceptions, sampled, rates = {}, set(), 0, set()
    estimated = 0.0
    for envelope in sink.envelopes():
        base_type = envelope.get("data", {}).get("baseType")
        data = envelope.get("data", {}).get("baseData", {})
        operation = envelope.get("tags", {}).get("ai.operation.id", "")
        if base_type == "RequestData":
            requests[operation] = data
            if data.get("success") and data.get("name") == "GET /api/orders/{id}":
                sampled += 1
                rate = envelope.get("sampleRate", 100.0)
                rates.add(rate)
                estimated += 100.0 / rate
        elif base_type == "ExceptionData":
            exceptions.add(operation)
    failures = len(injector.sent)
    arrived = sum(1 for _, status, trace in injector.sent
                  if status >= 500 and trace in requests and requests[trace].get("success") is False)
    needs_exception = [trace for _, status, trace in injector.sent if status == 500]
    with_exception = sum(1 for trace in needs_exception if trace in exceptions)
    return {"failures": failures, "arrived": arrived, "exceptions": len(needs_exception),
            "with_exception": with_exception, "sampled": sampled, "rates": sorted(rates),
            "estimated": estimated, "served": served}


def verdict(ok):
    return "met" if ok else "**missed**"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=5, help="seconds per run")
    parser.add_argument("--runs", type=int, default=5, help="rounds: runs per scenario; the median is reported")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="wrk threads (default: 1 pinned, 2 unpinned)")
    parser.add_argument("--no-pin", action="store_true", help="let server and wrk share all cores")
    parser.add_argument("--starts", type=int, default=20)
    parser.add_argument("--failures", type=int, default=100, help="failures injected during the telemetry run")
    parser.add_argument("--only", default=",".join(SCENARIOS), help=f"comma-separated subset of {','.join(SCENARIOS)}")
    args = parser.parse_args()
    chosen = [s for s in SCENARIOS if s in args.only.split(",")]
    pinned = not args.no_pin and (os.cpu_count() or 1) >= 2
    if pinned:
        SERVER_CPU.extend(["taskset", "-c", "1"])
        CLIENT_CPU.extend(["taskset", "-c", "0"])
    if args.threads is None:
        args.threads = 1 if pinned else 2
    load_before = os.getloadavg()[0]

    idp, match = start([os.path.join(RELEASE, "examples", "bench_idp")], {}, r"^(\S+) (\S+)$")
    issuer, token = match.group(1), match.group(2)
    # The telemetry scenario's sink keeps what it receives, for the checks; the other's does not.
    kept_sink, kept, connection = Sink.start(keep=True)
    other_sink, _, other_connection = Sink.start(keep=False)
    auth = f"Authorization: Bearer {token}"
    processes, targets, idle, injector = [], [], {}, None
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write('wrk.method = "POST"\n')
        lua.write(f"wrk.body = '{ORDER}'\n")
        lua.write('wrk.headers["Content-Type"] = "application/json"\n')
    try:
        if "hello" in chosen or "json" in chosen:
            hello, match = start([os.path.join(RELEASE, "examples", "hello")], {"PORT": "0"}, r"listening on ([\d.]+:\d+)")
            processes.append(hello)
            if "hello" in chosen:
                targets.append(Target("hello", f"http://{match.group(1)}/"))
            if "json" in chosen:
                targets.append(Target("json", f"http://{match.group(1)}/api/orders/o_0190f3a1b2c37d4e8f9a0b1c2d3e4f50"))
        handlers = {
            "plain": {},
            "nocache": {"ORDERS_AUTH_VERIFIED_TOKEN_CACHE": "0"},
            "telemetry": {"APPLICATIONINSIGHTS_CONNECTION_STRING": connection},
            "everything": {"APPLICATIONINSIGHTS_CONNECTION_STRING": other_connection,
                           "ORDERS_TELEMETRY_SAMPLE_PER_SECOND": "0"},
            # Its own process: a million-odd orders created must not weigh on the others.
            "post": {},
        }
        wanted = {"health": "plain", "get": "plain", "nocache": "nocache", "telemetry": "telemetry",
                  "everything": "everything", "post": "post"}
        running = {}
        for key in SCENARIOS:
            name = wanted.get(key)
            if key not in chosen or name is None:
                continue
            if name not in running:
                process, base, idle[name], order_id = start_handler(issuer, token, handlers[name])
                processes.append(process)
                running[name] = (process, base, order_id)
            process, base, order_id = running[name]
            if key == "health":
                targets.append(Target(key, base + "/api/health"))
            elif key == "post":
                targets.append(Target(key, base + "/api/orders", [auth], lua.name))
            elif key == "telemetry":
                injector = Injector(base, token, args.failures)
                targets.append(Target(key, f"{base}/api/orders/{order_id}", [auth], before=injector.during_next_run))
            else:
                targets.append(Target(key, f"{base}/api/orders/{order_id}", [auth]))
        run_rounds(targets, args)
        if injector:
            injector.wait()
    finally:
        # SIGTERM: the handlers flush what telemetry is still queued before they exit.
        for process in processes:
            stop(process)
        stop(idp)
        kept_sink.shutdown()
        other_sink.shutdown()
        os.unlink(lua.name)
    load_after = os.getloadavg()[0]

    results = {}
    for target in targets:
        median = sorted(target.runs, key=lambda r: r["rps"])[len(target.runs) // 2]
        served = target.warmup["requests"] + sum(r["requests"] for r in target.runs)
        results[target.key] = {**median, "total": served}
    runs = {target.key: target.runs for target in targets}

    def ratio_of(key, base_key):
        """The median over rounds of the ratio of `key` to `base_key` in the same round."""
        if key not in runs or base_key not in runs:
            return None
        ratios = sorted(a["rps"] / b["rps"] for a, b in zip(runs[key], runs[base_key]))
        return ratios[len(ratios) // 2]

    telemetry = check_telemetry(kept, injector, results["telemetry"]["total"]) if injector else None
    idle_plain = idle.get("plain")
    idle_exporting = idle.get("telemetry")

    placement = "server pinned to CPU 1, wrk to CPU 0" if pinned else "server and wrk share all CPUs"
    print(f"\nwrk: {args.connections} connections, {args.threads} thread(s), {args.runs} rounds of {args.duration} s "
          f"runs, every scenario once per round (medians; ratios are medians of the same round's ratios), "
          f"loopback; {placement}; load average {load_before:.1f} before, {load_after:.1f} after, on "
          f"{os.cpu_count()} CPUs\n")
    print("| scenario | requests/s | p50 ms | p99 ms | vs (j) JSON GET | vs (a) hello | non-2xx |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    shown = lambda value: "–" if value is None else f"{value:.2f} ×"
    for key in SCENARIOS:
        if key in results:
            r = results[key]
            print(f"| {NAMES[key]} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {shown(ratio_of(key, 'json'))} "
                  f"| {shown(ratio_of(key, 'hello'))} | {r['errors']} |")

    rows = []  # (figure, value, target, met)
    if telemetry:
        t = telemetry
        rows.append(("failures injected during (c) with telemetry that reached the sink",
                     f"{t['arrived']}/{t['failures']}", "100 %", t["arrived"] == t["failures"] and t["failures"] > 0))
        rows.append(("of those, 500s whose exception reached the sink",
                     f"{t['with_exception']}/{t['exceptions']}", "100 %", t["with_exception"] == t["exceptions"]))
        rates = sorted(t["rates"])
        shown_rates = "–" if not rates else f"{rates[0]:.3g} to {rates[-1]:.3g}"
        rows.append(("successes exported from (c) with telemetry (their sampleRate, %)",
                     f"{t['sampled']} ({shown_rates})", "", None))
        rows.append(("(c) with telemetry: requests served vs estimated from the samples (Σ 100/sampleRate)",
                     f"{t['served']} vs {t['estimated']:.0f}", "", None))
    off_vs_json = ratio_of("get", "json")
    if off_vs_json is not None:
        rows.append(("(c) telemetry off vs (j)", f"{off_vs_json:.2f} ×", f"≥ {TARGETS['off_vs_json']} ×",
                     off_vs_json >= TARGETS["off_vs_json"]))
    on_vs_json = ratio_of("telemetry", "json")
    if on_vs_json is not None:
        rows.append(("(c) telemetry on vs (j)", f"{on_vs_json:.2f} ×", f"≥ {TARGETS['on_vs_json']} ×",
                     on_vs_json >= TARGETS["on_vs_json"]))
    on_vs_off = ratio_of("telemetry", "get")
    if on_vs_off is not None:
        cost = 1 - on_vs_off
        rows.append(("telemetry on costs, vs off", f"{cost:.0%}", f"≤ {TARGETS['telemetry_cost']:.0%}",
                     cost <= TARGETS["telemetry_cost"]))
    for key in ("get", "telemetry"):
        if key in results:
            p99 = results[key]["p99"]
            rows.append((f"p99 of {NAMES[key]}", f"{p99:.2f} ms", f"≤ {TARGETS['p99_ms']:g} ms", p99 <= TARGETS["p99_ms"]))
    for label, kib in (("idle RSS, telemetry off", idle_plain), ("idle RSS, telemetry on", idle_exporting)):
        if kib:
            rows.append((label, f"{kib / 1024:.1f} MiB", f"≤ {TARGETS['rss_mib']:g} MiB", kib / 1024 <= TARGETS["rss_mib"]))
    startup = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "startup.py"), HANDLER, str(args.starts)],
                             capture_output=True, text=True, check=True).stdout
    median = float(re.search(r"median of \d+: ([\d.]+) ms", startup).group(1))
    rows.append((f"start-up, exec → first answered GET / (median of {args.starts})", f"{median:.1f} ms",
                 f"≤ {TARGETS['startup_ms']:g} ms", median <= TARGETS["startup_ms"]))
    size = os.path.getsize(HANDLER) / 1024 / 1024
    rows.append(("release binary", f"{size:.1f} MiB", f"≤ {TARGETS['binary_mib']:g} MiB", size <= TARGETS["binary_mib"]))
    print()
    print("| figure | value | target | |")
    print("|---|---:|---|---|")
    for figure, value, target, met in rows:
        print(f"| {figure} | {value} | {target} | {'' if met is None else verdict(met)} |")


if __name__ == "__main__":
    main()

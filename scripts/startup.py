#!/usr/bin/env python3
"""Time from exec of the handler to its first answered `GET /` (what the Functions host waits
for), over N starts; prints each figure and the median. Usage: startup.py BINARY [N]"""
import os
import socket
import statistics
import subprocess
import sys
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_answer_ms(binary: str) -> float:
    port = free_port()
    env = {"PATH": os.environ.get("PATH", ""), "FUNCTIONS_CUSTOMHANDLER_PORT": str(port), "RUST_LOG": "warn"}
    request = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    start = time.perf_counter()
    process = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            if process.poll() is not None:
                raise SystemExit(f"handler exited with {process.returncode} before answering")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                    conn.sendall(request)
                    if conn.recv(12).startswith(b"HTTP/1.1"):
                        return (time.perf_counter() - start) * 1000
            except OSError:
                time.sleep(0.0002)
            if time.perf_counter() - start > 30:
                raise SystemExit("no answer within 30 s")
    finally:
        process.terminate()
        process.wait()


def main() -> None:
    binary = sys.argv[1]
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    times = [first_answer_ms(binary) for _ in range(runs)]
    print("start-up (exec → first answered GET /), ms: " + " ".join(f"{t:.1f}" for t in times))
    print(f"start-up median of {runs}: {statistics.median(times):.1f} ms (min {min(times):.1f}, max {max(times):.1f})")


if __name__ == "__main__":
    main()

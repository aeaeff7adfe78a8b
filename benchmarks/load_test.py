"""Drive the Space with concurrent gradio_client clients on loopback and report failures and latency.

    python benchmarks/load_test.py                  # 20 clients x 10 requests on the shipped models

Starts `python app.py` on a free 127.0.0.1 port, waits for it, then each client thread sends its requests
to /classify one after another. Bounded in count and in time (--time-limit); stops the app at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent


def scan_files(data: Path, count: int, folder: Path) -> list[Path]:
    files = sorted(data.glob("*/test/*/*.jpg"))
    if files:
        return files[:: max(1, len(files) // count)][:count]
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        path = folder / f"synthetic-{index}.png"
        Image.fromarray(rng.integers(0, 255, (208, 176), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def start_app() -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False"}
    process = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return process, f"http://127.0.0.1:{port}"


def wait_until_up(url: str, timeout: float = 120) -> None:
    from gradio_client import Client

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            Client(url, verbose=False)
            return
        except Exception:
            time.sleep(0.5)
    raise TimeoutError(f"the app at {url} did not come up within {timeout:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=10, help="requests per client")
    parser.add_argument("--time-limit", type=float, default=600, help="seconds before remaining requests are skipped")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "load_test.json")
    args = parser.parse_args()
    from gradio_client import Client, handle_file

    with tempfile.TemporaryDirectory() as scratch:
        files = scan_files(args.data, 50, Path(scratch))
        process, url = start_app()
        try:
            wait_until_up(url)
            latencies, failures, skipped = [], [], 0
            lock = threading.Lock()
            deadline = time.time() + args.time_limit

            def client_run(index: int) -> None:
                nonlocal skipped
                client = Client(url, verbose=False)
                for request in range(args.requests):
                    if time.time() > deadline:
                        with lock:
                            skipped += args.requests - request
                        return
                    path = files[(index * args.requests + request) % len(files)]
                    start = time.perf_counter()
                    try:
                        result = client.predict(handle_file(str(path)), api_name="/classify")
                        assert abs(sum(result["probabilities"].values()) - 1) < 1e-4
                        with lock:
                            latencies.append(time.perf_counter() - start)
                    except Exception as error:
                        with lock:
                            failures.append(f"{type(error).__name__}: {str(error)[:200]}")

            started = time.perf_counter()
            threads = [threading.Thread(target=client_run, args=(i,)) for i in range(args.clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - started
        finally:
            process.terminate()
            process.wait(timeout=30)
    report = {
        "clients": args.clients, "requests_per_client": args.requests, "answered": len(latencies),
        "failures": len(failures), "skipped_for_time": skipped, "seconds": elapsed,
        "throughput_per_s": len(latencies) / elapsed,
        "latency_s": {"p50": statistics.median(latencies), "p95": float(np.percentile(latencies, 95)),
                      "max": max(latencies)} if latencies else None,
        "failure_examples": failures[:5],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"{args.clients} clients x {args.requests} requests: {len(latencies)} answered, {len(failures)} failed, "
          f"{skipped} skipped for time, in {elapsed:.1f} s ({report['throughput_per_s']:.1f} requests/s)")
    if latencies:
        print(f"latency p50 {report['latency_s']['p50'] * 1000:.0f} ms, p95 {report['latency_s']['p95'] * 1000:.0f} ms, "
              f"max {report['latency_s']['max'] * 1000:.0f} ms")
    for failure in failures[:5]:
        print("  failure:", failure)


if __name__ == "__main__":
    main()

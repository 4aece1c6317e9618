#!/usr/bin/env python3
"""What the browser front (`browser:`) costs and gives, in one run, on the browser tests' app (a stdlib
server that takes 1.5 s to start):

- the latency it adds to a request: 1,000 GETs of a small JSON answer through devbox's port, and
  1,000 straight to the server's own published port, each on one kept-alive connection; medians and
  99th percentiles, and their difference;
- a save to the open page showing the new text in headless Chromium (the page reloads itself).

    python bench/browser.py [--requests 1000] [--saves 5] [--out bench/results/browser.json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "bench"), str(ROOT), str(ROOT / "tests")]
import images  # noqa: E402
import reload  # noqa: E402
import test_browser  # noqa: E402
from apps import value_module  # noqa: E402


def timings(port: int, count: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    out = []
    try:
        for _ in range(50):  # warm: the connection, the server's thread
            conn.request("GET", "/json")
            conn.getresponse().read()
        for _ in range(count):
            began = time.perf_counter()
            conn.request("GET", "/json")
            conn.getresponse().read()
            out.append(time.perf_counter() - began)
    finally:
        conn.close()
    return out


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--saves", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "browser.json")
    args = parser.parse_args()
    images.build_python()
    app = Path(tempfile.mkdtemp(prefix="devbox-bench-browser-"))
    port = reload.free_port()
    name = f"devboxbench-browser-{os.getpid()}"
    (app / "app.py").write_text(test_browser.APP)
    (app / "value.py").write_text(value_module("v0"))
    (app / "static").mkdir()
    (app / "static" / "site.css").write_text("body {}\n")
    (app / "devbox.yaml").write_text(test_browser.CONFIG.replace("BROWSER", "browser: true")
                                     .format(name=name, port=port))
    run = reload.Devbox(app)
    results: dict = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        run.wait_line(r"ready in")
        container = docker.from_env().containers.list(filters={"label": f"devbox.project={name}"})[0]
        upstream = int(container.ports["8000/tcp"][0]["HostPort"])
        direct, front = [], []
        for _ in range(2):  # interleaved halves: the machine's drift falls on both alike
            direct += timings(upstream, args.requests // 2)
            front += timings(port, args.requests // 2)
        results["direct_ms"] = {"median": 1000 * statistics.median(direct), "p99": 1000 * percentile(direct, 0.99)}
        results["front_ms"] = {"median": 1000 * statistics.median(front), "p99": 1000 * percentile(front, 0.99)}
        results["added_ms"] = {k: results["front_ms"][k] - results["direct_ms"][k] for k in ("median", "p99")}
        print(f"direct: median {results['direct_ms']['median']:.3f} ms, p99 {results['direct_ms']['p99']:.3f} ms; "
              f"through devbox: median {results['front_ms']['median']:.3f} ms, p99 {results['front_ms']['p99']:.3f} ms",
              flush=True)

        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = test_browser.CHROMIUM
        profile = tempfile.mkdtemp(prefix="devbox-bench-chromium-")
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(test_browser.CHROMEDRIVER), options=options)
        try:
            driver.get(f"http://127.0.0.1:{port}/")
            shown = []
            for i in range(1, args.saves + 1):
                time.sleep(1.0)
                began = time.monotonic()
                (app / "value.py.new").write_text(value_module(f"v{i}"))
                os.replace(app / "value.py.new", app / "value.py")
                while f'<p id="value">v{i}</p>' not in driver.page_source:
                    time.sleep(0.01)
                shown.append(time.monotonic() - began)
            results["save_to_page_s"] = {"median": statistics.median(shown), "all": shown,
                                         "server_start_s": 1.5}
            print(f"save to the new text in Chromium: median {statistics.median(shown):.2f} s "
                  f"(the app sleeps 1.5 s at start)", flush=True)
        finally:
            driver.quit()
    finally:
        if run.proc.poll() is None:
            run.stop()
        subprocess.run([sys.executable, "-m", "devbox", "down"], cwd=app, capture_output=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

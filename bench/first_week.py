"""A new user's first week on a Django + PostgreSQL Compose project, timed by an outside observer.

    python bench/first_week.py [--runs 3]

The project is testdrivenio/django-on-docker's layout made offline (tests/apps.py): a `web` service
built from app/Dockerfile with ./app mounted at its WORKDIR, a `db` service from a PostgreSQL image
without a healthcheck, an env_file. The devbox.yaml is the one `devbox init` writes, not edited.
Each run starts from nothing (no image, no container, no database volume) and measures, by polling
the app over HTTP every 10 ms from the moment the action begins:

- first_up_s: `devbox up` to the first page that reads the database (build, PostgreSQL's first start,
  the port wait, migrations as setup, the server);
- up_after_edit_s: Ctrl-C, a source edit, `devbox up` again, to the edit served (no rebuild: checked);
- rebuild_alone_s: what that `up` cost before, when the edit rebuilt the image: `compose build` alone;
- dependency_live_s: with `up` running, an edit to app/requirements.txt to the page that shows the
  image's new requirements (a rebuild, a new container, setup, the server).

Results go to bench/results/first_week.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import docker

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests")]
import apps  # noqa: E402
import images  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def served(port: int, path: str, text: str, began: float, timeout: float = 300) -> float:
    """Seconds from `began` to the first answer on `path` holding `text`."""
    while time.monotonic() - began < timeout:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                if text in r.read().decode():
                    return time.monotonic() - began
        except OSError:
            pass
        time.sleep(0.01)
    raise RuntimeError(f"{path} never answered {text!r}")


def devbox(folder: Path, *args: str, log: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "devbox", *args], cwd=folder,
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=log.open("a") if log else subprocess.DEVNULL, stderr=subprocess.STDOUT)


def one_run(workdir: Path, site: Path) -> dict[str, float]:
    name = "bfw-" + uuid.uuid4().hex[:6]
    folder, stack, port = workdir / name, f"{name}-stack", free_port()
    apps.make_django_postgres_project(folder, site, stack, port)
    subprocess.run([sys.executable, "-m", "devbox", "init"], cwd=folder, check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    log = folder / "up.log"
    out: dict[str, float] = {}
    try:
        began = time.monotonic()
        up = devbox(folder, "up", log=log)
        out["first_up_s"] = served(port, "/db/", "migrations", began)
        up.send_signal(signal.SIGINT)
        up.wait(60)

        (folder / "app" / "mysite" / "value.py").write_text(apps.value_module("edited"))
        began = time.monotonic()
        up = devbox(folder, "up", log=log)
        out["up_after_edit_s"] = served(port, "/hello/", "hello edited", began)
        if "building" in log.read_text().split("ready in")[-2]:
            raise RuntimeError("the up after a source edit rebuilt the image")

        (folder / "app" / "requirements.txt").write_text("Django==5.2\npsycopg2-binary==2.9.10\nredis==5\n")
        began = time.monotonic()
        out["dependency_live_s"] = served(port, "/deps/", "redis==5", began)
        up.send_signal(signal.SIGINT)
        up.wait(60)

        (folder / "app" / "mysite" / "value.py").write_text(apps.value_module("edited again"))
        began = time.monotonic()
        subprocess.run(["docker", "compose", "-f", str(folder / "docker-compose.yml"), "build", "web"], check=True,
                       capture_output=True)
        out["rebuild_alone_s"] = time.monotonic() - began
    finally:
        subprocess.run([sys.executable, "-m", "devbox", "down", "--volumes"], cwd=folder, capture_output=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
        client = docker.from_env()
        for label in (f"com.docker.compose.project={stack}", f"devbox.project={name}"):
            for image in client.images.list(filters={"label": label}):
                client.images.remove(image.id, force=True)
        subprocess.run(["docker", "image", "rm", "-f", f"{stack}-web"], capture_output=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    site = images.install_frameworks()
    images.build_python()
    images.build_postgres()
    runs = []
    with tempfile.TemporaryDirectory() as workdir:
        for i in range(args.runs):
            runs.append(one_run(Path(workdir), site))
            print(f"run {i + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in runs[-1].items()), flush=True)
    result = {k: {"median": round(statistics.median(r[k] for r in runs), 2), "runs": [round(r[k], 2) for r in runs]}
              for k in runs[0]}
    out = ROOT / "bench" / "results" / "first_week.json"
    out.write_text(json.dumps({"machine": f"{os.cpu_count()} cores", "results": result}, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Projects nobody here had seen, run from `devbox init` alone, timed by an outside observer.

    python bench/layouts.py [--saves 5]

The layouts are tests/layouts.py's (a monorepo's FastAPI backend with Compose's override file and a
one-shot `prestart`; a Django project whose service mounts only its package, with a `requirements/`
folder and Redis; a nested Flask package from a Dockerfile alone). For each, from nothing (no image, no
container, no volume): `devbox init`, then `devbox up` to the first answer of the app's /hello/ page
(first_up_s), then `--saves` edits of a module, each from the write to the page showing it (save_s,
median), polling every 10 ms (bench/first_week.py's observer); the preload state from `devbox status`. The devbox.yaml init wrote is kept in
the results. `down --volumes` ends each, and what it leaves is counted.

Results go to bench/results/layouts.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
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
import apps  # noqa: E402
import images  # noqa: E402
import layouts  # noqa: E402
from first_week import free_port, served  # noqa: E402  (bench/first_week.py's observer)


def devbox(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "devbox", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})


def run_layout(name: str, make, module: str, text: str, saves: int, client) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        project = f"bench-{uuid.uuid4().hex[:6]}"
        folder = Path(tmp) / project
        folder.mkdir()
        port, stack = free_port(), f"{project}-stack"
        make(folder, stack, port)
        volumes_before = {v.name for v in client.volumes.list()}
        init = devbox("init", cwd=folder)
        assert init.returncode == 0, init.stderr
        config = (folder / "devbox.yaml").read_text()
        if "5000:5000" in config:  # the Flask layout: the bench's port, and the frameworks (as a user adds them)
            config = config.replace('"5000:5000"', f'"{port}:5000"').replace(
                "  - ./src:/srv/shop/src\n", f"  - ./src:/srv/shop/src\n  - {images.SITE_DIR}:/site:ro\n", 1)
            (folder / "devbox.yaml").write_text(config)
        lines: list[str] = []
        began = time.monotonic()
        up = subprocess.Popen([sys.executable, "-m", "devbox", "up"], cwd=folder, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        threading.Thread(target=lambda: lines.extend(line.rstrip() for line in up.stdout), daemon=True).start()
        try:
            first_up = served(port, "/hello/", text.format("v1"), began)
            times = []
            for i in range(2, saves + 2):
                time.sleep(1.5)  # the preloader learns from the first fork, a second after its imports
                saved = time.monotonic()
                (folder / module).write_text(apps.value_module(f"v{i}"))
                times.append(served(port, "/hello/", text.format(f"v{i}"), saved, timeout=60))
            status = devbox("status", "--json", cwd=folder)
            preload = json.loads(status.stdout).get("preload") if status.returncode == 0 else None
        finally:
            up.send_signal(signal.SIGINT)
            up.wait(60)
            down = devbox("down", "--volumes", cwd=folder)
        left = {v.name for v in client.volumes.list()} - volumes_before
        return {"layout": name, "devbox_yaml": [line for line in config.splitlines() if not line.startswith("#")],
                "first_up_s": round(first_up, 2), "save_s_median": round(statistics.median(times), 3),
                "save_s": [round(t, 3) for t in times], "preload": preload,
                "preload_lines": [line for line in lines if "preload" in line and "trace" not in line],
                "ready_lines": [line for line in lines if "ready in" in line][-3:],
                "down_ok": down.returncode == 0, "volumes_left": sorted(left)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--saves", type=int, default=5)
    args = parser.parse_args()
    client = docker.from_env()
    site = images.install_frameworks()
    images.build_python(), images.build_busybox(), images.build_redis()
    runs = [
        ("monorepo FastAPI backend + compose.override.yml + prestart",
         lambda f, stack, port: layouts.make_full_stack(f, stack, port, site), "backend/app/value.py", "hello {} "),
        ("Django, only its package mounted, requirements/, Redis, VOLUME",
         lambda f, stack, port: layouts.make_django_cms(f, stack, port, site), "mysite/value.py", "hello {}"),
        ("nested Flask package, Dockerfile alone", lambda f, stack, port: layouts.make_nested_flask(f),
         "src/shop/value.py", "hello {}"),
    ]
    results = [run_layout(name, make, module, text, args.saves, client) for name, make, module, text in runs]
    out = ROOT / "bench" / "results" / "layouts.json"
    out.write_text(json.dumps({"when": time.strftime("%Y-%m-%d %H:%M"), "layouts": results}, indent=2) + "\n")
    for r in results:
        print(f"{r['layout']}: first up {r['first_up_s']} s, save {r['save_s_median']} s (median of "
              f"{len(r['save_s'])}), preload {r['preload']}, volumes left {len(r['volumes_left'])}")


if __name__ == "__main__":
    main()

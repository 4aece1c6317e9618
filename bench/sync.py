#!/usr/bin/env python3
"""Edit-to-serving with `sync:` against the bind mount, side by side in one run: devbox on Django with
the template's config (preloaded), the same edits and the same outside observer as bench/reload.py
(/hello/ polled every 5 ms from the save).

Contenders:
- mounted: the main engine, the project bind-mounted (what devbox does on a local engine);
- synced, same engine: `sync: true` on the main engine: the cost of carrying the files, alone;
- tcp:// engine: a second dockerd of the bench's own (tests/second_engine.py) that cannot see the
  project, as one on another host cannot (`sync: auto` picks sync);
- ssh:// engine: the same engine through an sshd of the bench's own (tests/ssh_server.py): devbox's
  SSH connection carries the engine's API and the app's port;
- ... + 20 ms: 10 ms added each way between devbox and the engine (tcp://: the API and the observer's
  requests; ssh://: the SSH connection, so both). This kernel has no `tc netem` ("Specified qdisc kind
  is unknown"), so the delay is a proxy of the bench's own (bench/latency.py).

    python bench/sync.py [--saves 15] [--out bench/results/sync.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "bench"), str(ROOT), str(ROOT / "tests")]
import apps  # noqa: E402
import images  # noqa: E402
import reload  # noqa: E402
from latency import DelayProxy  # noqa: E402
from second_engine import SecondEngine  # noqa: E402
from ssh_server import SshServer  # noqa: E402


def ping_ms(docker_host: str) -> float:
    import docker

    client = docker.DockerClient(base_url=docker_host)
    times = []
    for _ in range(9):
        began = time.perf_counter()
        client.ping()
        times.append(time.perf_counter() - began)
    return sorted(times)[4] * 1000


def contender(app: Path, site: Path, saves_count: int, sync: str, env: dict, observe=lambda port: port) -> dict:
    """`observe(port)`: where the outside observer asks for the app published at `port`."""
    port = reload.free_port()
    config = reload.template_config(reload.APPS["Django"], site, port, f"devboxbench-sync-{os.getpid()}")
    config["sync"] = {"true": True, "false": False}.get(sync, sync)
    (app / "devbox.yaml").write_text(yaml.safe_dump(config))
    run = reload.Devbox(app, {"DEVBOX_TRACE": "1", **env})
    try:
        run.wait_line(r"ready in", timeout=300)
        placement = next(line for _, line in run.lines if "files:" in line)
        seen = observe(port)
        reload.saves(app, seen, reload.WARM_UP, "warm-up", settle=0.5)
        before = run.count(r"start exec \(preloaded\)")
        times = reload.saves(app, seen, saves_count, "sync", settle=0.5)
        run.wait_count(r"start exec \(", reload.WARM_UP + saves_count, timeout=60)
        synced = [float(line.rsplit(" in ", 1)[1].split(" ms")[0]) for _, line in run.lines
                  if "trace: synced" in line][-saves_count:]
        out = reload.summary(times) | {"preloaded": run.count(r"start exec \(preloaded\)") - before,
                                       "placement": placement.removeprefix("devbox: ")}
        if synced:
            out["sync_batch_ms_median"] = sorted(synced)[len(synced) // 2]
        return out
    finally:
        if run.proc.poll() is None:
            run.stop()
        subprocess.run([sys.executable, "-m", "devbox", "down"], cwd=app, capture_output=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT), **env})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=15)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sync.json")
    args = parser.parse_args()
    images.build_python()
    site = images.install_frameworks()
    work = Path(tempfile.mkdtemp(prefix="devbox-bench-sync-"))
    app = work / "app"
    apps.make_django_app(app, site, value="start")
    engine = SecondEngine(work).start()
    sshd = SshServer(engine.root / "docker.sock").start()
    results: dict = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "saves": args.saves}
    try:
        engine.load(images.PYTHON_IMAGE)
        api_delayed = DelayProxy(("127.0.0.1", engine.port), 10)
        ssh_delayed = DelayProxy(("127.0.0.1", sshd.port), 10)
        sshd.also_known_at(ssh_delayed.port)
        delayed_ssh_env = {**sshd.env(), "DOCKER_HOST": f"ssh://root@127.0.0.1:{ssh_delayed.port}"}
        app_proxies: dict[int, DelayProxy] = {}

        def delayed_app(port: int) -> int:
            app_proxies[port] = DelayProxy(("127.0.0.1", port), 10)
            return app_proxies[port].port

        runs = [("mounted", "false", {}, lambda p: p),
                ("synced, same engine", "true", {}, lambda p: p),
                ("tcp:// engine", "auto", {"DOCKER_HOST": engine.host}, lambda p: p),
                ("ssh:// engine", "auto", sshd.env(), lambda p: p),
                ("tcp:// engine + 20 ms", "auto", {"DOCKER_HOST": f"tcp://127.0.0.1:{api_delayed.port}"}, delayed_app),
                ("ssh:// engine + 20 ms", "auto", delayed_ssh_env, lambda p: p)]
        results["engine_round_trip_ms"] = {"main (unix socket)": ping_ms("unix:///var/run/docker.sock"),
                                           "tcp://": ping_ms(engine.host),
                                           "tcp:// + 20 ms": ping_ms(f"tcp://127.0.0.1:{api_delayed.port}")}
        for name, sync, env, observe in runs:
            results[name] = contender(app, site, args.saves, sync, env, observe)
            print(f"{name}: median {results[name]['median'] * 1000:.0f} ms ({results[name]['placement']})", flush=True)
        base = results["mounted"]["median"]
        results["ratio_to_mounted"] = {name: round(results[name]["median"] / base, 3) for name, *_ in runs}
    finally:
        sshd.stop()
        engine.stop()
        shutil.rmtree(work, ignore_errors=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["ratio_to_mounted"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

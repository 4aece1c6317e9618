#!/usr/bin/env python3
"""Edit-to-serving with the debugger, side by side in one run: devbox on Django with the template's
config, without `debugger:`, with it and no client, and with it and a client attached (the Debug
Adapter Protocol as VS Code speaks it, tests/dap.py, with a breakpoint set in code the page does not
run); preloaded (the default) and cold (`preload: false`). The same edits and the same outside
observer as bench/reload.py (/hello/ polled every 5 ms from the save).

    python bench/debugger.py [--saves 15] [--out bench/results/debugger.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "bench"), str(ROOT), str(ROOT / "tests")]
import apps  # noqa: E402
import dap  # noqa: E402
import images  # noqa: E402
import reload  # noqa: E402

UNUSED = "def never_called():\n    return 1\n"  # a breakpoint on line 2: set, never hit by /hello/


def contender(app: Path, site: Path, saves: int, debugger: bool, client: bool, preload: bool | None) -> dict:
    port, debug_port = reload.free_port(), reload.free_port()
    config = reload.template_config(reload.APPS["Django"], site, port, f"devboxbench-dbg-{os.getpid()}", preload)
    if debugger:
        config["debugger"] = {"port": debug_port}
    (app / "devbox.yaml").write_text(yaml.safe_dump(config))
    run = reload.Devbox(app, {"DEVBOX_TRACE": "1"})
    session = None
    try:
        run.wait_line(r"ready in")
        if client:
            session = dap.Client("127.0.0.1", debug_port, [{"localRoot": str(app), "remoteRoot": "/app"}],
                                 {str(app / "mysite" / "unused.py"): [2]})
            session.attach()
            session.wait_configured(1)
        reload.saves(app, port, reload.WARM_UP, "warm-up", settle=0.5)
        before = run.count(r"start exec \(preloaded\)")
        times = reload.saves(app, port, saves, "dbg", settle=0.5)
        run.wait_count(r"start exec \(", reload.WARM_UP + saves)
        out = reload.summary(times) | {"preloaded": run.count(r"start exec \(preloaded\)") - before}
        if session is not None:
            out["child_sessions"] = session.children
            out["client_errors"] = session.errors
        return out
    finally:
        if session is not None:
            session.close()
        if run.proc.poll() is None:
            run.stop()
        subprocess.run([sys.executable, "-m", "devbox", "down"], cwd=app, capture_output=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=15)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "debugger.json")
    args = parser.parse_args()
    images.build_python()
    site = images.install_frameworks()
    work = Path(tempfile.mkdtemp(prefix="devbox-bench-debugger-"))
    app = work / "app"
    apps.make_django_app(app, site, value="start")
    (app / "mysite" / "unused.py").write_text(UNUSED)
    results: dict = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "saves": args.saves}
    for name, debugger, client, preload in (
            ("preloaded, no debugger", False, False, None),
            ("preloaded, debugger, no client", True, False, None),
            ("preloaded, debugger, client attached", True, True, None),
            ("cold, no debugger", False, False, False),
            ("cold, debugger, client attached", True, True, False)):
        results[name] = contender(app, site, args.saves, debugger, client, preload)
        print(f"{name}: median {results[name]['median']:.3f}s, p90 {results[name]['p90']:.3f}s", flush=True)
    for kind in ("preloaded", "cold"):
        base = results[f"{kind}, no debugger"]["median"]
        results[f"{kind}: attached / no debugger"] = results[f"{kind}, debugger, client attached"]["median"] / base
        print(f"{kind}: with a client attached / without the debugger = "
              f"{results[f'{kind}: attached / no debugger']:.2f}x", flush=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

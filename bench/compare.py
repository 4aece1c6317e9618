"""Two versions of devbox, measured in one run: Django edit-to-serving, preloaded and cold, and the floor.

    python bench/compare.py BEFORE_REV [--saves 12] [--rounds 2]

BEFORE_REV (a commit) is checked out in a temporary git worktree and run from there; the working tree
is "after". Rounds alternate before/after (floor, before, after, before, after, floor), so drift on the
machine hits both alike. Same app, same template config, same outside observer as bench/reload.py.
Writes bench/results/compare.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import docker

sys.path[:0] = [str(Path(__file__).resolve().parent)]
import reload  # noqa: E402  (bench/reload.py: its contenders and observer)

ROOT = reload.ROOT


def run_from(root: Path, app: Path, site: Path, saves: int, preload: bool | None) -> list[float]:
    reload.ROOT = root  # Devbox runs `python -m devbox` with this on PYTHONPATH
    try:
        return reload.bench_devbox(app, site, saves, None, preload=preload)
    finally:
        reload.ROOT = ROOT


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("--saves", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    client = docker.from_env()
    reload.images.build_python()
    site = reload.images.install_frameworks()
    results: dict[str, list[float]] = {"floor": [], "before": [], "after": [], "before cold": [], "after cold": []}
    with tempfile.TemporaryDirectory(prefix="devbox-compare-") as tmp:
        before = Path(tmp) / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(before), args.before],
                       check=True, capture_output=True)
        try:
            app = reload.prepare_app(Path(tmp), site)
            results["floor"] += reload.bench_floor(client, app, site, args.saves)
            for i in range(args.rounds):
                for name, root in (("before", before), ("after", ROOT)):
                    print(f"round {i + 1}: {name}...", flush=True)
                    results[name] += run_from(root, app, site, args.saves, None)
                    results[f"{name} cold"] += run_from(root, app, site, args.saves, False)
            results["floor"] += reload.bench_floor(client, app, site, args.saves)
        finally:
            for c in client.containers.list(all=True, filters={"label": reload.LABEL}):
                c.remove(force=True)
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)], capture_output=True)
    summary = {k: {"median": round(reload.summary(v)["median"], 3), "p90": round(reload.summary(v)["p90"], 3),
                   "n": len(v)} for k, v in results.items()}
    floor = summary["floor"]["median"]
    for k in summary:
        summary[k]["ratio_to_floor"] = round(summary[k]["median"] / floor, 2)
    out = ROOT / "bench" / "results" / "compare.json"
    out.write_text(json.dumps({"before": args.before, "after": "working tree", "results": summary}, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

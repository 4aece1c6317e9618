"""A framework's own reloader, left on under devbox: how to tell, and the one line that says how to turn it off.

devbox restarts the server on every save, so a reloader of the framework's own only polls the same
files again (and, for Werkzeug and uvicorn, runs the app in a second process). It still works, and
devbox does not fight it: it says so once per `up`, after the first start was ready.
"""

from __future__ import annotations

__all__ = ["TreeProcess", "TREE_SCRIPT", "own_reloader_hint", "parse_tree"]

from dataclasses import dataclass

# $1: the token of the start. One line per process of the server's tree (it carries the token):
# "PID MARKS CMDLINE", MARKS a comma list of what tells a reloader's process apart.
TREE_SCRIPT = """
for f in $(grep -lsa "DEVBOX_SERVER_ID=$1" /proc/[0-9]*/environ); do
  p=${f#/proc/}; p=${p%/environ}
  marks=-
  grep -qsa "WERKZEUG_RUN_MAIN=true" "$f" && marks="$marks,werkzeug"
  grep -qsa "multiprocessing" "/proc/$p/cmdline" && marks="$marks,spawn"
  grep -qsa "devbox-preload" "/proc/$p/cmdline" && marks="$marks,devbox"
  echo "$p $marks"
done
"""


@dataclass(frozen=True)
class TreeProcess:
    pid: int
    werkzeug_child: bool  # started by Werkzeug's reloader (WERKZEUG_RUN_MAIN=true)
    spawned: bool  # a multiprocessing spawn child (uvicorn's reloader runs the app in one)
    devbox: bool  # devbox's own preload client


def parse_tree(out: str) -> list[TreeProcess]:
    tree = []
    for line in out.splitlines():
        pid, _, marks = line.partition(" ")
        if pid.isdigit():
            found = set(marks.split(","))
            tree.append(TreeProcess(int(pid), "werkzeug" in found, "spawn" in found, "devbox" in found))
    return tree


def own_reloader_hint(argv: list[str] | None, tree: list[TreeProcess]) -> str:
    """The line to say about the server's own reloader, or ""."""
    words = argv or []
    if any(p.werkzeug_child for p in tree):
        return ("the app's own reloader (Werkzeug) runs a second process that polls the files; devbox already "
                "restarts on every save: turn it off with use_reloader=False in app.run(), or --no-reload for flask run")
    if "--reload" in words and any(p.spawned for p in tree):
        return ("the server's own reloader (uvicorn --reload) runs a second process that polls the files; devbox "
                "already restarts on every save: drop --reload")
    if "runserver" in words and "--noreload" not in words:
        return ("runserver's own reloader polls the files too; devbox already restarts on every save: "
                "add --noreload")
    if "gunicorn" in " ".join(words[:3]) and "--reload" in words:
        return ("gunicorn's own reloader (--reload) polls the files too; devbox already restarts on every save: "
                "drop --reload")
    return ""

"""100 reloads of a server whose children leave its group: nothing piles up, devbox stays flat."""

from __future__ import annotations

import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import soak  # noqa: E402


def test_100_reloads_leave_nothing_behind_and_devbox_stays_flat(client, busybox_image):
    result = soak.soak(100)  # its project is labelled dbt-..., so the session sweep also catches it
    assert result["leftovers"] == 0 and result["zombies"] == 0, result
    before, after = result["before"], result["after"]
    assert after["rss_kb"] - before["rss_kb"] < 8_000, result
    assert after["threads"] <= before["threads"] + 2, result
    # sockets are released as the garbage collector runs (docker-py, urllib3): a few dozen come and go;
    # a leak of one per reload would add 100
    assert after["fds"] <= before["fds"] + 24, result

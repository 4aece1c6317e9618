"""100 reloads of a server whose children leave its group: nothing piles up, devbox stays flat."""

from __future__ import annotations

import json
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import soak  # noqa: E402


def test_200_reloads_leave_nothing_behind_and_devbox_stays_flat(client, busybox_image):
    result = soak.soak(200)  # its project is labelled dbt-..., so the session sweep also catches it
    assert result["leftovers"] == 0 and result["zombies"] == 0, result
    before, after = result["before"], result["after"]
    assert after["rss_kb"] - before["rss_kb"] < 8_000, result
    assert after["threads"] <= before["threads"] + 2, result
    # each exec's socket is closed when its output ends (output.close_exec), not left to the garbage
    # collector: flat, but for a connection of the engine client's pool (left to it, 200 reloads added ~10)
    assert after["fds"] <= before["fds"] + 2, result


@pytest.mark.parametrize("seed", [11, 12])
def test_a_storm_of_saves_ends_serving_the_last_one_with_one_preloaded_server(client, python_image, seed):
    # 120 saves 10-100 ms apart: stops land at every point of a preloaded start (before the client has
    # its pid, while the child sets itself up, while the preloader reaps); bench/soak.py --storm runs 300 x 5
    result = soak.storm(120, seed)
    assert result["ok"], json.dumps(result, indent=1)  # a string: shown whole
    assert result["preloaded_starts"] > 10, result

"""The ready probe's timing, as pure logic: a fake check records when it is called."""

from __future__ import annotations

import time
from pathlib import Path

from devbox import ready
from devbox.config import Ready, load
from devbox.server import ServerProcess


def config_with(tmp_path: Path, ready_line: str):
    (tmp_path / "devbox.yaml").write_text(f"image: x\ncommand: x\nports: ['8000:8000']\nready: {ready_line}\n")
    return load(tmp_path / "devbox.yaml")


def test_probing_waits_for_a_share_of_the_last_start(tmp_path, monkeypatch):
    calls: list[float] = []
    monkeypatch.setattr(ready, "_check_for", lambda config, proc, direct_ip=None, published=None: lambda: calls.append(time.monotonic()) or len(calls) > 2)
    monkeypatch.delenv("DEVBOX_PROBE_EAGER", raising=False)
    config = config_with(tmp_path, "{http: /}")
    began = time.monotonic()
    assert ready.wait_ready(config, ServerProcess("x", "t"), lambda: False, expected=0.5) is ready.ProbeOutcome.READY
    assert calls[0] - began >= ready.QUIET_SHARE * 0.5  # no probe before 0.3 s: it would slow the start

    calls.clear()
    began = time.monotonic()
    assert ready.wait_ready(config, ServerProcess("x", "t"), lambda: False, expected=0.0) is ready.ProbeOutcome.READY
    assert calls[0] - began < 0.25  # the first start has nothing to go by: probe at once (not after 0.6 × …)


def test_a_log_probe_costs_nothing_and_starts_at_once(tmp_path):
    config = config_with(tmp_path, "{log: listening}")
    assert isinstance(config.ready, Ready) and config.ready.log == "listening"
    proc = ServerProcess("x", "t")
    proc.log_matched.set()
    began = time.monotonic()
    assert ready.wait_ready(config, proc, lambda: False, expected=5.0) is ready.ProbeOutcome.READY
    assert time.monotonic() - began < 0.25  # not after 0.6 × 5 s

"""The loop's decisions, driven with fakes of the launcher and the engine: no Docker needed (the fast
layer). The real-engine tests (test_reload, test_server_tree, test_first_week...) prove the fakes tell
the truth: the same exits, lines and answers happen there with real servers."""

from __future__ import annotations

import queue
from pathlib import Path

import pytest

from devbox.config import load
from devbox.loop.exits import ExitAction, ExitFacts, ExitHistory, decide_exit
from devbox.interrupts import Interrupts
from devbox.ready import ProbeOutcome
from devbox.server import ServerProcess, server_command
from devbox.loop.events import Changed, Control, Exited, Probed, Retry, Stop, StoppedBy
from devbox.loop.slot import ServerSlot
from devbox.loop.supervisor import Supervisor


# -- the exit policy, pure ------------------------------------------------------------------------

def facts(**over) -> ExitFacts:
    base = dict(code=1, ready=False, preloaded=False, preloading=False, change_follows=False, ran_for=5.0,
                since_services=None, ever_ready=True, ready_timeout=30.0)
    return ExitFacts(**{**base, **over})


@pytest.mark.parametrize("over,action", [
    ({"code": 3, "ready": True}, ExitAction.RESTART),  # Django's "restart me"
    ({"code": 3, "ready": True, "change_follows": True}, ExitAction.NOTHING),  # the change restarts it
    ({"code": 3, "ready": False}, ExitAction.CRASH),  # uvicorn's "cannot import the app"
    ({"code": 1}, ExitAction.CRASH),
    ({"code": 137, "ready": True}, ExitAction.CRASH),
    ({"code": 1, "preloaded": True, "preloading": True}, ExitAction.COLD_CHECK),
    ({"code": 1, "preloaded": True, "preloading": True, "ready": True}, ExitAction.CRASH),  # it served
    ({"code": 1, "preloaded": True, "preloading": True, "change_follows": True}, ExitAction.CRASH),
    ({"code": 1, "since_services": 2.0, "ever_ready": False}, ExitAction.RETRY_LATER),  # db not listening yet
    ({"code": 1, "since_services": 31.0, "ever_ready": False}, ExitAction.CRASH),  # past ready.timeout
    ({"code": 1, "since_services": 2.0, "ever_ready": True}, ExitAction.CRASH),  # it was ready once: a crash
    ({"code": 1, "since_services": 2.0, "ever_ready": False, "preloaded": True, "preloading": True},
     ExitAction.RETRY_LATER),  # services first: a database still starting never turns preloading off
])
def test_exit_decisions(over, action):
    assert decide_exit(facts(**over), ExitHistory()).action is action


def test_quick_exits_3_back_off_and_a_slow_one_resets_the_count():
    history = ExitHistory()
    first = decide_exit(facts(code=3, ready=True, ran_for=0.5), history)
    second = decide_exit(facts(code=3, ready=True, ran_for=0.5), history)
    third = decide_exit(facts(code=3, ready=True, ran_for=0.5), history)
    assert first.action is ExitAction.RESTART
    assert (second.action, second.delay) == (ExitAction.RESTART_LATER, 0.5)
    assert (third.action, third.delay) == (ExitAction.RESTART_LATER, 1.0)
    assert "3 times in a row" in third.line
    assert decide_exit(facts(code=3, ready=True, ran_for=9), history).action is ExitAction.RESTART
    assert history.quick_exits == 0


def test_early_crashes_back_off_with_one_line():
    history = ExitHistory()
    decisions = [decide_exit(facts(since_services=1.0 + i, ever_ready=False), history) for i in range(6)]
    assert [d.delay for d in decisions] == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0]
    assert [bool(d.line) for d in decisions] == [True, False, False, False, False, False]


# -- the loop, with a fake launcher --------------------------------------------------------------

class FakeLauncher:
    """Stands in for ExecLauncher/PreloadLauncher: records starts and stops; processes never run."""

    def __init__(self):
        self.starts: list[ServerProcess] = []
        self.stops: list[ServerProcess] = []
        self.last_stop = self.last_start = "fake"
        self.log = lambda lines: None

    def start(self, command, env, ready_log, on_exit) -> ServerProcess:
        proc = ServerProcess(f"exec-{len(self.starts)}", f"token-{len(self.starts)}")
        self.starts.append(proc)
        return proc

    def stop(self, proc, signal, timeout, hurry) -> bool:
        self.stops.append(proc)
        return False

    def close(self) -> None:
        pass

    def invalidate(self) -> None:
        pass

    def tree(self, proc) -> str:
        return ""


@pytest.fixture
def loop(tmp_path, monkeypatch):
    """A Supervisor on a config with no ports (nothing to probe), a fake launcher, its lines in a list."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    (tmp_path / "devbox.yaml").write_text("name: unit\nimage: busybox\ncommand: [server]\n"
                                          "ready: {timeout: 30}\n")
    config = load(tmp_path / "devbox.yaml", environ={})
    sup = Supervisor(config, client=object(), interrupts=Interrupts())
    lines: list[str] = []
    sup.say = lines.append
    sup.slot.launcher = FakeLauncher()
    sup.slot.launcher_for = (config.preload, server_command(config.command, config.entrypoint), config.project_dir)
    sup.lines = lines
    monkeypatch.setattr(ServerSlot, "probe", lambda self, proc: None)  # the tests hand the loop its outcomes
    sup.slot.start("start", 0.0)
    return sup


def probed(sup, outcome: ProbeOutcome, at: float = 0.3, error: str = "") -> None:
    sup.slot.on_probed(Probed(sup.slot.current, outcome, at, error))


def exited(sup, code: int, change_follows: bool = False) -> None:
    proc = sup.slot.current
    proc.exit_code = code
    proc.exited.set()
    sup.slot.on_exit(proc, change_follows)


def test_a_ready_server_that_exits_3_is_restarted_at_once(loop):
    probed(loop, ProbeOutcome.READY)
    exited(loop, 3)
    assert len(loop.slot.launcher.starts) == 2 and loop.slot.reason == "server asked to restart (exit 3)"


def test_exit_3_before_ready_is_a_crash_that_waits_for_a_change(loop):
    exited(loop, 3)
    assert len(loop.slot.launcher.starts) == 1
    assert loop.lines[0].startswith("server exited with code 3 before it was ready")
    assert loop.lines[-1] == "waiting for a change to start it again"


def test_a_crash_in_the_same_batch_as_a_change_leaves_the_start_to_the_change(loop):
    probed(loop, ProbeOutcome.READY)
    exited(loop, 1, change_follows=True)
    assert "waiting for a change to start it again" not in loop.lines
    loop.on_changes({"app.py"}, 1.0)
    assert len(loop.slot.launcher.starts) == 2 and loop.slot.reason == "app.py changed"


def test_a_probe_that_breaks_says_so_and_answers_a_waiting_restart(loop):
    answers = []
    loop.on_control(Control.parse("restart", answers.append))
    probed(loop, ProbeOutcome.FAILED, error="ValueError: boom")
    assert loop.lines[-1].startswith("the ready check failed (ValueError: boom); the server still runs")
    assert answers == [{"ok": False, "line": loop.lines[-1]}]


def test_a_probe_that_times_out_says_so_and_the_server_stays(loop):
    probed(loop, ProbeOutcome.TIMEOUT)
    assert loop.lines[-1].startswith("not ready after 30s (start); it still runs")
    assert loop.slot.current is not None and loop.slot.launcher.stops == []


def test_outcomes_of_an_old_start_or_an_exit_say_nothing(loop):
    for outcome in (ProbeOutcome.CANCELLED, ProbeOutcome.EXITED):
        probed(loop, outcome)
    assert loop.lines == []


def test_ready_and_started_lines_time_from_the_change(loop):
    loop.slot.seen = 10.0
    probed(loop, ProbeOutcome.READY, at=10.42)
    assert loop.lines == ["ready in 0.42s (start)"]
    loop.slot.restart("x.py changed", 20.0)
    probed(loop, ProbeOutcome.NO_CHECK, at=20.1)
    assert loop.lines[-1] == "started in 0.10s (x.py changed)"


def test_quick_exits_3_are_retried_later_as_new_starts(loop, monkeypatch):
    planned: list[tuple[float, Retry]] = []
    monkeypatch.setattr(ServerSlot, "retry_after", lambda self, delay, retry: planned.append((delay, retry)))
    for _ in range(2):
        probed(loop, ProbeOutcome.READY)
        exited(loop, 3)
    assert len(loop.slot.launcher.starts) == 2 and planned[0][0] == 0.5 and loop.slot.current is None
    assert planned[0][1].generation == loop.slot.generation


def test_each_control_verb_is_answered(loop):
    answers: list[dict] = []
    loop.on_control(Control.parse("status", answers.append))
    loop.on_control(Control.parse("frobnicate", answers.append))
    assert answers[0]["ok"] and answers[0]["status"]["restarts"] == 0
    assert answers[1] == {"ok": False, "error": "unknown request 'frobnicate'"}
    loop.on_control(Control.parse("rebuild", answers.append))
    assert answers[2] == {"ok": False, "error": "devbox.yaml has no `build:`: nothing to rebuild"}
    loop.on_control(Control.parse("down", answers.append))
    assert answers[3] == {"ok": True} and loop.stopped_by is StoppedBy.DOWN and loop.slot.current is None


def test_changes_during_a_restart_fold_into_one_more(loop):
    """The loop drains its queue at once: several batches waiting behind a restart give one start."""
    loop.events = queue.SimpleQueue()
    for name in ("a.py", "b.py", "c.py"):
        loop.events.put(Changed({name}, 1.0))
    batch = loop._next_batch()
    changed = [e for e in batch if isinstance(e, Changed)]
    loop.on_changes(set().union(*(e.paths for e in changed)), 1.0)
    assert len(loop.slot.launcher.starts) == 2 and loop.slot.reason.endswith("changed")


def test_an_exit_of_a_replaced_server_is_not_acted_on(loop):
    old = loop.slot.current
    loop.slot.restart("a.py changed", 1.0)
    old.exit_code = 1
    old.exited.set()
    loop.events.put(Exited(old))
    # a verb in the same batch whose answer ends the loop: `_loop` runs that one batch, then stops
    loop.events.put(Control.parse("status", lambda answer: loop.events.put(Stop("SIGINT"))))
    loop._loop()
    assert loop.lines == [] and len(loop.slot.launcher.starts) == 2 and loop.stopped_by is StoppedBy.SIGNAL


def test_a_stop_that_needed_sigkill_says_so(loop):
    loop.slot.launcher.stop = lambda proc, signal, timeout, hurry: True  # the tree outlived SIGTERM
    loop.slot.restart("a.py changed", 1.0)
    assert "server ignored SIGTERM for 5s; killed it" in loop.lines


def test_an_invalid_config_saved_during_up_changes_nothing(loop, tmp_path):
    (tmp_path / "devbox.yaml").write_text("name: unit\nimage: busybox\ncommand: [server]\nstop_timeout: soon\n")
    loop.on_changes({"devbox.yaml"}, 1.0)
    assert loop.lines[-1] == "devbox.yaml not applied; the previous config still runs"
    assert any("stop_timeout: expected a number" in line for line in loop.lines)
    assert len(loop.slot.launcher.starts) == 1 and loop.config.stop_timeout == 5


def test_a_config_whose_container_cannot_be_made_rolls_back(loop, tmp_path, monkeypatch):
    from devbox.errors import ImageError
    from devbox.loop.keeper import ContainerKeeper

    def cannot(self, new, force_build=False):
        raise ImageError("image 'nope' is not local and cannot be pulled", ["pull access denied", "for nope"])

    monkeypatch.setattr(ContainerKeeper, "replace", cannot)
    (tmp_path / "devbox.yaml").write_text("name: unit\nimage: nope\ncommand: [server]\n")
    loop.on_changes({"devbox.yaml"}, 1.0)
    assert loop.lines == ["devbox.yaml not applied: image 'nope' is not local and cannot be pulled",
                          "  | pull access denied", "  | for nope", "the previous container and server still run"]
    assert loop.config.image == "busybox" and len(loop.slot.launcher.starts) == 1


def test_a_config_that_changes_only_the_command_restarts_with_it(loop, tmp_path, monkeypatch):
    fake = loop.slot.launcher
    monkeypatch.setattr(ServerSlot, "new_launcher", lambda self: setattr(
        self, "launcher_for", (self.config.preload, self.command(), self.config.project_dir)))
    (tmp_path / "devbox.yaml").write_text("name: unit\nimage: busybox\ncommand: [server, --fast]\n")
    loop.on_changes({"devbox.yaml"}, 1.0)
    assert loop.lines[0] == "reloaded devbox.yaml"
    assert loop.config.command == ("server", "--fast") and len(fake.starts) == 2
    assert loop.slot.reason == "devbox.yaml changed"

"""Signals and shutdown, against a real engine: every signal at every stage ends with nothing left running."""

from __future__ import annotations

import signal
import socket
import threading
import time

from conftest import http_get, wait_http, wait_until

BUSYBOX = """\
name: {name}
image: devbox-test/busybox:1
ports: ["{port}:8000"]
"""
SERVE = "command: echo started; exec httpd -f -p 8000 -h /app/www\n"


def running(project) -> bool:
    container = project.container()
    return container is not None and container.status == "running"


def timed_interrupt(run, sig=signal.SIGINT, timeout: float = 30) -> tuple[int, float]:
    began = time.monotonic()
    run.proc.send_signal(sig)
    code = run.wait(timeout)
    return code, time.monotonic() - began


def test_sigterm_during_setup_stops_at_once_and_setup_runs_again(project, busybox_image):
    project.config(BUSYBOX + "setup: ['echo setup-begins; sleep 30; echo setup-ends']\n" + SERVE)
    project.write("www/index.html", "hi\n")
    run = project.up()
    run.wait_for(r"^setup-begins$")
    code, took = timed_interrupt(run, signal.SIGTERM)
    assert code == 0 and took < 2.0, (code, took, run.output)
    assert not running(project)
    assert run.count(r"^setup-ends$") == 0

    second = project.up()
    second.wait_for(r"setup did not finish in this container last time; running it again")
    second.wait_for(r"^setup-begins$")
    assert second.interrupt() == 0


def test_finished_setup_is_not_run_again(project, busybox_image):
    project.config(BUSYBOX + "setup: ['echo setup-ran']\n" + SERVE)
    project.write("www/index.html", "hi\n")
    run = project.up()
    run.wait_for(r"ready in .*\(start\)")
    assert run.interrupt() == 0
    second = project.up()
    second.wait_for(r"ready in .*\(start\)")
    assert second.count(r"^setup-ran$") == 0 and run.count(r"^setup-ran$") == 1
    assert second.interrupt() == 0


def test_signal_as_the_container_is_created_leaves_it_stopped(project, busybox_image):
    project.config(BUSYBOX + SERVE)
    project.write("www/index.html", "hi\n")
    run = project.up()
    run.wait_for(r"creating container")
    code, took = timed_interrupt(run, signal.SIGTERM)
    assert code in (0, 130) and took < 5, (code, took, run.output)
    assert not running(project), run.output


def test_second_ctrl_c_kills_a_slow_server_and_still_stops_the_container(project, busybox_image):
    project.config(BUSYBOX + "stop_timeout: 30\n"
                   "command: trap '' TERM INT; echo started; httpd -f -p 8000 -h /app/www\n")
    project.write("www/index.html", "hi\n")
    run = project.up()
    run.wait_for(r"ready in .*\(start\)")
    run.proc.send_signal(signal.SIGINT)
    # the first signal was taken (two signals close together are one to the process: POSIX merges them)
    run.wait_for(r"still stopping the server; Ctrl-C again ends it now", timeout=10)
    assert http_get(project.port) is not None, "the server still serves while it ignores SIGTERM"
    began = time.monotonic()
    run.proc.send_signal(signal.SIGINT)
    code = run.wait(20)
    assert code == 0 and time.monotonic() - began < 5, run.output
    assert "again: still stopping" in run.output
    assert not running(project)


def test_sighup_stops_like_ctrl_c(project, busybox_image):
    project.config(BUSYBOX + SERVE)
    project.write("www/index.html", "hi\n")
    run = project.up()
    run.wait_for(r"ready in .*\(start\)")
    code, _ = timed_interrupt(run, signal.SIGHUP)
    assert code == 0
    assert "stopping container" in run.output
    assert not running(project)


def test_ctrl_c_during_an_exec_rule_is_honoured_within_a_second(project, busybox_image):
    project.config(BUSYBOX + SERVE + 'watch: {{rules: [{{match: ["assets/**"], '
                   'action: {{exec: "echo building; sleep 30; echo built"}}}}]}}\n')
    project.write("www/index.html", "hi\n")
    run = project.up()
    run.wait_for(r"ready in .*\(start\)")
    project.write("assets/app.ts", "x\n")
    run.wait_for(r"^building$")
    code, took = timed_interrupt(run)
    assert code == 0 and took < 2.0, (took, run.output)
    assert not running(project)


def test_ctrl_c_during_an_image_pull_is_honoured_within_a_second(project, client):
    # a registry that accepts connections and never answers: the engine's pull hangs
    registry = socket.socket()
    registry.bind(("127.0.0.1", 0))
    registry.listen(16)
    held: list[socket.socket] = []
    threading.Thread(target=lambda: [held.append(registry.accept()[0]) for _ in range(16)], daemon=True).start()
    try:
        port = registry.getsockname()[1]
        project.config(f"name: {{name}}\nimage: 127.0.0.1:{port}/devbox-test/hangs:1\ncommand: httpd -f\n")
        run = project.up()
        run.wait_for(r"is not here; pulling it")
        wait_until(lambda: held, 10, "the engine to connect to the registry")
        code, took = timed_interrupt(run)
        assert code == 0 and took < 1.5, (took, run.output)
    finally:
        registry.close()
        for conn in held:
            conn.close()


def test_a_failed_up_leaves_a_stopped_container_stopped(project, busybox_image):
    project.config(BUSYBOX + SERVE)
    project.write("www/index.html", "hi\n")
    run = project.up()
    run.wait_for(r"ready in .*\(start\)")
    assert run.interrupt() == 0
    container_id = project.container().id
    # the image is gone for the new config: `up` fails, and the old container stays as it was
    text = (project.path / "devbox.yaml").read_text().replace("devbox-test/busybox:1", "devbox-test/no-such-image:1")
    project.write("devbox.yaml", text)
    failed = project.run("up")
    assert failed.returncode == 1, failed.stderr
    container = project.container()
    assert container.id == container_id and container.status == "exited"


def test_down_ends_a_running_up_with_one_line(project, busybox_image):
    project.config(BUSYBOX + SERVE)
    project.write("www/index.html", "hi\n")
    run = project.up()
    run.wait_for(r"ready in .*\(start\)")
    down = project.run("down")
    assert down.returncode == 0, down.stderr
    assert "ended the running `devbox up`" in down.stderr
    assert run.wait(10) == 0
    assert run.count(r"`devbox down` was run") == 1
    assert project.container() is None
    assert "unexpected" not in run.output and "Traceback" not in run.output


def test_live_config_that_cannot_apply_keeps_the_old_container_serving(project, busybox_image):
    project.config(BUSYBOX + SERVE)
    project.write("www/index.html", "hi\n")
    run = project.up()
    run.wait_for(r"ready in .*\(start\)")
    first_id = project.container().id
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        text = (project.path / "devbox.yaml").read_text()
        project.write("devbox.yaml", text.replace(f'"{project.port}:8000"', f'"{project.port}:8000", "{busy}:8001"'))
        run.wait_for(r"devbox.yaml not applied: .*port .*already in use")
        run.wait_for(r"the previous container and server still run")
        wait_http(project.port, "hi")
    assert project.container().id == first_id
    assert len(project.client.containers.list(all=True, filters={"label": f"devbox.project={project.name}"})) == 1
    assert run.interrupt() == 0


def test_a_second_signal_handler_takes_no_lock_the_main_thread_may_hold(monkeypatch):
    # Python runs a handler between two bytecodes of the main thread, which may be inside `say` holding the
    # output lock: a handler that prints would wait on that lock for ever (a CI run hung so, once).
    import queue

    from devbox import output
    from devbox.interrupts import Interrupts
    from devbox.loop.events import Stop
    from devbox.loop.supervisor import Supervisor

    monkeypatch.setattr(output, "_use_sinks", True)
    supervisor = object.__new__(Supervisor)
    supervisor.events, supervisor.interrupts = queue.SimpleQueue(), Interrupts()
    supervisor.interrupts.count = 2  # a second Ctrl-C
    handler = threading.Thread(target=supervisor._on_signal, args=("SIGINT",), daemon=True)
    with output._sinks_lock:  # as when the signal lands while the main thread writes a line
        handler.start()
        handler.join(2)
    assert not handler.is_alive(), "the signal handler waited on the output lock"
    assert isinstance(supervisor.events.get_nowait(), Stop)

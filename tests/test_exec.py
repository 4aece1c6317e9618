"""`devbox exec` and `devbox shell` as a user types them: under a real pseudo-terminal, and with pipes."""

from __future__ import annotations

import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import time

from conftest import ROOT, wait_until

APP = """\
name: {name}
image: devbox-test/{image}
env: {{GREETING: hello}}
command: exec sleep 3600
"""


class Terminal:
    """A process on a pseudo-terminal of its own (its controlling tty), and what its screen shows."""

    def __init__(self, args: list[str], cwd, rows: int = 40, cols: int = 120):
        self.master, slave = os.openpty()
        self.resize(rows, cols, slave)
        self.proc = subprocess.Popen(args, cwd=cwd, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                                     preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
                                     env={**os.environ, "PYTHONPATH": str(ROOT), "TERM": "xterm"})
        os.close(slave)
        self.screen = b""

    def resize(self, rows: int, cols: int, fd: int | None = None) -> None:
        fcntl.ioctl(self.master if fd is None else fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def expect(self, text: bytes, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.screen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {text!r}; the screen shows:\n{self.screen.decode(errors='replace')}")
            ready, _, _ = select.select([self.master], [], [], min(left, 0.2))
            if ready:
                try:
                    self.screen += os.read(self.master, 65536)
                except OSError:  # the other side closed
                    if text not in self.screen:
                        raise AssertionError(f"the terminal closed before {text!r}:\n{self.screen.decode(errors='replace')}")

    def wait(self, timeout: float = 20) -> int:
        code = self.proc.wait(timeout)
        os.close(self.master)
        return code


def devbox(*args: str) -> list[str]:
    return [sys.executable, "-m", "devbox", *args]


def started(project, image: str = "busybox:1"):
    project.config(APP.replace("{image}", image))
    run = project.up()
    run.wait_for(r"started in .*\(start\)")
    return run


# `docker exec -it` sets the size just after the command starts: wait inside until it is there
SIZE_SET = 'while [ "$(stty size)" = "0 0" ]; do sleep 0.05; done; '


def test_exec_on_a_terminal_sees_its_size_and_resizes_and_passes_the_exit_code(project, python_image):
    run = started(project, "python:bookworm")
    term = Terminal(devbox("exec", "sh", "-c", SIZE_SET + "stty size; read line; stty size; exit 7"), project.path)
    term.expect(b"40 120")
    term.resize(30, 100)
    # the resize travels as SIGWINCH to the docker CLI, then as an API call: read the tty's size from inside
    container = project.container()
    wait_until(lambda: container.exec_run(["sh", "-c", "stty -F /dev/pts/0 size"]).output == b"30 100\n", 10,
               "the container's terminal to take the new size")
    term.send(b"go\r")
    term.expect(b"30 100")
    assert term.wait() == 7
    assert run.interrupt() == 0


def test_ctrl_c_on_a_terminal_reaches_the_command(project, busybox_image):
    run = started(project)
    term = Terminal(devbox("exec", "sh", "-c", "trap 'echo got-int; exit 3' INT; echo waiting; "
                                               "while :; do sleep 0.1; done"), project.path)
    term.expect(b"waiting")
    term.send(b"\x03")
    term.expect(b"got-int")
    assert term.wait() == 3
    assert run.interrupt() == 0


def test_shell_is_bash_with_job_control_and_ctrl_c_stays_inside(project, python_image):
    run = started(project, "python:bookworm")
    term = Terminal(devbox("shell"), project.path)
    term.send(b"echo shell=$0 in=$(pwd) greeting=$GREETING\r")
    term.expect(b"shell=bash in=/app greeting=hello")
    term.send(b"sleep 30\r")
    wait_until(lambda: project.processes("sleep 30"), 10, "the shell's foreground job")
    term.send(b"\x03")  # to the shell's foreground job, not to devbox
    term.send(b"echo still-here-$((6*7))\r")
    term.expect(b"still-here-42")
    term.send(b"exit 4\r")
    assert term.wait() == 4
    assert run.interrupt() == 0


def test_exec_with_pipes_forwards_stdin_output_env_and_exit_code(project, busybox_image):
    run = started(project)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    piped = subprocess.run(devbox("exec", "cat"), cwd=project.path, input="through the pipe\n", capture_output=True,
                           text=True, env=env, timeout=30)
    assert piped.returncode == 0 and piped.stdout == "through the pipe\n"
    listed = subprocess.run(devbox("exec", "-e", "EXTRA=1", "-w", "/", "sh", "-c",
                                   'echo "$GREETING $EXTRA ${RUN_MAIN:-none} $(pwd)"; exit 9'),
                            cwd=project.path, capture_output=True, text=True, env=env, timeout=30)
    assert listed.returncode == 9 and listed.stdout == "hello 1 none /\n"
    as_user = subprocess.run(devbox("exec", "-u", "1234", "id", "-u"), cwd=project.path, capture_output=True, text=True,
                             env=env, timeout=30)
    assert as_user.returncode == 0 and as_user.stdout == "1234\n", as_user.stderr
    assert run.interrupt() == 0


def test_ctrl_c_with_pipes_reaches_the_command(project, busybox_image):
    run = started(project)
    proc = subprocess.Popen(devbox("exec", "sh", "-c", "trap 'echo got-int; exit 3' INT; echo waiting; "
                                                       "while :; do sleep 0.1; done"),
                            cwd=project.path, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline() == "waiting\n"
    proc.send_signal(signal.SIGINT)
    assert proc.stdout.readline() == "got-int\n"
    assert proc.wait(20) == 3
    assert run.interrupt() == 0


def test_exec_starts_a_stopped_container_and_says_when_there_is_none(project, busybox_image):
    project.config(APP.replace("{image}", "busybox:1"))
    none = project.run("exec", "true")
    # a runtime failure (SPEC: 1), not bad usage or config (2)
    assert none.returncode == 1 and "run `devbox up` first" in none.stderr
    run = project.up()
    run.wait_for(r"started in .*\(start\)")
    assert run.interrupt() == 0
    again = project.run("exec", "echo", "inside")
    assert again.returncode == 0 and again.stdout == "inside\n" and "starting container" in again.stderr

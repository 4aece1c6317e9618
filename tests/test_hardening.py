"""Hardening, against a real engine where it is about what `up` does: secrets stay out of argv, labels
and printed config; the runtime folder cannot be hijacked and may fail without taking the server down;
hostile or careless input gets one line."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import wait_http, wait_until
from test_watch_faults import NO_DAC

import devbox.lock as lock

BUSYBOX = """\
name: {name}
image: devbox-test/busybox:1
ports: ["{port}:8000"]
command: echo "server says hi"; exec httpd -f -p 8000 -h /app/www
"""


# -- the runtime folder ---------------------------------------------------------------------------

@pytest.fixture
def fresh_runtime(monkeypatch, tmp_path):
    """runtime_dir() as a new process finds it: TMPDIR and HOME of the test's own, no XDG_RUNTIME_DIR."""
    tmp = tmp_path / "tmp"
    tmp.mkdir(mode=0o1777)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(lock, "_runtime", None)
    monkeypatch.setattr(lock.tempfile, "tempdir", None)
    yield tmp, home
    lock._runtime = None


def test_a_link_planted_in_tmp_is_never_followed(fresh_runtime, capsys):
    tmp, home = fresh_runtime
    victim = home / ".ssh"
    victim.mkdir(mode=0o700)
    (tmp / f"devbox-{os.getuid()}").symlink_to(victim)
    folder = lock.runtime_dir()
    assert folder == home / ".cache" / "devbox" / "run"
    assert "is a link, not a folder" in capsys.readouterr().err
    assert list(victim.iterdir()) == []


def test_a_folder_another_user_made_first_is_left_for_one_of_ours(fresh_runtime, capsys):
    tmp, home = fresh_runtime
    taken = tmp / f"devbox-{os.getuid()}"
    taken.mkdir(mode=0o700)
    os.chown(taken, 65534, 65534)
    assert lock.runtime_dir() == home / ".cache" / "devbox" / "run"
    assert f"{taken} belongs to another user: using" in capsys.readouterr().err
    mode = stat.S_IMODE(os.lstat(home / ".cache" / "devbox" / "run").st_mode)
    assert mode == 0o700


def test_up_never_writes_through_a_planted_link_and_keeps_its_log_private(project, busybox_image, tmp_path):
    """The attack: another user links /tmp/devbox-<uid> to a folder of the victim's; the victim's `up`
    used to append the server's output there (~/.bashrc by the same way)."""
    tmp, home = tmp_path / "tmp", tmp_path / "home"
    tmp.mkdir(mode=0o1777)
    (home / "dotfiles").mkdir(parents=True)
    (tmp / f"devbox-{os.getuid()}").symlink_to(home / "dotfiles")
    env = {"TMPDIR": str(tmp), "HOME": str(home), "XDG_RUNTIME_DIR": ""}
    project.config(BUSYBOX)
    project.write("www/index.html", "v1\n")
    run = project.up(env=env)
    run.wait_for(r"is a link, not a folder .*: using .*/home/\.cache/devbox/run")
    run.wait_for(r"ready in .*\(start\)")
    log = home / ".cache" / "devbox" / "run" / f"{project.name}.log"
    wait_until(lambda: log.is_file() and "server says hi" in log.read_text(), 10, "the log in the fallback")
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert list((home / "dotfiles").iterdir()) == []
    assert run.interrupt() == 0


def test_a_runtime_folder_that_cannot_be_written_leaves_the_server_running(project, busybox_image, tmp_path):
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    env = {"XDG_RUNTIME_DIR": str(runtime)}
    project.config(BUSYBOX)
    project.write("www/index.html", "v1\n")
    run = project.up(env=env, prefix=NO_DAC)  # root without the right to write what it may not
    run.wait_for(r"ready in .*\(start\)")
    folder = runtime / "devbox"
    log = folder / f"{project.name}.log"
    wait_until(log.is_file, 10, "the log")
    log.chmod(0o400)
    try:
        project.write("www/index.html", "v2\n")
        run.wait_for(r"the server's output is not kept for `devbox logs` .*Permission denied\); the server runs on")
        run.wait_for(r"ready in .*\(www/index.html changed\)")
        wait_http(project.port, "v2")
        project.write("www/index.html", "v3\n")
        run.wait_for(r"ready in .*\(www/index.html changed\)", count=2)
        assert run.count("is not kept") == 1, run.output
        assert run.interrupt() == 0
        assert "unexpected" not in run.output and "Traceback" not in run.output, run.output
    finally:
        log.chmod(0o600)


# -- secrets --------------------------------------------------------------------------------------

SECRET = "s3cr3t-d0-not-print"


def command_lines() -> str:
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                pass
    return "\n".join(out)


def test_exec_keeps_the_environment_out_of_every_command_line(project, busybox_image):
    project.config(BUSYBOX + f"env: {{{{DB_PASSWORD: {SECRET}, MULTI: \"a\\nb\"}}}}\n")
    project.write("www/index.html", "v1\n")
    run = project.up()
    run.wait_for(r"ready in .*\(start\)")
    seen: list[str] = []
    done = threading.Event()

    def look() -> None:
        while not done.is_set():
            seen.append(command_lines())
            time.sleep(0.01)

    looker = threading.Thread(target=look)
    looker.start()
    try:
        result = project.run("exec", "sh", "-c", 'sleep 1; echo "$DB_PASSWORD"; echo "$MULTI" | wc -l')
    finally:
        done.set()
        looker.join()
    assert result.returncode == 0 and result.stdout.split() == [SECRET, "2"], result.stdout + result.stderr
    assert len(seen) > 10 and not any(SECRET in lines for lines in seen)
    assert not list(lock.runtime_dir().glob("exec-*.env"))  # the env file is gone with the command
    assert run.interrupt() == 0


def test_config_masks_secrets_unless_asked(project):
    project.write(".env", f"DB_PASSWORD={SECRET}\n")
    project.config(BUSYBOX + "env: {{DB_PASSWORD: '${{DB_PASSWORD}}', DEBUG: '1'}}\n"
                   "build: {{context: ., args: {{NPM_TOKEN: tok-" + SECRET + "}}}}\n")
    (project.path / "devbox.yaml").write_text((project.path / "devbox.yaml").read_text().replace(
        "image: devbox-test/busybox:1\n", ""))
    text = project.run("config")
    assert text.returncode == 0, text.stderr
    assert SECRET not in text.stdout and "DB_PASSWORD: '********'" in text.stdout and "DEBUG: '1'" in text.stdout
    as_json = json.loads(project.run("config", "--json").stdout)
    assert as_json["env"]["DB_PASSWORD"] == "********" and as_json["build"]["args"]["NPM_TOKEN"] == "********"
    shown = project.run("config", "--show-secrets")
    assert f"DB_PASSWORD: {SECRET}" in shown.stdout and f"NPM_TOKEN: tok-{SECRET}" in shown.stdout


def test_build_args_are_never_in_a_label(project, busybox_image):
    project.write("Dockerfile", "FROM devbox-test/busybox:1\nARG NPM_TOKEN\nRUN echo built\n")
    project.write("www/index.html", "v1\n")
    project.config(BUSYBOX.replace("image: devbox-test/busybox:1\n", "") +
                   "build: {{context: ., args: {{NPM_TOKEN: " + SECRET + "}}}}\n")
    run = project.up()
    run.wait_for(r"ready in .*\(start\)", timeout=60)
    container = project.container()
    image = project.client.images.get(f"devbox-{project.name}:dev")
    assert SECRET not in json.dumps(container.labels) and SECRET not in json.dumps(image.labels)
    assert "NPM_TOKEN" in container.labels["devbox.spec"]  # its hash: a changed token still rebuilds
    assert run.interrupt() == 0


# -- hostile or careless input, live and at `up` ----------------------------------------------------

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


def test_hostile_live_edits_leave_the_server_alone(project, busybox_image):
    project.config(BUSYBOX + "env_file: .env.dev\n")
    project.write(".env.dev", "GREETING=hi\n")
    project.write("www/index.html", "v1\n")
    run = project.up()
    run.wait_for(r"ready in .*\(start\)")
    good = (project.path / "devbox.yaml").read_text()

    began = time.monotonic()
    project.write("devbox.yaml", good + BOMB)  # 9 levels: 387 million values once expanded
    run.wait_for(r"its aliases expand to more than 10,000 values")
    run.wait_for(r"devbox.yaml not applied; the previous config still runs")
    assert time.monotonic() - began < 5
    project.write("devbox.yaml", good + "ready: {log: '(a+)+$'}\n")
    run.wait_for(r"ready.log: expected a regular expression \(a repetition inside a repetition")
    project.write(".env.dev", "GREETING=hi\n=broken\n")
    run.wait_for(r"^devbox: .env.dev:2: expected NAME=value")
    run.wait_for(r"\.env\.dev not applied; the server runs on with what it had")
    assert run.count(r"ready in") == 1, run.output  # never restarted on any of them
    wait_http(project.port, "v1")
    assert run.interrupt() == 0 and "Traceback" not in run.output


def test_a_file_name_that_is_not_utf8_is_skipped_with_one_warning(project, busybox_image):
    project.config(BUSYBOX)
    project.write("www/index.html", "v1\n")
    run = project.up()
    run.wait_for(r"ready in .*\(start\)")
    with open(os.path.join(bytes(project.path), b"caf\xe9.txt"), "w") as f:  # latin-1, as an old tool writes it
        f.write("x\n")
    run.wait_for(r"caf.*\.txt: its name is not UTF-8, so changes to it are not seen")
    project.write("www/index.html", "v2\n")
    run.wait_for(r"ready in .*\(www/index.html changed\)")
    wait_http(project.port, "v2")
    with open(os.path.join(bytes(project.path), b"caf\xe9.txt"), "a") as f:
        f.write("y\n")
    project.write("www/index.html", "v3\n")
    wait_http(project.port, "v3")
    assert run.count("not UTF-8") == 1 and run.interrupt() == 0, run.output


def test_what_opens_the_host_is_said_at_up_and_by_doctor(project, busybox_image):
    project.config(BUSYBOX.replace('ports: ["{port}:8000"]', 'ports: ["0.0.0.0:{port}:8000"]') +
                   "mounts: ['.:/app', '/var/run/docker.sock:/var/run/docker.sock']\n")
    project.write("www/index.html", "v1\n")
    doctor = project.run("doctor")
    assert re.search(r"warn  mounts: \S*/docker.sock:/var/run/docker.sock gives the container Docker's socket",
                     doctor.stderr), doctor.stderr
    assert f"warn  ports: 0.0.0.0:{project.port} answers on every network interface" in doctor.stderr
    run = project.up()
    run.wait_for(r"ready in .*\(start\)")
    assert run.count(r"^devbox: warning: mounts: .*Docker's socket: code in it is root on this machine") == 1
    assert run.count(r"^devbox: warning: ports: 0\.0\.0\.0:\d+ answers on every network interface") == 1
    assert run.interrupt() == 0


def test_a_start_that_fails_at_once_is_not_said_to_have_started(project, busybox_image):
    project.write("www/server.sh", "echo never\n")  # not executable: exit 126
    project.config("""\
        name: {name}
        image: devbox-test/busybox:1
        command: ["/app/www/server.sh"]
        """)
    run = project.up()
    run.wait_for(r"server exited with code 126")
    run.wait_for("waiting for a change to start it again")
    assert run.count("started in") == 0, run.output
    assert run.interrupt() == 0


def test_a_refused_up_leaves_the_other_folders_container_as_it_was(project, busybox_image, tmp_path):
    project.config(BUSYBOX)
    project.write("www/index.html", "v1\n")
    run = project.up()
    run.wait_for(r"ready in .*\(start\)")
    assert run.interrupt() == 0
    assert project.container().status == "exited"
    other = tmp_path / "other"
    other.mkdir()
    (other / "devbox.yaml").write_text((project.path / "devbox.yaml").read_text())
    result = subprocess.run(["python3", "-m", "devbox", "up"], cwd=other, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"project name '{project.name}' is taken by {project.path}" in lines[0], lines
    project.container().reload()
    assert project.container().status == "exited"  # not started by the refused `up`


# -- file names -------------------------------------------------------------------------------------------

def test_a_file_name_cannot_forge_a_devbox_line(project, busybox_image):
    """A name with a newline is shown quoted with escapes, as git shows it: one line, not two."""
    project.write("www/index.html", "v1\n")
    project.config(BUSYBOX)
    run = project.up()
    wait_http(project.port, "v1")
    run.wait_for(r"ready in .*\(start\)|started in .*\(start\)")
    (project.path / "zz\nvictim.txt").write_text("x\n")
    line = run.wait_for(r"(ready|started) in .*changed\)$")
    assert line.endswith('("zz\\nvictim.txt" changed)'), line
    assert not any(text.startswith("devbox: victim.txt") for text in run.lines), run.output
    assert run.interrupt() == 0


def test_names_are_quoted_only_when_they_need_it():
    from devbox.output import quoted
    from devbox.watch import plan

    assert quoted("shop/views.py") == "shop/views.py" and quoted("café.py") == "café.py"
    assert quoted("zz\nvictim.txt") == '"zz\\nvictim.txt"' and quoted('a"b\\c') == '"a\\"b\\\\c"'
    assert quoted("bad\udcff.py") == '"bad\\377.py"' and quoted("bell\x07\x1b[2J") == '"bell\\a\\033[2J"'
    assert plan({"zz\nvictim.txt"}, ()).reason == '"zz\\nvictim.txt" changed'

"""`devbox restart` and `devbox status` from a second process, against a running `devbox up`."""

from __future__ import annotations

import os
import json

APP = """\
name: {name}
image: devbox-test/busybox:1
ports: ["{port}:8000"]
command: echo started; exec httpd -f -p 8000 -h /app/www
"""


def test_restart_from_a_second_process_shows_ready_in_both(project, busybox_image):
    project.config(APP)
    project.write("www/index.html", "x\n")
    none = project.run("restart")
    assert none.returncode == 1 and "no `devbox up` runs" in none.stderr and "devbox up" in none.stderr
    run = project.up()
    run.wait_for(r"ready in .*\(start\)")
    first = [p for p in project.processes("httpd") if p["args"].startswith("httpd")]
    restart = project.run("restart")
    assert restart.returncode == 0, restart.stderr
    assert restart.stderr.strip().splitlines() == [restart.stderr.strip()]  # one line
    assert "ready in" in restart.stderr and "(`devbox restart`)" in restart.stderr
    run.wait_for(r"ready in .*\(`devbox restart`\)")
    after = [p for p in project.processes("httpd") if p["args"].startswith("httpd")]
    assert len(after) == 1 and after[0]["pid"] != first[0]["pid"]
    assert run.interrupt() == 0


def test_status_json_matches_what_docker_says(project, busybox_image):
    project.config(APP)
    project.write("www/index.html", "x\n")
    stopped = json.loads(project.run("status", "--json").stdout)
    assert stopped["container"] is None and stopped["up"] is None and stopped["server"] is None
    run = project.up()
    run.wait_for(r"ready in .*\(start\)")
    project.write("www/index.html", "y\n")
    run.wait_for(r"ready in .*\(www/index.html changed\)")
    result = project.run("status", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    container = project.container()
    assert status["container"] == {"name": container.name, "id": container.id, "state": "running",
                                   "image": "devbox-test/busybox:1",  # by the name devbox.yaml gives it
                                   "image_id": container.attrs["Image"], "created": container.attrs["Created"],
                                   "files": "mounted"}
    assert status["sync"] is None  # (a synced container's: tests/test_sync.py)
    assert status["up"]["pid"] == run.proc.pid and status["restarts"] == 1
    assert status["server"]["ready"] and status["server"]["started_because"] == "www/index.html changed"
    host_pids = {int(row[0]) for row in project.client.api.top(container.id, ps_args="-o pid,args")["Processes"]
                 if row[1].startswith("httpd")}
    assert status["server"]["pid"] in host_pids
    assert status["urls"] == [f"http://127.0.0.1:{project.port}/"]
    assert status["last_ready"]["took_s"] > 0
    text = project.run("status").stdout
    assert f"container: {container.name} running" in text and "server: pid" in text
    assert run.interrupt() == 0


def test_logs_keep_the_output_across_restarts_and_after_up(project, busybox_image):
    project.config(APP)
    project.write("www/index.html", "x\n")
    empty = project.run("logs")
    assert empty.returncode == 0 and "no server output kept yet" in empty.stderr
    run = project.up()
    run.wait_for(r"ready in .*\(start\)")
    during = project.run("logs").stdout.splitlines()
    assert during == ["--- start: start ---", "started"], during

    follower = project.devbox("logs", "-f", "-t")  # follows from here on
    project.write("www/index.html", "y\n")
    run.wait_for(r"ready in .*\(www/index.html changed\)")
    follower.wait_for(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z --- restart 1: www/index.html changed ---$")
    follower.wait_for(r"^\d{4}-\d\d-\d\dT\S+ started$")
    assert run.interrupt() == 0

    after = project.run("logs").stdout.splitlines()  # `up` has ended; the output is still there
    assert after == ["--- start: start ---", "started", "--- restart 1: www/index.html changed ---", "started"]
    assert project.run("logs", "-n", "2").stdout.splitlines() == after[-2:]


def test_the_log_is_bounded(tmp_path, monkeypatch):
    from devbox import logs

    monkeypatch.setattr(logs, "runtime_dir", lambda: tmp_path)
    log = logs.ServerLog("bounded", limit=1000)
    for i in range(500):
        log.write([f"line {i} " + "x" * 40])
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["bounded.log", "bounded.log.1"]
    assert all((tmp_path / f).stat().st_size <= 1000 for f in files)
    assert logs.read_lines("bounded")[-1].startswith("line 499 ")


def test_doctor_says_ok_line_by_line_and_fails_on_a_taken_port(project, busybox_image):
    import socket

    project.config(APP)
    project.write("www/index.html", "x\n")
    run = project.up()
    run.wait_for(r"ready in .*\(start\)")
    healthy = project.run("doctor")
    assert healthy.returncode == 0, healthy.stderr
    lines = healthy.stderr.strip().splitlines()
    assert all(line.startswith(("devbox: ok ", "devbox: warn ")) for line in lines[:-1]), lines
    assert "stop: devbox signals the server from the host" in healthy.stderr
    assert f"port {project.port}: published by devbox-{project.name}" in healthy.stderr
    assert lines[-1] == "devbox: all checks passed"
    assert run.interrupt() == 0

    with socket.socket() as taken:  # a check made to fail on purpose
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past the probes' TIME_WAIT
        taken.bind(("127.0.0.1", project.port))
        taken.listen()
        failing = project.run("doctor")
    assert failing.returncode == 1
    assert f"devbox: fail  port {project.port}: in use by another program: stop it, or change `ports`" in failing.stderr
    assert failing.stderr.strip().splitlines()[-1] == "devbox: 1 check(s) failed"

    nowhere = project.run("doctor", env={"DOCKER_HOST": "unix:///tmp/devbox-no-engine.sock"})
    assert nowhere.returncode == 1 and "devbox: fail  engine: cannot reach the Docker engine at unix:///tmp/devbox-no-engine.sock" in nowhere.stderr


def test_another_user_cannot_drive_a_running_up(project, busybox_image):
    import subprocess

    from devbox.control import socket_path

    project.config(APP)
    project.write("www/index.html", "x\n")
    run = project.up()
    run.wait_for(r"ready in .*\(start\)")
    client = ("import json, socket, sys\n"
              "s = socket.socket(socket.AF_UNIX)\n"
              "try:\n"
              "    s.connect(sys.argv[1])\n"
              "except OSError as e:\n"
              "    print('refused', e.errno); sys.exit(0)\n"
              "s.sendall(b'{\"verb\": \"restart\"}\\n'); print(s.makefile().readline())\n")
    other = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c",
                            client, str(socket_path(project.name))], capture_output=True, text=True, timeout=30)
    assert other.stdout.startswith("refused 13"), (other.stdout, other.stderr)  # EACCES: a private folder
    assert run.count(r"ready in") == 1  # nothing restarted
    assert run.interrupt() == 0


def test_a_reader_that_goes_away_ends_a_verb_quietly_with_0(tmp_path):
    # `devbox logs -n 200 | head -1`: a closed pipe ends the verb as it ends `cat`, not with a BrokenPipeError
    import subprocess
    import sys

    from conftest import ROOT

    runtime = tmp_path / "runtime"
    project = tmp_path / "app"
    project.mkdir()
    (project / "devbox.yaml").write_text("name: dbt-pipe\nimage: devbox-test/busybox:1\ncommand: httpd -f\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_RUNTIME_DIR": str(runtime)}
    subprocess.run([sys.executable, "-c", "from devbox.logs import ServerLog\n"
                    "ServerLog('dbt-pipe').write([f'line {i} ' + 'x' * 60 for i in range(20000)])"],
                   cwd=project, env=env, check=True)
    for _ in range(3):
        result = subprocess.run(f"set -o pipefail; '{sys.executable}' -m devbox logs -n 20000 | head -1",
                                shell=True, executable="/bin/bash", cwd=project, env=env, capture_output=True,
                                text=True, timeout=30)
        assert (result.returncode, result.stdout, result.stderr) == (0, "line 0 " + "x" * 60 + "\n", "")

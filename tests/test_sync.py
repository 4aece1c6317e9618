"""`sync:`: the project copied into the container instead of mounted, against a second engine of the
tests' own that cannot see the test projects (second_engine.py), as an engine on another host cannot."""

from __future__ import annotations

import json
import re
import subprocess
import time

from conftest import http_get, wait_http, wait_until

APP = """\
import http.server
import value

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = value.VALUE.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

http.server.ThreadingHTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
"""
CONFIG = """\
name: {name}
image: devbox-test/python:bookworm
ports: ["{port}:8000"]
command: python3 app.py
ready: {{http: /}}
watch: {{ignore: ["*.bak"]}}
"""


def python_app(project, sync: str = "true") -> None:
    project.write("app.py", APP)
    project.write("value.py", "VALUE = 'v1'\n")
    project.write(".gitignore", "secret.txt\n")
    project.write("secret.txt", "not for the container\n")
    project.write("notes.bak", "ignored by watch.ignore\n")
    project.write("old.txt", "to be deleted\n")
    project.config(CONFIG + f"sync: {sync}\n")


def in_container(project, *argv: str) -> str:
    code, out = project.container().exec_run(list(argv))
    return out.decode() if code == 0 else f"<exit {code}> {out.decode()}"


def exists(project, path: str) -> bool:
    return project.container().exec_run(["test", "-e", path])[0] == 0


def status(project) -> dict:
    result = project.run("status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_synced_container_serves_each_save_and_has_no_mount_of_the_project(any_remote_project):
    project = any_remote_project
    python_app(project)
    up = project.up()
    up.wait_for(r"files: synced into /app, one way \(sync: true in devbox.yaml\)")
    up.wait_for(r"synced 5 files .* through devbox's channel")  # app, value, .gitignore, old.txt, devbox.yaml
    assert wait_http(project.port, "v1") == "v1"
    mounts = project.container().attrs["Mounts"]
    assert not [m for m in mounts if m["Type"] == "bind"], mounts
    assert not exists(project, "/app/secret.txt") and not exists(project, "/app/notes.bak")

    project.write("value.py", "VALUE = 'v2'\n")
    wait_http(project.port, "v2")

    project.write("pkg/sub/new.txt", "a new folder\n")
    (project.path / "old.txt").unlink()
    project.write("secret.txt", "changed, still not for the container\n")
    wait_until(lambda: exists(project, "/app/pkg/sub/new.txt") and not exists(project, "/app/old.txt"), 20,
               "the new folder and the deletion in the container")
    assert not exists(project, "/app/secret.txt")
    assert in_container(project, "cat", "/app/pkg/sub/new.txt") == "a new folder\n"

    shown = project.run("exec", "cat", "pkg/sub/new.txt")
    assert shown.returncode == 0 and shown.stdout == "a new folder\n", shown
    assert status(project)["container"]["files"] == "synced"
    doctor = project.run("doctor")
    assert f"files: synced into /app in container devbox-{project.name}" in doctor.stderr, doctor.stderr
    engine_url = project.server.url if hasattr(project, "server") else project.engine.host
    assert re.search(rf"ok +engine: round trip \d+\.\d ms \(median of 5 pings to {engine_url}\)", doctor.stderr), \
        doctor.stderr

    up.interrupt()
    down = project.run("down")
    assert down.returncode == 0, down.stderr
    assert project.container() is None  # removed on the engine that had it


def test_a_checkout_of_1000_files_is_one_archive_and_one_restart(any_remote_project):
    project = any_remote_project
    python_app(project)
    git = ["git", "-C", str(project.path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    subprocess.run([*git, "checkout", "-qb", "big"], check=True)
    for i in range(1000):
        project.write(f"big/m{i // 100}/f{i}.py", f"N = {i}\n")
    project.write("value.py", "VALUE = 'big'\n")
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "big"], check=True)
    subprocess.run([*git, "checkout", "-q", "main"], check=True)

    up = project.up()
    wait_http(project.port, "v1")
    before = status(project)
    subprocess.run([*git, "checkout", "-q", "big"], check=True)
    wait_http(project.port, "big")
    up.wait_for(r"ready in .* \(.* and 100\d more changed\)")
    wait_until(lambda: status(project)["restarts"] == before["restarts"] + 1, 10, "the restart counted")
    after = status(project)
    assert after["sync"]["batches"] == before["sync"]["batches"] + 1, (before, after)
    assert after["sync"]["files"] - before["sync"]["files"] == 1001
    assert in_container(project, "sh", "-c", "find /app/big -name '*.py' | wc -l").strip() == "1000"

    subprocess.run([*git, "checkout", "-q", "main"], check=True)  # and back: 1,000 deletions, one batch
    wait_http(project.port, "v1")
    wait_until(lambda: not exists(project, "/app/big"), 10, "the folder deleted in the container")
    assert status(project)["sync"]["batches"] == after["sync"]["batches"] + 1


def test_the_new_server_starts_only_when_the_batch_is_in(remote_project):
    """A save that comes with a big file: its archive takes far longer to send and extract than the server
    takes to start, and value.py comes after the big file in it. A start that did not wait would import
    the old value.py, and nothing would restart it again."""
    import os

    project = remote_project
    python_app(project)
    up = project.up()
    wait_http(project.port, "v1")
    staged = project.path.parent / "blob.bin"
    staged.write_bytes(os.urandom(40 * 1024 * 1024))
    project.write("assets/.keep", "")
    up.wait_for(r"ready in .* \(assets/.keep changed\)")
    os.rename(staged, project.path / "assets" / "blob.bin")  # one event, then the save at once: one batch
    project.write("value.py", "VALUE = 'with the blob'\n")
    up.wait_for(r"ready in .* \(assets/blob.bin and 1 more changed\)", timeout=60)
    assert http_get(project.port) == "with the blob"


def test_auto_syncs_where_the_engine_cannot_see_the_folder(remote_project):
    python_app(remote_project, sync="auto")
    up = remote_project.up()
    line = up.wait_for(r"files: ")
    assert "files: synced into /app, one way (sync: auto; the engine at tcp://127.0.0.1:" in line, line
    assert wait_http(remote_project.port, "v1") == "v1"


def test_auto_mounts_where_the_engine_sees_the_folder(project, python_image):
    python_app(project, sync="auto")
    up = project.up()
    assert up.wait_for(r"files: ") == "devbox: files: mounted at /app (sync: auto; the engine sees this folder)"
    assert wait_http(project.port, "v1") == "v1"
    assert [m for m in project.container().attrs["Mounts"] if m["Type"] == "bind" and m["Destination"] == "/app"]


def test_a_file_deleted_while_devbox_was_down_is_deleted_at_the_next_up(remote_project):
    project = remote_project
    python_app(project)
    up = project.up()
    wait_http(project.port, "v1")
    assert exists(project, "/app/old.txt")
    assert up.interrupt() == 0
    (project.path / "old.txt").unlink()
    project.write("value.py", "VALUE = 'while down'\n")
    up = project.up()
    up.wait_for("(reusing|starting) container")  # the same container: the files deleted since are not
    up.wait_for(r"synced 4 files \(.*\), 1 deleted")
    wait_http(project.port, "while down")
    assert not exists(project, "/app/old.txt")


NO_TAR = """\
FROM devbox-test/python:bookworm
RUN rm /usr/bin/tar
"""


def test_an_image_without_tar_gets_the_files_through_the_archive_api(remote_project):
    project = remote_project
    project.write("Dockerfile", NO_TAR)  # (busybox's sh runs its own tar applet even without /bin/tar)
    project.write("www/index.html", "page one\n")
    project.write("www/gone.html", "to be deleted\n")
    project.config("""\
        name: {name}
        build: .
        sync: true
        ports: ["{port}:8000"]
        command: python3 -m http.server -d /app/www 8000
        ready: {{http: /}}
        """)
    up = project.up()
    up.wait_for(r"synced \d+ files .* through the archive API", timeout=90)
    assert wait_http(project.port, "page one") == "page one\n"
    assert not exists(project, "/usr/bin/tar")  # built on that engine, from this folder
    project.write("www/index.html", "page two\n")
    (project.path / "www" / "gone.html").unlink()
    wait_http(project.port, "page two")
    wait_until(lambda: http_get(project.port, "/gone.html") is None, 10, "the deleted page gone")


def test_over_ssh_the_files_are_synced_and_the_ports_forwarded_to_this_machine(ssh_project):
    project = ssh_project
    python_app(project, sync="auto")
    up = project.up()
    line = up.wait_for(r"files: ")
    assert f"files: synced into /app, one way (sync: auto; the engine at {project.server.url}" in line, line
    up.wait_for(rf"url: http://127.0.0.1:{project.port}/ \(forwarded over SSH from root@127.0.0.1\)")
    assert wait_http(project.port, "v1") == "v1"
    binding = project.container().attrs["NetworkSettings"]["Ports"]["8000/tcp"][0]
    assert binding["HostIp"] == "127.0.0.1" and binding["HostPort"] != str(project.port), binding  # its own pick

    project.write("value.py", "VALUE = 'v2'\n")
    wait_http(project.port, "v2")
    up.wait_for(r"ready in .* \(value.py changed\)")
    assert len(project.servers("app.py")) == 1  # the old one stopped through an exec: its pids are not ours
    shown = project.run("exec", "cat", "value.py")
    assert shown.returncode == 0 and shown.stdout == "VALUE = 'v2'\n", shown
    assert status(project)["container"]["files"] == "synced"
    restart = project.run("restart")
    assert restart.returncode == 0 and "ready in" in restart.stderr, restart
    assert len(project.servers("app.py")) == 1
    assert '"GET / HTTP/1.1" 200' in project.run("logs").stdout  # the server's own lines, kept here

    assert up.interrupt() == 0
    down = project.run("down")
    assert down.returncode == 0, down.stderr
    assert project.container() is None


def test_sync_false_on_an_engine_that_cannot_see_the_folder_says_how_to_fix_it(remote_project):
    python_app(remote_project, sync="false")
    up = remote_project.up()
    assert up.wait(60) == 1
    assert (f"the engine at {remote_project.engine.host} (DOCKER_HOST) cannot see {remote_project.path} (it is on "
            "another machine?): set `sync: auto` in devbox.yaml to copy the files in") in up.output, up.output
    assert "Traceback" not in up.output


def test_after_a_storm_of_saves_the_container_holds_exactly_the_hosts_files(remote_project):
    """150 saves, creations and deletions at random intervals (0-40 ms): the batches go in order, one
    at a time, so at the end the container's copy is the host's, file for file, and serves the last save."""
    import hashlib
    import random

    project = remote_project
    python_app(project)
    up = project.up()
    wait_http(project.port, "v1")
    rng = random.Random(19)
    for i in range(150):
        roll = rng.random()
        if roll < 0.6:
            project.write("value.py", f"VALUE = 'storm {i}'\n")
        elif roll < 0.8:
            project.write(f"extra/f{rng.randrange(10)}.txt", f"{i}\n" * rng.randrange(1, 50))
        else:
            (project.path / "extra" / f"f{rng.randrange(10)}.txt").unlink(missing_ok=True)
        time.sleep(rng.random() * 0.04)
    project.write("value.py", "VALUE = 'calm'\n")
    wait_http(project.port, "calm", timeout=60)

    def host_tree() -> dict:
        return {f"/app/{p.relative_to(project.path).as_posix()}": hashlib.sha256(p.read_bytes()).hexdigest()
                for p in project.path.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                and p.name not in ("secret.txt", "notes.bak")}

    def container_tree() -> dict:
        out = in_container(project, "sh", "-c", "find /app -type f ! -path '*/__pycache__/*' | xargs sha256sum")
        return {line.split()[1]: line.split()[0] for line in out.splitlines()}

    wait_until(lambda: container_tree() == host_tree(), 20, "the container's files to be the host's")
    assert up.count(r"could not be|cannot write|did not answer") == 0, up.output


def test_a_synced_container_removed_behind_devboxs_back_comes_back_with_the_files(remote_project):
    project = remote_project
    python_app(project)
    up = project.up()
    wait_http(project.port, "v1")
    project.container().remove(force=True)
    up.wait_for(r"creating it again")
    up.wait_for(r"synced 5 files", count=2)  # all of them again, into the new container
    wait_http(project.port, "v1")
    project.write("value.py", "VALUE = 'after'\n")
    assert wait_http(project.port, "after") == "after"
    assert up.proc.poll() is None


def test_an_ssh_engine_whose_socket_is_not_the_default_is_found_where_the_remote_cli_finds_it(
        tmp_path, second_engine, busybox_image):
    """Rootless Docker's socket, or a DOCKER_HOST set on the build host: `docker -H ssh://HOST` works
    there, so devbox must too. The remote's /var/run/docker.sock leads nowhere."""
    from conftest import SshProject
    from ssh_server import SshServer

    server = SshServer(second_engine.root / "docker.sock", where_the_cli_says=True).start()
    project = SshProject(tmp_path / "app", second_engine, server)
    project.path.mkdir()
    try:
        project.write("www/index.html", "over ssh\n")
        project.config("""\
            name: {name}
            image: devbox-test/busybox:1
            ports: ["{port}:8000"]
            command: exec httpd -f -p 8000 -h /app/www
            """)
        doctor = project.run("doctor")
        assert f"ok    engine: {server.url}" in doctor.stderr, doctor.stderr
        run = project.up()
        wait_http(project.port, "over ssh", timeout=60)
        assert run.interrupt() == 0
    finally:
        project.cleanup()
        server.stop()


def test_big_files_are_not_sent_and_big_batches_go_in_parts(remote_project):
    """A sparse 2 GB file is over the size cap: not sent, named in one line. 6,000 files go in parts of
    PART_FILES (2,000), a line after each, every part answered within its own bound: the channel stays,
    and the save after a batch of 4,500 new files is served. (50,000 files: bench, see the issue's note.)"""
    project = remote_project
    python_app(project)
    with open(project.path / "big.bin", "wb") as f:
        f.truncate(2 << 30)  # sparse: 2 GB long, nothing on disk
    for folder in range(6):
        (project.path / "data" / f"d{folder}").mkdir(parents=True)
        for i in range(1000):
            (project.path / "data" / f"d{folder}" / f"f{i}.txt").write_text(f"{folder}-{i}\n")
    run = project.up()
    wait_http(project.port, "v1", timeout=120)
    assert run.count(r"sync: \d+ files sent so far") >= 3, run.output
    line = run.wait_for(r"sync: not sent, over 50 MB")
    assert line == ("devbox: sync: not sent, over 50 MB: big.bin (2147 MB) (to send bigger files, set "
                    "`sync: {max_file_mb: N}` in devbox.yaml)"), line
    assert not exists(project, "/app/big.bin") and in_container(project, "cat", "/app/data/d5/f999.txt") == "5-999\n"
    starts = run.count(r"ready in ")
    for i in range(4500):
        (project.path / "data" / "d0" / f"new{i}.txt").write_text("new\n")
    wait_until(lambda: exists(project, "/app/data/d0/new4499.txt"), 120, "the 4,500 new files in the container")
    run.wait_for(r"ready in .*more changed\)", timeout=60, count=1)
    (project.path / "value.py").write_text("VALUE = 'v2'\n")
    wait_http(project.port, "v2", timeout=60)
    assert run.count(r"ready in ") > starts
    assert "did not answer" not in run.output and "could not be synced" not in run.output, run.output
    assert run.interrupt() == 0

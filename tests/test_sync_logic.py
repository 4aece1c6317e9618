"""The pure parts of `sync:`: which files go, what an archive holds, the engine's times (no engine)."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from devbox.config.load import load as load_config
from devbox.sync.files import Archive, SyncedTree, dockerignore_patterns
from devbox.sync.placement import Placement, _seconds


def make(tmp_path: Path, extra: str = "", image: str = "image: x\n") -> Path:
    (tmp_path / "devbox.yaml").write_text("name: t\n" + image + "command: python3 app.py\n" + extra)
    (tmp_path / "app.py").write_text("print(1)\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text("X = 1\n")
    (tmp_path / ".gitignore").write_text("local.txt\n")
    (tmp_path / "local.txt").write_text("mine\n")
    (tmp_path / "notes.bak").write_text("old\n")
    (tmp_path / "node_modules").mkdir()
    (tmp_path / "node_modules" / "x.js").write_text("")
    return tmp_path


def names(archive: Archive) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(archive.bytes())) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_the_whole_tree_leaves_out_what_the_watcher_ignores(tmp_path):
    config = load_config(make(tmp_path, "watch: {ignore: ['*.bak']}\n") / "devbox.yaml")
    tree = SyncedTree(config)
    archive = Archive.of(tree, tree.walk())
    assert set(names(archive)) == {"app/devbox.yaml", "app/app.py", "app/pkg/mod.py", "app/.gitignore"}
    assert archive.files == 4 and archive.size > 0


def test_members_are_root_owned_with_the_hosts_mode_and_whole_second_mtime(tmp_path):
    config = load_config(make(tmp_path) / "devbox.yaml")
    os.chmod(tmp_path / "app.py", 0o751)
    os.utime(tmp_path / "app.py", (1_700_000_000.7, 1_700_000_000.7))
    member = names(Archive.of(SyncedTree(config), [tmp_path / "app.py"]))["app/app.py"]
    assert (member.uid, member.gid, member.mode, member.mtime) == (0, 0, 0o751, 1_700_000_000)


def test_a_batch_sends_what_exists_deletes_what_is_gone_and_forgets_bytecode(tmp_path):
    config = load_config(make(tmp_path) / "devbox.yaml")
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "a.txt").write_text("a")
    archive = Archive.of(SyncedTree(config), [tmp_path / "pkg" / "mod.py", tmp_path / "gone.txt", tmp_path / "new",
                                              tmp_path / "local.txt", tmp_path / "/elsewhere/x"])
    assert set(names(archive)) == {"app/pkg/mod.py", "app/new", "app/new/a.txt"}
    assert archive.deletions == ["/app/gone.txt", "/app/pkg/__pycache__/mod.*.pyc"]  # in path order
    assert archive.deletion_list == b"/app/gone.txt\n/app/pkg/__pycache__/mod.*.pyc\n"


def test_an_empty_batch_sends_no_archive(tmp_path):
    config = load_config(make(tmp_path) / "devbox.yaml")
    archive = Archive.of(SyncedTree(config), [tmp_path / "local.txt"])
    assert archive.empty() and archive.size == 0


def test_dockerignore_applies_when_the_image_is_built_from_the_project(tmp_path):
    make(tmp_path, image="build: .\n")
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / ".dockerignore").write_text("# comment\n./pkg\n*.py\n!app.py\n")
    assert dockerignore_patterns(tmp_path) == ["/pkg", "/*.py", "!/app.py"]
    tree = SyncedTree(load_config(tmp_path / "devbox.yaml"))
    assert {p.name for p in tree.walk()} == {"devbox.yaml", "app.py", ".gitignore", ".dockerignore", "Dockerfile",
                                            "notes.bak"}


def test_dockerignore_does_not_apply_to_an_image_not_built_here(tmp_path):
    make(tmp_path)
    (tmp_path / ".dockerignore").write_text("pkg\n")
    tree = SyncedTree(load_config(tmp_path / "devbox.yaml"))
    assert "mod.py" in {p.name for p in tree.walk()}


def test_engine_times_are_read_to_the_second():
    assert _seconds("2023-11-14T22:13:20.987654321Z") == 1_700_000_000
    assert _seconds("2023-11-14T23:13:20+01:00") == 1_700_000_000
    assert _seconds("yesterday") is None


def test_the_placement_line_says_where_and_why(tmp_path):
    config = load_config(make(tmp_path) / "devbox.yaml")
    assert Placement(True, "sync: true in devbox.yaml").line(config) == \
        "files: synced into /app, one way (sync: true in devbox.yaml)"
    assert Placement(False, "sync: auto; the engine sees this folder").line(config) == \
        "files: mounted at /app (sync: auto; the engine sees this folder)"


def test_an_endpoint_on_another_host_is_a_hint_of_a_remote_engine():
    from devbox.engine import Endpoint

    for host, remote in (("unix:///var/run/docker.sock", None), ("tcp://127.0.0.1:2375", None),
                         ("tcp://localhost:2375", None), ("tcp://buildbox:2376", "buildbox"),
                         ("ssh://me@buildbox", "buildbox"), ("ssh://me@127.0.0.1:2222", None)):
        assert Endpoint(host, "test").remote_host == remote, host
    assert Endpoint("ssh://me@127.0.0.1:2222", "test").on_this_machine is False  # reached through its tunnel
    assert Endpoint("tcp://127.0.0.1:2375", "test").on_this_machine is True


def test_a_tcp_engine_on_another_host_says_where_its_ports_are(tmp_path):
    from devbox.ports import remote_port_lines

    config = load_config(make(tmp_path, 'ports: ["8000:8000", "0.0.0.0:9000:9000"]\n') / "devbox.yaml")
    first, second = remote_port_lines(config, "buildbox")
    assert first.startswith("ports: 127.0.0.1:8000:8000 is published on buildbox's own loopback, which this "
                            "machine cannot reach: publish it on buildbox's address (`0.0.0.0:8000:8000`")
    assert second == "url: http://buildbox:9000/ (published by the engine on buildbox)"


def test_the_channel_runs_a_command_and_returns_exactly_its_output():
    """The channel's "run" answer: the output, a newline of the channel's own, and the marker line (here
    from a fake socket that speaks the exec stream's 8-byte frames)."""
    import struct

    from devbox.channel import Channel

    class FakeSocket:
        def __init__(self) -> None:
            self.sent, self.out = b"", b""

        def settimeout(self, t: float) -> None:
            pass

        def sendall(self, data: bytes) -> None:
            self.sent += data
            if data.startswith(b"run "):
                marker = data.split(b"\n", 1)[0].split()[2]
                body = b"signalled\nkilled" + b"\n" + marker + b" 0\n"
                self.out += b"\x01\x00\x00\x00" + struct.pack(">I", len(body)) + body

        def recv(self, n: int) -> bytes:
            data, self.out = self.out[:n], self.out[n:]
            return data

    sock = FakeSocket()
    assert Channel(sock, files=True).run(["sh", "-c", "echo 'a b'"]) == "signalled\nkilled"
    assert sock.sent.split(b"\n", 1)[1] == b"exec sh -c 'echo '\"'\"'a b'\"'\"''\n"


def test_an_ssh_engine_without_the_ssh_client_says_what_to_install(tmp_path):
    import subprocess
    import sys

    make(tmp_path)
    env = {"PATH": str(tmp_path / "empty-bin"), "DOCKER_HOST": "ssh://me@buildbox", "HOME": str(tmp_path),
           "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    result = subprocess.run([sys.executable, "-m", "devbox", "status"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2, result
    assert result.stderr.strip() == ("devbox: the engine at ssh://me@buildbox is reached over SSH, and `ssh` (the "
                                     "OpenSSH client) is not on PATH: install it"), result.stderr


def test_a_big_batch_goes_in_parts_deletions_first_and_big_files_stay_out(tmp_path):
    config = load_config(make(tmp_path) / "devbox.yaml")
    (tmp_path / "many").mkdir()
    for i in range(25):
        (tmp_path / "many" / f"f{i:02}.txt").write_text("x")
    with open(tmp_path / "big.bin", "wb") as f:
        f.truncate(3000)  # sparse: its length is what counts
    paths = [tmp_path / "many", tmp_path / "gone1.txt", tmp_path / "gone2.txt", tmp_path / "gone3.txt",
             tmp_path / "big.bin"]
    parts = list(Archive.parts(SyncedTree(config), paths, max_bytes=2000, part_files=10, also_delete=["/app/old"]))
    # the deletions go in the first part (the container deletes, then extracts: a file may become a folder)
    assert [p.deletions for p in parts] == [["/app/old", "/app/gone1.txt", "/app/gone2.txt", "/app/gone3.txt"], [], []]
    assert [p.files for p in parts] == [10, 10, 5]  # 25 files, in parts of 10 (the folder is a member too)
    assert sum(len(names(p)) for p in parts if p.members) == 26
    assert [(path.name, size) for p in parts for path, size in p.skipped] == [("big.bin", 3000)]
    assert all("app/big.bin" not in names(p) for p in parts if p.members)

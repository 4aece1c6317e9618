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
    assert archive.deletions == ["/app/pkg/__pycache__/mod.*.pyc", "/app/gone.txt"]
    assert archive.deletion_list == b"/app/pkg/__pycache__/mod.*.pyc\n/app/gone.txt\n"


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

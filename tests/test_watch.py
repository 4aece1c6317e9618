"""Pure logic of watching: .gitignore-style patterns, ignore rules, and what a batch of changes asks for."""

from __future__ import annotations

import pytest
import watchfiles

from devbox.config import Rule
from devbox.ignore import IgnoreRules, Pattern
from devbox.watch import ChangeFilter, forget_bytecode, plan


@pytest.mark.parametrize("pattern,path,is_dir,expected", [
    ("*.log", "debug.log", False, True),
    ("*.log", "a/b/debug.log", False, True),
    ("*.log", "debug.log.txt", False, False),
    ("media/", "media/x.png", False, True),
    ("media/", "media", True, True),
    ("media/", "media", False, False),  # a file named media is not the folder
    ("media/", "app/media/x.png", False, True),
    ("/build", "build/x", False, True),
    ("/build", "src/build/x", False, False),
    ("a/b", "a/b/c.py", False, True),
    ("a/b", "x/a/b", False, False),
    ("static/**", "static/css/site.css", False, True),
    ("assets/**/*.ts", "assets/app.ts", False, True),
    ("assets/**/*.ts", "assets/x/y/app.ts", False, True),
    ("assets/**/*.ts", "assets/x/app.js", False, False),
    ("**/migrations", "app/migrations/0001.py", False, True),
    ("requirements*.txt", "requirements-dev.txt", False, True),
    ("file?.py", "file1.py", False, True),
    ("file[0-9].py", "file7.py", False, True),
    ("file[!0-9].py", "file7.py", False, False),
    ("Dockerfile", "Dockerfile", False, True),
    ("Dockerfile", "docker/Dockerfile", False, True),
])
def test_pattern(pattern, path, is_dir, expected):
    assert Pattern(pattern).matches(path, is_dir) is expected


def test_last_matching_rule_wins_and_negation_reincludes():
    rules = IgnoreRules(["*.log", "!keep.log", "# a comment", "", "logs/"])
    assert rules.ignored("debug.log")
    assert not rules.ignored("keep.log")
    assert rules.ignored("logs/keep.log")  # the folder rule comes last
    assert not rules.ignored("app.py")


def test_project_rules_read_gitignore_and_add_the_usual_junk(tmp_path):
    (tmp_path / ".gitignore").write_text("node_modules/\n*.env\n")
    rules = IgnoreRules.for_project(tmp_path, ["media/"])
    for path in ("db.sqlite3", "server.log", "local.env", "media/a.png", "#views.py#", "shop/4913"):
        assert rules.ignored(path), path
    assert not rules.ignored("shop/views.py")


def test_filter_combines_watchfiles_defaults_and_project_rules(tmp_path):
    (tmp_path / "pkg").mkdir()
    keep = ChangeFilter(tmp_path, IgnoreRules(["*.tmp"]))
    modified = watchfiles.Change.modified
    assert keep(modified, str(tmp_path / "views.py"))
    assert not keep(modified, str(tmp_path / "x.tmp"))
    assert not keep(modified, str(tmp_path / "__pycache__" / "views.cpython-311.pyc"))
    assert not keep(modified, str(tmp_path / ".git" / "index"))
    assert not keep(modified, str(tmp_path / ".views.py.swp"))
    assert not keep(modified, str(tmp_path / ".#views.py"))  # watchfiles' own default, no longer repeated by devbox
    assert not keep(watchfiles.Change.added, str(tmp_path / "pkg"))  # a bare new folder
    assert keep(watchfiles.Change.deleted, str(tmp_path / "gone"))  # a removed folder or file


RULES = (
    Rule(("requirements*.txt",), "setup"),
    Rule(("Dockerfile",), "rebuild"),
    Rule(("static/**",), "none"),
    Rule(("assets/**/*.ts",), "exec", "npm run build"),
)


def test_unmatched_changes_restart():
    todo = plan({"shop/views.py"}, RULES)
    assert (todo.restart, todo.setup, todo.rebuild, todo.exec) == (True, False, False, [])
    assert todo.reason == "shop/views.py changed"


def test_none_alone_does_nothing():
    todo = plan({"static/site.css", "static/img/a.png"}, RULES)
    assert not (todo.restart or todo.setup or todo.rebuild or todo.exec)
    assert todo.reason == ""


def test_exec_runs_once_without_restart():
    todo = plan({"assets/a.ts", "assets/b/c.ts"}, RULES)
    assert todo.exec == ["npm run build"] and not todo.restart


def test_strongest_action_wins_and_reason_counts_files():
    todo = plan({"requirements.txt", "shop/views.py", "static/x.css"}, RULES)
    assert todo.setup and todo.restart and not todo.rebuild
    assert todo.reason == "requirements.txt and 1 more changed"
    assert plan({"Dockerfile", "a.py"}, RULES).rebuild


def test_first_matching_rule_wins():
    rules = (Rule(("static/**",), "none"), Rule(("*.css",), "restart"))
    assert not plan({"static/site.css"}, rules).restart
    assert plan({"theme/site.css"}, rules).restart


def test_forget_bytecode_deletes_only_the_changed_modules_cache(tmp_path):
    cache = tmp_path / "shop" / "__pycache__"
    cache.mkdir(parents=True)
    for name in ("views.cpython-311.pyc", "views.cpython-312.pyc", "models.cpython-311.pyc"):
        (cache / name).write_bytes(b"")
    forget_bytecode(tmp_path, {"shop/views.py", "README.md"})
    assert sorted(p.name for p in cache.iterdir()) == ["models.cpython-311.pyc"]

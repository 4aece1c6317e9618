"""What can go wrong with watching in a real project, with `devbox up` against a real engine."""

from __future__ import annotations

import time

from conftest import wait_http, wait_until

APP = """\
name: {name}
image: devbox-test/busybox:1
ports: ["{port}:8000"]
command: echo "greeting=$GREETING"; exec httpd -f -p 8000 -h /app/www
"""
# root without the right to read what it does not own: an unreadable folder, as for a normal user
NO_DAC = ["setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search"]


def save_when_polling_sees_it(project, relative: str, text: str) -> None:
    """Save in a later wall-clock second than the file's last write: watchfiles' poller compares
    whole-second mtimes, so a rewrite within the same second goes unseen (a limit of polling)."""
    written = (project.path / relative).stat().st_mtime
    wait_until(lambda: int(time.time()) > int(written), 2, "the next wall-clock second")
    project.write(relative, text)


def test_an_unreadable_folder_is_skipped_with_one_warning(project, busybox_image):
    project.config(APP)
    project.write("www/index.html", "v1\n")
    pgdata = project.path / "pgdata"
    (pgdata / "base").mkdir(parents=True)
    pgdata.chmod(0)  # a database's data folder, owned by the database's user
    try:
        run = project.up(prefix=NO_DAC)
        run.wait_for(r"ready in .*\(start\)")
        run.wait_for(r"cannot read pgdata: not watched .*add it to watch.ignore")
        project.write("www/index.html", "v2\n")
        run.wait_for(r"ready in .*\(www/index.html changed\)")
        wait_http(project.port, "v2")
        assert run.count("cannot read") == 1 and "Traceback" not in run.output
        assert run.interrupt() == 0
    finally:
        pgdata.chmod(0o755)


def test_the_inotify_limit_is_named_and_polling_takes_over(project, busybox_image):
    project.config(APP)
    project.write("www/index.html", "v1\n")
    for i in range(40):
        (project.path / "pkg" / f"m{i}").mkdir(parents=True)
    # a user namespace of our own, with its own low limit: the host's limit is left alone
    limited = ["unshare", "--user", "--map-root-user", "sh", "-c",
               'echo 20 > /proc/sys/user/max_inotify_watches && exec "$@"', "limited"]
    run = project.up(prefix=limited, env={"WATCHFILES_POLL_DELAY_MS": "50"})
    run.wait_for(r"ready in .*\(start\)")
    line = run.wait_for(r"inotify watch limit \(20\) is below the \d+ folders to watch")
    assert "sudo sysctl fs.inotify.max_user_watches=" in line and "polling meanwhile" in line
    save_when_polling_sees_it(project, "www/index.html", "v2\n")
    run.wait_for(r"ready in .*\(www/index.html changed\)")
    wait_http(project.port, "v2")
    assert run.interrupt() == 0


def test_gitignored_config_files_are_applied_live(project, busybox_image):
    project.write(".gitignore", "devbox.local.yaml\n.env\n")  # as `devbox init` leaves it
    project.config(APP + 'env: {{GREETING: "${{GREETING:-none}}"}}\n')
    project.write("www/index.html", "v1\n")
    run = project.up()
    run.wait_for(r"^greeting=none$")
    run.wait_for(r"ready in .*\(start\)")
    project.write(".env", "GREETING=from-dotenv\n")
    run.wait_for(r"^greeting=from-dotenv$")
    project.write("devbox.local.yaml", "env: {GREETING: from-local}\n")
    run.wait_for(r"^greeting=from-local$")
    assert run.interrupt() == 0


def test_forced_polling_is_honoured(project, busybox_image):
    project.config(APP)
    project.write("www/index.html", "v1\n")
    run = project.up(env={"WATCHFILES_FORCE_POLLING": "1", "WATCHFILES_POLL_DELAY_MS": "50"})
    run.wait_for(r"watching by polling every 50 ms \(WATCHFILES_FORCE_POLLING is set\)")
    run.wait_for(r"ready in .*\(start\)")
    save_when_polling_sees_it(project, "www/index.html", "v2\n")
    run.wait_for(r"ready in .*\(www/index.html changed\)")
    assert run.interrupt() == 0


def test_a_watcher_that_cannot_work_ends_up_with_one_line(project, busybox_image):
    project.config(APP)
    project.write("www/index.html", "v1\n")
    # no inotify instance may be made in this user namespace: watchfiles fails in a way devbox cannot fix
    no_inotify = ["unshare", "--user", "--map-root-user", "sh", "-c",
                  'echo 0 > /proc/sys/user/max_inotify_instances && exec "$@"', "no-inotify"]
    run = project.up(prefix=no_inotify)
    assert run.wait(30) == 1
    assert run.count(r"the file watcher stopped \(.*\); no more reloads, so `up` ends") == 1, run.output
    assert all(line.startswith("devbox: ") for line in run.lines if line != "greeting="), run.output
    assert "Traceback" not in run.output
    container = project.container()
    assert container is None or container.status != "running"

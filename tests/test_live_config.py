"""devbox.yaml edited while `devbox up` runs, and the watch rules, against a real engine."""

from __future__ import annotations

from conftest import free_port, wait_http

BASE = """\
name: {name}
image: devbox-test/busybox:1
ports: ["{port}:8000"]
env: {{GREETING: one}}
command: echo "greeting=$GREETING"; exec httpd -f -p 8000 -h /app/www
"""


def test_live_config_restarts_recreates_or_keeps_the_old_one(project, busybox_image):
    project.config(BASE)
    project.write("www/index.html", "hi\n")
    run = project.up()
    run.wait_for(r"ready in .*\(start\)")
    run.wait_for(r"^greeting=one$")
    first_id = project.container().id

    # a server-level key: the server restarts with it, in the same container
    project.config(BASE.replace("GREETING: one", "GREETING: two"))
    run.wait_for(r"reloaded devbox.yaml")
    run.wait_for(r"^greeting=two$")
    run.wait_for(r"ready in .*\(devbox.yaml changed\)")
    assert project.container().id == first_id

    # an invalid file: its errors, and nothing else happens (no restart for it)
    run.wait_for(r"^greeting=two$")  # (a start's own output may come a moment after its ready line)
    starts = run.count(r"^greeting=")
    project.write("devbox.yaml", project.path.joinpath("devbox.yaml").read_text() + "stop_timeout: soon\n")
    run.wait_for(r"devbox: devbox.yaml:6:15: stop_timeout: expected a number >= 0 and <= 3600, got 'soon'")
    run.wait_for(r"devbox.yaml not applied; the previous config still runs")
    project.write("www/other.txt", "x\n")  # a change after it: its restart is the only one
    run.wait_for(r"ready in .*\(www/other.txt changed\)")
    run.wait_for(r"^greeting=", count=starts + 1)
    assert run.count(r"^greeting=two$") == starts and run.count(r"^greeting=") == starts + 1, run.output
    wait_http(project.port, "hi")
    assert project.container().id == first_id

    # the local file is layered too, and a container-level key (ports) recreates the container
    old_port = project.port
    project.config(BASE)
    project.port = free_port()
    project.write("devbox.local.yaml", f"ports: ['{project.port}:8000']\n")
    run.wait_for(r"recreating container devbox-dbt-\w+: ports changed")
    wait_http(project.port, "hi")
    assert project.container().id != first_id
    assert run.interrupt() == 0


def test_rules_none_exec_setup_and_restart(project, busybox_image):
    project.config("""\
        name: {name}
        image: devbox-test/busybox:1
        ports: ["{port}:8000"]
        setup:
          - echo setup-ran >> /tmp/setup.log
        command: echo started; exec httpd -f -p 8000 -h /app/www
        watch:
          rules:
            - match: ["www/**"]
              action: none
            - match: ["assets/*.ts"]
              action: {{exec: "echo built > /tmp/built.txt; echo built-assets"}}
            - match: ["requirements*.txt"]
              action: setup
        """)
    project.write("www/index.html", "v1\n")
    run = project.up()
    run.wait_for(r"setup: echo setup-ran")
    run.wait_for(r"ready in .*\(start\)")
    container = project.container()

    def setup_runs() -> int:
        return len(container.exec_run(["cat", "/tmp/setup.log"]).output.decode().split())

    assert setup_runs() == 1

    project.write("www/index.html", "v2\n")  # action none: httpd serves the new file itself
    wait_http(project.port, "v2")
    project.write("assets/app.ts", "let x = 1\n")
    run.wait_for(r"^built-assets$")
    assert container.exec_run(["cat", "/tmp/built.txt"]).output == b"built\n"

    project.write("requirements.txt", "django\n")
    run.wait_for(r"ready in .*\(requirements.txt changed\)")
    assert setup_runs() == 2

    project.write("app.py", "x = 1\n")  # unmatched: restart
    run.wait_for(r"ready in .*\(app.py changed\)")
    run.wait_for("^started$", count=3)  # (its output may come a moment after the ready line)
    assert run.count("^started$") == 3, run.output  # start, setup, app.py: not www/ nor assets/
    assert run.interrupt() == 0


def test_ready_log_pattern(project, busybox_image):
    project.config("""\
        name: {name}
        image: devbox-test/busybox:1
        command: echo "booting"; sleep 0.3; echo "listening now"; exec sleep 600
        ready: {{log: "listening \\\\w+"}}
        """)
    run = project.up()
    run.wait_for(r"ready in [\d.]+s \(start\)")
    lines = run.lines[:]
    ready_at = next(i for i, line in enumerate(lines) if "ready in" in line)
    assert lines.index("booting") < lines.index("listening now") < ready_at, lines
    assert run.interrupt() == 0

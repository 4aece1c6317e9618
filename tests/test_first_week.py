"""A team's first week on real projects' patterns, against a real engine: django-on-docker (Django +
PostgreSQL from its Compose file, with a config `devbox init` wrote and nobody edited), awesome-compose's
django layout, services without a healthcheck, an image's ENTRYPOINT, builds only when the image would
change, live env files, Compose's stop_signal, `down` that cleans up, and ready lines as the user sees them."""

from __future__ import annotations

import threading
import time

from conftest import http_get, wait_http, wait_until

import apps

DB_WAIT = 120  # seconds: the first `up` builds the image and initialises PostgreSQL


def compose_containers(project, stack: str, service: str | None = None) -> list:
    labels = [f"com.docker.compose.project={stack}"] + ([f"com.docker.compose.service={service}"] if service else [])
    return project.client.containers.list(all=True, filters={"label": labels})


def test_init_writes_a_config_that_serves_django_with_postgres(named_project, python_image, postgres_image,
                                                               site_packages, stack):
    project = named_project
    apps.make_django_postgres_project(project.path, site_packages, stack, project.port)
    init = project.run("init")
    assert init.returncode == 0, init.stderr
    config = (project.path / "devbox.yaml").read_text()
    assert "workdir: /usr/src/app" in config and "command: python manage.py runserver" in config, config
    assert 'match: ["app/requirements.txt"]' in config and "action: rebuild" in config, config
    doctor = project.run("doctor")
    assert doctor.returncode == 0 and "command: /usr/src/app/manage.py is there" in doctor.stderr, doctor.stderr

    run = project.up()
    # db has no healthcheck: devbox waits for its port, then setup migrates (what the ENTRYPOINT did)
    run.wait_for(r"waiting for db \(5432\) to accept connections \(no healthcheck\)", timeout=DB_WAIT)
    run.wait_for(r"setup: python manage.py migrate", timeout=DB_WAIT)
    wait_http(project.port, "migrations 18", "/db/", timeout=DB_WAIT)
    assert run.count("ENTRYPOINT") == 0, run.output  # init wrote `entrypoint: []`: said there, not here

    # the README's own verb runs where the code is
    check = project.run("exec", "python", "manage.py", "check")
    assert check.returncode == 0 and "no issues" in check.stdout, check.stdout + check.stderr

    # the Compose service's env_file reaches the next server on save
    wait_http(project.port, "greeting hello", "/env/")
    env_file = project.path / ".env.dev"
    env_file.write_text(env_file.read_text().replace("GREETING=hello", "GREETING=bonjour"))
    wait_http(project.port, "greeting bonjour", "/env/")
    assert run.interrupt() == 0

    # `down` removes the services `up` started and their network, and keeps the data; `down --volumes`,
    # run after it, still removes the data
    down = project.run("down")
    assert down.returncode == 0, down.stderr
    assert compose_containers(project, stack) == [], down.stderr
    assert project.client.networks.list(names=[f"{stack}_default"]) == [], down.stderr
    assert project.client.volumes.list(filters={"name": f"{stack}_postgres_data"}), down.stderr
    volumes = project.run("down", "--volumes")
    assert volumes.returncode == 0 and f"removed volumes {stack}_postgres_data" in volumes.stderr, volumes.stderr
    assert project.client.volumes.list(filters={"name": f"{stack}_postgres_data"}) == []


AWESOME_COMPOSE = """\
name: {stack}
services:
  web:
    build:
      context: app
    ports:
      - '{port}:8000'
    volumes:
      - {site}:/site:ro
"""
AWESOME_DOCKERFILE = """\
FROM devbox-test/python:bookworm AS builder
EXPOSE 8000
WORKDIR /app
ENV PYTHONPATH=/site
COPY requirements.txt /app
RUN cp requirements.txt /installed-requirements.txt
COPY . /app
ENTRYPOINT ["python3"]
CMD ["manage.py", "runserver", "0.0.0.0:8000"]
"""


def test_init_mounts_the_code_where_the_image_has_it(named_project, python_image, site_packages, stack):
    """awesome-compose's django: no mount in the Compose file; the image copies app/ to /app. The project
    root mounted at /app would put manage.py at /app/app/manage.py."""
    project = named_project
    apps.make_django_app(project.path / "app", site_packages)
    (project.path / "app" / "manage.py").write_text(
        (project.path / "app" / "manage.py").read_text().replace("#!/usr/bin/env python", "#!/usr/bin/env python3"))
    (project.path / "app" / "requirements.txt").write_text("Django>=5.2\n")
    (project.path / "app" / "Dockerfile").write_text(AWESOME_DOCKERFILE)
    (project.path / "compose.yaml").write_text(AWESOME_COMPOSE.format(stack=stack, port=project.port,
                                                                      site=site_packages))
    assert project.run("init").returncode == 0
    config = (project.path / "devbox.yaml").read_text()
    assert "  - ./app:/app" in config and "command: python manage.py runserver" in config, config
    (project.path / "devbox.yaml").write_text(config.replace("command: python ", "command: python3 "))
    run = project.up()
    wait_http(project.port, "hello v1", "/hello/", timeout=DB_WAIT)
    check = project.run("exec", "python3", "manage.py", "check")
    assert check.returncode == 0, check.stdout + check.stderr
    (project.path / "app" / "mysite" / "value.py").write_text(apps.value_module("v2"))
    wait_http(project.port, "hello v2", "/hello/")
    assert run.interrupt() == 0


LATE_SERVICE_COMPOSE = """\
name: {stack}
services:
  api:
    image: devbox-test/busybox:1
    command: ["sh", "-c", "sleep 3; mkdir -p /www; echo up > /www/index.html; exec httpd -f -p 8080 -h /www"]
"""
NEEDS_API = """\
import http.server, sys, urllib.request
try:
    urllib.request.urlopen("http://api:8080/", timeout=2).read()
except OSError as e:
    print(f"api not reachable: {e}", flush=True)
    sys.exit(1)
http.server.HTTPServer(("", 8000), http.server.SimpleHTTPRequestHandler).serve_forever()
"""


def test_a_server_that_crashes_before_its_service_listens_is_started_again(project, python_image, busybox_image,
                                                                           stack):
    """A service with no healthcheck and no port to wait for: the server's first starts fail to reach it;
    devbox starts it again, with one line, until it is ready (not "waiting for a change")."""
    project.write("compose.yaml", LATE_SERVICE_COMPOSE.format(stack=stack))
    project.write("server.py", NEEDS_API)
    project.write("index.html", "served\n")
    project.config("""\
        name: {name}
        image: devbox-test/python:bookworm
        compose: {{services: [api]}}
        ports: ["{port}:8000"]
        command: ["python3", "server.py"]
        ready: {{timeout: 30}}
        """)
    run = project.up()
    try:
        wait_http(project.port, "served", timeout=60)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{run.output}") from None
    assert run.count(r"server exited with code 1 before it was ever ready, .* after its compose services "
                     r"started") == 1, run.output
    assert run.count("api not reachable") >= 1 and run.count("waiting for a change") == 0, run.output
    run.wait_for(r"ready in \d+\.\d+s \(start\)")
    assert run.interrupt() == 0


ENTRY_DOCKERFILE = """\
FROM devbox-test/python:bookworm
RUN printf '#!/bin/sh\\necho entrypoint ran\\nexport MARK=from-entrypoint\\nexec "$@"\\n' > /entry.sh && chmod +x /entry.sh
ENTRYPOINT ["/entry.sh"]
"""
SHOW_ENV = """\
import http.server, os
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"mark={os.environ.get('MARK')}".encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
http.server.HTTPServer(("", 8000), Handler).serve_forever()
"""


def test_the_images_entrypoint_is_named_once_and_runs_when_asked(project, python_image):
    project.write("Dockerfile", ENTRY_DOCKERFILE)
    project.write("server.py", SHOW_ENV)
    base = """\
        name: {name}
        build: {{context: .}}
        ports: ["{port}:8000"]
        command: ["python3", "server.py"]
        """
    project.config(base)
    run = project.up()
    wait_http(project.port, "mark=None")
    assert run.count(r'the image\'s ENTRYPOINT \["/entry.sh"\] is not run: .* add `entrypoint: \["/entry.sh"\]`') == 1
    project.config(base.rstrip(" ") + '        entrypoint: ["/entry.sh"]\n')
    run.wait_for(r"ready in .*\(devbox\.yaml changed\)")
    wait_http(project.port, "mark=from-entrypoint")
    run.wait_for("^entrypoint ran$")
    (project.path / "server.py").write_text(SHOW_ENV + "\n")
    run.wait_for(r"ready in .*\(server\.py changed\)")
    run.wait_for("^entrypoint ran$", count=2)  # (its output may come a moment after the ready line)
    assert run.count("^entrypoint ran$") == 2 and run.count("ENTRYPOINT") == 1, run.output
    assert run.interrupt() == 0


BUILD_DOCKERFILE = """\
FROM devbox-test/python:bookworm
WORKDIR /app
COPY requirements.txt .
RUN cp requirements.txt /installed.txt
COPY . .
"""
SHOW_DEPS = """\
import http.server
VALUE = "v1"
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{VALUE} " + " ".join(open("/installed.txt").read().split())
        body = body.encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
http.server.HTTPServer(("", 8000), Handler).serve_forever()
"""


def dangling(project) -> list:
    return project.client.images.list(filters={"dangling": True, "label": f"devbox.project={project.name}"})


def test_source_edits_never_rebuild_and_dependency_changes_do(project, python_image):
    project.write("Dockerfile", BUILD_DOCKERFILE)
    project.write("requirements.txt", "flask\n")
    project.write("app.py", SHOW_DEPS)
    project.config("""\
        name: {name}
        build: {{context: .}}
        ports: ["{port}:8000"]
        command: ["python3", "app.py"]
        watch:
          rules:
            - match: ["requirements*.txt", "Dockerfile"]
              action: rebuild
        """)
    run = project.up()
    wait_http(project.port, "v1 flask", timeout=60)
    first = project.container().id
    assert run.interrupt() == 0

    # an edit made while devbox was not running: the next `up` restarts on it, and never rebuilds
    (project.path / "app.py").write_text(SHOW_DEPS.replace('"v1"', '"v2"'))
    again = project.up()
    wait_http(project.port, "v2 flask")
    assert again.count("building") == 0 and project.container().id == first, again.output

    # `up --build` while `up` runs is refused; `devbox rebuild` asks the running one
    second = project.run("up", "--build")
    assert second.returncode == 2 and "`devbox rebuild` asks it to rebuild the image" in second.stderr, second.stderr
    rebuild = project.run("rebuild", timeout=120)
    assert rebuild.returncode == 0 and "ready in" in rebuild.stderr, rebuild.stderr + again.output
    again.wait_for(r"building .* \(asked to")

    # a dependency file the Dockerfile installs from rebuilds the image; no untagged image is left behind
    (project.path / "requirements.txt").write_text("flask\nredis\n")
    wait_http(project.port, "v2 flask redis", timeout=60)
    assert dangling(project) == [], [i.id for i in dangling(project)]
    assert again.interrupt() == 0


STOP_COMPOSE = """\
name: {stack}
services:
  web:
    image: devbox-test/python:bookworm
    volumes:
      - .:/app
    working_dir: /app
    ports:
      - "{port}:8000"
    stop_signal: SIGINT
    stop_grace_period: 20s
"""
RECORDS_SIGNAL = """\
import http.server, signal, sys
def stop(signum, frame):
    with open("/app/signals.log", "a") as f:
        f.write(signal.Signals(signum).name + "\\n")
    sys.exit(0)
signal.signal(signal.SIGINT, stop)
signal.signal(signal.SIGTERM, stop)
http.server.HTTPServer(("", 8000), http.server.SimpleHTTPRequestHandler).serve_forever()
"""


def test_the_compose_services_stop_signal_is_taken(project, python_image, stack):
    project.write("compose.yaml", STOP_COMPOSE.format(stack=stack, port=project.port))
    project.write("server.py", RECORDS_SIGNAL)
    project.write("index.html", "one\n")
    project.config("""\
        name: {name}
        compose: {{service: web}}
        command: ["python3", "server.py"]
        """)
    config = project.run("config")
    assert "stop_signal: SIGINT" in config.stdout and "stop_timeout: 20" in config.stdout, config.stdout
    run = project.up()
    wait_http(project.port, "one")
    (project.path / "server.py").write_text(RECORDS_SIGNAL + "\n")
    run.wait_for(r"ready in .*\(server\.py changed\)")
    assert (project.path / "signals.log").read_text() == "SIGINT\n"
    assert run.interrupt() == 0


SLOW_IMPORT = "import time\ntime.sleep(1.5)  # a heavy import: the preloaded starts skip it\n"
SERVES_VALUE = """\
import http.server
import slowlib
from value import VALUE
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = VALUE.encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
http.server.HTTPServer(("", 8000), Handler).serve_forever()
"""


def test_the_ready_line_says_what_the_user_waited_for(project, python_image):
    """The first saves after `up`: the first start is cold (1.5 s of imports), the saves are preloaded
    (no import). Each ready line comes as the new page is served, not on a schedule the slow cold start
    set, and its number is what the user waited."""
    lib = project.path.parent / "lib"
    lib.mkdir()
    (lib / "slowlib.py").write_text(SLOW_IMPORT)
    project.write("server.py", SERVES_VALUE)
    project.write("value.py", 'VALUE = "v1"\n')
    project.config(f"""\
        name: {{name}}
        image: devbox-test/python:bookworm
        env: {{{{PYTHONPATH: /extlib}}}}
        mounts: [".:/app", "{lib}:/extlib:ro"]
        ports: ["{{port}}:8000"]
        command: ["python3", "server.py"]
        """)
    run = project.up()
    run.wait_for(r"ready in .*\(start\)", timeout=60)
    for n, value in enumerate(("v2", "v3", "v4"), start=1):
        seen: dict[str, float] = {}

        def watch_lines(count: int = n) -> None:
            wait_until(lambda: run.count(r"ready in .*\(value\.py changed\)") >= count, 30, "ready line",
                       interval=0.002)
            seen["line"] = time.monotonic()

        watcher = threading.Thread(target=watch_lines)
        watcher.start()
        saved = time.monotonic()
        (project.path / "value.py").write_text(f"VALUE = {value!r}\n")
        wait_until(lambda: http_get(project.port, timeout=1) == value, 30, f"{value} served", interval=0.005)
        seen["page"] = time.monotonic()
        watcher.join(35)
        late = seen["line"] - seen["page"]
        said = float(run.lines_matching(r"ready in (\d+\.\d+)s \(value\.py changed\)")[-1])
        assert late < 0.25, f"save {value}: the ready line came {late:.2f}s after the page was served"
        assert said <= seen["page"] - saved + 0.1, f"save {value}: said {said:.2f}s, served {seen['page'] - saved:.2f}s"
    assert run.interrupt() == 0


def test_doctor_fails_a_config_whose_command_is_not_where_it_runs(named_project, site_packages, stack):
    """The config `init` used to write for django-on-docker: workdir /app, the code mounted at
    /usr/src/app, `python app/manage.py`: the server never started and doctor said all was well."""
    project = named_project
    apps.make_django_postgres_project(project.path, site_packages, stack, project.port)
    project.write("devbox.yaml", "compose: {file: docker-compose.yml, service: web}\n"
                                 "command: python app/manage.py runserver 0.0.0.0:8000 --noreload\n")
    doctor = project.run("doctor")
    assert doctor.returncode == 1, doctor.stderr
    assert "warn  workdir /app is not where the code is mounted (app:/usr/src/app, " in doctor.stderr, doctor.stderr
    assert "fail  command: /app/app/manage.py is not in the container (neither mounted nor copied there by the " \
           "Dockerfile)" in doctor.stderr, doctor.stderr

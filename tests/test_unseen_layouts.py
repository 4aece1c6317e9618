"""Projects nobody here had seen, read the way Compose and their Dockerfile read them: for each layout,
`devbox init` alone writes the config, `doctor` approves it for the right reasons, `up` serves with no
edit, a save is served, and `down --volumes` leaves nothing behind (the anonymous volume of an image's
VOLUME, the Compose project's named volumes).

The layouts are made for the tests, after public projects' patterns:
- a FastAPI backend in `backend/` of a monorepo (full-stack-fastapi-template): compose.yml plus
  compose.override.yml (the port and the development environment live only in the override), a one-shot
  `prestart` the backend depends on with `service_completed_successfully`, the Dockerfile copying
  `./app` to `/app/app` under WORKDIR /app;
- a Django project whose Compose service mounts only its package (`./mysite:/code/mysite`) over the image's
  `COPY . /code`, a `requirements/` folder the image installs from, settings in the project package, Redis
  beside it, and a VOLUME in the image;
- a Flask package nested at `src/shop`, built from a Dockerfile alone (no Compose), copied to a nested path.
"""

from __future__ import annotations

import json
import os

from conftest import wait_http, wait_until

import apps
from layouts import make_django_cms, make_full_stack, make_nested_flask, write

FIRST_UP = 180  # seconds: the first `up` builds the image and starts the services


def volumes(client) -> set[str]:
    return {v.name for v in client.volumes.list()}


def devbox_config(project) -> str:
    return (project.path / "devbox.yaml").read_text()


def settle_mtime(path) -> None:
    """Move a file's mtime a second on, so a hash by (size, mtime) sees even a same-second edit."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))


# -- a monorepo's backend with Compose's override file -------------------------------------------------

def test_a_monorepo_backend_with_an_override_file_runs_from_init_alone(named_project, python_image, busybox_image,
                                                                       site_packages, stack):
    project = named_project
    make_full_stack(project.path, stack, project.port, site_packages)
    before = volumes(project.client)

    init = project.run("init", "--vscode")
    assert init.returncode == 0, init.stderr
    config = devbox_config(project)
    # the code where the image has it, and the module path as seen from the WORKDIR
    assert "compose: {service: backend}" in config and "  - ./backend/app:/app/app" in config, config
    assert "command: uvicorn app.main:app --host 0.0.0.0 --port 8000" in config, config
    assert 'match: ["backend/uv.lock"]' in config and 'match: ["backend/Dockerfile"]' in config, config
    launch = json.loads((project.path / ".vscode" / "launch.json").read_text())
    assert launch["configurations"][0]["pathMappings"][0] == {"localRoot": "${workspaceFolder}/backend/app",
                                                               "remoteRoot": "/app/app"}, launch
    doctor = project.run("doctor")
    assert doctor.returncode == 0 and "fail" not in doctor.stderr, doctor.stderr

    run = project.up()
    run.wait_for(r"running compose services prestart to completion", timeout=FIRST_UP)
    # the port and ENVIRONMENT come from compose.override.yml, which Compose merged
    wait_http(project.port, "hello v1 migrated local", "/hello/", timeout=FIRST_UP)
    ready = run.wait_for(r"ready in")
    assert "not checked" not in run.output, run.output
    (project.path / "backend" / "app" / "value.py").write_text(apps.value_module("v2"))
    wait_http(project.port, "hello v2 migrated local", "/hello/")
    doctor = project.run("doctor")  # Python's own import system, in the running container
    assert "ok    command: app.main is there (/app/app/main.py)" in doctor.stderr, doctor.stderr
    assert run.interrupt() == 0, ready

    # not an input of the image: devbox.yaml, the README, and app/ (the mount covers where the image has it)
    with (project.path / "devbox.yaml").open("a") as f:
        f.write("# a comment\n")
    for name in ("README.md", "backend/app/value.py"):
        (project.path / name).write_text((project.path / name).read_text() + "\n")
        settle_mtime(project.path / name)
    again = project.up()
    wait_http(project.port, "hello v2", "/hello/", timeout=60)
    assert again.count(r"building devbox-") == 0, again.output
    assert again.interrupt() == 0

    down = project.run("down", "--volumes")
    assert down.returncode == 0, down.stderr
    assert f"{stack}_app-db-data" in down.stderr, down.stderr
    left = volumes(project.client) - before
    assert left == set(), f"volumes left: {left}\n{down.stderr}"


def test_a_django_project_mounting_only_its_package_preloads_and_rebuilds_for_requirements(
        named_project, python_image, redis_image, site_packages, stack):
    project = named_project
    make_django_cms(project.path, stack, project.port, site_packages)
    before = volumes(project.client)

    assert project.run("init").returncode == 0
    config = devbox_config(project)
    assert "compose: {service: web}" in config and "mounts:" not in config, config  # the service's own mounts
    assert "workdir: /code" in config and "command: python manage.py runserver 0.0.0.0:8000" in config, config
    assert 'match: ["requirements/**"]' in config, config
    doctor = project.run("doctor")
    assert doctor.returncode == 0 and "is not where the code is mounted" not in doctor.stderr, doctor.stderr
    assert "workdir /code: the code mounted at /code/mysite" in doctor.stderr, doctor.stderr

    run = project.up()
    wait_http(project.port, "hello v1", "/hello/", timeout=FIRST_UP)
    (project.path / "mysite" / "value.py").write_text(apps.value_module("v2"))
    wait_http(project.port, "hello v2", "/hello/")
    # the settings are the project's own: preloading holds them (learnt from the first preloaded start),
    # and says so once, with what that means
    run.wait_for(r"preload: on; the warm process holds the project's .*mysite\.settings", timeout=30)
    status = project.run("status")
    assert "preload: on (holds the project's mysite, mysite.settings)" in status.stdout + status.stderr, status
    assert "preload off" not in run.output, run.output
    # the probe sent the Host a browser sends: Django's host check let it through, no DisallowedHost
    assert "DisallowedHost" not in run.output and "Invalid HTTP_HOST" not in run.output, run.output
    # a save of the settings the warm process holds: served by the new settings, then warm again
    settings = project.path / "mysite" / "settings.py"
    settings.write_text(settings.read_text().replace('GREETING = "hello"', 'GREETING = "bonjour"'))
    wait_http(project.port, "bonjour v2", "/hello/")
    (project.path / "mysite" / "value.py").write_text(apps.value_module("v3"))
    wait_http(project.port, "bonjour v3", "/hello/")

    # a new dependency in requirements/: one rebuild, a new container, the old one's VOLUME goes with it
    first = project.container().id
    (project.path / "requirements" / "base.txt").write_text("Django>=5.2\nredis>=5\n")
    run.wait_for(r"rebuild: waiting for", timeout=10)
    run.wait_for(r"building devbox-.* with BuildKit", timeout=30)
    wait_until(lambda: project.container() is not None and project.container().id != first, 120,
               "the container made from the rebuilt image")
    wait_http(project.port, "bonjour v3", "/hello/", timeout=60)
    installed = project.run("exec", "cat", "/installed-requirements.txt")
    assert installed.returncode == 0, installed.stderr
    assert run.count(r"building devbox-") == 2, run.output  # the first up's build, and this one
    assert run.interrupt() == 0

    down = project.run("down", "--volumes")
    assert down.returncode == 0, down.stderr
    left = volumes(project.client) - before
    assert left == set(), f"volumes left: {left}\n{down.stderr}"


def test_a_nested_package_is_mounted_where_the_image_has_it(named_project, python_image, site_packages):
    project = named_project
    make_nested_flask(project.path)
    assert project.run("init").returncode == 0
    config = devbox_config(project)
    assert "  - ./src:/srv/shop/src" in config and "workdir: /srv/shop/src" in config, config
    assert "FLASK_APP: shop" in config, config
    # the test's own port and the frameworks, as a user adds what init cannot know
    config = config.replace('"5000:5000"', f'"{project.port}:5000"').replace(
        "  - ./src:/srv/shop/src\n", f"  - ./src:/srv/shop/src\n  - {site_packages}:/site:ro\n", 1)
    (project.path / "devbox.yaml").write_text(config)
    run = project.up()
    wait_http(project.port, "hello v1", "/hello/", timeout=FIRST_UP)
    doctor = project.run("doctor")
    assert "ok    command: shop is there (/srv/shop/src/shop/__init__.py)" in doctor.stderr, doctor.stderr
    (project.path / "src" / "shop" / "value.py").write_text(apps.value_module("v2"))
    wait_http(project.port, "hello v2", "/hello/")
    assert run.interrupt() == 0
    assert project.run("down", "--volumes").returncode == 0
    assert project.container() is None


def test_doctor_asks_python_and_names_a_module_it_cannot_find(named_project, python_image):
    """The check is Python's own import resolution in the container, not a join of paths: a module that is
    not there is a failure with its reason."""
    project = named_project
    write(project.path, {"pkg/__init__.py": "", "pkg/app.py": "app = None\n"})
    project.config("""\
        name: {name}
        image: devbox-test/python:bookworm
        command: uvicorn backend.app.main:app --port 8000
        """)
    doctor = project.run("doctor")
    assert doctor.returncode == 1, doctor.stderr
    assert "fail  command: Python finds no module backend.app.main from the workdir /app in the container " \
           "(ModuleNotFoundError: No module named 'backend')" in doctor.stderr, doctor.stderr
    project.config("""\
        name: {name}
        image: devbox-test/python:bookworm
        command: uvicorn pkg.app:app --port 8000
        """)
    doctor = project.run("doctor")
    assert "ok    command: pkg.app is there (/app/pkg/app.py)" in doctor.stderr, doctor.stderr

"""`build:`: a real Dockerfile built with BuildKit (through Compose v2) or the legacy builder, against a real engine."""

from __future__ import annotations

from conftest import wait_http

DOCKERFILE = """\
FROM devbox-test/busybox:1 AS base
RUN --mount=type=cache,target=/cache echo cached >> /cache/hits && cp /cache/hits /built
FROM base AS dev
RUN echo {stage} > /stage
FROM base AS prod
RUN echo prod > /stage
"""
APP = """\
name: {name}
build: {{context: ., target: dev}}
ports: ["{port}:8000"]
volumes: ["data:/data"]
command: echo "stage=$(cat /stage)"; exec httpd -f -p 8000 -h /app/www
watch:
  rules:
    - match: [Dockerfile]
      action: rebuild
"""


def test_multistage_target_with_a_cache_mount_builds_and_runs(project, busybox_image):
    project.write("Dockerfile", DOCKERFILE.format(stage="dev-one"))
    project.write("www/index.html", "built\n")
    project.config(APP)
    run = project.up()
    run.wait_for(rf"building devbox-{project.name}:dev with BuildKit \(no image yet; `docker compose` v2")
    run.wait_for(r"build \[dev 1/1\] RUN echo dev-one > /stage")
    run.wait_for(r"^stage=dev-one$", timeout=60)
    wait_http(project.port, "built")
    assert project.container().exec_run(["cat", "/built"]).output == b"cached\n"
    assert f"image devbox-{project.name}:dev," in project.run("status").stdout  # its name, not a sha256 id
    assert run.interrupt() == 0

    again = project.up()  # nothing changed: no build, the same container
    again.wait_for(r"ready in .*\(start\)")
    assert again.count("building") == 0 and again.count(r"start(ed|ing) container") == 1, again.output
    assert again.interrupt() == 0


def test_a_dockerfile_change_rebuilds_and_recreates_keeping_volumes(project, busybox_image):
    project.write("Dockerfile", DOCKERFILE.format(stage="one"))
    project.write("www/index.html", "v1\n")
    project.config(APP)
    run = project.up()
    run.wait_for(r"^stage=one$", timeout=60)
    run.wait_for(r"ready in .*\(start\)")
    first = project.container()
    first.exec_run(["sh", "-c", "echo kept > /data/file"])

    project.write("Dockerfile", DOCKERFILE.format(stage="two"))
    run.wait_for(r"building .* with BuildKit \(asked to")
    run.wait_for(rf"recreating container devbox-{project.name}: image rebuilt", timeout=60)
    run.wait_for(r"^stage=two$", timeout=30)
    run.wait_for(r"ready in .*\(Dockerfile changed\)")
    second = project.container()
    assert second.id != first.id
    assert second.exec_run(["cat", "/data/file"]).output == b"kept\n"
    wait_http(project.port, "v1")
    assert run.interrupt() == 0


def test_a_broken_dockerfile_keeps_the_old_server_serving(project, busybox_image):
    project.write("Dockerfile", DOCKERFILE.format(stage="good"))
    project.write("www/index.html", "still here\n")
    project.config(APP)
    run = project.up()
    run.wait_for(r"ready in .*\(start\)", timeout=60)
    container_id = project.container().id
    project.write("Dockerfile", DOCKERFILE.format(stage="good").replace("RUN echo good", "RUN exit 7; echo"))
    run.wait_for(rf"building devbox-{project.name}:dev failed \(exit \d+\): fix the Dockerfile")
    run.wait_for(r"devbox:   \| ")
    run.wait_for(r"the running container and server stay")
    wait_http(project.port, "still here")
    assert project.container().id == container_id
    assert run.count(r"ready in .*\(Dockerfile changed\)") == 0
    assert run.interrupt() == 0


def test_the_legacy_builder_builds_plain_dockerfiles_and_names_what_it_cannot(project, busybox_image):
    project.write("Dockerfile", "FROM devbox-test/busybox:1\nRUN echo legacy > /stage\n")
    project.write("www/index.html", "x\n")
    project.config(APP.replace("target: dev", "dockerfile: Dockerfile"))
    run = project.up(env={"DEVBOX_BUILDER": "legacy"})
    run.wait_for(r"with the engine's legacy builder")
    run.wait_for(r"^stage=legacy$", timeout=60)
    assert run.interrupt() == 0
    project.write("Dockerfile", DOCKERFILE.format(stage="x"))
    failed = project.run("up", env={"DEVBOX_BUILDER": "legacy"})
    assert failed.returncode == 1 and "(BuildKit syntax: install Compose v2)" in failed.stderr, failed.stderr


def test_a_taken_port_fails_up_before_the_build(project, busybox_image):
    import socket

    project.write("Dockerfile", DOCKERFILE.format(stage="one"))
    project.write("www/index.html", "v1\n")
    project.config(APP)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", project.port))
        taken.listen()
        run = project.up()
        assert run.wait(30) == 1
    assert f"port {project.port} is already in use on this machine" in run.output
    assert "building" not in run.output, run.output  # found before the seconds a build takes

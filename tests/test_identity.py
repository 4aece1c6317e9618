"""A project is its folder: two folders never share a container, whatever their names."""

from __future__ import annotations

from conftest import Project, wait_http

APP = """\
name: {name}
image: devbox-test/busybox:1
ports: ["{port}:8000"]
volumes: ["data:/data"]
command: echo started; exec httpd -f -p 8000 -h /app/www
"""


def twin(project: Project, tmp_path) -> Project:
    """Another folder called `app`, whose devbox.yaml names the same project."""
    other = Project(tmp_path / "elsewhere" / "app", project.client)
    other.path.mkdir(parents=True)
    other.name = project.name
    other.config(APP)
    other.write("www/index.html", "the other one\n")
    return other


def test_a_name_clash_with_another_folder_is_refused(project, busybox_image, tmp_path):
    project.config(APP)
    project.write("www/index.html", "the first one\n")
    other = twin(project, tmp_path)
    try:
        run = project.up()
        run.wait_for(r"ready in .*\(start\)")
        first_id = project.container().id

        while_running = other.run("up")
        assert while_running.returncode == 2
        line = while_running.stderr.strip()
        assert str(project.path) in line and str(other.path) in line and "name:" in line, line

        assert run.interrupt() == 0
        after = other.run("up")  # the first one's container is stopped, and still not the other's
        assert after.returncode == 2 and str(project.path) in after.stderr and "name:" in after.stderr
        refused_down = other.run("down", "--volumes")
        assert refused_down.returncode == 2 and str(project.path) in refused_down.stderr

        assert project.container().id == first_id
        assert [v.name for v in project.client.volumes.list(filters={"label": f"devbox.project={project.name}"})] \
            == [f"{project.name}_data"]
        again = project.up()
        again.wait_for(r"ready in .*\(start\)")
        wait_http(project.port, "the first one")
        assert again.interrupt() == 0
    finally:
        other.cleanup()


def test_down_volumes_says_what_it_removed(project, busybox_image):
    project.config(APP)
    project.write("www/index.html", "x\n")
    nothing = project.run("down", "--volumes")
    assert nothing.returncode == 0
    assert nothing.stderr.strip().splitlines() == [f"devbox: no volumes to remove for project '{project.name}'"]
    run = project.up()
    run.wait_for(r"ready in .*\(start\)")
    assert run.interrupt() == 0
    down = project.run("down", "--volumes")
    assert down.returncode == 0
    assert down.stderr.strip().splitlines() == [f"devbox: removed container devbox-{project.name}",
                                                f"devbox: removed volumes {project.name}_data"]


def test_an_image_named_by_digest_is_pulled_by_digest(project, client):
    digest = "sha256:" + "ab" * 32
    project.config(f"name: {{name}}\nimage: 127.0.0.1:1/devbox-test/pinned@{digest}\ncommand: httpd -f\n")
    result = project.run("up")
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert "invalid reference format" not in line and "connection refused" in line, line

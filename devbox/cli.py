"""The `devbox` command: parse arguments, run a verb, and turn errors into one line and an exit code.

This is the only module that prints errors or picks exit codes (SPEC: 0 ok,
1 runtime failure, 2 bad usage or config, 130 interrupted). Tracebacks only
with --debug.
"""

from __future__ import annotations

__all__ = ["main"]

import argparse
import os
import sys
import traceback
from typing import Sequence

from . import __version__, output
from .config import Config, find_config, load
from .errors import ConfigError, ContainerError, DevboxError, UsageError, render
from .output import say


def _config(args: argparse.Namespace) -> Config:
    return load(find_config(args.file))


def cmd_up(args: argparse.Namespace) -> int:
    from .interrupts import Interrupts

    interrupts = Interrupts().install()  # first: a signal at any point from here on is handled
    output.use_sinks()
    try:
        return _up(args, interrupts)
    finally:
        interrupts.restore()


def _up(args: argparse.Namespace, interrupts) -> int:
    from .lock import UpLock
    from .prestart import Prestart

    config = _config(args)
    debugger = getattr(args, "debugger", False)
    if debugger:
        config = config.with_debugger()
    busy = "`devbox rebuild` asks it to rebuild the image" if args.build else "use that one, or stop it with Ctrl-C first"
    with UpLock(config.name, config.project_dir, busy):
        prestart = None if args.recreate else Prestart(f"devbox-{config.name}", config.project_dir)
        try:
            from .control import ControlServer
            from .engine import connect  # the slow imports, while the engine starts the container
            from .loop.events import Control
            from .loop.supervisor import Supervisor

            supervisor = Supervisor(config, connect(), interrupts, recreate=args.recreate, prestart=prestart,
                                    build=args.build, debugger=debugger)
            control = ControlServer(config.name, lambda verb, reply: supervisor.events.put(Control.parse(verb, reply)))
        except BaseException:
            if prestart is not None:
                prestart.undo()  # leave the container as it was: stopped
            raise
        try:
            return supervisor.run()
        finally:
            control.close()


def cmd_down(args: argparse.Namespace) -> int:
    from .down import down

    down(_config(args), args.volumes)
    return 0


def cmd_restart(args: argparse.Namespace) -> int:
    return _ask_up(_config(args), "restart")


def cmd_rebuild(args: argparse.Namespace) -> int:
    config = _config(args)
    if config.build is None:
        raise UsageError(f"{config.file.name} has no `build:` (the image is {config.image}): nothing to rebuild")
    return _ask_up(config, "rebuild")


def _ask_up(config: Config, verb: str) -> int:
    """Ask the running `up` to act (`restart`, `rebuild`); its answer is the ready line, or why not."""
    from .control import request

    building = 3600 if verb == "rebuild" else 0  # a build may take long; `up` shows its progress meanwhile
    answer = request(config.name, verb, timeout=config.ready.timeout + 40 + building)
    if answer is None:
        raise ContainerError(f"no `devbox up` runs for project '{config.name}': start it with `devbox up`")
    if "line" in answer:
        say(answer["line"])
    elif answer.get("error"):
        say(answer["error"])
    return 0 if answer.get("ok") else 1


def cmd_status(args: argparse.Namespace) -> int:
    import json

    from .status import gather, lines

    status = gather(_config(args))
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        for line in lines(status):
            print(line)
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from .logs import follow, log_path, read_lines

    config = _config(args)
    if not log_path(config.name).exists():
        say(f"no server output kept yet for project '{config.name}' (it is kept in {log_path(config.name)})")
        return 0 if not args.follow else _follow(follow(config.name, args.timestamps))
    lines = read_lines(config.name, args.timestamps)
    for line in lines[-args.lines:] if args.lines is not None else lines:
        print(line)
    sys.stdout.flush()
    return _follow(follow(config.name, args.timestamps)) if args.follow else 0


def _follow(lines) -> int:
    try:
        for line in lines:
            print(line, flush=True)
    except KeyboardInterrupt:
        return 0
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import run_checks

    checks = run_checks(_config(args))
    for check in checks:
        say(str(check))
    failed = sum(check.level == "fail" for check in checks)
    warned = sum(check.level == "warn" for check in checks)
    warnings = f" ({warned} warning{'s' if warned > 1 else ''})" if warned else ""
    say(f"{failed} check(s) failed{warnings}" if failed else f"all checks passed{warnings}")
    return 1 if failed else 0


def cmd_exec(args: argparse.Namespace) -> int:
    from .execute import run_inside

    if not args.command:
        raise UsageError("give a command to run, e.g. `devbox exec python manage.py migrate`")
    env = {}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"-e {item!r}: expected KEY=VALUE")
        env[key] = value
    return run_inside(_config(args), args.command, env, args.workdir, args.user)


def cmd_shell(args: argparse.Namespace) -> int:
    from .execute import SHELL, run_inside

    return run_inside(_config(args), SHELL, {}, args.workdir, args.user)


def cmd_config(args: argparse.Namespace) -> int:
    import json

    import yaml

    from .secrets import masked

    data = _config(args).to_dict()
    if not args.show_secrets:
        data = masked(data)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(yaml.safe_dump(data, sort_keys=False, default_flow_style=False), end="")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    import json

    from .schema import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .config import CONFIG_NAME
    from .init import write_starter, write_vscode_launch

    if args.vscode and (Path.cwd() / CONFIG_NAME).exists() and not args.force and not args.template:
        # a project already set up: only the launch configuration
        say(write_vscode_launch(Path.cwd(), _config(args)))
        return 0
    made_from, written, reasons = write_starter(Path.cwd(), args.template, args.force)
    for reason in reasons:
        say(f"found {reason}")
    say(f"wrote {', '.join(written)} from {made_from}")
    if args.vscode:
        say(write_vscode_launch(Path.cwd(), _config(args)))
    say("next: check devbox.yaml, then run `devbox up`")
    return 0


def build_parser() -> argparse.ArgumentParser:
    def options(default: object, short_file: bool = True) -> argparse.ArgumentParser:
        # -f and --debug work before and after the verb; after it, SUPPRESS keeps a value given before
        parent = argparse.ArgumentParser(add_help=False)
        parent.add_argument(*(["-f"] if short_file else []), "--file",
                            default=default if default is argparse.SUPPRESS else None,
                            help="the devbox.yaml to use (default: look up from the current folder)")
        parent.add_argument("--debug", action="store_true", default=default if default is argparse.SUPPRESS else False,
                            help="show tracebacks")
        return parent

    common = options(argparse.SUPPRESS)
    parser = argparse.ArgumentParser(prog="devbox", parents=[options(None)],
                                     description="Run a web app's dev server in a container; reload it on save.")
    parser.add_argument("--version", action="version", version=f"devbox {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    up = verbs.add_parser("up", parents=[common], help="start, watch, reload; foreground")
    up.add_argument("--recreate", action="store_true", help="recreate the container even if its config is unchanged")
    up.add_argument("--build", action="store_true", help="build the image (`build:`) even if its inputs did not change")
    up.add_argument("--debugger", action="store_true", help="let a debug client attach for this run (`debugger: true`)")
    up.set_defaults(func=cmd_up)

    down = verbs.add_parser("down", parents=[common], help="stop and remove the container")
    down.add_argument("--volumes", action="store_true", help="also remove the project's named volumes")
    down.set_defaults(func=cmd_down)

    restart = verbs.add_parser("restart", parents=[common], help="restart the server of a running `devbox up`")
    restart.set_defaults(func=cmd_restart)
    rebuild = verbs.add_parser("rebuild", parents=[common],
                               help="rebuild the image of a running `devbox up` and serve from the new container")
    rebuild.set_defaults(func=cmd_rebuild)

    status = verbs.add_parser("status", parents=[common], help="container, server, URLs, Compose services")
    status.add_argument("--json", action="store_true", help="one JSON object (its shape is in the README)")
    status.set_defaults(func=cmd_status)

    doctor = verbs.add_parser("doctor", parents=[common], help="check Docker, watching, Compose, ports, the image")
    doctor.set_defaults(func=cmd_doctor)

    # `logs -f` follows, as `docker logs -f` does; the file is then named with --file
    logs = verbs.add_parser("logs", parents=[options(argparse.SUPPRESS, short_file=False)],
                            help="the server's output, kept across restarts")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new output (Ctrl-C ends)")
    logs.add_argument("-n", "--lines", type=int, metavar="N", help="only the last N lines")
    logs.add_argument("-t", "--timestamps", action="store_true", help="show each line's time (UTC)")
    logs.set_defaults(func=cmd_logs)

    inside = argparse.ArgumentParser(add_help=False)  # where and as whom, for exec and shell
    inside.add_argument("-w", "--workdir", help="the folder to run in (default: `workdir`)")
    inside.add_argument("-u", "--user", help="the user to run as (default: the image's)")

    exec_ = verbs.add_parser("exec", parents=[common, inside], help="run a command in the container (the server's env)")
    exec_.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VAL", help="set a variable")
    exec_.add_argument("command", nargs=argparse.REMAINDER, help="the command and its arguments")
    exec_.set_defaults(func=cmd_exec)

    shell = verbs.add_parser("shell", parents=[common, inside], help="an interactive shell in the container (bash, else sh)")
    shell.set_defaults(func=cmd_shell)

    config = verbs.add_parser("config", parents=[common], help="print the resolved config, or its errors")
    config.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    config.add_argument("--show-secrets", action="store_true",
                        help="print values whose names say they are secret (masked by default)")
    config.set_defaults(func=cmd_config)

    schema = verbs.add_parser("schema", parents=[common], help="print the JSON Schema of devbox.yaml")
    schema.set_defaults(func=cmd_schema)

    from .init import TEMPLATES

    init = verbs.add_parser("init", parents=[common], help="write a devbox.yaml from what the project says")
    init.add_argument("--template", choices=TEMPLATES,
                      help="write a shipped template instead of reading the project")
    init.add_argument("--force", action="store_true", help="overwrite an existing devbox.yaml")
    init.add_argument("--vscode", action="store_true",
                      help="add the debugger's attach configuration to .vscode/launch.json (merged)")
    init.set_defaults(func=cmd_init)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        if args.debug:
            traceback.print_exc()
        for problem in e.problems:
            say(str(problem))
        return e.exit_code
    except DevboxError as e:
        if args.debug:
            traceback.print_exc()
        for line in render(e):
            say(line)
        return e.exit_code
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    except BrokenPipeError:
        # the reader went away (`devbox logs | head -1`): end quietly with 0, as `cat` does; what is
        # still buffered for stdout goes nowhere rather than failing again at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:  # a bug or an unexpected Docker failure: still one line unless --debug
        if args.debug:
            traceback.print_exc()
        say(f"unexpected {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
            "(run again with --debug for the traceback)")
        return 1
    finally:
        output.flush()

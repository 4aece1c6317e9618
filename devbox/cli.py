"""The `devbox` command: parse arguments, run a verb, and turn errors into one line and an exit code.

This is the only module that prints errors or picks exit codes (SPEC: 0 ok,
1 runtime failure, 2 bad usage or config, 130 interrupted). Tracebacks only
with --debug.
"""

from __future__ import annotations

__all__ = ["main"]

import argparse
import sys
import traceback
from typing import Sequence

from . import __version__
from .config import Config, find_config, load
from .errors import ConfigError, DevboxError


def _config(args: argparse.Namespace) -> Config:
    return load(find_config(args.file))


def cmd_up(args: argparse.Namespace) -> int:
    from .lock import UpLock
    from .prestart import Prestart

    config = _config(args)
    with UpLock(config.name):
        prestart = None if args.recreate else Prestart(f"devbox-{config.name}")

        from .container import connect  # the slow imports, while the engine starts the container
        from .supervisor import Supervisor

        return Supervisor(config, connect(), recreate=args.recreate, prestart=prestart).run()


def cmd_down(args: argparse.Namespace) -> int:
    from .container import Box, connect
    from .server import ExecLauncher
    from .supervisor import say

    config = _config(args)
    box = Box(connect(), config, say)
    container = box.find()
    if container is None:
        say(f"no container for project '{config.name}'")
    elif container.status == "running":
        # end the server tree the Django way first, so it can clean up, before the container goes
        ExecLauncher(box.client.api, container.id, config.workdir).end_leftover(config.stop_signal, config.stop_timeout)
    box.remove(container, volumes=args.volumes)
    if container is not None or args.volumes:
        say(f"removed container devbox-{config.name}" + (" and its volumes" if args.volumes else ""))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    import json

    import yaml

    data = _config(args).to_dict()
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

    from .init import write_starter

    folder = Path.cwd()
    template, written = write_starter(folder, args.template, args.force)
    print(f"devbox: wrote {', '.join(written)} from the {template} template")
    print("next: check `image`, `ports` and `command` in devbox.yaml, then run `devbox up`")
    return 0


def build_parser() -> argparse.ArgumentParser:
    def options(default: object) -> argparse.ArgumentParser:
        # -f and --debug work before and after the verb; after it, SUPPRESS keeps a value given before
        parent = argparse.ArgumentParser(add_help=False)
        parent.add_argument("-f", "--file", default=default if default is argparse.SUPPRESS else None,
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
    up.set_defaults(func=cmd_up)

    down = verbs.add_parser("down", parents=[common], help="stop and remove the container")
    down.add_argument("--volumes", action="store_true", help="also remove the project's named volumes")
    down.set_defaults(func=cmd_down)

    config = verbs.add_parser("config", parents=[common], help="print the resolved config, or its errors")
    config.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    config.set_defaults(func=cmd_config)

    schema = verbs.add_parser("schema", parents=[common], help="print the JSON Schema of devbox.yaml")
    schema.set_defaults(func=cmd_schema)

    from .init import TEMPLATES

    init = verbs.add_parser("init", parents=[common], help="write a devbox.yaml from a template")
    init.add_argument("--template", choices=TEMPLATES, help="default: detected from the files here")
    init.add_argument("--force", action="store_true", help="overwrite an existing devbox.yaml")
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
            print(problem, file=sys.stderr)
        return e.exit_code
    except DevboxError as e:
        if args.debug:
            traceback.print_exc()
        print(f"devbox: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("devbox: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug or an unexpected Docker failure: still one line unless --debug
        if args.debug:
            traceback.print_exc()
        print(f"devbox: unexpected {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
              "(run again with --debug for the traceback)", file=sys.stderr)
        return 1

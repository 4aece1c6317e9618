"""The preloader and its client: this file runs inside the container, under the project's Python.

It is copied into the container's state folder and never imported by devbox on the host, so it uses
the standard library only and the Python 3.8 language.

    python3 preloader.py serve SOCKET PROJECT_DIR -- ARGV...
        Import what the server imported last time from outside PROJECT_DIR, then wait on SOCKET.
        For each client: fork; the child runs ARGV as `python` would. Lines for devbox on stdout
        start with `devbox-preload:` (ready, more, off, restart); anything else there is the imports'
        noise. After `off` or `restart` it takes no more starts and ends with the server it forked.
    python3 -c BOOT run SOCKET PROJECT_DIR -- ARGV...
        A cold start that records what it imports, for a preloader that has nothing recorded yet (a
        new container's): run ARGV as the child would, in this process. BOOT runs this file's text
        from the environment, since the file may not be written yet.
    python3 -I -S preloader.py client SOCKET ARGV...
        One start: hand stdin, stdout, stderr, the environment and the folder to the preloader, pass
        signals on to the child's process group, exit with the child's exit code. If there is no
        preloader, or it cannot run ARGV, become ARGV (`exec`): the cold start, in the same process.

Why a client exec at all: each start stays one `docker exec`, so the server's output stream, its
exit code and the pid record the stop path reads all work as for a cold start.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import sys

# `python -c BOOT run ...`: this file's text comes in DEVBOX_PRELOADER (named, for tracebacks)
BOOT = 'import os; exec(compile(os.environ["DEVBOX_PRELOADER"], "/.devbox/preloader.py", "exec"))'
MODULES_FILE = "preload-modules"  # next to SOCKET: the child's sys.modules, outside the project
SKIP_FILE = "preload-skip"  # modules found to start a thread or keep a file open at import
PREFIX = "devbox-preload:"
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
_HEADER = struct.Struct("!I")


# -- the client ----------------------------------------------------------------------------------

def client(sock_path: str, argv: list) -> None:
    import marshal

    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(sock_path)
        payload = marshal.dumps((argv, dict(os.environ), os.getcwd()))
        conn.sendmsg([_HEADER.pack(len(payload)), payload],
                      [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("3i", 0, 1, 2))])
        answer = _read_line(conn)
    except OSError as e:
        answer = "cold no preloader (%s)" % (e.strerror or e)
    if not answer.startswith("pid "):
        conn.close()
        _cold(argv, answer.partition(" ")[2] or "the preloader went away")
    child = int(answer.split()[1])

    def forward(signum, frame):
        try:
            os.killpg(child, signum)
        except OSError:
            pass

    for s in FORWARDED:
        signal.signal(s, forward)
    status = _read_line(conn)  # "exit N"; blocks until the child has gone (signals are passed on meanwhile)
    if not status.startswith("exit "):  # the preloader died: the child must not outlive this start
        forward(signal.SIGKILL, None)
        sys.stderr.write("devbox: the preloader went away; the server was ended\n")
        os._exit(1)
    # the child is gone; what it started in its group goes with it before this start counts as ended
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(child, 0)
        except OSError:
            break
        time.sleep(0.002)
    os._exit(int(status.split()[1]))


def _read_line(conn: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n"):
        try:
            chunk = conn.recv(256)
        except InterruptedError:
            continue
        if not chunk:
            break
        data += chunk
    return data.decode().strip()


def _cold(argv: list, why: str) -> None:
    if why:
        sys.stderr.write("devbox: preload: %s; cold start\n" % why)
        sys.stderr.flush()
    try:
        os.execvp(argv[0], argv)
    except OSError as e:
        sys.stderr.write("devbox: cannot run %s: %s\n" % (argv[0], e.strerror))
        os._exit(127)


# -- what to run, as `python` would --------------------------------------------------------------

class Target:
    """What the child runs: a script by path, or a module by name (`-m`)."""

    def __init__(self, interpreter: str, script: str = "", module: str = "", argv0: str = ""):
        self.interpreter, self.script, self.module, self.argv0 = interpreter, script, module, argv0


def resolve(argv: list) -> Target:
    """ARGV as a Python program (`python[3[.x]] [opts] script|-m module ...`, or a script whose first
    line names a Python); ValueError saying why not."""
    import re
    import shutil

    first = argv[0]
    if re.fullmatch(r"python(\d+(\.\d+)?)?", os.path.basename(first)):
        interpreter = shutil.which(first)
        if interpreter is None:
            raise ValueError("%s is not on PATH" % first)
        rest = argv[1:]
        while rest and rest[0] in ("-u", "-B"):  # what PYTHONUNBUFFERED / no bytecode mean here anyway
            rest = rest[1:]
        if rest[:1] == ["-m"] and len(rest) > 1:
            return Target(interpreter, module=rest[1])
        if rest and not rest[0].startswith("-"):
            return Target(interpreter, script=rest[0], argv0=rest[0])  # as given: python keeps it so
        raise ValueError("python options %s are not supported" % " ".join(rest[:1]) or "nothing to run")
    path = shutil.which(first)
    if path is None:
        raise ValueError("%s is not on PATH" % first)
    with open(path, "rb") as f:
        line = f.readline(256)
    if not line.startswith(b"#!") or b"python" not in line:
        raise ValueError("%s is not a Python program" % first)
    words = line[2:].decode().split()
    interpreter = shutil.which(words[1]) if os.path.basename(words[0]) == "env" and len(words) > 1 else words[0]
    if interpreter is None:
        raise ValueError("the interpreter of %s is not on PATH" % first)
    return Target(interpreter, script=path, argv0=first)


# -- the preloader -------------------------------------------------------------------------------

class Retire(Exception):
    """This preloader must not fork again: a module it imported started a thread or kept a file open
    (a new preloader leaves it out), or `off`: preloading cannot work for this project."""

    def __init__(self, why: str, off: bool = False):
        super().__init__(why)
        self.kind = "off" if off else "restart"


class Preloader:
    def __init__(self, sock_path: str, project: str, argv: list, target: Target):
        self.sock_path, self.project, self.argv, self.target = sock_path, project.rstrip("/") + "/", argv, target
        state = os.path.dirname(sock_path)
        self.modules_file = os.path.join(state, MODULES_FILE)
        self.skip_file = os.path.join(state, SKIP_FILE)
        self.modules_seen = None  # (mtime, size) of the modules file when last read
        self.failed = set()  # names that did not import here: not tried again
        self.files = {}  # path -> (mtime, size) of every preloaded module's file, to notice a change
        self.children = {}  # pid -> the client's connection
        self.ended = []  # children reaped since the last fork: their groups may still hold members
        self.stale = ""  # why this preloader must not fork again (a preloaded file changed)
        self.sys_path = list(sys.path)  # as the child must see it; sys.path[0] is set per start

    # imports

    def project_file(self, path: str) -> bool:
        return os.path.abspath(path).startswith(self.project)

    def preload(self) -> int:
        """Import the recorded modules not imported yet; the number imported."""
        import importlib

        try:
            st = os.stat(self.modules_file)
        except OSError:
            return 0
        if self.modules_seen == (st.st_mtime, st.st_size):
            return 0
        self.modules_seen = (st.st_mtime, st.st_size)
        with open(self.modules_file) as f:
            names = [n.strip() for n in f if n.strip()]
        skip = set()
        if os.path.exists(self.skip_file):
            with open(self.skip_file) as f:
                skip = {n.strip() for n in f}
        # the project is not importable while preloading: a module that reaches for project code
        # (Django's settings, say) fails here and is left to the child
        sys.path[:] = [p for p in self.sys_path[1:] if not self.project_file(p or ".")]
        count = 0
        try:
            for name in names:
                if name in sys.modules or name in self.failed or name in skip:
                    continue
                threads, fds = _threads(), _fds()
                try:
                    importlib.import_module(name)
                except BaseException:  # SystemExit and KeyboardInterrupt from an import, too
                    self.failed.add(name)
                    continue
                count += 1
                trap = ("started a thread" if _threads() > threads else
                        "kept a file or socket open" if _fds() - fds else "")
                if trap:  # this process is no longer safe to fork from
                    with open(self.skip_file, "a") as f:
                        f.write(name + "\n")
                    raise Retire("%s %s at import" % (name, trap))
        finally:
            sys.path[:] = self.sys_path
        for name, module in list(sys.modules.items()):
            path = getattr(module, "__file__", None) or ""
            if path and self.project_file(path):  # reached despite the above: never serve it stale
                raise Retire("preloading imported the project's own %s" % name, off=True)
            if path and path not in self.files:
                self.files[path] = _stamp(path)
        return count

    def changed_file(self) -> str:
        for path, stamp in self.files.items():
            if _stamp(path) != stamp:
                return path
        return ""

    # serving

    def serve(self) -> tuple:
        """Accept starts until stdin closes (devbox let go), then end with the last child; in a forked
        child, return what to run."""
        import gc
        import select
        import time

        began = time.monotonic()
        try:
            self.preload()
        except Retire as e:  # nothing forked yet: simply end (devbox starts a new one without that module)
            say(e.kind, str(e))
            sys.exit(1)
        gc.collect()
        gc.freeze()  # what is preloaded stays shared with the children instead of being copied
        try:
            os.unlink(self.sock_path)
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.sock_path)
        listener.listen(4)
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda s, f: None)  # wakes select() through the wakeup fd
        say("ready", "%d %.0f %s" % (len(sys.modules), 1000 * (time.monotonic() - began), sys.executable))
        last_look = time.monotonic()
        accepting = True

        def retire(why: str, kind: str = "restart") -> None:
            # take no more starts; a server forked already runs on until it is stopped as usual
            nonlocal accepting
            if why:
                say(kind, why)  # devbox starts a new preloader now, beside this one (or leaves it off)
            accepting = False
            listener.close()

        while True:
            waits = [wake_r, *self.children.values()] + ([listener, sys.stdin] if accepting else [])
            readable, _, _ = select.select(waits, [], [], 1.0)
            if wake_r in readable:
                os.read(wake_r, 4096)
            self.reap()
            for pid, conn in list(self.children.items()):
                if conn in readable and not conn.recv(1):  # the client was killed: end its child now
                    _killpg(pid, signal.SIGKILL)
            if accepting and sys.stdin in readable and not os.read(sys.stdin.fileno(), 4096):
                retire("")  # devbox let go of this preloader: a newer one replaces it, or devbox went away
            if not accepting:
                if not self.children:
                    return ()
                continue
            if listener in readable:
                conn, _ = listener.accept()
                job = self.start(conn)
                if job:
                    listener.close()
                    os.close(wake_r)
                    os.close(wake_w)
                    return job
                if self.stale:
                    retire(self.stale)
                    continue
            if time.monotonic() - last_look > 1.0:  # between starts: take in what the child recorded
                last_look = time.monotonic()
                changed = self.changed_file()
                if changed:
                    retire("%s changed" % changed)
                    continue
                gc.unfreeze()
                try:
                    if self.preload():
                        say("more", "%d" % len(sys.modules))
                except Retire as e:
                    retire(str(e), e.kind)
                gc.freeze()

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            self.ended.append(pid)
            if conn is not None:
                code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
                try:
                    conn.sendall(b"exit %d\n" % code)
                except OSError:
                    pass
                conn.close()

    def wait_children(self) -> None:
        """Only then the next fork: the stop path has ended the previous tree, but a client killed
        with SIGKILL cannot wait for its child's group, so make sure here (bounded)."""
        import time

        deadline = time.monotonic() + 10
        while self.children or any(_group_alive(pid) for pid in self.ended):
            for pid in list(self.children) + self.ended:
                _killpg(pid, signal.SIGKILL)
            self.reap()
            if time.monotonic() > deadline:
                break
            time.sleep(0.002)
        self.ended = []

    def start(self, conn: socket.socket) -> tuple:
        """Fork a child for one client; in the child, return (target, argv, env, cwd)."""
        import marshal

        fds = []
        try:
            msg, ancdata, _, _ = conn.recvmsg(65536, socket.CMSG_SPACE(3 * 4))
            for level, kind, data in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.extend(struct.unpack("%di" % (len(data) // 4), data[:len(data) // 4 * 4]))
            (size,) = _HEADER.unpack(msg[:4])
            payload = msg[4:]
            while len(payload) < size:
                more = conn.recv(size - len(payload))
                if not more:
                    raise OSError("the client went away")
                payload += more
            argv, env, cwd = marshal.loads(payload)
            why = self.refusal(argv, fds)
        except (OSError, ValueError, EOFError, TypeError) as e:
            why = "a bad request (%s)" % e
        if why:
            for fd in fds:
                os.close(fd)
            _send(conn, "cold " + why)
            conn.close()
            return ()
        self.wait_children()
        pid = os.fork()
        if pid == 0:
            for other in self.children.values():
                other.close()
            os.setsid()  # a group of its own: the stop path signals it as a whole
            for i, fd in enumerate(fds):
                os.dup2(fd, i)
            for fd in fds:
                if fd > 2:
                    os.close(fd)
            conn.close()
            return (argv, env, cwd)
        for fd in fds:
            os.close(fd)
        self.children[pid] = conn
        _send(conn, "pid %d" % pid)
        return ()

    def refusal(self, argv: list, fds: list) -> str:
        """Why this start must be cold, or ""."""
        if len(fds) != 3:
            return "no standard streams were passed"
        if argv != self.argv:
            return "the command changed"
        changed = self.changed_file()
        if changed:
            self.stale = "%s changed" % changed
            return self.stale
        if _threads() != 1:
            return "a preloaded module left a thread running"
        return ""


# -- in the child ----------------------------------------------------------------------------------

def run_child(preloader: Preloader, argv: list, env: dict, cwd: str) -> None:
    """Become the server, as `python ARGV` would have started it (never returns)."""
    import io
    import runpy
    import threading

    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    target = preloader.target
    unbuffered = bool(env.get("PYTHONUNBUFFERED")) or "-u" in argv[1:3]
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):  # on the fds the client passed
        old = getattr(sys, name)
        raw = io.FileIO(fd, "r" if fd == 0 else "w", closefd=False)
        buffered = raw if unbuffered and fd > 0 else (io.BufferedReader(raw) if fd == 0 else io.BufferedWriter(raw))
        stream = io.TextIOWrapper(buffered, encoding=old.encoding, errors=old.errors,
                                  line_buffering=fd > 0 and raw.isatty(), write_through=unbuffered or fd == 2)
        setattr(sys, name, stream)
        setattr(sys, "__%s__" % name, stream)
    sys.path[:] = preloader.sys_path
    if target.module:
        sys.path[0] = os.getcwd()
        sys.argv = [target.module] + argv[argv.index(target.module) + 1:]
    else:
        script = os.path.abspath(target.script)
        sys.path[0] = os.path.dirname(script)
        # `python manage.py x`: ["manage.py", "x"]; a script run by its first line: its full path first
        at = argv.index(target.argv0)
        sys.argv = [target.script] + argv[at + 1:]
    threading.Thread(target=_record_modules, args=(preloader,), daemon=True, name="devbox-modules").start()
    if target.module:
        runpy.run_module(target.module, run_name="__main__", alter_sys=True)
    else:
        runpy.run_path(target.script, run_name="__main__")
    # returning ends the process as `python` would: non-daemon threads joined, atexit run


def _record_modules(preloader: Preloader) -> None:
    """Write the modules imported from outside the project, a few times as the server warms up."""
    import time

    written = None
    for delay in (1, 4, 15, 40):
        time.sleep(delay)
        names = [name for name, module in list(sys.modules.items())
                 if name != "__main__" and getattr(module, "__file__", None)
                 and not preloader.project_file(module.__file__)]
        if names == written:
            continue
        temporary = "%s.%d" % (preloader.modules_file, os.getpid())
        try:
            with open(temporary, "w") as f:
                f.write("\n".join(names) + "\n")
            os.replace(temporary, preloader.modules_file)
            written = names
        except OSError:
            return


# -- small things ------------------------------------------------------------------------------------

def say(kind: str, text: str) -> None:
    sys.stdout.write("%s %s %s\n" % (PREFIX, kind, text))
    sys.stdout.flush()


def _send(conn: socket.socket, line: str) -> None:
    try:
        conn.sendall(line.encode() + b"\n")
    except OSError:
        pass


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except OSError:
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except OSError:
        return False


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))  # native threads too, not only Python's
    except OSError:
        import threading

        return threading.active_count()


def _fds() -> set:
    try:
        return set(os.listdir("/proc/self/fd")) - {"0", "1", "2"}
    except OSError:
        return set()


def _stamp(path: str) -> tuple:
    try:
        st = os.stat(path)
        return (st.st_mtime_ns, st.st_size)
    except OSError:
        return (0, 0)


def main() -> None:
    mode, sock_path = sys.argv[1], sys.argv[2]
    if mode == "client":
        client(sock_path, sys.argv[3:])
        return
    project, argv = sys.argv[3], sys.argv[5:]

    def cannot(why: str) -> None:
        if mode == "run":
            for name in ("DEVBOX_PRELOADER", "DEVBOX_PRELOAD_REEXEC"):
                os.environ.pop(name, None)
            _cold(argv, "")  # silently: the preloader, started beside this run, says why to devbox
        say("off", why)
        sys.exit(1)

    try:
        target = resolve(argv)
    except (ValueError, OSError) as e:
        cannot(str(e))
    if os.path.realpath(target.interpreter) != os.path.realpath(sys.executable):
        if os.environ.get("DEVBOX_PRELOAD_REEXEC"):
            cannot("%s runs under %s, not %s" % (argv[0], target.interpreter, sys.executable))
        os.environ["DEVBOX_PRELOAD_REEXEC"] = "1"
        own = sys.argv if mode == "serve" else ["-c", BOOT, *sys.argv[1:]]  # run: sys.argv[0] is "-c"
        os.execv(target.interpreter, [target.interpreter, *own])
    os.environ.pop("DEVBOX_PRELOAD_REEXEC", None)
    preloader = Preloader(sock_path, project, argv, target)
    if mode == "run":
        os.environ.pop("DEVBOX_PRELOADER", None)  # 20 KB the server has no use for
        run_child(preloader, argv, dict(os.environ), os.getcwd())
        return
    job = preloader.serve()
    if job:
        run_child(preloader, *job)


if __name__ == "__main__":
    main()

"""The browser front (`browser:`): devbox answers on the first published port and forwards to the
server, which the container publishes on a loopback port of its own.

- hold: a request that comes while a restart is under way (or that finds nothing listening yet:
  Docker's userland proxy accepts and closes while nothing listens) waits for the new server, up to
  `ready.timeout`, and is then forwarded, its body kept. A crashed server gets a small page with
  its last lines, which reloads itself once a fix is served.
- reload: HTML pages (whole answers, not streams) get a small script. One EventSource per browser (a
  SharedWorker holds it for every tab) tells the pages when a new server passed its ready check;
  a page served by an older server reloads then, once. The event stream is devbox's own, so it never
  holds up the server's shutdown. A stylesheet matched by an `action: none` rule is swapped in place.
- Everything else passes through as it comes: status, headers, bodies byte for byte (compressed ones
  too), streams (chunked, server-sent events) as they are produced, WebSocket upgrades.

Why aiohttp: an asyncio HTTP server and client with WebSockets, streaming both ways and keep-alive
pools, well kept and widely used; a proxy hand-written on http.server would get HTTP's corners wrong.
It runs on a thread of its own; the loop tells it what happens (restarting, ready, crashed).
"""

from __future__ import annotations

__all__ = ["BrowserFront", "INJECTED_PATH"]

import asyncio
import html
import json
import os
import re
import threading
import time
import zlib
from typing import Callable

from . import output
from .errors import PortInUse

PREFIX = "/__devbox/"
INJECTED_PATH = PREFIX + "client.js"
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
              "transfer-encoding", "upgrade", "content-length"}
RETRY_EVERY = 0.02  # seconds between tries while the server is not listening yet
START_WAIT = 5.0  # seconds to wait for the thread's server to listen
CLIENT_JS = """(() => {
  const generation = Number(document.currentScript.dataset.generation);
  let done = false;
  const on = (m) => {
    if (done) return;
    if (m.type === "ready" && m.generation > generation) { done = true; location.reload(); }
    else if (m.type === "css") {
      for (const link of document.querySelectorAll('link[rel~="stylesheet"]')) {
        const url = new URL(link.href, location.href);
        if (m.paths.some((p) => url.pathname.endsWith("/" + p.split("/").pop()))) {
          url.searchParams.set("devbox", String(Date.now()));
          link.href = url.toString();
        }
      }
    }
  };
  if (window.SharedWorker) {
    const worker = new SharedWorker("/__devbox/worker.js");
    worker.port.onmessage = (e) => on(e.data);
    worker.port.start();
  } else {
    const events = new EventSource("/__devbox/events");
    events.onmessage = (e) => on(JSON.parse(e.data));
    addEventListener("beforeunload", () => events.close());
  }
})();
"""
WORKER_JS = """const ports = [];
const events = new EventSource("/__devbox/events");
events.onmessage = (e) => { const m = JSON.parse(e.data); for (const p of ports) p.postMessage(m); };
onconnect = (e) => { const p = e.ports[0]; ports.push(p); p.start(); };
"""
ERROR_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>devbox: the server exited</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em}}pre{{background:#f4f4f4;padding:1em;overflow:auto}}</style>
</head><body><h1>The server exited{code}</h1>
<p>devbox reloads this page when a fix is saved and the new server is ready.</p>
<pre>{lines}</pre>
{script}</body></html>
"""


class BrowserFront:
    def __init__(self, host: str, port: int, reload: bool, hold: bool, ready_timeout: float,
                 say: Callable[[str], None], config_name: str):
        self.host, self.port = host, port
        self.reload, self.hold, self.ready_timeout, self.say = reload, hold, ready_timeout, say
        self.upstream: tuple[str, int] | None = None
        self.generation = 0  # counts ready servers: a page knows which one served it
        self.crash: tuple[int | None, list[str]] | None = None  # (exit code, last lines) of a crashed server
        self.loop = asyncio.new_event_loop()
        self.ready_event: asyncio.Event | None = None
        self.listeners: set[asyncio.Queue] = set()
        self.session = None
        self.runner = None
        started = threading.Event()
        self.failure: BaseException | None = None
        threading.Thread(target=self._run, args=(started,), daemon=True, name="devbox-browser").start()
        if not started.wait(START_WAIT):
            raise PortInUse(f"browser: devbox's front did not start on {host}:{port} in {START_WAIT:g}s")
        if self.failure is not None:
            raise PortInUse(f"port {port} is already in use on this machine: stop what uses it or change `ports` "
                            f"in {config_name}") from None

    # -- what the loop tells it (any thread) -------------------------------------------------------

    def set_upstream(self, host: str, port: int) -> None:
        self.upstream = (host, port)

    def restarting(self) -> None:
        """A stop is under way: requests wait for the next server from now on."""
        self._call(self._restarting)

    def ready(self) -> None:
        """The new server passed its ready check: held requests go on; open pages reload."""
        self._call(self._ready)

    def crashed(self, code: int | None, lines: list[str]) -> None:
        self._call(lambda: self._crashed(code, lines))

    def css_changed(self, paths: list[str]) -> None:
        self._call(lambda: self._publish({"type": "css", "paths": paths}))

    def close(self) -> None:
        if self.loop.is_closed():
            return
        future = asyncio.run_coroutine_threadsafe(self._close(), self.loop)
        try:
            future.result(5)
        except Exception:
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)

    def _call(self, action: Callable[[], None]) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(action)

    # -- in the front's thread -------------------------------------------------------------------

    def _run(self, started: threading.Event) -> None:
        from aiohttp import web

        asyncio.set_event_loop(self.loop)
        self.ready_event = asyncio.Event()
        app = web.Application(client_max_size=1 << 40, handler_args={"max_field_size": 65536})
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        try:
            self.loop.run_until_complete(self.runner.setup())
            site = web.TCPSite(self.runner, self.host, self.port, reuse_address=True)
            self.loop.run_until_complete(site.start())
        except OSError as e:
            self.failure = e
            started.set()
            return
        started.set()
        self.loop.run_forever()
        self.loop.close()

    async def _close(self) -> None:
        for queue in list(self.listeners):
            queue.put_nowait(None)
        if self.session is not None:
            await self.session.close()
        if self.runner is not None:
            await self.runner.cleanup()

    def _restarting(self) -> None:
        self.ready_event.clear()

    def _ready(self) -> None:
        self.crash = None
        self.generation += 1
        self.ready_event.set()
        self._publish({"type": "ready", "generation": self.generation})

    def _crashed(self, code: int | None, lines: list[str]) -> None:
        self.crash = (code, lines)
        self.ready_event.set()  # held requests get the error page now
        self._publish({"type": "crashed"})

    def _publish(self, message: dict) -> None:
        for queue in list(self.listeners):
            queue.put_nowait(message)

    def _client(self):
        import aiohttp

        if self.session is None:
            self.session = aiohttp.ClientSession(
                auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None, sock_connect=2),
                connector=aiohttp.TCPConnector(limit=0, force_close=False))
        return self.session

    async def _handle(self, request):
        from aiohttp import web

        try:
            return await self._route(request)
        except ConnectionError as e:
            # the browser went away mid-request (it cancels requests on every navigation): nothing for the
            # terminal; aiohttp drops the answer to a closed connection by itself
            if os.environ.get("DEVBOX_TRACE") == "1":
                output.say(f"trace: browser: a client left during {request.method} {request.path} "
                           f"({type(e).__name__})")
            return web.Response(status=499)

    async def _route(self, request):
        from aiohttp import web

        path = request.path
        if path.startswith(PREFIX):
            if path == INJECTED_PATH:
                return web.Response(text=CLIENT_JS, content_type="application/javascript",
                                    headers={"Cache-Control": "no-store"})
            if path == PREFIX + "worker.js":
                return web.Response(text=WORKER_JS, content_type="application/javascript",
                                    headers={"Cache-Control": "no-store"})
            if path == PREFIX + "events":
                return await self._events(request)
            if path == PREFIX + "status":  # how many event streams are open: one per browser
                return web.json_response({"generation": self.generation, "streams": len(self.listeners)})
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request)
        return await self._forward(request)

    async def _events(self, request):
        from aiohttp import web

        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
        await response.prepare(request)
        queue: asyncio.Queue = asyncio.Queue()
        self.listeners.add(queue)
        try:
            if self.ready_event.is_set() and self.crash is None:  # a page that missed the ready event sees it now
                await response.write(b"data: " + json.dumps({"type": "ready", "generation": self.generation}).encode()
                                     + b"\n\n")
            while True:
                try:
                    message = await asyncio.wait_for(queue.get(), 15)
                except asyncio.TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                if message is None:
                    break
                await response.write(b"data: " + json.dumps(message).encode() + b"\n\n")
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.listeners.discard(queue)
        return response

    async def _wait_for_server(self, deadline: float) -> bool:
        """Until the server is ready (or crashed); False when `deadline` passed first."""
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        try:
            await asyncio.wait_for(self.ready_event.wait(), left)
            return True
        except asyncio.TimeoutError:
            return False

    async def _forward(self, request):
        import aiohttp

        body = await request.read()  # kept: a request may go out again if nothing listened
        deadline = time.monotonic() + self.ready_timeout
        headers = _request_headers(request, self.reload)
        while True:
            if self.hold and not await self._wait_for_server(deadline):
                return _not_ready(self.ready_timeout)
            if self.crash is not None:
                return self._error_page()
            upstream = self.upstream
            if upstream is None:  # no container yet
                if time.monotonic() > deadline:
                    return _not_ready(self.ready_timeout)
                await asyncio.sleep(RETRY_EVERY)
                continue
            url = f"http://{upstream[0]}:{upstream[1]}{request.raw_path}"
            try:
                answer = await self._client().request(request.method, url, headers=headers, data=body or None,
                                                      allow_redirects=False)
            except (aiohttp.ClientConnectionError, asyncio.TimeoutError):
                # nothing listens (yet): a restart devbox has not seen begin, or the proxy's accept-and-close
                if not self.hold or time.monotonic() > deadline:
                    return _not_ready(self.ready_timeout)
                await asyncio.sleep(RETRY_EVERY)
                continue
            try:
                return await self._respond(request, answer)
            finally:
                answer.release()

    async def _respond(self, request, answer):
        from aiohttp import web

        headers = _response_headers(answer.headers)
        encoding = answer.headers.get("Content-Encoding", "").lower()
        if (self.reload and request.method != "HEAD" and answer.content_type == "text/html"
                and answer.headers.get("Content-Length") is not None and encoding in ("", "identity", "gzip", "deflate")):
            raw = await answer.read()
            page = _inject(_decoded(raw, encoding), self.generation)
            headers.popall("Content-Encoding", None)
            return web.Response(status=answer.status, reason=answer.reason, headers=headers, body=page)
        response = web.StreamResponse(status=answer.status, reason=answer.reason, headers=headers)
        length = answer.headers.get("Content-Length")
        if length is not None:
            response.content_length = int(length)
        elif request.version >= (1, 1) and answer.status not in (204, 304) and request.method != "HEAD":
            response.enable_chunked_encoding()
        await response.prepare(request)
        async for chunk in answer.content.iter_any():  # as the server produces it
            await response.write(chunk)
        await response.write_eof()
        return response

    def _error_page(self):
        from aiohttp import web

        code, lines = self.crash or (None, [])
        page = ERROR_PAGE.format(code=f" with code {code}" if code is not None else "",
                                 lines=html.escape("\n".join(lines)), script=_script(self.generation))
        return web.Response(status=503, text=page, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def _websocket(self, request):
        import aiohttp
        from aiohttp import web

        deadline = time.monotonic() + self.ready_timeout
        protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in HOP_BY_HOP | {"host", "sec-websocket-key", "sec-websocket-version",
                                                     "sec-websocket-extensions", "sec-websocket-protocol"}}
        while True:
            if self.hold and not await self._wait_for_server(deadline):
                return _not_ready(self.ready_timeout)
            upstream = self.upstream
            try:
                if upstream is None:
                    raise aiohttp.ClientConnectionError("no server yet")
                far = await self._client().ws_connect(f"http://{upstream[0]}:{upstream[1]}{request.raw_path}",
                                                      protocols=protocols, headers=headers, autoping=False)
                break
            except (aiohttp.ClientConnectionError, aiohttp.WSServerHandshakeError, asyncio.TimeoutError):
                if time.monotonic() > deadline:
                    return _not_ready(self.ready_timeout)
                await asyncio.sleep(RETRY_EVERY)
        near = web.WebSocketResponse(protocols=[far.protocol] if far.protocol else (), autoping=False)
        await near.prepare(request)

        async def pump(source, sink) -> None:
            async for message in source:
                if message.type == aiohttp.WSMsgType.TEXT:
                    await sink.send_str(message.data)
                elif message.type == aiohttp.WSMsgType.BINARY:
                    await sink.send_bytes(message.data)
                elif message.type == aiohttp.WSMsgType.PING:
                    await sink.ping(message.data)
                elif message.type == aiohttp.WSMsgType.PONG:
                    await sink.pong(message.data)
                else:
                    break
            await sink.close()

        await asyncio.gather(pump(near, far), pump(far, near), return_exceptions=True)
        return near


def _request_headers(request, reload: bool):
    """The request's headers as the server should get them (repeated ones kept, Host included)."""
    from multidict import CIMultiDict

    headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP)
    if reload and "text/html" in request.headers.get("Accept", ""):
        # a page may get the script: ask only for what devbox can decode (browsers also ask for br, zstd)
        headers.popall("Accept-Encoding", None)
        headers["Accept-Encoding"] = "gzip, deflate"
    return headers


def _response_headers(headers):
    from multidict import CIMultiDict

    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in HOP_BY_HOP)


def _decoded(raw: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return zlib.decompress(raw, 16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        try:
            return zlib.decompress(raw)
        except zlib.error:
            return zlib.decompress(raw, -zlib.MAX_WBITS)  # raw deflate, as some servers send it
    return raw


def _script(generation: int) -> str:
    return f'<script src="{INJECTED_PATH}" data-generation="{generation}"></script>'


_BODY_END = re.compile(rb"</body\s*>", re.IGNORECASE)


def _inject(page: bytes, generation: int) -> bytes:
    """The script before the last </body>, or at the end."""
    script = _script(generation).encode()
    ends = list(_BODY_END.finditer(page))
    if not ends:
        return page + script
    at = ends[-1].start()
    return page[:at] + script + page[at:]


def _not_ready(timeout: float):
    from aiohttp import web

    return web.Response(status=503, text=f"devbox: the server was not ready in {timeout:g}s\n",
                        headers={"Retry-After": "1"})

"""The local control API: HTTP+JSON on a Unix socket.

A Unix socket rather than a TCP port: nothing on the site LAN can reach it, and access
is plain file permissions (mode 0660, group from ``control.group``), so "who may stop a
charging session" is answered by group membership on the box, not by a password that
would have to live somewhere.

Other parts extend it with one line each, before ``start()``::

    control.add_route("POST", "/authorize", uplink.handle_authorize)
    control.add_status_section("uplink", uplink.status)

A handler takes the aiohttp request and returns either a response or anything JSON can
encode; it raises ``ControlError(status, message)`` for a client-facing error. Every
error leaves as ``{"error": "..."}`` with a matching status, so the CLI can print it.
"""

from __future__ import annotations

import errno
import grp
import inspect
import json
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

log = logging.getLogger("evsite.control")

Handler = Callable[[web.Request], Awaitable[Any]]

#: sun_path is 108 bytes on Linux, including the terminating NUL
MAX_SOCKET_PATH = 107


class ControlError(Exception):
    """An error a handler reports to the client (not a bug): status + message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ControlSocketError(RuntimeError):
    """The control socket cannot be created where the config says."""


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object, or a 400 naming what is wrong with it."""
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ControlError(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ControlError(400, f"request body must be a JSON object, got {type(body).__name__}")
    return body


class ControlServer:
    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        *,
        status: Callable[[], dict[str, Any]] | None = None,
        group: str = "",
        mode: int = 0o660,
    ) -> None:
        self.path = Path(socket_path)
        self.group = group
        self.mode = mode
        self._status = status or (lambda: {})
        self._sections: dict[str, Callable[[], Any]] = {}
        self._routes: dict[tuple[str, str], Handler] = {}
        self._runner: web.AppRunner | None = None
        self.add_route("GET", "/status", self._get_status)
        self.add_route("GET", "/", self._get_index)

    # -- extension points --
    def add_route(self, method: str, path: str, handler: Handler) -> None:
        """Serve ``method path`` with ``handler``. Must be called before ``start()``."""
        if self._runner is not None:
            raise RuntimeError(f"control API already started: cannot add {method} {path}")
        key = (method.upper(), path)
        if key in self._routes and path not in ("/", "/status"):
            raise ValueError(f"control route {method.upper()} {path} is already taken")
        self._routes[key] = handler

    def add_status_section(self, name: str, provider: Callable[[], Any]) -> None:
        """Add ``name: provider()`` to every ``GET /status`` answer."""
        if name in self._sections:
            raise ValueError(f"status section {name!r} is already taken")
        self._sections[name] = provider

    # -- built-in routes --
    async def _get_status(self, request: web.Request) -> dict[str, Any]:
        out = dict(self._status())
        for name, provider in self._sections.items():
            value = provider()
            out[name] = await value if inspect.isawaitable(value) else value
        return out

    async def _get_index(self, request: web.Request) -> dict[str, Any]:
        return {"routes": sorted(f"{m} {p}" for m, p in self._routes)}

    def _wrap(self, handler: Handler) -> Handler:
        async def endpoint(request: web.Request) -> web.StreamResponse:
            try:
                result = await handler(request)
            except ControlError as exc:
                return web.json_response({"error": exc.message}, status=exc.status)
            except web.HTTPException:
                raise
            except Exception as exc:
                log.exception("control API %s %s failed", request.method, request.path)
                return web.json_response({"error": f"internal error: {type(exc).__name__}: {exc}"}, status=500)
            if isinstance(result, web.StreamResponse):
                return result
            return web.json_response(result)

        return endpoint

    # -- lifecycle --
    async def start(self) -> None:
        app = web.Application(middlewares=[_json_errors])
        for (method, path), handler in sorted(self._routes.items()):
            app.router.add_route(method, path, self._wrap(handler))
        sock = self._bind()
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.SockSite(runner, sock).start()
        except BaseException:
            await runner.cleanup()
            sock.close()
            raise
        self._runner = runner
        log.info("control API listening on %s", self.path)

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _bind(self) -> socket.socket:
        path = str(self.path)
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            raise ControlSocketError(f"control socket path {path} is too long ({len(path)} > {MAX_SOCKET_PATH} bytes)")
        gid = self._gid()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ControlSocketError(f"cannot create {self.path.parent} for the control socket: {exc.strerror}") from None
        self._remove_stale(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # no window in which the socket is open to everyone
        try:
            sock.bind(path)
        except OSError as exc:
            sock.close()
            raise ControlSocketError(f"cannot bind control socket {path}: {exc.strerror}") from None
        finally:
            os.umask(old)
        try:
            os.chmod(path, self.mode)
            if gid is not None:
                os.chown(path, -1, gid)
        except OSError as exc:
            sock.close()
            os.unlink(path)
            raise ControlSocketError(f"cannot set owner/mode of control socket {path}: {exc.strerror}") from None
        return sock

    def _gid(self) -> int | None:
        if not self.group:
            return None
        try:
            return grp.getgrnam(self.group).gr_gid
        except KeyError:
            raise ControlSocketError(f"control.group {self.group!r}: no such group on this system") from None

    @staticmethod
    def _remove_stale(path: str) -> None:
        """A socket file left by a killed agent is removed; one that answers means
        another agent is running, and anything that is not a socket is not ours."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise ControlSocketError(f"{path} exists and is not a socket; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(0.5)
        try:
            probe.connect(path)
        except OSError as exc:
            if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
                raise ControlSocketError(f"cannot check existing control socket {path}: {exc.strerror}") from None
        else:
            raise ControlSocketError(f"another evsite agent is already listening on {path}")
        finally:
            probe.close()
        os.unlink(path)


@web.middleware
async def _json_errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """404/405 from the router as JSON too, naming what exists."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = f"{request.method} {request.path}: {exc.reason}"
        if exc.status == 404:
            message += " (GET / lists the routes)"
        return web.json_response({"error": message}, status=exc.status)

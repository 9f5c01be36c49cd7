"""Client side of the control API, for ``evsite status`` and friends.

Its job beyond HTTP is to turn "it did not work" into the reason an installer can act
on: no socket (agent not running), a socket nobody answers (agent died and left it),
permission denied (not in the control group), or the agent's own error message.
"""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path
from typing import Any

import aiohttp


class AgentUnreachable(Exception):
    """The agent could not be asked at all."""


class ControlAPIError(Exception):
    """The agent answered with an error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"agent answered {status}: {message}")
        self.status = status
        self.message = message


def _unreachable(path: str, err: int | None, detail: str) -> AgentUnreachable:
    if err == errno.ENOENT:
        return AgentUnreachable(f"agent not running: no socket at {path}")
    if err == errno.ECONNREFUSED:
        return AgentUnreachable(f"agent not running: nothing is listening on {path} (left over from a stopped agent?)")
    if err in (errno.EACCES, errno.EPERM):
        return AgentUnreachable(f"permission denied on {path}: run as root or as a member of the control socket's group")
    return AgentUnreachable(f"cannot reach the agent on {path}: {detail}")


class ControlClient:
    def __init__(self, socket_path: str | os.PathLike[str], *, timeout: float = 5.0) -> None:
        self.path = str(socket_path)
        self.timeout = timeout

    async def request(self, method: str, path: str, json: Any = None) -> Any:
        if not Path(self.path).exists():
            raise _unreachable(self.path, errno.ENOENT, "")
        connector = aiohttp.UnixConnector(path=self.path)
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        try:
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                async with session.request(method, f"http://evsite{path}", json=json) as resp:
                    try:
                        body = await resp.json(content_type=None)
                    except ValueError:
                        body = None
                    if resp.status >= 400:
                        message = body.get("error") if isinstance(body, dict) else None
                        raise ControlAPIError(resp.status, message or resp.reason or "error")
                    if body is None:
                        raise AgentUnreachable(f"agent on {self.path} answered {method} {path} with no JSON")
                    return body
        except aiohttp.ClientConnectorError as exc:
            os_err = getattr(exc, "os_error", None)
            raise _unreachable(self.path, getattr(os_err, "errno", None), str(os_err or exc)) from None
        except (TimeoutError, asyncio.TimeoutError):
            raise AgentUnreachable(f"agent on {self.path} did not answer within {self.timeout:g} s") from None
        except aiohttp.ClientError as exc:
            raise AgentUnreachable(f"cannot reach the agent on {self.path}: {exc}") from None

    async def get(self, path: str) -> Any:
        return await self.request("GET", path)

    async def post(self, path: str, json: Any = None) -> Any:
        return await self.request("POST", path, json=json if json is not None else {})

    async def status(self) -> dict[str, Any]:
        return await self.get("/status")


def call(socket_path: str | os.PathLike[str], method: str, path: str, json: Any = None, *, timeout: float = 5.0) -> Any:
    """One request from synchronous code (the CLI)."""
    return asyncio.run(ControlClient(socket_path, timeout=timeout).request(method, path, json))

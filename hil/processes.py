"""Child processes a parent can wait on without sleeping: the rig, the CSMS, the agent.

``Child`` runs one program with its stdout and stderr going, line by line, to its own
log file and to memory, so a caller waits for the line that says "ready" (or for the
process to end) instead of sleeping. Children get their own session (a Ctrl-C at the
terminal reaches the parent only, which stops them in order) and die with their parent
(Linux PR_SET_PDEATHSIG), so a parent killed with -9 leaves nothing running behind it.

``ReadyListener`` is systemd's notify protocol from the parent's side: the agent tells
``$NOTIFY_SOCKET`` READY=1 once its store, devices, uplink and control socket are up,
exactly as it tells systemd on a gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import re
import signal
import socket
from pathlib import Path
from typing import Any

try:   # looked up now: after fork, in a parent with threads, importing is not safe
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):   # not Linux
    _prctl = None
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM when the parent dies, so a test or demo
    killed with -9 leaves no emulator or CSMS running behind it."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class ChildExited(RuntimeError):
    """A child process ended while something waited for it; the message has its last lines."""


class Child:
    """One child process; its stdout and stderr go, line by line, to its log file and to
    ``lines``, so a caller can wait for a line instead of sleeping."""

    def __init__(self, name: str, argv: list[str], log_path: Path, *, env: dict[str, str] | None = None,
                 cwd: str | Path | None = None) -> None:
        self.name, self.argv, self.log_path, self.env, self.cwd = name, argv, Path(log_path), env, cwd
        self.lines: list[str] = []
        self.starts = 0
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self, ready: str | None = None, timeout: float = 30.0) -> str | None:
        """Start the process; with ``ready`` (a regex) wait for its first matching line
        and return it."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "a", encoding="utf-8")  # noqa: SIM115 (closed by the reader)
        self.starts += 1
        log.write(f"---- {self.name} start #{self.starts}: {' '.join(self.argv)}\n")
        log.flush()
        since = len(self.lines)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, env=self.env, cwd=self.cwd, limit=1 << 20,
                start_new_session=True, preexec_fn=_die_with_parent)
        except BaseException:
            log.close()
            raise
        self._reader = asyncio.create_task(self._read(self.proc, log), name=f"{self.name} output")
        return await self.wait_line(ready, timeout, since=since) if ready else None

    async def _read(self, proc: asyncio.subprocess.Process, log: Any) -> None:
        assert proc.stdout is not None
        try:
            async for raw in proc.stdout:
                line = raw.decode(errors="replace").rstrip("\n")
                self.lines.append(line)
                log.write(line + "\n")
                log.flush()
                self._notify()
        finally:
            log.close()
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def tail(self, n: int = 15) -> str:
        return "\n  ".join(self.lines[-n:]) or "(no output)"

    async def wait_line(self, pattern: str, timeout: float = 10.0, *, since: int = 0) -> str:
        """The first line from position ``since`` matching ``pattern`` (re.search)."""
        rx = re.compile(pattern)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    changed = self._changed
                    for line in self.lines[since:]:
                        if rx.search(line):
                            return line
                    since = len(self.lines)
                    if self._reader is None or self._reader.done():
                        rc = await self.proc.wait() if self.proc else None
                        raise ChildExited(f"{self.name} exited ({rc}) before printing /{pattern}/; "
                                          f"last lines:\n  {self.tail()}")
                    await changed.wait()
        except TimeoutError:
            raise TimeoutError(f"{self.name}: no line /{pattern}/ within {timeout:g} s; last lines:\n  "
                               f"{self.tail()}") from None

    async def wait(self) -> int:
        assert self.proc is not None
        rc = await self.proc.wait()
        if self._reader is not None:
            await self._reader
        return rc

    async def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout``."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(timeout):
                    return await self.wait()
            except TimeoutError:
                self.proc.kill()
        return await self.wait()

    async def kill(self) -> int:
        """kill -9: no clean-up of any kind in the process."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.kill()
        return await self.wait()


class ReadyListener:
    """systemd's notify protocol, parent side: a datagram socket a child finds in
    ``$NOTIFY_SOCKET``; ``wait_ready(n)`` returns once READY=1 arrived n times."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.setblocking(False)
        self.ready = 0
        self.status = ""
        self._changed = asyncio.Event()
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._receive)

    def _receive(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while True:
                for line in self.sock.recv(65536).decode(errors="replace").splitlines():
                    if line == "READY=1":
                        self.ready += 1
                    elif line.startswith("STATUS="):
                        self.status = line[7:]
                self._changed.set()
                self._changed = asyncio.Event()

    async def wait_ready(self, count: int) -> None:
        while self.ready < count:
            await self._changed.wait()

    def close(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


async def start_until_ready(child: Child, listener: ReadyListener, timeout: float = 30.0) -> None:
    """Start ``child`` (a program that speaks the notify protocol to ``listener``) and
    return once it sent READY=1 for this start; ChildExited if it ended or stayed silent."""
    want = listener.ready + 1
    await child.start()
    ready = asyncio.create_task(listener.wait_ready(want))
    exited = asyncio.create_task(child.wait())
    done, _ = await asyncio.wait({ready, exited}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    for t in (ready, exited):
        t.cancel()
    await asyncio.gather(ready, exited, return_exceptions=True)
    if ready not in done:
        why = f"exited ({child.proc.returncode if child.proc else '?'})" if exited in done else \
            f"sent no READY=1 within {timeout:g} s"
        raise ChildExited(f"{child.name} {why}; last lines of {child.log_path}:\n  {child.tail()}")

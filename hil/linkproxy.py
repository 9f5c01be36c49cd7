"""A TCP relay between the agent and the CSMS that a test can break on purpose.

The CSMS process keeps running whatever the relay does, so its message log and the
transactionIds it assigned stay one continuous record across every outage; what the
agent sees is what a real network does to it: connections reset (``cut``), a link that
swallows every byte while both sockets stay open (``blackhole``: only WebSocket pings
can tell), or latency.
"""

from __future__ import annotations

import asyncio
from typing import Any


class LinkProxy:
    """A TCP relay on loopback between the agent and the CSMS.

    ``cut()`` resets every connection and refuses new ones (accepts, then resets) until
    ``restore()``; ``blackhole()`` keeps the sockets open but drops every byte in both
    directions (a half-open link: only pings can tell); ``latency`` delays every chunk.

    ``delay`` is a one-way delay as a long line has it: each chunk arrives ``delay``
    seconds after it was sent, in order, while later chunks are already on their way
    (``latency`` instead holds the relay for each chunk, so chunks queue behind one
    another). Set it back to 0 and what is already under way still arrives in order.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.mode = "up"             # up | cut | blackhole
        self.latency = 0.0
        self.delay = 0.0
        self.accepted = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._live: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> LinkProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self._reset_all()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def cut(self) -> None:
        self.mode = "cut"
        self._reset_all()

    def blackhole(self) -> None:
        self.mode = "blackhole"

    def restore(self) -> None:
        self.mode = "up"

    @property
    def connections(self) -> int:
        return len(self._live)

    def _reset_all(self) -> None:
        for a, b in list(self._live):
            a.transport.abort()
            b.transport.abort()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._relay(reader, writer), name="link proxy")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.mode == "cut":
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        pair = (writer, up_writer)
        self._live.add(pair)
        try:
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True)
        finally:
            self._live.discard(pair)
            writer.transport.abort()
            up_writer.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        late: _Delayed | None = None      # made when ``delay`` is first used on this direction
        try:
            while data := await reader.read(65536):
                if self.mode == "blackhole":
                    continue
                if self.latency > 0:
                    await asyncio.sleep(self.latency)
                if self.delay > 0 or (late is not None and late.busy):
                    late = late or _Delayed(writer)
                    late.put(data, self.delay)
                    continue
                writer.write(data)
                await writer.drain()
            if late is not None:
                await late.flush()
        finally:
            if late is not None:
                await late.close()
        if writer.can_write_eof():
            writer.write_eof()


class _Delayed:
    """Chunks due at a time, written in order by one task (LinkProxy.delay)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        self.pending = 0                  # put and not yet written
        self.idle = asyncio.Event()
        self.idle.set()
        self.task = asyncio.create_task(self._send(), name="link proxy delay")

    @property
    def busy(self) -> bool:
        return self.pending > 0

    def put(self, data: bytes, delay: float) -> None:
        self.pending += 1
        self.idle.clear()
        self.queue.put_nowait((asyncio.get_running_loop().time() + delay, data))

    async def _send(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, data = await self.queue.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            self.writer.write(data)
            await self.writer.drain()
            self.pending -= 1
            if not self.pending:
                self.idle.set()

    async def flush(self) -> None:
        """Until every chunk put so far is written (an EOF goes after them), or the
        other side is gone."""
        idle = asyncio.create_task(self.idle.wait())
        try:
            await asyncio.wait({idle, self.task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            idle.cancel()
            await asyncio.gather(idle, return_exceptions=True)

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

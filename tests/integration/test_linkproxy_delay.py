"""hil/linkproxy.py ``delay``: a one-way delay as a long line has it. Each chunk arrives
``delay`` after it was sent, while later ones are already on their way (``latency``
holds them one behind another), and nothing overtakes when the delay is switched off."""

from __future__ import annotations

import asyncio
import time

from hil.linkproxy import LinkProxy


async def arrivals(proxy: LinkProxy, chunks: list[tuple[float, bytes]], expect: int) -> list[tuple[float, bytes]]:
    """Send ``chunks`` (at their offsets) through the proxy to a server; what arrived when."""
    got: list[tuple[float, bytes]] = []
    done = asyncio.Event()
    t0 = time.monotonic()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        size = 0
        while size < expect and (data := await reader.read(65536)):
            got.append((time.monotonic() - t0, data))
            size += len(data)
        done.set()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    proxy.target = ("127.0.0.1", server.sockets[0].getsockname()[1])
    await proxy.start()
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        for at, data in chunks:
            await asyncio.sleep(max(0.0, at - (time.monotonic() - t0)))
            writer.write(data)
            await writer.drain()
            if data == b"OFF":
                proxy.delay = 0.0
        await asyncio.wait_for(done.wait(), 5)
        writer.close()
    finally:
        await proxy.close()
        server.close()
        await server.wait_closed()
    return got


async def test_delay_is_per_chunk_not_cumulative():
    proxy = LinkProxy(0)
    proxy.delay = 0.4
    got = await arrivals(proxy, [(0.0, b"A"), (0.1, b"B"), (0.2, b"C")], expect=3)
    assert b"".join(d for _, d in got) == b"ABC"
    first, last = got[0][0], got[-1][0]
    assert 0.38 <= first < 0.6
    assert 0.55 <= last < 0.8          # 0.2 + 0.4, not 3 x 0.4 as a held relay would give


async def test_switching_the_delay_off_keeps_the_order():
    proxy = LinkProxy(0)
    proxy.delay = 0.4
    got = await arrivals(proxy, [(0.0, b"one"), (0.05, b"OFF"), (0.1, b"two")], expect=9)
    assert b"".join(d for _, d in got) == b"oneOFFtwo"
    assert got[-1][0] >= 0.4           # "two" waited for what was ahead of it

"""Real Modbus servers serving register images: TCP on loopback, RTU on a pseudo-terminal.

The driver under test talks to these exactly as to hardware (pymodbus server side,
real sockets, a real tty opened with pyserial), so what passes here has crossed a real
Modbus stack. Images with the same unit id on one server are merged into one device
(CHARX: every connector is its own image at its own register stride).

RTU: a serial line has two ends with paths. pymodbus's serial server and pyserial
both open a device by path, and a pty master has none, so the line is two pty pairs
joined by a byte pump: the server opens one slave, the client opens the other (the
symlink at ``link_path``). The pump is also where a line could be cut or slowed.

Every request a server receives is logged with its monotonic arrival time
(``handle.requests``), so tests can check from the device's side how a bus was driven
(serialization, inter-request gap).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import tty
from dataclasses import dataclass
from typing import Iterable

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from hil.emulator.image import FC_TABLE, RegisterImage

TABLE_ORDER = ("coil", "discrete", "holding", "input")   # SimDevice's tuple order


@dataclass(frozen=True)
class RequestRecord:
    at: float              # time.monotonic() when the request was decoded
    unit_id: int
    function_code: int
    address: int
    count: int


def _devices(images: Iterable[RegisterImage]) -> list[SimDevice]:
    by_unit: dict[int, list[RegisterImage]] = {}
    for img in images:
        by_unit.setdefault(img.unit_id, []).append(img)
    if not by_unit:
        raise ValueError("a server needs at least one register image")
    return [_device(unit, imgs) for unit, imgs in sorted(by_unit.items())]


def _empty_tables() -> tuple[list[SimData], ...]:
    bits = [SimData(0, values=[False] * 16, datatype=DataType.BITS)]
    regs = [SimData(0, datatype=DataType.INVALID)]
    return (list(bits), list(bits), list(regs), list(regs))


def _device(unit: int, images: list[RegisterImage]) -> SimDevice:
    tables: dict[str, list[tuple[int, int, RegisterImage]]] = {t: [] for t in TABLE_ORDER}
    for img in images:
        for table, spans in img.spans().items():
            for s, e in spans:
                tables[table].append((s, e, img))
    simdata: list[list[SimData]] = []
    for table in TABLE_ORDER:
        spans = sorted(tables[table], key=lambda x: x[0])
        for (s1, e1, i1), (s2, _e2, i2) in zip(spans, spans[1:]):
            if s2 < e1:
                raise ValueError(f"unit {unit}: {i1.profile.name} and {i2.profile.name} images overlap "
                                 f"in {table} registers at {s2}")
        if not spans:
            simdata.append(_empty_tables()[TABLE_ORDER.index(table)])
        elif table in ("coil", "discrete"):
            # values as a list, count 1: pymodbus's block check is quadratic in count
            simdata.append([SimData(s, values=[False] * (e - s), datatype=DataType.BITS) for s, e, _ in spans])
        else:
            simdata.append([SimData(s, values=[0] * (e - s), datatype=DataType.REGISTERS) for s, e, _ in spans])

    async def action(fc: int, block_start: int, address: int, count: int,
                     regs: list[int], values: list[int] | list[bool] | None) -> ExcCodes | None:
        table = FC_TABLE.get(fc)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        for s, e, img in tables[table]:
            if s <= address < e:
                return await img.handle(fc, table, block_start, address, count, regs, values)
        return ExcCodes.ILLEGAL_ADDRESS

    return SimDevice(id=unit, simdata=tuple(simdata), action=action)  # type: ignore[arg-type]


class _Handle:
    """Common part of a running server: images, request log, stop/start/close."""

    def __init__(self, images: list[RegisterImage]) -> None:
        self.images = images
        self.requests: list[RequestRecord] = []
        self._devices = _devices(images)
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._closed = False

    def _trace(self, sending: bool, pdu):  # noqa: ANN001, ANN202
        """Log each request; drop (answer nothing) for unknown or silent units.

        pymodbus handles the PDU this hook returns; returning None makes the server
        ignore the request, which is what a real RS-485 device does when the unit id
        is not its own or when it is dead.
        """
        if sending:
            return pdu
        unit = int(getattr(pdu, "dev_id", 0))
        address = int(getattr(pdu, "address", 0) or 0)
        self.requests.append(RequestRecord(time.monotonic(), unit, int(pdu.function_code), address,
                                           int(getattr(pdu, "count", 0) or 0)))
        table = FC_TABLE.get(int(pdu.function_code))
        owners = [i for i in self.images if i.unit_id == unit]
        if not owners:
            return None
        addressed = [i for i in owners if table and i.owns(table, address)] or owners
        if all(i.silent for i in addressed):
            return None
        return pdu

    def image(self, unit_id: int, connector_index: int | None = None) -> RegisterImage:
        for img in self.images:
            if img.unit_id == unit_id and connector_index in (None, img.connector_index):
                return img
        raise KeyError(f"no image for unit {unit_id}")

    @property
    def running(self) -> bool:
        return self._server is not None

    async def stop(self) -> None:
        """Stop answering (a dead or unplugged device); ``start()`` brings it back."""
        if self._server is not None:
            server, self._server = self._server, None
            await server.shutdown()
            await asyncio.sleep(0)

    async def start(self) -> None:
        if self._closed:
            raise RuntimeError("server handle is closed")
        if self._server is None:
            self._server = await self._start()

    async def _start(self):  # noqa: ANN202
        raise NotImplementedError

    async def close(self) -> None:
        """Stop for good; idempotent."""
        await self.stop()
        self._closed = True

    async def __aenter__(self):  # noqa: ANN204
        return self

    async def __aexit__(self, *exc) -> None:  # noqa: ANN002
        await self.close()


class TcpServerHandle(_Handle):
    def __init__(self, images: list[RegisterImage], host: str, port: int) -> None:
        super().__init__(images)
        self.host = host
        self.port = port

    async def _start(self) -> ModbusTcpServer:
        server = ModbusTcpServer(self._devices, address=(self.host, self.port),
                                 ignore_missing_devices=True, trace_pdu=self._trace)
        await server.serve_forever(background=True)
        if self.port == 0:
            self.port = server.transport.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return server


async def serve_tcp(host: str, port: int, images: Iterable[RegisterImage]) -> TcpServerHandle:
    """A Modbus TCP server for ``images`` on ``host:port`` (port 0 picks a free one)."""
    if host not in ("127.0.0.1", "::1", "localhost"):
        raise ValueError(f"emulated devices listen on loopback only, got {host!r}")
    handle = TcpServerHandle(list(images), host, port)
    await handle.start()
    return handle


class RtuServerHandle(_Handle):
    def __init__(self, images: list[RegisterImage], link_path: str, serial: dict) -> None:
        super().__init__(images)
        self.link_path = link_path
        self._serial = serial
        # two pty pairs joined by a pump: server on one slave, client on the other
        self._m_srv, self._s_srv = os.openpty()
        self._m_cli, self._s_cli = os.openpty()
        for fd in (self._s_srv, self._s_cli):
            tty.setraw(fd)          # no echo / line discipline before pyserial opens it
        for fd in (self._m_srv, self._m_cli):
            os.set_blocking(fd, False)
        self.server_path = os.ttyname(self._s_srv)
        self.client_path = os.ttyname(self._s_cli)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(link_path)
        os.symlink(self.client_path, link_path)
        loop = asyncio.get_running_loop()
        loop.add_reader(self._m_cli, self._pump, self._m_cli, self._m_srv)
        loop.add_reader(self._m_srv, self._pump, self._m_srv, self._m_cli)
        self._pumping = True
        #: the RS-485 line is cut (a broken cable, a dead adapter): bytes are lost both ways
        self.line_cut = False

    def _pump(self, src: int, dst: int) -> None:
        try:
            data = os.read(src, 4096)
        except (BlockingIOError, OSError):
            return
        if self.line_cut:
            return
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(dst, data)

    async def _start(self) -> ModbusSerialServer:
        server = ModbusSerialServer(self._devices, framer=FramerType.RTU, port=self.server_path,
                                    ignore_missing_devices=True, trace_pdu=self._trace,
                                    reconnect_delay=0, **self._serial)
        await server.serve_forever(background=True)
        return server

    async def close(self) -> None:
        if self._closed:
            return
        await super().close()
        if self._pumping:
            loop = asyncio.get_running_loop()
            loop.remove_reader(self._m_cli)
            loop.remove_reader(self._m_srv)
            self._pumping = False
            for fd in (self._m_srv, self._s_srv, self._m_cli, self._s_cli):
                with contextlib.suppress(OSError):
                    os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                if os.path.islink(self.link_path):
                    os.unlink(self.link_path)


async def serve_rtu_pty(images: Iterable[RegisterImage], link_path: str, *, baudrate: int = 9600,
                        parity: str = "N", stopbits: int = 1, bytesize: int = 8) -> RtuServerHandle:
    """A Modbus RTU server for ``images`` on a pseudo-terminal; clients open ``link_path``.

    Line settings are accepted for realism, but a pty transfers bytes at memory speed
    whatever the baud rate and has no parity bit (``parity`` is checked, then the pty is
    opened as N; ``drivers.modbus.bus.RtuBus`` does the same for a pty path).
    """
    if parity not in ("N", "E", "O"):
        raise ValueError(f"parity must be N, E or O, got {parity!r}")
    # a pty carries no parity bit, and some kernels refuse PARENB on one: open it as N
    handle = RtuServerHandle(list(images), str(link_path),
                             {"baudrate": baudrate, "parity": "N", "stopbits": stopbits, "bytesize": bytesize})
    try:
        await handle.start()
    except BaseException:
        await handle.close()
        raise
    return handle

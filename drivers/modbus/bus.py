"""Our one wrapper over pymodbus clients: one owner per bus, the gap, timeouts, retries.

Why a wrapper: pymodbus moves its client API in minor releases (``slave=`` became
``device_id=``; reconnect and retry semantics changed more than once), so nothing else
in evsite imports its client classes, and every pymodbus failure is translated here,
at one boundary, into ``DeviceTimeout`` (no answer) or ``DeviceError`` (an answer we
cannot use, such as an exception response).

Why one owner: an RS-485 line carries one request at a time, and devices need a pause
between requests (SDM630 ~100 ms); requests from several drivers on one line must be
queued, not interleaved. A ``Bus`` holds an asyncio lock for the whole exchange and
waits out the gap, measured on the injected monotonic clock from the end of the last
exchange. Separate buses (and TCP endpoints) are separate objects and run concurrently.

Why our own retries and reconnects: a dead device must cost the poll loop a bounded
time (``timeout`` per attempt, ``retries`` extra attempts) and then raise, never hang;
and the bus must find the device again by itself when it comes back. pymodbus's own
reconnect runs as a background task that outlives its client, so it is switched off
(``reconnect_delay=0``) and we connect on demand before each exchange instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerType

from agent.clock import Clock
from drivers.contract import DeviceError, DeviceTimeout

log = logging.getLogger(__name__)

# pymodbus logs an ERROR per unanswered request and a WARNING per reconnect; a dead
# meter polled every second would flood the journal. We translate and log at this
# boundary ourselves (the poller logs a device going stale once), so quiet it unless
# someone configured that logger explicitly.
_pm_log = logging.getLogger("pymodbus.logging")
if _pm_log.level == logging.NOTSET:
    _pm_log.setLevel(logging.CRITICAL)

READ_FUNCTIONS = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
MAX_READ = {"coil": 2000, "discrete": 2000, "holding": 125, "input": 125}


def exception_name(code: int) -> str:
    try:
        return ExcCodes(code).name
    except ValueError:
        return f"UNKNOWN_EXCEPTION_{code}"


class Bus:
    """One Modbus TCP endpoint or one RS-485 line; use through its subclasses."""

    kind = "?"

    def __init__(self, name: str, clock: Clock, *, timeout: float = 1.0, retries: int = 1,
                 gap_ms: float | None = None) -> None:
        if timeout <= 0:
            raise ValueError(f"bus {name}: timeout must be > 0, got {timeout}")
        if retries < 0:
            raise ValueError(f"bus {name}: retries must be >= 0, got {retries}")
        self.name = name
        self.clock = clock
        self.timeout = float(timeout)
        self.retries = int(retries)
        #: gap from config, fixed; None = the largest gap any device on the bus requires
        self._fixed_gap = gap_ms is not None
        self.gap = (gap_ms or 0.0) / 1000.0
        self._lock = asyncio.Lock()
        self._last_done: float | None = None
        self._client: Any = None
        self._closed = False
        self.stats = {"requests": 0, "timeouts": 0, "errors": 0, "reconnects": 0}

    # -- configuration ------------------------------------------------------------------
    def require_gap(self, gap_ms: float) -> None:
        """A device on this bus needs ``gap_ms`` between requests (ignored if config fixed it)."""
        if not self._fixed_gap:
            self.gap = max(self.gap, gap_ms / 1000.0)

    def describe(self) -> str:
        raise NotImplementedError

    def _make_client(self) -> Any:
        raise NotImplementedError

    def _drop_after_timeout(self) -> bool:
        """Whether a timeout should close the connection (TCP: yes, it may be half-open)."""
        return True

    # -- the exchange ----------------------------------------------------------------------
    async def read(self, unit: int, table: str, address: int, count: int) -> list[int] | list[bool]:
        """Registers (or bits) ``address .. address+count-1`` of ``unit``."""
        if table not in READ_FUNCTIONS:
            raise ValueError(f"unknown register table {table!r}")
        if not 1 <= count <= MAX_READ[table]:
            raise ValueError(f"read of {count} from {table} exceeds the Modbus limit {MAX_READ[table]}")
        what = f"reading {table} {address}x{count}"

        async def call(client: Any) -> Any:
            fn = {
                "coil": client.read_coils, "discrete": client.read_discrete_inputs,
                "holding": client.read_holding_registers, "input": client.read_input_registers,
            }[table]
            return await fn(address, count=count, device_id=unit)

        rr = await self._exchange(unit, what, call)
        if table in ("coil", "discrete"):
            bits = list(rr.bits)[:count]
            if len(bits) < count:
                raise DeviceError(f"{self.name}: unit {unit} {what}: answer has {len(bits)} bits")
            return bits
        regs = list(rr.registers)
        if len(regs) != count:
            raise DeviceError(f"{self.name}: unit {unit} {what}: answer has {len(regs)} registers")
        return regs

    async def write(self, unit: int, table: str, address: int, values: list[int] | list[bool],
                    function: int) -> None:
        """Write ``values`` at ``address`` with Modbus function 5, 6, 15 or 16."""
        if not values:
            raise ValueError("nothing to write")
        if table == "coil":
            if function not in (5, 15) or (function == 5 and len(values) != 1):
                raise ValueError(f"function {function} cannot write {len(values)} coil(s)")
        elif table == "holding":
            if function not in (6, 16) or (function == 6 and len(values) != 1) or len(values) > 123:
                raise ValueError(f"function {function} cannot write {len(values)} register(s)")
        else:
            raise ValueError(f"{table} registers are read-only")
        what = f"writing {table} {address} (FC{function:02d})"

        async def call(client: Any) -> Any:
            if function == 5:
                return await client.write_coil(address, bool(values[0]), device_id=unit)
            if function == 15:
                return await client.write_coils(address, [bool(v) for v in values], device_id=unit)
            if function == 6:
                return await client.write_register(address, int(values[0]), device_id=unit)
            return await client.write_registers(address, [int(v) for v in values], device_id=unit)

        await self._exchange(unit, what, call)

    async def _exchange(self, unit: int, what: str, call: Any) -> Any:
        if self._closed:
            raise DeviceError(f"{self.name}: bus is closed")
        async with self._lock:
            last: str = ""
            for attempt in range(self.retries + 1):
                await self._wait_gap()
                try:
                    rr = await self._attempt(call)
                except asyncio.TimeoutError:
                    last = f"no answer within {self.timeout:g} s"
                except ModbusIOException:
                    last = f"no answer within {self.timeout:g} s"
                except ConnectionException:
                    last = f"not connected to {self.describe()}"
                except (ModbusException, OSError) as exc:
                    last = str(exc) or type(exc).__name__
                else:
                    self.stats["requests"] += 1
                    if rr.isError():
                        self.stats["errors"] += 1
                        code = getattr(rr, "exception_code", 0)
                        raise DeviceError(f"{self.name}: unit {unit} {what}: exception "
                                          f"{exception_name(code)} ({code})")
                    return rr
                finally:
                    self._last_done = self.clock.monotonic()
                self.stats["timeouts"] += 1
                if self._drop_after_timeout() or not self._connected():
                    self._drop()
            raise DeviceTimeout(f"{self.name}: unit {unit} {what}: {last} "
                                f"({self.retries + 1} attempt{'s' if self.retries else ''})")

    async def _attempt(self, call: Any) -> Any:
        # the outer bound holds even if pymodbus's own timeout misbehaves
        async with asyncio.timeout(self.timeout * 2 + 0.5):
            if not self._connected():
                await self._connect()
            return await call(self._client)

    async def _wait_gap(self) -> None:
        if self._last_done is not None and self.gap > 0:
            remaining = self.gap - (self.clock.monotonic() - self._last_done)
            if remaining > 0:
                await self.clock.sleep(remaining)

    def _connected(self) -> bool:
        return self._client is not None and bool(self._client.connected)

    async def _connect(self) -> None:
        if self._client is None:
            self._client = self._make_client()
        else:
            self.stats["reconnects"] += 1
        ok = await self._client.connect()
        if not ok:
            self._drop()
            raise ConnectionError(f"cannot connect to {self.describe()}")

    def _drop(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            client.close()

    async def close(self) -> None:
        """Close the connection; idempotent. A closed bus refuses further requests."""
        self._closed = True
        async with self._lock:
            self._drop()

    @property
    def closed(self) -> bool:
        return self._closed


class TcpBus(Bus):
    """A Modbus TCP endpoint (one connection, requests serialized on it)."""

    kind = "tcp"

    def __init__(self, name: str, clock: Clock, host: str, port: int = 502, **kw: Any) -> None:
        super().__init__(name, clock, **kw)
        if not host:
            raise ValueError(f"bus {name}: tcp needs a host")
        if not 1 <= int(port) <= 65535:
            raise ValueError(f"bus {name}: port must be 1..65535, got {port}")
        self.host = host
        self.port = int(port)

    def require_gap(self, gap_ms: float) -> None:
        """Profile gaps are RS-485 line discipline; on TCP the device (or its gateway)
        gets a gap only when the bus config sets ``gap_ms``."""

    def describe(self) -> str:
        return f"{self.host}:{self.port}"

    def _make_client(self) -> AsyncModbusTcpClient:
        return AsyncModbusTcpClient(self.host, port=self.port, name=self.name, timeout=self.timeout,
                                    retries=0, reconnect_delay=0, reconnect_delay_max=0)


class RtuBus(Bus):
    """An RS-485 line through a serial adapter (pyserial)."""

    kind = "rtu"

    def __init__(self, name: str, clock: Clock, port: str, *, baudrate: int = 9600, parity: str = "N",
                 stopbits: int = 1, bytesize: int = 8, **kw: Any) -> None:
        super().__init__(name, clock, **kw)
        if not port:
            raise ValueError(f"bus {name}: rtu needs a serial device path")
        if parity not in ("N", "E", "O"):
            raise ValueError(f"bus {name}: parity must be N, E or O, got {parity!r}")
        if stopbits not in (1, 2) or bytesize not in (7, 8):
            raise ValueError(f"bus {name}: stopbits must be 1|2 and bytesize 7|8")
        self.port = str(port)
        self.baudrate = int(baudrate)
        self.parity = parity
        self.stopbits = stopbits
        self.bytesize = bytesize

    def describe(self) -> str:
        return f"{self.port} {self.baudrate} {self.bytesize}{self.parity}{self.stopbits}"

    def _drop_after_timeout(self) -> bool:
        # a silent unit says nothing about the line: keep the port open for the others
        return False

    def _make_client(self) -> AsyncModbusSerialClient:
        parity = self.parity
        # A pseudo-terminal (the emulator's line) has no parity bit, and some kernels
        # refuse PARENB on one; a real adapter is never /dev/pts/*.
        if os.path.realpath(self.port).startswith("/dev/pts/"):
            parity = "N"
        return AsyncModbusSerialClient(self.port, framer=FramerType.RTU, baudrate=self.baudrate,
                                       parity=parity, stopbits=self.stopbits, bytesize=self.bytesize,
                                       name=self.name, timeout=self.timeout, retries=0,
                                       reconnect_delay=0, reconnect_delay_max=0)

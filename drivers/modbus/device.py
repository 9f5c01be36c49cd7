"""The generic profile-driven Modbus meter and charger.

Every device model is a profile file; this is the only Modbus driver code. It plans
block reads once (after SunSpec discovery, at the connector's stride), decodes every
entry with the shared codec, and maps canonical quantities onto drivers.contract.

Safety choices, in one place:

- A current setpoint is rounded *down* to what the register can hold: the allocator's
  limit is a ceiling, so 10.7 A on a whole-amp register is 10 A, never 11 A.
- Below the charger's minimum current the connector pauses, as the profile says
  (``below_min``: write 0 A, or clear the enable register).
- Init writes (Heidelberg standby/watchdog, failsafe current and timeout from the site
  config) run at start and again after the device was unreachable, because chargers
  forget them on a power cycle; the last setpoint is rewritten then too (Alfen does not
  keep it across a reboot).
- Keep-alive writes (a life bit, or rewriting the setpoint before its validity runs out)
  run in a task the driver owns and stops in ``close()``; their failures are logged at
  debug level only, since the poll loop already reports an unreachable device.
- A charger can also reboot between two polls, never missing one: where its profile
  reads the current it applies, one that applies something else than written has
  forgotten it, and the init writes and the setpoint are done again (``applied.py``).
- A value that decodes but cannot be real (a uint32 of all ones read as 4294967 A)
  fails the reading like NaN does, naming the quantity (``plausible.py``).
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

from agent.clock import Clock
from drivers.codec import NoValue, decode, encode, encode_int
from drivers.contract import (
    NONE3, ChargerReading, CpState, DeviceError, DeviceTimeout, EnergyScope, Measurement, Setpoint,
)
from drivers.modbus import plausible
from drivers.modbus.applied import AppliedWatch
from drivers.modbus.blocks import Item, plan
from drivers.modbus.bus import Bus
from drivers.profile import Profile, ReadSpec, WriteSpec

log = logging.getLogger(__name__)

SUNS = [0x5375, 0x6E53]
SF_PREFIX = "sf@"
#: read after everything else in a poll (drivers/modbus/blocks.py plan: why)
ENERGY_KEYS = ("energy_import", "energy_export")


class ModbusDevice:
    """Common part: addressing, discovery, block reads, init writes, keep-alive task."""

    def __init__(self, name: str, profile: Profile, bus: Bus, clock: Clock, *, unit_id: int | None = None,
                 connector_index: int = 1) -> None:
        self.name = name
        self.profile = profile
        self.bus = bus
        self.clock = clock
        self.unit_id = profile.unit_id if unit_id is None else unit_id
        self.connector_index = connector_index
        self._model_address: int | None = None
        self._blocks: list[Any] | None = None
        self._needs_init = True
        self._keepalive_task: asyncio.Task[None] | None = None
        self._closed = False
        bus.require_gap(profile.gap_ms)

    # -- addressing ------------------------------------------------------------------------
    def _offset(self, address: int) -> int:
        return address + self.connector_index * self.profile.connector_stride

    def address_of(self, spec: ReadSpec | WriteSpec) -> int:
        if self._model_address is not None and isinstance(spec, ReadSpec):
            return self._model_address + spec.address
        return self._offset(spec.address)

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Discover (SunSpec) and do the init writes.

        Raises DeviceTimeout/DeviceError when the device cannot be reached or refuses;
        the driver stays usable and retries on the next ``read()``. Call ``close()``
        in any case.
        """
        if self._closed:
            raise DeviceError(f"{self.name}: driver is closed")
        await self._prepare()

    async def close(self) -> None:
        """Stop the keep-alive task; idempotent. The bus belongs to its owner, not to us.

        The task is cancelled and awaited, and it also stops by itself once it sees the
        driver closed: on Python 3.11, pymodbus waits for an answer with
        ``asyncio.wait_for``, which swallows a cancellation that arrives in the same loop
        turn as the answer; the write then returns normally and, without that check, the
        loop went back to sleep and ``close()`` waited on it for ever.
        """
        self._closed = True
        task, self._keepalive_task = self._keepalive_task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                # the keep-alive task's own end; a cancellation of our caller goes on
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise

    async def _prepare(self) -> None:
        if self.profile.sunspec is not None and self._model_address is None:
            self._model_address = await self._discover_sunspec()
            self._blocks = None
        if self._needs_init:
            await self._init_writes()
            self._needs_init = False
        if self.profile.keepalive is not None and self._keepalive_task is None and not self._closed:
            self._keepalive_task = asyncio.create_task(self._keepalive_loop(), name=f"keepalive:{self.name}")

    async def _init_writes(self) -> None:
        for init in self.profile.init:
            a = self._offset(init.address)
            if init.register == "coil":
                await self.bus.write(self.unit_id, "coil", a, [bool(init.value)], init.function)
            else:
                regs = encode_int(init.type if init.type != "bool" else "uint16", init.value, init.word_order)
                await self.bus.write(self.unit_id, "holding", a, regs, init.function)

    async def _discover_sunspec(self) -> int:
        """Find the configured model: "SunS" at one of the bases, then walk the chain."""
        spec = self.profile.sunspec
        assert spec is not None
        tried = []
        for base in spec.bases:
            try:
                marker = await self.bus.read(self.unit_id, "holding", base, 2)
            except DeviceTimeout:
                raise
            except DeviceError:
                tried.append(f"{base} (refused)")
                continue
            if list(marker) != SUNS:
                tried.append(f"{base} (no SunS)")
                continue
            address = base + 2
            for _ in range(64):                      # a real chain has a handful of models
                model_id, length = await self.bus.read(self.unit_id, "holding", address, 2)
                if model_id == 0xFFFF:
                    break
                if model_id == spec.model:
                    return address
                address += 2 + length
                if address > 65533:
                    break
            raise DeviceError(f"{self.name}: SunSpec model {spec.model} not in the model chain at {base}")
        raise DeviceError(f"{self.name}: no SunSpec marker at {', '.join(tried)}")

    # -- reading -------------------------------------------------------------------------------
    def _plan(self) -> list[Any]:
        items = [Item(q, s.register, self.address_of(s), s.words) for q, s in self.profile.reads.items()]
        if self._model_address is not None:
            for off in sorted({s.scale_factor for s in self.profile.reads.values() if s.scale_factor is not None}):
                items.append(Item(f"{SF_PREFIX}{off}", "holding", self._model_address + off, 1))
        return plan(items, self.profile.max_read, self.profile.read_gap, last=ENERGY_KEYS)

    async def read_values(self) -> dict[str, Any]:
        """Every profile read entry, decoded to canonical units (one dict per poll)."""
        if self._closed:
            raise DeviceError(f"{self.name}: driver is closed")
        try:
            await self._prepare()
            if self._blocks is None:
                self._blocks = self._plan()
            raw: dict[str, list[Any]] = {}
            for block in self._blocks:
                data = await self.bus.read(self.unit_id, block.table, block.start, block.count)
                for it in block.items:
                    raw[it.key] = data[it.address - block.start: it.address - block.start + it.count]
        except DeviceTimeout:
            self._needs_init = True       # it may come back from a power cycle
            raise
        sfs = {int(k[len(SF_PREFIX):]): _int16(v[0]) for k, v in raw.items() if k.startswith(SF_PREFIX)}
        out: dict[str, Any] = {}
        for q, spec in self.profile.reads.items():
            sf = sfs.get(spec.scale_factor) if spec.scale_factor is not None else None
            try:
                out[q] = decode(spec, raw[q], scale_factor=sf)
            except NoValue as exc:
                if spec.missing != "none":
                    raise DeviceError(f"{self.name}: {exc}") from None
                out[q] = None
            except DeviceError as exc:
                raise DeviceError(f"{self.name}: {exc}") from None
            plausible.check(self.name, self.profile.kind, q, out[q])
        return out

    # -- writing --------------------------------------------------------------------------------
    async def write_quantity(self, quantity: str, value: Any) -> None:
        spec = self.profile.writes.get(quantity)
        if spec is None:
            raise DeviceError(f"{self.name}: profile {self.profile.name} has no write register for {quantity}")
        try:
            data = encode(spec, value)
        except ValueError as exc:
            raise DeviceError(f"{self.name}: {exc}") from None
        await self.bus.write(self.unit_id, spec.register, self._offset(spec.address), data, spec.function)

    async def _keepalive_loop(self) -> None:
        ka = self.profile.keepalive
        assert ka is not None
        period = ka.period_for(self._failsafe_timeout())
        while not self._closed:
            await self.clock.sleep(period)
            if self._closed:
                return
            try:
                await self._keepalive_once()
            except DeviceError as exc:   # includes DeviceTimeout; the poller reports it
                log.debug("%s: keep-alive write failed: %s", self.name, exc)

    async def _keepalive_once(self) -> None:
        ka = self.profile.keepalive
        assert ka is not None
        if ka.address is not None:
            a = self._offset(ka.address)
            values: list[Any] = [bool(ka.value)] if ka.register == "coil" else [ka.value]
            await self.bus.write(self.unit_id, ka.register, a, values, ka.function)

    def _failsafe_timeout(self) -> float:
        return 60.0


class ModbusMeter(ModbusDevice):
    """A profile-driven meter (drivers.contract.Meter)."""

    async def read(self) -> Measurement:
        v = await self.read_values()
        power_total = _num(v.get("power"))
        phases_power = _triple(v, "power")
        if power_total is None and None not in phases_power:
            power_total = sum(phases_power)  # type: ignore[arg-type]
        return Measurement(
            timestamp=self.clock.now(), monotonic=self.clock.monotonic(),
            voltage=_triple(v, "voltage"), current=_triple(v, "current"), power=phases_power,
            power_total=power_total,
            energy_import_wh=_num(v.get("energy_import")), energy_export_wh=_num(v.get("energy_export")),
            frequency=_num(v.get("frequency")),
        )


class ModbusCharger(ModbusDevice):
    """A profile-driven charger connector (drivers.contract.Charger)."""

    def __init__(self, name: str, profile: Profile, bus: Bus, clock: Clock, *, unit_id: int | None = None,
                 connector_index: int = 1, min_current: float | None = None, max_current: float | None = None,
                 failsafe_current: float | None = None, failsafe_timeout: float | None = None,
                 can_switch_phases: bool = False) -> None:
        if profile.kind != "charger":
            raise ValueError(f"{name}: profile {profile.name} is a {profile.kind}, not a charger")
        super().__init__(name, profile, bus, clock, unit_id=unit_id, connector_index=connector_index)
        # the site may narrow the hardware's range, never widen it
        self.min_current = max(profile.min_current, min_current if min_current is not None else 0.0)
        self.max_current = min(profile.max_current, max_current if max_current is not None else math.inf)
        if self.min_current > self.max_current:
            raise ValueError(f"{name}: min_current {self.min_current} A > max_current {self.max_current} A")
        self.failsafe_current = failsafe_current
        self.failsafe_timeout = failsafe_timeout
        self.can_switch_phases = bool(can_switch_phases and "phases" in profile.writes)
        self._setpoint: Setpoint | None = None
        self._phases_written: int | None = None
        self._enable_written: bool | None = None
        self._applied = AppliedWatch(name, clock)

    def _failsafe_timeout(self) -> float:
        return self.failsafe_timeout if self.failsafe_timeout is not None else 60.0

    async def _init_writes(self) -> None:
        await super()._init_writes()
        if self.failsafe_timeout is not None and "failsafe_timeout" in self.profile.writes:
            await self.write_quantity("failsafe_timeout", self.failsafe_timeout)
        if self.failsafe_current is not None and "failsafe_current" in self.profile.writes:
            await self.write_quantity("failsafe_current", self._floor_current(
                self.profile.writes["failsafe_current"], self.failsafe_current))
        self._phases_written = self._enable_written = None
        if self._setpoint is not None:            # re-init after a power cycle: restore it
            await self._write_setpoint(self._setpoint)

    async def read(self) -> ChargerReading:
        v = await self.read_values()
        state = self._state(v)
        energy, scope = _num(v.get("energy_import")), EnergyScope.TOTAL
        if energy is None and "session_energy" in v:
            energy, scope = _num(v.get("session_energy")), EnergyScope.SESSION
        if self.profile.energy_scope == "session":
            scope = EnergyScope.SESSION
        power_total = _num(v.get("power"))
        phases_power = _triple(v, "power")
        if power_total is None and None not in phases_power:
            power_total = sum(phases_power)  # type: ignore[arg-type]
        fault = v.get("fault")
        rfid = v.get("rfid")
        phases = v.get("phases")
        reading = ChargerReading(
            timestamp=self.clock.now(), monotonic=self.clock.monotonic(), state=state,
            current=_triple(v, "current"), voltage=_triple(v, "voltage"), power_total=power_total,
            energy_wh=energy, energy_scope=scope,
            applied_current=_num(v.get("applied_current")), failsafe_current=_num(v.get("failsafe_current")),
            fault=(f"fault {fault}" if not isinstance(fault, str) else fault) if fault else None,
            rfid=str(rfid) if rfid else None,
            phases=int(phases) if phases in (1, 3) else None,
        )
        if self._applied.check(self._expected_applied(), reading.applied_current):
            self._needs_init = True       # the next read does the init writes and restores the setpoint
        return reading

    def _expected_applied(self) -> float | None:
        """The current the charger should say it applies after the last setpoint write;
        None when that cannot be known (nothing written, or paused by the enable register)."""
        sp = self._setpoint
        if sp is None or "applied_current" not in self.profile.reads:
            return None
        cur = self.profile.writes["current"]
        amps = min(sp.amps, self.max_current)
        if sp.enabled and amps >= self.min_current:
            return self._floor_current(cur, amps)
        return 0.0 if cur.below_min != "disable" else None

    def _state(self, v: dict[str, Any]) -> CpState:
        raw = v.get("state")
        if raw is None:
            # no state register: A when unplugged, C when charging, else B
            if not v.get("plug"):
                return CpState.A
            return CpState.C if v.get("charging") else CpState.B
        letter = str(raw).strip()[:1].upper()
        try:
            return CpState(letter)
        except ValueError:
            raise DeviceError(f"{self.name}: state {raw!r} is not an IEC 61851 state") from None

    # -- setpoints ------------------------------------------------------------------------------
    async def apply(self, setpoint: Setpoint) -> None:
        """Write ``setpoint``; the keep-alive task rewrites it where the charger needs that."""
        if self._closed:
            raise DeviceError(f"{self.name}: driver is closed")
        self._setpoint = setpoint
        await self._write_setpoint(setpoint)

    @staticmethod
    def _floor_current(spec: WriteSpec, amps: float) -> float:
        """The largest value <= amps the register can carry (a ceiling stays a ceiling)."""
        if spec.type in ("float32", "float64") or spec.values is not None:
            return amps
        steps = math.floor((amps - spec.offset) / spec.scale + 1e-9)
        return steps * spec.scale + spec.offset

    async def _write_setpoint(self, sp: Setpoint) -> None:
        self._applied.written()
        writes = self.profile.writes
        cur = writes["current"]
        amps = min(sp.amps, self.max_current)
        run = sp.enabled and amps >= self.min_current
        if self.can_switch_phases and sp.phases != self._phases_written:
            await self.write_quantity("phases", sp.phases)
            self._phases_written = sp.phases
        if not run:
            if cur.below_min == "disable":
                await self._write_enable(False)
            else:
                await self.write_quantity("current", 0)
            return
        await self.write_quantity("current", self._floor_current(cur, amps))
        if "enable" in writes:
            await self._write_enable(True)

    async def _write_enable(self, on: bool) -> None:
        # only on change: an enable write may restart the charger's session logic
        if self._enable_written is not on:
            await self.write_quantity("enable", on)
            self._enable_written = on

    async def _keepalive_once(self) -> None:
        ka = self.profile.keepalive
        assert ka is not None
        if ka.rewrite_setpoint:
            if self._setpoint is not None:
                await self._write_setpoint(self._setpoint)
            return
        await super()._keepalive_once()


def _int16(r: int) -> int:
    return r - 0x10000 if r & 0x8000 else r


def _num(v: Any) -> float | None:
    return None if v is None else float(v)


def _triple(v: dict[str, Any], prefix: str) -> tuple[float | None, float | None, float | None]:
    t = (_num(v.get(f"{prefix}_l1")), _num(v.get(f"{prefix}_l2")), _num(v.get(f"{prefix}_l3")))
    return NONE3 if t == NONE3 else t

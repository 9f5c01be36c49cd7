"""A device's register image, built from its profile: what an emulated device holds.

The emulator and the driver read the same profile and share the codec, so a profile
is tested by being driven through its own image: if the driver reads what the model
set and the model hears what the driver wrote, the profile file is self-consistent.
(Whether it matches the real device is what ``notes`` in each profile is honest about.)

The model glue uses three calls:

- ``set(quantity, value)``: a canonical value (A, V, W, Wh, state letter, ...) into
  the quantity's registers;
- ``on_write(callback)``: ``callback(quantity, value)`` after the client writes a write
  register (``current``, ``enable``, ...: decoded to canonical units), or the keep-alive
  register (``"keepalive"``, raw value) or an init register (``"init"``,
  ``(address, raw)``); callbacks may be coroutine functions;
- ``fault(kind, ...)``: ``"silent"`` (no answer at all), ``"exception"`` (an exception
  response, optionally only for one quantity's registers), ``"nan"`` / ``"garbage"``
  (one quantity reads as NaN/sentinel or as a value outside its map); ``clear_faults()``.

The image is strict where real devices are strict, so driver bugs show up here and not
on site: addresses the profile does not define answer ILLEGAL_ADDRESS, registers that
are not writable refuse writes, a multi-register value must be written whole in one
request, and a register declared FC16-only refuses FC06.

Served by ``hil.emulator.server`` through pymodbus's SimDevice ``action`` hook: the
image keeps its own memory and fills the server's registers on every request.
"""

from __future__ import annotations

import inspect
import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException

from drivers.codec import encode, decode
from drivers.profile import READ_QUANTITIES, Profile, ReadSpec, WriteSpec, load_profile

log = logging.getLogger(__name__)

#: SunSpec layout
SUNS_MARKER = (0x5375, 0x6E53)          # "SunS"
COMMON_MODEL_ID, COMMON_MODEL_LEN = 1, 66
END_MARKER = (0xFFFF, 0)
MODEL_LENGTHS = {201: 105, 202: 105, 203: 105, 204: 105, 211: 124, 212: 124, 213: 124, 214: 124}
#: scale factors the image uses, by quantity prefix (int16 must hold the site's values:
#: W with SF 1 holds up to 327 kW, A with SF -2 up to 327 A)
DEFAULT_SF = {"current": -2, "voltage": -1, "frequency": -2, "power": 1, "energy": 0}

FC_TABLE = {1: "coil", 5: "coil", 15: "coil", 2: "discrete",
            3: "holding", 6: "holding", 16: "holding", 22: "holding", 23: "holding", 4: "input"}
FAULT_KINDS = ("silent", "exception", "nan", "garbage")

WriteCallback = Callable[[str, Any], Any]


@dataclass(frozen=True)
class _Writable:
    """A register range clients may write, and what a write there means."""

    kind: str            # "spec" | "keepalive" | "init"
    address: int
    count: int
    spec: WriteSpec | None = None
    function: int = 6


class RegisterImage:
    """One emulated device (or one connector of a multi-connector device like CHARX)."""

    def __init__(
        self,
        profile: Profile | str,
        *,
        unit_id: int | None = None,
        connector_index: int = 1,
        sunspec_base: int | None = None,
        sunspec_sf: dict[int, int] | None = None,
    ) -> None:
        self.profile = load_profile(profile) if isinstance(profile, str) else profile
        p = self.profile
        self.unit_id = p.unit_id if unit_id is None else unit_id
        if not 0 <= self.unit_id <= 255:
            raise ValueError(f"unit_id must be 0..255, got {self.unit_id}")
        self.connector_index = connector_index
        self._mem: dict[str, dict[int, int]] = {t: {} for t in ("holding", "input", "coil", "discrete")}
        self._callbacks: list[WriteCallback] = []
        self._silent = False
        self._exception: tuple[int, str | None] | None = None
        self._value_faults: dict[str, str] = {}
        self._sf: dict[int, int] = {}
        self.model_address: int | None = None
        self.sunspec_base: int | None = None
        self.writes_seen = 0

        extents: list[tuple[str, int, int]] = []   # (table, start, end) that must exist
        if p.sunspec is not None:
            self._layout_sunspec(sunspec_base if sunspec_base is not None else p.sunspec.bases[0],
                                 sunspec_sf or {}, extents)
        for spec in p.reads.values():
            extents.append((spec.register, self.address_of(spec), self.address_of(spec) + spec.words))
        self._writable: dict[str, list[_Writable]] = {"holding": [], "coil": []}
        for spec in p.writes.values():
            a = self.address_of(spec)
            self._writable[spec.register].append(_Writable("spec", a, spec.words, spec, spec.function))
            extents.append((spec.register, a, a + spec.words))
        for init in p.init:
            n = 1 if init.register == "coil" else len(_init_regs(init))
            a = self._offset(init.address)
            self._writable[init.register].append(_Writable("init", a, n, None, init.function))
            extents.append((init.register, a, a + n))
        if p.keepalive is not None and p.keepalive.address is not None:
            a = self._offset(p.keepalive.address)
            self._writable[p.keepalive.register].append(_Writable("keepalive", a, 1, None, p.keepalive.function))
            extents.append((p.keepalive.register, a, a + 1))
        self._spans = _merge_spans(extents, p.read_gap)
        if p.kind == "charger":
            self.set("state", "A")

    # -- addressing --------------------------------------------------------------------
    def _offset(self, address: int) -> int:
        return address + self.connector_index * self.profile.connector_stride

    def address_of(self, spec: ReadSpec | WriteSpec) -> int:
        """Absolute address of an entry: SunSpec model base, CHARX connector stride."""
        if self.model_address is not None and isinstance(spec, ReadSpec):
            return self.model_address + spec.address
        return self._offset(spec.address)

    def spans(self) -> dict[str, list[tuple[int, int]]]:
        """Address ranges [start, end) this image answers, per table."""
        return {t: list(v) for t, v in self._spans.items()}

    def owns(self, table: str, address: int) -> bool:
        return any(s <= address < e for s, e in self._spans.get(table, ()))

    def _layout_sunspec(self, base: int, sf_override: dict[int, int], extents: list) -> None:
        p = self.profile
        assert p.sunspec is not None
        model = p.sunspec.model
        length = MODEL_LENGTHS.get(model) or max(
            (s.address + s.words - 2 for s in p.reads.values()), default=0)
        self.sunspec_base = base
        common = base + 2
        self.model_address = common + 2 + COMMON_MODEL_LEN
        end = self.model_address + 2 + length
        if end + 2 > 65536:
            raise ValueError(f"SunSpec layout at base {base} runs past 65535")
        h = self._mem["holding"]
        h[base], h[base + 1] = SUNS_MARKER
        h[common], h[common + 1] = COMMON_MODEL_ID, COMMON_MODEL_LEN
        for i, r in enumerate(_text_regs("evsite", 16)):        # Mn (manufacturer)
            h[common + 2 + i] = r
        for i, r in enumerate(_text_regs("emulated " + p.name, 16)):   # Md (model)
            h[common + 18 + i] = r
        h[self.model_address], h[self.model_address + 1] = model, length
        h[end], h[end + 1] = END_MARKER
        extents.append(("holding", base, end + 2))
        for spec in p.reads.values():
            if spec.scale_factor is None:
                continue
            prefix = spec.quantity.split("_")[0]
            sf = sf_override.get(spec.scale_factor, DEFAULT_SF.get(prefix, 0))
            self._sf[spec.scale_factor] = sf
            h[self.model_address + spec.scale_factor] = sf & 0xFFFF

    # -- model side ----------------------------------------------------------------------
    def has(self, quantity: str) -> bool:
        return quantity in self.profile.reads

    def set(self, quantity: str, value: Any) -> bool:
        """Put a canonical value into the quantity's registers.

        Returns False when this profile has no such register (the model glue sets every
        quantity it knows; a meter without export just ignores it). An unknown name is
        a KeyError; a value the registers cannot hold is a ValueError naming the quantity.
        Setting ``state`` also sets ``plug``/``charging`` where the profile has them.
        """
        if quantity not in READ_QUANTITIES:
            raise KeyError(f"{quantity!r} is not a canonical read quantity")
        if quantity == "state":
            letter = str(value)[:1]
            if letter not in "ABCDEF" or not letter:
                raise ValueError(f"state must be an IEC 61851 state A-F, got {value!r}")
            if "plug" in self.profile.reads:
                self.set("plug", letter in "BCD")
            if "charging" in self.profile.reads:
                self.set("charging", letter in "CD")
            spec = self.profile.reads.get("state")
            if spec is not None and (spec.type != "string" or spec.byte is not None or spec.map is not None):
                value = letter
        spec = self.profile.reads.get(quantity)
        if spec is None:
            return False
        sf = self._sf.get(spec.scale_factor) if spec.scale_factor is not None else None
        data = encode(spec, value, scale_factor=sf)
        self._store(spec.register, self.address_of(spec), data)
        return True

    def get(self, quantity: str) -> Any:
        """The canonical value the client would read now (faults not applied)."""
        spec = self.profile.reads.get(quantity) or self.profile.writes.get(quantity)
        if spec is None:
            raise KeyError(f"{self.profile.name} has no register for {quantity!r}")
        a = self.address_of(spec)
        data = [self._mem[spec.register].get(a + i, 0) for i in range(spec.words)]
        sf = self._sf.get(spec.scale_factor) if spec.scale_factor is not None else None
        return decode(spec, data, scale_factor=sf)

    def raw(self, table: str, address: int, count: int = 1) -> list[int]:
        return [self._mem[table].get(address + i, 0) for i in range(count)]

    def on_write(self, callback: WriteCallback) -> None:
        self._callbacks.append(callback)

    def fault(self, kind: str, *, quantity: str | None = None, code: int = ExcCodes.DEVICE_FAILURE) -> None:
        """Inject a fault until ``clear_faults()``.

        ``silent``: the device ignores every request (the client times out).
        ``exception``: every request (or those touching ``quantity``) gets exception ``code``.
        ``nan``: ``quantity`` reads as NaN (floats) or its sentinel / all ones (integers).
        ``garbage``: ``quantity`` reads as a value its map does not know, or invalid text.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {', '.join(FAULT_KINDS)}, got {kind!r}")
        if kind == "silent":
            self._silent = True
        elif kind == "exception":
            self._exception = (int(ExcCodes(code)), quantity)
        else:
            if quantity is None or quantity not in self.profile.reads:
                raise ValueError(f"fault {kind!r} needs a quantity of {self.profile.name}, got {quantity!r}")
            self._value_faults[quantity] = kind

    @property
    def silent(self) -> bool:
        return self._silent

    def clear_faults(self) -> None:
        self._silent = False
        self._exception = None
        self._value_faults.clear()

    # -- memory ---------------------------------------------------------------------------
    def _store(self, table: str, address: int, data: Sequence[int] | Sequence[bool]) -> None:
        mem = self._mem[table]
        for i, v in enumerate(data):
            mem[address + i] = int(v)

    def _fault_overlay(self) -> dict[tuple[str, int], int]:
        out: dict[tuple[str, int], int] = {}
        for q, kind in self._value_faults.items():
            spec = self.profile.reads[q]
            a = self.address_of(spec)
            for i, r in enumerate(_bad_regs(spec, kind)):
                out[(spec.register, a + i)] = r
        return out

    # -- server side (called by hil.emulator.server) ------------------------------------
    async def handle(self, fc: int, table: str, block_start: int, address: int, count: int,
                     regs: list[int], values: list[int] | list[bool] | None) -> ExcCodes | None:
        """pymodbus SimDevice action for requests addressed to this image."""
        if self._silent:
            raise NoSuchIdException(f"unit {self.unit_id} is silent (injected fault)")
        bits = table in ("coil", "discrete")
        if self._exception is not None:
            code, q = self._exception
            if q is None or self._touches(q, table, address, len(values) if values else count):
                return ExcCodes(code)
        if values is not None:
            return await self._client_write(fc, table, address, list(values))
        overlay = self._fault_overlay()
        mem = self._mem[table]
        if bits:
            # pymodbus passes the packed registers covering the request: refresh them all
            first = address // 16
            for k in range(count):
                word = 0
                for b in range(16):
                    bit_addr = (first + k) * 16 + b
                    if overlay.get((table, bit_addr), mem.get(bit_addr, 0)):
                        word |= 1 << b
                regs[first + k - block_start] = word
        else:
            for k in range(count):
                a = address + k
                regs[a - block_start] = overlay.get((table, a), mem.get(a, 0))
        return None

    def _touches(self, quantity: str, table: str, address: int, count: int) -> bool:
        spec = self.profile.reads.get(quantity) or self.profile.writes.get(quantity)
        if spec is None or spec.register != table:
            return False
        a = self.address_of(spec)
        return a < address + count and address < a + spec.words

    async def _client_write(self, fc: int, table: str, address: int, values: list[Any]) -> ExcCodes | None:
        end = address + len(values)
        hits = [w for w in self._writable.get(table, ()) if w.address < end and address < w.address + w.count]
        covered = set()
        for w in hits:
            if w.address < address or w.address + w.count > end:
                log.warning("%s: partial write of %s at %d refused", self.profile.name,
                            w.spec.quantity if w.spec else w.kind, w.address)
                return ExcCodes.ILLEGAL_VALUE
            if w.function == 16 and fc == 6:
                return ExcCodes.ILLEGAL_FUNCTION
            covered.update(range(w.address, w.address + w.count))
        if any(a not in covered for a in range(address, end)):
            return ExcCodes.ILLEGAL_ADDRESS
        self._store(table, address, values)
        self.writes_seen += 1
        for w in sorted(hits, key=lambda w: w.address):
            if w.kind == "spec":
                assert w.spec is not None
                data = [self._mem[table].get(w.address + i, 0) for i in range(w.count)]
                try:
                    value: Any = decode(w.spec, data)
                except Exception as exc:  # a driver wrote something its profile cannot mean
                    log.warning("%s: undecodable write to %s: %s", self.profile.name, w.spec.quantity, exc)
                    return ExcCodes.ILLEGAL_VALUE
                await self._notify(w.spec.quantity, value)
            elif w.kind == "keepalive":
                await self._notify("keepalive", self._mem[table].get(w.address, 0))
            else:
                await self._notify("init", (w.address - self._offset(0), self._mem[table].get(w.address, 0)))
        return None

    async def _notify(self, quantity: str, value: Any) -> None:
        for cb in list(self._callbacks):
            result = cb(quantity, value)
            if inspect.isawaitable(result):
                await result


# ---------------------------------------------------------------------------------------

def _merge_spans(extents: list[tuple[str, int, int]], gap: int) -> dict[str, list[tuple[int, int]]]:
    by: dict[str, list[tuple[int, int]]] = {}
    for table, s, e in sorted(extents):
        hole = gap * 16 if table in ("coil", "discrete") else gap
        spans = by.setdefault(table, [])
        if spans and s - spans[-1][1] <= hole:
            spans[-1] = (spans[-1][0], max(spans[-1][1], e))
        else:
            spans.append((s, e))
    return by


def _text_regs(text: str, words: int) -> list[int]:
    b = text.encode("ascii")[: 2 * words].ljust(2 * words, b"\x00")
    return [int.from_bytes(b[i:i + 2], "big") for i in range(0, len(b), 2)]


def _init_regs(init: Any) -> list[int]:
    from drivers.codec import encode_int
    return encode_int(init.type if init.type != "bool" else "uint16", init.value, init.word_order)


def _bad_regs(spec: ReadSpec, kind: str) -> list[int]:
    """Registers that make ``spec`` unreadable: NaN / sentinel, or garbage."""
    if spec.is_bit:
        return [1]
    if spec.type in ("float32", "float64"):
        return encode(ReadSpec(quantity=spec.quantity, address=0, type=spec.type, words=spec.words,
                               word_order=spec.word_order), math.nan)  # type: ignore[return-value]
    if spec.type == "string":
        return [0xFFFF] * spec.words        # not valid ASCII/UTF-16 text
    if kind == "nan" and spec.sentinels:
        pattern = spec.sentinels[0] & ((1 << 16 * spec.words) - 1)
        return [(pattern >> (16 * (spec.words - 1 - i))) & 0xFFFF for i in range(spec.words)] \
            if spec.word_order == "big" else \
            [(pattern >> (16 * i)) & 0xFFFF for i in range(spec.words)]
    # all ones: SunSpec "not implemented" for unsigned, outside any small map
    if spec.type.startswith("int") and spec.scale_factor is not None:
        return [0x8000] + [0] * (spec.words - 1) if spec.word_order == "big" else [0] * (spec.words - 1) + [0x8000]
    return [0xFFFF] * spec.words

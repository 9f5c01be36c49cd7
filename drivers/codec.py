"""Registers <-> canonical values, for one profile entry at a time.

Pure functions, shared by the driver (decode what it read, encode what it writes) and
the emulator (encode what the model says, decode what the client wrote), so both sides
of every profile agree by construction.

A device that says "I have no value" must never become a zero on the site: sentinels
(ABB's all-0xFF / 0x7FFF.., Alfen's 0xFFFF), NaN floats and SunSpec "not implemented"
raise ``DeviceError`` naming the quantity. Numeric packing goes through pymodbus's
``convert_from_registers``/``convert_to_registers`` (the one place we lean on its
client mixin, which is a pure classmethod); strings are ours because pymodbus trims
trailing NUL bytes, which would break UTF-16 text.
"""

from __future__ import annotations

import math
from typing import Sequence

from pymodbus.client.mixin import ModbusClientMixin

from drivers.contract import DeviceError
from drivers.profile import TYPE_WORDS, ReadSpec, WriteSpec

Spec = ReadSpec | WriteSpec
Value = float | int | str | bool

_DT = ModbusClientMixin.DATATYPE
_DATATYPES = {
    "uint16": _DT.UINT16, "int16": _DT.INT16, "uint32": _DT.UINT32, "int32": _DT.INT32,
    "uint64": _DT.UINT64, "int64": _DT.INT64, "float32": _DT.FLOAT32, "float64": _DT.FLOAT64,
}
_INT_RANGE = {
    "uint16": (0, 0xFFFF), "int16": (-0x8000, 0x7FFF),
    "uint32": (0, 0xFFFF_FFFF), "int32": (-0x8000_0000, 0x7FFF_FFFF),
    "uint64": (0, (1 << 64) - 1), "int64": (-(1 << 63), (1 << 63) - 1),
}
#: SunSpec: a scale factor register reading 0x8000 means "not implemented"
SUNSPEC_SF_NOT_IMPLEMENTED = -0x8000
#: SunSpec "not implemented" bit patterns, applied to every entry with a scale factor
#: (acc32/acc64 counters use 0 for "not accumulated", which is also a real reading:
#: those are left alone)
SUNSPEC_NOT_IMPLEMENTED = {"int16": 0x8000, "uint16": 0xFFFF, "int32": 0x8000_0000,
                           "uint32": 0xFFFF_FFFF, "int64": 1 << 63, "uint64": (1 << 64) - 1}


#: quantities whose canonical value is a bool, whatever register type carries them
BOOL_QUANTITIES = frozenset({"enable", "unlock", "plug", "charging", "enabled"})


class EncodeError(ValueError):
    """A canonical value cannot be represented in the entry's registers."""


class NoValue(DeviceError):
    """The device says it has no value here (sentinel, NaN, SunSpec "not implemented").

    A profile entry with ``missing = "none"`` turns this into ``None`` (a 1-phase Alfen
    reports NaN on L2/L3); otherwise it is a ``DeviceError`` like any other bad answer.
    """


def raw_int(spec: Spec, registers: Sequence[int]) -> int:
    """The entry's registers as one integer of its type (no shift/scale)."""
    return int(ModbusClientMixin.convert_from_registers(
        list(registers), _DATATYPES[spec.type], word_order=spec.word_order))  # type: ignore[arg-type]


def decode(spec: Spec, data: Sequence[int] | Sequence[bool], *, scale_factor: int | None = None) -> Value:
    """Canonical value of ``spec`` from its registers (or bits for coils/discretes).

    ``data`` is exactly the entry's ``words`` registers (or at least one bit).
    ``scale_factor`` is the SunSpec SF already read from ``model + spec.scale_factor``.
    """
    value = _decode(spec, data, scale_factor)
    if spec.quantity in BOOL_QUANTITIES and not isinstance(value, bool):
        return bool(value)
    return value


def _decode(spec: Spec, data: Sequence[int] | Sequence[bool], scale_factor: int | None) -> Value:
    q = spec.quantity
    if spec.is_bit:
        if not data:
            raise DeviceError(f"{q}: no bit in the answer")
        return bool(data[0])
    if len(data) != spec.words:
        raise DeviceError(f"{q}: expected {spec.words} register(s), got {len(data)}")
    if spec.type == "string":
        return _decode_string(spec, data)  # type: ignore[arg-type]

    if spec.type == "bool":
        raw: int | float = int(data[0])
    else:
        raw = ModbusClientMixin.convert_from_registers(
            list(data), _DATATYPES[spec.type], word_order=spec.word_order)  # type: ignore[arg-type,assignment]
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise NoValue(f"{q}: device reports no value (float {raw})")
    elif spec.sentinels or spec.scale_factor is not None:
        pattern = raw & ((1 << 16 * spec.words) - 1)
        if raw in spec.sentinels or pattern in spec.sentinels or (
                spec.scale_factor is not None and pattern == SUNSPEC_NOT_IMPLEMENTED.get(spec.type)):
            raise NoValue(f"{q}: device reports no value (sentinel 0x{pattern:X})")

    if isinstance(raw, int):
        raw >>= spec.shift
        if spec.mask is not None:
            raw &= spec.mask
        if spec.threshold is not None:
            return raw >= spec.threshold
        if spec.type == "bool":
            return raw != 0
    if isinstance(spec, WriteSpec) and spec.values is not None:
        for canonical, r in spec.values.items():
            if r == raw:
                return canonical
        raise DeviceError(f"{q}: raw value {raw} is none of the profile's values")
    if spec.map is not None:
        try:
            return spec.map[raw]
        except KeyError:
            raise DeviceError(f"{q}: raw value {raw} not in the profile's map "
                              f"({', '.join(str(k) for k in spec.map)})") from None
    if spec.scale_factor is not None:
        if scale_factor is None:
            raise DeviceError(f"{q}: SunSpec scale factor not supplied")
        if scale_factor == SUNSPEC_SF_NOT_IMPLEMENTED or not -10 <= scale_factor <= 10:
            raise DeviceError(f"{q}: SunSpec scale factor {scale_factor} is not usable")
        return raw * 10.0 ** scale_factor
    if spec.scale == 1 and spec.offset == 0 and isinstance(raw, int):
        return raw
    return raw * spec.scale + spec.offset


def _decode_string(spec: Spec, data: Sequence[int]) -> str:
    regs = list(data)
    if spec.word_order == "little":
        regs.reverse()
    if spec.byte is not None:
        b = bytes([(regs[0] & 0xFF) if spec.byte == "low" else (regs[0] >> 8)])
    else:
        b = b"".join(r.to_bytes(2, "big") for r in regs)
    try:
        text = b.decode(spec.string_encoding)
    except UnicodeDecodeError:
        raise DeviceError(f"{spec.quantity}: not valid {spec.string_encoding} text: {b.hex()}") from None
    text = text.strip("\x00 ")
    if spec.map is not None:
        if text not in spec.map:
            raise DeviceError(f"{spec.quantity}: {text!r} not in the profile's map ({', '.join(spec.map)})")
        return spec.map[text]
    return text


def encode(spec: Spec, value: Value, *, scale_factor: int | None = None) -> list[int] | list[bool]:
    """Registers (or bits) carrying ``value`` for ``spec``: the inverse of ``decode``.

    The emulator encodes read entries (maps and thresholds inverted: a state letter goes
    to the first raw value mapping to it); the driver encodes write entries, where
    ``values`` maps canonical values to raw ones. Raises ``EncodeError`` naming the
    quantity when the value does not fit.
    """
    q = spec.quantity
    if spec.is_bit:
        return [bool(value)]
    if spec.type == "string":
        return _encode_string(spec, str(value))

    if isinstance(spec, WriteSpec) and spec.values is not None:
        key = int(value) if isinstance(value, float) and value.is_integer() else value
        if key not in spec.values:
            raise EncodeError(f"{q}: {value!r} is not one of {', '.join(map(str, spec.values))}")
        raw: int | float = spec.values[key]
    elif spec.map is not None:
        raw_keys = [k for k, v in spec.map.items() if v == value and type(v) is type(value)] or \
                   [k for k, v in spec.map.items() if v == value]
        if not raw_keys:
            raise EncodeError(f"{q}: {value!r} is not a value of the profile's map")
        raw = raw_keys[0]
    elif spec.threshold is not None:
        raw = spec.threshold if value else 0
    elif spec.type == "bool":
        raw = 1 if value else 0
    elif spec.scale_factor is not None:
        if scale_factor is None:
            raise EncodeError(f"{q}: SunSpec scale factor needed to encode")
        raw = float(value) / 10.0 ** scale_factor
    else:
        if isinstance(value, bool) and q in BOOL_QUANTITIES:
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise EncodeError(f"{q}: expected a number, got {value!r}")
        raw = (value - spec.offset) / spec.scale if (spec.scale != 1 or spec.offset) else value

    if spec.type in ("float32", "float64"):
        regs = ModbusClientMixin.convert_to_registers(float(raw), _DATATYPES[spec.type], word_order=spec.word_order)  # type: ignore[arg-type]
        return list(regs)

    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise EncodeError(f"{q}: cannot encode {value!r}")
        raw = round(raw)
    if spec.mask is not None:
        if raw & ~spec.mask:
            raise EncodeError(f"{q}: {raw} does not fit mask 0x{spec.mask:X}")
    raw <<= spec.shift
    type_ = "uint16" if spec.type == "bool" else spec.type
    lo, hi = _INT_RANGE[type_]
    if not lo <= raw <= hi:
        raise EncodeError(f"{q}: {value!r} is raw {raw}, outside {type_} ({lo}..{hi})")
    return list(ModbusClientMixin.convert_to_registers(int(raw), _DATATYPES[type_], word_order=spec.word_order))  # type: ignore[arg-type]


def _encode_string(spec: Spec, text: str) -> list[int]:
    if spec.map is not None:
        keys = [k for k, v in spec.map.items() if v == text]
        text = keys[0] if keys else text
    try:
        b = text.encode(spec.string_encoding)
    except UnicodeEncodeError:
        raise EncodeError(f"{spec.quantity}: {text!r} is not {spec.string_encoding} text") from None
    if spec.byte is not None:
        if len(b) != 1:
            raise EncodeError(f"{spec.quantity}: one character expected, got {text!r}")
        regs = [b[0] if spec.byte == "low" else b[0] << 8]
    else:
        if len(b) > 2 * spec.words:
            raise EncodeError(f"{spec.quantity}: {text!r} needs {len(b)} bytes, only {2 * spec.words} fit")
        b = b.ljust(2 * spec.words, b"\x00")
        regs = [int.from_bytes(b[i:i + 2], "big") for i in range(0, len(b), 2)]
    if spec.word_order == "little":
        regs.reverse()
    return regs


def encode_int(type_: str, value: int, word_order: str = "big") -> list[int]:
    """Plain integer packing for init writes and SunSpec headers."""
    lo, hi = _INT_RANGE[type_]
    if not lo <= value <= hi:
        raise EncodeError(f"{value} is outside {type_} ({lo}..{hi})")
    return list(ModbusClientMixin.convert_to_registers(value, _DATATYPES[type_], word_order=word_order))  # type: ignore[arg-type]


def words_of(type_: str) -> int:
    return TYPE_WORDS[type_]

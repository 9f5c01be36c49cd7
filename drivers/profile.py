"""Device profiles: a device model's register map as data, loaded and checked once.

The generic Modbus driver and the emulator read the same ``Profile``, so a profile is
proven by reading and writing it through its own emulator. Adding a device model is
adding a TOML file, never a class; that only works if a wrong file is refused at load
with a message naming the file, the key and the problem, rather than surfacing later
as a wrong number on a live charger. Hence: unknown keys are errors, addresses and
type/register combinations are checked, and state maps must land on IEC 61851 states.

File format: see docs/architecture.md, "Device profiles".
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

PROFILE_DIR = Path(__file__).with_name("profiles")

REGISTER_TYPES = ("holding", "input", "coil", "discrete")
DATA_TYPES = ("uint16", "int16", "uint32", "int32", "uint64", "int64",
              "float32", "float64", "string", "bool")
#: registers one value of each fixed-size type occupies
TYPE_WORDS = {"uint16": 1, "int16": 1, "uint32": 2, "int32": 2, "uint64": 4, "int64": 4,
              "float32": 2, "float64": 4, "bool": 1}
WORD_ORDERS = ("big", "little")
IEC_STATES = ("A", "B", "C", "D", "E", "F")

READ_QUANTITIES = (
    "voltage_l1", "voltage_l2", "voltage_l3", "current_l1", "current_l2", "current_l3",
    "power_l1", "power_l2", "power_l3", "power", "energy_import", "energy_export",
    "frequency", "state", "plug", "charging", "enabled", "applied_current",
    "failsafe_current", "rfid", "phases", "fault", "session_energy", "temperature",
)
WRITE_QUANTITIES = ("current", "enable", "phases", "failsafe_current", "failsafe_timeout", "unlock")
#: Modbus limits per request (FC03/04 read, FC16 write)
MAX_READ_REGISTERS = 125
MAX_WRITE_REGISTERS = 123


class ProfileError(ValueError):
    """A profile file is wrong; the message names the file, the key and the problem."""


@dataclass(frozen=True)
class ReadSpec:
    """Where one canonical quantity lives and how its raw value becomes canonical units.

    value = raw * scale + offset, after ``shift``/``mask``; with ``scale_factor`` (SunSpec)
    value = raw * 10 ** SF where SF is the int16 at model + scale_factor.
    """

    quantity: str
    address: int
    register: str = "holding"
    type: str = "uint16"
    word_order: str = "big"
    words: int = 1
    scale: float = 1.0
    offset: float = 0.0
    shift: int = 0
    mask: int | None = None
    threshold: int | None = None
    #: raw value -> canonical value (IEC state letter for ``state``); keys are str for strings
    map: Mapping[Any, Any] | None = None
    #: raw values meaning "not a number / unavailable" (already resolved from "max")
    sentinels: tuple[int, ...] = ()
    scale_factor: int | None = None
    string_encoding: str = "ascii"
    #: one-char strings packed in one register: which byte holds the character
    byte: str | None = None
    #: what "no value" (sentinel / NaN) means: "error" (a bad answer) or "none" (the
    #: device does not have it, e.g. L2/L3 on a 1-phase charger)
    missing: str = "error"

    @property
    def is_bit(self) -> bool:
        return self.register in ("coil", "discrete")

    @property
    def end(self) -> int:
        """One past the last register (or bit) this entry occupies."""
        return self.address + self.words


@dataclass(frozen=True)
class WriteSpec:
    """A register the controller writes. raw = (value - offset) / scale, rounded for ints."""

    quantity: str
    address: int
    register: str = "holding"
    type: str = "uint16"
    word_order: str = "big"
    words: int = 1
    scale: float = 1.0
    offset: float = 0.0
    #: Modbus function code used: 5 / 15 coils, 6 / 16 registers
    function: int = 6
    #: canonical value -> raw value (e.g. phases 1/3 -> 0/1); keys are canonical
    values: Mapping[Any, int] | None = None
    string_encoding: str = "ascii"
    #: what a setpoint below min_current becomes: "zero" writes 0 A, "disable" writes
    #: enable = False (and min_current) -- only meaningful for ``current``
    below_min: str = "zero"

    @property
    def is_bit(self) -> bool:
        return self.register == "coil"

    @property
    def end(self) -> int:
        return self.address + self.words

    # the codec treats reads and writes alike; these make a WriteSpec look like a plain read
    shift: int = field(default=0, repr=False)
    mask: int | None = field(default=None, repr=False)
    threshold: int | None = field(default=None, repr=False)
    map: Mapping[Any, Any] | None = field(default=None, repr=False)
    sentinels: tuple[int, ...] = field(default=(), repr=False)
    scale_factor: int | None = field(default=None, repr=False)
    byte: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class InitWrite:
    """A fixed value written at start and after every reconnect (e.g. Heidelberg standby)."""

    address: int
    value: int
    register: str = "holding"
    type: str = "uint16"
    word_order: str = "big"
    function: int = 6
    note: str = ""


@dataclass(frozen=True)
class KeepAlive:
    """Periodic writes that keep the charger from falling back to its failsafe.

    Either a life bit (``address`` + ``value``) or ``rewrite_setpoint`` (Alfen: the
    setpoint itself expires). The period is ``period`` seconds, or ``fraction`` of the
    device's configured failsafe timeout (Vestel: every timeout/4), whichever is given.
    """

    period: float | None = None
    fraction: float | None = None
    address: int | None = None
    value: int = 1
    register: str = "holding"
    function: int = 6
    rewrite_setpoint: bool = False

    def period_for(self, failsafe_timeout: float) -> float:
        if self.period is not None:
            return self.period
        assert self.fraction is not None
        return max(0.1, failsafe_timeout * self.fraction)


@dataclass(frozen=True)
class SunSpecSpec:
    """SunSpec discovery: probe ``bases`` for "SunS", then walk models to ``model``.

    Read addresses in a SunSpec profile are offsets from the model's ID register.
    """

    model: int
    bases: tuple[int, ...] = (40000, 50000, 0)


@dataclass(frozen=True)
class Profile:
    name: str
    title: str
    kind: str                      # meter | charger
    transports: tuple[str, ...]
    unit_id: int
    gap_ms: float
    max_read: int
    reads: Mapping[str, ReadSpec]
    writes: Mapping[str, WriteSpec] = field(default_factory=lambda: MappingProxyType({}))
    init: tuple[InitWrite, ...] = ()
    keepalive: KeepAlive | None = None
    sunspec: SunSpecSpec | None = None
    min_current: float = 6.0
    max_current: float = 32.0
    energy_scope: str = "total"
    connector_stride: int = 0
    #: unused registers a merged block read may span between two entries (0 = only
    #: exactly adjacent entries share a request; for devices that refuse undefined ones)
    read_gap: int = 4
    port: int = 502
    notes: str = ""
    path: str = ""

    def read(self, quantity: str) -> ReadSpec | None:
        return self.reads.get(quantity)

    def write(self, quantity: str) -> WriteSpec | None:
        return self.writes.get(quantity)


# ---------------------------------------------------------------------------------------
# loading

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")

_DEVICE_KEYS = {
    "name", "title", "kind", "transports", "unit_id", "gap_ms", "max_read", "register",
    "type", "word_order", "sentinels", "string_encoding", "min_current", "max_current",
    "energy_scope", "connector_stride", "read_gap", "port", "notes",
}
_READ_KEYS = {
    "address", "register", "type", "word_order", "words", "scale", "offset", "shift", "mask",
    "threshold", "map", "sentinels", "scale_factor", "string_encoding", "byte", "missing",
}
_WRITE_KEYS = {
    "address", "register", "type", "word_order", "words", "scale", "offset", "function",
    "values", "string_encoding", "below_min",
}
_INIT_KEYS = {"address", "value", "register", "type", "word_order", "function", "note"}
_KEEPALIVE_KEYS = {"period", "fraction", "address", "value", "register", "function", "rewrite_setpoint"}
_SUNSPEC_KEYS = {"model", "bases"}
_TOP_KEYS = {"device", "read", "write", "init", "keepalive", "sunspec"}


def profile_names(directory: Path | None = None) -> list[str]:
    """Names of the profiles shipped (file names without .toml), sorted."""
    d = directory or PROFILE_DIR
    return sorted(p.stem for p in d.glob("*.toml"))


_cache: dict[Path, Profile] = {}


def load_profile(name: str, directory: Path | None = None) -> Profile:
    """The profile called ``name`` (cached: profiles are immutable data)."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ProfileError(f"profile name {name!r}: must be lower-case letters, digits and '-'")
    path = (directory or PROFILE_DIR) / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(profile_names(directory)) or "(none)"
        raise ProfileError(f"unknown device profile {name!r}; known profiles: {known}")
    key = path.resolve()
    if key not in _cache:
        _cache[key] = load_profile_file(path)
    return _cache[key]


def load_profile_file(path: str | Path) -> Profile:
    """Parse and validate one profile file (no cache: tests feed it broken files)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read: {exc.strerror}") from None
    return _Parser(path).profile(data)


class _Parser:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, problem: str) -> ProfileError:
        return ProfileError(f"{self.path}: {key}: {problem}")

    # -- primitive checks -----------------------------------------------------------
    def table(self, data: Any, key: str, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self.fail(key, f"must be a table, got {type(data).__name__}")
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise self.fail(f"{key}.{unknown[0]}" if key else unknown[0],
                            f"unknown key (allowed: {', '.join(sorted(allowed))})")
        return data

    def int_in(self, value: Any, key: str, lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be an integer, got {value!r}")
        if not lo <= value <= hi:
            raise self.fail(key, f"must be {lo}..{hi}, got {value}")
        return value

    def number(self, value: Any, key: str, *, positive: bool = False, nonzero: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(key, f"must be a finite number, got {value!r}")
        if positive and value <= 0:
            raise self.fail(key, f"must be > 0, got {value}")
        if nonzero and value == 0:
            raise self.fail(key, "must not be 0")
        return float(value)

    def choice(self, value: Any, key: str, choices: tuple[str, ...]) -> str:
        if value not in choices:
            raise self.fail(key, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def text(self, value: Any, key: str) -> str:
        if not isinstance(value, str):
            raise self.fail(key, f"must be a string, got {value!r}")
        return value

    def encoding(self, value: Any, key: str) -> str:
        enc = self.text(value, key)
        try:
            "x".encode(enc)
        except LookupError:
            raise self.fail(key, f"unknown text encoding {enc!r}") from None
        return enc

    # -- the file ---------------------------------------------------------------------
    def profile(self, data: dict[str, Any]) -> Profile:
        self.table(data, "", _TOP_KEYS)
        if "device" not in data:
            raise self.fail("device", "missing [device] table")
        dev = self.table(data["device"], "device", _DEVICE_KEYS)
        for req in ("name", "kind", "transports"):
            if req not in dev:
                raise self.fail(f"device.{req}", "missing")
        name = self.text(dev["name"], "device.name")
        if name != self.path.stem:
            raise self.fail("device.name", f"must equal the file name {self.path.stem!r}, got {name!r}")
        kind = self.choice(dev["kind"], "device.kind", ("meter", "charger"))
        transports = dev["transports"]
        if not isinstance(transports, list) or not transports:
            raise self.fail("device.transports", "must be a non-empty list of 'tcp'/'rtu'")
        for i, t in enumerate(transports):
            self.choice(t, f"device.transports[{i}]", ("tcp", "rtu"))
        self.defaults = {
            "register": self.choice(dev.get("register", "holding"), "device.register", REGISTER_TYPES),
            "type": self.choice(dev.get("type", "uint16"), "device.type", DATA_TYPES),
            "word_order": self.choice(dev.get("word_order", "big"), "device.word_order", WORD_ORDERS),
            "sentinels": dev.get("sentinels", []),
            "string_encoding": self.encoding(dev.get("string_encoding", "ascii"), "device.string_encoding"),
        }
        max_read = self.int_in(dev.get("max_read", MAX_READ_REGISTERS), "device.max_read", 1, MAX_READ_REGISTERS)
        sunspec = self.sunspec(data["sunspec"]) if "sunspec" in data else None
        self.has_sunspec = sunspec is not None
        stride = self.int_in(dev.get("connector_stride", 0), "device.connector_stride", 0, 65535)

        reads_raw = self.table(data.get("read", {}), "read", set(READ_QUANTITIES))
        reads = {q: self.read_spec(q, v) for q, v in reads_raw.items()}
        writes_raw = self.table(data.get("write", {}), "write", set(WRITE_QUANTITIES))
        writes = {q: self.write_spec(q, v) for q, v in writes_raw.items()}
        for q, spec in reads.items():
            if not spec.is_bit and spec.words > max_read:
                raise self.fail(f"read.{q}.words", f"{spec.words} registers exceed device.max_read={max_read}")
        init_raw = data.get("init", [])
        if not isinstance(init_raw, list):
            raise self.fail("init", "must be an array of tables ([[init]])")
        init = tuple(self.init_write(i, v) for i, v in enumerate(init_raw))
        keepalive = self.keepalive(data["keepalive"]) if "keepalive" in data else None

        min_current = self.number(dev.get("min_current", 6), "device.min_current")
        max_current = self.number(dev.get("max_current", 32), "device.max_current", positive=True)
        if min_current < 0 or min_current > max_current:
            raise self.fail("device.min_current", f"must be 0..max_current ({max_current}), got {min_current}")
        if kind == "charger":
            if "current" not in writes:
                raise self.fail("write.current", "a charger profile needs a [write.current] register")
            if "state" not in reads and "plug" not in reads:
                raise self.fail("read", "a charger profile needs read.state or read.plug to know the IEC state")
            if "state" not in reads and "plug" in reads and "charging" not in reads:
                raise self.fail("read", "without read.state a charger needs both read.plug and read.charging")
        else:
            if writes:
                raise self.fail("write", "a meter profile has no write registers")
            if not any(q in reads for q in ("power", "energy_import", "power_l1", "current_l1")):
                raise self.fail("read", "a meter profile needs at least power, energy_import, power_l1 or current_l1")
        if "current" in writes and writes["current"].below_min == "disable" and "enable" not in writes:
            raise self.fail("write.current.below_min", "\"disable\" needs a [write.enable] register")
        if keepalive and keepalive.rewrite_setpoint and "current" not in writes:
            raise self.fail("keepalive.rewrite_setpoint", "needs a [write.current] register to rewrite")

        return Profile(
            name=name,
            title=self.text(dev.get("title", name), "device.title"),
            kind=kind,
            transports=tuple(transports),
            unit_id=self.int_in(dev.get("unit_id", 1), "device.unit_id", 0, 255),
            gap_ms=self.number(dev.get("gap_ms", 0), "device.gap_ms"),
            max_read=max_read,
            reads=MappingProxyType(reads),
            writes=MappingProxyType(writes),
            init=init,
            keepalive=keepalive,
            sunspec=sunspec,
            min_current=min_current,
            max_current=max_current,
            energy_scope=self.choice(dev.get("energy_scope", "total"), "device.energy_scope", ("total", "session")),
            connector_stride=stride,
            read_gap=self.int_in(dev.get("read_gap", 4), "device.read_gap", 0, MAX_READ_REGISTERS),
            port=self.int_in(dev.get("port", 502), "device.port", 1, 65535),
            notes=self.text(dev.get("notes", ""), "device.notes"),
            path=str(self.path),
        )

    def _register_and_type(self, key: str, d: dict[str, Any], register_default: str,
                           allowed_registers: tuple[str, ...]) -> tuple[str, str, int]:
        register = self.choice(d.get("register", register_default), f"{key}.register", allowed_registers)
        bit = register in ("coil", "discrete")
        type_ = self.choice(d.get("type", "bool" if bit else self.defaults["type"]), f"{key}.type", DATA_TYPES)
        if bit and type_ != "bool":
            raise self.fail(f"{key}.type", f"a {register} holds one bit: type must be bool, got {type_!r}")
        if type_ == "string":
            if "words" not in d:
                raise self.fail(f"{key}.words", "a string needs its length in registers (words)")
            words = self.int_in(d["words"], f"{key}.words", 1, MAX_READ_REGISTERS)
        else:
            words = TYPE_WORDS[type_]
            if "words" in d and d["words"] != words:
                raise self.fail(f"{key}.words", f"type {type_} is {words} register(s), got words={d['words']!r}")
        address = self.int_in(d.get("address"), f"{key}.address", 0, 65535) if "address" in d else None
        if address is None:
            raise self.fail(f"{key}.address", "missing")
        if address + words - 1 > 65535:
            raise self.fail(f"{key}.address", f"{address} + {words} registers runs past 65535")
        return register, type_, words

    def _sentinels(self, key: str, raw: Any, type_: str) -> tuple[int, ...]:
        if not isinstance(raw, list):
            raise self.fail(f"{key}.sentinels", "must be a list of raw integers or \"max\"")
        out: list[int] = []
        bits = 16 * TYPE_WORDS.get(type_, 1)
        for i, s in enumerate(raw):
            if s == "max":
                if type_ in ("float32", "float64", "string", "bool"):
                    continue  # NaN is always refused for floats; "max" means nothing here
                out.append((1 << (bits - 1)) - 1 if type_.startswith("int") else (1 << bits) - 1)
            elif isinstance(s, int) and not isinstance(s, bool):
                out.append(s)
            else:
                raise self.fail(f"{key}.sentinels[{i}]", f"must be an integer or \"max\", got {s!r}")
        return tuple(out)

    def read_spec(self, q: str, d: Any) -> ReadSpec:
        key = f"read.{q}"
        d = self.table(d, key, _READ_KEYS)
        register, type_, words = self._register_and_type(key, d, self.defaults["register"], REGISTER_TYPES)
        word_order = self.choice(d.get("word_order", self.defaults["word_order"]), f"{key}.word_order", WORD_ORDERS)
        scale = self.number(d.get("scale", 1), f"{key}.scale", nonzero=True)
        offset = self.number(d.get("offset", 0), f"{key}.offset")
        shift = self.int_in(d.get("shift", 0), f"{key}.shift", 0, 63)
        mask = self.int_in(d["mask"], f"{key}.mask", 1, (1 << 64) - 1) if "mask" in d else None
        threshold = self.int_in(d["threshold"], f"{key}.threshold", 0, (1 << 64) - 1) if "threshold" in d else None
        if (shift or mask is not None or threshold is not None) and type_ not in (
                "uint16", "int16", "uint32", "int32", "uint64", "int64"):
            raise self.fail(key, f"shift/mask/threshold need an integer type, got {type_}")
        byte = d.get("byte")
        if byte is not None:
            self.choice(byte, f"{key}.byte", ("low", "high"))
            if type_ != "string" or words != 1:
                raise self.fail(f"{key}.byte", "only for a one-register string (type = \"string\", words = 1)")
        scale_factor = None
        if "scale_factor" in d:
            if not self.has_sunspec:
                raise self.fail(f"{key}.scale_factor", "only in SunSpec profiles (with a [sunspec] table)")
            scale_factor = self.int_in(d["scale_factor"], f"{key}.scale_factor", 0, 65535)
            if type_ not in ("uint16", "int16", "uint32", "int32", "uint64", "int64"):
                raise self.fail(f"{key}.scale_factor", f"needs an integer type, got {type_}")
        mapping = self.read_map(key, q, d.get("map"), type_, threshold)
        if q == "state" and mapping is None and type_ != "string":
            raise self.fail(f"{key}.map", "a numeric state needs a map from raw values to IEC states A-F")
        sentinels = self._sentinels(key, d.get("sentinels", self.defaults["sentinels"]), type_)
        return ReadSpec(
            quantity=q, address=d["address"], register=register, type=type_, word_order=word_order,
            words=words, scale=scale, offset=offset, shift=shift, mask=mask, threshold=threshold,
            map=mapping, sentinels=sentinels, scale_factor=scale_factor,
            string_encoding=self.encoding(d.get("string_encoding", self.defaults["string_encoding"]),
                                          f"{key}.string_encoding"),
            byte=byte,
            missing=self.choice(d.get("missing", "error"), f"{key}.missing", ("error", "none")),
        )

    def read_map(self, key: str, q: str, raw: Any, type_: str, threshold: int | None) -> Mapping[Any, Any] | None:
        if raw is None:
            return None
        key = f"{key}.map"
        if not isinstance(raw, dict) or not raw:
            raise self.fail(key, "must be a non-empty table of raw value = canonical value")
        if type_ in ("float32", "float64", "bool"):
            raise self.fail(key, f"a map needs an integer or string type, got {type_}")
        if threshold is not None:
            raise self.fail(key, "use either map or threshold, not both")
        out: dict[Any, Any] = {}
        for k, v in raw.items():
            if type_ == "string":
                rk: Any = k
            else:
                try:
                    rk = int(k, 0)
                except ValueError:
                    raise self.fail(f"{key}.{k}", f"raw value must be an integer for type {type_}") from None
            if q == "state":
                if v not in IEC_STATES:
                    raise self.fail(f"{key}.{k}", f"must be an IEC 61851 state A-F, got {v!r}")
            elif isinstance(v, bool) or isinstance(v, str) or not isinstance(v, (int, float)):
                if not isinstance(v, bool):
                    raise self.fail(f"{key}.{k}", f"must be a number or true/false, got {v!r}")
            out[rk] = v
        return MappingProxyType(out)

    def write_spec(self, q: str, d: Any) -> WriteSpec:
        key = f"write.{q}"
        d = self.table(d, key, _WRITE_KEYS)
        register, type_, words = self._register_and_type(key, d, "holding", ("holding", "coil"))
        if type_ == "string":
            raise self.fail(f"{key}.type", "write registers carry numbers or bits, not strings")
        default_fn = 5 if register == "coil" else (16 if words > 1 else 6)
        function = self.int_in(d.get("function", default_fn), f"{key}.function", 1, 127)
        if register == "coil" and function not in (5, 15):
            raise self.fail(f"{key}.function", f"a coil is written with 5 or 15, got {function}")
        if register == "holding":
            if function not in (6, 16):
                raise self.fail(f"{key}.function", f"a holding register is written with 6 or 16, got {function}")
            if words > 1 and function != 16:
                raise self.fail(f"{key}.function", f"a {words}-register value must be written with 16 in one request")
        values = None
        if "values" in d:
            raw = d["values"]
            if not isinstance(raw, dict) or not raw:
                raise self.fail(f"{key}.values", "must be a non-empty table of canonical value = raw value")
            values = {}
            for k, v in raw.items():
                try:
                    ck: Any = int(k, 0)
                except ValueError:
                    ck = {"true": True, "false": False}.get(k)
                    if ck is None:
                        raise self.fail(f"{key}.values.{k}", "canonical value must be an integer or true/false") from None
                values[ck] = self.int_in(v, f"{key}.values.{k}", -(1 << 63), (1 << 64) - 1)
            values = MappingProxyType(values)
        below_min = self.choice(d.get("below_min", "zero"), f"{key}.below_min", ("zero", "disable"))
        if below_min == "disable" and q != "current":
            raise self.fail(f"{key}.below_min", "only applies to write.current")
        return WriteSpec(
            quantity=q, address=d["address"], register=register, type=type_,
            word_order=self.choice(d.get("word_order", self.defaults["word_order"]), f"{key}.word_order", WORD_ORDERS),
            words=words,
            scale=self.number(d.get("scale", 1), f"{key}.scale", nonzero=True),
            offset=self.number(d.get("offset", 0), f"{key}.offset"),
            function=function, values=values,
            string_encoding=self.defaults["string_encoding"], below_min=below_min,
        )

    def init_write(self, i: int, d: Any) -> InitWrite:
        key = f"init[{i}]"
        d = self.table(d, key, _INIT_KEYS)
        register, type_, words = self._register_and_type(key, d, "holding", ("holding", "coil"))
        if type_ in ("string", "float32", "float64"):
            raise self.fail(f"{key}.type", f"init values are integers or bits, got {type_}")
        if "value" not in d:
            raise self.fail(f"{key}.value", "missing")
        value = self.int_in(d["value"], f"{key}.value", -(1 << 63), (1 << 64) - 1)
        default_fn = 5 if register == "coil" else (16 if words > 1 else 6)
        function = self.int_in(d.get("function", default_fn), f"{key}.function", 1, 127)
        if function not in ((5, 15) if register == "coil" else (6, 16)) or (words > 1 and function != 16):
            raise self.fail(f"{key}.function", f"function {function} cannot write a {words}-word {register}")
        return InitWrite(
            address=d["address"], value=value, register=register, type=type_,
            word_order=self.choice(d.get("word_order", self.defaults["word_order"]), f"{key}.word_order", WORD_ORDERS),
            function=function, note=self.text(d.get("note", ""), f"{key}.note"),
        )

    def keepalive(self, d: Any) -> KeepAlive:
        d = self.table(d, "keepalive", _KEEPALIVE_KEYS)
        rewrite = d.get("rewrite_setpoint", False)
        if not isinstance(rewrite, bool):
            raise self.fail("keepalive.rewrite_setpoint", f"must be true or false, got {rewrite!r}")
        if ("period" in d) == ("fraction" in d):
            raise self.fail("keepalive", "give exactly one of period (s) or fraction (of failsafe_timeout)")
        period = self.number(d["period"], "keepalive.period", positive=True) if "period" in d else None
        fraction = None
        if "fraction" in d:
            fraction = self.number(d["fraction"], "keepalive.fraction", positive=True)
            if fraction >= 1:
                raise self.fail("keepalive.fraction", f"must be < 1 to write before the timeout, got {fraction}")
        address = None
        if rewrite:
            if "address" in d:
                raise self.fail("keepalive.address", "rewrite_setpoint rewrites write.current; omit address")
        else:
            if "address" not in d:
                raise self.fail("keepalive.address", "missing (or set rewrite_setpoint = true)")
            address = self.int_in(d["address"], "keepalive.address", 0, 65535)
        register = self.choice(d.get("register", "holding"), "keepalive.register", ("holding", "coil"))
        function = self.int_in(d.get("function", 5 if register == "coil" else 6), "keepalive.function", 1, 127)
        if function not in ((5, 15) if register == "coil" else (6, 16)):
            raise self.fail("keepalive.function", f"function {function} cannot write a {register}")
        return KeepAlive(
            period=period, fraction=fraction, address=address,
            value=self.int_in(d.get("value", 1), "keepalive.value", 0, 65535),
            register=register, function=function, rewrite_setpoint=rewrite,
        )

    def sunspec(self, d: Any) -> SunSpecSpec:
        d = self.table(d, "sunspec", _SUNSPEC_KEYS)
        if "model" not in d:
            raise self.fail("sunspec.model", "missing")
        bases = d.get("bases", [40000, 50000, 0])
        if not isinstance(bases, list) or not bases:
            raise self.fail("sunspec.bases", "must be a non-empty list of addresses")
        return SunSpecSpec(
            model=self.int_in(d["model"], "sunspec.model", 1, 65534),
            bases=tuple(self.int_in(b, f"sunspec.bases[{i}]", 0, 65535) for i, b in enumerate(bases)),
        )

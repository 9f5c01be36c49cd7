"""Every shipped profile loads, and broken profiles are refused naming file, key, problem.

The first test iterates over the directory, so a new profile file is tested by being there.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from drivers.contract import CpState
from drivers.profile import (
    IEC_STATES, PROFILE_DIR, Profile, ProfileError, load_profile, load_profile_file, profile_names,
)

ALL = profile_names()

EXPECTED = {
    "eastron-sdm630", "eastron-sdm72d-m-v2", "carlo-gavazzi-em340", "abb-b23", "sunspec-203",
    "heidelberg-ec", "evse-din", "phoenix-evcc-eth", "phoenix-charx", "alfen-eve", "abb-terra-ac",
    "vestel-evc04",
}


def test_the_shipped_profiles_are_there():
    assert EXPECTED <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_every_profile_loads_and_is_coherent(name):
    p = load_profile(name)
    assert isinstance(p, Profile) and p.name == name
    assert p.notes, f"{name}: every profile says in notes what is not verified"
    for spec in p.reads.values():
        assert spec.end - 1 <= 65535
        if p.connector_stride == 0:
            assert not spec.is_bit or spec.type == "bool"
    if "state" in p.reads and p.reads["state"].map:
        assert set(p.reads["state"].map.values()) <= set(IEC_STATES)
        assert all(CpState(v) for v in p.reads["state"].map.values())
    if p.kind == "charger":
        assert "current" in p.writes
        assert 0 <= p.min_current <= p.max_current


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(ProfileError, match=r"unknown device profile 'nope'.*eastron-sdm630"):
        load_profile("nope")


def test_profile_name_cannot_escape_the_directory():
    with pytest.raises(ProfileError, match="lower-case"):
        load_profile("../etc/passwd")


GOOD_METER = """
[device]
name = "{name}"
kind = "meter"
transports = ["tcp"]
notes = "test"
[read]
power = {{ address = 10, type = "int32" }}
"""


def write(tmp_path: Path, body: str, name: str = "t") -> Path:
    p = tmp_path / f"{name}.toml"
    p.write_text(textwrap.dedent(body).replace("{name}", name).replace("{{", "{").replace("}}", "}"))
    return p


def test_minimal_meter_loads(tmp_path):
    p = load_profile_file(write(tmp_path, GOOD_METER))
    assert p.reads["power"].words == 2 and p.reads["power"].register == "holding"
    assert p.unit_id == 1 and p.max_read == 125


BAD = [
    ("unknown key", GOOD_METER.replace('notes = "test"', 'notes = "test"\ncolour = "red"'),
     r"device\.colour: unknown key"),
    ("unknown quantity", GOOD_METER + "watts = { address = 1 }\n", r"read\.watts: unknown key"),
    ("unknown read key", GOOD_METER.replace("type = \"int32\"", "type = \"int32\", scael = 2"),
     r"read\.power\.scael: unknown key"),
    ("address range", GOOD_METER.replace("address = 10", "address = 70000"),
     r"read\.power\.address: must be 0\.\.65535, got 70000"),
    ("runs past end", GOOD_METER.replace("address = 10", "address = 65535"),
     r"read\.power\.address: 65535 \+ 2 registers runs past 65535"),
    ("bad type", GOOD_METER.replace("int32", "int24"), r"read\.power\.type: must be one of"),
    ("coil not bool", GOOD_METER.replace('type = "int32"', 'type = "int32", register = "coil"'),
     r"read\.power\.type: a coil holds one bit"),
    ("string without words", GOOD_METER + 'rfid = { address = 1, type = "string" }\n',
     r"read\.rfid\.words: a string needs its length"),
    ("words mismatch", GOOD_METER.replace('type = "int32"', 'type = "int32", words = 4'),
     r"read\.power\.words: type int32 is 2 register"),
    ("state not IEC", GOOD_METER + 'state = { address = 5, map = { 1 = "A", 2 = "X" } }\n',
     r"read\.state\.map\.2: must be an IEC 61851 state A-F, got 'X'"),
    ("numeric state without map", GOOD_METER + "state = { address = 5 }\n",
     r"read\.state\.map: a numeric state needs a map"),
    ("name mismatch", GOOD_METER.replace('name = "{name}"', 'name = "other"'),
     r"device\.name: must equal the file name 't'"),
    ("bad TOML", "[device\nname=", r"not valid TOML"),
    ("scale zero", GOOD_METER.replace('type = "int32"', 'type = "int32", scale = 0'),
     r"read\.power\.scale: must not be 0"),
    ("scale_factor without sunspec", GOOD_METER.replace('type = "int32"', 'type = "int32", scale_factor = 3'),
     r"read\.power\.scale_factor: only in SunSpec profiles"),
    ("meter with writes", GOOD_METER + "[write.current]\naddress = 1\n", r"write: a meter profile has no write"),
    ("unknown sentinel", GOOD_METER.replace('type = "int32"', 'type = "int32", sentinels = ["min"]'),
     r"read\.power\.sentinels\[0\]: must be an integer or \"max\""),
]


@pytest.mark.parametrize("body,match", [(b, m) for _, b, m in BAD], ids=[i for i, _, _ in BAD])
def test_bad_profiles_are_refused_naming_file_key_problem(tmp_path, body, match):
    path = write(tmp_path, body)
    with pytest.raises(ProfileError) as err:
        load_profile_file(path)
    assert str(path) in str(err.value)
    assert err.match(match)


GOOD_CHARGER = """
[device]
name = "{name}"
kind = "charger"
transports = ["rtu"]
notes = "test"
[read]
state = {{ address = 5, map = {{ 1 = "A", 2 = "B", 3 = "C" }} }}
[write.current]
address = 100
"""


@pytest.mark.parametrize("body,match", [
    (GOOD_CHARGER.replace("[write.current]\naddress = 100\n", ""), r"write\.current: a charger profile needs"),
    (GOOD_CHARGER + 'type = "uint32"\nfunction = 6\n', r"write\.current\.function: a 2-register value must be written with 16"),
    (GOOD_CHARGER + 'register = "input"\n', r"write\.current\.register: must be one of holding, coil"),
    (GOOD_CHARGER + "[keepalive]\nvalue = 1\n", r"keepalive: give exactly one of period"),
    (GOOD_CHARGER + "[keepalive]\nperiod = 10\n", r"keepalive\.address: missing"),
    (GOOD_CHARGER + "[keepalive]\nfraction = 1.5\naddress = 3\n", r"keepalive\.fraction: must be < 1"),
    (GOOD_CHARGER + "[[init]]\naddress = 3\n", r"init\[0\]\.value: missing"),
    (GOOD_CHARGER.replace('transports = ["rtu"]', 'transports = ["usb"]'), r"device\.transports\[0\]: must be one of tcp, rtu"),
    (GOOD_CHARGER + 'below_min = "disable"\n', r"write\.current\.below_min: \"disable\" needs a \[write\.enable\]"),
])
def test_bad_charger_profiles(tmp_path, body, match):
    with pytest.raises(ProfileError, match=match):
        load_profile_file(write(tmp_path, body))


def test_profile_directory_has_only_toml_profiles():
    stray = [p.name for p in PROFILE_DIR.iterdir() if p.suffix != ".toml" and not p.name.startswith((".", "__"))]
    assert stray == []

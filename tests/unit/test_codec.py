"""Codec: every type and option round-trips, and "no value" never becomes a number."""

from __future__ import annotations

import math
import struct
from types import MappingProxyType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.codec import EncodeError, decode, encode
from drivers.contract import DeviceError
from drivers.profile import TYPE_WORDS, ReadSpec, WriteSpec

INT_TYPES = {
    "uint16": (0, 0xFFFF), "int16": (-0x8000, 0x7FFF),
    "uint32": (0, 0xFFFF_FFFF), "int32": (-0x8000_0000, 0x7FFF_FFFF),
    "uint64": (0, (1 << 64) - 1), "int64": (-(1 << 63), (1 << 63) - 1),
}


def spec(type_: str = "uint16", **kw) -> ReadSpec:
    kw.setdefault("words", TYPE_WORDS.get(type_, 1))
    return ReadSpec(quantity=kw.pop("quantity", "power"), address=0, type=type_, **kw)


@st.composite
def int_case(draw):
    type_ = draw(st.sampled_from(sorted(INT_TYPES)))
    lo, hi = INT_TYPES[type_]
    order = draw(st.sampled_from(["big", "little"]))
    return spec(type_, word_order=order), draw(st.integers(lo, hi))


@given(int_case())
def test_integers_round_trip_every_type_and_word_order(case):
    s, value = case
    regs = encode(s, value)
    assert len(regs) == s.words and all(0 <= r <= 0xFFFF for r in regs)
    assert decode(s, regs) == value


@given(st.sampled_from(["float32", "float64"]), st.sampled_from(["big", "little"]),
       st.floats(allow_nan=False, allow_infinity=False, width=32))
def test_floats_round_trip(type_, order, value):
    s = spec(type_, word_order=order)
    assert decode(s, encode(s, value)) == pytest.approx(value)


@given(st.integers(0, 0xFFFF_FFFF), st.sampled_from([0.1, 0.01, 0.001, 10.0]), st.sampled_from([0.0, -40.0]))
def test_scale_and_offset_round_trip(raw, scale, offset):
    s = spec("uint32", scale=scale, offset=offset)
    value = raw * scale + offset
    assert decode(s, encode(s, value)) == pytest.approx(value, abs=scale / 2)


@given(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=20),
       st.sampled_from(["big", "little"]))
def test_ascii_strings_round_trip(text, order):
    s = spec("string", words=10, word_order=order, string_encoding="ascii", quantity="rfid")
    assert decode(s, encode(s, text)) == text


@given(st.text(alphabet=st.characters(min_codepoint=0x30, max_codepoint=0x5FF), max_size=15))
def test_utf16_strings_round_trip_vestel_rfid(text):
    s = spec("string", words=15, string_encoding="utf-16-be", quantity="rfid")
    assert decode(s, encode(s, text)) == text


def test_little_word_order_is_lsw_first():
    s = spec("int32", word_order="little")
    assert encode(s, 0x0001_0002) == [0x0002, 0x0001]
    assert encode(spec("int32"), 0x0001_0002) == [0x0001, 0x0002]


def test_string_too_long_is_refused_by_name():
    s = spec("string", words=2, quantity="rfid")
    with pytest.raises(EncodeError, match="rfid"):
        encode(s, "ABCDE")


def test_one_char_string_in_low_or_high_byte():
    low = spec("string", words=1, byte="low", quantity="state")
    high = spec("string", words=1, byte="high", quantity="state")
    assert decode(low, [0x0043]) == "C"
    assert decode(high, [0x4200]) == "B"
    assert encode(low, "B") == [0x0042]
    assert encode(high, "B") == [0x4200]


def test_alfen_mode3_state_string():
    s = spec("string", words=5, quantity="state")
    assert decode(s, encode(s, "C2")) == "C2"
    assert decode(s, [0x4231, 0, 0, 0, 0]) == "B1"


# -- sentinels and NaN ---------------------------------------------------------------

@pytest.mark.parametrize("type_,regs", [
    ("uint32", [0xFFFF, 0xFFFF]),
    ("int32", [0x7FFF, 0xFFFF]),
    ("uint64", [0xFFFF] * 4),
    ("int64", [0x7FFF, 0xFFFF, 0xFFFF, 0xFFFF]),
])
def test_abb_not_a_number_sentinels_raise_naming_quantity(type_, regs):
    bits = 16 * TYPE_WORDS[type_]
    sentinel = (1 << (bits - 1)) - 1 if type_.startswith("int") else (1 << bits) - 1
    s = spec(type_, sentinels=(sentinel,), quantity="energy_import")
    with pytest.raises(DeviceError, match="energy_import.*no value"):
        decode(s, regs)


def test_sentinel_given_unsigned_matches_signed_type():
    s = spec("int16", sentinels=(0xFFFF,), quantity="current_l1")
    with pytest.raises(DeviceError, match="current_l1"):
        decode(s, [0xFFFF])
    assert decode(s, [0xFFFE]) == -2


def test_alfen_unavailable_uint16():
    s = spec("uint16", sentinels=(0xFFFF,), quantity="phases")
    with pytest.raises(DeviceError, match="phases"):
        decode(s, [0xFFFF])
    assert decode(s, [3]) == 3


@pytest.mark.parametrize("type_", ["float32", "float64"])
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_nan_and_inf_floats_raise(type_, value):
    s = spec(type_, quantity="voltage_l2")
    # build the NaN/inf bit pattern by hand
    b = struct.pack(">f" if type_ == "float32" else ">d", value)
    regs = [int.from_bytes(b[i:i + 2], "big") for i in range(0, len(b), 2)]
    with pytest.raises(DeviceError, match="voltage_l2"):
        decode(s, regs)


def test_wrong_register_count_is_a_device_error():
    with pytest.raises(DeviceError, match="power.*expected 2"):
        decode(spec("float32"), [1])


# -- maps, thresholds, shift/mask ---------------------------------------------------------

HEIDELBERG = MappingProxyType({2: "A", 3: "A", 4: "B", 5: "B", 6: "C", 7: "C", 8: "C", 9: "E", 10: "F", 11: "F"})


def test_state_map_decodes_and_encodes_to_first_raw():
    s = spec("uint16", map=HEIDELBERG, quantity="state")
    assert [decode(s, [r]) for r in range(2, 12)] == list("AABBCCCEFF")
    assert encode(s, "C") == [6]


def test_unknown_raw_state_names_quantity_and_value():
    s = spec("uint16", map=HEIDELBERG, quantity="state")
    with pytest.raises(DeviceError, match=r"state: raw value 42"):
        decode(s, [42])


def test_abb_terra_status_shift_mask():
    s = spec("uint32", shift=8, mask=0x7F, map=MappingProxyType({0: "A", 1: "B", 2: "B", 4: "C"}), quantity="state")
    assert decode(s, [0x0000, 0x8400]) == "C"  # byte[2] = 0x84: high bit masked off
    assert decode(s, encode(s, "C")) == "C"


def test_threshold_bool():
    s = spec("uint32", threshold=0x0101, quantity="plug")
    assert decode(s, [0, 0x0101]) is True
    assert decode(s, [0, 0x0100]) is False
    assert decode(s, encode(s, True)) is True
    assert decode(s, encode(s, False)) is False


def test_coil_bits():
    s = ReadSpec(quantity="enabled", address=400, register="coil", type="bool")
    assert decode(s, [True, False]) is True
    assert encode(s, False) == [False]


# -- SunSpec scale factors ----------------------------------------------------------

def test_sunspec_scale_factor():
    s = spec("int16", scale_factor=6, quantity="current_l1")
    assert decode(s, [1234], scale_factor=-2) == pytest.approx(12.34)
    assert decode(s, encode(s, 12.34, scale_factor=-2), scale_factor=-2) == pytest.approx(12.34)
    assert decode(s, [5], scale_factor=3) == pytest.approx(5000)


def test_sunspec_scale_factor_not_implemented():
    s = spec("int16", scale_factor=6, quantity="current_l1")
    with pytest.raises(DeviceError, match="current_l1.*scale factor"):
        decode(s, [1], scale_factor=-0x8000)


# -- writes ---------------------------------------------------------------------------

def test_write_scale_heidelberg_tenths_of_amps():
    w = WriteSpec(quantity="current", address=261, scale=0.1)
    assert encode(w, 16) == [160]
    assert encode(w, 6.04) == [60]
    assert decode(w, [160]) == pytest.approx(16)


def test_write_values_map_canonical_to_raw():
    w = WriteSpec(quantity="phases", address=405, values=MappingProxyType({1: 0, 3: 1}))
    assert encode(w, 3) == [1]
    assert encode(w, 1.0) == [0]
    assert decode(w, [1]) == 3 and decode(w, [0]) == 1
    with pytest.raises(EncodeError, match="phases"):
        encode(w, 2)


def test_write_out_of_range_names_quantity():
    w = WriteSpec(quantity="current", address=1, type="uint16", scale=0.001)
    with pytest.raises(EncodeError, match="current.*outside uint16"):
        encode(w, 80)  # 80 000 mA does not fit 16 bits


def test_alfen_float32_setpoint():
    w = WriteSpec(quantity="current", address=1210, type="float32", words=2, function=16)
    assert decode(w, encode(w, 13.5)) == pytest.approx(13.5)


def test_sunspec_not_implemented_value_raises():
    s = spec("int16", scale_factor=22, quantity="power")
    with pytest.raises(DeviceError, match="power.*no value.*0x8000"):
        decode(s, [0x8000], scale_factor=0)
    e = spec("uint32", scale_factor=54, quantity="energy_import")
    with pytest.raises(DeviceError, match="energy_import"):
        decode(e, [0xFFFF, 0xFFFF], scale_factor=0)

"""The register-image servers: real pymodbus servers answering what the image holds,
strict the way real devices are, with faults that look like real failures."""

from __future__ import annotations

import asyncio
import os

import pytest

from agent.clock import SystemClock
from drivers.codec import NoValue
from drivers.contract import DeviceError, DeviceTimeout
from drivers.modbus.bus import RtuBus, TcpBus
from drivers.profile import load_profile
from hil.emulator import RegisterImage, serve_rtu_pty, serve_tcp

CLOCK = SystemClock()


@pytest.fixture
async def sdm630():
    img = RegisterImage("eastron-sdm630")
    handle = await serve_tcp("127.0.0.1", 0, [img])
    bus = TcpBus("t", CLOCK, "127.0.0.1", handle.port, timeout=0.25, retries=0)
    yield img, handle, bus
    await bus.close()
    await handle.close()


def f32(regs):
    from drivers.codec import decode
    from drivers.profile import ReadSpec
    return decode(ReadSpec(quantity="x", address=0, type="float32", words=2), regs)


async def test_set_reaches_the_wire_in_canonical_units(sdm630):
    img, _, bus = sdm630
    assert img.set("voltage_l1", 231.5) is True
    assert img.set("energy_import", 12_345_000) is True       # Wh; the meter stores kWh
    assert f32(await bus.read(1, "input", 0x0000, 2)) == pytest.approx(231.5)
    assert f32(await bus.read(1, "input", 0x0048, 2)) == pytest.approx(12_345.0)
    assert img.get("energy_import") == pytest.approx(12_345_000)


async def test_quantity_without_register_is_reported_not_raised(sdm630):
    img, _, _ = sdm630
    assert img.set("temperature", 20.0) is False
    with pytest.raises(KeyError, match="watts"):
        img.set("watts", 1)


async def test_undefined_address_is_illegal_address(sdm630):
    _, _, bus = sdm630
    with pytest.raises(DeviceError, match="ILLEGAL_ADDRESS"):
        await bus.read(1, "input", 0x0300, 2)


async def test_input_registers_are_not_writable(sdm630):
    _, _, bus = sdm630
    with pytest.raises(ValueError, match="read-only"):
        await bus.write(1, "input", 0, [1], 6)
    with pytest.raises(DeviceError, match="ILLEGAL_ADDRESS"):
        await bus.read(1, "holding", 0, 2)


async def test_silent_fault_times_out_within_the_bus_timeout(sdm630):
    img, handle, bus = sdm630
    img.fault("silent")
    t0 = asyncio.get_running_loop().time()
    with pytest.raises(DeviceTimeout, match="no answer within 0.25 s"):
        await bus.read(1, "input", 0, 2)
    assert asyncio.get_running_loop().time() - t0 < 0.25 * 2 + 0.2
    assert handle.requests[-1].unit_id == 1        # the request did arrive, unanswered
    img.clear_faults()
    assert len(await bus.read(1, "input", 0, 2)) == 2


async def test_exception_fault_names_the_exception(sdm630):
    img, _, bus = sdm630
    img.fault("exception", code=6)
    with pytest.raises(DeviceError, match=r"DEVICE_BUSY \(6\)"):
        await bus.read(1, "input", 0, 2)


async def test_exception_fault_limited_to_one_quantity(sdm630):
    img, _, bus = sdm630
    img.fault("exception", quantity="frequency")
    assert len(await bus.read(1, "input", 0, 2)) == 2
    with pytest.raises(DeviceError, match="DEVICE_FAILURE"):
        await bus.read(1, "input", 0x46, 2)


async def test_nan_fault_makes_the_float_nan(sdm630):
    img, _, bus = sdm630
    img.set("power", 5000)
    img.fault("nan", quantity="power")
    with pytest.raises(NoValue, match="nan"):
        f32(await bus.read(1, "input", 0x34, 2))
    img.clear_faults()
    assert f32(await bus.read(1, "input", 0x34, 2)) == pytest.approx(5000)


def test_fault_kinds_are_checked():
    img = RegisterImage("eastron-sdm630")
    with pytest.raises(ValueError, match="fault kind"):
        img.fault("smoke")
    with pytest.raises(ValueError, match="needs a quantity"):
        img.fault("nan")


async def test_client_writes_are_decoded_for_the_model():
    img = RegisterImage("heidelberg-ec")
    seen: list[tuple[str, object]] = []
    img.on_write(lambda q, v: seen.append((q, v)))
    handle = await serve_tcp("127.0.0.1", 0, [img])
    bus = TcpBus("t", CLOCK, "127.0.0.1", handle.port, timeout=0.5, retries=0)
    try:
        await bus.write(1, "holding", 261, [160], 6)        # 16.0 A in 0.1 A
        await bus.write(1, "holding", 257, [30000], 6)      # watchdog 30 s in ms
        await bus.write(1, "holding", 258, [4], 6)          # init: standby off
        assert seen == [("current", pytest.approx(16.0)), ("failsafe_timeout", pytest.approx(30.0)),
                        ("init", (258, 4))]
        assert img.get("applied_current") == pytest.approx(16.0)   # same register, read back
        with pytest.raises(DeviceError, match="ILLEGAL_ADDRESS"):
            await bus.write(1, "holding", 259, [1], 6)      # not in the profile: refused
    finally:
        await bus.close()
        await handle.close()


async def test_async_write_callbacks_are_awaited():
    img = RegisterImage("evse-din")
    got = asyncio.Event()

    async def cb(q, v):
        await asyncio.sleep(0)
        got.set()
    img.on_write(cb)
    async with await serve_tcp("127.0.0.1", 0, [img]) as handle:
        bus = TcpBus("t", CLOCK, "127.0.0.1", handle.port, timeout=0.5, retries=0)
        await bus.write(1, "holding", 1000, [10], 6)
        assert got.is_set()
        await bus.close()


async def test_multi_register_value_must_be_written_whole_and_with_fc16():
    img = RegisterImage("alfen-eve")
    async with await serve_tcp("127.0.0.1", 0, [img]) as handle:
        bus = TcpBus("t", CLOCK, "127.0.0.1", handle.port, timeout=0.5, retries=0)
        with pytest.raises(DeviceError, match="ILLEGAL_VALUE"):
            await bus.write(1, "holding", 1210, [0x4140], 6)          # half a float32
        with pytest.raises(DeviceError, match="ILLEGAL_ADDRESS"):
            await bus.write(1, "holding", 1212, [0, 0], 16)           # safe current is read-only
        await bus.write(1, "holding", 1210, [0x4140, 0x0000], 16)     # 12.0 A
        assert img.get("current") == pytest.approx(12.0)
        await bus.close()


async def test_fc16_only_register_refuses_fc06():
    img = RegisterImage("phoenix-charx")
    async with await serve_tcp("127.0.0.1", 0, [img]) as handle:
        bus = TcpBus("t", CLOCK, "127.0.0.1", handle.port, timeout=0.5, retries=0)
        with pytest.raises(DeviceError, match="ILLEGAL_FUNCTION"):
            await bus.write(1, "holding", 1301, [10], 6)
        await bus.write(1, "holding", 1301, [10], 16)
        assert img.get("current") == 10
        await bus.close()


async def test_charx_connectors_share_one_unit_at_their_stride():
    c1 = RegisterImage("phoenix-charx", connector_index=1)
    c2 = RegisterImage("phoenix-charx", connector_index=2)
    c1.set("state", "C")
    c2.set("state", "B")
    async with await serve_tcp("127.0.0.1", 0, [c1, c2]) as handle:
        bus = TcpBus("t", CLOCK, "127.0.0.1", handle.port, timeout=0.5, retries=0)
        assert (await bus.read(1, "holding", 1299, 1))[0] >> 8 == ord("C")
        assert (await bus.read(1, "holding", 2299, 1))[0] >> 8 == ord("B")
        await bus.close()


def test_overlapping_images_on_one_unit_are_refused():
    async def go():
        await serve_tcp("127.0.0.1", 0, [RegisterImage("evse-din"), RegisterImage("evse-din")])
    with pytest.raises(ValueError, match="overlap"):
        asyncio.run(go())


async def test_sunspec_layout_has_marker_common_model_and_end():
    img = RegisterImage("sunspec-203")
    async with await serve_tcp("127.0.0.1", 0, [img]) as handle:
        bus = TcpBus("t", CLOCK, "127.0.0.1", handle.port, timeout=0.5, retries=0)
        assert await bus.read(1, "holding", 40000, 4) == [0x5375, 0x6E53, 1, 66]
        assert await bus.read(1, "holding", 40070, 2) == [203, 105]
        assert await bus.read(1, "holding", 40070 + 2 + 105, 2) == [0xFFFF, 0]
        await bus.close()


async def test_tcp_stop_and_start_on_the_same_port(sdm630):
    img, handle, bus = sdm630
    port = handle.port
    await handle.stop()
    with pytest.raises(DeviceTimeout):
        await bus.read(1, "input", 0, 2)
    await handle.start()
    assert handle.port == port
    assert len(await bus.read(1, "input", 0, 2)) == 2


async def test_close_is_idempotent():
    handle = await serve_tcp("127.0.0.1", 0, [RegisterImage("evse-din")])
    await handle.close()
    await handle.close()
    with pytest.raises(RuntimeError):
        await handle.start()


async def test_tcp_server_only_on_loopback():
    with pytest.raises(ValueError, match="loopback"):
        await serve_tcp("0.0.0.0", 0, [RegisterImage("evse-din")])


# -- RTU over a pty ----------------------------------------------------------------

async def test_rtu_pty_two_units_and_silence_for_unknown_ones(tmp_path):
    link = tmp_path / "ttyRS485"
    hd = RegisterImage("heidelberg-ec")
    ed = RegisterImage("evse-din", unit_id=2)
    hd.set("state", "C")
    handle = await serve_rtu_pty([hd, ed], str(link), baudrate=19200, parity="E")
    bus = RtuBus("line", CLOCK, str(link), baudrate=19200, parity="E", timeout=0.2, retries=0)
    try:
        assert os.path.islink(link)
        assert (await bus.read(1, "input", 5, 1)) == [6]          # C1 raw
        await bus.write(2, "holding", 1000, [16], 6)
        assert ed.get("current") == 16
        with pytest.raises(DeviceTimeout):
            await bus.read(9, "holding", 1000, 1)                 # no such unit: silence
        assert (await bus.read(2, "holding", 1000, 1)) == [16]    # the line still works
        assert {r.unit_id for r in handle.requests} == {1, 2, 9}
    finally:
        await bus.close()
        await handle.close()
    assert not os.path.lexists(link)


async def test_every_profile_image_builds_and_serves():
    from drivers.profile import profile_names
    images = []
    for unit, name in enumerate(profile_names(), start=1):
        images.append(RegisterImage(load_profile(name), unit_id=unit))
    async with await serve_tcp("127.0.0.1", 0, images) as handle:
        assert len(handle.images) == len(images)

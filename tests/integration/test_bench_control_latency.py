"""The control-latency benchmark still runs (a benchmark nobody runs rots): one charger,
two base-load steps, both controllers as child processes, every figure measured."""

from __future__ import annotations

import random

from bench import bench_control_latency as bench


async def test_one_charger_two_steps_gives_every_figure(monkeypatch):
    monkeypatch.setattr(bench, "STEPS", 2)
    figures = await bench.run_size(1, random.Random(1))
    assert [f["figure"] for f in figures] == [
        "control latency p50, 1 charger (Modbus TCP)", "control latency p99, 1 charger (Modbus TCP)",
        "reaction from the grid read p50, 1 charger (Modbus TCP)", "reaction from the grid read p99, 1 charger (Modbus TCP)"]
    for f in figures:
        assert f["unit"] == "ms" and f["higher_is_better"] is False
        assert 0 < f["value"] < 5000 and 0 < f["floor"] < 5000, f
    latency, reaction = figures[0], figures[2]
    assert reaction["value"] <= latency["value"] and reaction["floor"] <= latency["floor"]

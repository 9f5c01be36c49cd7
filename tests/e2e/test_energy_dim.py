"""The grid operator's dim contact (§14a EnWG) on a real agent process (issue 4, "Done
when" 2): closed -> the EVs at the dimmed power within 2 poll cycles (rig ground truth);
opened -> released, the EVs back at what the site allows.

The contact is gpiozero's mock pin inside the agent process: the agent runs with
``EVSITE_GPIO_MOCK=1`` and the test drives GPIO17 through its control API
(``POST /test/gpio``, which exists only under that variable; drivers/gpio.py).

Site: 63 A fuse (it does not bind), two EVs at their 16 A; dim power 5 kW per charger,
so 10 kW for the site: 10000 / (3 x 230) = 14.5 A per phase for all EVs together.
Lifting the dim raises the chargers again once their minimum interval between changes
(10 s, the default tuning) has passed since the dim lowered them.
"""

from __future__ import annotations

import pytest

from agent.energy.limits import dim_amps
from drivers.gpio import MOCK_ENV
from hil.harness import Harness
from hil.trace import ev_current
from tests.e2e.energy_kit import POLL, describe, drawing, ev, evs_within, first, now, samples, wait_truth, \
    write_energy_site

pytestmark = pytest.mark.e2e

DIM_W = 5000
DIM_AMPS = dim_amps(DIM_W, 2, 230.0)   # 14.49 A per phase for both EVs


async def test_dim_contact_holds_the_site_at_the_dimmed_power_and_releases_it(tmp_path, monkeypatch):
    monkeypatch.setenv(MOCK_ENV, "1")
    async with Harness(write_energy_site(tmp_path, fuse=63, dim_power_w=DIM_W), tmp_path / "w") as h:
        api = h.agent_api()
        await h.plug("c1", **ev())
        await h.plug("c2", **ev())
        await wait_truth(h, lambda t: drawing(t, 16, "c1", "c2"), what="both EVs at their 16 A")
        assert (await h.agent_status())["energy"]["dim"]["active"] is False

        mark = await h.rig("trace_start")
        closed_at = now()
        assert await api.post("/test/gpio", {"pin": "GPIO17", "state": True}) == {"pin": "GPIO17", "state": True}
        await wait_truth(h, lambda t: drawing(t, 7, "c1", "c2"), what="both EVs dimmed")
        trace = [s for s in await samples(h, mark) if s["wall"] >= closed_at]
        dimmed = first(trace, evs_within(DIM_AMPS))
        assert dimmed is not None
        took = dimmed["wall"] - closed_at
        assert took <= 2 * POLL, f"dimmed after {took:.2f} s (> 2 cycles of {POLL} s): {describe(dimmed)}"
        status = await h.agent_status()
        assert status["energy"]["dim"] == {"active": True, "source": "gpio GPIO17"}
        limits = {lim["name"]: lim for lim in status["energy"]["phases"][0]["limits"]}
        assert limits["dim"]["binds"] and limits["dim"]["amps"] == pytest.approx(DIM_AMPS, abs=0.01)

        opened_at = now()
        await api.post("/test/gpio", {"pin": "GPIO17", "state": False})
        await wait_truth(h, lambda t: drawing(t, 16, "c1", "c2"), timeout=15, what="dim released: EVs back at 16 A")
        trace = await samples(h, mark)
        held = [s for s in trace if dimmed["seq"] <= s["seq"] and s["wall"] < opened_at]
        assert held and all(evs_within(DIM_AMPS)(s) for s in held), "over the dim limit while the contact was closed"
        assert max(max(ev_current(s)) for s in trace if s["wall"] >= opened_at) == pytest.approx(32, abs=0.1)
        assert (await h.agent_status())["energy"]["dim"]["active"] is False

    log = (tmp_path / "w" / "logs" / "agent.log").read_text()
    assert "dim signal ACTIVE" in log and "from gpio GPIO17: EVs held to 2 x 5000 W = 10000 W" in log
    assert "dim signal released" in log and "dim limit lifted" in log
    assert f"{MOCK_ENV}=1: dim input on GPIO17 is a MOCK pin" in log


async def test_without_the_mock_variable_there_is_no_test_route(tmp_path, monkeypatch):
    """The route is test-only: an agent started without EVSITE_GPIO_MOCK has none."""
    monkeypatch.delenv(MOCK_ENV, raising=False)
    async with Harness(write_energy_site(tmp_path), tmp_path / "w") as h:
        routes = (await h.agent_api().get("/"))["routes"]
        assert "POST /test/gpio" not in routes and "POST /authorize" in routes

"""The shipped example configs load cleanly, and the config reference is current.

Runs with the real device profiles (drivers/profiles), so an example naming a profile
that does not exist, or using one on the wrong bus type, fails here.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from agent.config import model
from agent.config.bind import hints
from agent.config.load import inspect_config, load_config
from agent.config.locate import KeyLines
from agent.config.reference import DOC_PATH, render

REPO = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO / "config"
EXAMPLES = sorted(CONFIG_DIR.glob("*.toml"))


def test_the_examples_are_there():
    names = {p.name for p in EXAMPLES}
    assert {"demo.toml", "single-wallbox.toml", "depot-fuse-tree.toml", "hil-rig.toml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_config_loads_and_passes_every_check(path):
    report = inspect_config(path)
    assert report.errors == [], "\n".join(map(str, report.errors))
    # warnings allowed only for files that exist on a real gateway, not in the repository
    unexpected = [w for w in report.warnings if "does not exist (yet)" not in w.message]
    assert unexpected == [], "\n".join(map(str, unexpected))
    assert report.config is not None and report.config.chargers()


def test_demo_site_is_what_the_demo_expects():
    cfg = load_config(CONFIG_DIR / "demo.toml")
    assert cfg.uplink.url == "ws://127.0.0.1:9000/ocpp" and cfg.uplink.station_id == "EVSITE-DEMO"
    assert cfg.uplink.ocpp == "1.6"
    assert cfg.site.state_dir == str(REPO / "run" / "demo")
    lan, rs485 = cfg.bus("lan"), cfg.bus("rs485")
    assert (lan.type, lan.host, lan.port) == ("tcp", "127.0.0.1", 15020)
    assert (rs485.type, rs485.port) == ("rtu", str(REPO / "run" / "demo" / "ttyRS485"))
    assert (rs485.baudrate, rs485.bytesize, rs485.parity, rs485.stopbits) == (19200, 8, "E", 1)
    summary = {d.profile: (d.bus, d.unit_id, d.role, d.connector_id, d.phases, d.wiring) for d in cfg.devices}
    assert summary == {
        "eastron-sdm630": ("lan", 2, "grid_meter", 0, 3, ["L1", "L2", "L3"]),
        "abb-terra-ac": ("lan", 1, "charger", 1, 3, ["L1", "L2", "L3"]),
        "vestel-evc04": ("lan", 255, "charger", 2, 3, ["L1", "L2", "L3"]),
        "heidelberg-ec": ("rs485", 1, "charger", 3, 1, ["L2"]),
    }
    assert cfg.limits.fuse_amps == 35 and all(c.max_current == 16 for c in cfg.chargers())


def test_hil_rig_has_one_of_every_shipped_profile():
    profile = pytest.importorskip("drivers.profile")
    cfg = load_config(CONFIG_DIR / "hil-rig.toml")
    used = {d.profile for d in cfg.devices}
    assert set(profile.profile_names()) <= used, "add the new profiles to config/hil-rig.toml"
    for bus in cfg.buses:
        if bus.type == "tcp":
            assert bus.host == "127.0.0.1"
        else:
            assert bus.port.startswith(str(REPO / "run" / "hil"))


def test_depot_has_the_fuse_tree_it_describes():
    cfg = load_config(CONFIG_DIR / "depot-fuse-tree.toml")
    assert len(cfg.chargers()) == 8
    circuits = {c.id: (model.per_phase(c.fuse_amps), c.parent) for c in cfg.limits.circuits}
    assert circuits["depot"] == ((63.0,) * 3, "")
    assert circuits["row-a"] == ((32.0,) * 3, "depot") and circuits["row-b"][1] == "depot"
    assert cfg.grid_meter().profile == "sunspec-203"
    assert cfg.uplink.security_profile == 2 and cfg.uplink.ca_bundle and cfg.uplink.url.startswith("wss://")
    assert len({c.priority for c in cfg.chargers()}) > 1


def test_config_reference_is_up_to_date():
    assert DOC_PATH.read_text(encoding="utf-8") == render(), \
        "docs/config.md is stale: run `python -m agent.config.reference --write`"


def test_every_model_field_is_documented():
    def walk(cls):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("doc"), f"{cls.__name__}.{f.name} has no doc"
            tp = hints(cls)[f.name]
            inner = getattr(tp, "__args__", (None,))[0] if getattr(tp, "__origin__", None) is list else tp
            if dataclasses.is_dataclass(inner):
                walk(inner)
    walk(model.SiteConfig)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_locator_finds_every_key_of_the_examples_on_its_own_line(path):
    text = path.read_text(encoding="utf-8")
    lines = KeyLines(text)
    source = text.splitlines()

    def walk(node, prefix):
        if isinstance(node, dict):
            for key, value in node.items():
                here = prefix + (key,)
                line = lines.exact(here)
                assert line is not None, here
                assert key in source[line - 1], (here, source[line - 1])
                walk(value, here)
        elif isinstance(node, list) and node and isinstance(node[0], dict):
            for i, item in enumerate(node):
                walk(item, prefix + (i,))

    walk(tomllib.loads(text), ())

"""``[limits.policy]``: the load manager's tuning as optional config keys.

Every key is optional with the allocator's own default; a bad one is one line naming it
(``file:line: limits.policy.<key>: ...``), through the loader and ``evsite check-config``.
"""

from __future__ import annotations

import dataclasses
import io
import textwrap

import pytest

from agent.cli_check_config import check_files
from agent.config.issues import ConfigErrors
from agent.config.load import inspect_text, load_config_text
from agent.config.model import PolicySection
from agent.energy.controller import EnergyController, policy_of
from agent.energy.model import Policy
from agent.clock import SimClock

SITE = """\
[uplink]
enabled = false

[limits]
fuse_amps = 35
{limits_extra}
[[buses]]
id = "lan"
type = "tcp"
host = "127.0.0.1"

[[devices]]
id = "c1"
role = "charger"
profile = "abb-terra-ac"
bus = "lan"
unit_id = 1
connector_id = 1
{tail}"""


def site(policy: str = "", limits_extra: str = "") -> str:
    tail = f"\n[limits.policy]\n{textwrap.dedent(policy)}" if policy else ""
    return SITE.format(limits_extra=limits_extra, tail=tail)


def only_error(text: str):
    errors = [i for i in inspect_text(text, name="site.toml").issues if i.is_error]
    assert len(errors) == 1, "\n".join(map(str, errors))
    return errors[0]


def test_the_config_defaults_are_the_allocators_defaults():
    """One list of keys, one set of defaults: the config section and Policy agree."""
    section = {f.name: f.default for f in dataclasses.fields(PolicySection)}
    policy = {f.name: f.default for f in dataclasses.fields(Policy)}
    assert section == policy


def test_without_the_section_the_controller_runs_on_the_defaults():
    config = load_config_text(site(), "site.toml")
    assert policy_of(config) == Policy()
    assert EnergyController(config, SimClock()).tuning == Policy()


def test_custom_values_reach_the_controller():
    config = load_config_text(site("""\
        rotation_interval = 600
        hysteresis = 2.5
        min_interval = 0
        switch_dwell = 1800
        """), "site.toml")
    tuning = EnergyController(config, SimClock()).tuning
    assert tuning == dataclasses.replace(Policy(), rotation_interval=600.0, hysteresis=2.5, min_interval=0.0,
                                         switch_dwell=1800.0)
    assert EnergyController(config, SimClock()).status()["policy"]["rotation_interval"] == 600.0


def test_rotation_interval_zero_turns_turns_off():
    config = load_config_text(site("rotation_interval = 0\n"), "site.toml")
    assert policy_of(config).rotation_interval == 0.0


@pytest.mark.parametrize(("line", "message"), [
    ("rotation_interval = -60", "must be 0..86400, got -60"),
    ("hysteresis = -1", "must be 0..16, got -1"),
    ("resolution = 0", "must be > 0 and <= 6, got 0"),
    ('rotation_interval = "15 min"', 'must be a number, got string "15 min"'),
    ("settle_time = true", "must be a number, got boolean true"),
    ("lower_timeout = inf", "must be a finite number, got float inf"),
    ("rotation_intervall = 600", 'unknown key (did you mean "rotation_interval"?)'),
    ("turns = 600", "unknown key; allowed here: resolution, settle_time, release_margin, hysteresis, "
                    "min_interval, lower_timeout, comply_tolerance, switch_delay, switch_dwell, switch_margin, "
                    "rotation_interval"),
])
def test_a_bad_key_is_one_error_naming_it(line, message):
    text = site(line + "\n")
    e = only_error(text)
    key = line.split(" = ")[0]
    assert e.path == f"limits.policy.{key}"
    assert e.message == message
    assert e.line == text.splitlines().index(line) + 1


def test_a_policy_key_in_limits_itself_is_pointed_to_its_table():
    e = only_error(site(limits_extra="rotation_interval = 600\n"))
    assert e.path == "limits.rotation_interval"
    assert e.message == "unknown key: rotation_interval belongs in [limits.policy]"


def test_policy_written_as_a_value_not_a_table():
    e = only_error(site(limits_extra="policy = 600\n"))
    assert (e.path, e.message) == ("limits.policy", "must be a table, got integer 600")


def test_load_config_and_check_config_print_one_line_naming_the_key(tmp_path):
    text = site("hysteresis = -1\n")
    line = text.splitlines().index("hysteresis = -1") + 1
    with pytest.raises(ConfigErrors) as info:
        load_config_text(text, "site.toml")
    assert [str(i) for i in info.value.issues] == [f"site.toml:{line}: limits.policy.hysteresis: must be 0..16, got -1"]
    path = tmp_path / "site.toml"
    path.write_text(text)
    out, err = io.StringIO(), io.StringIO()
    assert check_files([str(path)], out, err) == 1
    assert out.getvalue().splitlines() == [
        f"{path}:{line}: limits.policy.hysteresis: must be 0..16, got -1",
        f"{path}: 1 error",
    ]

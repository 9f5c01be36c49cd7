"""Cross-field rules, each seen failing and passing, on small configs.

Profiles come from an in-test source so the rules are tested whatever profiles the
drivers package ships (tests/unit/test_config_files.py runs them with the real ones).
"""

from __future__ import annotations

import os
from types import SimpleNamespace

from agent.config.checks import run_checks
from agent.config.load import inspect_text
from agent.config.model import BusSection, DeviceSection, LimitsSection, SiteConfig, UplinkSection


def profile(kind, transports=("tcp", "rtu"), max_current=32.0, stride=0, writes=("current",)):
    return SimpleNamespace(kind=kind, transports=tuple(transports), max_current=max_current, min_current=6.0,
                           connector_stride=stride, writes={w: object() for w in writes})


class FakeProfiles:
    def __init__(self, **profiles):
        self._p = {name.replace("_", "-"): p for name, p in profiles.items()}

    def names(self):
        return sorted(self._p)

    def get(self, name):
        p = self._p[name]
        if isinstance(p, Exception):
            raise p
        return p


PROFILES = FakeProfiles(
    meter=profile("meter"),
    tcp_meter=profile("meter", transports=("tcp",)),
    wallbox=profile("charger", max_current=16.0, writes=("current", "failsafe_current", "failsafe_timeout")),
    multi=profile("charger", stride=1000, writes=("current", "phases")),
    broken=ValueError("read.state.map: must be a non-empty table"),
)

HEAD = """\
[uplink]
enabled = false
[limits]
fuse_amps = 35
[[buses]]
id = "lan"
type = "tcp"
host = "10.0.0.2"
"""
RS485 = """\
[[buses]]
id = "rs485"
type = "rtu"
port = "/dev/ttyUSB0"
"""


def device(id, bus="lan", unit=1, role="charger", profile="wallbox", **extra):
    lines = [f'[[devices]]\nid = "{id}"\nbus = "{bus}"\nunit_id = {unit}\nrole = "{role}"\nprofile = "{profile}"']
    for key, value in extra.items():
        lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def findings(text, severity="error", profiles=PROFILES):
    report = inspect_text(text, name="c.toml", base_dir="/", profiles=profiles)
    return [(i.path, i.message) for i in report.issues if i.severity == severity]


def paths(text, severity="error", profiles=PROFILES):
    return [p for p, _ in findings(text, severity, profiles)]


def test_a_valid_site_has_no_findings():
    text = HEAD + device("grid", unit=2, role="grid_meter", profile="meter") + device("c1", connector_id=1)
    assert findings(text) == [] and findings(text, "warning") == []


def test_ids_unique_and_well_formed():
    text = HEAD + RS485.replace('id = "rs485"', 'id = "lan"') + device("c 1", connector_id=1) + device("c2", connector_id=2)
    found = dict(findings(text))
    assert 'duplicate bus id "lan" (also buses[0])' == found["buses[1].id"]
    assert "only letters, digits" in found["devices[0].id"]


def test_bus_must_exist_and_rtu_unit_ids_are_1_to_247():
    text = HEAD + RS485 + device("c1", bus="lna", connector_id=1) + device("c2", bus="rs485", unit=0, connector_id=2)
    found = dict(findings(text))
    assert found["devices[0].bus"] == 'no bus "lna" (did you mean "lan"?); buses: lan, rs485'
    assert found["devices[1].unit_id"] == 'must be 1..247 on RS-485 (bus "rs485"), got 0'
    # 0 and 255 are fine on TCP
    assert paths(HEAD + device("c1", unit=0, connector_id=1) + device("c2", unit=255, connector_id=2)) == []


def test_unit_ids_unique_per_bus_except_connectors_of_one_multi_connector_charger():
    clash = HEAD + device("c1", unit=3, connector_id=1) + device("m", unit=3, role="sub_meter", profile="meter")
    assert findings(clash) == [("devices[1].unit_id", 'unit id 3 is already used on bus "lan" by devices[0] ("c1")')]
    other_bus = HEAD + RS485 + device("c1", unit=3, connector_id=1) + device("m", bus="rs485", unit=3, role="sub_meter",
                                                                     profile="meter")
    assert paths(other_bus) == []
    multi = (HEAD + device("x1", profile="multi", connector_id=1, connector_index=1)
             + device("x2", profile="multi", connector_id=2, connector_index=2))
    assert paths(multi) == []
    same_index = multi.replace("connector_index = 2", "connector_index = 1")
    assert paths(same_index) == ["devices[1].connector_index"]
    one_per_unit = multi.replace('"multi"', '"wallbox"')
    [(path, message)] = findings(one_per_unit)
    assert path == "devices[1].unit_id" and "one connector per unit id" in message


def test_profile_exists_matches_the_role_and_the_bus_type():
    text = (HEAD + RS485 + device("c1", profile="walbox", connector_id=1)
            + device("grid", role="grid_meter", profile="wallbox", unit=2)
            + device("m", bus="rs485", role="sub_meter", profile="tcp-meter", unit=3)
            + device("c2", profile="broken", connector_id=2, unit=4))
    found = dict(findings(text))
    assert found["devices[0].profile"].startswith('unknown device profile "walbox" (did you mean "wallbox"?); known:')
    assert found["devices[1].role"] == 'role grid_meter needs a meter profile; "wallbox" is a charger'
    assert found["devices[2].bus"] == 'profile "tcp-meter" does not work on a rtu bus (it supports: tcp)'
    assert found["devices[3].profile"] == "profile cannot be loaded: read.state.map: must be a non-empty table"


def test_unset_unit_id_differing_from_the_profile_default_warns():
    profiles = FakeProfiles(evc=SimpleNamespace(**vars(profile("charger")), unit_id=255))
    text = HEAD + device("c1", profile="evc", connector_id=1).replace("unit_id = 1\n", "")
    assert findings(text, "warning", profiles) == [
        ("devices[0].unit_id", 'not set, so 1; "evc" devices answer on 255 by default: set unit_id')]
    assert findings(HEAD + device("c1", profile="evc", connector_id=1), "warning", profiles) == []


def test_profile_rules_are_skipped_without_profiles():
    text = HEAD + device("c1", profile="no-such-profile", connector_id=1)
    assert paths(text, profiles=None) == []
    assert paths(text) == ["devices[0].profile"]


def test_at_most_one_grid_meter():
    text = (HEAD + device("g1", role="grid_meter", profile="meter", unit=1)
            + device("g2", role="grid_meter", profile="meter", unit=2) + device("c", unit=3, connector_id=1))
    [(path, message)] = findings(text)
    assert path == "devices[1].role" and "at most one" in message


def test_connector_ids_start_at_1_are_unique_and_gaps_warn():
    text = HEAD + device("c1", unit=1) + device("c2", unit=2, connector_id=2) + device("c3", unit=3, connector_id=2)
    assert paths(text) == ["devices[0].connector_id", "devices[2].connector_id"]
    gaps = HEAD + device("c1", unit=1, connector_id=1) + device("c2", unit=2, connector_id=3)
    assert paths(gaps) == []
    assert findings(gaps, "warning") == [("devices[1].connector_id",
                                          "connector ids have gaps (no 2); OCPP CSMSs expect connectors numbered 1..N")]


def test_no_charger_is_a_warning():
    text = HEAD + device("grid", role="grid_meter", profile="meter")
    assert findings(text, "warning") == [("devices", "no charger configured")]


def test_wiring():
    def check(**kw):
        return findings(HEAD + device("c1", connector_id=1, **kw))
    assert check(phases=1)[0][0] == "devices[0].wiring"            # 1-phase needs explicit wiring
    assert check(phases=1, wiring='["L3"]') == []
    assert check(phases=3, wiring='["L2", "L3", "L1"]') == []    # rotated is fine
    assert check(phases=3, wiring='["L1", "L1", "L2"]') == [
        ("devices[0].wiring", "lists L1 more than once; each charger phase is on a different site phase")]
    assert check(phases=1, wiring='["L1", "L2"]') == [("devices[0].wiring", "has 2 entries but phases = 1")]
    assert check(phases=1, wiring='["l2"]') == [("devices[0].wiring[0]",
                                                'must be "L1", "L2" or "L3", got "l2" (did you mean "L2"?)')]


def test_currents():
    def check(**kw):
        return findings(HEAD + device("c1", connector_id=1, **kw))
    assert check(min_current=10, max_current=8) == [("devices[0].min_current", "10 A is above max_current (8 A)")]
    assert check(fixed_current=3)[0][0] == "devices[0].fixed_current"
    assert check(fixed_current=0) == [] and check(fixed_current=10) == []
    assert check(failsafe_current=20, max_current=16) == [("devices[0].failsafe_current",
                                                            "20 A is above max_current (16 A)")]
    assert check(max_current=20) == [("devices[0].max_current",
                                      '20 A is above what profile "wallbox" supports (16 A)')]


def test_failsafe_timeout_against_the_poll_interval():
    text = "[site]\npoll_interval = 2\n" + HEAD + device("c1", connector_id=1, failsafe_timeout=2)
    assert paths(text) == ["devices[0].failsafe_timeout"]
    assert paths(text.replace("failsafe_timeout = 2", "failsafe_timeout = 5"), "warning") == [
        "devices[0].failsafe_timeout"]
    assert findings(text.replace("failsafe_timeout = 2", "failsafe_timeout = 6"), "warning") == []


def test_circuit_and_meter_references():
    text = (HEAD + '[[limits.circuits]]\nid = "row"\nfuse_amps = 32\n'
            + device("m1", role="sub_meter", profile="meter", unit=5)
            + device("c1", connector_id=1, circuit='"rwo"', meter='"m2"')
            + device("c2", unit=2, connector_id=2, circuit='"row"', meter='"c1"')
            + device("c3", unit=3, connector_id=3, circuit='"row"', meter='"m1"'))
    assert findings(text) == [
        ("devices[1].circuit", 'no circuit "rwo" (did you mean "row"?); circuits: row'),
        ("devices[1].meter", 'no device "m2"; sub_meters: m1'),
        ("devices[2].meter", 'device "c1" is a charger, not a sub_meter'),
    ]


def test_circuit_tree():
    tree = HEAD + device("c1", connector_id=1) + """\
[[limits.circuits]]
id = "a"
fuse_amps = 32
parent = "b"
[[limits.circuits]]
id = "b"
fuse_amps = [40, 40, 40]
parent = "a"
[[limits.circuits]]
id = "c"
fuse_amps = [16, 16]
parent = "x"
"""
    assert findings(tree) == [
        ("limits.circuits[0].parent", "circuits form a cycle: a -> b -> a"),
        ("limits.circuits[1].parent", "circuits form a cycle: b -> a -> b"),
        ("limits.circuits[2].fuse_amps", "must be one number or [L1, L2, L3] (3 numbers), got 2 numbers"),
        ("limits.circuits[2].parent", 'no circuit "x"; circuits: a, b, c'),
    ]
    assert findings(tree, "warning") == [("limits.circuits[1].fuse_amps",
                                          '40 A is above circuit "a" (32 A); the smaller one limits anyway')]


def test_site_limits():
    text = HEAD.replace("fuse_amps = 35", "fuse_amps = [35, 0, 35]\nfailsafe_amps = 40") + device("c1", connector_id=1)
    assert paths(text) == ["limits.fuse_amps[1]"]          # failsafe vs fuse stays quiet: the fuse is wrong
    text = HEAD.replace("fuse_amps = 35", "fuse_amps = 35\nfailsafe_amps = 40\ngrid_stale_after = 1")
    assert paths(text + device("c1", connector_id=1)) == ["limits.failsafe_amps", "limits.grid_stale_after"]


def test_buses():
    text = """\
[uplink]
enabled = false
[limits]
fuse_amps = 35
[[buses]]
id = "t"
type = "tcp"
port = "502"
baudrate = 19200
[[buses]]
id = "r1"
type = "rtu"
port = 1
[[buses]]
id = "r2"
type = "rtu"
[[buses]]
id = "r3"
type = "rtu"
port = "/dev/ttyUSB0"
host = "x"
[[buses]]
id = "r4"
type = "rtu"
port = "/dev/ttyUSB0"
gap_ms = 2000
timeout = 1
""" + device("c1", bus="r3", connector_id=1) + device("c2", bus="r4", connector_id=2)
    assert paths(text) == ["buses[0].host", "buses[0].port", "buses[1].port", "buses[2].port", "buses[4].port"]
    assert paths(text, "warning") == [
        "buses[0].id", "buses[0].baudrate", "buses[1].id", "buses[2].id", "buses[3].host",
        "buses[4].gap_ms", "buses[4].gap_ms"]


def test_rs485_round_uses_the_profiles_gap_by_default():
    slow = FakeProfiles(slow=SimpleNamespace(**vars(profile("meter")), gap_ms=300.0))
    text = HEAD + RS485 + "".join(device(f"m{n}", bus="rs485", unit=n, role="sub_meter", profile="slow")
                                  for n in range(1, 5))
    assert findings(text, "warning", slow) == [
        ("buses[0].id", 'no device is on bus "lan"'),
        ("buses[1].gap_ms", "4 devices x 300 ms gap take 1.2 s, not less than site.poll_interval (1 s)"),
        ("devices", "no charger configured"),
    ]
    assert findings(text.replace('port = "/dev/ttyUSB0"', 'port = "/dev/ttyUSB0"\ngap_ms = 200'), "warning",
                    slow) == [("buses[0].id", 'no device is on bus "lan"'), ("devices", "no charger configured")]


def test_uplink_url_and_station_id():
    def check(uplink, severity="error"):
        return findings("[uplink]\n" + uplink + "\n" + HEAD.replace("[uplink]\nenabled = false\n", "")
                        + device("c1", connector_id=1), severity)
    assert [p for p, _ in check("")] == ["uplink.station_id", "uplink.url"]
    ok = 'url = "ws://127.0.0.1:9000/ocpp"\nstation_id = "EVSITE-DEMO"'
    assert check(ok) == []
    assert check(ok.replace("ws:", "http:")) == [("uplink.url", "must start with ws:// or wss://, got http://")]
    leaked = check(ok.replace("ws://", "ws://admin:s3cret@"))
    assert leaked == [("uplink.url", "must not carry credentials: put the password in password_file "
                                     "(security profile 1 or 2)")]
    assert "s3cret" not in str(leaked)
    assert check(ok + '\n[uplink.extra]\n') != []                                # unknown table
    assert check(ok.replace("/ocpp", "/ocpp?x=1"))[0][0] == "uplink.url"
    assert check(ok.replace("EVSITE-DEMO", "site 1"))[0][0] == "uplink.station_id"
    assert check(ok.replace("EVSITE-DEMO", "a:b"))[0][0] == "uplink.station_id"  # breaks basic auth
    assert check(ok.replace("EVSITE-DEMO", "x" * 49))[0][0] == "uplink.station_id"
    assert check("enabled = false\nurl = \"wss://x/ocpp\"") == []


def test_security_profiles(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("key\n")
    os.chmod(secret, 0o600)
    base = 'url = "wss://csms.example/ocpp"\nstation_id = "S1"\n'

    def check(extra, severity="error"):
        return findings(HEAD.replace("[uplink]\nenabled = false\n", "[uplink]\n" + base + extra + "\n")
                        + device("c1", connector_id=1), severity)
    assert [p for p, _ in check("security_profile = 2")] == ["uplink.password_file"]
    assert check(f'security_profile = 2\npassword_file = "{secret}"') == []
    assert check(f'security_profile = 2\npassword_file = "{secret}"', "warning") == []
    assert [p for p, _ in check("security_profile = 3")] == ["uplink.client_cert", "uplink.client_key"]
    plain = HEAD.replace("[uplink]\nenabled = false\n", "[uplink]\n" + base.replace("wss:", "ws:")
                         + f'security_profile = 2\npassword_file = "{secret}"\n') + device("c1", connector_id=1)
    assert findings(plain) == [("uplink.url", "security profile 2 needs TLS: use wss://")]
    # file warnings: missing, open to others, set but unused
    missing = check(f'security_profile = 1\npassword_file = "{tmp_path / "nope"}"', "warning")
    assert missing[0][0] == "uplink.password_file" and "does not exist" in missing[0][1]
    os.chmod(secret, 0o644)
    [(path, message)] = check(f'security_profile = 2\npassword_file = "{secret}"', "warning")
    assert path == "uplink.password_file" and "mode 0644" in message and "chmod 600" in message
    unused = check(f'password_file = "{secret}"', "warning")
    assert unused == [("uplink.password_file", "ignored: security profile 0 does not use a password")]


def test_charger_extras_and_meter_keys():
    text = (HEAD + device("c1", connector_id=1, phases=1, wiring='["L1"]', can_switch_phases="true")
            + device("c2", unit=2, connector_id=2, can_switch_phases="true")
            + device("c3", unit=3, profile="multi", connector_id=3, can_switch_phases="true",
                     free_charging_tag='"' + "T" * 21 + '"')
            + device("m", unit=4, role="sub_meter", profile="meter", max_current=16))
    assert paths(text) == ["devices[0].can_switch_phases", "devices[1].can_switch_phases",
                           "devices[2].free_charging_tag"]
    assert findings(text, "warning") == [("devices[3].max_current", "only applies to chargers; ignored for a sub_meter")]


def test_failsafe_settings_the_profile_cannot_write_warn():
    text = HEAD + device("c1", profile="multi", connector_id=1, failsafe_current=6, failsafe_timeout=30)
    assert paths(text) == []
    assert findings(text, "warning") == [
        ("devices[0].failsafe_current", 'profile "multi" cannot set it: the charger keeps its own setting'),
        ("devices[0].failsafe_timeout", 'profile "multi" cannot set it: the charger keeps its own setting'),
    ]
    assert findings(text.replace('"multi"', '"wallbox"'), "warning") == []


def test_backoff_and_gpio():
    text = (HEAD.replace("enabled = false", "enabled = false\nbackoff_initial = 600\nbackoff_max = 60")
            + '[gpio]\ndim_pin = "pin 17"\n' + device("c1", connector_id=1))
    assert paths(text) == ["uplink.backoff_initial", "gpio.dim_pin"]
    assert paths(text.replace('"pin 17"', '"GPIO17"')) == ["uplink.backoff_initial"]


def test_run_checks_on_a_config_built_in_code():
    cfg = SiteConfig(
        uplink=UplinkSection(enabled=False),
        limits=LimitsSection(fuse_amps=35),
        buses=[BusSection(id="lan", type="tcp", host="127.0.0.1")],
        devices=[DeviceSection(id="c1", profile="wallbox", bus="lan", role="charger", connector_id=1),
                 DeviceSection(id="c2", profile="wallbox", bus="lan", role="charger", connector_id=1)],
    )
    found = run_checks(cfg, profiles=PROFILES)
    assert [(f.path, f.severity) for f in found] == [
        (("devices", 1, "unit_id"), "error"), (("devices", 1, "connector_id"), "error")]

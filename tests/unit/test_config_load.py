"""The site config loader: types, ranges, unknown/missing keys, lines, paths, syntax errors.

Profile rules are switched off here (``profiles=None``) so these tests do not depend on
which device profiles are shipped; tests/unit/test_config_checks.py covers them.
"""

from __future__ import annotations

import os
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config.issues import ConfigErrors, ConfigIssue, ConfigUnreadable
from agent.config.load import inspect_config, inspect_text, load_config, load_config_text
from agent.config.locate import KeyLines

GOOD = """\
[site]
name = "test site"

[uplink]
enabled = false

[limits]
fuse_amps = 35

[[buses]]
id = "lan"
type = "tcp"
host = "127.0.0.1"
port = 15020

[[buses]]
id = "rs485"
type = "rtu"
port = "dev/ttyRS485"
baudrate = 19200
parity = "E"

[[devices]]
id = "grid"
role = "grid_meter"
profile = "eastron-sdm630"
bus = "lan"
unit_id = 2

[[devices]]
id = "hd"
role = "charger"
profile = "heidelberg-ec"
bus = "rs485"
unit_id = 1
connector_id = 1
phases = 1
wiring = ["L2"]
max_current = 16
"""


def issues_of(text: str, **kw) -> list[ConfigIssue]:
    return inspect_text(textwrap.dedent(text), name="site.toml", profiles=None, **kw).issues


def errors_of(text: str) -> list[tuple[str, int | None]]:
    return [(i.path, i.line) for i in issues_of(text) if i.is_error]


def only_error(text: str) -> ConfigIssue:
    errors = [i for i in issues_of(text) if i.is_error]
    assert len(errors) == 1, "\n".join(map(str, errors))
    return errors[0]


# -- a good file ---------------------------------------------------------------------------

def test_good_config_loads_with_types_and_defaults(tmp_path):
    cfg = load_config_text(GOOD, base_dir=tmp_path, profiles=None)
    assert cfg.site.name == "test site"
    assert cfg.site.poll_interval == 1.0                      # default
    assert isinstance(cfg.limits.fuse_amps, float) and cfg.limits.fuse_amps == 35.0   # int accepted
    assert cfg.buses[0].port == 15020 and cfg.buses[1].parity == "E"
    assert [d.id for d in cfg.chargers()] == ["hd"] and cfg.grid_meter().id == "grid"
    assert cfg.devices[1].wiring == ["L2"] and cfg.devices[1].max_current == 16.0
    assert cfg.uplink.enabled is False


def test_relative_paths_resolve_against_the_config_directory(tmp_path):
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    text = GOOD.replace('name = "test site"', 'name = "x"\nstate_dir = "../state"') + '\n[store]\npath = "db/site.db"\n'
    path = conf_dir / "site.toml"
    path.write_text(text)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    old = os.getcwd()
    os.chdir(elsewhere)  # the working directory must not matter
    try:
        cfg = load_config("../etc/site.toml", profiles=None)
    finally:
        os.chdir(old)
    assert cfg.site.state_dir == str(tmp_path / "state")
    assert cfg.store.path == str(conf_dir / "db" / "site.db")
    assert cfg.buses[1].port == str(conf_dir / "dev" / "ttyRS485")   # rtu port is a path
    assert cfg.buses[0].port == 15020                                # tcp port is not
    assert cfg.control_socket == str(tmp_path / "state" / "control.sock")


def test_absolute_and_empty_paths_are_kept(tmp_path):
    cfg = load_config_text(GOOD + '\n[store]\npath = "/data/x.db"\n', base_dir=tmp_path, profiles=None)
    assert cfg.store.path == "/data/x.db"
    assert cfg.control.socket == ""


def test_fuse_as_number_or_list_and_port_as_int_or_string(tmp_path):
    cfg = load_config_text(GOOD.replace("fuse_amps = 35", "fuse_amps = [35, 32.5, 35]"),
                           base_dir=tmp_path, profiles=None)
    assert cfg.limits.fuse_amps == [35.0, 32.5, 35.0]
    e = only_error(GOOD.replace("fuse_amps = 35", 'fuse_amps = "35A"'))
    assert (e.path, e.line) == ("limits.fuse_amps", 8)
    assert e.message == 'must be a number or an array of numbers, got string "35A"'
    e = only_error(GOOD.replace("port = 15020", "port = 1.5"))
    assert e.path == "buses[0].port" and "must be an integer or a string, got float 1.5" in e.message


# -- one mistake at a time --------------------------------------------------------------------

def test_unknown_key_suggests_the_near_miss():
    e = only_error(GOOD.replace("unit_id = 2", "unitid = 2"))
    assert (e.path, e.line) == ("devices[0].unitid", 28)
    assert e.message == 'unknown key (did you mean "unit_id"?)'


def test_unknown_key_that_belongs_in_another_section():
    e = only_error(GOOD.replace('name = "test site"', 'name = "test site"\nfuse_amps = 3'))
    assert (e.path, e.line) == ("site.fuse_amps", 3)
    assert "belongs in [limits]" in e.message


def test_unknown_section():
    e = only_error(GOOD + "\n[devics]\nx = 1\n")
    assert (e.path, e.line) == ("devics", 41)
    assert 'unknown section (did you mean "devices"?)' == e.message


def test_wrong_types_name_the_expected_and_the_given_type():
    cases = {
        'poll_interval = "fast"': 'must be a number, got string "fast"',
        "poll_interval = true": "must be a number, got boolean true",
        'log_level = 3': "must be a string, got integer 3",
        "poll_interval = nan": "must be a finite number, got float nan",
    }
    for line, message in cases.items():
        e = only_error(GOOD.replace('name = "test site"', line))
        assert e.line == 2 and e.message == message, (line, str(e))
    e = only_error(GOOD.replace("unit_id = 2", "unit_id = 2.0"))
    assert (e.path, e.message) == ("devices[0].unit_id", "must be an integer, got float 2")
    e = only_error(GOOD.replace('enabled = false', 'enabled = "no"'))
    assert (e.path, e.message) == ("uplink.enabled", 'must be true or false, got string "no"')
    e = only_error(GOOD.replace('wiring = ["L2"]', 'wiring = "L2"'))
    assert (e.path, e.message) == ("devices[1].wiring", 'must be an array of strings, got string "L2"')


def test_out_of_range_and_not_a_choice():
    e = only_error(GOOD.replace('name = "test site"', "poll_interval = 0"))
    assert (e.path, e.line, e.message) == ("site.poll_interval", 2, "must be 0.1..60, got 0")
    e = only_error(GOOD.replace("baudrate = 19200", "baudrate = 19201"))
    assert e.message.startswith("must be one of 1200, 2400") and e.message.endswith("got 19201")
    e = only_error(GOOD.replace('parity = "E"', 'parity = "e"'))
    assert e.message.endswith('got "e" (did you mean "E"?)')
    e = only_error(GOOD.replace('type = "tcp"', 'type = "tpc"'))
    assert (e.path, e.line) == ("buses[0].type", 12) and 'did you mean "tcp"' in e.message
    e = only_error(GOOD.replace("max_current = 16", "max_current = 0"))
    assert e.message == "must be > 0 and <= 80, got 0"


def test_missing_required_key_points_at_its_table():
    e = only_error(GOOD.replace('profile = "heidelberg-ec"\n', ""))
    assert (e.path, e.line) == ("devices[1].profile", 30)   # the [[devices]] header
    assert e.message.startswith("missing required key")


def test_missing_required_section_has_no_line():
    text = GOOD.replace("[limits]\nfuse_amps = 35\n", "")
    e = only_error(text)
    assert (e.path, e.line) == ("limits", None)
    assert e.message.startswith("missing [limits] section")
    assert str(e) == f"site.toml: limits: {e.message}"


def test_single_brackets_for_an_array_of_tables():
    text = GOOD[:GOOD.index("[[devices]]")] + '[devices]\nid = "x"\n'
    e = only_error(text)
    assert (e.path, e.line) == ("devices", 23)
    assert "write [[devices]] (double brackets)" in e.message


def test_double_brackets_for_a_table():
    e = only_error(GOOD.replace("[site]", "[[site]]"))
    assert e.path == "site" and "write [site], not [[site]]" in e.message


def test_syntax_error_gives_line_and_column():
    text = GOOD.replace("unit_id = 2", "unit_id = = 2")
    report = inspect_text(text, name="site.toml", profiles=None)
    assert report.config is None
    [e] = report.issues
    assert (e.line, e.column) == (28, 11)
    assert str(e).startswith("site.toml:28:11: TOML syntax error: ")


def test_duplicate_table_is_a_syntax_error_in_readable_words():
    [e] = inspect_text("[site]\n[site]\n", name="s.toml", profiles=None).issues
    assert e.line == 2 and "cannot declare site twice" in e.message


def test_not_utf8_is_reported_with_its_line(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[site]\nname = "Stra\xdfe"\n')
    [e] = inspect_config(path, profiles=None).issues
    assert e.line == 2 and "not UTF-8" in e.message


# -- everything at once -----------------------------------------------------------------------

BAD = """\
[site]
name = "bad site"
pol_interval = 2

[limits]
fuse_amps = 35

[[buses]]
id = "lan"
type = "tcp"
host = "127.0.0.1"

[[buses]]
id = "rs485"
type = "rtu"
port = "/dev/ttyUSB0"
parity = "X"

[[devices]]
id = "grid"
role = "grid_meter"
profile = "eastron-sdm630"
bus = "lan"
unit_id = "2"

[[devices]]
id = "hd"
role = "charger"
profile = "heidelberg-ec"
bus = "rs485"
unit_id = 248
connector_id = 1
phases = 1
wiring = ["L2"]
max_current = 16
min_current = 20

[[devices]]
id = "hd"
role = "charger"
bus = "rs458"
connector_id = 1
"""


def test_every_mistake_is_reported_with_its_key_path_and_line():
    issues = inspect_text(BAD, name="bad.toml", base_dir="/", profiles=None).issues
    found = [(i.path, i.line) for i in issues if i.is_error]
    assert found == [
        ("site.pol_interval", 3),            # unknown key
        ("buses[1].parity", 17),             # not one of the choices
        ("devices[0].unit_id", 24),          # wrong type
        ("devices[1].unit_id", 31),          # 1..247 on RS-485
        ("devices[1].min_current", 36),      # above max_current
        ("devices[2].profile", 38),          # missing required key -> its [[devices]] line
        ("devices[2].id", 39),               # duplicate id
        ("devices[2].bus", 41),              # no such bus
        ("devices[2].connector_id", 42),     # connector id used twice
        ("uplink.station_id", None),         # required while the uplink is enabled (the default),
        ("uplink.url", None),                # and not in the file at all: no line, listed last
    ]
    text = "\n".join(map(str, issues))
    assert "bad.toml:31: devices[1].unit_id: must be 1..247 on RS-485 (bus \"rs485\"), got 248" in text
    assert 'bad.toml:41: devices[2].bus: no bus "rs458" (did you mean "rs485"?); buses: lan, rs485' in text


def test_load_config_raises_with_every_error_and_unreadable_files_are_one_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(BAD)
    with pytest.raises(ConfigErrors) as info:
        load_config(path, profiles=None)
    assert len(info.value.issues) == 11
    assert str(info.value).splitlines()[0] == "11 problems in the site config"
    with pytest.raises(ConfigUnreadable, match=r"cannot read .*nope\.toml: No such file or directory$"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigUnreadable, match="it is a directory"):
        load_config(tmp_path)


def test_a_bad_value_does_not_cause_follow_up_errors():
    # both devices on "lan"; the grid meter's unit_id is a string, so it keeps the default 1,
    # the charger's unit 1: the duplicate-unit-id rule must not report that as a clash
    text = GOOD.replace("unit_id = 2", 'unit_id = "1"').replace('bus = "rs485"', 'bus = "lan"')
    assert errors_of(text) == [("devices[0].unit_id", 28)]
    # the same clash with a valid unit id is reported
    assert errors_of(text.replace('unit_id = "1"', "unit_id = 1")) == [("devices[1].unit_id", 35)]


def test_issue_text_format():
    issue = ConfigIssue("devices[2].unit_id", 14, "must be 1..247 on RS-485", file="config.toml")
    assert str(issue) == "config.toml:14: devices[2].unit_id: must be 1..247 on RS-485"
    warning = ConfigIssue("uplink.password_file", 3, "is mode 0644", file="c.toml", severity="warning")
    assert str(warning) == "c.toml:3: warning: uplink.password_file: is mode 0644"
    assert str(ConfigIssue("", 2, "TOML syntax error: x", file="c.toml", column=5)) == "c.toml:2:5: TOML syntax error: x"


# -- the line locator ---------------------------------------------------------------------------

LOCATOR_TEXT = '''\
# comment [not.a.table]
title = """
[fake]
key = 1
"""
[site]
"quoted key" = 1
a.b.c = 2          # dotted
[[devices]]
id = "a"
[[devices]]
id = "b"
inline = { x = 1, y = [1, 2] }
arr = [
  "one",   # first
  'two',
]
[devices.sub]
z = 3
[limits]
fuse_amps = 1
[[limits.circuits]]
id = "c0"
[[limits.circuits]]
id = "c1"
[last]
list = [{ id = "p" },
        { id = "q" }]
'''


def test_locator_finds_tables_arrays_dotted_and_inline_keys():
    lines = KeyLines(LOCATOR_TEXT)
    assert lines.exact(("title",)) == 2
    assert lines.exact(("fake",)) is None and lines.exact(("key",)) is None   # inside a string
    assert lines.exact(("site",)) == 6
    assert lines.exact(("site", "quoted key")) == 7
    assert lines.exact(("site", "a", "b", "c")) == 8 and lines.exact(("site", "a")) == 8
    assert lines.exact(("devices", 0)) == 9 and lines.exact(("devices", 0, "id")) == 10
    assert lines.exact(("devices", 1, "id")) == 12
    assert lines.exact(("devices", 1, "inline", "y", 1)) == 13
    assert lines.exact(("devices", 1, "arr", 1)) == 16
    assert lines.exact(("devices", 1, "sub", "z")) == 19
    assert lines.exact(("limits", "circuits", 1, "id")) == 25
    assert lines.exact(("last", "list", 1, "id")) == 28
    # fallbacks: a key not written -> its nearest written table; nothing -> None
    assert lines.line_of(("devices", 1, "unit_id")) == 11
    assert lines.line_of(("limits", "circuits", 0, "parent")) == 22
    assert lines.line_of(("gpio", "dim_pin")) is None


def test_locator_survives_text_it_cannot_parse():
    lines = KeyLines('[site]\nname = "x"\n[broken\n')
    assert lines.exact(("site", "name")) == 2


# -- robustness -----------------------------------------------------------------------------------

SCALARS = st.sampled_from(['""', '"x"', "0", "-1", "1.5", "true", "[]", "[1, 2]", '["L9"]', "{}", "{ a = 1 }",
                           "1979-05-27", "inf", '"../x"', "300", '"tcp"', '"charger"'])


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_any_mangled_config_gives_findings_never_an_exception(data):
    lines = GOOD.splitlines()
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(lines) - 1))
        action = data.draw(st.sampled_from(["drop", "value", "key", "dup"]))
        if action == "drop":
            del lines[i]
        elif action == "dup":
            lines.insert(i, lines[i])
        elif "=" in lines[i]:
            key, _ = lines[i].split("=", 1)
            if action == "value":
                lines[i] = f"{key}= {data.draw(SCALARS)}"
            else:
                lines[i] = f"{data.draw(st.sampled_from(['unit', 'phases', 'x_y', 'id', 'port']))} = 1"
        if not lines:
            break
    report = inspect_text("\n".join(lines) + "\n", name="m.toml", profiles=None)
    for issue in report.issues:
        assert issue.message and (issue.line is None or issue.line >= 1)
        if issue.path:
            assert issue.line is None or issue.line <= len(lines)

"""`evsite check-config`: output and exit codes, in process and as a real subprocess."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from agent.cli import main
from agent.cli_check_config import check_files

REPO = Path(__file__).resolve().parents[2]

BAD = """\
[site]
name = "bad"
poll_interval = 0

[uplink]
enabled = false

[limits]
fuse_amps = 35

[[buses]]
id = "lan"
type = "tcp"
host = "127.0.0.1"

[[devices]]
id = "c1"
role = "charger"
profile = "vestel-evc04"
bus = "lan"
unit_id = 255
connector_id = 1
colour = "red"

[[devices]]
id = "c2"
role = "charger"
profile = "vestel-evc04"
bus = "wan"
unit_id = 254
connector_id = 2
"""

WARN_ONLY = """\
[uplink]
enabled = false
[limits]
fuse_amps = 35
[[buses]]
id = "lan"
type = "tcp"
host = "127.0.0.1"
[[buses]]
id = "spare"
type = "tcp"
host = "127.0.0.2"
[[devices]]
id = "c1"
role = "charger"
profile = "vestel-evc04"
bus = "lan"
unit_id = 255
connector_id = 1
"""


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", "check-config", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=30)


def test_subprocess_valid_config_prints_a_summary_and_exits_0():
    result = run_cli("config/demo.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ('config/demo.toml: ok: "evsite demo", 4 devices, 3 chargers, '
                             "buses lan (tcp), rs485 (rtu)\n")
    assert result.stderr == ""


def test_subprocess_bad_config_lists_every_problem_sorted_by_line_and_exits_1(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(BAD)
    result = run_cli(str(path))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines == [
        f"{path}:3: site.poll_interval: must be 0.1..60, got 0",
        f'{path}:23: devices[0].colour: unknown key; allowed here: ' + lines[1].split("here: ", 1)[1],
        f'{path}:29: devices[1].bus: no bus "wan" (did you mean "lan"?); buses: lan',
        f"{path}: 3 errors",
    ]
    assert "id, profile, bus, unit_id" in lines[1]
    assert "Traceback" not in result.stderr


def test_subprocess_missing_file_is_one_line_and_exit_2(tmp_path):
    result = run_cli(str(tmp_path / "missing.toml"))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == f"evsite check-config: cannot read {tmp_path / 'missing.toml'}: No such file or directory\n"


def test_warnings_alone_exit_0_and_are_printed(tmp_path):
    path = tmp_path / "warn.toml"
    path.write_text(WARN_ONLY)
    out, err = io.StringIO(), io.StringIO()
    assert check_files([str(path)], out, err) == 0
    assert out.getvalue().splitlines() == [
        f'{path}:10: warning: buses[1].id: no device is on bus "spare"',
        f'{path}: ok: "evsite site", 1 device, 1 charger, buses lan (tcp), spare (tcp); 1 warning',
    ]
    assert err.getvalue() == ""


def test_several_files_worst_status_wins(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(BAD)
    out, err = io.StringIO(), io.StringIO()
    assert check_files([str(REPO / "config" / "demo.toml"), str(bad)], out, err) == 1
    assert out.getvalue().splitlines()[0].endswith('ok: "evsite demo", 4 devices, 3 chargers, buses lan (tcp), '
                                                   "rs485 (rtu)")
    out, err = io.StringIO(), io.StringIO()
    assert check_files([str(bad), str(tmp_path)], out, err) == 2
    assert err.getvalue() == f"evsite check-config: cannot read {tmp_path}: it is a directory\n"


def test_syntax_error_through_the_console_entry_point(tmp_path, capsys):
    path = tmp_path / "broken.toml"
    path.write_text('[site]\nname = "x\n')
    assert main(["check-config", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{path}:2:10: TOML syntax error: ")
    assert out[1] == f"{path}: 1 error"


def test_no_file_argument_is_a_usage_error(capsys):
    try:
        main(["check-config"])
    except SystemExit as exc:
        assert exc.code == 2
    else:
        raise AssertionError("argparse should exit")
    assert "FILE" in capsys.readouterr().err

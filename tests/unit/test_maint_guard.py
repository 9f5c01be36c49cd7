"""The boot guard: counts the starts of a release on trial and rolls it back in time."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from agent.maintenance import guard
from tests.maint_kit import fake_tree


def test_no_trial_is_nothing_to_do(tmp_path):
    root = fake_tree(tmp_path, "1.0", current="1.0")
    assert guard.check(root) == "no release on trial"
    assert guard.current_version(root) == "1.0"


def test_switch_is_one_rename_and_refuses_a_release_without_venv(tmp_path):
    root = fake_tree(tmp_path, "1.0", "2.0", current="1.0")
    guard.switch_current(root, "2.0")
    assert os.readlink(root / "current") == "releases/2.0"
    (root / "releases" / "3.0").mkdir()
    try:
        guard.switch_current(root, "3.0")
    except FileNotFoundError as exc:
        assert "3.0" in str(exc)
    else:
        raise AssertionError("switched to a release without a venv")
    assert guard.current_version(root) == "2.0"
    assert not list(root.glob("current.new*"))


def test_starts_are_counted_then_the_release_is_rolled_back(tmp_path):
    root = fake_tree(tmp_path, "1.0", "2.0", current="2.0")
    guard.begin_trial(root, "2.0", "1.0", deadline=time.time() + 600, max_starts=2)
    assert guard.check(root) == "release 2.0 on trial: start 1 of 2"
    assert guard.check(root) == "release 2.0 on trial: start 2 of 2"
    line = guard.check(root)
    assert line.startswith("rolled back to 1.0")
    assert guard.current_version(root) == "1.0"
    assert not (root / guard.TRIAL).exists()
    note = guard.read_json(root / guard.ROLLBACK)
    assert note is not None and note["version"] == "2.0" and "2 start(s)" in note["reason"]


def test_a_trial_past_its_deadline_is_rolled_back_at_the_next_start(tmp_path):
    root = fake_tree(tmp_path, "1.0", "2.0", current="2.0")
    guard.begin_trial(root, "2.0", "1.0", deadline=time.time() - 1, max_starts=5)
    assert "not confirmed before its deadline" in guard.check(root)
    assert guard.current_version(root) == "1.0"


def test_a_trial_whose_switch_never_happened_is_removed(tmp_path):
    root = fake_tree(tmp_path, "1.0", "2.0", current="1.0")
    guard.begin_trial(root, "2.0", "1.0", deadline=time.time() + 600, max_starts=3)
    assert "switch never happened" in guard.check(root)
    assert guard.current_version(root) == "1.0" and not (root / guard.TRIAL).exists()


def test_a_torn_trial_file_is_removed(tmp_path):
    root = fake_tree(tmp_path, "1.0", current="1.0")
    (root / guard.TRIAL).write_text('{"version": "2.0"')
    assert guard.check(root) == "no release on trial"
    (root / guard.TRIAL).write_text('{"version": "2.0"}')
    assert guard.check(root) == "trial file unreadable: removed"
    assert not (root / guard.TRIAL).exists()


def test_the_script_runs_standalone_and_never_blocks_the_start(tmp_path):
    """What systemd runs: the copy with the system Python, no evsite on the path."""
    root = fake_tree(tmp_path, "1.0", "2.0", current="2.0")
    guard.begin_trial(root, "2.0", "1.0", deadline=time.time() + 600, max_starts=0)
    script = tmp_path / "boot-guard.py"
    script.write_bytes(open(guard.__file__, "rb").read())
    out = subprocess.run([sys.executable, "-I", str(script), str(root)], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0 and "rolled back to 1.0" in out.stdout
    assert guard.current_version(root) == "1.0"
    broken = subprocess.run([sys.executable, "-I", str(script), str(tmp_path / "missing")], capture_output=True, text=True)
    assert broken.returncode == 0 and "no release on trial" in broken.stdout

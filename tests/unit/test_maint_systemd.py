"""The systemd side of updates, as far as a machine without a running systemd allows: the
drop-in agrees with the code (guard path, install dir), passes ``systemd-analyze verify``
together with the installed unit, and the release tree install.sh makes is the one the
updater works on (current release, completeness marker, switch, prune)."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config.model import MaintenanceSection
from agent.maintenance import guard
from agent.maintenance.release import Releases

REPO = Path(__file__).resolve().parents[2]
DROPIN = REPO / "systemd" / "updates.conf"


def service(path: Path) -> configparser.SectionProxy:
    cp = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    cp.optionxform = str
    cp.read(path)
    return cp["Service"]


def test_the_drop_in_runs_the_guard_the_updater_places():
    svc = service(DROPIN)
    root = MaintenanceSection().install_dir
    assert svc["ExecStartPre"] == f"-/usr/bin/python3 -I {root}/{guard.GUARD_COPY} {root}"
    assert svc["ReadWritePaths"] == root


@pytest.mark.slow
def test_install_sh_tree_is_the_updaters_tree_and_the_drop_in_verifies(tmp_path):
    prefix = tmp_path / "root"
    out = subprocess.run(["sh", str(REPO / "systemd" / "install.sh"), "--no-systemd", "--skip-deps", "--python",
                          sys.executable, "--prefix", str(prefix)], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    opt = prefix / "opt" / "evsite"
    releases = Releases(opt, keep=2)
    assert releases.current() == "0.1.0" and releases.complete("0.1.0") and releases.installed() == ["0.1.0"]
    (opt / "releases" / "0.0.9" / "venv").mkdir(parents=True)
    (opt / "releases" / "0.0.9" / ".evsite-release").write_text("older\n")
    releases.switch("0.0.9")                       # what a rollback does, on install.sh's tree
    assert os.readlink(opt / "current") == "releases/0.0.9"
    releases.switch("0.1.0")
    assert releases.prune() == [] and sorted(releases.installed()) == ["0.0.9", "0.1.0"]

    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    unit = prefix / "etc" / "systemd" / "system" / "evsite.service"
    dropin = unit.with_name("evsite.service.d") / "updates.conf"   # install.sh put it there
    assert dropin.read_text() == DROPIN.read_text().replace("/opt/evsite", str(opt))
    shutil.copy(guard.__file__, opt / guard.GUARD_COPY)
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "SYSTEMD_UNIT_PATH": f"{unit.parent}:"})
    assert verify.returncode == 0, verify.stderr
    assert "evsite.service" not in verify.stderr
    # the guard as ExecStartPre runs it: system Python, isolated, nothing on trial
    run = subprocess.run([sys.executable, "-I", str(opt / guard.GUARD_COPY), str(opt)], capture_output=True, text=True)
    assert run.returncode == 0 and "no release on trial" in run.stdout

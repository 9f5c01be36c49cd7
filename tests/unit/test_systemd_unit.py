"""The systemd unit and the installer.

The unit is checked by ``systemd-analyze verify`` when the tool is present (it needs the
ExecStart binary to exist, so it verifies the copy install.sh wrote into a temp prefix,
whose paths point at the venv it just built). install.sh is run for real, as a test
install (--prefix, --no-systemd, --skip-deps: no network, no users), twice, and must
give the same tree.
"""

from __future__ import annotations

import configparser
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "evsite.service"
INSTALL = REPO / "systemd" / "install.sh"


def unit_sections(path: Path) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    cp.optionxform = str  # keys are case-sensitive in systemd
    cp.read(path)
    return cp


def test_unit_has_the_settings_the_agent_relies_on():
    svc = unit_sections(UNIT)["Service"]
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "WatchdogSec": "30",
        "Restart": "on-failure",
        "RestartPreventExitStatus": "2",  # evsite run: invalid config
        "ExecStart": "/opt/evsite/current/venv/bin/evsite run --config /etc/evsite/site.toml",
        "User": "evsite",
        "StateDirectory": "evsite",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ReadWritePaths": "/var/lib/evsite",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "SupplementaryGroups": "dialout gpio",
    }
    assert {k: svc.get(k) for k in expected} == expected
    assert int(svc["RestartSec"]) > 0
    # stop: the agent needs up to ~5 s (tick grace + closes); systemd must wait longer
    assert int(svc["TimeoutStopSec"]) > 5
    assert "PrivateDevices" not in svc  # serial, CAN and GPIO devices must stay visible
    assert "AF_CAN" in svc["RestrictAddressFamilies"] and "AF_UNIX" in svc["RestrictAddressFamilies"]


def test_exit_codes_match_the_unit():
    from agent import cli_run, supervisor

    svc = unit_sections(UNIT)["Service"]
    assert str(cli_run.EXIT_CONFIG) == svc["RestartPreventExitStatus"]
    assert supervisor.EXIT_CRASH != cli_run.EXIT_CONFIG and supervisor.EXIT_OK == 0


# ---------------------------------------------------------------- install.sh

def tree(root: Path) -> dict[str, tuple]:
    """Every path under root with its type, mode and content hash or link target.
    Bytecode caches are left out: they are the interpreter's, not the installer's."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def run_install(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(INSTALL), "--no-systemd", "--skip-deps", "--python", sys.executable, *args],
        capture_output=True, text=True, timeout=120,
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """One wheel for the idempotence test, so concurrent edits in the checkout cannot
    make two builds differ."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    with tarfile.open(work / "src.tar", "w") as tar:
        for name in ("pyproject.toml", "README.md", "agent", "drivers", "hil"):
            tar.add(REPO / name, arcname=name, filter=lambda t: None if "__pycache__" in t.name else t)
    with tarfile.open(work / "src.tar") as tar:
        tar.extractall(src, filter="data")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(work / "dist"), str(src)], check=True, capture_output=True, timeout=120)
    [whl] = (work / "dist").glob("evsite-*.whl")
    return whl


@pytest.mark.slow
def test_install_twice_gives_the_same_tree_and_keeps_the_config(tmp_path, wheel):
    prefix = tmp_path / "root"
    for old in ("0.0.2", "0.0.9", "0.0.10"):  # earlier releases: the newest two are kept (--keep 3)
        (prefix / "opt/evsite/releases" / old).mkdir(parents=True)
    first = run_install("--prefix", str(prefix), "--wheel", str(wheel))
    assert first.returncode == 0, first.stderr
    assert sorted(p.name for p in (prefix / "opt/evsite/releases").iterdir()) == ["0.0.10", "0.0.9", "0.1.0"]
    site_toml = prefix / "etc/evsite/site.toml"
    assert site_toml.read_text() == (REPO / "config/single-wallbox.toml").read_text()
    site_toml.write_text(site_toml.read_text() + "# edited by the installer\n")
    before = tree(prefix)

    second = run_install("--prefix", str(prefix), "--wheel", str(wheel))
    assert second.returncode == 0, second.stderr
    assert "release 0.1.0 already installed, unchanged" in second.stdout
    assert "keeping existing" in second.stdout
    assert tree(prefix) == before

    opt = prefix / "opt/evsite"
    assert os.readlink(opt / "current") == "releases/0.1.0"
    assert (opt / "current/venv/bin/evsite").is_file()
    assert (opt / "releases/0.1.0/requirements.lock").read_bytes() == (REPO / "requirements.lock").read_bytes()
    assert stat.S_IMODE((prefix / "var/lib/evsite").stat().st_mode) == 0o750
    assert {p.name for p in (prefix / "etc/evsite/examples").iterdir()} >= {"single-wallbox.toml", "demo.toml"}
    unit = unit_sections(prefix / "etc/systemd/system/evsite.service")["Service"]
    assert unit["ExecStart"] == f"{prefix}/opt/evsite/current/venv/bin/evsite run --config {prefix}/etc/evsite/site.toml"
    assert unit["ReadWritePaths"] == f"{prefix}/var/lib/evsite"
    dropin = unit_sections(prefix / "etc/systemd/system/evsite.service.d/updates.conf")["Service"]
    assert dropin["ReadWritePaths"] == f"{prefix}/opt/evsite"       # the agent installs its own updates
    assert dropin["ExecStartPre"].endswith(f"boot-guard.py {prefix}/opt/evsite")


@pytest.mark.slow
def test_installed_unit_passes_systemd_analyze_verify(tmp_path):
    """Also the build-from-checkout path of install.sh (no --wheel)."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed (Debian: apt install systemd)")
    prefix = tmp_path / "root"
    result = run_install("--prefix", str(prefix))
    assert result.returncode == 0, result.stderr
    assert "building the evsite wheel" in result.stdout
    installed = prefix / "etc/systemd/system/evsite.service"
    verify = subprocess.run(["systemd-analyze", "verify", str(installed)], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stderr
    assert "evsite.service" not in verify.stderr  # no warnings about our unit either


def test_a_different_build_of_an_installed_version_is_refused(tmp_path, wheel):
    prefix = tmp_path / "root"
    rel = prefix / "opt/evsite/releases/0.1.0"
    rel.mkdir(parents=True)
    (rel / ".evsite-release").write_text("an older build\n")
    result = run_install("--prefix", str(prefix), "--wheel", str(wheel))
    assert result.returncode == 1
    assert "release 0.1.0 is installed from different code" in result.stderr and "--force" in result.stderr
    assert (rel / ".evsite-release").read_text() == "an older build\n"  # untouched


@pytest.mark.parametrize(
    "args, message",
    [
        (["--bogus"], "unknown option '--bogus'"),
        (["--keep", "0"], "--keep must be a number >= 1"),
        (["--wheel", "/nonexistent/evsite.whl", "--prefix", "/tmp/evsite-test-unused"], "wheel /nonexistent/evsite.whl not found"),
        (["--python", "/nonexistent/python3"], "no /nonexistent/python3 found"),
    ],
)
def test_bad_arguments_are_named(args, message):
    result = run_install(*args)
    assert result.returncode != 0
    assert message in result.stderr

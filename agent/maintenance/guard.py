"""The boot guard: rolls a new release back when it cannot even start.

A release that crashes at import or at start-up cannot roll itself back, and systemd
would restart it until its start limit and then give up: a bricked site. So the trial
of a new release is also written to a small file next to the releases
(``<install_dir>/trial.json``), and this module, run *before* the agent by systemd
(``ExecStartPre=``, see systemd/README.md) with the system Python, counts the starts:

- no trial file: nothing to do;
- the trial's release is not ``current`` (the switch never happened): stale, removed;
- more starts than the trial allows, or its deadline has passed: ``current`` is switched
  back to the previous release and the reason is written to ``rollback.json``, which
  the previous release reads at its start to tell the CSMS (InstallationFailed).

The agent itself ends the trial when it has booted and connected to the CSMS
(agent/maintenance/update.py), or rolls back itself when its confirm window runs out.

This file uses nothing but the standard library and imports nothing from evsite, so the
copy the updater places at ``<install_dir>/boot-guard.py`` runs whatever state the new
release is in. It always exits 0 (a guard that fails must not stop the agent from
starting); what it did goes to stdout, which systemd puts in the journal.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

TRIAL = "trial.json"
ROLLBACK = "rollback.json"
GUARD_COPY = "boot-guard.py"


def current_version(root: Path) -> str | None:
    """The release ``<root>/current`` points at (``releases/<version>``), or None."""
    try:
        target = os.readlink(root / "current")
    except OSError:
        return None
    return Path(target).name or None


def switch_current(root: Path, version: str) -> None:
    """Point ``current`` at ``releases/<version>`` with one atomic rename, so every
    reader sees the old or the new release, never a missing link."""
    release = root / "releases" / version
    if not (release / "venv").is_dir():
        raise FileNotFoundError(f"release {version} has no venv in {release}")
    tmp = root / f"current.new-{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(f"releases/{version}", tmp)
    os.replace(tmp, root / "current")
    _sync_dir(root)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write-then-rename, flushed, so a power cut leaves the old file or the new one."""
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _sync_dir(path.parent)


def read_json(path: Path) -> dict[str, Any] | None:
    """The object in ``path``; None when absent or unreadable (a torn file is no trial)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def begin_trial(root: Path, version: str, previous: str, deadline: float, max_starts: int) -> None:
    """Record that ``version`` is on trial; ``deadline`` is a Unix time."""
    write_json(root / TRIAL, {"version": version, "previous": previous, "deadline": deadline,
                              "max_starts": max_starts, "starts": 0})


def end_trial(root: Path) -> bool:
    """The trial is over (confirmed or rolled back by the agent). True if there was one."""
    try:
        (root / TRIAL).unlink()
    except FileNotFoundError:
        return False
    _sync_dir(root)
    return True


def rollback(root: Path, trial: dict[str, Any], reason: str) -> None:
    """Switch back to the trial's previous release and say why in ``rollback.json``."""
    switch_current(root, str(trial["previous"]))
    write_json(root / ROLLBACK, {"version": trial["version"], "previous": trial["previous"], "reason": reason,
                                 "at": time.time()})
    end_trial(root)


def check(root: Path, now: float | None = None) -> str:
    """One start of the agent: count it against the trial, roll back when it is over.
    Returns one line saying what happened."""
    now = time.time() if now is None else now
    trial = read_json(root / TRIAL)
    if trial is None:
        return "no release on trial"
    try:
        version, previous = str(trial["version"]), str(trial["previous"])
        deadline, max_starts = float(trial["deadline"]), int(trial["max_starts"])
        starts = int(trial.get("starts", 0)) + 1
    except (KeyError, TypeError, ValueError):
        end_trial(root)
        return "trial file unreadable: removed"
    if current_version(root) != version:
        end_trial(root)
        return f"release {version} is not current (the switch never happened): trial removed"
    if starts > max_starts:
        rollback(root, trial, f"release {version} did not come up in {max_starts} start(s)")
        return f"rolled back to {previous}: release {version} did not come up in {max_starts} start(s)"
    if now > deadline:
        rollback(root, trial, f"release {version} was not confirmed before its deadline")
        return f"rolled back to {previous}: release {version} was not confirmed before its deadline"
    trial["starts"] = starts
    write_json(root / TRIAL, trial)
    return f"release {version} on trial: start {starts} of {max_starts}"


def _sync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: boot-guard.py INSTALL_DIR   (e.g. /opt/evsite)", file=sys.stderr)
        return 2
    try:
        print(f"evsite boot guard: {check(Path(args[0]))}")
    except Exception as exc:  # never block the start of the agent
        print(f"evsite boot guard: failed, starting anyway: {type(exc).__name__}: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Release archives in, versioned release directories out; the switch and the rollback.

Layout (the same as systemd/install.sh makes, so an installed site updates itself):

    <install_dir>/releases/<version>/venv     one venv per release
    <install_dir>/releases/<version>/.evsite-release   written last: the release is complete
    <install_dir>/current -> releases/<version>          switched by one atomic rename

A release archive is one wheel (evsite-<version>-*.whl) or a tar (gzip/xz/bz2 or plain)
of wheels: evsite's and, optionally, newer dependencies. It comes from the CSMS, so it
is unpacked as hostile input: only regular files, no absolute paths, no ``..``, no links
or devices, a size and member cap, every wheel a sound zip whose members stay inside;
a truncated or corrupt archive is an error naming what is wrong. Nothing is extracted
by ``tarfile.extract``: member data is copied into a flat directory under names we
choose.

Installing is offline. The new venv is seeded with the running release's packages
(hard links where the file system allows, so a release costs little space and no SD
card writes), then ``pip install --no-index --find-links <wheels> <every wheel>``
installs exactly the archive's wheels over it; a dependency that is neither seeded nor
in the archive makes pip fail and the install with it. Finally the new release must
import its CLI and report the version it claims, before anything is switched.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import sys
import tarfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from agent.maintenance import guard

log = logging.getLogger("evsite.maintenance.release")

MARKER = ".evsite-release"
_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+!_-]{0,63}$")
_DIST_INFO = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._]*)-([^-/]+)\.dist-info/WHEEL$")


class ReleaseError(Exception):
    """The archive or the install is unusable; the message names what is wrong."""


class UnsafeArchive(ReleaseError):
    """The archive tries to write outside where it is unpacked (or holds links/devices)."""


@dataclass(frozen=True)
class Wheelhouse:
    """Unpacked wheels, flat in ``dir``; ``main`` is evsite's wheel, ``version`` its version."""

    dir: Path
    wheels: tuple[Path, ...]
    main: Path
    version: str


def _safe_name(name: str, what: str) -> PurePosixPath:
    path = PurePosixPath(name.replace("\\", "/"))
    if name.startswith(("/", "\\")) or path.is_absolute() or re.match(r"^[A-Za-z]:", name):
        raise UnsafeArchive(f"{what}: member {name!r} has an absolute path")
    if any(part == ".." for part in path.parts):
        raise UnsafeArchive(f"{what}: member {name!r} leaves the release directory ('..')")
    return path


def check_wheel(path: Path, what: str | None = None) -> tuple[str, str, str]:
    """(distribution name, version, wheel file name) of a sound wheel, else ReleaseError."""
    what = what or path.name
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            for name in names:
                _safe_name(name, what)
            bad = zf.testzip()
            if bad is not None:
                raise ReleaseError(f"{what}: member {bad!r} is corrupt (CRC mismatch)")
            found = [m for m in (_DIST_INFO.match(n) for n in names) if m]
            if len(found) != 1:
                raise ReleaseError(f"{what}: not a wheel (expected one *.dist-info/WHEEL, found {len(found)})")
            dist, version = found[0].group(1), found[0].group(2)
            tags = [line.split(":", 1)[1].strip() for line in zf.read(found[0].group(0)).decode("utf-8", "replace").splitlines()
                    if line.lower().startswith("tag:")]
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as exc:
        raise ReleaseError(f"{what}: not a readable zip/wheel ({exc})") from None
    except (OSError, KeyError, UnicodeDecodeError) as exc:
        raise ReleaseError(f"{what}: cannot be read: {exc}") from None
    if not tags:
        raise ReleaseError(f"{what}: its WHEEL file names no tag")
    if not _VERSION.match(version):
        raise ReleaseError(f"{what}: version {version!r} is not usable as a release name")
    return dist, version, f"{dist}-{version}-{tags[0]}.whl"


def unpack(archive: Path, into: Path, *, max_bytes: int, max_members: int = 500) -> Wheelhouse:
    """Unpack ``archive`` (a wheel, or a tar of wheels) into the new directory ``into``."""
    if into.exists():
        shutil.rmtree(into)
    into.mkdir(parents=True)
    what = f"release archive {archive.name}"
    with open(archive, "rb") as f:
        magic = f.read(4)
    if magic == b"PK\x03\x04":  # a zip (wheel) starts so; a tar holding a zip must not pass for one
        _, _, name = check_wheel(archive, what)
        shutil.copyfile(archive, into / name)
    else:
        _untar(archive, into, what, max_bytes=max_bytes, max_members=max_members)
    return _collect(into, what)


def _untar(archive: Path, into: Path, what: str, *, max_bytes: int, max_members: int) -> None:
    total = 0
    count = 0
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                count += 1
                if count > max_members:
                    raise ReleaseError(f"{what}: more than {max_members} members")
                path = _safe_name(member.name, what)
                if member.isdir():
                    continue
                if member.issym() or member.islnk():
                    raise UnsafeArchive(f"{what}: member {member.name!r} is a link (not allowed in a release)")
                if not member.isfile():
                    raise UnsafeArchive(f"{what}: member {member.name!r} is not a regular file")
                total += member.size
                if total > max_bytes:
                    raise ReleaseError(f"{what}: unpacks to more than {max_bytes} bytes")
                if not path.name.endswith(".whl"):
                    log.info("%s: ignoring %s (not a wheel)", what, member.name)
                    continue
                target = into / path.name
                if target.exists():
                    raise ReleaseError(f"{what}: two members named {path.name}")
                source = tar.extractfile(member)
                if source is None:
                    raise ReleaseError(f"{what}: member {member.name!r} has no data")
                with source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out)
    except tarfile.ReadError as exc:
        raise ReleaseError(f"{what}: neither a wheel nor a readable tar archive ({exc})") from None
    except (EOFError, OSError, tarfile.TarError) as exc:
        raise ReleaseError(f"{what}: truncated or corrupt ({type(exc).__name__}: {exc})") from None


def _collect(into: Path, what: str) -> Wheelhouse:
    wheels: list[Path] = []
    main: tuple[Path, str] | None = None
    for path in sorted(into.glob("*.whl")):
        dist, version, name = check_wheel(path)
        if name != path.name:  # pip insists on a correct wheel file name
            path = path.rename(into / name)
        wheels.append(path)
        if dist.lower().replace("-", "_") == "evsite":
            if main is not None:
                raise ReleaseError(f"{what}: holds two evsite wheels")
            main = (path, version)
    if main is None:
        raise ReleaseError(f"{what}: holds no evsite wheel" + (f" (only {', '.join(p.name for p in wheels)})" if wheels else ""))
    return Wheelhouse(into, tuple(wheels), main[0], main[1])


class Releases:
    """The release tree under ``root`` (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str], *, keep: int = 3, python: str | None = None,
                 seed: str | os.PathLike[str] | None = None, pip_timeout: float = 900.0) -> None:
        self.root = Path(root)
        self.dir = self.root / "releases"
        self.keep = max(2, keep)
        self.python = python or sys.executable
        #: the venv whose packages seed a new release: the running one
        self.seed = Path(seed) if seed is not None else (Path(sys.prefix) if sys.prefix != sys.base_prefix else None)
        self.pip_timeout = pip_timeout

    # ---- what is there ----------------------------------------------------------------
    def current(self) -> str | None:
        return guard.current_version(self.root)

    def usable(self) -> str | None:
        """Why updates cannot work here, or None when they can."""
        if not self.root.is_dir():
            return f"{self.root} does not exist: this agent does not run from a release install (systemd/install.sh)"
        if self.current() is None:
            return f"{self.root}/current is not a symlink to a release"
        if not os.access(self.root, os.W_OK) or (self.dir.exists() and not os.access(self.dir, os.W_OK)):
            return f"{self.root} is not writable by the agent (see systemd/README.md, 'Remote updates')"
        if self.seed is None:
            return "the agent does not run inside a venv: nothing to seed a new release from"
        return None

    def complete(self, version: str) -> bool:
        return (self.dir / version / MARKER).is_file()

    def installed(self) -> list[str]:
        """Complete releases, oldest install first."""
        if not self.dir.is_dir():
            return []
        found: list[tuple[int, str]] = []
        for p in self.dir.iterdir():
            marker = p / MARKER
            if marker.is_file():
                found.append((marker.stat().st_mtime_ns, p.name))
        return [name for _, name in sorted(found)]

    # ---- install, switch, prune --------------------------------------------------------
    async def install(self, wheels: Wheelhouse, *, archive_sha256: str = "") -> Path:
        """Build ``releases/<version>`` from ``wheels``; returns its directory. The
        running release is never touched; a half-built release is removed."""
        version = wheels.version
        if not _VERSION.match(version):
            raise ReleaseError(f"version {version!r} is not usable as a release name")
        if version == self.current():
            raise ReleaseError(f"release {version} is the one running")
        if self.seed is None:
            raise ReleaseError("the agent does not run inside a venv: nothing to seed a new release from")
        rel = self.dir / version
        if rel.exists():
            log.info("removing an earlier copy of release %s before installing it again", version)
            await asyncio.to_thread(shutil.rmtree, rel)
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            await self._build(rel, wheels)
            (rel / MARKER).write_text(json.dumps({"version": version, "installed_at": time.time(),
                                                  "archive_sha256": archive_sha256}) + "\n")
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, rel, True)
            raise
        log.info("release %s installed in %s", version, rel)
        return rel

    async def _build(self, rel: Path, wheels: Wheelhouse) -> None:
        venv = rel / "venv"
        await self._run([self.python, "-m", "venv", "--without-pip", str(venv)], "creating the venv")
        assert self.seed is not None
        src, dst = _site_packages(self.seed), _site_packages(venv)
        if not src.is_dir():
            raise ReleaseError(f"the running venv has no {src}")
        await asyncio.to_thread(_seed, src, dst)
        python = str(venv / "bin" / "python")
        await self._run([python, "-m", "pip", "install", "--isolated", "--no-index", "--find-links", str(wheels.dir),
                         "--no-cache-dir", "--disable-pip-version-check", "--no-warn-script-location",
                         *[str(w) for w in wheels.wheels]], "pip install")
        probe = "import agent, agent.cli; print(agent.__version__)"
        out = await self._run([python, "-c", probe], "checking the new release imports", cwd="/")
        got = out.strip().splitlines()[-1] if out.strip() else ""
        if got != wheels.version:
            raise ReleaseError(f"the new release reports version {got!r}, its wheel says {wheels.version!r}")

    async def _run(self, argv: list[str], what: str, cwd: str | None = None) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
        env["PIP_CONFIG_FILE"] = os.devnull
        env["PYTHONNOUSERSITE"] = "1"
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT, env=env, cwd=cwd)
        try:
            async with asyncio.timeout(self.pip_timeout):
                out, _ = await proc.communicate()
        except BaseException:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        text = out.decode("utf-8", "replace")
        if proc.returncode != 0:
            tail = " | ".join(text.strip().splitlines()[-6:])
            raise ReleaseError(f"{what} failed (exit {proc.returncode}): {tail}")
        return text

    def switch(self, version: str) -> None:
        if not self.complete(version):
            raise ReleaseError(f"release {version} is not completely installed: not switching to it")
        guard.switch_current(self.root, version)
        log.warning("current release is now %s", version)

    def remove(self, version: str) -> None:
        if version == self.current():
            raise ReleaseError(f"release {version} is current: not removing it")
        shutil.rmtree(self.dir / version, ignore_errors=True)

    def prune(self, protect: frozenset[str] | set[str] = frozenset()) -> list[str]:
        """Keep the ``keep`` newest complete releases (always the current one and
        ``protect``); remove older ones and any half-built directory."""
        current = self.current()
        keep_set = {v for v in (current, *protect) if v}
        complete = self.installed()
        for name in reversed(complete):
            if len(keep_set) >= self.keep:
                break
            keep_set.add(name)
        removed = []
        if self.dir.is_dir():
            for p in self.dir.iterdir():
                if p.name not in keep_set and p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                    removed.append(p.name)
        if removed:
            log.info("removed old release(s) %s", ", ".join(sorted(removed)))
        return removed


def _site_packages(venv: Path) -> Path:
    return venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def _seed(src: Path, dst: Path) -> None:
    """Copy ``src`` into the fresh ``dst`` by hard links (a copy across file systems).
    Safe to share: pip replaces files by unlinking, never by writing into them."""
    if dst.exists():
        shutil.rmtree(dst)

    def link(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    shutil.copytree(src, dst, copy_function=link, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))

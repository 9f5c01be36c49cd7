"""Read a site config file into a ``SiteConfig``, or say everything that is wrong with it.

Steps: read the bytes (unreadable file: ``ConfigUnreadable``, one line), decode UTF-8
and parse TOML (a syntax error gives line and column), bind to the model (types,
ranges, unknown and missing keys), resolve relative paths against the file's
directory (so a config means the same whatever the working directory of the service),
then run the cross-field checks. Every finding gets the line of its key from
``locate.KeyLines``. ``load_config`` raises ``ConfigErrors`` if any finding is an error
and logs the warnings; ``inspect_config`` returns everything for tools that print it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.config.bind import Binder
from agent.config.checkctx import ProfileSource
from agent.config.checks import SHIPPED, run_checks
from agent.config.issues import (
    ConfigErrors,
    ConfigIssue,
    ConfigUnreadable,
    Finding,
    path_text,
    sort_issues,
)
from agent.config.locate import KeyLines
from agent.config.model import BusSection, SiteConfig

log = logging.getLogger("evsite.config")

_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_AT_END = re.compile(r"\s*\(at end of document\)\s*$")
#: tomllib names keys as Python tuples: ('devices', 'id') -> devices.id
_KEY_TUPLE = re.compile(r"\(((?:'[^']*'(?:, )?)+),?\)")


@dataclass
class ConfigReport:
    """Everything one check of one file found; ``config`` is None if nothing could be built."""

    file: str
    config: SiteConfig | None
    issues: list[ConfigIssue] = field(default_factory=list)

    @property
    def errors(self) -> list[ConfigIssue]:
        return [i for i in self.issues if i.is_error]

    @property
    def warnings(self) -> list[ConfigIssue]:
        return [i for i in self.issues if not i.is_error]

    @property
    def ok(self) -> bool:
        return self.config is not None and not self.errors


def load_config(path: str | os.PathLike[str], *, profiles: ProfileSource | None | object = SHIPPED) -> SiteConfig:
    """The site config in ``path``; raises ``ConfigErrors`` listing every error, or
    ``ConfigUnreadable`` when the file cannot be read. Warnings are logged."""
    return _finish(inspect_config(path, profiles=profiles))


def load_config_text(
    text: str,
    name: str = "<string>",
    base_dir: str | os.PathLike[str] | None = None,
    *,
    profiles: ProfileSource | None | object = SHIPPED,
) -> SiteConfig:
    """Like ``load_config`` for text in memory; relative paths resolve against
    ``base_dir`` (default: the current directory)."""
    return _finish(inspect_text(text, name=name, base_dir=base_dir, profiles=profiles))


def _finish(report: ConfigReport) -> SiteConfig:
    for warning in report.warnings:
        log.warning("%s", warning)
    if report.errors or report.config is None:
        raise ConfigErrors(report.errors, report.warnings)
    return report.config


def inspect_config(path: str | os.PathLike[str], *, profiles: ProfileSource | None | object = SHIPPED) -> ConfigReport:
    """Read and check ``path``; raises only ``ConfigUnreadable``."""
    name = os.fspath(path)
    try:
        raw = Path(path).read_bytes()
    except IsADirectoryError:
        raise ConfigUnreadable(f"cannot read {name}: it is a directory") from None
    except OSError as exc:
        raise ConfigUnreadable(f"cannot read {name}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        issue = ConfigIssue("", line, f"not UTF-8 text (byte 0x{raw[exc.start]:02x})", file=name)
        return ConfigReport(name, None, [issue])
    base = Path(path).absolute().parent
    return inspect_text(text, name=name, base_dir=base, profiles=profiles)


def inspect_text(
    text: str,
    name: str = "<string>",
    base_dir: str | os.PathLike[str] | None = None,
    *,
    profiles: ProfileSource | None | object = SHIPPED,
) -> ConfigReport:
    """Parse, bind, resolve and check ``text``; never raises for bad content."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return ConfigReport(name, None, [_syntax_issue(exc, text, name)])
    binder = Binder()
    cfg = binder.site(data)
    resolve_paths(cfg, Path(base_dir) if base_dir is not None else Path.cwd())
    findings = binder.findings + run_checks(cfg, bad=binder.bad, given=binder.given, profiles=profiles)
    lines = KeyLines(text)
    issues = [_placed(f, lines, name) for f in findings]
    return ConfigReport(name, cfg, sort_issues(issues))


def _placed(finding: Finding, lines: KeyLines, name: str) -> ConfigIssue:
    return ConfigIssue(
        path=path_text(finding.path),
        line=lines.line_of(finding.path),
        message=finding.message,
        file=name,
        severity=finding.severity,
    )


def _syntax_issue(exc: tomllib.TOMLDecodeError, text: str, name: str) -> ConfigIssue:
    message = str(exc)
    line = column = None
    m = _POSITION.search(message)
    if m:
        line, column = int(m.group(1)), int(m.group(2))
        message = message[:m.start()]
    elif _AT_END.search(message):
        message = _AT_END.sub("", message) + " at the end of the file"
        line = text.count("\n") + (0 if text.endswith("\n") else 1)
    message = _KEY_TUPLE.sub(lambda m: ".".join(re.findall(r"'([^']*)'", m.group(1))), message)
    message = message[:1].lower() + message[1:]
    return ConfigIssue("", line, f"TOML syntax error: {message}", file=name, column=column)


def resolve_paths(cfg: Any, base: Path) -> None:
    """Make the relative path settings (marked ``path=`` in the model) absolute,
    relative to ``base`` (the config file's directory). Empty means "default" and stays."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        kind = f.metadata.get("path")
        if dataclasses.is_dataclass(value):
            resolve_paths(value, base)
        elif isinstance(value, list):
            for item in value:
                if dataclasses.is_dataclass(item):
                    resolve_paths(item, base)
        elif kind and isinstance(value, str) and value:
            if kind == "serial" and not (isinstance(cfg, BusSection) and cfg.type == "rtu"):
                continue
            if not os.path.isabs(value):
                setattr(cfg, f.name, os.path.normpath(os.path.join(base, value)))

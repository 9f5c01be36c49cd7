"""What is wrong with a config file, said so an installer can find and fix it.

Every problem becomes a ``ConfigIssue`` that names the file, the line (when known), the
key path in the form the installer sees it (``devices[2].unit_id``) and what is wrong.
The loader collects all of them instead of stopping at the first, so one run of
``evsite check-config`` shows the whole list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal

#: a key path: section and key names, and list indices (``("devices", 2, "unit_id")``)
KeyPath = tuple[str | int, ...]

Severity = Literal["error", "warning"]


def path_text(path: KeyPath) -> str:
    """``("devices", 2, "unit_id")`` -> ``devices[2].unit_id``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


@dataclass(frozen=True)
class Finding:
    """A problem found by the binder or a check, before it is placed in a file.

    ``path`` is the key the installer must change; the loader turns it into a line.
    """

    path: KeyPath
    message: str
    severity: Severity = "error"


@dataclass(frozen=True)
class ConfigIssue:
    """One problem (or warning) in one config file."""

    path: str          # key path text, "" for whole-file problems (syntax, encoding)
    line: int | None   # 1-based; None when the key does not appear in the file
    message: str
    file: str = "<string>"
    column: int | None = None
    severity: Severity = "error"

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        parts = [where]
        if self.severity == "warning":
            parts.append("warning")
        if self.path:
            parts.append(self.path)
        parts.append(self.message)
        return ": ".join(parts)


def sort_issues(issues: Iterable[ConfigIssue]) -> list[ConfigIssue]:
    """In file order: by line (unknown lines last), then column, then key path."""
    return sorted(
        issues,
        key=lambda i: (i.file, i.line is None, i.line or 0, i.column or 0, i.path),
    )


class ConfigError(Exception):
    """Base of everything the config loader raises for a bad or unreadable file."""


class ConfigUnreadable(ConfigError):
    """The file could not be read at all (missing, a directory, no permission)."""


class ConfigErrors(ConfigError):
    """The file was read but is not a valid site config; ``issues`` lists every error.

    ``warnings`` carries the non-fatal findings of the same run, so a caller printing
    the errors can print those too.
    """

    def __init__(self, issues: list[ConfigIssue], warnings: list[ConfigIssue] | None = None) -> None:
        self.issues = sort_issues(issues)
        self.warnings = sort_issues(warnings or [])
        count = len(self.issues)
        head = f"{count} problem{'s' if count != 1 else ''} in the site config"
        super().__init__("\n".join([head, *map(str, self.issues)]))

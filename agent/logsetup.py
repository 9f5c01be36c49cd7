"""Where log lines go, and what they must never contain.

Two destinations: stdout for the operator (under systemd it lands in the journal, which
timestamps lines itself and reads the level from a ``<N>`` syslog prefix, so we send no
timestamp there), and size-bounded rotating files under ``<state_dir>/logs`` that a
diagnostics upload can ship later without the journal.

Invariant 5 (secrets are never logged) is enforced here, on every record of every
logger, rather than trusted to each call site: a filter on both handlers rewrites the
message, its arguments and any traceback text through ``redact``. Known secret values
(the CSMS password once read from its file) can be registered so they are masked
wherever they appear, even in text no pattern anticipates.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

MASK = "***"

# Each pattern keeps its group 1 (the label) and masks the secret after it.
_PATTERNS: list[re.Pattern[str]] = [
    # HTTP Authorization headers, as text or in a dict repr / JSON
    re.compile(r"""((?:proxy-)?authorization['"]?\s*[:=]\s*['"]?(?:basic|bearer|digest)?\s*)[^\s'",}]+""", re.I),
    # key=value or "key": "value" for anything that smells like a secret
    re.compile(
        r"""((?:password|passwd|pwd|secret|token|api[_-]?key|private[_-]?key|client[_-]?key|authorizationkey|basicauthpassword)"""
        r"""['"]?\s*[:=]\s*['"]?)[^\s'",}&]+""",
        re.I,
    ),
    # OCPP configuration / variable values whose key names a secret:
    # {"key": "AuthorizationKey", "value": "..."} and 2.0.1 BasicAuthPassword attributeValue
    re.compile(
        r"""((?:AuthorizationKey|BasicAuthPassword)['"].{0,120}?(?:value|attributeValue)['"]?\s*[:=]\s*['"]?)[^'"\s,}]+""",
        re.I | re.S,
    ),
    # user:password@ in URLs
    re.compile(r"""(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^/\s@]+(?=@)""", re.I),
]
_PEM_KEY = re.compile(r"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----", re.S)

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def register_secret(value: str | bytes | None) -> None:
    """Mask this exact value in every future log line. Very short values are ignored:
    masking every ``1`` in the logs would hide more than it protects."""
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if value and len(value.strip()) >= 4:
        with _secrets_lock:
            _secrets.add(value.strip())


def redact(text: str) -> str:
    """``text`` with secrets replaced by ``***``."""
    if not text:
        return text
    with _secrets_lock:
        known = sorted(_secrets, key=len, reverse=True)
    for value in known:
        text = text.replace(value, MASK)
    text = _PEM_KEY.sub(f"-----BEGIN \\1PRIVATE KEY-----{MASK}-----END \\1PRIVATE KEY-----", text)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + MASK, text)
    return text


class RedactFilter(logging.Filter):
    """Rewrites each record in place before any handler formats it.

    The message is rendered once (``msg % args``) and redacted as a whole, because a
    secret can be split across the format string and its arguments.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: still log, still redact
            message = f"{record.msg!r} % {record.args!r}"
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


# syslog priorities (sd-daemon(3)): journald reads "<N>" at the start of a stdout line
_SYSLOG_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    """``<6>evsite.site: message``: level as a syslog prefix, no timestamp."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prio = _SYSLOG_PRIORITY.get(record.levelno)
        if prio is None:
            prio = 7 if record.levelno < logging.INFO else 3
        # every line of a traceback gets the prefix, or journald files it at the default level
        return "\n".join(f"<{prio}>{line}" for line in super().format(record).splitlines())


class UTCFormatter(logging.Formatter):
    """Timestamps in UTC with a ``Z``, so file logs from sites in different timezones
    line up with the store's times."""

    converter = time.gmtime

    def __init__(self, fmt: str) -> None:
        super().__init__(fmt, datefmt="%Y-%m-%dT%H:%M:%S")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return super().formatTime(record, datefmt) + f".{int(record.msecs):03d}Z"


def under_journal(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """True when ``stream`` is the journal: systemd sets JOURNAL_STREAM to the
    ``device:inode`` of the stream it connected, so a redirected stdout is not mistaken
    for it. Streams without a file descriptor trust the variable alone."""
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    if not value:
        return False
    try:
        dev, ino = (int(x) for x in value.split(":", 1))
    except ValueError:
        return True
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return True
    return (st.st_dev, st.st_ino) == (dev, ino)


@dataclass
class LogSetup:
    """What ``setup_logging`` installed, so it can be undone (tests, re-configuration)."""

    stdout_handler: logging.Handler
    file_handler: logging.Handler | None
    log_file: Path | None
    journal: bool

    def close(self) -> None:
        root = logging.getLogger()
        for h in (self.stdout_handler, self.file_handler):
            if h is not None:
                root.removeHandler(h)
                h.close()


_installed: LogSetup | None = None


def setup_logging(
    level: str = "INFO",
    *,
    state_dir: str | os.PathLike[str] | None = None,
    stream: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
    max_bytes: int = 1_000_000,
    backups: int = 5,
    file_level: str = "DEBUG",
) -> LogSetup:
    """Install the stdout handler (at ``level``) and, with ``state_dir``, the rotating
    file handler (at ``file_level``: the files are for diagnostics, so they keep more).

    Calling it again replaces what a previous call installed. A log directory that cannot
    be created is reported on stdout and skipped: the site must run without file logs.
    """
    global _installed
    if _installed is not None:
        _installed.close()
    stream = stream if stream is not None else sys.stdout
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}: use DEBUG, INFO, WARNING or ERROR")
    file_numeric = logging.getLevelName(file_level.upper())
    if not isinstance(file_numeric, int):
        raise ValueError(f"unknown file log level {file_level!r}")

    redactor = RedactFilter()
    journal = under_journal(stream, environ)
    out = logging.StreamHandler(stream)
    out.setLevel(numeric)
    out.addFilter(redactor)
    out.setFormatter(JournalFormatter() if journal else UTCFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))

    root = logging.getLogger()
    root.addHandler(out)
    file_handler: logging.Handler | None = None
    log_file: Path | None = None
    problem: str | None = None
    if state_dir is not None:
        log_dir = Path(state_dir) / "logs"
        try:
            log_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
            log_file = log_dir / "evsite.log"
            file_handler = logging.handlers.RotatingFileHandler(
                log_file, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
            )
        except OSError as exc:
            problem = f"file logs disabled: cannot write {log_dir}: {exc.strerror or exc}"
            log_file = None
        else:
            file_handler.setLevel(file_numeric)
            file_handler.addFilter(redactor)
            file_handler.setFormatter(UTCFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            root.addHandler(file_handler)
    root.setLevel(min(numeric, file_numeric) if file_handler else numeric)
    _installed = LogSetup(out, file_handler, log_file, journal)
    if problem:
        logging.getLogger("evsite.logsetup").warning("%s", problem)
    return _installed

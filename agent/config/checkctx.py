"""The frame the cross-field rules run in: a registry of rules and what they may ask.

Each rule is a function ``(ctx) -> None`` registered with ``@check("what it ensures")``;
the one-line description goes into the config reference, so the list of rules an
installer reads is the list the code runs. A rule reports through ``ctx.error`` /
``ctx.warn`` with the key path the installer must change, naming in ``uses`` the other
keys its verdict depends on: if any of them already failed to load, the rule stays
quiet, because its message would be a consequence of the problem already reported.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

from agent.config.issues import Finding, KeyPath, Severity
from agent.config.model import SiteConfig

Rule = Callable[["Ctx"], None]


@dataclass(frozen=True)
class RegisteredRule:
    name: str
    doc: str
    func: Rule


RULES: list[RegisteredRule] = []


def check(doc: str) -> Callable[[Rule], Rule]:
    """Register a cross-field rule, described in one line for the config reference."""
    def register(func: Rule) -> Rule:
        RULES.append(RegisteredRule(func.__name__, doc, func))
        return func
    return register


class ProfileSource(Protocol):
    """Device profiles as the checks see them (``drivers.profile`` or a test fake)."""

    def names(self) -> list[str]: ...

    def get(self, name: str) -> Any:
        """The profile (with ``kind``, ``transports``, ``max_current``, ``connector_stride``,
        ``writes``), or raise ``ValueError`` saying why it cannot be loaded."""
        ...


class ShippedProfiles:
    """The profiles in drivers/profiles, through ``drivers.profile``."""

    def __init__(self, module: Any) -> None:
        self._mod = module

    def names(self) -> list[str]:
        return self._mod.profile_names()

    def get(self, name: str) -> Any:
        return self._mod.load_profile(name)


def shipped_profiles() -> ProfileSource | None:
    """The shipped profiles, or None while the drivers package has none to offer.

    Imported lazily so the config package works (and its profile checks are merely
    skipped) on a tree where ``drivers.profile`` does not exist or has no profiles yet.
    """
    try:
        from drivers import profile as module
    except ImportError:
        return None
    source = ShippedProfiles(module)
    try:
        return source if source.names() else None
    except OSError:
        return None


@dataclass
class Ctx:
    cfg: SiteConfig
    #: key paths that already failed to load (their checks would only echo that)
    bad: frozenset[KeyPath] = frozenset()
    #: key paths the file wrote explicitly; None when unknown (config built in code)
    given: frozenset[KeyPath] | None = None
    profiles: ProfileSource | None = None
    findings: list[Finding] = field(default_factory=list)
    _profile_cache: dict[str, Any] = field(default_factory=dict)
    _profile_names: frozenset[str] | None = None

    def is_bad(self, path: KeyPath) -> bool:
        return any(path[:len(b)] == b for b in self.bad)

    def report(self, severity: Severity, path: KeyPath, message: str, uses: Iterable[KeyPath] = ()) -> None:
        if self.is_bad(path) or any(self.is_bad(u) for u in uses):
            return
        self.findings.append(Finding(path, message, severity))

    def error(self, path: KeyPath, message: str, uses: Iterable[KeyPath] = ()) -> None:
        self.report("error", path, message, uses)

    def warn(self, path: KeyPath, message: str, uses: Iterable[KeyPath] = ()) -> None:
        self.report("warning", path, message, uses)

    def wrote(self, path: KeyPath) -> bool | None:
        """Whether the file set ``path`` itself (None when that is not known)."""
        return None if self.given is None else path in self.given

    def profile(self, name: str) -> Any:
        """The profile called ``name``; None when profiles are unavailable or it fails
        (the profile rule reports that once, at the device's ``profile`` key)."""
        if self.profiles is None or not name:
            return None
        if name not in self._profile_cache:
            if self._profile_names is None:
                self._profile_names = frozenset(self.profiles.names())
            try:
                known = name in self._profile_names
                self._profile_cache[name] = self.profiles.get(name) if known else None
            except ValueError:
                self._profile_cache[name] = None
        return self._profile_cache[name]


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def listing(items: Iterable[str]) -> str:
    items = list(items)
    return ", ".join(items) if items else "(none)"

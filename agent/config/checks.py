"""Cross-field rules of a site config: what no single key can say on its own.

``run_checks`` runs every registered rule (see ``checks_devices`` and ``checks_site``)
and returns every finding, errors and warnings, each at the key path to change. The
loader calls it after binding the file; other code (the rig, tests) may call it on a
``SiteConfig`` built in code. Device-profile rules use ``drivers.profile`` when it is
there and has profiles, and are skipped otherwise.
"""

from __future__ import annotations

from typing import Iterable

from agent.config import checks_devices, checks_site  # noqa: F401  (registers the rules)
from agent.config.checkctx import RULES, Ctx, ProfileSource, RegisteredRule, shipped_profiles
from agent.config.issues import Finding, KeyPath
from agent.config.model import SiteConfig

#: pass as ``profiles`` to use drivers/profiles (the default)
SHIPPED = object()


def run_checks(
    cfg: SiteConfig,
    *,
    bad: Iterable[KeyPath] = (),
    given: Iterable[KeyPath] | None = None,
    profiles: ProfileSource | None | object = SHIPPED,
) -> list[Finding]:
    """Every cross-field finding for ``cfg``.

    ``bad``: key paths that already failed to load (rules depending on them stay quiet).
    ``given``: key paths written in the file (None: unknown, the "ignored key" warnings
    are skipped). ``profiles``: where device profiles come from; None skips profile rules.
    """
    source = shipped_profiles() if profiles is SHIPPED else profiles
    ctx = Ctx(
        cfg=cfg,
        bad=frozenset(bad),
        given=None if given is None else frozenset(given),
        profiles=source,  # type: ignore[arg-type]
    )
    for registered in RULES:
        registered.func(ctx)
    return ctx.findings


def rules() -> list[RegisteredRule]:
    """The registered rules in the order they run (for the config reference)."""
    return list(RULES)

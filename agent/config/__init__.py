"""The site config: model (typed sections), loader, cross-field checks, reference.

Importing ``agent.config.model`` alone stays cheap: the loader's names below are
imported on first use.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "load_config": "agent.config.load",
    "load_config_text": "agent.config.load",
    "inspect_config": "agent.config.load",
    "inspect_text": "agent.config.load",
    "ConfigReport": "agent.config.load",
    "ConfigError": "agent.config.issues",
    "ConfigErrors": "agent.config.issues",
    "ConfigUnreadable": "agent.config.issues",
    "ConfigIssue": "agent.config.issues",
    "run_checks": "agent.config.checks",
    "SiteConfig": "agent.config.model",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'agent.config' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)

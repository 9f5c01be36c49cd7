"""docs/config.md, generated from the model's field metadata and the registered checks.

The reference an installer reads must be the rules the loader applies, so it is not
written by hand: every section, key, type, default, range and doc line comes from
``agent.config.model``, and the list of cross-field rules from ``agent.config.checks``.
A unit test compares the committed file with ``render()``; after changing the model run

    python -m agent.config.reference --write
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from agent.config import model
from agent.config.bind import hints, is_required, range_text, shown, union_members
from agent.config.checks import rules

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "config.md"

_HEADER = """\
# Site config reference

<!-- Generated from agent/config/model.py and agent/config/checks*.py by
     `python -m agent.config.reference --write`. Do not edit by hand: a test fails
     when this file and the code disagree. -->

A site is described by one TOML file (examples in `config/`). Check it with

    evsite check-config /etc/evsite/site.toml

which lists every problem as `file:line: key: message` and exits 1 if there is any.
Unknown keys are errors (a typo is never silently ignored), and so are missing required
keys. Units: seconds, amps, volts, watts. Keys marked *path* may be relative: they are
resolved against the directory of the config file, not the working directory.
Sections written `[[name]]` are arrays of tables: repeat the header once per entry.
"""


def _type_text(tp: Any) -> str:
    members = union_members(tp)
    if members is not None:
        return " or ".join(_type_text(m) for m in members)
    if get_origin(tp) is list:
        inner = get_args(tp)[0]
        return "array of tables" if dataclasses.is_dataclass(inner) else f"array of {_type_text(inner)}s"
    if get_origin(tp) is Literal:
        return _type_text(type(get_args(tp)[0]))
    if dataclasses.is_dataclass(tp):
        return "table"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(tp, str(tp))


def _toml(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return shown(value)


def _default_text(f: dataclasses.Field) -> str:
    if is_required(f):
        return "**required**"
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        if dataclasses.is_dataclass(value):
            return "(section)"
        return f"`{_toml(value)}`"
    return f"`{_toml(f.default)}`"


def _allowed_text(tp: Any, meta: dict[str, Any]) -> str:
    parts = []
    if meta.get("choices"):
        parts.append(", ".join(f"`{shown(c)}`" for c in meta["choices"]))
    elif get_origin(tp) is Literal:
        parts.append(", ".join(f"`{shown(c)}`" for c in get_args(tp)))
    rng = range_text(meta)
    if rng:
        parts.append(rng)
    if meta.get("path"):
        parts.append("*path*" + (" (rtu)" if meta["path"] == "serial" else ""))
    return "; ".join(parts)


def _cell(text: str) -> str:
    """Table-safe text: no column breaks, and ``<state_dir>`` not taken for an HTML tag."""
    return re.sub(r"<(?=[A-Za-z/])", "&lt;", text.replace("|", "\\|").replace("\n", " "))


def _sections() -> list[tuple[str, str, type]]:
    """(header, doc, class) for every section, in the order of the model."""
    out: list[tuple[str, str, type]] = []

    def walk(cls: type, dotted: str) -> None:
        for f in dataclasses.fields(cls):
            tp = hints(cls)[f.name]
            is_list = get_origin(tp) is list
            inner = get_args(tp)[0] if is_list else tp
            if dataclasses.is_dataclass(inner):
                name = f"{dotted}.{f.name}" if dotted else f.name
                out.append((f"[[{name}]]" if is_list else f"[{name}]", f.metadata["doc"], inner))
                walk(inner, name)

    walk(model.SiteConfig, "")
    return out


def render() -> str:
    lines = [_HEADER]
    for header, doc, cls in _sections():
        lines.append(f"## `{header}`\n")
        lines.append(f"{doc[:1].upper()}{doc[1:]}.\n")
        lines.append("| key | type | default | allowed | meaning |")
        lines.append("|---|---|---|---|---|")
        for f in dataclasses.fields(cls):
            tp = hints(cls)[f.name]
            inner = get_args(tp)[0] if get_origin(tp) is list else tp
            meaning = f.metadata["doc"]
            if dataclasses.is_dataclass(inner):
                sub = f"{header.strip('[]')}.{f.name}"
                meaning += f"; see `[[{sub}]]`" if inner is not tp else f"; see `[{sub}]`"
            lines.append("| " + " | ".join(_cell(c) for c in (
                f"`{f.name}`", _type_text(tp), _default_text(f), _allowed_text(tp, dict(f.metadata)), meaning,
            )) + " |")
        lines.append("")
    lines.append("## Rules between keys\n")
    lines.append("Checked after every key is valid on its own. Warnings do not stop the agent.\n")
    for r in rules():
        lines.append(f"- {_cell(r.doc)}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate docs/config.md from the config model.")
    parser.add_argument("--write", action="store_true", help=f"write {DOC_PATH} instead of printing")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        DOC_PATH.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

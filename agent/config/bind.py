"""Parsed TOML (plain dicts) -> the typed dataclasses of ``agent.config.model``.

The binder knows nothing about sites: it reads each dataclass's type hints and field
metadata (``ge``/``le``/``gt``/``choices``) and applies them, so a new setting needs no
code here. It never stops at the first problem. A field that fails keeps its default
(or a typed placeholder when it is required), so the cross-field checks can still run;
the failed key paths are kept in ``bad`` so those checks can stay quiet about
consequences of a problem already reported. ``given`` records which keys the file
actually wrote, for checks such as "this key only applies to chargers".
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from functools import cache
from typing import Any, Literal, Union, get_args, get_origin

from agent.config import model
from agent.config.issues import Finding, KeyPath, path_text

_NONE = type(None)


@cache
def hints(cls: type) -> dict[str, Any]:
    """Resolved field types of a model dataclass (the model uses postponed annotations)."""
    return typing.get_type_hints(cls, vars(model))


def is_required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def union_members(tp: Any) -> tuple[Any, ...] | None:
    """The non-None members of ``A | B | None``, or None when ``tp`` is not a union."""
    if get_origin(tp) in (Union, types.UnionType):
        return tuple(a for a in get_args(tp) if a is not _NONE)
    return None


# -- how types and values are named in messages -----------------------------------------

def describe(tp: Any) -> str:
    """A type as an installer reads it: ``a number or an array of numbers``."""
    members = union_members(tp)
    if members is not None:
        if len(members) == 1:
            return describe(members[0])
        return " or ".join(describe(m) for m in members)
    if get_origin(tp) is list:
        return "an array of " + _plural(get_args(tp)[0])
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(shown(a) for a in get_args(tp))
    if dataclasses.is_dataclass(tp):
        return "a table"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(tp, str(tp))


def _plural(tp: Any) -> str:
    if dataclasses.is_dataclass(tp):
        return "tables"
    return {str: "strings", int: "integers", float: "numbers", bool: "booleans"}.get(tp, describe(tp))


def kind(value: Any) -> str:
    """The TOML type of a parsed value."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    return "date/time"


def shown(value: Any) -> str:
    """A value the way it would be written in TOML (short)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 60 else text[:57] + '..."'
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, dict)):
        return ""
    return str(value)


def _got(value: Any, meta: dict[str, Any]) -> str:
    if meta.get("secret"):
        return f"got a {kind(value)} (value hidden)"
    text = shown(value)
    return f"got {kind(value)} {text}" if text else f"got {'an' if kind(value) == 'array' else 'a'} {kind(value)}"


def _got_value(value: Any, meta: dict[str, Any]) -> str:
    """For a value of the right type but not allowed: just the value."""
    if meta.get("secret"):
        return "got (value hidden)"
    return f"got {shown(value) or kind(value)}"


def range_text(meta: dict[str, Any]) -> str | None:
    """``0.1..60``, ``> 0 and <= 600``, ``>= 100``; None without a range."""
    ge, le, gt = meta.get("ge"), meta.get("le"), meta.get("gt")
    if ge is not None and le is not None:
        return f"{shown(ge)}..{shown(le)}"
    lower = f">= {shown(ge)}" if ge is not None else f"> {shown(gt)}" if gt is not None else None
    upper = f"<= {shown(le)}" if le is not None else None
    if lower and upper:
        return f"{lower} and {upper}"
    return lower or upper


# -- the binder -----------------------------------------------------------------------------

@cache
def _key_homes() -> dict[str, list[str]]:
    """Every key name of the model -> the sections it belongs to, for "belongs in" hints."""
    homes: dict[str, list[str]] = {}

    def walk(cls: type, dotted: str, label: str) -> None:
        for f in dataclasses.fields(cls):
            tp = hints(cls)[f.name]
            is_list = get_origin(tp) is list
            inner = get_args(tp)[0] if is_list else tp
            if dataclasses.is_dataclass(inner):
                name = f"{dotted}.{f.name}" if dotted else f.name
                walk(inner, name, f"[[{name}]]" if is_list else f"[{name}]")
            else:
                homes.setdefault(f.name, []).append(label)

    walk(model.SiteConfig, "", "")
    return homes


class Binder:
    """Builds a ``SiteConfig`` from parsed TOML, collecting every problem on the way."""

    def __init__(self) -> None:
        self.findings: list[Finding] = []
        self.bad: set[KeyPath] = set()
        self.given: set[KeyPath] = set()

    def fail(self, path: KeyPath, message: str) -> None:
        self.findings.append(Finding(path, message))
        self.bad.add(path)

    def site(self, data: dict[str, Any]) -> model.SiteConfig:
        return self.section(model.SiteConfig, data, ())

    # -- tables ---------------------------------------------------------------------------
    def section(self, cls: type, data: dict[str, Any], path: KeyPath, *, report_missing: bool = True) -> Any:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key in data:
            if key not in fields:
                self.fail(path + (key,), self._unknown(key, fields, path))
        kwargs: dict[str, Any] = {}
        for name, f in fields.items():
            p = path + (name,)
            tp = hints(cls)[name]
            if name in data:
                self.given.add(p)
                ok, value = self.value(tp, data[name], p, dict(f.metadata))
                if ok:
                    kwargs[name] = value
                elif is_required(f):
                    kwargs[name] = self.placeholder(tp, p)
            elif is_required(f):
                if report_missing:
                    self.fail(p, self._missing(tp, f, p))
                kwargs[name] = self.placeholder(tp, p)
        return cls(**kwargs)

    def _unknown(self, key: str, fields: dict[str, Any], path: KeyPath) -> str:
        names = list(fields)
        close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
        folded = [n for n in names if n.lower() == key.lower().replace("-", "_")]
        what = "unknown section" if not path else "unknown key"
        if folded or close:
            return f'{what} (did you mean "{(folded or close)[0]}"?)'
        homes = [h for h in _key_homes().get(key, []) if h]
        if homes:
            return f"{what}: {key} belongs in {' or '.join(homes)}"
        if not path:
            return f"{what}; the sections are: {', '.join(names)}"
        return f"{what}; allowed here: {', '.join(names)}"

    def _missing(self, tp: Any, f: dataclasses.Field, path: KeyPath) -> str:
        if dataclasses.is_dataclass(tp):
            return f"missing [{path_text(path)}] section ({f.metadata['doc']})"
        return f"missing required key ({f.metadata['doc']})"

    def placeholder(self, tp: Any, path: KeyPath) -> Any:
        """A value of the right type for a required field that is missing or wrong."""
        members = union_members(tp)
        if members is not None:
            return self.placeholder(members[0], path)
        if dataclasses.is_dataclass(tp):
            return self.section(tp, {}, path, report_missing=False)
        if get_origin(tp) is list:
            return []
        if get_origin(tp) is Literal:
            return ""
        return {str: "", int: 0, float: 0.0, bool: False}.get(tp)

    # -- values ---------------------------------------------------------------------------
    def value(self, tp: Any, raw: Any, path: KeyPath, meta: dict[str, Any]) -> tuple[bool, Any]:
        members = union_members(tp)
        if members is not None:
            chosen = self._pick(members, raw)
            if chosen is None:
                self.fail(path, f"must be {describe(tp)}, {_got(raw, meta)}")
                return False, None
            return self.value(chosen, raw, path, meta)
        origin = get_origin(tp)
        if dataclasses.is_dataclass(tp):
            if not isinstance(raw, dict):
                hint = f": write [{path_text(path)}], not [[{path_text(path)}]]" if isinstance(raw, list) else ""
                self.fail(path, f"must be a table, {_got(raw, meta)}{hint}")
                return False, None
            return True, self.section(tp, raw, path)
        if origin is list:
            return self._list(get_args(tp)[0], raw, path, meta)
        if origin is Literal:
            if not any(type(raw) is type(a) and raw == a for a in get_args(tp)):
                self.fail(path, f"must be {describe(tp)}, {_got_value(raw, meta)}{self._suggest(raw, get_args(tp))}")
                return False, None
            return True, raw
        if tp is bool:
            if not isinstance(raw, bool):
                self.fail(path, f"must be true or false, {_got(raw, meta)}")
                return False, None
            return True, raw
        if tp is int:
            if isinstance(raw, bool) or not isinstance(raw, int):
                self.fail(path, f"must be an integer, {_got(raw, meta)}")
                return False, None
            return self._rules(raw, path, meta)
        if tp is float:
            if isinstance(raw, bool) or not isinstance(raw, (int, float)):
                self.fail(path, f"must be a number, {_got(raw, meta)}")
                return False, None
            if not math.isfinite(raw):
                self.fail(path, f"must be a finite number, {_got(raw, meta)}")
                return False, None
            return self._rules(float(raw), path, meta)
        if tp is str:
            if not isinstance(raw, str):
                self.fail(path, f"must be a string, {_got(raw, meta)}")
                return False, None
            return self._rules(raw, path, meta)
        raise TypeError(f"the config model uses a type the binder does not know: {tp!r} at {path_text(path)}")

    def _pick(self, members: tuple[Any, ...], raw: Any) -> Any:
        """Which member of a union a TOML value is meant as (by its TOML type)."""
        def first(pred: Any) -> Any:
            return next((m for m in members if pred(m)), None)

        if isinstance(raw, list):
            return first(lambda m: get_origin(m) is list)
        if isinstance(raw, dict):
            return first(dataclasses.is_dataclass)
        if isinstance(raw, bool):
            return first(lambda m: m is bool)
        if isinstance(raw, int):
            return first(lambda m: m is int) or first(lambda m: m is float)
        if isinstance(raw, float):
            return first(lambda m: m is float)
        if isinstance(raw, str):
            return first(lambda m: m is str or get_origin(m) is Literal)
        return None

    def _list(self, item: Any, raw: Any, path: KeyPath, meta: dict[str, Any]) -> tuple[bool, Any]:
        if not isinstance(raw, list):
            if dataclasses.is_dataclass(item) and isinstance(raw, dict):
                name = path_text(path)
                self.fail(path, f"must be an array of tables: write [[{name}]] (double brackets) for each entry")
            else:
                self.fail(path, f"must be an array of {_plural(item)}, {_got(raw, meta)}")
            return False, None
        out, ok = [], True
        for i, element in enumerate(raw):
            good, value = self.value(item, element, path + (i,), meta)
            ok = ok and good
            out.append(value)
        return ok, out

    def _rules(self, value: Any, path: KeyPath, meta: dict[str, Any]) -> tuple[bool, Any]:
        choices = meta.get("choices")
        if choices is not None and not any(type(value) is type(c) and value == c for c in choices) \
                and not (isinstance(value, float) and value in choices):
            listed = ", ".join(shown(c) for c in choices)
            self.fail(path, f"must be one of {listed}, {_got_value(value, meta)}{self._suggest(value, choices)}")
            return False, None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            ge, le, gt = meta.get("ge"), meta.get("le"), meta.get("gt")
            if (ge is not None and value < ge) or (le is not None and value > le) or (gt is not None and value <= gt):
                self.fail(path, f"must be {range_text(meta)}, {_got_value(value, meta)}")
                return False, None
        return True, value

    @staticmethod
    def _suggest(value: Any, choices: tuple[Any, ...]) -> str:
        if not isinstance(value, str):
            return ""
        texts = [c for c in choices if isinstance(c, str)]
        folded = [c for c in texts if c.lower() == value.lower()]
        close = folded or difflib.get_close_matches(value, texts, n=1, cutoff=0.6)
        return f' (did you mean "{close[0]}"?)' if close else ""

"""Write TOML text from plain data: the fuzzers' way back from a mutated tree to a file.

There is no TOML writer among the dependencies (tomllib only reads), and the fuzzers
need one that can write anything tomllib can return, including the odd cases a site
config should never hold (NaN, dates, nested arrays, keys with quotes or newlines):
top-level tables become ``[name]`` sections, arrays of tables ``[[name]]``, anything
deeper is written inline. ``dumps(data)`` parses back to ``data`` with tomllib.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def string(text: str) -> str:
    """A TOML basic string: quote, backslash and control characters escaped."""
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def key(name: str) -> str:
    return name if _BARE.match(name) else string(name)


def value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        text = repr(v)
        return text if any(c in text for c in ".en") else text + ".0"
    if isinstance(v, str):
        return string(v)
    if isinstance(v, (dt.datetime, dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{key(k)} = {value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"no TOML for {type(v).__name__}")


def _table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def dumps(data: dict[str, Any]) -> str:
    lines = [f"{key(k)} = {value(v)}" for k, v in data.items() if not isinstance(v, dict) and not _table_array(v)]
    for k, v in data.items():
        if isinstance(v, dict):
            lines += ["", f"[{key(k)}]"] + [f"{key(kk)} = {value(vv)}" for kk, vv in v.items()]
        elif _table_array(v):
            for entry in v:
                lines += ["", f"[[{key(k)}]]"] + [f"{key(kk)} = {value(vv)}" for kk, vv in entry.items()]
    return "\n".join(lines) + "\n"

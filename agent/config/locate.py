"""Key path -> line number, read from the TOML text itself.

``tomllib`` returns plain dicts without positions, but an installer needs "line 14", not
just "devices[2].unit_id". This module re-reads the (already successfully parsed) text
with a small scanner that understands just enough TOML to know where each key is:
``[tables]``, ``[[arrays of tables]]`` (counting their elements), dotted keys, quoted
keys, multi-line strings and arrays (so their contents are not mistaken for keys), and
arrays and inline tables, whose elements get the line they start on.

A key that is not in the file (a missing required key, a default) falls back to the
nearest enclosing table that is, and to ``None`` when there is none. The scanner never
raises: on anything it does not understand it stops and keeps what it found.
"""

from __future__ import annotations

import tomllib

from agent.config.issues import KeyPath

_BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


class KeyLines:
    """Lines of the keys of one TOML document."""

    def __init__(self, text: str) -> None:
        scanner = _Scanner(text)
        try:
            scanner.document()
        except (IndexError, ValueError, tomllib.TOMLDecodeError):
            pass  # malformed beyond what we understand: keep the lines found so far
        self._lines = scanner.lines

    def line_of(self, path: KeyPath) -> int | None:
        """The line of ``path``, or of its nearest ancestor present in the text."""
        while path:
            line = self._lines.get(path)
            if line is not None:
                return line
            path = path[:-1]
        return None

    def exact(self, path: KeyPath) -> int | None:
        """The line of ``path`` only if that very key is written in the text."""
        return self._lines.get(path)


class _Scanner:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.line = 1
        self.lines: dict[KeyPath, int] = {}
        self.table: KeyPath = ()
        #: resolved path of each array of tables -> elements seen so far
        self.aot: dict[KeyPath, int] = {}

    # -- low level ----------------------------------------------------------------------
    def peek(self, k: int = 0) -> str:
        j = self.i + k
        return self.s[j] if j < len(self.s) else ""

    def advance(self, k: int = 1) -> None:
        for _ in range(k):
            if self.s[self.i] == "\n":
                self.line += 1
            self.i += 1

    def skip_space(self) -> None:
        while self.peek() in (" ", "\t", "\r") and self.peek():
            self.i += 1

    def skip_comment(self) -> None:
        if self.peek() == "#":
            while self.peek() and self.peek() != "\n":
                self.i += 1

    def skip_blank(self) -> None:
        """Whitespace, newlines and comments (inside arrays, between statements)."""
        while True:
            self.skip_space()
            self.skip_comment()
            if self.peek() == "\n":
                self.advance()
            else:
                return

    def expect(self, token: str) -> None:
        if not self.s.startswith(token, self.i):
            raise ValueError(f"expected {token!r} at line {self.line}")
        self.advance(len(token))

    def record(self, path: KeyPath, line: int) -> None:
        for n in range(1, len(path) + 1):
            self.lines.setdefault(path[:n], line)

    # -- structure ----------------------------------------------------------------------
    def document(self) -> None:
        while True:
            self.skip_blank()
            if not self.peek():
                return
            line = self.line
            if self.s.startswith("[[", self.i):
                self.advance(2)
                keys = self.key()
                self.skip_space()
                self.expect("]]")
                parent = self.resolve(keys[:-1])
                array = parent + (keys[-1],)
                count = self.aot.get(array, 0)
                self.aot[array] = count + 1
                self.table = array + (count,)
                self.record(self.table, line)
            elif self.peek() == "[":
                self.advance()
                keys = self.key()
                self.skip_space()
                self.expect("]")
                self.table = self.resolve(keys)
                self.record(self.table, line)
            else:
                keys = self.key()
                self.skip_space()
                self.expect("=")
                path = self.table + keys
                self.record(path, line)
                self.skip_space()
                self.value(path)
            self.skip_space()
            self.skip_comment()

    def resolve(self, keys: tuple[str, ...]) -> KeyPath:
        """A header's keys with the current element index after each array of tables."""
        path: KeyPath = ()
        for k in keys:
            path = path + (k,)
            if path in self.aot:
                path = path + (self.aot[path] - 1,)
        return path

    def key(self) -> tuple[str, ...]:
        parts: list[str] = []
        while True:
            self.skip_space()
            c = self.peek()
            start = self.i
            if c in ('"', "'"):
                self.string_token()
                raw = self.s[start:self.i]
                parts.append(tomllib.loads(f"k = {raw}")["k"])
            else:
                while self.peek() and self.peek() in _BARE:
                    self.i += 1
                if self.i == start:
                    raise ValueError(f"expected a key at line {self.line}")
                parts.append(self.s[start:self.i])
            self.skip_space()
            if self.peek() != ".":
                return tuple(parts)
            self.advance()

    # -- values -------------------------------------------------------------------------
    def value(self, path: KeyPath) -> None:
        c = self.peek()
        if c in ('"', "'"):
            self.string_token()
        elif c == "[":
            self.array(path)
        elif c == "{":
            self.inline_table(path)
        else:
            while self.peek() and self.peek() not in ",]}\n#":
                self.i += 1

    def string_token(self) -> None:
        quote = self.peek()
        if self.s.startswith(quote * 3, self.i):
            self.advance(3)
            while not self.s.startswith(quote * 3, self.i):
                if not self.peek():
                    raise ValueError("unterminated string")
                if quote == '"' and self.peek() == "\\":
                    self.advance()
                self.advance()
            self.advance(3)
            # up to two quotes right before the delimiter belong to the content
            for _ in range(2):
                if self.peek() == quote:
                    self.advance()
            return
        self.advance()
        while self.peek() != quote:
            if not self.peek() or self.peek() == "\n":
                raise ValueError("unterminated string")
            if quote == '"' and self.peek() == "\\":
                self.advance()
            self.advance()
        self.advance()

    def array(self, path: KeyPath) -> None:
        self.advance()
        index = 0
        while True:
            self.skip_blank()
            if self.peek() == "]":
                self.advance()
                return
            element = path + (index,)
            self.record(element, self.line)
            self.value(element)
            self.skip_blank()
            if self.peek() == ",":
                self.advance()
                index += 1
            elif self.peek() == "]":
                self.advance()
                return
            else:
                raise ValueError(f"unexpected {self.peek()!r} in array at line {self.line}")

    def inline_table(self, path: KeyPath) -> None:
        self.advance()
        while True:
            self.skip_blank()
            if self.peek() == "}":
                self.advance()
                return
            line = self.line
            keys = self.key()
            self.skip_space()
            self.expect("=")
            self.skip_space()
            self.record(path + keys, line)
            self.value(path + keys)
            self.skip_blank()
            if self.peek() == ",":
                self.advance()
            elif self.peek() == "}":
                self.advance()
                return
            else:
                raise ValueError(f"unexpected {self.peek()!r} in inline table at line {self.line}")

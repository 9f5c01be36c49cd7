"""Site config files as an installer might really write them, and worse: ``evsite
check-config`` never shows a traceback. It loads a file or lists its problems, each with
a key path or a line, and exits as documented (0 good, 1 errors, 2 unreadable); the
agent's own loader agrees with it and raises nothing but ``ConfigErrors``.

Three sources of files: random TOML trees whose keys are mostly the real section and
key names (so they get past the first check), structural mutations of the example
files in config/ (a key deleted, a value of the wrong type or out of range, an entry
duplicated, an unknown key), and byte mutations of the same files (syntax errors,
broken UTF-8). Quick size here; ``-m long`` runs many more examples (FUZZ_CONFIG_LONG).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import os
import random
import subprocess
import sys
import tomllib
import typing
from functools import lru_cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from agent.cli_check_config import EXIT_INVALID, EXIT_OK, EXIT_UNREADABLE, check_files
from agent.config.issues import ConfigErrors
from agent.config.load import inspect_config, load_config
from agent.config.model import SiteConfig
from tests.fuzz.toml_text import dumps

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "config").glob("*.toml"))

QUICK = settings(deadline=None, database=None, suppress_health_check=list(HealthCheck),
                 max_examples=int(os.environ.get("FUZZ_CONFIG_EXAMPLES", "60")))
LONG = settings(deadline=None, database=None, suppress_health_check=list(HealthCheck),
                max_examples=int(os.environ.get("FUZZ_CONFIG_LONG", "5000")))


# ---------------------------------------------------------------- the key vocabulary

@lru_cache(maxsize=None)
def model_keys() -> dict[str, tuple[str, ...]]:
    """Section name -> its key names, from the model (list sections by their item type)."""
    hints = typing.get_type_hints(SiteConfig)
    out = {}
    for f in dataclasses.fields(SiteConfig):
        cls = hints[f.name]
        cls = typing.get_args(cls)[0] if typing.get_origin(cls) is list else cls
        out[f.name] = tuple(x.name for x in dataclasses.fields(cls))
    return out


def all_keys() -> list[str]:
    return sorted({k for keys in model_keys().values() for k in keys} | {"circuits", "fuse_amps", "parent", "id"})


# ---------------------------------------------------------------- strategies

scalars = (st.booleans() | st.integers(-2**63, 2**63 - 1) | st.sampled_from([0, -1, 1, 247, 248, 65536, 2**31])
           | st.floats() | st.text(max_size=20) | st.sampled_from(["", "lan", "rtu", "tcp", "1.6", "2.0.1",
                                                                   "L1", "abb-terra-ac", "eastron-sdm630", "../x"])
           | st.datetimes(max_value=dt.datetime(9999, 1, 1)) | st.dates() | st.times())
names = st.sampled_from(all_keys()) | st.text(min_size=1, max_size=12)


def values(depth: int = 2) -> st.SearchStrategy:
    if depth == 0:
        return scalars
    inner = values(depth - 1)
    return scalars | st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=3)


@st.composite
def random_trees(draw) -> dict:
    """Sections of the model with mostly real keys, plus some that are not."""
    sections = model_keys()
    tree: dict = {}
    for section in draw(st.lists(st.sampled_from(sorted(sections)) | st.text(min_size=1, max_size=8),
                                 max_size=6, unique=True)):
        def table() -> dict:
            keys = sections.get(section) or all_keys()
            return draw(st.dictionaries(st.sampled_from(keys) | names, values(1), max_size=8))
        if section in ("buses", "devices") or (section not in sections and draw(st.booleans())):
            tree[section] = [table() for _ in range(draw(st.integers(0, 3)))]
        else:
            tree[section] = table()
    return tree


def paths(tree, prefix=()) -> list[tuple]:
    """Every key path in a parsed TOML tree (dict keys and list indices)."""
    out = []
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for k, v in items:
        out.append(prefix + (k,))
        out += paths(v, prefix + (k,))
    return out


def parent_of(tree, path):
    node = tree
    for k in path[:-1]:
        node = node[k]
    return node


@st.composite
def mutated_examples(draw) -> str:
    """An example config with 1-4 structural changes."""
    source = draw(st.sampled_from(EXAMPLES), label="example")
    tree = tomllib.loads(source.read_text())
    for _ in range(draw(st.integers(1, 4))):
        everywhere = paths(tree)
        if not everywhere:
            break
        path = draw(st.sampled_from(everywhere))
        node, last = parent_of(tree, path), path[-1]
        op = draw(st.sampled_from(["delete", "replace", "extreme", "duplicate", "unknown", "retype"]))
        if op == "delete":
            del node[last]
        elif op == "replace":
            node[last] = draw(values(1))
        elif op == "extreme":
            node[last] = draw(st.sampled_from([0, -1, 2**63 - 1, -2**63, 1e308, -1e-308, float("nan"),
                                               float("inf"), "", " ", "\x00", "é" * 300, [], {}]))
        elif op == "duplicate" and isinstance(node, list):
            node.append(node[last])
        elif op == "unknown" and isinstance(node[last], dict):
            node[last][draw(names)] = draw(scalars)
        elif op == "retype":
            v = node[last]
            node[last] = str(v) if not isinstance(v, str) else (int(v) if v.isdigit() else [v])
    return dumps(tree)


@st.composite
def byte_mutations(draw) -> bytes:
    """An example config with a few bytes or lines deleted, inserted or changed."""
    source = draw(st.sampled_from(EXAMPLES), label="example")
    rng = random.Random(draw(st.integers(0, 2**32), label="seed"))
    lines = source.read_bytes().splitlines(keepends=True)
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(lines))
        op = rng.randrange(4)
        if op == 0:
            del lines[i]
        elif op == 1:
            lines.insert(i, lines[rng.randrange(len(lines))])
        else:
            b = bytearray(lines[i])
            j = rng.randrange(len(b) + 1)
            if op == 2:
                b[j:j + rng.randint(1, 3)] = b""
            else:
                b[j:j] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 3)))
            lines[i] = bytes(b)
    return b"".join(lines)


# ---------------------------------------------------------------- the property

def check(path: Path) -> None:
    """``evsite check-config`` on one file: no exception, documented exit code, every
    problem placed, and the agent's loader agrees."""
    out, err = io.StringIO(), io.StringIO()
    try:
        code = check_files([str(path)], out, err)
    except BaseException as exc:   # the property: never a traceback
        raise AssertionError(f"check-config raised {exc!r} on:\n{path.read_bytes()[:3000]!r}") from exc
    assert code in (EXIT_OK, EXIT_INVALID), (code, err.getvalue())
    event(f"exit {code}")
    assert err.getvalue() == ""
    report = inspect_config(path)
    if code == EXIT_OK:
        assert report.ok and out.getvalue().splitlines()[-1].startswith(f"{path}: ok: "), out.getvalue()
        assert isinstance(load_config(path), SiteConfig)
        return
    assert report.errors, out.getvalue()
    for issue in report.errors:
        # a problem is named by its key path, or (syntax, encoding) by its line
        assert issue.path or issue.line is not None, issue
        assert str(issue) in out.getvalue()
    try:
        load_config(path)
    except ConfigErrors as exc:
        assert len(exc.issues) == len(report.errors)
    else:
        raise AssertionError("check-config found errors, load_config none")


def write(tmp: Path, content: str | bytes) -> Path:
    path = tmp / "site.toml"
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("configs")


def nothing_created(workdir: Path) -> None:
    """Checking a config writes nothing next to it (relative paths resolve there)."""
    assert sorted(p.name for p in workdir.iterdir()) == ["site.toml"]


def test_the_toml_writer_round_trips(workdir):
    tree = {"site": {"name": 'a "b"\n\x7f', "n": float("inf")}, "devices": [{"id": "x", "t": dt.time(1, 2)}],
            "top": [1, [2.5, "x"], {"k k": True}]}
    assert tomllib.loads(dumps(tree)) == tree


@QUICK
@given(tree=random_trees())
def test_random_trees(workdir, tree):
    text = dumps(tree)
    assert tomllib.loads(text) is not None      # the writer writes TOML
    check(write(workdir, text))
    nothing_created(workdir)


@QUICK
@given(text=mutated_examples())
def test_mutated_examples(workdir, text):
    check(write(workdir, text))
    nothing_created(workdir)


@QUICK
@given(raw=byte_mutations())
def test_byte_mutations(workdir, raw):
    check(write(workdir, raw))
    nothing_created(workdir)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_the_examples_themselves_pass(example):
    out, err = io.StringIO(), io.StringIO()
    assert check_files([str(example)], out, err) == EXIT_OK, out.getvalue()


def test_unreadable_files_exit_2_with_one_line(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    assert check_files([str(tmp_path)], out, err) == EXIT_UNREADABLE
    assert check_files([str(tmp_path / "missing.toml")], out, err) == EXIT_UNREADABLE
    lines = err.getvalue().splitlines()
    assert len(lines) == 2 and "it is a directory" in lines[0] and "missing.toml" in lines[1]


def test_the_real_command_on_mutated_files(tmp_path):
    """As the installer runs it: a separate process, exit codes 0/1/2 and no traceback."""
    rng = random.Random(7)
    files = []
    for i, example in enumerate(EXAMPLES):
        lines = example.read_text().splitlines()
        del lines[rng.randrange(len(lines))]
        bad = tmp_path / f"bad{i}.toml"
        bad.write_text("\n".join(lines) + "\n[devices]\nid = 3\n")   # [devices] where an array of tables is
        files.append(bad)
    (tmp_path / "latin1.toml").write_bytes(b"[site]\nname = \"Stra\xdfe\"\n")
    for args, want in (([str(EXAMPLES[0])], EXIT_OK), ([str(f) for f in files], EXIT_INVALID),
                       ([str(tmp_path / "latin1.toml")], EXIT_INVALID),
                       ([str(EXAMPLES[0]), str(tmp_path / "nope.toml")], EXIT_UNREADABLE)):
        proc = subprocess.run([sys.executable, "-m", "agent.cli", "check-config", *args], capture_output=True,
                              text=True, cwd=REPO, timeout=60)
        assert proc.returncode == want, (args, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stdout + proc.stderr
    assert "not UTF-8 text (byte 0xdf)" in subprocess.run(
        [sys.executable, "-m", "agent.cli", "check-config", str(tmp_path / "latin1.toml")],
        capture_output=True, text=True, cwd=REPO, timeout=60).stdout


@pytest.mark.long
@LONG
@given(tree=random_trees() | mutated_examples().map(tomllib.loads))
def test_long_random_and_mutated(workdir, tree):
    check(write(workdir, dumps(tree)))
    nothing_created(workdir)


@pytest.mark.long
@LONG
@given(raw=byte_mutations())
def test_long_byte_mutations(workdir, raw):
    check(write(workdir, raw))
    nothing_created(workdir)

"""One benchmark report: every ``bench/bench_*.py``, one table, one saved JSON file.

Each benchmark runs as its own process (``python -m bench.bench_x``; no benchmark can
warm or slow another) and prints one JSON object per line for each figure it measured:

    {"figure": "...", "value": 123.4, "floor": 456.7, "unit": "msg/s",
     "higher_is_better": true, "note": "..."}

``floor`` is measured in the same run on the same machine: the same work done the
simplest way we can think of (a bare ``ocpp`` client, a plain loop). The ratio
value/floor (or floor/value when lower is better) is what can be compared across
machines; absolute numbers only within one machine.

The report is printed as a table and saved as JSON (``--save``, default
``bench/results/<UTC time>.json``): {"machine": {...}, "started": ..., "results": [...]},
so runs can be compared over time (``--compare OLD.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) // 1024
    except OSError:
        pass
    return {"host": platform.node(), "cpu": cpu or platform.processor(), "cores": os.cpu_count(),
            "mem_mib": mem, "python": platform.python_version(), "os": platform.platform()}


def discover(only: list[str] | None) -> list[str]:
    names = sorted(p.stem for p in HERE.glob("bench_*.py"))
    if only:
        unknown = [n for n in only if n not in names and f"bench_{n}" not in names]
        if unknown:
            raise SystemExit(f"bench: unknown benchmark(s) {', '.join(unknown)}; have: {', '.join(names)}")
        names = [n for n in names if n in only or n.removeprefix("bench_") in only]
    return names


def run_one(name: str, quick: bool) -> tuple[list[dict[str, Any]], str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), BENCH_QUICK="1" if quick else "0")
    proc = subprocess.run([sys.executable, "-m", f"bench.{name}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1800)
    results = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                results.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    err = "" if proc.returncode == 0 else f"exit {proc.returncode}: {proc.stderr.strip()[-500:]}"
    return results, err


def ratio(r: dict[str, Any]) -> float | None:
    v, f = r.get("value"), r.get("floor")
    if not v or not f:
        return None
    return v / f if r.get("higher_is_better", True) else f / v


def table(results: list[dict[str, Any]]) -> str:
    rows = [("figure", "evsite", "floor", "ratio", "unit")]
    for r in results:
        q = ratio(r)
        rows.append((r["figure"], _num(r.get("value")), _num(r.get("floor")), "-" if q is None else f"{q:.2f}",
                     r.get("unit", "")))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _num(v: Any) -> str:
    if v is None:
        return "-"
    v = float(v)
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench", description=__doc__.split("\n\n")[0])
    p.add_argument("only", nargs="*", help="run only these benchmarks (e.g. outbox_replay)")
    p.add_argument("--quick", action="store_true", help="smaller sizes (for CI smoke runs)")
    p.add_argument("--save", metavar="FILE", help="where to save the JSON report (default bench/results/<time>.json)")
    p.add_argument("--compare", metavar="OLD", help="print the change of each ratio against an earlier report")
    args = p.parse_args(argv)
    names = discover(args.only)
    if not names:
        print("bench: no benchmarks found in bench/", file=sys.stderr)
        return 1
    started = datetime.now(timezone.utc)
    info = machine()
    print(f"machine: {info['cpu']} x{info['cores']}, {info['mem_mib']} MiB, Python {info['python']}", flush=True)
    results: list[dict[str, Any]] = []
    failed = []
    for name in names:
        t0 = time.monotonic()
        print(f"running {name} ...", flush=True)
        got, err = run_one(name, args.quick)
        for r in got:
            r["benchmark"] = name
        results += got
        if err or not got:
            failed.append(f"{name}: {err or 'printed no result'}")
        print(f"  {name}: {len(got)} figure(s) in {time.monotonic() - t0:.1f} s", flush=True)
    print()
    print(table(results))
    report = {"machine": info, "started": started.isoformat(), "quick": args.quick, "results": results}
    out = Path(args.save) if args.save else HERE / "results" / f"{started:%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nsaved {out}")
    if args.compare:
        old = {r["figure"]: ratio(r) for r in json.loads(Path(args.compare).read_text())["results"]}
        for r in results:
            before, now = old.get(r["figure"]), ratio(r)
            if before and now:
                print(f"{r['figure']}: ratio {before:.2f} -> {now:.2f} ({(now / before - 1) * 100:+.0f} %)")
    for f in failed:
        print(f"bench: FAILED {f}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

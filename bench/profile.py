"""Summarise py-spy collapsed stacks: ``python -m bench.profile FILE.txt [--top 25]``.

``py-spy record --format raw`` writes one ``frame;frame;...;frame count`` line per distinct
stack (idle threads left out, so the shares are of the time the process was on the CPU).
Prints the functions with the most *own* time and with the most *inclusive* time, in percent,
plus a few groupings by library (SQLAlchemy, psycopg, asyncio, anyio, aiokafka, ...).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
GROUPS = (
    ("resilient_task", "/resilient_task/"),
    ("sqlalchemy", "/sqlalchemy/"),
    ("psycopg", "/psycopg"),
    ("aiokafka", "/aiokafka/"),
    ("kafka", "/kafka/"),
    ("anyio", "/anyio/"),
    ("asyncio", "/asyncio/"),
    ("logging", "/logging/"),
    ("bench", "/bench/"),
)


def _name(frame: str) -> tuple[str, str]:
    m = _FRAME.match(frame)
    if not m:
        return frame, ""
    file = m.group("file")
    short = re.sub(r"^.*?/(site-packages|lib/python3\.\d+|src)/", "", file)
    return f"{m.group('func')} ({short})", file


def summarise(path: Path, top: int = 25) -> str:
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    groups: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_name(f) for f in stack.split(";") if f and not f.startswith("process ")]
        frames = [f for f in frames if not f[0].startswith("thread ")]
        if not frames:
            continue
        own[frames[-1][0]] += n
        for name in {f[0] for f in frames}:
            incl[name] += n
        leaf_file = frames[-1][1]
        group = next((g for g, key in GROUPS if key in leaf_file), "other (stdlib, C)")
        groups[group] += n
    if not total:
        return f"{path}: no samples"

    def pct(n: int) -> str:
        return f"{100 * n / total:5.1f}%"

    lines = [f"{path.name}: {total} samples (non-idle)", "", "own time, by library of the leaf:"]
    lines += [f"  {pct(n)}  {g}" for g, n in groups.most_common()]
    lines += ["", f"top {top} functions by own time:"]
    lines += [f"  {pct(n)}  {name}" for name, n in own.most_common(top)]
    lines += ["", f"top {top} functions by inclusive time:"]
    lines += [f"  {pct(n)}  {name}" for name, n in incl.most_common(top)]
    ours = [(name, n) for name, n in incl.most_common() if "(resilient_task/" in name]
    lines += ["", f"top {top} resilient_task functions by inclusive time:"]
    lines += [f"  {pct(n)}  {name}" for name, n in ours[:top]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile")
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args(argv)
    for f in args.files:
        print(summarise(f, args.top))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

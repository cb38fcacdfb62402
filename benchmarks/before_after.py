"""Before and after a change, in one run: a benchmark of this tree, run on the package
of an older commit and on this one, turn about, its tables merged row by row.

    .venv/bin/python benchmarks/before_after.py --ref ce7456e -- aoi.py --aois 2,20
    .venv/bin/python benchmarks/before_after.py --ref ce7456e --rounds 2 -- points.py --quick

Both commits are checked out once as git worktrees under ``.cache/tree-<commit>``, so
this tree may change while a benchmark runs; each run puts one of them first on
``PYTHONPATH`` (its ``rasteret`` package wins over the
editable install; the benchmark script, its helpers and the test bed stay this tree's,
so both sides run the same measurement). The sides take turns (before, after, then
after, before...) so that a machine whose load drifts weighs on both alike. Each table
the benchmark prints comes back once, with two columns in front: the side (``before
<ref>`` or ``after <HEAD>``) and the round.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^\|(.*)\|\s*$")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", required=True, help="the commit to compare against")
    parser.add_argument("--after", default="HEAD",
                        help="the commit measured as after (checked out too, so this tree "
                             "may change while the benchmark runs)")
    parser.add_argument("--rounds", type=int, default=1, help="before/after pairs")
    parser.add_argument("benchmark", nargs=argparse.REMAINDER,
                        help="-- SCRIPT [ARGS...]: a script of benchmarks/ and its arguments")
    args = parser.parse_args()
    if args.benchmark and args.benchmark[0] == "--":
        args.benchmark = args.benchmark[1:]
    if not args.benchmark:
        parser.error("give the benchmark after --, e.g. -- aoi.py --aois 2,20")
    return args


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout.strip()


def checkout(ref: str) -> Path:
    """A worktree of ``ref`` (made once, then reused)."""
    commit = git("rev-parse", "--short", ref)
    tree = ROOT / ".cache" / f"tree-{commit}"
    if not tree.exists():
        git("worktree", "add", "--detach", str(tree), commit)
    return tree


def tables(output: str) -> dict[str, tuple[list[str], list[list[str]]]]:
    """The Markdown tables of a benchmark's output: title -> (header, rows)."""
    found: dict[str, tuple[list[str], list[list[str]]]] = {}
    lines = output.splitlines()
    for k, line in enumerate(lines):
        if not ROW.match(line) or (k and ROW.match(lines[k - 1])):
            continue
        title = lines[k - 1].strip() if k else ""
        header = [c.strip() for c in ROW.match(line).group(1).split("|")]
        rows = []
        for body in lines[k + 2:]:
            match = ROW.match(body)
            if not match:
                break
            rows.append([c.strip() for c in match.group(1).split("|")])
        found[title] = (header, rows)
    return found


def run(tree: Path, benchmark: list[str]) -> str:
    """The benchmark's output with ``tree``'s package imported; checks which one was."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(tree), *filter(None, [os.environ.get("PYTHONPATH")])])}
    # -P: no current folder first on sys.path, as when a script runs.
    probe = "import rasteret; print(rasteret.__file__)"
    where = subprocess.run([sys.executable, "-P", "-c", probe], env=env, check=True,
                           capture_output=True, text=True).stdout
    if not Path(where.strip()).is_relative_to(tree):
        raise SystemExit(f"{tree} did not win the import: rasteret came from {where}")
    script = ROOT / "benchmarks" / benchmark[0]
    # Run from the tree: processes started with -c (forkserver, spawn) put their
    # working folder first on sys.path. The benchmark data stays shared.
    shared = tree / ".cache" / "bench"
    if tree != ROOT and not shared.exists():
        shared.parent.mkdir(parents=True, exist_ok=True)
        shared.symlink_to(ROOT / ".cache" / "bench")
    done = subprocess.run([sys.executable, str(script), *benchmark[1:]], env=env, cwd=tree,
                          capture_output=True, text=True)
    sys.stderr.write(done.stderr[-2000:])
    if done.returncode:
        raise SystemExit(f"{benchmark[0]} failed on {tree} ({done.returncode})")
    return done.stdout


def main() -> None:
    args = parse_args()
    sides = {f"{label} {git('rev-parse', '--short', ref)}": checkout(ref)
             for label, ref in (("before", args.ref), ("after", args.after))}
    merged: dict[str, tuple[list[str], list[list[str]]]] = {}
    for round_number in range(1, args.rounds + 1):
        order = list(sides.items())
        if round_number % 2 == 0:
            order.reverse()
        for side, tree in order:
            print(f"# round {round_number}: {side}", file=sys.stderr, flush=True)
            for title, (header, rows) in tables(run(tree, args.benchmark)).items():
                entry = merged.setdefault(title, (["code", "round", *header], []))
                entry[1].extend([side, str(round_number), *row] for row in rows)
    for title, (header, rows) in merged.items():
        # Each row of the benchmark next to its other side: sorted by the row's first
        # cells (reader, size...), keeping the sides' order within.
        rows.sort(key=lambda row: row[2:4])
        print(f"\n{title}")
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---" for _ in header) + "|")
        for row in rows:
            print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()

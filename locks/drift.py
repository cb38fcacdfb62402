"""Print how an environment's versions differ from a lock: `make test-latest` runs it
on the throwaway venv's `pip freeze`, so what moved since the last `make lock` shows
before anything is relocked.

Usage: python locks/drift.py LOCK FREEZE
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)")


def pins(path: Path) -> dict[str, str]:
    """``name: version`` of every ``name==version`` line (names normalised)."""
    found = {}
    for line in path.read_text().splitlines():
        match = PIN.match(line.strip())
        if match:
            found[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return found


def main(lock: str, freeze: str) -> None:
    locked, newest = pins(Path(lock)), pins(Path(freeze))
    moved = sorted(name for name in locked.keys() & newest.keys()
                   if locked[name] != newest[name])
    for name in moved:
        print(f"{name}: locked {locked[name]}, newest allowed {newest[name]}")
    for name in sorted(newest.keys() - locked.keys()):
        print(f"{name}: not locked, newest allowed {newest[name]}")
    for name in sorted(locked.keys() - newest.keys()):
        print(f"{name}: locked {locked[name]}, no longer installed")
    print(f"{len(moved)} of {len(locked)} locked packages have newer allowed versions")


if __name__ == "__main__":
    main(*sys.argv[1:3])

"""Reliability report: reads and builds through injected faults.

Synthetic COGs on local nginx behind the fault-injecting proxy (dropped connections,
503 bursts, truncated bodies, slow answers) at a chosen rate. For each kind: the
faults injected (counted by the proxy's seeded draw, replayed here), retries made,
requests that failed for good, objects and pixels verified identical to a clean read,
peak memory and the time lost to faults.

    .venv/bin/python benchmarks/faults.py [--rate 0.2] [--scenes 6]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).parent))
from _common import print_table  # noqa: E402

KINDS = ("drop", "503", "truncate", "slow")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=0.2, help="share of requests faulted")
    parser.add_argument("--scenes", type=int, default=6)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=11)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    import rasteret
    from rasteret.errors import RasteretError
    from rasteret.io.backend import RetryPolicy
    from rasteret.testing.scenes import write_scenes
    from rasteret.testing.servers import LatencyProxy, NginxServer

    folder = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    scenes = write_scenes(folder, count=args.scenes, size=args.size, tile=256,
                          bands=("B04", "B08"), label=False)
    files = [path for scene in scenes for path in scene.files.values()]
    clean = {str(path.relative_to(folder)): rasteret.open_cog(path).read() for path in files}
    windows = [(0, 0, args.size, args.size), (100, 200, 300, 300), (args.size - 64, 0, 64, 64)]
    rows = []
    with NginxServer(root=folder) as nginx:
        def run(kind: str, rate: float) -> list[str]:
            with LatencyProxy(nginx.url, delay=0.0, fault_rate=rate, faults=(kind,),
                              seed=args.seed) as proxy:
                backend = rasteret.create_backend(
                    retries=RetryPolicy(attempts=10, base_delay=0.01, max_delay=0.2,
                                        budget=30))
                stats = rasteret.FetchStats()
                failed = verified = pixels = 0
                nginx.clear_log()
                start = time.perf_counter()
                table = pa.Table.from_pylist([
                    {"id": str(p.relative_to(folder)),
                     "band": f"{proxy.url}/{p.relative_to(folder)}"}
                    for p in files])
                workspace = tempfile.mkdtemp(prefix="bench-faults-ws-")
                try:
                    collection = rasteret.build_from_table(
                        table, name="faults", href_columns=["band"], workspace_dir=workspace,
                        backend=backend, progress=False, stats=stats, on_error="skip")
                except RasteretError:
                    failed += len(files)
                    collection = None
                if collection is not None:
                    for row in range(len(collection)):
                        cog = collection.cog(row, "band", backend=backend)
                        name = collection.table["id"][row].as_py()
                        for window in windows:
                            try:
                                got = cog.read(window, stats=stats)
                            except RasteretError:
                                failed += 1
                                continue
                            c, r, w, h = window
                            expected = clean[name][:, r : r + h, c : c + w]
                            if np.array_equal(got, expected):
                                verified += 1
                                pixels += got.size
                            else:
                                failed += 1
                seconds = time.perf_counter() - start
                injected = sum(proxy.injected().values())
            return [kind, f"{rate:.2f}", str(injected), str(stats.retries), str(failed),
                    f"{verified}/{len(files) * len(windows)}", f"{pixels / 1e6:.1f}",
                    f"{seconds:.2f}"]

        run("drop", 0.0)  # warm-up: first-time costs are not faults
        baseline = run("drop", 0.0)
        rows.append(["none"] + baseline[1:])
        clean_seconds = float(baseline[-1])
        for kind in KINDS:
            row = run(kind, args.rate)
            row.append(f"{float(row[-1]) - clean_seconds:+.2f}")
            rows.append(row)
        rows[0].append("+0.00")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print_table(
        f"Reliability: {len(files)} COGs ({args.size} px, 256-px tiles), build + "
        f"{len(windows)} reads each through the fault proxy; peak RSS {peak:.0f} MB",
        ["fault", "rate", "injected", "retries", "failed for good", "reads identical",
         "Mpixels verified", "seconds", "time lost"],
        rows,
    )


if __name__ == "__main__":
    main()

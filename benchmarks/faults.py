"""Reliability report: reads and builds through injected faults.

Synthetic COGs on local nginx (HTTP) and moto (S3) behind the fault-injecting proxy
(dropped connections, 503 bursts, 429 throttling, truncated bodies, slow answers) at a
chosen rate. For each kind over HTTP, and for all but ``slow`` at once over S3: the
faults injected (counted by the proxy), retries made, requests that failed for good,
objects and pixels verified identical to a clean read, peak memory and the time lost
to faults against a clean run on the same store.

    .venv/bin/python benchmarks/faults.py [--rate 0.2] [--scenes 6] [--throttle-delay 0.5]
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

KINDS = ("drop", "503", "429", "truncate", "slow")
S3_KINDS = ("drop", "503", "429", "truncate")
BUCKET = "bench-faults"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=0.2, help="share of requests faulted")
    parser.add_argument("--scenes", type=int, default=6)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--throttle-delay", type=float, default=0.5,
                        help="RetryPolicy.throttle_delay: seconds added after a 429/503")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    import rasteret
    from rasteret.errors import RasteretError
    from rasteret.io.backend import RetryPolicy
    from testbed.scenes import write_scenes
    from testbed.servers import LatencyProxy, MotoServer, NginxServer

    folder = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    scenes = write_scenes(folder, count=args.scenes, size=args.size, tile=256,
                          bands=("B04", "B08"), label=False)
    files = [str(path.relative_to(folder)) for scene in scenes
             for path in scene.files.values()]
    clean = {name: rasteret.open_cog(folder / name).read() for name in files}
    windows = [(0, 0, args.size, args.size), (100, 200, 300, 300), (args.size - 64, 0, 64, 64)]
    rows = []
    with NginxServer(root=folder) as nginx, MotoServer() as moto:
        moto.create_bucket(BUCKET)
        for name in files:
            moto.upload(BUCKET, name, folder / name)

        def run(store: str, kinds: tuple[str, ...], rate: float) -> list[str]:
            upstream = moto.endpoint if store == "s3" else nginx.url
            with LatencyProxy(upstream, delay=0.0, fault_rate=rate, faults=kinds,
                              seed=args.seed) as proxy:
                s3_config = None
                if store == "s3":
                    s3_config = {"endpoint": proxy.url, "region": moto.region,
                                 "aws_access_key_id": moto.access_key_id,
                                 "aws_secret_access_key": moto.secret_access_key}
                backend = rasteret.create_backend(
                    default_s3_config=s3_config,
                    retries=RetryPolicy(attempts=10, base_delay=0.01, max_delay=0.2,
                                        budget=30, throttle_delay=args.throttle_delay))
                stats = rasteret.FetchStats()
                failed = verified = pixels = 0
                start = time.perf_counter()
                href = f"s3://{BUCKET}" if store == "s3" else proxy.url
                table = pa.Table.from_pylist([{"id": name, "band": f"{href}/{name}"}
                                              for name in files])
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
            return [store, ",".join(kinds) if rate else "none", f"{rate:.2f}", str(injected),
                    str(stats.retries), str(failed), f"{verified}/{len(files) * len(windows)}",
                    f"{pixels / 1e6:.1f}", f"{seconds:.2f}"]

        for store, faulty in (("http", [(kind,) for kind in KINDS]), ("s3", [S3_KINDS])):
            run(store, ("drop",), 0.0)  # warm-up: first-time costs are not faults
            baseline = run(store, ("drop",), 0.0)
            rows.append(baseline + ["+0.00"])
            for kinds in faulty:
                row = run(store, kinds, args.rate)
                rows.append(row + [f"{float(row[-1]) - float(baseline[-1]):+.2f}"])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print_table(
        f"Reliability: {len(files)} COGs ({args.size} px, 256-px tiles), build + "
        f"{len(windows)} reads each through the fault proxy (nginx for http, moto for s3; "
        f"throttle_delay {args.throttle_delay} s); peak RSS {peak:.0f} MB",
        ["store", "fault", "rate", "injected", "retries", "failed for good",
         "reads identical", "Mpixels verified", "seconds", "time lost"],
        rows,
    )


if __name__ == "__main__":
    main()

"""Render docs/figures/predict-map.png from the map ``make demo`` predicts.

``make demo`` writes ``demo-output/predicted_map.tif`` (a class COG of the demo area);
this script draws it small, in its own colour table, for the "Predict a map" page:

    make demo
    .venv/bin/python docs/figures/predict_map.py demo-output/predicted_map.tif
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cog", nargs="?", default="demo-output/predicted_map.tif")
    parser.add_argument("--out", default=str(Path(__file__).parent / "predict-map.png"))
    parser.add_argument("--max-size", type=int, default=480, help="PNG width at most")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from training_examples.demo import render_classes

    height, width = render_classes(Path(args.cog), Path(args.out), max_size=args.max_size)
    print(f"wrote {args.out} ({width} x {height} px) from {args.cog}")


if __name__ == "__main__":
    main()

"""Scenes that are partly empty, as real ones at orbit edges and swath margins are.

- ``"orbit"``: a nodata wedge cut by a diagonal line (as at a Sentinel-2 orbit edge);
  the item's geometry outlines the valid part, and tiles left wholly empty are sparse
  (written with ``SPARSE_OK=TRUE``: a zero byte count in the tile table).
- ``"margin"``: a nodata margin along the west edge that neither the item's geometry
  (the whole raster) nor the tile table (written tiles of zeros) shows: only the
  overviews see it.
- ``"full"``: every pixel valid.

Each scene has a uint16 ``B04`` band (nodata 0) and a uint8 ``label`` band (no
nodata): background 0, class 1 in a disc, class 2 in a small square.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

KINDS = ("orbit", "margin", "full")


@dataclass
class WedgeScene:
    """One scene: its files, its true valid pixels and labels, its item geometry."""

    id: str
    kind: str
    datetime: dt.datetime
    epsg: int
    transform: tuple[float, ...]
    valid: np.ndarray
    labels: np.ndarray
    geometry: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)


def _geometry(kind: str, left: float, top: float, size: int, res: float, epsg: int
              ) -> dict[str, Any]:
    """The item geometry in degrees: the valid part (orbit) or the raster (others)."""
    import shapely
    from pyproj import Transformer
    from shapely.geometry import mapping

    right, bottom = left + size * res, top - size * res
    if kind == "orbit":
        line_top, line_bottom = left + 0.8 * size * res, left + 0.2 * size * res
        polygon = shapely.Polygon([(left, top), (line_top, top), (line_bottom, bottom),
                                   (left, bottom)])
    else:
        polygon = shapely.box(left, bottom, right, top)
    to_degrees = Transformer.from_crs(epsg, 4326, always_xy=True)
    dense = shapely.segmentize(polygon, size * res / 32)
    projected = shapely.transform(
        dense, lambda xy: np.column_stack(to_degrees.transform(xy[:, 0], xy[:, 1])))
    geojson: dict[str, Any] = mapping(projected)
    return geojson


def _valid(kind: str, size: int) -> np.ndarray:
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    if kind == "orbit":  # left of the line from (0.8 size, 0) to (0.2 size, size)
        return cols < 0.8 * size - 0.6 * rows
    if kind == "margin":
        return cols >= 0.3 * size
    return np.ones((size, size), bool)


def _labels(size: int, index: int) -> np.ndarray:
    rows, cols = np.mgrid[0:size, 0:size]
    labels = np.zeros((size, size), np.uint8)
    cy, cx = size * (0.3 + 0.1 * index), size * 0.35
    labels[(rows - cy) ** 2 + (cols - cx) ** 2 < (0.12 * size) ** 2] = 1
    labels[int(0.7 * size):int(0.75 * size), int(0.1 * size):int(0.15 * size)] = 2
    return labels


def write_wedge_scenes(root: str | Path, *, kinds: tuple[str, ...] = KINDS, size: int = 1024,
                       tile: int = 256, res: float = 10.0, epsg: int = 32633,
                       origin: tuple[float, float] = (500_000.0, 4_100_000.0),
                       seed: int = 0) -> list[WedgeScene]:
    """Write one scene per kind (stacked on one grid, a day apart) under ``root``."""
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    root = Path(root)
    transform = from_origin(origin[0], origin[1], res, res)
    scenes = []
    for index, kind in enumerate(kinds):
        scene_id = f"WEDGE_{index:02d}_{kind}"
        folder = root / scene_id
        folder.mkdir(parents=True, exist_ok=True)
        valid = _valid(kind, size)
        data = rng.integers(1, 10_000, (size, size), dtype=np.uint16)
        data[~valid] = 0
        labels = _labels(size, index)
        scene = WedgeScene(
            scene_id, kind, dt.datetime(2024, 6, 1 + index, 10, tzinfo=dt.UTC), epsg,
            tuple(transform)[:6], valid, labels,
            _geometry(kind, origin[0], origin[1], size, res, epsg))
        profile = {"driver": "COG", "width": size, "height": size, "count": 1,
                   "crs": f"EPSG:{epsg}", "transform": transform, "blocksize": tile,
                   "compress": "deflate", "overviews": "AUTO",
                   "overview_resampling": "nearest"}
        scene.files["B04"] = folder / "B04.tif"
        with rasterio.open(scene.files["B04"], "w", dtype="uint16", nodata=0,
                           sparse_ok=kind == "orbit", **profile) as dst:
            dst.write(data, 1)
        scene.files["label"] = folder / "label.tif"
        with rasterio.open(scene.files["label"], "w", dtype="uint8", **profile) as dst:
            dst.write(labels, 1)
        scenes.append(scene)
    return scenes

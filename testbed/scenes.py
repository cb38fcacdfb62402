"""Synthetic Sentinel-2-like scenes and the STAC items that describe them.

Used by the tests, the benchmarks and ``make demo``. Pixels are smooth fields plus
noise (so they compress like real imagery); a land-cover ``label`` band is derived
from them so that a model can learn something in a few steps. Files are GDAL COGs
(written with rasterio, a development dependency).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: Band code -> Earth Search asset key (Planetary Computer keys are the codes).
EARTH_SEARCH_KEYS = {"B02": "blue", "B03": "green", "B04": "red", "B08": "nir", "label": "label"}
DEFAULT_BANDS = ("B02", "B03", "B04", "B08")


@dataclass
class Scene:
    """One synthetic scene: its id, time, grid and one file per band."""

    id: str
    datetime: dt.datetime
    epsg: int
    transform: tuple[float, ...]
    width: int
    height: int
    cloud_cover: float
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(minx, miny, maxx, maxy)`` in the scene's CRS."""
        a, _, c, _, e, f = self.transform
        return c, f + e * self.height, c + a * self.width, f


def _fields(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth random fields in [0, 1]: a few low-frequency sinusoids."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    total = np.zeros((size, size), np.float32)
    for _ in range(4):
        fx, fy = rng.uniform(1, 6, 2)
        px, py = rng.uniform(0, 2 * np.pi, 2)
        total += np.sin(2 * np.pi * fx * xx + px) * np.cos(2 * np.pi * fy * yy + py)
    total -= total.min()
    return total / max(float(total.max()), 1e-6)


def write_scenes(
    root: str | Path,
    *,
    count: int = 4,
    size: int = 1024,
    tile: int = 256,
    bands: tuple[str, ...] = DEFAULT_BANDS,
    label: bool = True,
    epsg: int = 32633,
    origin: tuple[float, float] = (500_000.0, 4_100_000.0),
    res: float = 10.0,
    shift: int = 0,
    start: dt.datetime = dt.datetime(2024, 5, 1, 10, 0, tzinfo=dt.UTC),
    days_between: int = 5,
    seed: int = 0,
    nodata: int | None = 0,
    compress: str = "deflate",
    overviews: bool = True,
) -> list[Scene]:
    """Write ``count`` scenes of ``size`` x ``size`` pixels as GDAL COGs under ``root``.

    Args:
        root: Output folder (files ``<scene id>/<band>.tif``).
        count: Number of scenes.
        size: Pixels per side.
        tile: COG tile size.
        bands: uint16 reflectance bands.
        label: Also write a uint8 ``label`` band (4 classes derived from the data).
        epsg: The scenes' CRS.
        origin: Top-left corner of the first scene.
        res: Pixel size.
        shift: Pixels each scene is shifted east of the previous one (0: stacked).
        start: Time of the first scene.
        days_between: Days between scenes.
        seed: Random seed.
        nodata: Nodata value written in the files (None: none).
        compress: GDAL compression.
        overviews: Build internal overviews.
    """
    import rasterio
    from rasterio.transform import from_origin

    root = Path(root)
    rng = np.random.default_rng(seed)
    base = _fields(rng, size)
    scenes = []
    for index in range(count):
        scene_id = f"S2X_SYN_{index:03d}"
        folder = root / scene_id
        folder.mkdir(parents=True, exist_ok=True)
        x0 = origin[0] + index * shift * res
        transform = from_origin(x0, origin[1], res, res)
        wobble = _fields(rng, size) * 0.3
        scene = Scene(
            id=scene_id,
            datetime=start + dt.timedelta(days=index * days_between),
            epsg=epsg,
            transform=tuple(transform)[:6],
            width=size,
            height=size,
            cloud_cover=float(rng.uniform(0, 60)),
        )
        signal = np.clip(base * 0.7 + wobble, 0, 1)
        for band_number, band in enumerate(bands):
            noise = rng.normal(0, 40, (size, size))
            values = 500 + signal * (2500 + 700 * band_number) + noise
            data = np.clip(values, 1, 10_000).astype(np.uint16)
            scene.files[band] = _write(folder / f"{band}.tif", data, transform, epsg, tile,
                                       nodata, compress, overviews, rasterio)
        if label:
            classes = np.digitize(signal, [0.25, 0.5, 0.75]).astype(np.uint8)
            scene.files["label"] = _write(folder / "label.tif", classes, transform, epsg,
                                          tile, None, compress, overviews, rasterio)
        scenes.append(scene)
    return scenes


def _write(path, data, transform, epsg, tile, nodata, compress, overviews, rasterio) -> Path:
    profile = {
        "driver": "COG",
        "width": data.shape[1],
        "height": data.shape[0],
        "count": 1,
        "dtype": data.dtype.name,
        "crs": f"EPSG:{epsg}",
        "transform": transform,
        "blocksize": tile,
        "compress": compress,
        "overviews": "AUTO" if overviews else "NONE",
    }
    if compress in ("deflate", "zstd", "lzw"):
        profile["predictor"] = 2
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
    return path


def stac_item(
    scene: Scene,
    href_of: Any,
    *,
    collection: str = "sentinel-2-l2a",
    style: str = "earthsearch",
) -> dict[str, Any]:
    """A STAC item for ``scene`` shaped like the named provider's.

    Args:
        scene: The scene.
        href_of: Function ``(scene, band, path) -> href`` placing the files on a server.
        collection: The STAC collection id.
        style: ``"earthsearch"`` (assets keyed blue/red/nir, ``proj:epsg``) or
            ``"planetary"`` (assets keyed B02/B04/B08, ``proj:code``).
    """
    from pyproj import Transformer

    to_degrees = Transformer.from_crs(scene.epsg, 4326, always_xy=True)
    minx, miny, maxx, maxy = to_degrees.transform_bounds(*scene.bounds)
    ring = [[minx, miny], [maxx, miny], [maxx, maxy], [minx, maxy], [minx, miny]]
    assets = {}
    for band, path in scene.files.items():
        key = EARTH_SEARCH_KEYS.get(band, band) if style == "earthsearch" else band
        assets[key] = {
            "href": href_of(scene, band, path),
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "roles": ["data"],
            "proj:shape": [scene.height, scene.width],
            "proj:transform": list(scene.transform),
        }
    properties: dict[str, Any] = {
        "datetime": scene.datetime.isoformat().replace("+00:00", "Z"),
        "eo:cloud_cover": round(scene.cloud_cover, 3),
        "platform": "sentinel-2x",
    }
    if style == "earthsearch":
        properties["proj:epsg"] = scene.epsg
    else:
        properties["proj:code"] = f"EPSG:{scene.epsg}"
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": scene.id,
        "collection": collection,
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "bbox": [minx, miny, maxx, maxy],
        "properties": properties,
        "assets": assets,
        "links": [],
    }


def stac_collection(items: list[dict[str, Any]], collection: str = "sentinel-2-l2a") -> dict:
    """A STAC collection document covering ``items``."""
    xs = [v for item in items for v in item["bbox"][0::2]]
    ys = [v for item in items for v in item["bbox"][1::2]]
    times = sorted(item["properties"]["datetime"] for item in items)
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "id": collection,
        "description": "Synthetic Sentinel-2-like scenes for rasteret's tests and demo",
        "license": "CC0-1.0",
        "extent": {
            "spatial": {"bbox": [[min(xs), min(ys), max(xs), max(ys)]]},
            "temporal": {"interval": [[times[0], times[-1]]]},
        },
        "links": [],
    }

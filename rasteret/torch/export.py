"""Chip export for labelling: georeferenced GeoTIFF chips (and optional PNGs), a
GeoParquet manifest, and a quick-look PNG grid."""

from __future__ import annotations

import datetime as dt
import math
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
import tifffile
from pyproj import CRS

from rasteret.atomic import write_atomic
from rasteret.collection import Collection
from rasteret.errors import ConfigurationError
from rasteret.read.warp import transformer
from rasteret.storage import publish, with_metadata
from rasteret.tiff.geo import (
    GEOGRAPHIC_TYPE,
    GT_MODEL_TYPE,
    GT_RASTER_TYPE,
    PROJECTED_CS_TYPE,
    TAG_GDAL_NODATA,
    TAG_GEO_KEY_DIRECTORY,
    TAG_MODEL_PIXEL_SCALE,
    TAG_MODEL_TIEPOINT,
)
from rasteret.torch.dataset import RasteretDataset
from rasteret.torch.samplers import TileAlignedSampler

QUICKLOOK_MAX_CHIPS = 64


def geokeys_for(crs: CRS) -> list[int]:
    """A GeoKeyDirectory naming ``crs`` by its EPSG code (area pixels)."""
    code = crs.to_epsg()
    if code is None:
        raise ConfigurationError(f"chips need an EPSG CRS, got {crs.name}")
    # Model type 2 geographic / 1 projected; raster type 1 PixelIsArea.
    if crs.is_geographic:
        keys = [(GT_MODEL_TYPE, 0, 1, 2), (GT_RASTER_TYPE, 0, 1, 1),
                (GEOGRAPHIC_TYPE, 0, 1, code)]
    else:
        keys = [(GT_MODEL_TYPE, 0, 1, 1), (GT_RASTER_TYPE, 0, 1, 1),
                (PROJECTED_CS_TYPE, 0, 1, code)]
    return [1, 1, 0, len(keys)] + [v for key in keys for v in key]


def write_geotiff(path: Path, data: np.ndarray, transform: Sequence[float], crs: CRS,
                  nodata: float | None = None) -> None:
    """Write ``data`` ``(bands, rows, cols)`` as a deflate GeoTIFF with georeferencing."""
    a, _, c, _, e, f = transform[:6]
    keys = geokeys_for(crs)
    tags: list[tuple[int, str, int, Any, bool]] = [
        (TAG_MODEL_PIXEL_SCALE, "d", 3, (a, -e, 0.0), False),
        (TAG_MODEL_TIEPOINT, "d", 6, (0.0, 0.0, 0.0, c, f, 0.0), False),
        (TAG_GEO_KEY_DIRECTORY, "H", len(keys), keys, False),
    ]
    if nodata is not None:
        tags.append((TAG_GDAL_NODATA, "s", 0, f"{nodata:g}", False))
    write_atomic(path, lambda tmp: tifffile.imwrite(
        tmp, data, photometric="minisblack", planarconfig="separate", compression="zlib",
        predictor=data.dtype.kind in "iu", extratags=tags))


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Stretch an image ``(bands, rows, cols)`` to RGB or gray uint8 ``(rows, cols[, 3])``."""
    shown = image[:3] if image.shape[0] >= 3 else image[:1]
    values = shown.astype(np.float64)
    low, high = np.nanpercentile(values, (2, 98)) if values.size else (0, 1)
    scaled = np.clip((values - low) / max(high - low, 1e-9) * 255, 0, 255).astype(np.uint8)
    return np.moveaxis(scaled, 0, -1) if scaled.shape[0] == 3 else scaled[0]


def quicklook_grid(chips: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Tile uint8 chips into one RGB image (at most QUICKLOOK_MAX_CHIPS)."""
    chips = [c if c.ndim == 3 else np.repeat(c[..., None], 3, axis=-1)
             for c in chips[:QUICKLOOK_MAX_CHIPS]]
    cols = math.ceil(math.sqrt(len(chips)))
    rows = math.ceil(len(chips) / cols)
    height = max(c.shape[0] for c in chips)
    width = max(c.shape[1] for c in chips)
    grid = np.full((rows * (height + gap) - gap, cols * (width + gap) - gap, 3), 255, np.uint8)
    for i, chip in enumerate(chips):
        r, c = divmod(i, cols)
        y, x = r * (height + gap), c * (width + gap)
        grid[y : y + chip.shape[0], x : x + chip.shape[1]] = chip
    return grid


def export_chips(
    collection: Collection,
    bands: Sequence[str],
    out_dir: str | os.PathLike[str],
    *,
    chip_size: int = 256,
    sampler: Iterable[Any] | None = None,
    mode: str = "grid",
    length: int | None = None,
    seed: int | None = 0,
    png: bool = False,
    quicklook: bool = True,
    overwrite: bool = False,
    dataset_options: dict[str, Any] | None = None,
) -> Path:
    """Write chips of ``bands`` for labelling and return the manifest's path.

    Args:
        collection: The collection to cut chips from.
        bands: Bands of each chip, in order.
        out_dir: Output folder: ``chips/<id>.tif`` (and ``.png``), ``manifest.parquet``
            (chip id, bounds, CRS, datetime, source scenes; GeoParquet with footprints
            in CRS84) and ``quicklook.png``.
        chip_size: Chip size in pixels (for the default sampler).
        sampler: Any TorchGeo sampler over a :class:`RasteretDataset` of this
            collection; default :class:`TileAlignedSampler` in ``mode``.
        mode: ``"grid"`` (every aligned chip) or ``"random"`` (``length`` chips).
        length: Number of random chips.
        seed: Seed of the random sampler.
        png: Also write an 8-bit PNG next to each GeoTIFF.
        quicklook: Write ``quicklook.png``, a grid of (up to 64) chips.
        overwrite: Replace an existing output folder.
        dataset_options: Extra keyword arguments of :class:`RasteretDataset`.

    Raises:
        FileExistsError: ``out_dir`` is not empty and ``overwrite`` is False.
        ConfigurationError: The sampler produced no chip, or the collection's CRS
            has no EPSG code.
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty; pass overwrite=True to replace it")
        shutil.rmtree(out)
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "chips").mkdir(parents=True)
    dataset = RasteretDataset(collection, bands, chip_size=chip_size, **(dataset_options or {}))
    if sampler is None:
        sampler = TileAlignedSampler(dataset, size=chip_size, mode=mode, length=length, seed=seed)
    to_degrees = transformer(dataset.crs, CRS.from_epsg(4326))
    rows: list[dict[str, Any]] = []
    looks: list[np.ndarray] = []
    ids = collection.table["id"].to_pylist()
    times = collection.table["datetime"].to_pylist()
    for number, chip in enumerate(sampler):
        sample = dataset[chip]
        image = sample["image"].numpy()
        x, y, _ = dataset.resolve_slice(chip)
        scenes = dataset.scene_rows(chip)
        transform = [float(v) for v in sample["transform"][:6]]
        chip_id = f"chip_{number:06d}"
        nodata = dataset.view(scenes[0], bands[0]).nodata if scenes else None
        write_geotiff(staging / "chips" / f"{chip_id}.tif", image, transform, dataset.crs,
                      nodata)
        look = to_uint8(image)
        if png:
            (staging / "chips" / f"{chip_id}.png").write_bytes(imagecodecs.png_encode(look))
        if quicklook and len(looks) < QUICKLOOK_MAX_CHIPS:
            looks.append(look)
        footprint = shapely.box(*to_degrees.transform_bounds(x.start, y.start, x.stop, y.stop))
        rows.append({
            "chip_id": chip_id,
            "path": f"chips/{chip_id}.tif",
            "minx": x.start, "miny": y.start, "maxx": x.stop, "maxy": y.stop,
            "crs": f"EPSG:{dataset.crs.to_epsg()}",
            "datetime": times[scenes[0]] if scenes else None,
            "source_scenes": [ids[r] for r in scenes],
            "geometry": shapely.to_wkb(footprint),
            "bbox": dict(zip(("xmin", "ymin", "xmax", "ymax"), footprint.bounds)),
        })
    if not rows:
        shutil.rmtree(staging)
        raise ConfigurationError(
            f"the sampler produced no chip over collection {collection.name!r}: "
            f"chip_size={chip_size} may exceed every scene, or the sampler (length, "
            "region) selects nothing"
        )
    table = pa.Table.from_pylist(rows).cast(pa.schema([
        ("chip_id", pa.string()), ("path", pa.string()), ("minx", pa.float64()),
        ("miny", pa.float64()), ("maxx", pa.float64()), ("maxy", pa.float64()),
        ("crs", pa.string()), ("datetime", pa.timestamp("us", tz="UTC")),
        ("source_scenes", pa.list_(pa.string())), ("geometry", pa.binary()),
        ("bbox", pa.struct([("xmin", pa.float64()), ("ymin", pa.float64()),
                            ("xmax", pa.float64()), ("ymax", pa.float64())])),
    ]))
    manifest = {"kind": "chips", "collection": collection.name, "bands": list(bands),
                "created": dt.datetime.now(dt.UTC).isoformat()}
    pq.write_table(with_metadata(table, manifest), staging / "manifest.parquet")
    if quicklook:
        (staging / "quicklook.png").write_bytes(imagecodecs.png_encode(quicklook_grid(looks)))
    publish(staging, out)
    return out / "manifest.parquet"

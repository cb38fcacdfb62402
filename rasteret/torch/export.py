"""Chip export for labelling: georeferenced GeoTIFF chips, PNG chips with a Label
Studio project (tasks with brush pre-annotations, labeling config), a GeoParquet
manifest, and a quick-look PNG grid."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from pyproj import CRS

from rasteret.atomic import write_atomic
from rasteret.collection import Collection
from rasteret.errors import ConfigurationError
from rasteret.io.backend import Backend
from rasteret.labelstudio import brush_results, labeling_config
from rasteret.options import MosaicOrder, ReadOptions
from rasteret.progress import track
from rasteret.read.warp import transformer
from rasteret.storage import publish, with_metadata
from rasteret.tiff.writer import encode_geotiff
from rasteret.torch.dataset import RasteretDataset
from rasteret.torch.samplers import ChipMode, TileAlignedSampler

QUICKLOOK_MAX_CHIPS = 64


def write_geotiff(path: Path, data: np.ndarray, transform: Sequence[float], crs: CRS,
                  nodata: float | None = None) -> None:
    """Write ``data`` ``(bands, rows, cols)`` as a deflate GeoTIFF with georeferencing."""
    write_atomic(path, lambda tmp: tmp.write_bytes(encode_geotiff(data, transform, crs, nodata)))


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Stretch an image ``(bands, rows, cols)`` to RGB or gray uint8 ``(rows, cols[, 3])``."""
    shown = image[:3] if image.shape[0] >= 3 else image[:1]
    values = shown.astype(np.float64)
    low, high = np.nanpercentile(values, (2, 98)) if values.size else (0, 1)
    scaled = np.clip((values - low) / max(high - low, 1e-9) * 255, 0, 255).astype(np.uint8)
    # Contiguous: PNG encoders reject the strided view moveaxis returns.
    shaped = np.moveaxis(scaled, 0, -1) if scaled.shape[0] == 3 else scaled[0]
    return np.ascontiguousarray(shaped)


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


#: The Label Studio files of an export.
TASKS_FILE = "label_studio_tasks.json"
CONFIG_FILE = "label_studio_config.xml"
#: The ``<BrushLabels>`` name when no mask band is exported.
DEFAULT_LABEL_BAND = "label"


def class_names(label_classes: Mapping[int, str] | Sequence[str] | None) -> dict[int, str] | None:
    """``label_classes`` as class value -> label name (a sequence is indexed by value)."""
    if label_classes is None:
        return None
    pairs = (label_classes.items() if isinstance(label_classes, Mapping)
             else enumerate(label_classes))
    names = {int(value): str(name) for value, name in pairs}
    if len(set(names.values())) != len(names):
        raise ConfigurationError(f"label_classes names must be unique, got {names}")
    return names


@dataclass(frozen=True)
class ChipExport:
    """How an export writes its chips (see :func:`export_chips` for each field).

    Attributes:
        chip_size: Chip size in pixels (for the default sampler).
        mode: ``"grid"`` (every aligned chip) or ``"random"`` (``length`` chips).
        length: Number of random chips.
        seed: Seed of the random sampler.
        png: Write an 8-bit PNG next to each GeoTIFF (always with ``label_studio``).
        quicklook: Write ``quicklook.png``, a grid of (up to 64) chips.
        overwrite: Replace an existing output folder.
        label_studio: Write the Label Studio tasks and config (and the PNG chips).
        image_url: Prefix of the tasks' image URLs, before ``chips/<id>.png``.
    """

    chip_size: int = 256
    mode: ChipMode = "grid"
    length: int | None = None
    seed: int | None = 0
    png: bool = False
    quicklook: bool = True
    overwrite: bool = False
    label_studio: bool = True
    image_url: str | None = None


def export_chips(
    collection: Collection,
    bands: Sequence[str],
    out_dir: str | os.PathLike[str],
    options: ReadOptions | None = None,
    export: ChipExport | None = None,
    *,
    sampler: Iterable[Any] | None = None,
    mask_bands: Sequence[str] | None = None,
    label_classes: Mapping[int, str] | Sequence[str] | None = None,
    backend: Backend | None = None,
    mosaic_order: MosaicOrder = "latest",
    progress: bool = True,
) -> Path:
    """Write chips of ``bands`` for labelling and return the manifest's path.

    Besides the GeoTIFF chips, the folder is a ready Label Studio project: PNG chips,
    ``label_studio_tasks.json`` (one task per chip, ``data.image`` pointing at its
    PNG and ``data.chip_id`` naming it; the ``mask_bands`` as brush pre-annotations,
    Label Studio's ``predictions``) and ``label_studio_config.xml`` (the image and one
    ``<BrushLabels>`` per label band). :func:`rasteret.labels.import_masks` brings the
    labelled masks back as a collection aligned with the chips.

    Args:
        collection: The collection to cut chips from.
        bands: Bands of each chip, in order.
        out_dir: Output folder: ``chips/<id>.tif`` (and ``.png``), ``manifest.parquet``
            (chip id, bounds, size, CRS, datetime, source scenes; GeoParquet with
            footprints in CRS84), ``quicklook.png`` and the Label Studio files.
        options: How chips are read (:class:`~rasteret.options.ReadOptions`), as
            for :class:`RasteretDataset`.
        export: How chips are written (:class:`ChipExport`): ``chip_size``;
            ``mode`` (``"grid"`` or ``"random"``), ``length`` and ``seed`` of the
            default sampler; ``png``, ``quicklook``, ``overwrite``, ``label_studio``;
            ``image_url``, the prefix of the tasks' image URLs before
            ``chips/<id>.png`` (default ``/data/local-files/?d=<out_dir name>/``:
            Label Studio serving local files with ``LOCAL_FILES_DOCUMENT_ROOT`` the
            folder that holds ``out_dir``; e.g. ``https://host/chips-export/`` for a
            web server).
        sampler: Any TorchGeo sampler over a :class:`RasteretDataset` of this
            collection; default :class:`TileAlignedSampler` in ``export.mode``.
        mask_bands: Label bands read with each chip and written as brush
            pre-annotations (one ``<BrushLabels>`` named after each band); without
            them, the config has one ``<BrushLabels>`` named ``label``.
        label_classes: Class value -> label name (a sequence: names by value).
            Values not listed are not pre-annotated. Default: every value of the
            mask bands but 0 and nodata, named by its value.
        backend: How to reach the stores (default: the dataset's CloudConfig).
        mosaic_order: Which scene wins where scenes overlap, as for the dataset.
        progress: Show a bar of the chips written (``False`` or
            ``RASTERET_PROGRESS=0`` hides it; see :mod:`rasteret.progress`).

    Raises:
        FileExistsError: ``out_dir`` is not empty and ``export.overwrite`` is False.
        ConfigurationError: The sampler produced no chip, the collection's CRS
            has no EPSG code, or ``label_classes`` repeats a name.
    """
    export = export or ChipExport()
    chip_size = export.chip_size
    out = Path(out_dir)
    staging = _staging_folder(out, export.overwrite)
    classes = class_names(label_classes)
    dataset = RasteretDataset(collection, bands, chip_size=chip_size, mask_bands=mask_bands,
                              options=options, backend=backend, mosaic_order=mosaic_order)
    if sampler is None:
        sampler = TileAlignedSampler(dataset, size=chip_size, mode=export.mode,
                                     length=export.length, seed=export.seed)
    image_url = export.image_url
    writer = _ChipWriter(
        dataset, staging, classes,
        url_prefix=image_url if image_url is not None else f"/data/local-files/?d={out.name}/",
        png=export.png or export.label_studio, quicklook=export.quicklook,
        label_studio=export.label_studio)
    total = len(sampler) if isinstance(sampler, Sized) else None
    for chip in track(sampler, total=total, desc=f"Exporting chips of {collection.name}",
                      unit="chip", progress=progress):
        writer.write(chip)
    if not writer.rows:
        shutil.rmtree(staging)
        raise ConfigurationError(
            f"the sampler produced no chip over collection {collection.name!r}: "
            f"chip_size={chip_size} may exceed every scene, or the sampler (length, "
            "region) selects nothing"
        )
    writer.finish(collection.name, bands)
    publish(staging, out)
    return out / "manifest.parquet"


def _staging_folder(out: Path, overwrite: bool) -> Path:
    """An empty hidden folder beside ``out`` to write into (published as ``out`` at
    the end, so a failed export leaves no half-written folder).

    Raises:
        FileExistsError: ``out`` is not empty and ``overwrite`` is False.
    """
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} is not empty; pass overwrite=True to replace it")
        shutil.rmtree(out)
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "chips").mkdir(parents=True)
    return staging


#: The manifest's columns, one row per chip.
MANIFEST_SCHEMA = pa.schema([
    ("chip_id", pa.string()), ("path", pa.string()), ("minx", pa.float64()),
    ("miny", pa.float64()), ("maxx", pa.float64()), ("maxy", pa.float64()),
    ("width", pa.int32()), ("height", pa.int32()),
    ("crs", pa.string()), ("datetime", pa.timestamp("us", tz="UTC")),
    ("source_scenes", pa.list_(pa.string())), ("geometry", pa.binary()),
    ("bbox", pa.struct([("xmin", pa.float64()), ("ymin", pa.float64()),
                        ("xmax", pa.float64()), ("ymax", pa.float64())])),
])


class _ChipWriter:
    """Writes each chip of an export into the staging folder (GeoTIFF, PNG, Label
    Studio task, quick-look) and gathers the manifest's rows."""

    def __init__(self, dataset: RasteretDataset, staging: Path,
                 classes: dict[int, str] | None, *, url_prefix: str, png: bool,
                 quicklook: bool, label_studio: bool) -> None:
        self.dataset, self.staging, self.classes = dataset, staging, classes
        self.url_prefix, self.png = url_prefix, png
        self.quicklook, self.label_studio = quicklook, label_studio
        self.label_bands = list(dataset.mask_bands) or [DEFAULT_LABEL_BAND]
        # Class names per label band: given, or found in the mask bands as chips go by.
        self.controls: dict[str, dict[int, str]] = {
            band: dict(classes or {}) for band in self.label_bands}
        self.to_degrees = transformer(dataset.crs, CRS.from_epsg(4326))
        self.ids = dataset.collection.column("id").to_pylist()
        self.times = dataset.collection.column("datetime").to_pylist()
        self.rows: list[dict[str, Any]] = []
        self.tasks: list[dict[str, Any]] = []
        self.looks: list[np.ndarray] = []

    def write(self, chip: Any) -> None:
        """Write one chip (a sampler's query) and record it."""
        dataset = self.dataset
        sample = dataset[chip]
        image = sample["image"].numpy()
        scenes = dataset.scene_rows(chip)
        chip_id = f"chip_{len(self.rows):06d}"
        nodata = dataset.view(scenes[0], dataset.bands[0]).nodata if scenes else None
        write_geotiff(self.staging / "chips" / f"{chip_id}.tif", image,
                      [float(v) for v in sample["transform"][:6]], dataset.crs, nodata)
        look = to_uint8(image)
        if self.png:
            (self.staging / "chips" / f"{chip_id}.png").write_bytes(imagecodecs.png_encode(look))
        if self.quicklook and len(self.looks) < QUICKLOOK_MAX_CHIPS:
            self.looks.append(look)
        if self.label_studio:
            self.tasks.append(self._task(chip_id, sample, image.shape[-2:], scenes))
        self.rows.append(self._row(chip_id, chip, image.shape, scenes))

    def _task(self, chip_id: str, sample: dict[str, Any], shape: tuple[int, ...],
              scenes: list[int]) -> dict[str, Any]:
        """The chip's Label Studio task, its mask bands as brush pre-annotations."""
        task: dict[str, Any] = {"data": {"image": f"{self.url_prefix}chips/{chip_id}.png",
                                         "chip_id": chip_id}}
        if not self.dataset.mask_bands:
            return task
        masks = sample["mask"].numpy().reshape(-1, *shape)
        results = []
        for band, mask in zip(self.dataset.mask_bands, masks):
            known = self.controls[band]
            if self.classes is None:
                skip = {0, self.dataset.view(scenes[0], band).nodata if scenes else None}
                known.update({v: str(v) for v in np.unique(mask).tolist()
                              if v not in skip and v not in known})
            results += brush_results(mask, known, from_name=band)
        task["predictions"] = [{"model_version": "mask_bands", "result": results}]
        return task

    def _row(self, chip_id: str, chip: Any, shape: tuple[int, ...], scenes: list[int]
             ) -> dict[str, Any]:
        """The chip's manifest row (footprint in CRS84)."""
        x, y, _ = self.dataset.resolve_slice(chip)
        footprint = shapely.box(*self.to_degrees.transform_bounds(x.start, y.start,
                                                                  x.stop, y.stop))
        return {
            "chip_id": chip_id,
            "path": f"chips/{chip_id}.tif",
            "minx": x.start, "miny": y.start, "maxx": x.stop, "maxy": y.stop,
            "width": shape[-1], "height": shape[-2],
            "crs": f"EPSG:{self.dataset.crs.to_epsg()}",
            "datetime": self.times[scenes[0]] if scenes else None,
            "source_scenes": [self.ids[r] for r in scenes],
            "geometry": shapely.to_wkb(footprint),
            "bbox": dict(zip(("xmin", "ymin", "xmax", "ymax"), footprint.bounds)),
        }

    def finish(self, collection_name: str | None, bands: Sequence[str]) -> None:
        """Write the manifest, the Label Studio files and the quick-look."""
        table = pa.Table.from_pylist(self.rows).cast(MANIFEST_SCHEMA)
        manifest = {"kind": "chips", "collection": collection_name, "bands": list(bands),
                    "created": dt.datetime.now(dt.UTC).isoformat(),
                    # What rasteret.labels needs to map brush labels back to class values.
                    "labels": {band: {str(v): name for v, name
                                      in sorted(self.controls[band].items())}
                               for band in self.label_bands}}
        pq.write_table(with_metadata(table, manifest), self.staging / "manifest.parquet")
        if self.label_studio:
            (self.staging / TASKS_FILE).write_text(json.dumps(self.tasks, indent=1))
            (self.staging / CONFIG_FILE).write_text(labeling_config(self.controls))
        if self.quicklook:
            (self.staging / "quicklook.png").write_bytes(
                imagecodecs.png_encode(quicklook_grid(self.looks)))

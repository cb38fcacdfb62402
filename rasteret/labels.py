"""The way back from labelling: masks drawn on exported chips become a collection.

:func:`import_masks` reads what labellers made of a chip export
(:meth:`rasteret.Collection.export_chips`): Label Studio's JSON export (brush
results in RLE), or a folder of PNG / GeoTIFF masks named after the chips. It writes
one mask GeoTIFF per chip (and label band) with the chip's georeferencing and builds
a collection of them, so ``RasteretDataset(masks, bands, is_image=False)`` joins the
imagery with ``images & labels`` (a TorchGeo ``IntersectionDataset``) for training.
Needs no torch.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tifffile
from pyproj import CRS

from rasteret.collection import Collection
from rasteret.errors import ConfigurationError
from rasteret.ingest.api import build_from_table
from rasteret.labelstudio import decode_brush_rle
from rasteret.progress import track
from rasteret.storage import manifest_from_metadata, publish
from rasteret.tiff.writer import encode_geotiff

#: Mask file suffixes read from a folder source.
MASK_SUFFIXES = (".png", ".tif", ".tiff")


class ChipExport:
    """A chip export read back: its chips' grids and its label bands and classes.

    Args:
        path: The export folder, or its ``manifest.parquet``.

    Raises:
        ConfigurationError: ``path`` is not a chip export.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        manifest = Path(path)
        if manifest.is_dir():
            manifest = manifest / "manifest.parquet"
        if not manifest.is_file():
            raise ConfigurationError(
                f"no chip export at {path}: expected the folder export_chips wrote (with "
                "manifest.parquet) or that manifest")
        table = pq.read_table(manifest)
        info = manifest_from_metadata(table.schema.metadata)
        if info.get("kind") != "chips" or "width" not in table.column_names:
            raise ConfigurationError(
                f"{manifest} is not the manifest of a chip export of this rasteret version; "
                "export the chips again with Collection.export_chips")
        self.folder = manifest.parent
        self.chips: dict[str, dict[str, Any]] = {
            row["chip_id"]: row for row in table.to_pylist()}
        labels: dict[str, dict[str, str]] = info.get("labels") or {}
        #: Label band -> label name -> class value.
        self.classes: dict[str, dict[str, int]] = {
            band: {name: int(value) for value, name in names.items()}
            for band, names in labels.items()}

    @property
    def label_bands(self) -> list[str]:
        """The label bands (Label Studio ``<BrushLabels>`` names), in export order."""
        return list(self.classes)

    def chip(self, chip_id: str) -> dict[str, Any]:
        """The manifest row of ``chip_id``.

        Raises:
            ConfigurationError: The export has no such chip.
        """
        row = self.chips.get(chip_id)
        if row is None:
            raise ConfigurationError(
                f"no chip {chip_id!r} in the export at {self.folder} (it has "
                f"{len(self.chips)} chips, e.g. {next(iter(self.chips))!r}): the labels "
                "come from another export")
        return row

    def transform(self, chip_id: str) -> tuple[float, float, float, float, float, float]:
        """The affine transform of a chip's pixel grid."""
        row = self.chip(chip_id)
        return ((row["maxx"] - row["minx"]) / row["width"], 0.0, row["minx"],
                0.0, -(row["maxy"] - row["miny"]) / row["height"], row["maxy"])

    def dtype(self, band: str) -> np.dtype[Any]:
        """The mask dtype of a label band: uint8 when its classes fit, else int32."""
        values = self.classes.get(band, {}).values()
        return np.dtype(np.uint8 if all(0 <= v <= 255 for v in values) else np.int32)

    def class_value(self, band: str, label: str) -> int:
        """The class value of label name ``label`` of label band ``band``.

        Raises:
            ConfigurationError: The label is not one of the band's classes (nor a
                number).
        """
        known = self.classes.get(band, {})
        if label in known:
            return known[label]
        if label.lstrip("-").isdigit():
            return int(label)
        raise ConfigurationError(
            f"label {label!r} of {band!r} is not one of the export's classes "
            f"{sorted(known)}: name it as in label_studio_config.xml, or export with "
            "label_classes= listing it")


def read_label_studio(export: ChipExport,
                      path: Path) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    """``(chip id, {label band: class mask})`` for each labelled task of a Label Studio
    JSON export (the latest annotation that was not cancelled; later results paint
    over earlier ones; unpainted pixels are 0)."""
    try:
        tasks = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigurationError(f"cannot read the Label Studio export {path}: {exc}") from exc
    if not isinstance(tasks, list):
        raise ConfigurationError(
            f"{path} is not a Label Studio JSON export (a list of tasks); export the "
            "project in the 'JSON' format")
    for task in tasks:
        data = task.get("data", {})
        chip_id = data.get("chip_id") or Path(str(data.get("image", ""))).stem
        done = [a for a in task.get("annotations", []) if not a.get("was_cancelled")]
        if not done:
            continue
        row = export.chip(chip_id)
        shape = (row["height"], row["width"])
        masks: dict[str, np.ndarray] = {}
        for result in done[-1].get("result", []):
            value = result.get("value", {})
            if result.get("type") != "brushlabels" or value.get("format") != "rle":
                continue
            band = result.get("from_name", "")
            if band not in export.classes:
                raise ConfigurationError(
                    f"task of {chip_id}: brush {band!r} is not a label band of the export "
                    f"{export.label_bands}")
            if (result.get("original_height"), result.get("original_width")) != shape:
                raise ConfigurationError(
                    f"task of {chip_id}: the brush is drawn on a "
                    f"{result.get('original_width')}x{result.get('original_height')} image, "
                    f"the chip is {shape[1]}x{shape[0]}")
            painted = decode_brush_rle(value["rle"], *shape)
            labels = value.get("brushlabels") or []
            if not labels:
                raise ConfigurationError(f"task of {chip_id}: a brush result has no label")
            mask = masks.setdefault(band, np.zeros(shape, np.int64))
            mask[painted] = export.class_value(band, labels[0])
        yield chip_id, masks


def read_mask_folder(export: ChipExport, folder: Path,
                     band: str) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    """``(chip id, {band: mask})`` for each ``<chip id>.png|.tif`` in ``folder``; a
    GeoTIFF's own georeferencing, when it has one, must be the chip's."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in MASK_SUFFIXES)
    if not files:
        raise ConfigurationError(
            f"no mask in {folder}: expected files named <chip id>.png or <chip id>.tif")
    for path in files:
        row = export.chip(path.stem)
        if path.suffix.lower() == ".png":
            mask = imagecodecs.png_decode(path.read_bytes())
        else:
            with tifffile.TiffFile(path) as tif:
                page = tif.pages.first
                mask = page.asarray()
                scale_tag = page.tags.get("ModelPixelScaleTag")
                tie_tag = page.tags.get("ModelTiepointTag")
                scale = scale_tag.value if scale_tag is not None else None
                tie = tie_tag.value if tie_tag is not None else None
            if scale is not None and tie is not None:
                a, _, c, _, e, f = export.transform(path.stem)
                found = (scale[0], tie[3], -scale[1], tie[4])
                if not np.allclose(found, (a, c, e, f), rtol=0, atol=1e-6 * abs(a)):
                    raise ConfigurationError(
                        f"{path} is georeferenced at {found}, not on chip {path.stem}'s grid "
                        f"{(a, c, e, f)} (pixel size, left, pixel height, top)")
        if mask.ndim != 2:
            raise ConfigurationError(
                f"{path} has shape {mask.shape}: a mask is one band of class values")
        if mask.shape != (row["height"], row["width"]):
            raise ConfigurationError(
                f"{path} is {mask.shape[1]}x{mask.shape[0]}, chip {path.stem} is "
                f"{row['width']}x{row['height']}")
        yield path.stem, {band: mask}


def mask_pixels(chips: ChipExport, chip_id: str, band: str,
                mask: np.ndarray | None) -> np.ndarray:
    """The pixels of one mask GeoTIFF: a painted mask in its band's dtype, a folder's
    mask as it is, zeros (nothing painted) when the band has no mask.

    Raises:
        ConfigurationError: Painted class values do not fit the band's dtype.
    """
    dtype = chips.dtype(band)
    if mask is None:
        row = chips.chip(chip_id)
        return np.zeros((row["height"], row["width"]), dtype)
    if mask.dtype != np.int64:  # read from a file: kept as the labeller stored it
        return mask
    limits = np.iinfo(dtype)
    if mask.size and (mask.min() < limits.min or mask.max() > limits.max):
        raise ConfigurationError(
            f"chip {chip_id}: class values {int(mask.min())}..{int(mask.max())} of {band!r} "
            f"do not fit {dtype}; export with label_classes= naming every class")
    return mask.astype(dtype)


def import_masks(
    export: str | os.PathLike[str],
    source: str | os.PathLike[str],
    *,
    name: str,
    out_dir: str | os.PathLike[str] | None = None,
    band: str | None = None,
    workspace_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Collection:
    """Turn labelled masks of exported chips into a collection aligned with the chips.

    Each labelled chip becomes a one-band mask GeoTIFF per label band, on the chip's
    exact grid (its CRS, transform and size, from the export's manifest), with
    class values (0 where nothing was painted). The returned collection has one scene
    per labelled chip (its datetime the chip's) and the label bands as its bands::

        masks = rasteret.labels.import_masks("chips/", "export.json", name="labels")
        images = collection.to_torchgeo_dataset(["B04", "B03", "B02"])
        labels = masks.to_torchgeo_dataset(["label"], is_image=False)
        train = images & labels  # samples with "image" and "mask"

    Args:
        export: The folder :meth:`~rasteret.Collection.export_chips` wrote (or its
            ``manifest.parquet``).
        source: Label Studio's JSON export of the project (``[{"data": ...,
            "annotations": [{"result": [brush results]}]}]``), or a folder of masks
            named ``<chip id>.png`` / ``<chip id>.tif`` holding class values (e.g.
            masks drawn in QGIS on the GeoTIFF chips).
        name: The new collection's name.
        out_dir: Where the mask GeoTIFFs go (default ``<export>/masks``, replaced by
            each import).
        band: The band name of a folder's masks (default: the export's first label
            band); Label Studio results name their band (``from_name``).
        workspace_dir: The collection's workspace.
        force: Replace an existing collection of this name.
        overwrite: Replace a non-empty ``out_dir``.
        progress: Show progress bars (see :mod:`rasteret.progress`).

    Returns:
        The mask collection.

    Raises:
        FileExistsError: ``out_dir`` is not empty and ``overwrite`` is False.
        ConfigurationError: ``export`` is not a chip export, ``source`` names a chip,
            band or label the export does not have, a mask's size or grid is not its
            chip's, or nothing was labelled.
    """
    chips = ChipExport(export)
    origin = Path(source)
    if origin.is_dir():
        label_band = band or chips.label_bands[0]
        masks = read_mask_folder(chips, origin, label_band)
        bands = [label_band]
    elif origin.is_file():
        masks = read_label_studio(chips, origin)
        bands = chips.label_bands
    else:
        raise ConfigurationError(
            f"no labels at {source}: pass Label Studio's JSON export or a folder of masks")
    target = Path(out_dir) if out_dir is not None else chips.folder / "masks"
    # The default folder is the import's own; a given one is replaced only on request.
    if out_dir is not None and target.exists() and any(target.iterdir()) and not overwrite:
        raise FileExistsError(f"{target} is not empty; pass overwrite=True to replace it")
    # Written aside and swapped in whole, so a failed import leaves the old masks.
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    rows: list[dict[str, Any]] = []
    try:
        for chip_id, layers in track(masks, desc="Importing labels", unit="chip",
                                     progress=progress):
            row = chips.chip(chip_id)
            record: dict[str, Any] = {"id": chip_id, "datetime": row["datetime"]}
            crs = CRS.from_user_input(row["crs"])
            for label_band in bands:
                file = f"{chip_id}.tif" if len(bands) == 1 else f"{chip_id}.{label_band}.tif"
                data = mask_pixels(chips, chip_id, label_band, layers.get(label_band))
                (staging / file).write_bytes(
                    encode_geotiff(data[None], chips.transform(chip_id), crs))
                record[label_band] = str((target / file).resolve())
            rows.append(record)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not rows:
        shutil.rmtree(staging)
        raise ConfigurationError(
            f"no labelled chip in {source}: annotate (or accept the pre-annotations of) "
            "some tasks before exporting")
    publish(staging, target)
    return build_from_table(pa.Table.from_pylist(rows), name=name, href_columns=bands,
                            geometry_column=None, workspace_dir=workspace_dir, force=force,
                            progress=progress)


__all__ = ["ChipExport", "import_masks", "read_label_studio", "read_mask_folder"]

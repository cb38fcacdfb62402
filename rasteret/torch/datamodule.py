"""``RasteretDataModule``: a Lightning datamodule over a rasteret collection.

Configured by plain values (collection name or path, bands, chip size, batch size,
sampler, splits) so LightningCLI YAML files can drive it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sized
from typing import Any, Literal, cast, get_args

import lightning as L
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import shapely
import torch
from torch.utils.data import DataLoader, Sampler

from rasteret.collection import Collection
from rasteret.dates import DateRange, parse_date_range
from rasteret.errors import ConfigurationError
from rasteret.io.backend import Backend
from rasteret.loading import load
from rasteret.options import (
    CRSLike,
    MosaicOrder,
    OnError,
    ReadOptions,
    Resampling,
    Resolution,
    check_option,
    read_options,
)
from rasteret.read.warp import transformer
from rasteret.splits import (
    DEFAULT_SPLITS,
    BlockSplit,
    block_split,
    check_ratios,
    nearest_other,
)
from rasteret.stats import mean_std, scenes_key, stored_records
from rasteret.torch.dataset import RasteretDataset
from rasteret.torch.distributed import distributed_share, shared
from rasteret.torch.loader import DEFAULT_CONTEXT, dataloader
from rasteret.torch.samplers import RegionSampler, TileAlignedSampler
from rasteret.torch.sweep import Sweep, SweepSampler, plan_sweep, sweep_area, time_slice
from rasteret.torch.timeseries import (
    GroupBy,
    Layout,
    SeriesSampler,
    TimeSelect,
    TimeSeries,
    time_series_of,
)

#: How training chips are drawn: tile-aligned, TorchGeo's random or gridded patches.
SamplerName = Literal["tile_aligned", "random", "grid"]
SAMPLERS: tuple[SamplerName, ...] = get_args(SamplerName)
#: How the collection is cut into stages.
SplitKind = Literal["date", "area", "column", "blocks"]
SPLIT_KINDS: tuple[SplitKind, ...] = get_args(SplitKind)
#: How images are normalised on the device: from the band statistics, or not.
Normalize = Literal["stats"]
NORMALIZE: tuple[Normalize | None, ...] = (*get_args(Normalize), None)


def check_normalize(normalize: Normalize | None, image_scale: float | None) -> None:
    """Refuse an unknown ``normalize``, or one given with ``image_scale``.

    Raises:
        ConfigurationError: Naming the choices, or the two options.
    """
    check_option("normalize", normalize, NORMALIZE)
    if normalize is not None and image_scale is not None:
        raise ConfigurationError(
            'give image_scale= or normalize="stats", not both (the statistics are '
            "of the stored values; normalising makes a scale irrelevant)")


def checked_splits(split_by: SplitKind | None, splits: dict[str, Any] | None,
                   block_size: float | None, buffer: float,
                   holdout_dates: DateRange | None) -> dict[str, Any]:
    """The stages' splits of a datamodule, checked (block splits default to
    :data:`rasteret.splits.DEFAULT_SPLITS`).

    Raises:
        ConfigurationError: An unknown ``split_by``, no splits for it, ratios that do
            not add up, or block options without ``split_by="blocks"``.
    """
    check_option("split_by", split_by, (*SPLIT_KINDS, None))
    if split_by == "blocks":
        splits = dict(splits or DEFAULT_SPLITS)
        check_ratios(splits)
        check_blocks(block_size, buffer, holdout_dates)
    elif block_size is not None or holdout_dates is not None:
        raise ConfigurationError('block_size= and holdout_dates= go with split_by="blocks"')
    if split_by is not None and not splits:
        raise ConfigurationError(f"split_by={split_by!r} needs splits={{stage: ...}}")
    return dict(splits or {})


class RasteretDataModule(L.LightningDataModule):
    """Train, validate and test on chips of a rasteret collection.

    Args:
        collection: A :class:`~rasteret.collection.Collection`, or the name/path of a
            saved one (loaded in ``setup``).
        bands: Image bands, in channel order.
        mask_bands: Label bands returned as ``mask`` (segmentation targets).
        chip_size: Chip size in pixels.
        batch_size: Chips per batch.
        sampler: ``"tile_aligned"`` (default; chips on the COG tile grid),
            ``"random"`` (TorchGeo's ``RandomPatchSampler``) or ``"grid"`` (TorchGeo's
            ``GriddedPatchSampler``). Evaluation stages always sweep a grid. Under
            DDP each rank reads a disjoint share of the chips (TorchGeo's samplers
            through :class:`~rasteret.torch.distributed.DistributedGeoSampler`):
            give Lightning's Trainer ``use_distributed_sampler=False``.
        length: Training chips per epoch and rank (random samplers).
        split_by: ``"date"``, ``"area"``, ``"column"`` or ``"blocks"``; None uses the
            whole collection for every stage. ``"blocks"`` cuts the scenes' area into
            square blocks of ``block_size`` (dataset CRS units, metres for UTM), gives
            them to stages at random by ratio (``seed``) and keeps every chip of one
            stage at least ``buffer`` away from every chip of another (see
            :mod:`rasteret.splits` and :meth:`split_report`).
        splits: Per stage: a ``(start, end)`` date range (``split_by="date"``), a
            ``(minx, miny, maxx, maxy)`` box in degrees (``"area"``), the value of
            ``split_column`` (``"column"``), or a ratio of the area (``"blocks"``;
            default ``{"train": 0.7, "val": 0.15, "test": 0.15}``).
        split_column: The column holding split names (``split_by="column"``).
        num_workers: DataLoader workers per stage.
        multiprocessing_context: Worker start method (``"forkserver"`` by default).
        seed: Seed of the random samplers (needed under DDP with ``"random"``).
        backend: How to reach the stores (default: the dataset's CloudConfig).
        workspace_dir: Where named collections are looked up.
        time_series: Samples stack their scenes along time (see
            :class:`RasteretDataset`).
        mosaic_order: Which scene wins where scenes overlap.
        cache_bytes: Per-process memory for decoded tiles (see
            :class:`RasteretDataset`).
        cache_dir: A folder for compressed tile bytes, shared across epochs.
        options: The read options of every stage's dataset
            (:class:`~rasteret.options.ReadOptions`), also given as the keywords that
            follow (``target_crs``, ``resolution``, ``resampling``, ``apply_scale``,
            ``masked``, ``date_range``, ``on_error``, ``validate``; a keyword overrides
            ``options`` when it differs from its default). ``date_range`` narrows
            the collection before any split.
        image_scale: Multiply images by this after each batch reaches the device (e.g.
            ``1e-4`` for Sentinel-2 reflectance); images become float32.
        block_size: Side of a block in dataset CRS units (``split_by="blocks"``).
        buffer: Minimum distance between chips of different stages, in dataset CRS
            units (``split_by="blocks"``).
        holdout_dates: ``(start, end)``: with ``split_by="blocks"``, scenes in this date
            range go to the ``test`` stage only and the other stages use the rest. With
            a ``test`` ratio in ``splits`` the test stage holds its blocks in these
            dates (new places and new times); without one, the whole area in these
            dates.
        normalize: ``"stats"``: after each batch reaches the device, images become
            ``(x - mean) / std`` per band (float32), from the collection's band
            statistics (:meth:`~rasteret.collection.Collection.band_stats`, stored ones
            when the collection has them, else computed on the training stage's
            scenes in ``setup``). :meth:`mean_std` gives the same numbers as lists.
        time_steps: Time steps per sample (with ``time_series=True``): batches are
            ``[B, T, C, H, W]`` (see :class:`RasteretDataset`).
        time_select: Which steps ``time_steps`` keeps: ``"even"``, ``"latest"``,
            ``"earliest"`` or ``"least_cloudy"``.
        time_bins: A pandas frequency (e.g. ``"1MS"``): one mosaicked step per bin.
        group_by: ``"scene"`` or ``"day"`` (scenes of one solar day are one step).
        layout: ``"TCHW"`` or ``"CTHW"`` (batches ``[B, C, T, H, W]``).
        roi: The area ``predict_dataloader`` sweeps (a bbox tuple, shapely geometry or
            GeoJSON in ``geometry_crs``; default: the predict split's area, else the
            scenes' extent): chips on the COGs' tile grid, in rows, overlapping by
            ``overlap`` pixels, for a
            :class:`~rasteret.torch.callbacks.RasteretPredictionWriter` to blend.
        geometry_crs: The roi's CRS (default EPSG:4326).
        overlap: Pixels neighbouring prediction chips share.

    With ``time_steps`` or ``time_bins`` every chip takes the stage's whole time
    range: the tile-aligned sampler yields each location once, and TorchGeo's
    samplers are wrapped in :class:`~rasteret.torch.timeseries.SeriesSampler` (a grid
    keeps each location once).
    """

    def __init__(
        self,
        collection: Collection | str,
        bands: list[str],
        *,
        mask_bands: list[str] | None = None,
        chip_size: int = 256,
        batch_size: int = 16,
        sampler: SamplerName = "tile_aligned",
        length: int | None = None,
        split_by: SplitKind | None = None,
        splits: dict[str, Any] | None = None,
        split_column: str = "split",
        num_workers: int = 2,
        multiprocessing_context: str | None = DEFAULT_CONTEXT,
        seed: int | None = 0,
        backend: Backend | None = None,
        workspace_dir: str | None = None,
        time_series: bool = False,
        mosaic_order: MosaicOrder = "latest",
        cache_bytes: int | Literal["auto"] = "auto",
        cache_dir: str | None = None,
        options: ReadOptions | None = None,
        target_crs: CRSLike | None = None,
        resolution: Resolution | None = None,
        resampling: Resampling = "nearest",
        apply_scale: bool = False,
        masked: bool = False,
        date_range: DateRange | None = None,
        on_error: OnError = "raise",
        validate: bool = True,
        image_scale: float | None = None,
        block_size: float | None = None,
        buffer: float = 0.0,
        holdout_dates: DateRange | None = None,
        normalize: Normalize | None = None,
        time_steps: int | None = None,
        time_select: TimeSelect = "even",
        time_bins: str | None = None,
        group_by: GroupBy = "scene",
        layout: Layout = "TCHW",
        roi: Any = None,
        geometry_crs: Any = 4326,
        overlap: int = 0,
    ) -> None:
        super().__init__()
        check_normalize(normalize, image_scale)
        check_option("sampler", sampler, SAMPLERS)
        splits = checked_splits(split_by, splits, block_size, buffer, holdout_dates)
        self.collection, self.bands = collection, list(bands)
        self.mask_bands = list(mask_bands or [])
        self.chip_size, self.batch_size, self.sampler = chip_size, batch_size, sampler
        self.length = length
        self.split_by, self.splits, self.split_column = split_by, splits, split_column
        self.num_workers, self.seed = num_workers, seed
        self.multiprocessing_context = multiprocessing_context
        self.backend, self.workspace_dir = backend, workspace_dir
        self.time_series, self.mosaic_order = time_series, mosaic_order
        self.cache_bytes, self.cache_dir = cache_bytes, cache_dir
        self.options = read_options(
            options, target_crs=target_crs, resolution=resolution, resampling=resampling,
            apply_scale=apply_scale, masked=masked, date_range=date_range,
            on_error=on_error, validate=validate)
        self.image_scale = image_scale
        self.block_size, self.buffer, self.holdout_dates = block_size, buffer, holdout_dates
        self.normalize = normalize
        self._mean_std: tuple[list[float], list[float]] | None = None
        # Checked here (bad values raise before setup), kept for every stage's dataset.
        self.series = time_series_of(time_series, steps=time_steps, select=time_select,
                                     bins=time_bins, group_by=group_by, layout=layout)
        self.roi, self.geometry_crs, self.overlap = roi, geometry_crs, overlap
        #: The chips ``predict_dataloader`` reads and the map's grid (after setup).
        self.predict_sweep: Sweep | None = None
        self.datasets: dict[str, RasteretDataset] = {}
        self._rois: dict[str, shapely.Geometry | None] = {}
        self._blocks: tuple[BlockSplit, Any] | None = None  # the split and its CRS

    def _collection(self) -> Collection:
        if isinstance(self.collection, Collection):
            return self.collection
        return load(self.collection, workspace_dir=self.workspace_dir)

    def _stage_collection(self, base: Collection, stage: str) -> Collection:
        if self.split_by == "blocks":
            return self._block_collection(base, stage)
        if self.split_by is None or self.split_by == "area":
            return base
        if stage not in self.splits:
            raise ConfigurationError(f"no split given for stage {stage!r}: splits={self.splits}")
        if self.split_by == "date":
            return base.subset(date_range=tuple(self.splits[stage]))
        if self.split_column not in base.column_names:
            raise ConfigurationError(f"the collection has no column {self.split_column!r}")
        return base.filter(pc.field(self.split_column) == self.splits[stage])

    def _stage_roi(self, dataset: RasteretDataset, stage: str) -> shapely.Geometry | None:
        if self.split_by == "blocks":
            return self._block_roi(stage)
        if self.split_by != "area":
            return None
        if stage not in self.splits:
            raise ConfigurationError(f"no area given for stage {stage!r}: splits={self.splits}")
        from pyproj import CRS

        minx, miny, maxx, maxy = self.splits[stage]
        bounds = transformer(CRS.from_epsg(4326), dataset.crs).transform_bounds(
            minx, miny, maxx, maxy, densify_pts=21
        )
        return shapely.box(*bounds)

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets of the stages Lightning asks for."""
        base = self._collection()
        wanted = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": ("test",),
            "predict": ("predict",),
            None: ("train", "val", "test"),
        }[stage]
        for name in wanted:
            if name in self.datasets:
                continue
            if self.split_by is not None and name not in self._stage_names():
                continue
            subset = self._stage_collection(base, name)
            series = self.series or TimeSeries()  # defaults: mosaics
            dataset = RasteretDataset(
                subset,
                self.bands,
                mask_bands=self.mask_bands,
                chip_size=self.chip_size,
                backend=self.backend,
                time_series=self.time_series,
                mosaic_order=self.mosaic_order,
                cache_bytes=self.cache_bytes,
                cache_dir=self.cache_dir,
                options=self._stage_options(base),
                time_steps=series.steps,
                time_select=series.select,
                time_bins=series.bins,
                group_by=series.group_by,
                layout=series.layout,
            )
            self.datasets[name] = dataset
            self._rois[name] = self._stage_roi(dataset, name)
            if name == "predict":
                self.predict_sweep = self._sweep(dataset, self._rois[name])
        if self.normalize == "stats":
            self.mean_std()

    def _sweep(self, dataset: RasteretDataset, stage_roi: shapely.Geometry | None) -> Sweep:
        area = (sweep_area(dataset, self.roi, self.geometry_crs) if self.roi is not None
                else stage_roi if stage_roi is not None else sweep_area(dataset, None))
        return plan_sweep(dataset, area, chip=self.chip_size, overlap=self.overlap,
                          time=time_slice(dataset, None))

    def _sampler(self, name: str) -> Sampler[Any]:
        from torchgeo.samplers import GriddedPatchSampler, RandomPatchSampler

        dataset = self.datasets[name]
        roi = self._rois.get(name)
        train = name == "train"
        if name == "predict" and self.predict_sweep is not None:
            if distributed_share()[1] > 1:
                raise ConfigurationError(
                    "predicting a map runs on one process (its chips are blended in order); "
                    "run trainer.predict with devices=1")
            return SweepSampler(self.predict_sweep)
        if self.sampler == "tile_aligned":
            return TileAlignedSampler(
                dataset, size=self.chip_size, mode="random" if train else "grid",
                length=self.length if train else None, roi=roi, seed=self.seed,
            )
        # TorchGeo's samplers yield the same chips on every rank: under DDP each rank
        # keeps its share of them (a random order must then be seeded alike).
        world_size = distributed_share()[1]
        if self.sampler == "random" and train:
            if world_size > 1 and self.seed is None:
                raise ConfigurationError(
                    'sampler="random" under DDP needs seed= (the same on every rank) so the '
                    "ranks share out one order of chips; or use sampler=\"tile_aligned\"")
            length = self.length * world_size if self.length else None
            return shared(self._over_time(dataset, self._within(name, dataset, RandomPatchSampler(
                dataset, size=self.chip_size, length=length,
                roi=self._random_roi(dataset, roi), generator=self.seed,
            )), unique=False))
        return shared(self._over_time(dataset, self._within(name, dataset, GriddedPatchSampler(
            dataset, size=self.chip_size, roi=roi))))

    # -- time series (issue 21, item 1) ------------------------------------------------
    def _over_time(self, dataset: RasteretDataset, sampler: Sampler[Any], *,
                   unique: bool = True) -> Sampler[Any]:
        """TorchGeo's ``sampler``, its chips given the stage's whole time range when
        the samples are time series that batch (``time_steps`` or ``time_bins``)."""
        if dataset.series is None or not dataset.series.fixed:
            return sampler
        window = dataset.bounds[2]
        return SeriesSampler(sampler, (window.start, window.stop), unique=unique)

    def _loader(self, name: str) -> DataLoader[Any]:
        if name not in self.datasets:
            raise ConfigurationError(
                f"no {name!r} dataset: call setup() first, or give splits for it"
            )
        return dataloader(
            self.datasets[name],
            sampler=self._sampler(name),
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            multiprocessing_context=self.multiprocessing_context,
        )

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Scale images on the device (cheaper than in every worker)."""
        if self.image_scale is not None and "image" in batch:
            batch["image"] = batch["image"].float() * self.image_scale
        if self.normalize == "stats" and "image" in batch:
            batch["image"] = self._normalized(batch["image"])
        return batch

    # -- split_by="blocks": spatial blocks, a buffer, a date holdout (issue 21, item 4) -----
    def _stage_names(self) -> list[str]:
        names = list(self.splits)
        if self.split_by == "blocks" and self.holdout_dates is not None and "test" not in names:
            names.append("test")
        return names

    def split_blocks(self) -> BlockSplit:
        """The block split of ``split_by="blocks"`` (computed on first call): the
        blocks over the footprints of every scene of the collection, their stages and
        each stage's region, in the dataset CRS. No pixel is read.

        Raises:
            ConfigurationError: Not a block split, a dataset CRS that is not
                projected, or a split that leaves a stage nothing (see
                :func:`rasteret.splits.block_split`).
        """
        return self._split(self._collection())[0]

    def _split(self, base: Collection) -> tuple[BlockSplit, Any]:
        if self.split_by != "blocks":
            raise ConfigurationError('the datamodule has no block split: give split_by="blocks"')
        if self._blocks is None:
            whole = RasteretDataset(base, self.bands, chip_size=self.chip_size,
                                    backend=self.backend, options=self.options)
            if not whole.crs.is_projected:
                raise ConfigurationError(
                    f"split_by='blocks' measures block_size and buffer in the dataset CRS, "
                    f"which is {whole.crs.name} (not projected): give a projected "
                    "target_crs (e.g. a UTM zone)")
            assert self.block_size is not None  # checked in __init__
            ratios = {name: float(ratio) for name, ratio in self.splits.items()}
            split = block_split(whole.index.geometry.union_all(), block_size=self.block_size,
                                splits=ratios, seed=0 if self.seed is None else self.seed,
                                buffer=self.buffer)
            self._blocks = (split, whole.crs)
        return self._blocks

    def _stage_options(self, base: Collection) -> ReadOptions:
        """The read options of every stage's dataset: with block splits, on the split's
        CRS (its regions are drawn there) unless a target CRS was given."""
        if self.split_by != "blocks" or self.options.target_crs is not None:
            return self.options
        return dataclasses.replace(self.options, target_crs=self._split(base)[1])

    def _block_collection(self, base: Collection, stage: str) -> Collection:
        self._split(base)  # the regions, before any stage's dataset
        if self.holdout_dates is None:
            return base
        window = parse_date_range(self.holdout_dates)
        assert window is not None
        if stage == "test":
            return base.subset(date_range=window)
        start, end = (pa.scalar(t, pa.timestamp("us", tz="UTC")) for t in window)
        times = pc.field("datetime")
        rest = base.filter((times < start) | (times > end))
        if not len(rest):
            raise ConfigurationError(
                f"holdout_dates={self.holdout_dates} holds every scene: no scene is left "
                f"for stage {stage!r}")
        return rest

    def _block_roi(self, stage: str) -> shapely.Geometry | None:
        assert self._blocks is not None  # set by _block_collection before any dataset
        split = self._blocks[0]
        return split.region(stage) if stage in split.regions else None

    def _random_roi(self, dataset: RasteretDataset, roi: shapely.Geometry | None
                    ) -> shapely.Geometry | None:
        # RandomPatchSampler snaps its chips to the pixel grid after drawing them
        # inside its roi (half a pixel at most): one pixel less keeps them inside.
        if roi is None or self.split_by != "blocks":
            return roi
        return shapely.buffer(roi, -max(dataset.res))

    def _within(self, name: str, dataset: RasteretDataset, sampler: Sampler[Any]
                ) -> Sampler[Any]:
        roi = self._rois.get(name)
        if roi is None or self.split_by != "blocks":
            return sampler
        within = RegionSampler(sampler, roi)
        if getattr(sampler, "strategy", None) == "random":
            # Where RandomPatchSampler draws chip centres: its roi less half a diagonal.
            reach = math.hypot(*dataset.res) * self.chip_size / 2 + max(dataset.res)
            empty = bool(shapely.is_empty(shapely.buffer(roi, -reach)))
        else:
            empty = not len(within)
        if empty:
            raise ConfigurationError(
                f"no {self.chip_size}-pixel chip fits the region of stage {name!r} (its "
                "blocks less the buffer): choose larger blocks, a smaller buffer or "
                "smaller chips")
        return within

    def split_report(self) -> pd.DataFrame:
        """One row per stage: what each stage samples and how far apart stages are.

        Builds the stages' datasets and samplers (``setup()`` for train, val and test)
        but reads no pixel. Columns:

        - ``blocks``: blocks given to the stage (``split_by="blocks"``; else 0);
        - ``area_km2``: area its chips may come from (its region, or its scenes'
          footprints), in km² for a metric CRS;
        - ``chips``: chips per epoch of its sampler;
        - ``scenes``: scenes whose footprint meets that area;
        - ``min_distance_m``: distance from its chips to the nearest chip of another
          stage whose scenes share its dates, in CRS units (``inf``: none; a date
          holdout's test stage is apart in time). A tile-aligned sampler's chips are
          all those it can draw; TorchGeo's random sampler's, one epoch's.

        Raises:
            ConfigurationError: No split (``split_by`` is None).
        """
        if self.split_by is None:
            raise ConfigurationError("split_report() needs split_by= (the stages to compare)")
        self.setup()
        boxes: dict[str, np.ndarray] = {}
        spans: dict[str, tuple[Any, Any]] = {}
        rows: dict[str, dict[str, float]] = {}
        for name in [n for n in self._stage_names() if n in self.datasets]:
            dataset, roi = self.datasets[name], self._rois.get(name)
            sampler = self._sampler(name)
            boxes[name] = chip_boxes(sampler)
            times = dataset.index.index
            spans[name] = (times.left.min(), times.right.max())
            area = roi if roi is not None else dataset.index.geometry.union_all()
            footprints = np.asarray(dataset.index.geometry.array)
            blocks = self._blocks[0].block_count(name) if self._blocks else 0
            rows[name] = {
                "blocks": blocks,
                "area_km2": float(shapely.area(area)) / 1e6,
                "chips": len(cast(Sized, sampler)),
                "scenes": int(np.count_nonzero(shapely.intersects(footprints, area))),
            }
        distances = nearest_other(boxes, spans)
        report = pd.DataFrame.from_dict(rows, orient="index")
        report["min_distance_m"] = [distances[name] for name in report.index]
        report.index.name = "stage"
        return report.astype({"blocks": "int64", "chips": "int64", "scenes": "int64"})

    # -- normalize="stats": band statistics from the index (issue 21, item 5) ------------
    def mean_std(self) -> tuple[list[float], list[float]]:
        """Per image band, in channel order, the mean and standard deviation
        ``normalize="stats"`` applies: the lists ``kornia.augmentation.Normalize(mean,
        std)`` or a TorchGeo transform take. The collection's stored statistics of the
        same scenes when it has them, else those of the training stage's scenes
        (read from each file's smallest overview; see
        :meth:`~rasteret.collection.Collection.band_stats`). Values are of what the
        datasets return: physical values with ``apply_scale=True``, else stored ones.

        Raises:
            ConfigurationError: A band that cannot be normalised (constant, no valid
                pixel, or scales that differ between files with ``apply_scale``).
        """
        if self._mean_std is None:
            base = self._collection()
            records = stored_records(base.manifest, self.bands, None,
                                     scenes_key(base.column("id").to_pylist()))
            if records is None:
                train = (self._stage_collection(base, "train")
                         if self.split_by is not None and "train" in self._stage_names()
                         else base)
                train.band_stats(self.bands)
                records = stored_records(train.manifest, self.bands)
            assert records is not None
            self._mean_std = mean_std(records, self.bands,
                                      apply_scale=self.options.apply_scale)
        return self._mean_std

    def _normalized(self, image: torch.Tensor) -> torch.Tensor:
        # Channels are the third dimension from the end ([B, C, H, W], [B, T, C, H, W]),
        # or the fourth with time series in "CTHW" layout ([B, C, T, H, W]).
        cthw = self.series is not None and self.series.layout == "CTHW"
        shape = (-1, 1, 1, 1) if cthw else (-1, 1, 1)
        mean, std = (torch.tensor(v, dtype=torch.float32, device=image.device).view(shape)
                     for v in self.mean_std())
        return (image.float() - mean) / std

    def train_dataloader(self) -> DataLoader[Any]:
        """Random (or tile-aligned random) chips of the training split."""
        return self._loader("train")

    def val_dataloader(self) -> DataLoader[Any]:
        """A grid of chips over the validation split."""
        return self._loader("val")

    def test_dataloader(self) -> DataLoader[Any]:
        """A grid of chips over the test split."""
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader[Any]:
        """Overlapping chips sweeping the roi in rows, on the COGs' tile grid (see
        ``roi`` and ``overlap``): what a
        :class:`~rasteret.torch.callbacks.RasteretPredictionWriter` blends into a map."""
        return self._loader("predict")


def check_blocks(block_size: float | None, buffer: float,
                 holdout_dates: tuple[Any, Any] | None) -> None:
    """Refuse the options of ``split_by="blocks"`` that cannot work.

    Raises:
        ConfigurationError: No positive ``block_size``, a negative ``buffer``, or
            ``holdout_dates`` that are not a date range.
    """
    if block_size is None or not block_size > 0 or not math.isfinite(block_size):
        raise ConfigurationError(
            f'split_by="blocks" needs block_size= (a positive length in the dataset CRS\'s '
            f"units, metres for UTM), not {block_size!r}")
    if not buffer >= 0 or not math.isfinite(buffer):
        raise ConfigurationError(f"buffer must be a length >= 0, not {buffer!r}")
    parse_date_range(holdout_dates)


def chip_boxes(sampler: Sampler[Any]) -> np.ndarray:
    """``(n, 4)`` ``minx, miny, maxx, maxy`` of a sampler's chips: every chip a
    :class:`TileAlignedSampler` can draw, else one epoch of the sampler's chips (no
    pixel is read)."""
    if isinstance(sampler, TileAlignedSampler):
        return sampler.chip_bounds()
    bounds = [(index[0].start, index[1].start, index[0].stop, index[1].stop)
              for index in sampler]
    return np.asarray(bounds, float).reshape(-1, 4)

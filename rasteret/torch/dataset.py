"""``RasteretDataset``: a TorchGeo ``GeoDataset`` over a rasteret collection.

Samples are read straight from the collection's stored tile tables: a chip becomes
the byte ranges of the tiles it covers, fetched concurrently and decoded in threads.
No header is read and no file handle is opened per sample; the dataset pickles to a
description so each DataLoader worker builds its own stores and credentials.
"""

from __future__ import annotations

import asyncio
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import torch
from affine import Affine
from matplotlib.figure import Figure
from pyproj import CRS
from torchgeo.datasets import GeoDataset
from torchgeo.datasets.utils import GeoSlice, Sample

from rasteret.band import BandView, crs_of, grid_bounds
from rasteret.collection import Collection
from rasteret.dates import DateRange
from rasteret.errors import ConfigurationError, RasteretError
from rasteret.io.backend import Backend
from rasteret.io.cloud_config import backend_for_collection
from rasteret.io.fetch import FetchStats
from rasteret.io.runtime import run_sync
from rasteret.options import (
    MOSAIC_ORDER,
    CRSLike,
    MosaicOrder,
    OnError,
    ReadOptions,
    Resampling,
    Resolution,
    Values,
    check_option,
    read_options,
)
from rasteret.pixels import (
    LazyScenes,
    PixelPlan,
    SceneRead,
    fill_block,
    keep_slots,
    plan_pixels,
    scenes_dtype,
)
from rasteret.read.cache import ChunkCaches
from rasteret.read.cog import CogFile
from rasteret.read.warp import GridSpec, transformer
from rasteret.torch.timeseries import (
    NAT,
    GroupBy,
    Layout,
    Steps,
    TimeSelect,
    arrange_steps,
    plan_steps,
    shown_step,
    time_series_of,
)

# Views (and their files) a process keeps of a lazily read collection: its memory does
# not grow with the number of scenes an epoch visits.
_KEPT_VIEWS = 4096

#: Memory for decoded tiles per process under ``cache_bytes="auto"``.
AUTO_CACHE_BYTES = 256 * 1024 * 1024


def _in_dates(collection: Collection, date_range: DateRange | None) -> Collection:
    """The scenes of ``collection`` within ``date_range``, refusing an empty result.

    Raises:
        ConfigurationError: No scene is left, naming the collection and the range.
    """
    if date_range is not None:
        collection = collection.subset(date_range=date_range)
    if not len(collection):
        within = f" within date_range={date_range!r}" if date_range is not None else ""
        raise ConfigurationError(
            f"collection {collection.name!r} has no scene{within}; widen its bbox/date "
            "range or check its failures")
    return collection


def widen_for_torch(array: np.ndarray) -> np.ndarray:
    """Widen dtypes torch cannot hold without loss (uint16 -> int32, uint32 -> int64)."""
    if array.dtype == np.uint16:
        return array.astype(np.int32)
    if array.dtype == np.uint32:
        return array.astype(np.int64)
    if array.dtype == np.uint64:
        raise ConfigurationError("uint64 pixels do not fit a torch dtype; pass dtype=float")
    return array


def _squeeze_channel(tensor: torch.Tensor) -> torch.Tensor:
    """Drop a single channel axis, as TorchGeo's mask datasets do."""
    return tensor.squeeze(-3) if tensor.shape[-3] == 1 else tensor


# One index entry (a footprint's bounds in the dataset CRS, its time interval in ns,
# its collection row) and one sort key per collection row, as the files store them.
_ENTRY = np.dtype([("minx", "<f8"), ("miny", "<f8"), ("maxx", "<f8"), ("maxy", "<f8"),
                   ("t0", "<i8"), ("t1", "<i8"), ("row", "<i8")])
_KEY = np.dtype([("stamp", "<i8"), ("cloud", "<f8"), ("lon", "<f8")])


def overlapping(bounds: np.ndarray | Mapping[str, np.ndarray], x: slice, y: slice, *,
                strict: bool = False) -> np.ndarray:
    """Which of ``bounds`` (fields ``minx``, ``miny``, ``maxx``, ``maxy``) intersect
    the box ``x``, ``y``; ``strict``: share an area with it (not only an edge)."""
    if strict:
        shared: np.ndarray = ((bounds["minx"] < x.stop) & (bounds["maxx"] > x.start)
                              & (bounds["miny"] < y.stop) & (bounds["maxy"] > y.start))
        return shared
    inside: np.ndarray = ((bounds["minx"] <= x.stop) & (bounds["maxx"] >= x.start)
                          & (bounds["miny"] <= y.stop) & (bounds["maxy"] >= y.start))
    return inside


def _signature(frame: gpd.GeoDataFrame) -> tuple[Any, ...]:
    """What changes when TorchGeo edits an index in place (``crs`` setter, filters)."""
    return (len(frame), frame.crs.to_wkt() if frame.crs else None,
            tuple(float(v) for v in frame.total_bounds) if len(frame) else ())


class IndexFile:
    """A dataset's index as two files DataLoader workers memory-map.

    The main process writes them (in a private temporary folder, removed when its
    dataset is garbage-collected) the first time the dataset is pickled; workers
    select scenes from the mapped arrays, so their memory does not grow with the
    collection and the pickled dataset stays a few kilobytes. Workers need the main
    process's dataset alive while they run (as a DataLoader keeps it).

    Attributes:
        folder: The folder of ``index.bin`` (entries) and ``keys.bin`` (sort keys).
        length: Entries in the index.
        rows: Rows of the collection (sort keys).
    """

    def __init__(self, folder: str, length: int, rows: int,
                 signature: tuple[Any, ...]) -> None:
        self.folder = folder
        self.length = length
        self.rows = rows
        self.signature = signature
        self._entries: np.ndarray | None = None

    @classmethod
    def write(cls, frame: gpd.GeoDataFrame, stamps: np.ndarray,
              cloud: np.ndarray, longitudes: np.ndarray) -> IndexFile:
        """Write ``frame`` (the index) and the per-row sort keys (time, cloud cover,
        footprint longitude) to a new folder."""
        import shutil
        import tempfile
        import weakref

        folder = tempfile.mkdtemp(prefix="rasteret-index-")
        entries = np.empty(len(frame), _ENTRY)
        bounds = shapely.bounds(np.asarray(frame.geometry.values))
        for k, name in enumerate(("minx", "miny", "maxx", "maxy")):
            entries[name] = bounds[:, k]
        entries["t0"] = frame.index.left.as_unit("ns").asi8
        entries["t1"] = frame.index.right.as_unit("ns").asi8
        entries["row"] = frame["row"].to_numpy(np.int64)
        entries.tofile(os.path.join(folder, "index.bin"))
        keys = np.empty(len(stamps), _KEY)
        keys["stamp"], keys["cloud"], keys["lon"] = stamps, cloud, longitudes
        keys.tofile(os.path.join(folder, "keys.bin"))
        index = cls(folder, len(frame), len(stamps), _signature(frame))
        weakref.finalize(index, shutil.rmtree, folder, True)
        return index

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_entries": None}

    def matches(self, frame: gpd.GeoDataFrame) -> bool:
        """Whether the files still describe ``frame``."""
        return os.path.isdir(self.folder) and self.signature == _signature(frame)

    def _map(self, name: str, dtype: np.dtype, count: int) -> np.ndarray:
        if not count:
            return np.empty(0, dtype)
        return np.memmap(os.path.join(self.folder, name), dtype=dtype, mode="r",
                         shape=(count,))

    def entries(self) -> np.ndarray:
        """The index entries (memory-mapped)."""
        if self._entries is None:
            self._entries = self._map("index.bin", _ENTRY, self.length)
        return self._entries

    def keys(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The per-row sort keys: time stamps (ns), cloud cover and footprint longitude
        (memory-mapped)."""
        keys = self._map("keys.bin", _KEY, self.rows)
        return keys["stamp"], keys["cloud"], keys["lon"]

    def select(self, x: slice, y: slice, t: slice, *, strict: bool = False) -> np.ndarray:
        """The rows whose entries overlap the time slice (every ``t.step``-th) and
        intersect the box (``strict``: share an area with it), in index order (as the
        GeoDataFrame selection)."""
        entries = self.entries()
        start, stop = pd.Timestamp(t.start).value, pd.Timestamp(t.stop).value
        found = np.flatnonzero((entries["t0"] <= stop) & (entries["t1"] >= start))
        if t.step and t.step != 1:
            found = found[:: t.step]
        picked = entries[found]
        rows: np.ndarray = picked["row"][overlapping(picked, x, y, strict=strict)]
        return rows

    def frame(self, crs: CRS | None) -> gpd.GeoDataFrame:
        """The index as a GeoDataFrame again (ids read from the collection)."""
        entries = self.entries()
        index = pd.IntervalIndex.from_arrays(
            entries["t0"].astype("datetime64[ns]"), entries["t1"].astype("datetime64[ns]"),
            closed="both", name="datetime")
        return gpd.GeoDataFrame(
            {"row": np.asarray(entries["row"])},
            index=index,
            geometry=shapely.box(entries["minx"], entries["miny"], entries["maxx"],
                                 entries["maxy"]),
            crs=crs,
        )


class RasteretDataset(GeoDataset):
    """A TorchGeo ``GeoDataset`` whose samples come from a rasteret collection.

    It follows TorchGeo 0.10's contract: an ``index`` GeoDataFrame (one footprint per
    scene, datetime ``IntervalIndex``), ``__getitem__`` taking a ``GeoSlice``, ``crs``
    and ``res``, samples with ``image`` (or ``mask``), ``bounds`` and ``transform``
    tensors that ``torchgeo.datasets.stack_samples`` collates. It works with
    TorchGeo's samplers, ``IntersectionDataset`` (``images & labels``),
    ``UnionDataset`` and ``GeoDataModule``, and with
    :class:`rasteret.torch.TileAlignedSampler` for tile-exact chips.

    Overlapping scenes are merged first-valid-pixel in ``mosaic_order`` (latest scene
    first by default). With ``time_series=True`` samples are ``[T, C, H, W]``, one
    slice per scene in the query's time slice, oldest first: ``T`` varies with the
    chip, so such samples do not batch across chips with different scene counts.
    Give ``time_steps`` (with ``time_select``) or ``time_bins`` for samples that
    batch: every sample over one time slice has the same ``T`` (missing steps padded
    with nodata, NaN for float images) and carries ``dates`` (``[T]`` int64
    nanoseconds, ``-2**63`` as NaT for padded steps) and ``time_mask`` (``[T]`` bool);
    ``torchgeo.datasets.stack_samples`` makes ``[B, T, C, H, W]`` batches (``[B, C,
    T, H, W]`` with ``layout="CTHW"``). Steps come from the chip's time slice: use
    :class:`TileAlignedSampler` (it gives a time series dataset's chips its whole time
    range) or wrap TorchGeo's samplers in
    :class:`~rasteret.torch.timeseries.SeriesSampler`.

    Args:
        collection: The collection to read.
        bands: Band names, in the order of the output channels.
        chip_size: Default chip size in pixels, used by :class:`TileAlignedSampler`
            and the datamodule when they are not given one.
        time_series: Stack scenes along a time axis instead of mosaicking.
        backend: How to reach the stores (default: the dataset's CloudConfig, else
            anonymous/environment credentials). Rebuilt in each worker process.
        is_image: True for inputs (``image`` key), False for labels (``mask`` key).
        dtype: Cast samples to this torch dtype (e.g. ``torch.float32``); default keeps
            the data's values, widening uint16/uint32 losslessly.
        mosaic_order: ``"latest"``, ``"earliest"`` or ``"least_cloudy"``.
        transforms: A function applied to each sample.
        mask_bands: Bands returned as the sample's ``mask`` (labels) next to the
            ``image`` bands, read in the same pass; a single mask band is squeezed to
            ``[H, W]`` (``[T, H, W]`` for time series), as TorchGeo's label datasets do.
        cache_bytes: Per-process memory for decoded tiles. ``"auto"`` (default):
            up to :data:`AUTO_CACHE_BYTES`, and each process chooses, from the tile
            reuse its reads show, between keeping whole tiles (chips that share
            tiles: tile-aligned grids, small regions, time series, repeated epochs)
            and decoding each tile only down to the chip's last row (random chips
            over many scenes, which rarely meet a tile again); see
            :mod:`rasteret.read.cache`. A number of bytes always keeps whole tiles;
            0 keeps none (each chip decodes only down to its own last row).
        cache_dir: A folder for compressed tile bytes: later epochs (and other
            processes) read tiles from disk instead of the network.
        options: The read options (:class:`~rasteret.options.ReadOptions`), also
            given as the keywords that follow (a keyword overrides ``options`` when it
            differs from its default). Here:

            - ``target_crs``: the dataset CRS (default: the most common CRS of the
              scenes); scenes in other CRS are reprojected.
            - ``resolution``: pixel size in CRS units (default: the first band's
              native resolution). TorchGeo calls it ``res``; the dataset keeps
              :attr:`res` for TorchGeo's samplers.
            - ``resampling``: ``"nearest"`` or ``"bilinear"`` when the grid differs
              from a scene's own.
            - ``apply_scale``: ``image`` bands as float32 physical values (e.g.
              reflectance) with NaN where pixels are nodata: each scene's
              scale/offset from its COG's GDAL metadata, else from its STAC item's
              ``raster:bands`` (Sentinel-2 baselines before and after 04.00 give the
              same reflectance). ``masked``: float32 with NaN for nodata, unscaled.
              ``mask_bands`` stay as stored either way.
            - ``date_range``: only scenes within ``(start, end)`` enter the index.
            - ``on_error``: ``"raise"`` (default) or ``"skip"``: a scene that fails
              to read is left out of the sample with a warning, and counted in
              ``errors``.
            - ``validate``: every tile must come from the version of its object the
              collection recorded (``If-Match``, size and ETag, no extra request): an
              object replaced after the build raises
              :class:`~rasteret.errors.ObjectChangedError` (or is skipped with
              ``on_error="skip"``) instead of giving wrong pixels.
            - ``clip`` has no polygon to apply to in a dataset.
        time_steps: Time steps per sample (time series): the ``time_select`` steps
            of the chip's time slice, in time order, then padding.
        time_select: Which steps ``time_steps`` keeps when the slice has more:
            ``"even"`` (default: those nearest to ``time_steps`` evenly spaced times
            over the slice), ``"latest"``, ``"earliest"`` or ``"least_cloudy"``
            (``eo:cloud_cover``).
        time_bins: A pandas frequency (e.g. ``"1MS"``, monthly): one step per bin over
            the chip's time slice (pandas ``resample`` bins, anchored at the slice's
            start), mosaicking the bin's scenes first valid pixel first in
            ``mosaic_order``; a step's date is the bin's pandas label. Not with
            ``time_steps``.
        group_by: ``"scene"`` (default: each scene is a step) or ``"day"``: scenes of
            one solar day (UTC time shifted by the footprint centre's longitude, 15
            degrees an hour, as odc-stac's ``groupby="solar_day"``) are one step,
            mosaicked in ``mosaic_order`` (adjacent tiles, two UTM zones); its date is
            the day's first scene's.
        layout: ``"TCHW"`` (default, TorchGeo's) or ``"CTHW"`` (TerraTorch's and
            Prithvi's) for time series ``image`` (and multi-band ``mask``) tensors.

    Raises:
        ConfigurationError: A bad option (naming it and its choices), a time series
            keyword without ``time_series=True``, or no scene in ``date_range``.
    """

    def __init__(
        self,
        collection: Collection,
        bands: Sequence[str],
        *,
        chip_size: int | None = None,
        time_series: bool = False,
        backend: Backend | None = None,
        is_image: bool = True,
        dtype: torch.dtype | None = None,
        mosaic_order: MosaicOrder = "latest",
        transforms: Callable[[Sample], Sample] | None = None,
        mask_bands: Sequence[str] | None = None,
        cache_bytes: int | Literal["auto"] = "auto",
        cache_dir: str | None = None,
        options: ReadOptions | None = None,
        target_crs: CRSLike | None = None,
        resolution: Resolution | None = None,
        resampling: Resampling = "nearest",
        apply_scale: bool = False,
        masked: bool = False,
        clip: bool = True,
        date_range: DateRange | None = None,
        on_error: OnError = "raise",
        validate: bool = True,
        time_steps: int | None = None,
        time_select: TimeSelect = "even",
        time_bins: str | None = None,
        group_by: GroupBy = "scene",
        layout: Layout = "TCHW",
    ) -> None:
        self.series = time_series_of(time_series, steps=time_steps, select=time_select,
                                     bins=time_bins, group_by=group_by, layout=layout)
        self.options = read_options(
            options, target_crs=target_crs, resolution=resolution, resampling=resampling,
            apply_scale=apply_scale, masked=masked, clip=clip, date_range=date_range,
            on_error=on_error, validate=validate)
        collection = _in_dates(collection, self.options.date_range)
        self.bands = collection.check_bands(list(bands))
        self.mask_bands = collection.check_bands(list(mask_bands or []))
        check_option("mosaic_order", mosaic_order, MOSAIC_ORDER)
        self.collection = collection
        self.chip_size = chip_size
        self.time_series = time_series
        self.backend = backend_for_collection(collection, backend)
        self.is_image = is_image
        self.dtype = dtype
        self.mosaic_order = mosaic_order
        self.resampling = self.options.resampling
        self.transforms = transforms
        self.on_error = self.options.on_error
        self.paths: list[str] = []
        self.errors = 0
        self.stats = FetchStats()
        if cache_bytes != "auto" and (isinstance(cache_bytes, bool)
                                      or not isinstance(cache_bytes, int) or cache_bytes < 0):
            raise ConfigurationError(
                f"cache_bytes={cache_bytes!r}: give 'auto', 0 (no tile cache) or a number of "
                "bytes")
        self.cache_bytes = cache_bytes
        self.cache_dir = cache_dir
        self.apply_scale = self.options.apply_scale
        self.validate = self.options.validate
        self._caches: ChunkCaches | None = None
        self._views: dict[str, list[BandView | None]] = {}
        self._row_views: dict[tuple[int, str], BandView] = {}
        self._cogs: dict[tuple[int, str], CogFile] = {}

        self._index_frame: gpd.GeoDataFrame | None = None
        self._index_file: IndexFile | None = None
        self._lazy_crs: CRS | None = None
        self._lazy_bounds: tuple[slice, slice, slice] | None = None
        self._grids: dict[str, np.ndarray] | None = None
        self._build_index(self.options.target_crs, self.options.resolution)
        self._longitudes = self._footprint_longitudes()

    # -- the index: built from Arrow columns as arrays, no object per scene -----------
    def _build_index(self, target_crs: CRSLike | None, res: Resolution | None) -> None:
        collection, band = self.collection, self.bands[0]
        grids = self.grids()
        bad = np.flatnonzero(~grids["valid"])
        if len(bad):
            collection.band_view(int(bad[0]), band)  # raises: the band was not indexed
        georeferenced = (grids["crs_epsg"] >= 0) & ~np.isnan(grids["a"])
        bad = np.flatnonzero(~georeferenced)
        if len(bad):
            collection.band_view(int(bad[0]), band).footprint()  # raises: no CRS
        if target_crs is None:
            codes, first, counts = np.unique(grids["crs_epsg"], return_index=True,
                                             return_counts=True)
            # The most common CRS; on a tie, the first met (as most_common_crs).
            best = min(range(len(codes)), key=lambda i: (-counts[i], first[i]))
            crs = crs_of(int(codes[best]))
        else:
            crs = CRS.from_user_input(target_crs)
        bounds = grid_bounds(grids)
        native = np.zeros(len(bounds), bool)
        for code in np.unique(grids["crs_epsg"]):
            rows = np.flatnonzero(grids["crs_epsg"] == code)
            source_crs = crs_of(int(code))
            if source_crs.equals(crs):
                native[rows] = True
                continue
            # Densified edges, as BandView.footprint: the image's curved outline.
            to_crs = transformer(source_crs, crs)
            for foreign in rows:
                minx, miny, maxx, maxy = (float(v) for v in bounds[foreign])
                bounds[foreign] = to_crs.transform_bounds(minx, miny, maxx, maxy,
                                                          densify_pts=21)
        if res is None:
            if native.any():
                first_native = int(np.flatnonzero(native)[0])
                res = (abs(float(grids["a"][first_native])),
                       abs(float(grids["e"][first_native])))
            else:
                res = collection.band_view(0, band).resolution(crs)
        self._res = (float(res), float(res)) if isinstance(res, (int, float)) else (
            float(res[0]), float(res[1]))
        times = collection.column("datetime").to_numpy().astype("datetime64[ns]")
        times[np.isnat(times)] = np.datetime64(0, "ns")  # no time: sorts as the oldest
        index = pd.IntervalIndex.from_arrays(times, times, closed="both", name="datetime")
        self._index_frame = gpd.GeoDataFrame(
            {"row": np.arange(len(times)),
             "id": collection.column("id").to_pandas().to_numpy()},
            index=index,
            geometry=shapely.box(bounds[:, 0], bounds[:, 1], bounds[:, 2], bounds[:, 3]),
            crs=crs,
        )
        # Sort keys per row; scenes without a time sort as the oldest.
        self._stamps: np.ndarray = times.view(np.int64)
        cloud = (collection.column("eo:cloud_cover").to_numpy(zero_copy_only=False).astype(
            np.float64)
                 if "eo:cloud_cover" in collection.column_names
                 else np.full(len(times), np.nan))
        self._cloud: np.ndarray = np.where(np.isnan(cloud), 100.0, cloud)

    def _footprint_longitudes(self) -> np.ndarray:
        """Each row's footprint centre longitude, for solar days (``group_by="day"``);
        NaN otherwise (no day is asked for)."""
        frame = self.index
        longitudes = np.full(len(self._stamps), np.nan)
        if self.series is None or self.series.group_by != "day" or not len(frame):
            return longitudes
        bounds = shapely.bounds(np.asarray(frame.geometry.values))
        to_degrees = transformer(frame.crs, CRS.from_epsg(4326))
        lon, _ = to_degrees.transform((bounds[:, 0] + bounds[:, 2]) / 2,
                                      (bounds[:, 1] + bounds[:, 3]) / 2)
        longitudes[frame["row"].to_numpy(np.int64)] = lon
        return longitudes

    def grids(self) -> dict[str, np.ndarray]:
        """The georeferencing of the first band for every scene, as arrays (see
        :func:`rasteret.band.band_grids`); kept in the main process only."""
        if self._grids is None:
            self._grids = self.collection.band_grids(self.bands[0])
        return self._grids

    @property
    def index(self) -> gpd.GeoDataFrame:
        """The TorchGeo index: one footprint per scene (dataset CRS), datetime
        ``IntervalIndex``, ``row`` and ``id`` columns. In a DataLoader worker it is
        rebuilt from the shared index file only when something asks for it (reads
        use the file's arrays)."""
        if self._index_frame is None:
            assert self._index_file is not None
            self._index_frame = self._index_file.frame(self._lazy_crs)
        return self._index_frame

    @index.setter
    def index(self, frame: gpd.GeoDataFrame) -> None:
        self._index_frame = frame

    @property
    def crs(self) -> CRS:
        """The dataset's CRS (its index's)."""
        if self._index_frame is None and self._lazy_crs is not None:
            return self._lazy_crs
        crs: CRS = self.index.crs
        return crs

    @crs.setter
    def crs(self, new_crs: CRS) -> None:
        if new_crs == self.crs:
            return
        self.index.to_crs(new_crs, inplace=True)

    @property
    def bounds(self) -> tuple[slice, slice, slice]:
        """Bounding x, y and t slices of the index (as TorchGeo's)."""
        if self._index_frame is None and self._lazy_bounds is not None:
            return self._lazy_bounds
        bounds: tuple[slice, slice, slice] = super().bounds
        return bounds

    def __len__(self) -> int:
        """Scenes in the index."""
        if self._index_frame is None and self._index_file is not None:
            return self._index_file.length
        return len(self.index)

    # -- pickling: the description travels, live stores and caches do not ------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cogs"] = {}
        state["_views"] = {}
        state["_row_views"] = {}
        state["_caches"] = None
        state["stats"] = FetchStats()
        if self._index_frame is not None:
            # The index and the sort keys travel as files the workers memory-map
            # (written once, again only if the index changed): the pickle stays small.
            if self._index_file is None or not self._index_file.matches(self._index_frame):
                self._index_file = IndexFile.write(self._index_frame, self._stamps,
                                                   self._cloud, self._longitudes)
            state["_index_file"] = self._index_file
            state["_lazy_crs"] = self._index_frame.crs
            state["_lazy_bounds"] = self.bounds
        state.update(_index_frame=None, _grids=None, _stamps=None, _cloud=None,
                     _longitudes=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if state.get("_stamps") is None and self._index_file is not None:
            self._stamps, self._cloud, self._longitudes = self._index_file.keys()

    @property
    def caches(self) -> ChunkCaches:
        """This process's chunk caches (built on first use in each worker)."""
        if self._caches is None:
            if self.cache_bytes == "auto":
                self._caches = ChunkCaches(memory_bytes=AUTO_CACHE_BYTES,
                                           disk_dir=self.cache_dir, whole_chunks="auto")
            else:
                self._caches = ChunkCaches(memory_bytes=self.cache_bytes,
                                           disk_dir=self.cache_dir)
        return self._caches

    def views(self, band: str) -> list[BandView | None]:
        """The views of ``band`` for every scene, by row; None where the band was not
        indexed (built once per process)."""
        views = self._views.get(band)
        if views is None:
            views = self._views[band] = self.collection.band_views(band)
        return views

    def view(self, row: int, band: str) -> BandView:
        """The view of one band of one scene.

        Raises:
            ConfigurationError: The band was not indexed for this scene.
        """
        if self.collection.lazy:
            # Only the rows sampled: their row groups are decoded on first use.
            key = (row, band)
            cached = self._row_views.get(key)
            if cached is None:
                cached = self._row_views[key] = self.collection.band_view(row, band)
                if len(self._row_views) > _KEPT_VIEWS:  # bounded: not the collection's size
                    self._row_views.pop(next(iter(self._row_views)))
                    self._cogs.pop(next(iter(self._cogs), (row, band)), None)
            return cached
        view = self.views(band)[row]
        return view if view is not None else self.collection.band_view(row, band)

    def cog(self, row: int, band: str) -> CogFile:
        """The file of one band of one scene, from the stored header (no request),
        sharing this process's caches; built once per process."""
        key = (row, band)
        cog = self._cogs.get(key)
        if cog is None:
            cog = self._cogs[key] = self.view(row, band).cog(
                self.backend, self.caches, validate=self.validate)
        return cog

    def scene_rows(self, index: GeoSlice) -> list[int]:
        """The collection rows a sample at ``index`` reads, in reading order (oldest
        first for time series; by ``mosaic_order`` for mosaics)."""
        return self._scenes(*self.resolve_slice(index))

    def resolve_slice(self, index: GeoSlice) -> tuple[slice, slice, slice]:
        """``index`` as three slices ``x, y, t`` with every bound and step filled in
        from the dataset's bounds and resolution (as a sample reads it)."""
        x, y, t = self._disambiguate_slice(index)
        return x, y, t

    # -- sampling --------------------------------------------------------------------
    def _grid(self, index: GeoSlice) -> tuple[GridSpec, slice, slice, slice]:
        x, y, t = self.resolve_slice(index)
        width = max(1, round((x.stop - x.start) / x.step))
        height = max(1, round((y.stop - y.start) / y.step))
        transform = Affine(x.step, 0.0, x.start, 0.0, -y.step, y.stop)
        return GridSpec(self.crs, transform, width, height), x, y, t

    def _scenes(self, x: slice, y: slice, t: slice, *, strict: bool = False) -> list[int]:
        if self._index_frame is not None:
            interval = pd.Interval(pd.Timestamp(t.start), pd.Timestamp(t.stop), closed="both")
            frame = self.index.iloc[self.index.index.overlaps(interval)]
            frame = frame.iloc[:: t.step or 1] if t.step and t.step != 1 else frame
            frame = frame.cx[x.start : x.stop, y.start : y.stop]
            found = frame["row"].to_numpy(np.int64)
            if strict:
                bounds = shapely.bounds(np.asarray(frame.geometry.values))
                found = found[overlapping(dict(zip(("minx", "miny", "maxx", "maxy"),
                                                   bounds.T)), x, y, strict=True)]
        else:
            # A worker: the same selection on the memory-mapped index arrays.
            assert self._index_file is not None
            found = self._index_file.select(x, y, t, strict=strict)
        # Unless strict, scenes that only touch the slice are kept, as TorchGeo does:
        # reading them costs no request (no tile is covered) and yields nodata.
        return self._ordered(found, chronological=self.time_series)

    def _ordered(self, found: np.ndarray, *, chronological: bool = False) -> list[int]:
        """``found`` rows in reading order: oldest first, else by ``mosaic_order``
        (stable sorts)."""
        if chronological or self.mosaic_order == "earliest":
            order = np.argsort(self._stamps[found], kind="stable")
        elif self.mosaic_order == "latest":
            order = np.argsort(-self._stamps[found], kind="stable")
        else:
            order = np.argsort(self._cloud[found], kind="stable")
        return [int(r) for r in found[order]]

    def _scene_id(self, row: int) -> str:
        if self._index_frame is not None:
            return str(self._index_frame["id"].iloc[row])
        try:
            return self.view(row, self.bands[0]).scene_id
        except RasteretError:
            return f"row {row}"

    def _open(self, view: BandView) -> CogFile:
        return self.cog(view.row, view.band)

    def scene(self, row: int) -> SceneRead:
        """The bands (``bands`` then ``mask_bands``) of one scene as a read uses them;
        under ``on_error="skip"`` a scene lacking one is reported and has no bands.

        Raises:
            ConfigurationError: A band was not indexed for the scene (``on_error="raise"``).
        """
        try:
            return SceneRead.of([self.view(row, band) for band in self.bands + self.mask_bands])
        except RasteretError as error:
            if self.on_error == "raise":
                raise
            self._skip(row, error)
            return SceneRead(row, self._scene_id(row), ())

    def plan(self, rows: Sequence[int], grid: GridSpec) -> PixelPlan:
        """The read of a sample: ``rows`` (in reading order) onto ``grid``, one time step
        per scene for time series, else one mosaic (first valid pixel in that order)
        whose scenes are described only as the mosaic reaches them. ``mask_bands``
        keep their stored values.

        Raises:
            IndexError: Under ``on_error="skip"``, no scene has every band.
        """
        if self.time_series:
            return self.plan_slots([[row] for row in rows], grid)
        return self.plan_slots([rows], grid)

    def plan_slots(self, slots: Sequence[Sequence[int]], grid: GridSpec) -> PixelPlan:
        """The read of time steps onto ``grid``: each step mosaics the rows of its slot
        (first valid pixel in their order), whose scenes are described only as the
        mosaic reaches them; an empty slot is a padded step the read leaves undefined.
        The first described scene of each step sets the dtype (later scenes of a step
        are cast into it). ``mask_bands`` keep their stored values.

        Raises:
            IndexError: Under ``on_error="skip"``, no step has a scene with every band.
        """
        image: Values = self.options.values
        values = [image] * len(self.bands) + ["stored"] * len(self.mask_bands)
        mosaics = [LazyScenes(rows, self.scene) for rows in slots]
        firsts = [next((scene for scene in mosaic if scene.bands), None) for mosaic in mosaics]
        described = [scene for scene in firsts if scene is not None]
        if not described:
            raise IndexError(
                f"no readable scene covers {grid.bounds} in {self.collection.name}")
        return plan_pixels(grid, self.bands + self.mask_bands, mosaics,
                           dtype=scenes_dtype(described), values=values,
                           resampling=self.resampling, on_error=self.on_error)

    @property
    def _layout(self) -> Layout:
        return self.series.layout if self.series is not None else "TCHW"

    def _skip(self, row: int, error: RasteretError) -> None:
        self.errors += 1
        warnings.warn(f"skipped scene {self._scene_id(row)}: {error}", stacklevel=3)

    async def _read(self, rows: list[int], grid: GridSpec) -> np.ndarray:
        """The pixels of a mosaic sample: ``(C, H, W)``."""
        data, read = await self._read_slots([rows], grid)
        if not read[0]:
            raise IndexError(f"no readable scene covers {grid.bounds} in {self.collection.name}")
        sample: np.ndarray = data[0]
        return sample

    async def _read_slots(self, slots: Sequence[Sequence[int]], grid: GridSpec
                          ) -> tuple[np.ndarray, np.ndarray]:
        """The pixels ``(T, C, H, W)`` of time steps, and which steps were read: a
        step of no scene (or whose scenes were all skipped) is filled with nodata
        (NaN for float image bands)."""
        plan = self.plan_slots(slots, grid)
        data = np.empty(plan.shape, plan.out_dtype)
        outcome = await fill_block(plan, data, self._open, stats=self.stats)
        for scene, error in outcome.skipped:
            self._skip(scene.row, error)
        read = np.ones(len(slots), bool)
        read[outcome.empty] = False
        if not read.all() and read.any():
            first = int(np.flatnonzero(read)[0])
            for band in range(len(plan.bands)):
                image_band = band < len(self.bands) and plan.out_dtype.kind == "f"
                data[~read, band] = np.nan if image_band else plan.fill_value(first, band)
        return data, read

    async def _read_series(self, rows: list[int], t: slice, grid: GridSpec
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A time series sample's pixels ``(T, C, H, W)``, dates (ns) and time mask."""
        assert self.series is not None
        steps = self.steps(rows, t)
        data, read = await self._read_slots(steps.slots, grid)
        if not read.any():
            raise IndexError(f"no readable scene covers {grid.bounds} in {self.collection.name}")
        dates = np.where(read, steps.dates, NAT).astype(np.int64)
        if self.series.fixed:
            return data, dates, read
        kept = [int(k) for k in np.flatnonzero(read)]  # stack the steps read, as before
        return keep_slots(data, kept), dates[kept], read[kept]

    def steps(self, rows: Sequence[int], t: slice) -> Steps:
        """The time steps of a time series sample from the ``rows`` its query found in
        the time slice ``t`` (see :func:`rasteret.torch.timeseries.plan_steps`).

        Raises:
            ConfigurationError: The dataset is not a time series.
        """
        if self.series is None:
            raise ConfigurationError("steps: the dataset is not a time series "
                                     "(give time_series=True)")
        return plan_steps(
            self.series, rows, stamps=self._stamps, clouds=self._cloud,
            longitudes=self._longitudes, start=pd.Timestamp(t.start).as_unit("ns").value,
            stop=pd.Timestamp(t.stop).as_unit("ns").value,
            mosaic=lambda found: self._ordered(found))

    async def _sample_async(self, index: GeoSlice) -> Sample:
        grid, x, y, t = self._grid(index)
        # Time steps that batch are not spent on scenes that only touch the chip's edge.
        fixed = self.series is not None and self.series.fixed
        rows = (self._scenes(x, y, t, strict=True) if fixed else []) or self._scenes(x, y, t)
        if not rows:
            raise IndexError(
                f"index: {index} not found in dataset with bounds: {self.bounds}"
            )
        sample: Sample = {
            "bounds": self._slice_to_tensor(index),
            "transform": torch.tensor(list(grid.transform)),
        }
        if self.series is None:
            data = await self._read(rows, grid)
        else:
            data, dates, read = await self._read_series(rows, t, grid)
            sample["dates"] = torch.from_numpy(dates)
            sample["time_mask"] = torch.from_numpy(read)
        channels = len(self.bands)
        layout = self._layout
        image = torch.from_numpy(widen_for_torch(data[..., :channels, :, :]))
        if self.dtype is not None:
            image = image.to(self.dtype)
        if self.is_image:
            sample["image"] = arrange_steps(image, layout)
        else:
            sample["mask"] = arrange_steps(_squeeze_channel(image), layout)
        if self.mask_bands:
            labels = torch.from_numpy(widen_for_torch(data[..., channels:, :, :])).long()
            sample["mask"] = arrange_steps(_squeeze_channel(labels), layout)
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def __getitem__(self, index: GeoSlice) -> Sample:
        """Read the sample at a ``GeoSlice`` ``[xmin:xmax:xres, ymin:ymax:yres, t0:t1]``.

        Raises:
            IndexError: No scene of the dataset covers the slice.
        """
        return run_sync(self._sample_async(index))

    def __getitems__(self, indices: Sequence[GeoSlice]) -> list[Sample]:
        """Read a whole batch in one concurrent pass (used by DataLoader batching)."""

        async def read_all() -> list[Sample]:
            return list(await asyncio.gather(*(self._sample_async(i) for i in indices)))

        return run_sync(read_all())

    def __str__(self) -> str:
        return (
            f"RasteretDataset({self.collection.name!r}, bands={self.bands}, "
            f"{len(self)} scenes, crs=EPSG:{self.crs.to_epsg()}, res={self.res})"
        )

    # -- plotting --------------------------------------------------------------------
    def plot(
        self,
        sample: Sample,
        *,
        bands: Sequence[str | int] | None = None,
        stretch: tuple[float, float] = (2, 98),
        show_titles: bool = True,
        suptitle: str | None = None,
        prediction_key: str = "prediction",
    ) -> Figure:
        """Plot a sample as TorchGeo's datasets do: the image, the mask and a
        prediction side by side.

        The image shows three bands as RGB (or one band in grey), each stretched
        between the ``stretch`` percentiles of the shown pixels (NaN shows black).
        The mask (one panel per mask band) and the prediction share one colour scale
        of class values. A time series sample shows its latest time step.

        Args:
            sample: A sample of this dataset (``image`` and/or ``mask``; a batch's
                element from ``torchgeo.datasets.unbind_samples`` works too).
            bands: The shown bands, by name or channel index: three (RGB) or one
                (grey). Default: ``("B04", "B03", "B02")`` when the dataset has them,
                else its first three bands, else its first band.
            stretch: Lower and upper percentiles of the contrast stretch.
            show_titles: Title each panel.
            suptitle: A title for the figure.
            prediction_key: The sample key of a prediction (class values, ``[H, W]``
                or class scores ``[K, H, W]``); plotted when present.

        Returns:
            A matplotlib ``Figure`` (no pyplot state; ``fig.savefig(...)`` writes it).

        Raises:
            ConfigurationError: ``bands`` names a band the dataset lacks, is not one
                or three bands, or the sample has nothing to plot.
        """
        panels: list[tuple[str, np.ndarray, str]] = []
        if "image" in sample:
            image = np.asarray(sample["image"].detach().cpu().float().numpy())
            if image.ndim == 4:
                image = shown_step(image, self._layout, sample.get("time_mask"))
            channels = self._plot_channels(bands, image.shape[0])
            shown = image[channels]
            low, high = (np.nanpercentile(shown, stretch) if np.isfinite(shown).any()
                         else (0.0, 1.0))
            shown = np.clip((shown - low) / max(float(high - low), 1e-12), 0, 1)
            shown = np.nan_to_num(shown, nan=0.0)
            # Transforms may add channels (e.g. indices): those have no band name.
            names = [self.bands[c] if c < len(self.bands) else str(c) for c in channels]
            view = np.moveaxis(shown, 0, -1) if len(channels) == 3 else shown[0]
            panels.append((f"Image ({', '.join(names)})", view, "image"))
        classes: list[np.ndarray] = []
        if "mask" in sample:
            mask = sample["mask"].detach().cpu().numpy()
            mask_names = self.mask_bands if self.mask_bands else self.bands
            if mask.ndim == 4 or (mask.ndim == 3 and self.time_series):
                layout = self._layout if mask.ndim == 4 else "TCHW"
                mask = shown_step(mask, layout, sample.get("time_mask"))
            layers = mask.reshape(-1, *mask.shape[-2:])
            for number, layer in enumerate(layers):
                name = mask_names[number] if number < len(mask_names) else str(number)
                title = "Mask" if len(layers) == 1 else f"Mask ({name})"
                panels.append((title, layer, "classes"))
                classes.append(layer)
        if prediction_key in sample:
            prediction = sample[prediction_key].detach().cpu().numpy()
            if prediction.ndim == 3:  # class scores: the most likely class
                prediction = prediction.argmax(axis=0)
            panels.append(("Prediction", prediction, "classes"))
            classes.append(prediction)
        if not panels:
            raise ConfigurationError(
                f"the sample has no 'image', 'mask' or {prediction_key!r} to plot; its keys "
                f"are {sorted(sample)}")
        # One colour per class value for up to 20 classes (tab20), a ramp beyond.
        top = max((int(np.nanmax(c)) for c in classes if c.size), default=1)
        cmap, vmax = ("tab20", 19) if top < 20 else ("viridis", top)
        figure = Figure(figsize=(4 * len(panels), 4), layout="constrained")
        axes = figure.subplots(1, len(panels), squeeze=False)[0]
        for axis, (title, values, kind) in zip(axes, panels):
            if kind == "classes":
                axis.imshow(values, cmap=cmap, vmin=0, vmax=vmax, interpolation="none")
            else:
                axis.imshow(values, cmap="gray" if values.ndim == 2 else None, vmin=0, vmax=1,
                            interpolation="none")
            axis.set_axis_off()
            if show_titles:
                axis.set_title(title)
        if suptitle is not None:
            figure.suptitle(suptitle)
        return figure

    def _plot_channels(self, bands: Sequence[str | int] | None, count: int) -> list[int]:
        """The image channels ``plot`` shows (three, or one for grey)."""
        if bands is None:
            rgb = ("B04", "B03", "B02")
            if all(b in self.bands for b in rgb):
                return [self.bands.index(b) for b in rgb]
            return [0, 1, 2] if count >= 3 else [0]
        if len(bands) not in (1, 3):
            raise ConfigurationError(
                f"plot shows one band (grey) or three (RGB), got bands={list(bands)}")
        channels = []
        for band in bands:
            if isinstance(band, str):
                if band not in self.bands:
                    raise ConfigurationError(
                        f"plot: no band {band!r} in the dataset; its bands are {self.bands}")
                channels.append(self.bands.index(band))
            elif not 0 <= band < count:
                raise ConfigurationError(
                    f"plot: channel {band} is out of range for an image of {count} channels")
            else:
                channels.append(int(band))
        return channels

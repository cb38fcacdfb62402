"""``RasteretDataModule``: a Lightning datamodule over a rasteret collection.

Configured by plain values (collection name or path, bands, chip size, batch size,
sampler, splits) so LightningCLI YAML files can drive it.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import pyarrow.compute as pc
import shapely
from torch.utils.data import DataLoader, Sampler

from rasteret.collection import Collection
from rasteret.errors import ConfigurationError
from rasteret.io.backend import Backend
from rasteret.loading import load
from rasteret.options import check_option
from rasteret.read.warp import transformer
from rasteret.torch.dataset import RasteretDataset
from rasteret.torch.distributed import distributed_share, shared
from rasteret.torch.loader import DEFAULT_CONTEXT, dataloader
from rasteret.torch.samplers import TileAlignedSampler
from rasteret.torch.sweep import Sweep, SweepSampler, plan_sweep, sweep_area, time_slice

SAMPLERS = ("tile_aligned", "random", "grid")
SPLIT_KINDS = ("date", "area", "column")


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
        split_by: ``"date"``, ``"area"`` or ``"column"``; None uses the whole
            collection for every stage.
        splits: Per stage: a ``(start, end)`` date range (``split_by="date"``), a
            ``(minx, miny, maxx, maxy)`` box in degrees (``"area"``), or the value of
            ``split_column`` (``"column"``).
        split_column: The column holding split names (``split_by="column"``).
        num_workers: DataLoader workers per stage.
        multiprocessing_context: Worker start method (``"forkserver"`` by default).
        seed: Seed of the random samplers (needed under DDP with ``"random"``).
        backend: How to reach the stores (default: the dataset's CloudConfig).
        workspace_dir: Where named collections are looked up.
        dataset_options: Extra keyword arguments of :class:`RasteretDataset`
            (``dtype``, ``mosaic_order``, ``time_series``, ``target_crs``, ``res``...).
        image_scale: Multiply images by this after each batch reaches the device (e.g.
            ``1e-4`` for Sentinel-2 reflectance); images become float32.
        roi: The area ``predict_dataloader`` sweeps (a bbox tuple, shapely geometry or
            GeoJSON in ``geometry_crs``; default: the predict split's area, else the
            scenes' extent): chips on the COGs' tile grid, in rows, overlapping by
            ``overlap`` pixels, for a
            :class:`~rasteret.torch.callbacks.RasteretPredictionWriter` to blend.
        geometry_crs: The roi's CRS (default EPSG:4326).
        overlap: Pixels neighbouring prediction chips share.
    """

    def __init__(
        self,
        collection: Collection | str,
        bands: list[str],
        *,
        mask_bands: list[str] | None = None,
        chip_size: int = 256,
        batch_size: int = 16,
        sampler: str = "tile_aligned",
        length: int | None = None,
        split_by: str | None = None,
        splits: dict[str, Any] | None = None,
        split_column: str = "split",
        num_workers: int = 2,
        multiprocessing_context: str | None = DEFAULT_CONTEXT,
        seed: int | None = 0,
        backend: Backend | None = None,
        workspace_dir: str | None = None,
        dataset_options: dict[str, Any] | None = None,
        image_scale: float | None = None,
        roi: Any = None,
        geometry_crs: Any = 4326,
        overlap: int = 0,
    ) -> None:
        super().__init__()
        check_option("sampler", sampler, SAMPLERS)
        check_option("split_by", split_by, (*SPLIT_KINDS, None))
        if split_by is not None and not splits:
            raise ConfigurationError(f"split_by={split_by!r} needs splits={{stage: ...}}")
        self.collection = collection
        self.bands = list(bands)
        self.mask_bands = list(mask_bands or [])
        self.chip_size = chip_size
        self.batch_size = batch_size
        self.sampler = sampler
        self.length = length
        self.split_by = split_by
        self.splits = dict(splits or {})
        self.split_column = split_column
        self.num_workers = num_workers
        self.multiprocessing_context = multiprocessing_context
        self.seed = seed
        self.backend = backend
        self.workspace_dir = workspace_dir
        self.dataset_options = dict(dataset_options or {})
        self.image_scale = image_scale
        self.roi = roi
        self.geometry_crs = geometry_crs
        self.overlap = overlap
        #: The chips ``predict_dataloader`` reads and the map's grid (after setup).
        self.predict_sweep: Sweep | None = None
        self.datasets: dict[str, RasteretDataset] = {}
        self._rois: dict[str, shapely.Geometry | None] = {}

    def _collection(self) -> Collection:
        if isinstance(self.collection, Collection):
            return self.collection
        return load(self.collection, workspace_dir=self.workspace_dir)

    def _stage_collection(self, base: Collection, stage: str) -> Collection:
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
            if self.split_by is not None and name not in self.splits:
                continue
            subset = self._stage_collection(base, name)
            dataset = RasteretDataset(
                subset,
                self.bands,
                mask_bands=self.mask_bands,
                chip_size=self.chip_size,
                backend=self.backend,
                **self.dataset_options,
            )
            self.datasets[name] = dataset
            self._rois[name] = self._stage_roi(dataset, name)
            if name == "predict":
                self.predict_sweep = self._sweep(dataset, self._rois[name])

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
            return shared(RandomPatchSampler(
                dataset, size=self.chip_size, length=length, roi=roi, generator=self.seed
            ))
        return shared(GriddedPatchSampler(dataset, size=self.chip_size, roi=roi))

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
        return batch

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

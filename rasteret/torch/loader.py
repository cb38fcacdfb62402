"""DataLoaders made by rasteret: batched concurrent reads, forkserver workers.

obstore cannot run in a child forked after its parent did I/O, and torch forks
DataLoader workers by default on Linux; rasteret's loaders start workers with
``forkserver`` instead, and each worker rebuilds its stores and credentials from
the pickled dataset.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import DataLoader, Dataset, Sampler
from torchgeo.datasets import stack_samples

#: Worker start method used by rasteret's loaders.
DEFAULT_CONTEXT = "forkserver"


def dataloader(
    dataset: Dataset[Any],
    *,
    sampler: Sampler[Any] | None = None,
    batch_size: int = 16,
    num_workers: int = 2,
    multiprocessing_context: str | None = DEFAULT_CONTEXT,
    persistent_workers: bool | None = None,
    **kwargs: Any,
) -> DataLoader[Any]:
    """A DataLoader for a rasteret (or any TorchGeo) dataset.

    Batches are read in one concurrent pass through the dataset's ``__getitems__``
    and collated with TorchGeo's ``stack_samples``.

    Args:
        dataset: The dataset (e.g. :class:`rasteret.torch.RasteretDataset`).
        sampler: A GeoSampler yielding slices (e.g. :class:`TileAlignedSampler`).
        batch_size: Samples per batch.
        num_workers: Worker processes (0 reads in the main process).
        multiprocessing_context: Worker start method; ``"forkserver"`` by default
            (``"spawn"`` also works; plain ``"fork"`` after rasteret I/O raises
            :class:`rasteret.errors.ForkAfterIOError` in the workers).
        persistent_workers: Keep workers between epochs (default: when workers > 0).
        **kwargs: Passed to :class:`torch.utils.data.DataLoader`.
    """
    if num_workers == 0:
        multiprocessing_context = None
    if persistent_workers is None:
        persistent_workers = num_workers > 0
    kwargs.setdefault("collate_fn", stack_samples)
    return DataLoader(
        dataset,
        sampler=sampler,
        batch_size=batch_size,
        num_workers=num_workers,
        multiprocessing_context=multiprocessing_context,
        persistent_workers=persistent_workers,
        **kwargs,
    )

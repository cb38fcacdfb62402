"""DataLoaders made by rasteret: batched concurrent reads, forkserver workers.

obstore cannot run in a child forked after its parent did I/O, and torch forks
DataLoader workers by default on Linux; rasteret's loaders start workers with
``forkserver`` instead, and each worker rebuilds its stores and credentials from
the pickled dataset.
"""

from __future__ import annotations

import functools
import multiprocessing
import multiprocessing.forkserver
from collections.abc import Callable
from typing import Any

from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info
from torchgeo.datasets import stack_samples

from rasteret.io.runtime import available_cores, set_decode_threads
from rasteret.torch.forkserver import prepare_forkserver

#: Worker start method used by rasteret's loaders.
DEFAULT_CONTEXT = "forkserver"

def worker_init(worker_id: int, user_init: Callable[[int], None] | None = None) -> None:
    """Set up a DataLoader worker: size its decode pool to its share of the cores
    (cores // workers, at least 1), then run the user's ``worker_init_fn``.

    Args:
        worker_id: The worker's number (from the DataLoader).
        user_init: The ``worker_init_fn`` given to :func:`dataloader`, if any.
    """
    info = get_worker_info()
    workers = info.num_workers if info is not None else 1
    set_decode_threads(available_cores() // max(1, workers))
    if user_init is not None:
        user_init(worker_id)


def dataloader(
    dataset: Dataset[Any],
    *,
    sampler: Sampler[Any] | None = None,
    batch_size: int = 16,
    num_workers: int = 2,
    multiprocessing_context: str | multiprocessing.context.BaseContext | None = DEFAULT_CONTEXT,
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
        **kwargs: Passed to :class:`torch.utils.data.DataLoader`. A
            ``worker_init_fn`` runs after rasteret's own worker set-up.

    Each worker decodes with ``cores // num_workers`` threads (at least 1), so workers
    add throughput where there are cores instead of competing for them; without
    workers the main process decodes with every core. Forkserver workers start from
    a server that preloads torch, torchgeo and rasteret (see
    :mod:`rasteret.torch.forkserver`), started when ``rasteret.torch`` was imported
    or else by this call.
    """
    if num_workers == 0:
        multiprocessing_context = None
        set_decode_threads(available_cores())
    else:
        kwargs["worker_init_fn"] = functools.partial(
            worker_init, user_init=kwargs.get("worker_init_fn"))
        method = getattr(multiprocessing_context, "get_start_method", None)
        if (method() if callable(method) else multiprocessing_context) == "forkserver":
            prepare_forkserver()
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

"""Shares of a sampler's chips for distributed data parallel training (DDP).

Every rank builds the same sampler over the same collection; each keeps every
``world_size``-th chip of the sampler's order, starting at its rank. Shares are
disjoint, their union is the whole order, and every rank gets the same number of
chips (a short share is padded with chips from the start of the order, as
``torch.utils.data.DistributedSampler`` does), so no rank waits at a collective
for a batch another rank never makes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sized
from typing import Any, Generic, TypeVar, cast

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler

from rasteret.errors import ConfigurationError

T = TypeVar("T")


def distributed_share(rank: int | None = None, world_size: int | None = None
                      ) -> tuple[int, int]:
    """This process's ``(rank, world_size)``.

    Args:
        rank: The rank; default from ``torch.distributed`` when it is initialised
            (Lightning DDP, ``torchrun``), else 0.
        world_size: The number of ranks; default from ``torch.distributed`` when it
            is initialised, else 1.

    Raises:
        ConfigurationError: ``world_size`` is below 1 or ``rank`` is not in
            ``range(world_size)``.
    """
    initialised = dist.is_available() and dist.is_initialized()
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    if world_size is None:
        world_size = dist.get_world_size() if initialised else 1
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigurationError(
            f"rank={rank}, world_size={world_size}: give world_size >= 1 and "
            "0 <= rank < world_size (or leave both to torch.distributed)")
    return rank, world_size


def share_positions(count: int, rank: int, world_size: int, *, drop_last: bool = False
                    ) -> np.ndarray:
    """Positions in an order of ``count`` chips that rank ``rank`` reads.

    Rank ``r`` takes positions ``r, r + world_size, ...``. Without ``drop_last`` the
    order is extended cyclically to a multiple of ``world_size`` (every rank gets
    ``ceil(count / world_size)`` positions, a few repeated); with it the tail is cut
    (``count // world_size`` each, a few chips read by no rank).

    Args:
        count: Chips in the order.
        rank: This rank.
        world_size: The number of ranks.
        drop_last: Cut instead of pad.
    """
    total = (count // world_size if drop_last else math.ceil(count / world_size)) * world_size
    if count == 0:
        return np.empty(0, dtype=np.int64)
    return np.arange(rank, total, world_size, dtype=np.int64) % count


class DistributedGeoSampler(Sampler[T], Generic[T]):
    """This rank's share of another sampler's chips (e.g. a TorchGeo sampler's).

    TorchGeo's samplers know nothing of DDP: on every rank they yield the same chips
    (or, unseeded, unrelated random ones). Wrapped, each rank reads every
    ``world_size``-th chip of the sampler's order, starting at its rank, so the
    shares are disjoint and together read the whole order. The wrapped sampler is
    consumed as a stream: memory does not grow with its length.

    The wrapped sampler must yield the same order on every rank: a grid sampler
    (``GridGeoSampler``, ``GriddedPatchSampler``) does; a random one must be seeded
    alike on every rank (``RandomPatchSampler(..., generator=SEED)``,
    ``RandomGeoSampler(..., generator=torch.Generator().manual_seed(SEED))``).
    :class:`~rasteret.torch.TileAlignedSampler` splits by rank itself and needs no
    wrapper.

    Args:
        sampler: The sampler to share out.
        rank: This process's rank; default from ``torch.distributed``.
        world_size: The number of ranks; default from ``torch.distributed``.
        drop_last: Cut the order to a multiple of ``world_size`` instead of padding
            the short shares with chips from its start (see :func:`share_positions`).

    Raises:
        ConfigurationError: ``rank`` and ``world_size`` do not fit together.
    """

    def __init__(self, sampler: Sampler[T], *, rank: int | None = None,
                 world_size: int | None = None, drop_last: bool = False) -> None:
        self.sampler = sampler
        self.rank, self.world_size = distributed_share(rank, world_size)
        self.drop_last = drop_last
        self.epoch = 0

    def _count(self) -> int:
        # torch's Sampler declares no __len__; the samplers wrapped here all have one.
        return len(cast(Sized, self.sampler))

    def set_epoch(self, epoch: int) -> None:
        """Pass the epoch on to the wrapped sampler, if it takes one (Lightning calls
        this before each epoch)."""
        self.epoch = epoch
        inner = getattr(self.sampler, "set_epoch", None)
        if callable(inner):
            inner(epoch)

    def __iter__(self) -> Iterator[T]:
        """Yield this rank's chips, in the wrapped sampler's order."""
        rank, size = self.rank, self.world_size
        stop = self._count() // size * size if self.drop_last else None
        # The first chips pad a short share at the end: at most world_size - 1.
        head: list[T] = []
        seen = 0
        for item in self.sampler:
            if stop is not None and seen >= stop:
                break
            if len(head) < size - 1:
                head.append(item)
            if seen % size == rank:
                yield item
            seen += 1
        if stop is None and seen:
            for position in range(seen, math.ceil(seen / size) * size):
                if position % size == rank:
                    yield head[(position - seen) % len(head)]

    def __len__(self) -> int:
        """Chips this rank reads per epoch (the same on every rank)."""
        count = self._count()
        return count // self.world_size if self.drop_last else math.ceil(count / self.world_size)

    def __repr__(self) -> str:
        return (f"DistributedGeoSampler({self.sampler!r}, rank={self.rank}, "
                f"world_size={self.world_size}, drop_last={self.drop_last})")


def shared(sampler: Sampler[Any]) -> Sampler[Any]:
    """``sampler`` wrapped in :class:`DistributedGeoSampler` under DDP (more than one
    rank), else unchanged."""
    if distributed_share()[1] > 1:
        return DistributedGeoSampler(sampler)
    return sampler

"""Block splits (rasteret.splits) without torch: regions of different stages are at
least ``buffer`` apart over random areas, block sizes, buffers and seeds; ratios hold
within a block; bad options are refused."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from rasteret.errors import ConfigurationError
from rasteret.splits import block_split, check_ratios, nearest_other

ORIGIN = (500_000.0, 4_100_000.0)


@st.composite
def areas(draw: st.DrawFn) -> shapely.Geometry:
    """Unions of 1 to 6 boxes (L shapes, holes, separate islands), in metres."""
    boxes = []
    for _ in range(draw(st.integers(1, 6))):
        x = draw(st.floats(0, 8000))
        y = draw(st.floats(0, 8000))
        w = draw(st.floats(500, 6000))
        h = draw(st.floats(500, 6000))
        boxes.append(shapely.box(ORIGIN[0] + x, ORIGIN[1] + y, ORIGIN[0] + x + w,
                                 ORIGIN[1] + y + h))
    return shapely.union_all(boxes)


RATIOS = st.sampled_from([
    {"train": 0.7, "val": 0.15, "test": 0.15},
    {"train": 0.8, "val": 0.2},
    {"train": 0.5, "val": 0.25, "test": 0.25},
    {"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0},
])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(area=areas(), block_size=st.floats(200, 3000), buffer=st.floats(0, 600),
       seed=st.integers(0, 2**32 - 1), ratios=RATIOS)
def test_regions_of_different_stages_are_at_least_buffer_apart(area, block_size, buffer,
                                                               seed, ratios):
    try:
        split = block_split(area, block_size=block_size, splits=ratios, seed=seed,
                            buffer=buffer)
    except ConfigurationError:
        assume(False)  # too few blocks for the stages, or a buffer that eats a stage
    stages = list(ratios)
    for i, first in enumerate(stages):
        assert split.region(first).within(shapely.buffer(area, 1e-6))
        for second in stages[i + 1:]:
            gap = shapely.distance(split.region(first), split.region(second))
            assert gap >= buffer, (first, second, gap, buffer)
    # Every block belongs to exactly one stage and the blocks tile the area.
    assert len(split.stages) == len(split.blocks)
    assert math.isclose(float(shapely.area(split.blocks).sum()), area.area, rel_tol=1e-9)
    # Ratios of the area hold within one block (before the buffer).
    total = area.area
    largest = float(shapely.area(split.blocks).max())
    shares = check_ratios(ratios)
    for stage in stages:
        got = float(shapely.area(split.blocks[split.stages == stage]).sum())
        assert abs(got - shares[stage] * total) <= largest * 1.0001


def test_many_blocks_follow_the_ratios_and_the_seed():
    area = shapely.box(*ORIGIN, ORIGIN[0] + 20_000, ORIGIN[1] + 20_000)
    split = block_split(area, block_size=500, seed=7, buffer=100)
    counts = {s: split.block_count(s) for s in ("train", "val", "test")}
    assert sum(counts.values()) == 1600
    assert counts == {"train": 1120, "val": 240, "test": 240}
    again = block_split(area, block_size=500, seed=7, buffer=100)
    assert (again.stages == split.stages).all()
    other = block_split(area, block_size=500, seed=8, buffer=100)
    assert (other.stages != split.stages).any()
    # The training stage gives up the strips; the smallest stage keeps its blocks whole.
    assert split.area("test") == pytest.approx(240 * 500 * 500)
    assert split.area("train") < 1120 * 500 * 500


def test_blocks_are_anchored_at_multiples_of_the_block_size():
    area = shapely.box(1234.0, 5678.0, 4321.0, 8765.0)
    split = block_split(area, block_size=1000, splits={"train": 0.5, "val": 0.5}, buffer=0)
    bounds = shapely.bounds(split.blocks)
    inner = (bounds[:, 0] > area.bounds[0]) & (bounds[:, 1] > area.bounds[1])
    assert np.allclose(bounds[inner, :2] % 1000, 0)


def test_nearest_other_measures_chip_distances():
    boxes = {"train": np.array([[0, 0, 10, 10], [100, 0, 110, 10]]),
             "val": np.array([[30, 0, 40, 10]]), "test": np.zeros((0, 4))}
    distances = nearest_other(boxes)
    assert distances["train"] == 20 and distances["val"] == 20
    assert distances["test"] == math.inf


@pytest.mark.parametrize("kwargs, message", [
    ({"block_size": 0}, "block_size"),
    ({"block_size": 1000, "buffer": -1}, "buffer"),
    ({"block_size": 1000, "splits": {"train": 0}}, "positive"),
    ({"block_size": 1000, "splits": {}}, "splits"),
    ({"block_size": 0.0001}, "units"),
    ({"block_size": 50_000}, "smaller block_size"),
    ({"block_size": 1000, "buffer": 5000}, "buffer"),
])
def test_bad_options_are_refused(kwargs, message):
    area = shapely.box(*ORIGIN, ORIGIN[0] + 10_000, ORIGIN[1] + 10_000)
    with pytest.raises(ConfigurationError, match=message):
        block_split(area, **kwargs)

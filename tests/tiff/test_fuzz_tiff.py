"""Fuzzing the TIFF layer with hypothesis: mutated headers, tile tables and tile bytes
only ever raise rasteret's typed errors, quickly, and never allocate absurdly."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

rasterio = pytest.importorskip("rasterio")

from rasteret.errors import RasteretError  # noqa: E402
from rasteret.tiff import ByteSource, MissingBytes, decode_chunk, parse_header  # noqa: E402
from rasteret.tiff.codecs import check_supported  # noqa: E402

FUZZ = settings(max_examples=1500, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _tiff_bytes(**profile) -> bytes:
    data = (np.arange(300 * 260, dtype="uint16").reshape(1, 300, 260) % 977)
    base = dict(driver="GTiff", width=260, height=300, count=1, dtype="uint16",
                crs="EPSG:32633", transform=rasterio.transform.from_origin(5e5, 4e6, 10, 10),
                tiled=True, blockxsize=128, blockysize=128, compress="deflate", predictor=2,
                nodata=0)
    base.update(profile)
    with rasterio.MemoryFile() as memory:
        with memory.open(**base) as dst:
            dst.write(data.astype(base["dtype"]))
            dst.build_overviews([2], rasterio.enums.Resampling.nearest)
        return memory.read()


SAMPLES = {
    "deflate": _tiff_bytes(),
    "lzw-bigendian": _tiff_bytes(compress="lzw", endianness="BIG"),
    "bigtiff-zstd": _tiff_bytes(compress="zstd", BIGTIFF="YES"),
    "stripped": _tiff_bytes(tiled=False, blockysize=17, compress="packbits", predictor=1),
}


def _source(data: bytes) -> ByteSource:
    source = ByteSource(size=len(data))
    source.add(0, data)
    return source


def _parse_and_decode(data: bytes) -> None:
    """Parse, then decode every tile: only typed errors (or MissingBytes) may escape."""
    source = _source(data)
    try:
        header = parse_header(source, url="fuzz.tif")
    except MissingBytes as missing:
        for start, end in missing.ranges:
            assert 0 <= start < end
        return
    except RasteretError:
        return
    for level in header.levels:
        try:
            check_supported(level, "fuzz.tif")
        except RasteretError:
            continue
        planes = level.samples_per_pixel if level.planar_config == 2 else 1
        for index in range(min(level.chunks_per_plane * planes, 64)):
            start, length = int(level.offsets[index]), int(level.byte_counts[index])
            if not length or start + length > len(data):
                continue
            row = (index % level.chunks_per_plane) // level.chunks_across * level.chunk_height
            rows = level.chunk_height if level.tiled else min(level.chunk_height,
                                                              level.height - row)
            try:
                decode_chunk(data[start : start + length], level, header.byteorder, rows)
            except RasteretError:
                pass


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_samples_parse_cleanly(name):
    header = parse_header(_source(SAMPLES[name]), url=name)
    assert header.levels[0].width == 260 and len(header.levels) == 2


@FUZZ
@given(name=st.sampled_from(sorted(SAMPLES)), data=st.data())
def test_mutated_headers_raise_only_typed_errors(name, data):
    original = bytearray(SAMPLES[name])
    # Mutate within the header area (IFDs and tag values) where parsing decisions live.
    span = min(len(original), 4096)
    flips = data.draw(st.lists(st.tuples(st.integers(0, span - 1), st.integers(0, 255)),
                               min_size=1, max_size=12))
    for position, value in flips:
        original[position] = value
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(original))))
    mutated = bytes(original[:cut] if cut is not None else original)
    _parse_and_decode(mutated)


@FUZZ
@given(name=st.sampled_from(sorted(SAMPLES)), data=st.data())
def test_random_tile_bytes_raise_only_typed_errors(name, data):
    raw = SAMPLES[name]
    header = parse_header(_source(raw), url=name)
    level = header.levels[0]
    noise = data.draw(st.binary(min_size=0, max_size=4096))
    rows = level.chunk_height if level.tiled else min(level.chunk_height, level.height)
    try:
        decode_chunk(noise, level, header.byteorder, rows, "fuzz.tif")
    except RasteretError:
        pass


@FUZZ
@given(
    width=st.integers(0, 2**32 - 1),
    height=st.integers(0, 2**32 - 1),
    tile=st.integers(0, 2**16 - 1),
    offsets=st.lists(st.integers(0, 2**32 - 1), max_size=8),
)
def test_hostile_tile_tables_are_refused_without_allocating(width, height, tile, offsets):
    import struct

    # A minimal little-endian TIFF whose dimensions and tile table are hostile.
    entries = [
        (256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 16), (259, 3, 1, 1),
        (277, 3, 1, 1), (322, 3, 1, tile), (323, 3, 1, tile),
    ]
    count = max(len(offsets), 1)
    values_at = 8 + 2 + 12 * (len(entries) + 2) + 4
    entries.append((324, 4, count, values_at if count > 1 else (offsets or [0])[0]))
    entries.append((325, 4, count, values_at + 4 * count if count > 1 else 100))
    out = io.BytesIO()
    out.write(b"II" + struct.pack("<HI", 42, 8))
    out.write(struct.pack("<H", len(entries)))
    for tag, kind, n, value in sorted(entries):
        out.write(struct.pack("<HHII", tag, kind, n, value))
    out.write(struct.pack("<I", 0))
    if count > 1:
        out.write(struct.pack(f"<{count}I", *offsets))
        out.write(struct.pack(f"<{count}I", *([100] * count)))
    _parse_and_decode(out.getvalue())

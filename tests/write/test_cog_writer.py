"""CogWriter: tiled Cloud-Optimized GeoTIFFs written tile by tile, checked against
GDAL (rasterio), tifffile, GDAL's COG validation logic and rasteret's own reader."""

from __future__ import annotations

import json
import os
import tracemalloc
import warnings

import numpy as np
import pyarrow as pa
import pytest
import rasterio
from affine import Affine

import rasteret
from rasteret.errors import ConfigurationError, WriteConflictError
from rasteret.read.cog import HEADER_BYTES
from rasteret.tiff import ByteSource, parse_header
from rasteret.write import CLASS_NAMES_ITEM, CogWriter, finished_rows
from testbed.cogcheck import validate_cog

TRANSFORM = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_100_000.0)


def smooth(shape, dtype, seed=0):
    """Compressible pixels: a gradient plus noise."""
    rng = np.random.default_rng(seed)
    *_, rows, cols = shape
    yy, xx = np.mgrid[0:rows, 0:cols]
    values = (yy + 2 * xx) % 3000 + rng.integers(0, 50, shape)
    return values.astype(dtype)


def write_all(path, image, *, order=None, **options):
    """Write ``image`` ``(bands, h, w)`` tile by tile, in ``order`` (default row by row)."""
    bands, height, width = image.shape
    with CogWriter(path, width=width, height=height, crs=32633, transform=TRANSFORM,
                   dtype=image.dtype, bands=bands, **options) as writer:
        tiles = writer.tiles() if order is None else order(writer.tiles())
        for row, col in tiles:
            r, c, h, w = writer.tile_window(row, col)
            writer.write_tile(row, col, image[:, r:r + h, c:c + w])
    return writer


def no_leftovers(folder):
    """Only published files remain: no temporary or hidden file."""
    return [name for name in os.listdir(folder) if name.startswith(".")] == []


def test_gdal_reads_the_same_pixels_grid_and_overviews(tmp_path):
    image = smooth((2, 1100, 1300), np.uint16)
    image[:, :40, :40] = 0  # some nodata
    path = tmp_path / "map.tif"
    rng = np.random.default_rng(1)
    writer = write_all(path, image, order=lambda tiles: [tiles[i] for i in
                                                         rng.permutation(len(tiles))],
                       nodata=0, tile_size=256, descriptions=["a", "b"])
    assert writer.overviews == 3  # 1300 -> 650 -> 325 -> 163 <= 256
    with rasterio.open(path) as src:
        np.testing.assert_array_equal(src.read(), image)
        assert src.crs.to_epsg() == 32633
        assert src.transform == TRANSFORM
        assert src.nodata == 0
        assert src.overviews(1) == [2, 4, 8]
        assert src.block_shapes == [(256, 256)] * 2
        assert src.compression.name == "deflate"
        assert src.descriptions == ("a", "b")
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
    assert validate_cog(path) == []
    assert no_leftovers(tmp_path)


def reference_overview(image, nodata):
    """2x mean of the valid pixels, as numpy does it (odd edges: fewer pixels)."""
    rows, cols = -(-image.shape[0] // 2), -(-image.shape[1] // 2)
    padded = np.full((rows * 2, cols * 2), np.nan)
    padded[: image.shape[0], : image.shape[1]] = image
    if nodata is not None and not np.isnan(nodata):
        padded[padded == nodata] = np.nan
    quads = padded.reshape(rows, 2, cols, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks: NaN
        return np.nanmean(quads, axis=(1, 3))


def test_float_zstd_with_nan_nodata_and_mean_overviews(tmp_path):
    image = smooth((1, 777, 901), np.float32) / 7
    image[0, 100:300, 200:500] = np.nan
    path = tmp_path / "values.tif"
    write_all(path, image, nodata=float("nan"), tile_size=256, compression="zstd")
    with rasterio.open(path) as src:
        np.testing.assert_array_equal(src.read(1), image[0])
        assert np.isnan(src.nodata)
        assert src.compression.name == "zstd"
        assert src.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "3"
    with rasterio.open(path, overview_level=0) as half:
        expected = reference_overview(image[0].astype(np.float64), np.nan)
        np.testing.assert_allclose(half.read(1), expected.astype(np.float32), rtol=1e-6)
    assert validate_cog(path) == []


def test_classes_keep_their_colours_names_and_nearest_overviews(tmp_path):
    classes = (smooth((1, 600, 700), np.uint16) // 800).astype(np.uint8)
    colors = {0: (255, 0, 0), 1: (0, 255, 0), 2: (0, 0, 255), 3: (9, 9, 9, 255)}
    path = tmp_path / "classes.tif"
    write_all(path, classes, tile_size=256, colors=colors,
              class_names=["water", "grass", "forest", "urban"])
    with rasterio.open(path) as src:
        np.testing.assert_array_equal(src.read(1), classes[0])
        assert src.colorinterp[0].name == "palette"
        assert src.colormap(1)[2] == (0, 0, 255, 255)
        assert json.loads(src.tags()[CLASS_NAMES_ITEM]) == ["water", "grass", "forest", "urban"]
    with rasterio.open(path, overview_level=0) as half:
        np.testing.assert_array_equal(half.read(1), classes[0, ::2, ::2])  # no nodata
    assert validate_cog(path) == []


def test_rasteret_parses_the_header_in_one_read_and_reads_the_pixels(tmp_path):
    image = smooth((1, 1500, 1200), np.uint16)
    path = tmp_path / "B01.tif"
    write_all(path, image, nodata=0, tile_size=256)
    data = path.read_bytes()
    header = parse_header(ByteSource(size=len(data), _starts=[0],
                                     _chunks=[data[:HEADER_BYTES]]), url=str(path))
    assert [level.width for level in header.levels] == [1200, 600, 300, 150]
    assert header.geo.epsg == 32633 and header.geo.nodata == 0
    assert header.geo.transform == TRANSFORM
    table = pa.Table.from_pylist([{"id": "map", "datetime": None, "B01": str(path)}])
    collection = rasteret.build_from_table(table, name="written", href_columns=["B01"],
                                           workspace_dir=tmp_path / "ws", progress=False)
    bbox = (500_000.0 + 2560, 4_100_000.0 - 10_000, 500_000.0 + 9_000, 4_100_000.0 - 1_230)
    pixels = collection.get_numpy(bbox, ["B01"], geometry_crs=32633, progress=False)
    np.testing.assert_array_equal(pixels[0, 0], image[0, 123:1000, 256:900])


def test_tiles_never_written_are_nodata(tmp_path):
    path = tmp_path / "sparse.tif"
    with CogWriter(path, width=600, height=600, crs=32633, transform=TRANSFORM, dtype="int16",
                   nodata=-1, tile_size=256) as writer:
        writer.write_tile(1, 1, np.full((256, 256), 7, np.int16))
    with rasterio.open(path) as src:
        data = src.read(1)
    assert (data[256:512, 256:512] == 7).all()
    assert (data[:256] == -1).all() and (data[512:] == -1).all()
    assert validate_cog(path) == []


def test_bigtiff_layout(tmp_path, monkeypatch):
    monkeypatch.setattr("rasteret.tiff.layout.CLASSIC_LIMIT", 0)  # as if it were 4 GB
    image = smooth((1, 700, 600), np.uint16)
    path = tmp_path / "big.tif"
    write_all(path, image, tile_size=256)
    assert path.read_bytes()[2:4] == b"+\x00"  # version 43
    with rasterio.open(path) as src:
        np.testing.assert_array_equal(src.read(1), image[0])
    assert validate_cog(path) == []


def test_bad_tiles_get_typed_errors_and_publish_nothing(tmp_path):
    path = tmp_path / "bad.tif"
    writer = CogWriter(path, width=600, height=300, crs=32633, transform=TRANSFORM,
                       dtype="uint8", tile_size=256)
    with pytest.raises(ConfigurationError, match=r"shape \(1, 100, 100\)"):
        writer.write_tile(0, 0, np.zeros((100, 100), np.uint8))
    with pytest.raises(ConfigurationError, match="outside"):
        writer.write_tile(2, 0, np.zeros((256, 256), np.uint8))
    with pytest.raises(ConfigurationError, match="float64"):
        writer.write_tile(0, 0, np.zeros((256, 256)))
    writer.write_tile(1, 2, np.zeros((44, 88), np.uint8))  # the corner, cut at the edge
    with pytest.raises(ConfigurationError, match="already written"):
        writer.write_tile(1, 2, np.zeros((256, 256), np.uint8))
    writer.abort()
    with pytest.raises(ConfigurationError, match="closed"):
        writer.write_tile(0, 0, np.zeros((256, 256), np.uint8))
    with pytest.raises(RuntimeError), CogWriter(path, width=600, height=300, crs=32633,
                                                transform=TRANSFORM, dtype="uint8") as w:
        w.write_tile(0, 0, np.zeros((300, 512), np.uint8))
        raise RuntimeError("the model failed")
    assert os.listdir(tmp_path) == []
    with pytest.raises(ConfigurationError, match="tile_size"):
        CogWriter(path, width=10, height=10, crs=32633, transform=TRANSFORM, dtype="u1",
                  tile_size=100)
    with pytest.raises(ConfigurationError, match="nodata"):
        CogWriter(path, width=10, height=10, crs=32633, transform=TRANSFORM, dtype="u1",
                  nodata=-1)


def test_an_existing_output_is_never_replaced(tmp_path):
    path = tmp_path / "taken.tif"
    path.write_bytes(b"another run")
    with pytest.raises(WriteConflictError, match="overwrite=True"):
        CogWriter(path, width=10, height=10, crs=32633, transform=TRANSFORM, dtype="u1")
    path.unlink()
    # Two runs racing: the one that publishes second loses and leaves no file.
    first = CogWriter(path, width=300, height=10, crs=32633, transform=TRANSFORM, dtype="u1",
                      tile_size=256)
    write_all(path, np.ones((1, 10, 300), np.uint8), tile_size=256)
    with pytest.raises(WriteConflictError):
        first.close()
    with rasterio.open(path) as src:
        assert (src.read(1) == 1).all()
    assert no_leftovers(tmp_path)
    write_all(path, np.full((1, 10, 300), 2, np.uint8), tile_size=256, overwrite=True)
    with rasterio.open(path) as src:
        assert (src.read(1) == 2).all()


def peak_of_writing(tmp_path, tiles_per_side):
    """Peak traced memory and peak tiles held while writing a map tile by tile."""
    tile = np.arange(256 * 256, dtype=np.uint16).reshape(256, 256)
    size = 256 * tiles_per_side
    tracemalloc.start()
    try:
        with CogWriter(tmp_path / f"map{size}.tif", width=size, height=size, crs=32633,
                       transform=TRANSFORM, dtype="uint16", tile_size=256) as writer:
            for row, col in writer.tiles():
                writer.write_tile(row, col, tile + np.uint16(row + col))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, writer.count.peak


def test_memory_does_not_grow_with_the_area(tmp_path):
    small_peak, small_tiles = peak_of_writing(tmp_path, 4)
    large_peak, large_tiles = peak_of_writing(tmp_path, 32)  # 64 times the area: 128 MB
    assert small_tiles == large_tiles <= 6
    tile_bytes = 256 * 256 * 2
    # The spool's index (two numbers a tile) grows; pixels do not.
    assert large_peak < small_peak + 40 * tile_bytes
    assert large_peak < 64 * tile_bytes
    assert validate_cog(tmp_path / "map8192.tif") == []


COG_BUCKET = "cog-bucket"


@pytest.fixture(scope="module")
def s3(moto_server):
    """The session's moto with a bucket, and a backend reaching it."""
    moto_server.create_bucket(COG_BUCKET)
    backend = moto_server.backend()
    return moto_server, backend


@pytest.mark.parametrize("size", [300, 3000], ids=["one-put", "multipart"])
def test_publishes_to_an_object_store_once(s3, tmp_path, size, monkeypatch):
    moto, backend = s3
    monkeypatch.setattr("rasteret.io.objects.MULTIPART_THRESHOLD", 5 * 1024 * 1024)
    image = np.random.default_rng(2).integers(0, 60_000, (1, size, size)).astype(np.uint16)
    url = f"s3://{COG_BUCKET}/maps/{size}.tif"
    write_all(url, image, tile_size=256, backend=backend, spool_dir=tmp_path)
    local = tmp_path / "copy.tif"
    local.write_bytes(moto.boto3_client().get_object(Bucket=COG_BUCKET, Key=f"maps/{size}.tif")
                      ["Body"].read())
    assert (local.stat().st_size > 5 * 1024 * 1024) == (size == 3000)
    with rasterio.open(local) as src:
        np.testing.assert_array_equal(src.read(), image)
    assert validate_cog(local) == []
    with pytest.raises(WriteConflictError):  # found at once (a HEAD request)
        write_all(url, image[:, :10, :10], tile_size=256, backend=backend, spool_dir=tmp_path)
    # A run that publishes after another one created the object meanwhile loses.
    late = f"s3://{COG_BUCKET}/maps/late-{size}.tif"
    writer = CogWriter(late, width=size, height=size, crs=32633, transform=TRANSFORM,
                       dtype="uint16", tile_size=256, backend=backend, spool_dir=tmp_path)
    moto.boto3_client().put_object(Bucket=COG_BUCKET, Key=f"maps/late-{size}.tif",
                                   Body=b"the other run")
    with pytest.raises(WriteConflictError):
        writer.close()
    assert moto.boto3_client().get_object(Bucket=COG_BUCKET, Key=f"maps/late-{size}.tif")[
        "Body"].read() == b"the other run"
    assert sorted(os.listdir(tmp_path)) == ["copy.tif"]  # no spool or staged file left


def test_a_killed_run_resumes_from_its_journal_to_the_same_bytes(tmp_path):
    image = smooth((2, 900, 700), np.uint16)
    options = dict(width=700, height=900, crs=32633, transform=TRANSFORM, dtype="uint16",
                   bands=2, nodata=0, tile_size=256)
    whole = tmp_path / "whole.tif"
    write_all(whole, image, nodata=0, tile_size=256)
    out, journal = tmp_path / "resumed.tif", tmp_path / "journal"

    def write(writer, tiles):
        for row, col in tiles:
            r, c, h, w = writer.tile_window(row, col)
            writer.write_tile(row, col, image[:, r:r + h, c:c + w])

    first = CogWriter(out, journal=journal, **options)
    write(first, first.tiles()[:7])
    first.spool.file.close()  # killed: no close, no abort
    first.spool.records.close()
    # The kill tore the last record in half.
    with open(journal / "journal.bin", "r+b") as records:
        records.truncate(records.seek(0, 2) - 20)
    assert finished_rows(journal) == 2
    second = CogWriter(out, journal=journal, **options)
    done = [tile for tile in second.tiles() if second.written(*tile)]
    assert done == second.tiles()[:6]  # the torn seventh is written again
    write(second, [tile for tile in second.tiles() if not second.written(*tile)])
    second.close()
    assert out.read_bytes() == whole.read_bytes()
    assert not journal.exists()
    with pytest.raises(WriteConflictError, match="another run"):
        CogWriter(tmp_path / "other.tif", journal=tmp_path / "j2", **options).abort()
        CogWriter(tmp_path / "other.tif", journal=tmp_path / "j2",
                  **{**options, "nodata": 1})


def test_a_multipart_publish_loses_a_race_after_its_head_request(s3, tmp_path, monkeypatch):
    """The other run publishes after this one's HEAD request found nothing: the store
    still refuses this one's large object (uploaded in parts to a staging object, then
    copied only if the target is absent, which S3 completes with If-None-Match)."""
    from rasteret.io import objects

    moto, backend = s3
    size = 3000
    monkeypatch.setattr("rasteret.io.objects.MULTIPART_THRESHOLD", 5 * 1024 * 1024)
    image = np.random.default_rng(2).integers(0, 60_000, (1, size, size)).astype(np.uint16)
    raced = f"s3://{COG_BUCKET}/maps/raced-{size}.tif"
    writer = CogWriter(raced, width=size, height=size, crs=32633, transform=TRANSFORM,
                       dtype="uint16", tile_size=256, backend=backend, spool_dir=tmp_path)
    for row, col in writer.tiles():
        r, c, h, w = writer.tile_window(row, col)
        writer.write_tile(row, col, image[:, r:r + h, c:c + w])
    original = objects.get_object_meta_async

    async def head_then_race(backend_, url):
        try:
            return await original(backend_, url)
        finally:  # the other run publishes right after the HEAD request
            moto.boto3_client().put_object(Bucket=COG_BUCKET, Key=f"maps/raced-{size}.tif",
                                           Body=b"the racing run")

    monkeypatch.setattr(objects, "get_object_meta_async", head_then_race)
    with pytest.raises(WriteConflictError):
        writer.close()
    assert moto.boto3_client().get_object(Bucket=COG_BUCKET, Key=f"maps/raced-{size}.tif")[
        "Body"].read() == b"the racing run"
    listed = moto.boto3_client().list_objects_v2(Bucket=COG_BUCKET, Prefix="maps/raced")
    assert [o["Key"] for o in listed["Contents"]] == [f"maps/raced-{size}.tif"]  # no staging

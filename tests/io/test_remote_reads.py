"""Reads over HTTP (nginx) and S3 (moto): same pixels as local files, one request per
header, only the covering tiles per window, typed errors for bad objects."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")

import rasteret  # noqa: E402
from rasteret.errors import CorruptTiffError, ObjectNotFoundError, RasteretError  # noqa: E402
from rasteret.read.plan import Window, covering_chunks  # noqa: E402

BUCKET = "remote-reads"
FAST_RETRY = {"max_retries": 0, "retry_timeout": dt.timedelta(seconds=2)}


def write_cog(path: Path, *, size=(900, 1100), block=256, count=2, mask=False, **extra) -> Path:
    rows, cols = size
    yy, xx = np.mgrid[0:rows, 0:cols]
    data = np.stack([(np.sin(xx / 30 + b) * 2000 + yy + 3000) for b in range(count)])
    profile = dict(driver="COG", width=cols, height=rows, count=count, dtype="uint16",
                   crs="EPSG:32633", transform=rasterio.transform.from_origin(5e5, 4e6, 10, 10),
                   compress="deflate", predictor=2, blocksize=block, nodata=0, **extra)
    env = {"GDAL_TIFF_INTERNAL_MASK": "YES"} if mask else {}
    with rasterio.Env(**env), rasterio.open(path, "w", **profile) as dst:
        dst.write(data.astype("uint16"))
        if mask:
            dst.write_mask(np.full((rows, cols), 255, np.uint8))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory, nginx_server, moto_server):
    folder = tmp_path_factory.mktemp("remote")
    paths = {
        "cog": write_cog(folder / "cog.tif", mask=True),
        "small_tiles": write_cog(folder / "small_tiles.tif", size=(3000, 3000), block=16,
                                 count=1, overviews="NONE"),
    }
    served = Path(nginx_server.root) / "remote"
    served.mkdir(exist_ok=True)
    moto_server.create_bucket(BUCKET)
    for path in paths.values():
        shutil.copy(path, served / path.name)
        moto_server.upload(BUCKET, path.name, path)
    not_tiff = served / "not-a-tiff.tif"
    not_tiff.write_bytes(b"GIF89a" + bytes(5000))
    data = paths["cog"].read_bytes()
    (served / "truncated.tif").write_bytes(data[: len(data) // 2])
    return paths


@pytest.fixture(scope="module")
def s3_backend(moto_server):
    return rasteret.create_backend(
        default_s3_config={"endpoint": moto_server.endpoint,
                           "aws_access_key_id": moto_server.access_key_id,
                           "aws_secret_access_key": moto_server.secret_access_key,
                           "region": moto_server.region},
        retry_config=FAST_RETRY,
    )


def test_same_pixels_from_file_http_and_s3(files, nginx_server, s3_backend):
    local = rasteret.open_cog(files["cog"])
    http = rasteret.open_cog(f"{nginx_server.url}/remote/cog.tif")
    s3 = rasteret.open_cog(f"s3://{BUCKET}/cog.tif", backend=s3_backend)
    for window in [(0, 0, 1100, 900), (250, 250, 300, 20), (-30, 880, 100, 100)]:
        expected = local.read(window)
        np.testing.assert_array_equal(http.read(window), expected)
        np.testing.assert_array_equal(s3.read(window), expected)
    for level in range(len(local.overviews)):
        np.testing.assert_array_equal(s3.read(overview=level), local.read(overview=level))
    with rasterio.open(files["cog"]) as src:
        np.testing.assert_array_equal(http.read(), src.read())


def test_gdal_cog_header_costs_exactly_one_request(files, nginx_server):
    nginx_server.clear_log()
    stats = rasteret.FetchStats()
    cog = rasteret.open_cog(f"{nginx_server.url}/remote/cog.tif", stats=stats)
    assert cog.overviews and cog.has_mask
    (record,) = nginx_server.requests()
    assert record.method == "GET" and record.range == "bytes=0-65535"
    assert stats.requests == 1


def test_header_beyond_the_first_request_costs_one_more(files, nginx_server):
    nginx_server.clear_log()
    cog = rasteret.open_cog(f"{nginx_server.url}/remote/small_tiles.tif")
    assert len(cog.header.levels[0].offsets) == 188 * 188
    records = nginx_server.requests()
    assert len(records) == 2 and all(r.method == "GET" for r in records)
    nginx_server.clear_log()
    rasteret.open_cog(f"{nginx_server.url}/remote/cog.tif", header_bytes=1024)
    assert len(nginx_server.requests()) == 2


def test_window_requests_only_the_covering_tiles_merged(files, nginx_server):
    url = f"{nginx_server.url}/remote/cog.tif"
    cog = rasteret.open_cog(url)
    level = cog.header.levels[0]
    window = (200, 300, 400, 150)  # tile columns 0-2, tile rows 1-1 of 256-px tiles
    chunks = covering_chunks(level, Window(*window), (0, 1))
    expected = {(c.start, c.start + c.length) for c in chunks}
    nginx_server.clear_log()
    cog.read(window)
    records = nginx_server.requests()
    fetched = set()
    for record in records:
        start, end = (int(v) for v in record.range.removeprefix("bytes=").split("-"))
        fetched.add((start, end + 1))
    # Neighbouring tiles are merged into one request; the only extra bytes are the
    # small gaps GDAL leaves between them (tile leaders, interleaved mask tiles).
    def covered(ranges):
        return {b for s, e in ranges for b in range(s, e)}

    assert covered(expected) <= covered(fetched)
    assert len(records) == 1 < len(expected)
    extra = sum(r.body_bytes for r in records) - sum(e - s for s, e in expected)
    assert 0 <= extra <= 1024 * (len(expected) - 1)


def test_window_outside_the_image_makes_no_request(files, nginx_server):
    cog = rasteret.open_cog(f"{nginx_server.url}/remote/cog.tif")
    nginx_server.clear_log()
    pixels = cog.read((5000, 5000, 64, 64))
    assert not pixels.any() and nginx_server.requests() == []


def test_missing_objects_are_file_not_found_errors(files, nginx_server, s3_backend, tmp_path):
    for url, backend in [
        (str(tmp_path / "missing.tif"), None),
        (f"{nginx_server.url}/remote/missing.tif", None),
        (f"s3://{BUCKET}/missing.tif", s3_backend),
    ]:
        with pytest.raises(ObjectNotFoundError) as caught:
            rasteret.open_cog(url, backend=backend)
        assert isinstance(caught.value, FileNotFoundError)
        assert "missing.tif" in str(caught.value)


def test_not_a_tiff_and_truncated_files(files, nginx_server):
    with pytest.raises(CorruptTiffError, match="not a TIFF"):
        rasteret.open_cog(f"{nginx_server.url}/remote/not-a-tiff.tif")
    cog = rasteret.open_cog(f"{nginx_server.url}/remote/truncated.tif")
    with pytest.raises(RasteretError):
        cog.read()

"""One of each: one atomic writer, one option check, one compression table, one date
parser, each TIFF tag constant defined once, and no unused names left behind."""

from __future__ import annotations

import ast
import datetime as dt
from pathlib import Path

import pytest

import rasteret
from rasteret.atomic import write_atomic
from rasteret.dates import parse_date_range, parse_datetime
from rasteret.errors import ConfigurationError
from rasteret.options import ON_ERROR, check_option

PACKAGE = Path(rasteret.__file__).parent


def test_write_atomic_publishes_whole_files_only(tmp_path):
    target = tmp_path / "part.bin"
    assert write_atomic(target, lambda tmp: tmp.write_bytes(b"old")) == target

    def dies_half_way(tmp: Path) -> None:
        tmp.write_bytes(b"ne")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, dies_half_way)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["part.bin"]  # no temporary left


def test_no_other_temp_then_rename_writer():
    writers = [path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py")
               if ".tmp" in path.read_text()]
    assert writers == ["atomic.py"]


def test_check_option_names_the_option_the_value_and_the_choices():
    check_option("on_error", "skip", ON_ERROR)
    with pytest.raises(ConfigurationError,
                       match=r"^on_error must be one of 'raise', 'skip'; got 'ignore'$"):
        check_option("on_error", "ignore", ON_ERROR)


def test_builds_check_on_error_with_the_shared_check():
    from rasteret.ingest import BuildOptions, build_collection

    with pytest.raises(ConfigurationError, match="on_error must be one of 'raise', 'skip'"):
        build_collection([], manifest={}, options=BuildOptions(name="x", on_error="ignore"))


def test_one_compression_table_names_and_decodes_every_code():
    from rasteret.tiff import codecs

    assert codecs.compression_name(50000) == codecs.compression_name(34926) == "zstd"
    assert codecs.compression_name(8) == codecs.compression_name(32946) == "deflate"
    assert codecs.compression_name(99) == "99"
    for code, known in codecs.COMPRESSIONS.items():
        assert known.to_pixels or callable(known.decode), code
    assert {c for c, k in codecs.COMPRESSIONS.items() if k.to_pixels} == {
        7, 34712, 34887, 34927, 50001, 50002}
    import rasteret.tiff.header as header

    assert not hasattr(header, "COMPRESSION_NAMES")


def test_one_date_parser():
    assert parse_datetime("2024-05-01T10:00:00Z") == dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC)
    assert parse_datetime("2024-05-01", end=True) == dt.datetime(
        2024, 5, 1, 23, 59, 59, 999999, tzinfo=dt.UTC)
    assert parse_datetime(dt.date(2024, 5, 1)) == dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    assert parse_datetime(None) is None
    import rasteret.ingest.records as records

    assert not hasattr(records, "parse_datetime")


@pytest.mark.parametrize("date_range", [("2024-13-01", "2024-12-31"), ("May", "June"),
                                        (None, "2024-06-30")])
def test_unreadable_date_ranges_are_configuration_errors(date_range):
    with pytest.raises(ConfigurationError, match="date_range"):
        parse_date_range(date_range)


def _module_constants(path: Path) -> dict[str, object]:
    tree = ast.parse(path.read_text())
    return {target.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
            for target in node.targets if isinstance(target, ast.Name)
            and isinstance(node.value, ast.Constant)}


def test_each_tiff_tag_is_defined_once():
    seen: dict[str, list[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for name in _module_constants(path):
            if name.lstrip("_").startswith("TAG_"):
                seen.setdefault(name.lstrip("_"), []).append(path.name)
    assert {name: where for name, where in seen.items() if len(where) > 1} == {}
    assert "TAG_GDAL_NODATA" in seen and "TAG_COLORMAP" not in seen


def test_unused_names_are_gone():
    import rasteret.read
    import rasteret.read.cog
    import rasteret.tiff.bytesource

    assert not hasattr(rasteret.read.cog, "gather_open")
    assert "gather_open" not in rasteret.read.__all__
    assert not hasattr(rasteret.tiff.bytesource.ByteSource, "known_end")
    assert "STAGES" not in (PACKAGE / "torch" / "datamodule.py").read_text()

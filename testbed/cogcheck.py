"""The checks of GDAL's ``validate_cloud_optimized_geotiff.py``, on the file's bytes.

GDAL's script needs GDAL's Python bindings (osgeo), which the rasterio wheel does not
ship; this is its logic over tifffile's reading of the IFDs, plus two checks the
script implies: every IFD before any tile data, and each image's tiles contiguous
and in tile table order. :func:`validate_cog` returns the errors (none: a COG).
"""

from __future__ import annotations

import struct
from pathlib import Path

import tifffile

#: Larger images must be tiled and should have overviews (GDAL's threshold).
SMALL = 512


def _ghost(head: bytes, first_ifd: int, header: int) -> tuple[dict[str, str], list[str]]:
    """GDAL's structural metadata, and the errors of the main IFD's place."""
    key = b"GDAL_STRUCTURAL_METADATA_SIZE="
    if first_ifd == header:
        return {}, []
    if not head[header:].startswith(key):
        return {}, [f"the main IFD is at {first_ifd}, not {header}, and there is no "
                    "GDAL structural metadata before it"]
    size = int(head[header + len(key): header + len(key) + 6])
    start = head.index(b"\n", header) + 1
    body = head[start:start + size].decode("ascii")
    items = dict(line.split("=", 1) for line in body.splitlines() if "=" in line)
    errors = []
    if first_ifd > start + size + 1:
        errors.append(f"the main IFD is at {first_ifd}, after a gap past the structural "
                      f"metadata (ending at {start + size})")
    if items.get("LAYOUT") != "IFDS_BEFORE_DATA":
        errors.append(f"the structural metadata says LAYOUT={items.get('LAYOUT')}")
    return items, errors


def _images(tif: tifffile.TiffFile) -> tuple[list[tifffile.TiffPage], list[str]]:
    pages = [p for p in tif.pages if isinstance(p, tifffile.TiffPage)]
    images = [p for p in pages if not (p.subfiletype & 4)]  # no masks
    errors = []
    main = images[0]
    if max(main.imagewidth, main.imagelength) > SMALL:
        if not main.is_tiled:
            errors.append("the image is larger than 512 px but not tiled")
        if len(images) == 1:
            errors.append("the image is larger than 512 px but has no overviews")
    for before, after in zip(images, images[1:]):
        if not after.is_tiled:
            errors.append(f"overview {after.imagewidth}x{after.imagelength} is not tiled")
        if (after.imagewidth >= before.imagewidth or after.imagelength > before.imagelength):
            errors.append("the overviews are not by decreasing size")
        if after.offset <= before.offset:
            errors.append(f"the IFD at {after.offset} comes before the previous one "
                          f"({before.offset})")
    return images, errors


def _tiles(path: Path, images: list[tifffile.TiffPage], ghost: dict[str, str]) -> list[str]:
    errors = []
    last_ifd = max(page.offset for page in images)
    firsts = [min(o for o in page.dataoffsets if o) for page in images]
    if firsts[-1] < last_ifd:
        errors.append("the first tile of the smallest overview comes before its IFD")
    for index in range(len(images) - 1):
        if firsts[index] < firsts[index + 1]:
            errors.append(f"the tiles of image {index} come before those of image {index + 1}"
                          " (the smaller overview's tiles must come first)")
    for index, page in enumerate(images):
        offsets, counts = page.dataoffsets, page.databytecounts
        if any(b <= a for a, b in zip(offsets, offsets[1:])):
            errors.append(f"the tile offsets of image {index} do not increase")
        if index + 1 < len(images):
            end = max(o + c for o, c in zip(offsets, counts))
            smaller_end = max(o + c for o, c in zip(images[index + 1].dataoffsets,
                                                     images[index + 1].databytecounts))
            if smaller_end > min(offsets):
                errors.append(f"the tiles of image {index + 1} reach past the start of image "
                              f"{index}'s ({smaller_end} > {min(offsets)}, ending {end})")
    if ghost.get("BLOCK_LEADER") == "SIZE_AS_UINT4":
        errors += _leaders(path, images, ghost.get("BLOCK_TRAILER") == "LAST_4_BYTES_REPEATED")
    return errors


def _leaders(path: Path, images: list[tifffile.TiffPage], trailer: bool) -> list[str]:
    """GDAL's full check: each tile's size before it, its last 4 bytes after it."""
    with open(path, "rb") as file:
        for index, page in enumerate(images):
            for offset, count in zip(page.dataoffsets, page.databytecounts):
                file.seek(offset - 4)
                (leader,) = struct.unpack("<I", file.read(4))
                data = file.read(count)
                if leader != count:
                    return [f"a tile of image {index} at {offset} has leader {leader}, "
                            f"not its size {count}"]
                if trailer and file.read(4) != data[-4:]:
                    return [f"a tile of image {index} at {offset} lacks its trailer"]
    return []


def validate_cog(path: str | Path) -> list[str]:
    """The reasons ``path`` is not a Cloud-Optimized GeoTIFF (none when it is one).

    The checks of GDAL's validate_cloud_optimized_geotiff.py (``full_check=True``):
    tiled when larger than 512 px, overviews present then, the main IFD at the start
    (after GDAL's structural metadata when present), IFDs in order of decreasing
    size, the tile data after every IFD, the smallest overview's tiles first and the
    full resolution's last, tile leaders and trailers as the metadata promises; plus
    increasing tile offsets within each image.
    """
    path = Path(path)
    head = path.read_bytes()[:4096]
    with tifffile.TiffFile(path) as tif:
        header = 16 if tif.is_bigtiff else 8
        images, errors = _images(tif)
        ghost, more = _ghost(head, images[0].offset, header)
        errors += more
        errors += _tiles(path, images, ghost)
    return errors

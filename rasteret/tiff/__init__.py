"""TIFF/GeoTIFF format: header parsing and chunk decoding from bytes (no I/O)."""

from rasteret.tiff.bytesource import ByteSource, MissingBytes
from rasteret.tiff.codecs import check_supported, decode_chunk
from rasteret.tiff.geo import GeoInfo
from rasteret.tiff.header import CogHeader, ImageLevel, parse_header

__all__ = [
    "ByteSource",
    "CogHeader",
    "GeoInfo",
    "ImageLevel",
    "MissingBytes",
    "check_supported",
    "decode_chunk",
    "parse_header",
]

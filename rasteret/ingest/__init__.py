"""Ingest: STAC searches, static catalogs, user tables and datasets registered by id
(:mod:`rasteret.registry`), indexed concurrently into a saved Collection."""

from rasteret.ingest.api import build, build_from_stac, build_from_table
from rasteret.ingest.build_options import BuildOptions
from rasteret.ingest.builder import build_collection
from rasteret.ingest.indexer import IndexFailure

__all__ = [
    "BuildOptions",
    "IndexFailure",
    "build",
    "build_collection",
    "build_from_stac",
    "build_from_table",
]

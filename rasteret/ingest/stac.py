"""STAC sources: searches through pystac-client (with paging) and static catalogs.

A static catalog (``catalog.json``, a collection or an item, on any store the
backend reaches: local paths, ``file://``, ``http(s)://``, ``s3://``, ``az://``...) is
crawled breadth-first through the same obstore backend and event loop as the COGs,
each JSON document fetched once, many in flight at once (:func:`crawl_static_catalog`).

Items become :class:`~rasteret.ingest.records.SceneRecord` through a band map from
user band codes (``B04``) to the provider's asset keys (``red`` on Earth Search,
``B04`` on Planetary Computer), optionally with a band index for multi-band assets.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import operator
import os
import posixpath
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar

from rasteret.collection import check_bbox
from rasteret.dates import DateRange, parse_date_range, parse_datetime
from rasteret.errors import ConfigurationError, RasteretError, StacSearchError
from rasteret.ingest.records import (
    BandMetadata,
    BandSource,
    SceneRecord,
    epsg_of,
    unsigned,
)
from rasteret.io.backend import Backend, default_backend
from rasteret.io.fetch import FetchStats, fetch_object
from rasteret.io.runtime import run_sync
from rasteret.io.urls import strip_query
from rasteret.progress import grow, progress_bar, track
from rasteret.registry import BandMap, BandTarget

P = ParamSpec("P")
T = TypeVar("T")

_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "neq": operator.ne,
    "lt": operator.lt,
    "lte": operator.le,
    "gt": operator.gt,
    "gte": operator.ge,
    "in": lambda value, options: value in options,
}


#: JSON documents of a static catalog fetched at once (at +20 ms per request, 128
#: crawls 5,000 items in about 2 s on 2 cores, 64 in about 3 s).
DEFAULT_CRAWL_CONCURRENCY = 128


def matches_query(properties: Mapping[str, Any], query: Mapping[str, Any] | None) -> bool:
    """Apply a STAC ``query`` (``{"eo:cloud_cover": {"lt": 20}}``) on the client side,
    since some servers ignore it."""
    for name, condition in (query or {}).items():
        value = properties.get(name)
        tests = condition if isinstance(condition, Mapping) else {"eq": condition}
        for op, expected in tests.items():
            if op not in _OPERATORS:
                raise ConfigurationError(f"unknown query operator {op!r} for {name!r}")
            if value is None or not _OPERATORS[op](value, expected):
                return False
    return True


def _is_image_asset(asset: Mapping[str, Any]) -> bool:
    media = (asset.get("type") or "").lower()
    href = asset.get("href", "").split("?", 1)[0].lower()
    return "tiff" in media or href.endswith((".tif", ".tiff"))


def item_to_record(
    item: Mapping[str, Any],
    *,
    band_map: BandMap | None = None,
    rewrite: Callable[[str], str] | None = None,
) -> SceneRecord:
    """Turn a STAC item (as a dict) into a scene record.

    A band whose asset is missing maps to None and is recorded as a failure at build.
    """
    properties = dict(item.get("properties") or {})
    assets = item.get("assets") or {}
    if band_map is None:
        band_map = {key: key for key, asset in assets.items() if _is_image_asset(asset)}
    bands: dict[str, BandSource | None] = {}
    for band, spec in band_map.items():
        target: BandTarget | None = (
            spec.get(item.get("collection") or "") if isinstance(spec, Mapping) else spec
        )
        if target is None:
            bands[band] = None
            continue
        key, index = (target, 1) if isinstance(target, str) else (target[0], int(target[1]))
        asset = assets.get(key)
        if asset is None:
            bands[band] = None
            continue
        href = unsigned(asset["href"])
        bands[band] = BandSource(rewrite(href) if rewrite else href, index,
                                 band_metadata(item, asset, index))
    when = properties.get("datetime") or properties.get("start_datetime")
    bbox = item.get("bbox")
    return SceneRecord(
        id=str(item["id"]),
        datetime=parse_datetime(when),
        geometry=item.get("geometry"),
        bbox=tuple(bbox[:2] + bbox[-2:]) if bbox and len(bbox) >= 4 else None,
        collection=item.get("collection"),
        properties=properties,
        bands=bands,
        epsg=epsg_of(properties),
    )


# Sentinel-2 L2A reflectance bands: from processing baseline 04.00 on, stored values
# carry +1000 (BOA_ADD_OFFSET), so reflectance = value * 0.0001 - 0.1 (before: + 0).
_S2_REFLECTANCE = {"B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09",
                   "B10", "B11", "B12"}
_S2_BASELINE_WITH_OFFSET = (4, 0)


def _number(value: Any) -> float | None:
    """A STAC number (``nodata`` may also be the strings "nan", "inf", "-inf")."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _band_entry(asset: Mapping[str, Any], item: Mapping[str, Any], index: int
                ) -> dict[str, Any]:
    """The band object describing sample ``index`` (1-based) of an asset, merged over
    the fields the asset (STAC 1.1) gives for all its bands."""
    entry: dict[str, Any] = {}
    for key in ("nodata", "data_type", "unit", "raster:scale", "raster:offset"):
        if key in asset:
            entry[key] = asset[key]
    for field in ("raster:bands", "bands", "eo:bands"):
        listed = asset.get(field)
        if isinstance(listed, list) and len(listed) >= index:
            if isinstance(listed[index - 1], Mapping):
                entry.update(listed[index - 1])
    if not any(k in entry for k in ("scale", "offset", "raster:scale", "raster:offset",
                                    "nodata")):
        # Some catalogs put raster:bands in the item's properties (single-asset items).
        listed = (item.get("properties") or {}).get("raster:bands")
        if isinstance(listed, list) and len(listed) >= index:
            if isinstance(listed[index - 1], Mapping):
                entry = {**listed[index - 1], **entry}
    return entry


def _sentinel2_offset(item: Mapping[str, Any], asset: Mapping[str, Any],
                      entry: Mapping[str, Any]) -> tuple[float, float] | None:
    """Scale and offset of a Sentinel-2 L2A reflectance band whose item gives only
    ``s2:processing_baseline`` (Planetary Computer), or None."""
    baseline = (item.get("properties") or {}).get("s2:processing_baseline")
    listed = asset.get("eo:bands") or asset.get("bands") or []
    # One band per asset: the true-colour "visual" asset also names B04 but is 8-bit.
    if baseline is None or len(listed) != 1 or entry.get("name") not in _S2_REFLECTANCE:
        return None
    try:
        version = tuple(int(part) for part in str(baseline).split(".")[:2])
    except ValueError:
        return None
    return 0.0001, (-0.1 if version >= _S2_BASELINE_WITH_OFFSET else 0.0)


def band_metadata(item: Mapping[str, Any], asset: Mapping[str, Any], index: int = 1
                  ) -> BandMetadata | None:
    """What a STAC item says about the values of one band of an asset.

    Reads ``scale``, ``offset``, ``nodata``, ``data_type`` and ``unit`` from the
    asset's ``raster:bands`` (raster extension v1), its STAC 1.1 ``bands``
    (``raster:scale``/``raster:offset``) or ``eo:bands``, or the item's
    ``raster:bands``. Sentinel-2 L2A reflectance bands of items that give only
    ``s2:processing_baseline`` get scale 0.0001 and offset -0.1 from baseline 04.00
    on (0 before), so reflectance is harmonised across baselines.

    Returns:
        The metadata, or None when the item says nothing about the band's values.
    """
    entry = _band_entry(asset, item, index)
    scale = _number(entry.get("scale", entry.get("raster:scale")))
    offset = _number(entry.get("offset", entry.get("raster:offset")))
    if scale is None and offset is None:
        derived = _sentinel2_offset(item, asset, entry)
        if derived is not None:
            scale, offset = derived
    data_type = entry.get("data_type")
    unit = entry.get("unit")
    metadata = BandMetadata(
        scale=scale,
        offset=offset,
        nodata=_number(entry.get("nodata")),
        data_type=str(data_type) if data_type is not None else None,
        unit=str(unit) if unit is not None else None,
    )
    return None if metadata == BandMetadata() else metadata


def _in_window(
    item: Mapping[str, Any],
    bbox: Sequence[float] | None,
    window: tuple[dt.datetime, dt.datetime] | None,
) -> bool:
    if bbox is not None and item.get("bbox"):
        b = item["bbox"]
        minx, miny, maxx, maxy = b[0], b[1], b[-2], b[-1]
        if minx > bbox[2] or maxx < bbox[0] or miny > bbox[3] or maxy < bbox[1]:
            return False
    if window is not None:
        props = item.get("properties") or {}
        start = parse_datetime(props.get("start_datetime") or props.get("datetime"))
        end = parse_datetime(props.get("end_datetime") or props.get("datetime"))
        if start is None or end is None or end < window[0] or start > window[1]:
            return False
    return True


def _is_static_catalog(source: str) -> bool:
    lowered = source.split("?", 1)[0].lower()
    return lowered.endswith(".json") or not lowered.startswith(("http://", "https://"))


def iter_items(
    stac_api: str,
    *,
    collection: str | None,
    bbox: Iterable[float] | None = None,
    date_range: DateRange | None = None,
    query: Mapping[str, Any] | None = None,
    max_items: int | None = None,
    headers: Mapping[str, str] | None = None,
    page_size: int = 100,
    backend: Backend | None = None,
    max_in_flight: int = DEFAULT_CRAWL_CONCURRENCY,
    progress: bool = True,
) -> Iterator[dict[str, Any]]:
    """Items from a STAC API (paged through pystac-client) or a static catalog
    (``catalog.json``, a collection or an item; local or remote, relative hrefs
    resolved; see :func:`crawl_static_catalog`), one at a time: a STAC API's pages
    are fetched as the items are consumed, so only one page is held at once (a static
    catalog is crawled whole first). :func:`search_items` returns them as a list.

    ``collection`` may name several collections, comma-separated (the STAC API's GET
    form, e.g. ``"HLSS30_2.0,HLSL30_2.0"``).

    Bbox, dates and ``query`` are applied on the client side as well, since some
    servers ignore ``query`` (and a static catalog cannot be searched).

    Args:
        backend: How to reach a static catalog's documents (default: anonymous /
            environment credentials); the API path uses plain HTTP.
        max_in_flight: Static catalogs: JSON documents fetched at once.
        progress: Show a bar of the items (API) or documents (static catalog) read
            once the search has taken a few seconds (see :mod:`rasteret.progress`).

    Raises:
        StacSearchError: The API or catalog could not be read (also while paging);
            names the URL.
    """
    box = check_bbox(list(bbox)) if bbox is not None else None
    window = parse_date_range(date_range)
    found = 0
    try:
        if _is_static_catalog(stac_api):
            items: Iterable[dict[str, Any]] = run_sync(crawl_static_catalog(
                stac_api, backend=backend or default_backend(),
                collections=_collection_ids(collection), max_in_flight=max_in_flight,
                progress=progress))
        else:
            items = track(_api_items(stac_api, collection, box, window, max_items, headers,
                                     page_size),
                          desc="Searching STAC", unit="item", progress=progress, delayed=True)
        for item in items:
            if max_items and found >= max_items:
                return
            if _in_window(item, box, window) and matches_query(item.get("properties") or {},
                                                               query):
                found += 1
                yield item
    except RasteretError:
        raise
    except Exception as exc:  # network and parsing errors come in many types
        raise StacSearchError(f"searching {stac_api} failed: {type(exc).__name__}: {exc}") from exc


def _as_list(iterate: Callable[P, Iterator[T]], name: str, doc: str) -> Callable[P, list[T]]:
    """``iterate``'s results as a list, under ``name``; type checkers, IDEs and
    ``help()`` see ``iterate``'s parameters."""
    def listed(*args: P.args, **kwargs: P.kwargs) -> list[T]:
        return list(iterate(*args, **kwargs))

    functools.update_wrapper(listed, iterate)  # sets __wrapped__, which help() follows
    listed.__name__ = listed.__qualname__ = name
    listed.__doc__ = doc
    return listed


search_items = _as_list(iter_items, "search_items", """Every item of :func:`iter_items`
    at once, as a list; the arguments, filters and errors are :func:`iter_items`'.""")


def _collection_ids(collection: str | None) -> list[str]:
    return [part.strip() for part in (collection or "").split(",") if part.strip()]


def _api_items(
    stac_api: str,
    collection: str | None,
    box: Sequence[float] | None,
    window: tuple[dt.datetime, dt.datetime] | None,
    max_items: int | None,
    headers: Mapping[str, str] | None,
    page_size: int,
) -> Iterator[dict[str, Any]]:
    from pystac_client import Client

    client = Client.open(stac_api, headers=dict(headers or {}))
    datetime = None
    if window is not None:
        datetime = f"{window[0].isoformat().replace('+00:00', 'Z')}/" \
                   f"{window[1].isoformat().replace('+00:00', 'Z')}"
    search = client.search(
        collections=_collection_ids(collection) or None,
        bbox=list(box) if box else None,
        datetime=datetime,
        max_items=max_items,
        limit=page_size,  # items per page; pystac-client follows "next" links
    )
    # Property filters are applied client side (matches_query): servers that ignore
    # `query` would otherwise return nothing or everything. Pages are fetched lazily.
    return (item.to_dict() for item in search.items())


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def resolve_href(href: str, base: str) -> str:
    """``href`` as written in the document at ``base``, made absolute.

    Works for every store a backend reaches (``s3://``, ``az://``, ``http(s)://``,
    ``file://`` and plain local paths), which :func:`urllib.parse.urljoin` does not:
    it joins only the schemes it knows.
    """
    if _SCHEME.match(href):
        return href
    base = base.split("#", 1)[0].split("?", 1)[0]
    scheme = _SCHEME.match(base)
    if scheme is None:  # a local path
        if os.path.isabs(href):
            return href
        return os.path.normpath(os.path.join(os.path.dirname(base), href))
    authority, _, path = base[scheme.end():].partition("/")
    query = ""
    if "?" in href:
        href, query = href.split("?", 1)
        query = "?" + query
    joined = href if href.startswith("/") else posixpath.join(posixpath.dirname("/" + path),
                                                               href)
    return f"{scheme.group()}{authority}{posixpath.normpath(joined)}{query}"


def _is_collection(document: Mapping[str, Any]) -> bool:
    # STAC < 1.0 documents may lack "type": a collection has an extent and a license.
    kind = document.get("type")
    return kind == "Collection" or (kind is None and "extent" in document
                                    and "license" in document)


def _absolute_item(item: dict[str, Any], url: str, parent: str | None) -> dict[str, Any]:
    """The item with asset hrefs made absolute and, when it names none, the
    collection it was found under."""
    for asset in (item.get("assets") or {}).values():
        if isinstance(asset, dict) and isinstance(asset.get("href"), str):
            asset["href"] = resolve_href(asset["href"], url)
    if parent is not None and not item.get("collection"):
        item["collection"] = parent
    return item


async def crawl_static_catalog(
    root: str,
    *,
    backend: Backend,
    collections: Sequence[str] = (),
    max_in_flight: int = DEFAULT_CRAWL_CONCURRENCY,
    stats: FetchStats | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Every item of a static STAC catalog, crawled breadth-first.

    ``root`` is a ``catalog.json``, a collection, an item or a FeatureCollection,
    on any store ``backend`` reaches. Each level's ``child`` and ``item`` links are
    fetched concurrently (at most ``max_in_flight`` documents at once) through the
    backend's stores on the I/O loop, each URL once. Relative hrefs of links and
    assets are resolved against the document that holds them.

    Args:
        root: URL or local path of the catalog's root document.
        backend: The backend whose stores read the documents.
        collections: Keep only these collection ids (a collection not listed is not
            descended into); empty: all.
        max_in_flight: Documents fetched at once.
        stats: Optional counter of the requests and bytes.
        progress: Show a bar of the documents read once the crawl has taken a few
            seconds (see :mod:`rasteret.progress`).

    Returns:
        The items as dicts, in breadth-first order, with absolute asset hrefs.

    Raises:
        StacSearchError: A document is missing, unreadable, not JSON or not a STAC
            object; the message names its URL and the document that linked to it.
    """
    if _SCHEME.match(root) is None:
        root = os.path.abspath(os.path.expanduser(root))
    wanted = set(collections)
    semaphore = asyncio.Semaphore(max_in_flight)
    # The total grows level by level, as the links are found.
    bar = progress_bar(total=1, desc="Crawling STAC catalog", unit="document",
                       progress=progress, delayed=True)

    async def document(url: str, linked_from: str | None) -> dict[str, Any]:
        where = f" (linked from {strip_query(linked_from)})" if linked_from else ""
        async with semaphore:
            try:
                data = await fetch_object(backend, url, stats, what="STAC document read")
            except RasteretError as exc:
                raise StacSearchError(
                    f"static catalog: cannot read {strip_query(url)}{where}: {exc}") from exc
        bar.update(1)
        try:
            parsed = json.loads(data)
        except ValueError as exc:
            raise StacSearchError(
                f"static catalog: {strip_query(url)}{where} is not valid JSON ({exc}); "
                "fix or regenerate that document") from None
        if not isinstance(parsed, dict):
            raise StacSearchError(
                f"static catalog: {strip_query(url)}{where} is not a STAC catalog, "
                f"collection or item (a JSON {type(parsed).__name__})")
        return parsed

    items: list[dict[str, Any]] = []
    seen = {root}
    # (url, the document linking to it, the collection it sits under)
    level: list[tuple[str, str | None, str | None]] = [(root, None, None)]
    try:
        while level:
            documents = await asyncio.gather(*(document(url, linked_from)
                                               for url, linked_from, _ in level),
                                             return_exceptions=True)
            for outcome in documents:
                if isinstance(outcome, BaseException):
                    raise outcome
            next_level: list[tuple[str, str | None, str | None]] = []
            for (url, _, parent), doc in zip(level, documents):
                assert isinstance(doc, dict)
                next_level += _visit(doc, url, parent, wanted, seen, items)
            grow(bar, len(next_level))
            level = next_level
    finally:
        bar.close()
    if wanted:
        items = [i for i in items if i.get("collection") in (None, *wanted)]
    return items


def _visit(doc: dict[str, Any], url: str, parent: str | None, wanted: set[str],
           seen: set[str], items: list[dict[str, Any]]
           ) -> list[tuple[str, str | None, str | None]]:
    """Take the items of one crawled document (``url``, under collection ``parent``)
    into ``items``, and return the child and item links to fetch next (each URL
    once: ``seen`` grows), as (url, linked from, collection id)."""
    kind = doc.get("type")
    if kind == "Feature":
        items.append(_absolute_item(doc, url, parent))
        return []
    if kind == "FeatureCollection":
        items.extend(_absolute_item(f, url, parent) for f in doc.get("features") or []
                     if isinstance(f, dict))
        return []
    if _is_collection(doc):
        parent = str(doc.get("id"))
        if wanted and parent not in wanted:
            return []
    found: list[tuple[str, str | None, str | None]] = []
    for link in doc.get("links") or []:
        if not isinstance(link, Mapping) or link.get("rel") not in ("child", "item"):
            continue
        href = link.get("href")
        if not isinstance(href, str) or not href:
            continue
        target = resolve_href(href, url)
        if target not in seen:
            seen.add(target)
            found.append((target, url, parent))
    return found

"""A local STAC API (rustac, in-memory) serving items written to a folder, and static
catalogs written with relative links."""

from __future__ import annotations

import atexit
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rustac_binary() -> str:
    found = shutil.which("rustac") or str(Path(sys.executable).with_name("rustac"))
    if not Path(found).exists():
        raise RuntimeError("rustac is not installed: run `make test` (it installs .[dev])")
    return found


class StacApiServer:
    """``rustac serve`` on a free loopback port with a collection and its items.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.

    Attributes:
        url: The API root, e.g. ``http://127.0.0.1:PORT``.
    """

    def __init__(self, collection: dict[str, Any] | list[dict[str, Any]],
                 items: list[dict[str, Any]]) -> None:
        # One collection document, or several (items may belong to any of them).
        self.collection = collection
        self.items = items
        self.url = ""
        self._process: subprocess.Popen | None = None
        self._folder: Path | None = None

    def start(self) -> StacApiServer:
        """Write the documents, start the server and wait until it answers."""
        self._folder = Path(tempfile.mkdtemp(prefix="rasteret-stac-"))
        documents = self.collection if isinstance(self.collection, list) else [self.collection]
        collection_paths = []
        for number, document in enumerate(documents):
            collection_paths.append(self._folder / f"collection{number}.json")
            collection_paths[-1].write_text(json.dumps(document))
        items_path = self._folder / "items.json"
        items_path.write_text(json.dumps({"type": "FeatureCollection", "features": self.items}))
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        # Output goes to a file, never a pipe nobody reads (a full pipe blocks it).
        log_path = self._folder / "rustac.log"
        with open(log_path, "wb") as log:
            self._process = subprocess.Popen(
                [_rustac_binary(), "serve", "--addr", f"127.0.0.1:{port}", "--use-duckdb",
                 "false", *map(str, collection_paths), str(items_path)],
                stdout=log, stderr=subprocess.STDOUT,
            )
        atexit.register(self.stop)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                error = log_path.read_text(errors="replace")[-4000:]
                raise RuntimeError(f"rustac serve exited: {error}")
            try:
                with urllib.request.urlopen(f"{self.url}/collections", timeout=1) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("rustac serve did not answer within 20 s")

    def stop(self) -> None:
        """Stop the server (by its PID) and remove its files."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
        self._process = None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def __enter__(self) -> StacApiServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def write_static_catalog(
    root: str | Path,
    collections: Mapping[str, list[dict[str, Any]]],
    *,
    assets: Callable[[Path, dict[str, Any]], None] | None = None,
) -> Path:
    """Write a self-contained static catalog with relative links, as pystac lays it out:
    ``catalog.json``, ``<collection>/collection.json`` and
    ``<collection>/<item id>/<item id>.json``.

    Args:
        root: The folder to write into.
        collections: Collection id -> its items (their ``collection`` field is set).
        assets: Called as ``assets(item_folder, item)`` before each item is written,
            to place asset files next to it and rewrite the hrefs (e.g. ``./B04.tif``).

    Returns:
        The path of ``catalog.json``.
    """
    from testbed.scenes import stac_collection

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    catalog = {"type": "Catalog", "stac_version": "1.0.0", "id": "static-test",
               "description": "static catalog with relative links", "links": [
                   {"rel": "root", "href": "./catalog.json", "type": "application/json"}]}
    for collection_id, items in collections.items():
        folder = root / collection_id
        folder.mkdir(exist_ok=True)
        document = stac_collection(items, collection_id)
        document["links"] = [
            {"rel": "root", "href": "../catalog.json", "type": "application/json"},
            {"rel": "parent", "href": "../catalog.json", "type": "application/json"},
        ]
        for item in items:
            item = {**item, "collection": collection_id, "links": [
                {"rel": "root", "href": "../../catalog.json", "type": "application/json"},
                {"rel": "parent", "href": "../collection.json", "type": "application/json"},
                {"rel": "collection", "href": "../collection.json",
                 "type": "application/json"},
            ]}
            item_folder = folder / item["id"]
            item_folder.mkdir(exist_ok=True)
            if assets is not None:
                assets(item_folder, item)
            (item_folder / f"{item['id']}.json").write_text(json.dumps(item))
            document["links"].append({"rel": "item", "href": f"./{item['id']}/{item['id']}.json",
                                      "type": "application/geo+json"})
        (folder / "collection.json").write_text(json.dumps(document))
        catalog["links"].append({"rel": "child", "href": f"./{collection_id}/collection.json",
                                 "type": "application/json"})
    path = root / "catalog.json"
    path.write_text(json.dumps(catalog))
    return path

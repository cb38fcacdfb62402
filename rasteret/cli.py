"""The ``rasteret`` command line: datasets, builds and saved collections.

Every command takes ``--json`` for machine-readable output; errors print one line
naming the problem and the fix, and exit with status 2 (usage: a bad argument or a
:class:`~rasteret.errors.ConfigurationError`) or 1 (failure, including a dataset or
collection that does not exist).

Progress bars go to standard error, never to standard output; ``--json`` and
``--no-progress`` hide them, as does ``RASTERET_PROGRESS=0`` (see
:mod:`rasteret.progress`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from rasteret.errors import ConfigurationError, RasteretError
from rasteret.options import ON_ERROR, VALID_COVERAGE


def _print(data: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, indent=2, default=str))
    elif isinstance(data, list):
        for entry in data:
            print(entry if isinstance(entry, str) else json.dumps(entry, default=str))
    elif isinstance(data, dict):
        width = max((len(k) for k in data), default=0)
        for key, value in data.items():
            print(f"{key:<{width}}  {value}")
    else:
        print(data)


def _datasets_list(args: argparse.Namespace) -> None:
    from rasteret import datasets

    entries = datasets.list()
    if args.json:
        _print([d.as_dict() for d in entries], True)
        return
    # Two lines per dataset: what it is, then what reading it needs and its terms.
    for entry in entries:
        print(f"{entry.id:<28} {entry.description}")
        print(f"{'':<28} auth: {entry.auth or 'none'} | license: {entry.license or 'unknown'}")


def _datasets_info(args: argparse.Namespace) -> None:
    from rasteret import datasets

    _print(datasets.info(args.dataset_id), args.json)


def _parse_bbox(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bbox must be minx,miny,maxx,maxy, got {text!r}"
        ) from None
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"bbox must have 4 numbers, got {text!r}")
    return values


def _parse_dates(text: str) -> tuple[str, str]:
    start, sep, end = text.partition("/")
    if not sep:
        start, sep, end = text.partition(",")
    if not sep or not start or not end:
        raise argparse.ArgumentTypeError(f"dates must be START/END, got {text!r}")
    return start, end


def _progress(args: argparse.Namespace) -> bool:
    """Bars unless ``--json`` or ``--no-progress`` (``RASTERET_PROGRESS=0`` is checked
    where the bars are made)."""
    return not (args.json or args.no_progress)


def _label_classes(entries: Sequence[str] | None) -> dict[int, str] | list[str] | None:
    """``--label-classes``: names by class value (``background water``: 0, 1...), or
    ``VALUE=NAME`` pairs (``1=water 3=forest``).

    Raises:
        ConfigurationError: Pairs and plain names are mixed.
    """
    if not entries:
        return None
    pairs = [entry.partition("=") for entry in entries]
    is_pair = [sep == "=" and value.strip().lstrip("-").isdigit()
               for value, sep, _ in pairs]
    if not any(is_pair):
        return list(entries)
    if not all(is_pair):
        raise ConfigurationError(
            f"--label-classes takes names (background water ...: class 0, 1 ...) or "
            f"VALUE=NAME pairs (1=water 3=forest), not both: got {list(entries)}")
    return {int(value): name for value, _, name in pairs}


def _build(args: argparse.Namespace) -> None:
    import rasteret

    query = json.loads(args.query) if args.query else None
    common: dict[str, Any] = dict(
        name=args.name,
        bbox=args.bbox,
        date_range=args.dates,
        query=query,
        workspace_dir=args.workspace_dir,
        force=args.force,
        on_error=args.on_error,
        progress=_progress(args),
        valid_coverage=None if args.valid_coverage == "none" else args.valid_coverage,
    )
    if args.stac_api and not args.dataset_id:
        collection = rasteret.build_from_stac(
            stac_api=args.stac_api, collection=args.collection, **common
        )
    elif args.dataset_id:
        collection = rasteret.build(
            args.dataset_id, bands=args.bands, stac_api=args.stac_api, **common
        )
    else:
        raise ConfigurationError("give a DATASET_ID (see `rasteret datasets list`) or --stac-api")
    _print(collection.summary(), args.json)


def _collections_list(args: argparse.Namespace) -> None:
    import rasteret

    names = rasteret.list_collections(workspace_dir=args.workspace_dir)
    if args.json:
        _print([rasteret.load(n, workspace_dir=args.workspace_dir).summary() for n in names], True)
    else:
        for name in names:
            print(repr(rasteret.load(name, workspace_dir=args.workspace_dir)))
        if not names:
            print("no collections yet: build one with `rasteret build DATASET_ID ...`")


def _collections_info(args: argparse.Namespace) -> None:
    import rasteret

    collection = rasteret.load(args.name, workspace_dir=args.workspace_dir)
    summary = collection.summary()
    if args.failures:
        summary["failure_list"] = collection.failures.to_pylist()
    _print(summary, args.json)


def _collections_delete(args: argparse.Namespace) -> None:
    import rasteret

    rasteret.delete_collection(args.name, workspace_dir=args.workspace_dir)
    _print({"deleted": args.name}, args.json)


def _chips_export(args: argparse.Namespace) -> None:
    import rasteret

    classes = _label_classes(args.label_classes)  # a usage mistake before any work
    collection = rasteret.load(args.name, workspace_dir=args.workspace_dir)
    manifest = collection.export_chips(
        args.bands, args.out, chip_size=args.size, mode=args.mode, length=args.count,
        seed=args.seed, png=args.png, overwrite=args.overwrite, mask_bands=args.mask_bands,
        label_classes=classes, progress=_progress(args),
    )
    import pyarrow.parquet as pq

    _print({"manifest": str(manifest), "chips": pq.read_metadata(manifest).num_rows}, args.json)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``rasteret`` command."""
    parser = argparse.ArgumentParser(
        prog="rasteret", description="Index cloud COGs into collections and read them fast."
    )
    parser.add_argument("--json", action="store_true", help="print JSON (and no progress bars)")
    parser.add_argument("--no-progress", action="store_true",
                        help="hide progress bars (as RASTERET_PROGRESS=0 does)")
    # --workspace is the older spelling of --workspace-dir, still accepted.
    parser.add_argument("--workspace-dir", "--workspace", dest="workspace_dir",
                        help="collections folder (default $RASTERET_WORKSPACE)")
    # The same options are accepted after the subcommand (`rasteret datasets list --json`).
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    shared.add_argument("--no-progress", action="store_true", default=argparse.SUPPRESS)
    shared.add_argument("--workspace-dir", "--workspace", dest="workspace_dir",
                        default=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True)

    datasets = commands.add_parser("datasets", help="the dataset catalog")
    datasets_commands = datasets.add_subparsers(dest="action", required=True)
    listing = datasets_commands.add_parser("list", help="list registered datasets",
                                           parents=[shared])
    listing.set_defaults(run=_datasets_list)
    info = datasets_commands.add_parser("info", help="describe one dataset", parents=[shared])
    info.add_argument("dataset_id")
    info.set_defaults(run=_datasets_info)

    build = commands.add_parser("build", help="build a collection", parents=[shared])
    build.add_argument("dataset_id", nargs="?", help="a registered dataset id")
    build.add_argument("--name", required=True)
    build.add_argument("--bbox", type=_parse_bbox, required=True, help="minx,miny,maxx,maxy")
    build.add_argument("--dates", type=_parse_dates, required=True, help="START/END")
    build.add_argument("--bands", nargs="+", help="band codes to index (default: all)")
    build.add_argument("--stac-api", help="a STAC API or static catalog.json")
    build.add_argument("--collection", help="STAC collection id (with --stac-api)")
    build.add_argument("--query", help='JSON, e.g. \'{"eo:cloud_cover": {"lt": 20}}\'')
    build.add_argument("--force", action="store_true", help="rebuild an existing collection")
    build.add_argument("--on-error", choices=ON_ERROR, default="raise")
    build.add_argument("--valid-coverage", choices=[*VALID_COVERAGE, "none"],
                       default="geometry", help="where scenes have data: item geometry "
                       "and sparse tiles, or also overviews (+1 request per asset), or none")
    build.set_defaults(run=_build)

    collections = commands.add_parser("collections", help="saved collections")
    collections_commands = collections.add_subparsers(dest="action", required=True)
    saved = collections_commands.add_parser("list", help="list saved collections",
                                            parents=[shared])
    saved.set_defaults(run=_collections_list)
    show = collections_commands.add_parser("info", help="describe a collection", parents=[shared])
    show.add_argument("name")
    show.add_argument("--failures", action="store_true", help="list indexing failures")
    show.set_defaults(run=_collections_info)
    delete = collections_commands.add_parser("delete", help="delete a collection", parents=[shared])
    delete.add_argument("name")
    delete.set_defaults(run=_collections_delete)

    chips = commands.add_parser("chips", help="chips for labelling")
    chips_commands = chips.add_subparsers(dest="action", required=True)
    export = chips_commands.add_parser("export", help="export chips of a collection",
                                       parents=[shared])
    export.add_argument("name", help="a saved collection")
    export.add_argument("--bands", nargs="+", required=True)
    export.add_argument("--out", required=True, help="output folder")
    export.add_argument("--size", type=int, default=256, help="chip size in pixels")
    export.add_argument("--mode", choices=["grid", "random"], default="grid")
    export.add_argument("--count", type=int, help="number of random chips")
    export.add_argument("--seed", type=int, default=0)
    export.add_argument("--png", action="store_true", help="also write PNG chips")
    export.add_argument("--overwrite", action="store_true")
    export.add_argument("--mask-bands", nargs="+", metavar="BAND",
                        help="label bands read with each chip and written as Label Studio "
                             "brush pre-annotations (one <BrushLabels> per band)")
    export.add_argument("--label-classes", nargs="+", metavar="CLASS",
                        help="class names by value (background water ...: 0, 1 ...) or "
                             "VALUE=NAME pairs (1=water 3=forest); values not named are "
                             "not pre-annotated (default: every value but 0 and nodata, "
                             "named by its value)")
    export.set_defaults(run=_chips_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    Returns:
        0 on success, 2 for a usage or configuration mistake (as argparse does for
        bad arguments), 1 for any other failure (a dataset id or collection that
        does not exist included).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (RasteretError, FileExistsError) as exc:
        print(f"rasteret: error: {exc}", file=sys.stderr)
        # A name that does not exist is a failure to find it, as for a collection.
        usage = isinstance(exc, ConfigurationError) and not isinstance(exc, LookupError)
        return 2 if usage else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

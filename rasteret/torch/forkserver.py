"""The fork server that starts DataLoader workers, started early and preloaded.

A worker forked from a server that already imported torch, torchgeo and rasteret's
dataset starts in a fraction of a second; a cold server first spends the import
(about 10 s for torchgeo on a small machine). :func:`start_early` starts the server
when ``rasteret.torch`` is imported, so its imports run beside the caller's own
(the main process imports torchgeo too) instead of delaying the first batch.

It only imports :mod:`multiprocessing` and :mod:`os`: importing it does no I/O.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os

#: Modules the forkserver imports once, before it forks any worker: each worker then
#: starts with torch, torchgeo and rasteret's dataset already imported (seconds and
#: hundreds of MB of private memory saved per worker). Importing does no obstore
#: I/O, so forking workers from that server stays safe.
FORKSERVER_PRELOAD = (
    "__main__",
    "torch",
    "torchgeo.datasets",
    "torchgeo.samplers",
    "rasteret.torch.dataset",
    "rasteret.torch.samplers",
    "rasteret.torch.loader",
)

#: Environment switch: ``0`` leaves the server to be started by the first loader.
EARLY_ENV = "RASTERET_EARLY_FORKSERVER"
#: Set in the environment the server and its workers inherit, so that importing
#: ``rasteret.torch`` there (preloading, unpickling a dataset) starts no server.
_INSIDE_ENV = "_RASTERET_FORKSERVER_CHILD"


def prepare_forkserver() -> None:
    """Have the forkserver preload :data:`FORKSERVER_PRELOAD` and start it now, so
    its imports overlap the caller's remaining set-up instead of delaying the first
    batch. Preloading only takes effect before the server starts; if it is already
    running, it is reused as it is.
    """
    preload = list(FORKSERVER_PRELOAD)
    context = multiprocessing.get_context("forkserver")
    server = multiprocessing.forkserver._forkserver
    # Keep what the user or another library asked to preload.
    extra = [m for m in getattr(server, "_preload_modules", []) if m not in preload]
    context.set_forkserver_preload(preload + extra)
    previous = os.environ.get(_INSIDE_ENV)
    os.environ[_INSIDE_ENV] = "1"  # inherited by the server when it starts now
    try:
        server.ensure_running()
    finally:
        if previous is None:
            os.environ.pop(_INSIDE_ENV, None)


def start_early() -> bool:
    """Start the preloaded fork server now, from the main process of a program that
    imports ``rasteret.torch``, unless ``RASTERET_EARLY_FORKSERVER=0``.

    Not in the server itself, its workers or other child processes, and not from an
    interactive interpreter without a main module file.

    Returns:
        Whether a server was started.
    """
    if os.environ.get(EARLY_ENV, "1").strip().lower() in {"0", "false", "no", "off"}:
        return False
    if os.environ.get(_INSIDE_ENV) or multiprocessing.parent_process() is not None:
        return False
    if multiprocessing.current_process().name != "MainProcess":
        return False
    server = multiprocessing.forkserver._forkserver
    if getattr(server, "_forkserver_pid", None) is not None:
        return False  # already running
    prepare_forkserver()
    return True

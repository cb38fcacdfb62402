"""The process's I/O runtime: one asyncio loop in a daemon thread, a decode pool,
and the fork guard.

Public rasteret methods are synchronous: they submit a coroutine to the loop
thread and wait for it, so they work the same from scripts, notebooks (which
already run a loop) and DataLoader workers. Decoding runs in a thread pool; the
codecs release the GIL, so the network and the CPU overlap.

obstore's Rust runtime does not survive ``fork``: a child forked after its parent
did I/O hangs on its first request. :func:`ensure_io_allowed` turns that hang into
a :class:`~rasteret.errors.ForkAfterIOError` raised at once.

Reads allocate and free hundreds of megabytes of tile buffers. glibc's malloc hands
buffers above its mmap threshold back to the kernel on every free, so the next read
page-faults them in afresh (a tenth of a read's time on a small VM). When the loop
starts, :func:`tune_malloc` keeps such buffers in the heap for reuse instead; set
``RASTERET_MALLOC_TUNING=0`` (or any ``MALLOC_*`` / ``GLIBC_TUNABLES`` variable of your
own) to leave malloc alone.
"""

from __future__ import annotations

import asyncio
import atexit
import ctypes
import os
import sys
import threading
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from rasteret.errors import ForkAfterIOError

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_pool: ThreadPoolExecutor | None = None
_io_started_in_pid: int | None = None
_inherited_used_io = False


def _after_fork_in_child() -> None:
    global _loop, _pool, _inherited_used_io
    # The parent's loop thread and pool threads do not exist in the child.
    _loop = None
    _pool = None
    if _io_started_in_pid is not None:
        _inherited_used_io = True


os.register_at_fork(after_in_child=_after_fork_in_child)


def ensure_io_allowed() -> None:
    """Mark this process as doing I/O, or refuse if it was forked after parent I/O.

    Raises:
        ForkAfterIOError: This process is a ``fork`` child of a process that already
            did obstore I/O; any request would hang.
    """
    global _io_started_in_pid
    if _inherited_used_io:
        raise ForkAfterIOError(
            f"process {os.getpid()} was forked after its parent read data with rasteret; "
            "obstore cannot run in such a child and would hang. Start worker processes "
            'with multiprocessing_context="forkserver" (or "spawn"), e.g. '
            'DataLoader(..., num_workers=2, multiprocessing_context="forkserver"), or '
            "create the workers before the first read."
        )
    if _io_started_in_pid is None:
        _io_started_in_pid = os.getpid()


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Buffers up to this size come from the heap (glibc's own ceiling for the threshold
#: it adapts by itself).
MMAP_THRESHOLD = 32 * 1024 * 1024
#: Free memory at the top of the heap beyond this goes back to the kernel.
TRIM_THRESHOLD = 64 * 1024 * 1024
_malloc_tuned = False


def tune_malloc() -> bool:
    """Let glibc reuse large freed buffers instead of unmapping them (see the module
    docstring). Returns True when the settings were applied."""
    global _malloc_tuned
    if _malloc_tuned:
        return True
    if (os.environ.get("RASTERET_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux")
            or "GLIBC_TUNABLES" in os.environ
            or any(name.startswith("MALLOC_") for name in os.environ)):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return False
    _malloc_tuned = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                         and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _malloc_tuned


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    loop.run_forever()


def io_loop() -> asyncio.AbstractEventLoop:
    """Return the process's I/O loop, starting its thread on first use."""
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            tune_malloc()
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=_run_loop, args=(loop,), name="rasteret-io", daemon=True
            )
            thread.start()
            atexit.register(_stop_at_exit, loop, thread)
            _loop = loop
        return _loop


def _stop_at_exit(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    # Stop the loop while the interpreter is still whole: a daemon loop thread still
    # running during finalization can be handed a completed request by obstore's
    # runtime threads after Python has started tearing down.
    if thread.is_alive() and not loop.is_closed():
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=2.0)


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


_decode_threads: int | None = None
_pool_threads = 0


def set_decode_threads(threads: int) -> None:
    """Size this process's decode pool to ``threads`` threads (at least 1).

    DataLoader workers share the machine's cores: each should decode with its share
    (cores // workers), not with every core, or the workers' threads oversubscribe
    the cores and slow each other down. A pool already started is replaced; reads
    running on it finish there.
    """
    global _pool, _decode_threads
    threads = max(1, int(threads))
    with _lock:
        _decode_threads = threads
        old = _pool if _pool is not None and _pool_threads != threads else None
        if old is not None:
            _pool = None
    if old is not None:
        old.shutdown(wait=False)


def decode_threads() -> int:
    """Threads of this process's decode pool: as set by :func:`set_decode_threads`
    (DataLoader workers: cores // workers), else one per core."""
    return _decode_threads if _decode_threads is not None else available_cores()


def decode_pool() -> ThreadPoolExecutor:
    """Return the thread pool that decodes chunks (:func:`decode_threads` threads)."""
    global _pool, _pool_threads
    with _lock:
        if _pool is None:
            _pool_threads = decode_threads()
            _pool = ThreadPoolExecutor(max_workers=_pool_threads,
                                       thread_name_prefix="rasteret-decode")
        return _pool


def decode_pool_size() -> int:
    """The number of threads of the decode pool (started if it was not)."""
    decode_pool()
    return _pool_threads


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on the I/O loop and return its result (the sync API's engine).

    Raises:
        RuntimeError: When called from the I/O loop's own thread (use the async API).
    """
    loop = io_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coroutine.close()
        raise RuntimeError("rasteret's sync API was called from its I/O loop; await the async API")
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result()

"""The executor of a build without ``executor=``: its tasks run in this process.

A build is one engine (:func:`rasteret.ingest.builder.build_collection`): given no
executor, it runs its tasks on an :class:`InProcessExecutor`. A task's headers are
parsed concurrently on the process's one I/O loop (:mod:`rasteret.io.runtime`), so
the threads here mostly wait on it; running a few tasks at once keeps the loop busy
while one task decodes its scenes or writes its batch.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

#: Tasks an in-process build runs at once.
IN_PROCESS_TASKS = 4


class InProcessExecutor(ThreadPoolExecutor):
    """A :class:`concurrent.futures.Executor` that runs a build's tasks in the calling
    process, ``tasks`` at once (in threads that share the process's I/O loop).

    Args:
        tasks: Tasks run at once.
    """

    def __init__(self, tasks: int = IN_PROCESS_TASKS) -> None:
        super().__init__(max_workers=max(1, tasks), thread_name_prefix="rasteret-build")
        self.tasks = max(1, tasks)

    def share_of(self, max_concurrent: int) -> int:
        """Headers one task may have in flight so that all tasks at once have at most
        ``max_concurrent`` (at least one each)."""
        return max(1, max_concurrent // self.tasks)

"""Writing a file so that readers never see it half-written."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Write ``path`` whole or not at all.

    ``write`` writes a temporary file beside ``path`` (same folder, so the rename
    stays on one file system), which is then renamed over ``path``. A reader sees the
    old file or the new one; a writer killed half-way leaves only a hidden ``.tmp``
    file; concurrent writers (processes or threads) each use their own temporary.

    Args:
        path: The file to write.
        write: Called with the temporary path; writes the whole content there.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target

"""Writing a file so that readers never see it half-written."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from rasteret.errors import WriteConflictError


def write_atomic(path: str | os.PathLike[str], write: Callable[[Path], object], *,
                 replace: bool = True) -> Path:
    """Write ``path`` whole or not at all.

    ``write`` writes a temporary file beside ``path`` (same folder, so the rename
    stays on one file system), which is then renamed over ``path``. A reader sees the
    old file or the new one; a writer killed half-way leaves only a hidden ``.tmp``
    file; concurrent writers (processes or threads) each use their own temporary.

    Args:
        path: The file to write.
        write: Called with the temporary path; writes the whole content there.
        replace: Replace an existing file. False publishes only if no file is there
            (a hard link, which fails when the name exists: of two writers exactly one
            wins).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        WriteConflictError: ``replace=False`` and ``path`` exists (the temporary is
            removed).
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        write(tmp)
        if replace:
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)
            except FileExistsError:
                raise WriteConflictError(
                    f"{target} already exists (another run wrote it); remove it or allow "
                    "replacing it") from None
            tmp.unlink()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target

"""Safe output files: atomic writes (no reader sees half a file), output folders checked early."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is ``os.replace``-d onto ``path``.

    The temporary name is hidden (leading dot) and keeps ``path``'s suffix, so writers that pick a
    format from the suffix (PIL, OpenCV) still work. If the block raises, the temporary file is
    removed and ``path`` is left untouched.

    Example:
        >>> with atomic_path("out/summary.json") as tmp:
        ...     tmp.write_text("{}")

    Raises:
        InputError: the folder of ``path`` does not exist.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"{path}: output folder {path.parent} does not exist")
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def ensure_output_dir(path: str | os.PathLike) -> Path:
    """Create the output folder ``path`` (with parents) if needed and check that it is writable.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        InputError: ``path`` is an existing file, cannot be created, or is not writable (one-line
            message).
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InputError(f"{path}: exists and is a file, not a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(
            f"{path}: cannot create output folder ({e.strerror or type(e).__name__})"
        ) from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise InputError(f"{path}: output folder is not writable")
    return p

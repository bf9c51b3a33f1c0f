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
        InputError: the folder of ``path`` does not exist, or ``path`` is a folder.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"{path}: output folder {path.parent} does not exist")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a file")
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


def check_output_dir(path: str | os.PathLike) -> Path:
    """Check, without creating anything, that ``path`` can be an output folder: an existing folder,
    or a path whose nearest existing ancestor is a writable folder (for jobs that run long before
    they write, so that a bad output path fails first).

    Raises:
        InputError: ``path`` or one of its ancestors is a file, or the folder is not writable.
    """
    p = Path(path)
    probe = p
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"{probe}: exists and is a file, not a folder"
                         + ("" if probe == p else f" (output folder {path})"))
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"{path}: output folder is not writable")
    return p


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file or folder (resolved; the files need not exist)."""
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def is_inside(child: str | os.PathLike, parent: str | os.PathLike) -> bool:
    """Whether ``child`` is ``parent`` or lies under it (resolved paths)."""
    try:
        Path(child).expanduser().resolve().relative_to(Path(parent).expanduser().resolve())
        return True
    except ValueError:
        return False

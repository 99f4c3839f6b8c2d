"""Atomic file writes: a reader never sees a half-written file.

Every write goes to a temporary file **in the same folder** as the target (so the final
``os.replace`` is a rename on one file system), is flushed and ``fsync``-ed, then
renamed over the target, and finally the folder itself is ``fsync``-ed so the rename
survives a power cut. If the process dies at any point before the rename, the previous
file is untouched; only a stray ``.<name>.*.tmp`` file may remain (see
:func:`remove_stale_temps`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_write_bytes",
    "atomic_writer",
    "atomic_path",
    "fsync_dir",
    "backup_file",
    "remove_stale_temps",
    "TMP_PREFIX",
]

logger = logging.getLogger(__name__)

TMP_PREFIX = "."
TMP_INFIX = ".medsegfm-"
TMP_SUFFIX = ".tmp"


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """``fsync`` a directory so a rename inside it is durable (no-op where unsupported)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(folder, flags)
    except OSError:  # e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_name(target: Path, keep_suffix: bool) -> Path:
    """A fresh temp path beside ``target``; ``keep_suffix`` keeps e.g. ``.nii.gz`` last."""
    suffix = "".join(target.suffixes[-2:]) if keep_suffix else ""
    fd, name = tempfile.mkstemp(
        prefix=f"{TMP_PREFIX}{target.name}{TMP_INFIX}",
        suffix=f"{TMP_SUFFIX}{suffix}",
        dir=target.parent,
    )
    os.close(fd)
    return Path(name)


def _finish(tmp: Path, target: Path) -> None:
    """fsync ``tmp``, rename it over ``target``, fsync the folder."""
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    _commit(tmp, target)


def _commit(tmp: Path, target: Path) -> None:
    # keep the permissions of the file being replaced (mkstemp creates 0600)
    try:
        mode = target.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    with contextlib.suppress(OSError):
        os.chmod(tmp, mode)
    os.replace(tmp, target)
    fsync_dir(target.parent)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temp file beside ``path`` for writing; on clean exit it replaces ``path``.

    Parameters
    ----------
    path : path-like
        The final file. Its folder must exist.
    mode : str
        ``"wb"`` (default) or ``"w"`` (text, UTF-8).

    Yields
    ------
    file object
        Write to it; do not close it yourself. On an exception the temp file is removed
        and ``path`` is left as it was.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_writer mode must be 'wb' or 'w'; got {mode!r}")
    target = Path(path)
    if not target.parent.is_dir():
        raise FileNotFoundError(f"cannot write {target}: folder {target.parent} does not exist")
    tmp = _temp_name(target, keep_suffix=False)
    try:
        kw = {"encoding": "utf-8", "newline": ""} if mode == "w" else {}
        with open(tmp, mode, **kw) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        _commit(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp *path* (same folder, same final suffixes) for libraries that want a file name.

    Use it for writers such as ``nibabel.save`` or ``h5py.File`` that pick the encoding
    from the extension: the temp name ends with the target's suffixes (``.nii.gz``).
    On clean exit the temp file is fsync-ed and renamed over ``path``.
    """
    target = Path(path)
    if not target.parent.is_dir():
        raise FileNotFoundError(f"cannot write {target}: folder {target.parent} does not exist")
    tmp = _temp_name(target, keep_suffix=True)
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"the writer did not create the temp file {tmp} for {target}")
        _finish(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes | bytearray | memoryview) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_writer(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def backup_file(path: str | os.PathLike[str], suffix: str = ".bak") -> Path | None:
    """Keep the current content of ``path`` as ``path + suffix`` (atomically); returns it.

    A hard link is used where possible: the following atomic replace of ``path`` gives
    the original a new inode, so the link keeps the old bytes at no copy cost. Falls
    back to a copy. Returns ``None`` when ``path`` does not exist.
    """
    src = Path(path)
    if not src.exists():
        return None
    bak = src.with_name(src.name + suffix)
    tmp = _temp_name(bak, keep_suffix=False)
    tmp.unlink()
    try:
        try:
            if src.is_dir():
                raise OSError("directory")
            os.link(src, tmp)
        except OSError:
            if src.is_dir():
                if bak.exists():
                    shutil.rmtree(bak)
                shutil.copytree(src, tmp)
                os.replace(tmp, bak)
                fsync_dir(bak.parent)
                return bak
            shutil.copy2(src, tmp)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, bak)
        fsync_dir(bak.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            if tmp.is_dir():
                shutil.rmtree(tmp)
            else:
                tmp.unlink()
        raise
    logger.info("kept a backup of %s as %s", src, bak)
    return bak


def remove_stale_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete temp files left by a writer that was killed mid-write; returns what was removed."""
    removed = []
    for p in Path(folder).glob(f"{TMP_PREFIX}*{TMP_INFIX}*{TMP_SUFFIX}*"):
        if p.is_file():
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed

"""Atomic file writes: a reader never sees a half-written file.

Every write goes to a temporary file **in the same folder** as the target (so the final
``os.replace`` is a rename on one file system), is flushed and ``fsync``-ed, then
renamed over the target, and finally the folder itself is ``fsync``-ed so the rename
survives a power cut. If the process dies at any point before the rename, the previous
file is untouched; only a stray temp file may remain (see :func:`remove_stale_temps`).

Temp names are short and hidden, ``.msf-<hash of the target name>-<host><pid>-<random>.tmp``
(+ the target's extension for :func:`atomic_path`), so a target name of up to 255
characters (``NAME_MAX``) can be saved, a killed writer's leftover is never taken for a case
(:func:`is_temp_name`; listings skip it), and it can be told apart from a live writer's.

What a careful user expects, decided here once for every writer:

* a **read-only** target (no write permission bit, e.g. ``chmod 444``) is *not* replaced:
  :class:`ReadOnlyFileError` (a ``PermissionError``) says so; make it writable or save elsewhere;
* a target that is a **symlink** stays a symlink: the write goes through to the file it points
  to (temp file beside that file, atomic rename over it);
* a folder without write permission gives a ``PermissionError`` naming it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import socket
import stat
import tempfile
import time
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
    "is_temp_name",
    "ReadOnlyFileError",
    "TMP_PREFIX",
]

logger = logging.getLogger(__name__)

TMP_PREFIX = ".msf-"
TMP_SUFFIX = ".tmp"
#: temp files of earlier versions: ``.<target name>.medsegfm-<random>.tmp[<ext>]``
_LEGACY_INFIX = ".medsegfm-"
_TEMP_RE = re.compile(r"^\.msf-([0-9a-f]{8})-([0-9a-f]{4})(\d+)-[^.]*\.tmp(\.[A-Za-z0-9.]*)?$")
#: a temp file untouched this long is stale whoever wrote it; one whose writer was a process of this
#: host that no longer runs is stale at once (its pid and a host tag are in its name)
STALE_TEMP_S = 3600.0
_HOST_TAG = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:4]


class ReadOnlyFileError(PermissionError):
    """The target file is read-only: it is not replaced (make it writable, or save elsewhere)."""


def is_temp_name(name: str) -> bool:
    """True for the name of a temp file of an atomic write (this or an earlier version).

    Parameters
    ----------
    name : str
        A file name (no folder).
    """
    if _TEMP_RE.match(name):
        return True
    return name.startswith(".") and _LEGACY_INFIX in name and TMP_SUFFIX in name


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """``fsync`` a directory so a rename inside it is durable (no-op where unsupported).

    Parameters
    ----------
    folder : path-like
        The directory.
    """
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


def _kept_suffix(target: Path) -> str:
    """The target's extension for temp names (``.nii.gz``, ``.h5``): short alphanumeric parts only."""
    parts = [p for p in target.suffixes[-2:] if len(p) <= 8 and p[1:].isalnum()]
    if len(parts) == 2 and target.suffixes[-1] != parts[-1]:
        parts = parts[-1:]
    return "".join(parts)[-16:] if parts and target.name.endswith("".join(parts)) else ""


def _temp_name(target: Path, keep_suffix: bool) -> Path:
    """A fresh, short temp path beside ``target``; ``keep_suffix`` keeps e.g. ``.nii.gz`` last."""
    suffix = _kept_suffix(target) if keep_suffix else ""
    tag = hashlib.sha1(target.name.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    try:
        fd, name = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{tag}-{_HOST_TAG}{os.getpid()}-",
                                    suffix=f"{TMP_SUFFIX}{suffix}", dir=target.parent)
    except PermissionError:
        raise PermissionError(f"cannot write {target}: permission denied in the folder {target.parent}") from None
    os.close(fd)
    return Path(name)


def _resolve_target(path: str | os.PathLike[str]) -> Path:
    """The file to replace: ``path``, or the file a symlink ``path`` points to (write-through).

    Raises :class:`ReadOnlyFileError` for an existing read-only file and
    ``FileNotFoundError`` when its folder does not exist.
    """
    target = Path(path)
    if target.is_symlink():
        target = Path(os.path.realpath(target))
    if not target.parent.is_dir():
        raise FileNotFoundError(f"cannot write {Path(path)}: folder {target.parent} does not exist")
    try:
        st = target.stat()
    except FileNotFoundError:
        return target
    if stat.S_ISREG(st.st_mode) and (not st.st_mode & 0o222 or not os.access(target, os.W_OK)):
        raise ReadOnlyFileError(
            f"{Path(path)} is read-only (mode {stat.S_IMODE(st.st_mode):04o}); it was not overwritten. "
            "Make it writable (chmod u+w) or save under another name"
        )
    return target


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
    target = _resolve_target(path)
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
    On clean exit the temp file is fsync-ed and renamed over ``path``; on an error it is
    removed and ``path`` is untouched.

    Parameters
    ----------
    path : path-like
        The final file.

    Yields
    ------
    Path
        The temp file to write.

    Raises
    ------
    FileNotFoundError
        The writer did not create the temp file.
    """
    target = _resolve_target(path)
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
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename).

    Parameters
    ----------
    path : path-like
        The final file.
    data : bytes-like
        The whole content.

    Returns
    -------
    Path
        ``path``.
    """
    with atomic_writer(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def backup_file(path: str | os.PathLike[str], suffix: str = ".bak") -> Path | None:
    """Keep the current content of ``path`` as ``path + suffix`` (atomically).

    A hard link is used where possible: the following atomic replace of ``path`` gives
    the original a new inode, so the link keeps the old bytes at no copy cost. Falls
    back to a copy (a folder is copied as a tree).

    Parameters
    ----------
    path : path-like
        A file or folder.
    suffix : str
        Appended to the name.

    Returns
    -------
    Path or None
        The backup; ``None`` when ``path`` does not exist.
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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists (another user's) or cannot tell
        return True
    return True


def _is_stale(name: str, mtime: float, now: float) -> bool:
    """A temp file is stale when untouched for :data:`STALE_TEMP_S`, or when its writer was a
    process of this host that no longer runs. A live writer's temp is never stale."""
    age = now - mtime
    if age > STALE_TEMP_S:
        return True
    m = _TEMP_RE.match(name)
    if m is None or m.group(2) != _HOST_TAG:
        return False  # an earlier version's, or another host's: only by age
    pid = int(m.group(3))
    return pid != os.getpid() and not _pid_alive(pid)


def remove_stale_temps(folder: str | os.PathLike[str], target: str | os.PathLike[str] | None = None) -> list[Path]:
    """Delete temp files left by writers that were killed mid-write.

    Only stale temps go (see :func:`_is_stale`): the temp of a writer that is still running,
    here or on another host sharing the folder, is left alone.

    Parameters
    ----------
    folder : path-like
        The folder to sweep.
    target : path-like, optional
        Only the temps of this one file name.

    Returns
    -------
    list of Path
        What was removed.
    """
    tag = None if target is None else hashlib.sha1(Path(target).name.encode("utf-8", "surrogateescape")
                                                   ).hexdigest()[:8]
    removed = []
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for e in entries:
        if not is_temp_name(e.name) or (tag is not None and not e.name.startswith(f"{TMP_PREFIX}{tag}-")):
            continue
        try:
            if not e.is_file(follow_symlinks=False) or not _is_stale(e.name, e.stat().st_mtime, now):
                continue
            os.unlink(e.path)
        except OSError:
            continue
        removed.append(Path(e.path))
        logger.info("removed %s, the temp file of an interrupted save", e.path)
    return removed

"""Slice-embedding caches: a bounded in-memory LRU and a size-bounded on-disk store.

Keys are content hashes of one slice (its bytes, shape and dtype) plus a tag naming
the model weights, the preprocessing version and the encoder precision, so a slice
seen again - by another object, a later click, or a fresh process running the next
step of the challenge protocol - is never re-encoded. Embeddings are kept as float16
(2 MiB per ``256 x 64 x 64`` slice; the masks decoded from them agree with float32
ones to Dice >= 0.999 on the test images, see benchmarks/model_bench.py).

On disk: ``<dir>/<key[:2]>/<key>.npy``, written atomically (temporary file in the
same folder, fsync, ``os.replace``); files with a wrong size are ignored and removed.
When the folder grows beyond its bound, the least recently used files (by mtime,
refreshed on every hit) are deleted.

Environment:

``MEDSEGFM_CACHE_DIR``
    root of the on-disk caches (default: the user cache folder, e.g.
    ``~/.cache/napari-medsegfm``); this module uses its ``litemedsam/`` sub-folder.
    ``off`` (or ``0``/``none``) disables the disk cache.
``MEDSEGFM_LITEMEDSAM_DISK_CACHE_MB``
    disk bound in MiB (default 2048).
``MEDSEGFM_LITEMEDSAM_MEMORY_CACHE_MB``
    memory bound in MiB (default 512).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

__all__ = [
    "CACHE_DIR_ENV",
    "EMB_SHAPE",
    "slice_key",
    "default_cache_root",
    "MemoryLRU",
    "DiskCache",
    "EmbeddingCache",
]

log = logging.getLogger(__name__)

CACHE_DIR_ENV = "MEDSEGFM_CACHE_DIR"
DISK_MB_ENV = "MEDSEGFM_LITEMEDSAM_DISK_CACHE_MB"
MEM_MB_ENV = "MEDSEGFM_LITEMEDSAM_MEMORY_CACHE_MB"
EMB_SHAPE = (256, 64, 64)
EMB_BYTES = int(np.prod(EMB_SHAPE)) * 2  # float16
_OFF = {"off", "0", "none", "no", "false", "disable", "disabled"}


def slice_key(slice_array: np.ndarray, tag: str) -> str:
    """Hex key of one slice's content (bytes, shape, dtype) and the model/preprocessing ``tag``.

    Parameters
    ----------
    slice_array : np.ndarray
        One slice ``(Y, X)`` (or ``(Y, X, 3)``) as the encoder gets it.
    tag : str
        Model and preprocessing identifier (a different checkpoint gives other keys).

    Returns
    -------
    str
        40 hex digits (BLAKE2b, 20 bytes).
    """
    a = np.ascontiguousarray(slice_array)
    h = hashlib.blake2b(digest_size=20)
    h.update(f"{tag}|{a.shape}|{a.dtype.str}|".encode())
    h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def default_cache_root() -> Path | None:
    """``$MEDSEGFM_CACHE_DIR`` or the platform's user cache folder; ``None`` when disabled."""
    env = os.environ.get(CACHE_DIR_ENV)
    if env is not None:
        env = env.strip()
        if env.lower() in _OFF:
            return None
        if env:
            return Path(env).expanduser()
    try:
        import platformdirs

        return Path(platformdirs.user_cache_dir("napari-medsegfm", appauthor=False))
    except ImportError:  # pragma: no cover - platformdirs ships with napari
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(base) / "napari-medsegfm"


def _env_mb(name: str, default: float) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return int(default * 2**20)
    try:
        v = float(raw)
    except ValueError:
        raise ValueError(f"${name}={raw!r} is not a number of MiB") from None
    if v < 0:
        raise ValueError(f"${name}={raw!r} must be >= 0 MiB")
    return int(v * 2**20)


class MemoryLRU:
    """Thread-safe LRU of float16 ``(256, 64, 64)`` numpy arrays bounded by ``max_bytes``.

    Parameters
    ----------
    max_bytes : int
        Bound on the arrays' ``nbytes``; least recently used entries are evicted past it.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._d: OrderedDict[str, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> np.ndarray | None:
        """The array stored under ``key`` (now most recently used), or ``None``.

        Parameters
        ----------
        key : str
            A :func:`slice_key`.
        """
        with self._lock:
            v = self._d.get(key)
            if v is None:
                self.misses += 1
                return None
            self._d.move_to_end(key)
            self.hits += 1
            return v

    def put(self, key: str, value: np.ndarray) -> None:
        """Store ``value`` under ``key``, evicting the oldest entries past the bound.

        Parameters
        ----------
        key : str
            A :func:`slice_key`.
        value : np.ndarray
            Kept as given (not copied); an array larger than the whole bound is not stored.
        """
        if value.nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._d.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._d[key] = value
            self._bytes += value.nbytes
            while self._bytes > self.max_bytes and self._d:
                _, ev = self._d.popitem(last=False)
                self._bytes -= ev.nbytes

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._d.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._d)

    @property
    def nbytes(self) -> int:
        """Bytes held (sum of the arrays' ``nbytes``)."""
        return self._bytes


class DiskCache:
    """Embeddings as ``.npy`` files under ``root``, bounded by ``max_bytes`` (LRU by mtime).

    Parameters
    ----------
    root : Path
        The cache folder (``<root>/<key[:2]>/<key>.npy``).
    max_bytes : int
        Bound on the folder's size; <= 0 disables writing.
    """

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self._approx_bytes: int | None = None
        self.hits = 0
        self.misses = 0
        self.writes = 0

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        """The float16 ``(256, 64, 64)`` embedding stored under ``key``, or ``None``.

        An unreadable file, or one of another shape or dtype, is deleted and counts as a miss.

        Parameters
        ----------
        key : str
            A :func:`slice_key`.
        """
        p = self._path(key)
        try:
            arr = np.load(p, allow_pickle=False)
        except FileNotFoundError:
            self.misses += 1
            return None
        except (OSError, ValueError) as exc:
            log.warning("dropping unreadable cache file %s: %s", p, exc)
            self._remove(p)
            self.misses += 1
            return None
        if arr.shape != EMB_SHAPE or arr.dtype != np.float16:
            log.warning("dropping cache file %s of shape %s dtype %s", p, arr.shape, arr.dtype)
            self._remove(p)
            self.misses += 1
            return None
        try:
            os.utime(p)  # LRU order
        except OSError:
            pass
        self.hits += 1
        return arr

    @staticmethod
    def _remove(p: Path) -> None:
        try:
            p.unlink()
        except OSError:
            pass

    def put(self, key: str, value: np.ndarray) -> None:
        """Write ``value`` under ``key`` atomically (temp file, fsync, rename), then prune if over the bound.

        A failed write (full or read-only disk) is logged and ignored.

        Parameters
        ----------
        key : str
            A :func:`slice_key`; an existing entry is kept.
        value : np.ndarray
            Stored as float16.
        """
        if self.max_bytes <= 0:
            return
        p = self._path(key)
        if p.exists():
            return
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(f".{p.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            try:
                with open(tmp, "wb") as fh:
                    np.save(fh, np.ascontiguousarray(value, dtype=np.float16), allow_pickle=False)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, p)
            finally:
                if tmp.exists():
                    tmp.unlink()
        except OSError as exc:  # a full or read-only disk must not break segmentation
            log.warning("could not write embedding cache file %s: %s", p, exc)
            return
        self.writes += 1
        with self._lock:
            if self._approx_bytes is None:
                self._approx_bytes = self._scan_bytes()
            else:
                self._approx_bytes += value.nbytes + 128
            over = self._approx_bytes > self.max_bytes
        if over:
            self.prune()

    def _files(self) -> list[tuple[float, int, Path]]:
        out = []
        if not self.root.is_dir():
            return out
        for sub in self.root.iterdir():
            if not sub.is_dir():
                continue
            for f in sub.glob("*.npy"):
                try:
                    st = f.stat()
                except OSError:
                    continue
                out.append((st.st_mtime, st.st_size, f))
        return out

    def _scan_bytes(self) -> int:
        return sum(s for _, s, _ in self._files())

    def prune(self, target_fraction: float = 0.8) -> int:
        """Delete least recently used files until the folder holds ``target_fraction`` of the bound.

        Parameters
        ----------
        target_fraction : float
            Fraction of ``max_bytes`` to keep.

        Returns
        -------
        int
            The number of files removed.
        """
        with self._lock:
            files = sorted(self._files())
            total = sum(s for _, s, _ in files)
            goal = int(self.max_bytes * target_fraction)
            n = 0
            for _, size, f in files:
                if total <= goal:
                    break
                self._remove(f)
                total -= size
                n += 1
            self._approx_bytes = total
            if n:
                log.info("embedding cache %s: removed %d old files, %.0f MiB left", self.root, n, total / 2**20)
            return n

    def size_bytes(self) -> int:
        """Bytes of the cache files now on disk (scans the folder)."""
        return self._scan_bytes()


class EmbeddingCache:
    """Memory LRU in front of an optional disk cache.

    Parameters
    ----------
    memory_bytes : bound of the memory LRU (default ``$MEDSEGFM_LITEMEDSAM_MEMORY_CACHE_MB`` or 512 MiB)
    disk_dir : folder for the disk cache; ``None``: ``default_cache_root()/litemedsam``;
        ``False``: no disk cache
    disk_bytes : bound of the disk cache (default ``$MEDSEGFM_LITEMEDSAM_DISK_CACHE_MB`` or 2 GiB)
    """

    def __init__(self, memory_bytes: int | None = None, disk_dir: Path | str | bool | None = None,
                 disk_bytes: int | None = None) -> None:
        self.memory = MemoryLRU(_env_mb(MEM_MB_ENV, 512) if memory_bytes is None else memory_bytes)
        self.disk: DiskCache | None = None
        if disk_dir is not False:
            root: Path | None
            if disk_dir is None or disk_dir is True:
                base = default_cache_root()
                root = None if base is None else base / "litemedsam"
            else:
                root = Path(disk_dir)
            if root is not None:
                self.disk = DiskCache(root, _env_mb(DISK_MB_ENV, 2048) if disk_bytes is None else disk_bytes)

    def get(self, key: str) -> np.ndarray | None:
        """The float16 ``(256, 64, 64)`` embedding under ``key`` (memory first, then disk), or ``None``.

        A disk hit is copied into the memory LRU.

        Parameters
        ----------
        key : str
            A :func:`slice_key`.
        """
        v = self.memory.get(key)
        if v is not None:
            return v
        if self.disk is not None:
            v = self.disk.get(key)
            if v is not None:
                self.memory.put(key, v)
                return v
        return None

    def put(self, key: str, value: np.ndarray) -> None:
        """Store an embedding in memory and (when enabled) on disk.

        Parameters
        ----------
        key : str
            A :func:`slice_key`.
        value : np.ndarray
            ``(256, 64, 64)`` (or anything of that size), stored as float16.
        """
        v = np.ascontiguousarray(value, dtype=np.float16).reshape(EMB_SHAPE)
        self.memory.put(key, v)
        if self.disk is not None:
            self.disk.put(key, v)

    def stats(self) -> dict[str, int]:
        """Hit, miss and size counters.

        Returns
        -------
        dict of str to int
            ``memory_items``, ``memory_bytes``, ``memory_hits``, ``memory_misses`` and, with a
            disk cache, ``disk_hits``, ``disk_misses``, ``disk_writes``.
        """
        d = {"memory_items": len(self.memory), "memory_bytes": self.memory.nbytes,
             "memory_hits": self.memory.hits, "memory_misses": self.memory.misses}
        if self.disk is not None:
            d.update(disk_hits=self.disk.hits, disk_misses=self.disk.misses, disk_writes=self.disk.writes)
        return d

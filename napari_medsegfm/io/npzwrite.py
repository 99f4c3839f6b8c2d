"""Writing npz archives: new members deflated or stored, untouched members copied as raw zip entries.

:func:`rewrite_npz` writes a new npz where the members that are not replaced are copied
**as raw zip entries** (local header, compressed bytes, data descriptor) from the
:class:`~napari_medsegfm.io.npzfile.NpzReader` of the source: no decompression, no
re-compression, no re-pickling, so they stay byte-for-byte identical. The zip writer is
self-contained (zip64 aware) and does not rely on private parts of :mod:`zipfile`.
"""

from __future__ import annotations

import io
import os
import struct
import time
import zipfile
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from .npzfile import (
    _CENTRAL_FMT,
    _CENTRAL_SIG,
    _END64_FMT,
    _END_FMT,
    _IO_CHUNK,
    _LOC64_FMT,
    _LOCAL_FMT,
    _LOCAL_SIG,
    _OUT_CHUNK,
    _ZIP64_COUNT_LIMIT,
    _ZIP64_LIMIT,
    NpzReader,
    _strip_zip64,
)

__all__ = ["rewrite_npz", "write_npz"]

@dataclass
class _Entry:
    name: bytes
    flag_bits: int
    compress_type: int
    dostime: int
    dosdate: int
    crc: int
    compress_size: int
    file_size: int
    offset: int
    create_version: int = 45
    create_system: int = 3
    extract_version: int = 45
    internal_attr: int = 0
    external_attr: int = 0o600 << 16
    extra: bytes = b""
    comment: bytes = b""


def _dos_datetime(t: float | None = None) -> tuple[int, int]:
    y, mo, d, h, mi, s = time.localtime(t)[:6]
    y = max(y, 1980)
    return (h << 11) | (mi << 5) | (s // 2), ((y - 1980) << 9) | (mo << 5) | d


def _copy_range(src_fd: int, dst: IO[bytes], start: int, length: int) -> None:
    """Copy ``length`` bytes at ``start`` of ``src_fd`` to the current position of ``dst``."""
    dst.flush()
    pos = dst.tell()
    done = 0
    dst_fd = dst.fileno()
    cfr = getattr(os, "copy_file_range", None)
    if cfr is not None:
        try:
            while done < length:
                n = cfr(src_fd, dst_fd, length - done, start + done, pos + done)
                if n <= 0:
                    break
                done += n
        except OSError:
            pass  # cross-device, unsupported file system, ...: fall back to read/write
    while done < length:
        chunk = os.pread(src_fd, min(_IO_CHUNK, length - done), start + done)
        if not chunk:
            raise EOFError(f"source ends at {start + done}, expected {start + length}")
        os.pwrite(dst_fd, chunk, pos + done)
        done += len(chunk)
    dst.seek(pos + length)


class _NpzWriter:
    """Minimal zip64-aware writer for npz members (stored or deflated)."""

    def __init__(self, fh: IO[bytes], *, compresslevel: int = 6) -> None:
        self.fh = fh
        self.entries: list[_Entry] = []
        self.compresslevel = compresslevel
        self.names: set[bytes] = set()

    def _check_name(self, name: bytes) -> None:
        if name in self.names:
            raise ValueError(f"duplicate npz member {name.decode(errors='replace')!r}")
        self.names.add(name)

    def copy_raw(self, reader: NpzReader, key: str) -> None:
        info, start, end = reader.raw_entry(key)
        name = info.filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437")
        self._check_name(name)
        offset = self.fh.tell()
        _copy_range(reader.fileno, self.fh, start, end - start)
        dt = info.date_time
        self.entries.append(
            _Entry(
                name=name,
                flag_bits=info.flag_bits,
                compress_type=info.compress_type,
                dostime=(dt[3] << 11) | (dt[4] << 5) | (dt[5] // 2),
                dosdate=((dt[0] - 1980) << 9) | (dt[1] << 5) | dt[2],
                crc=info.CRC,
                compress_size=info.compress_size,
                file_size=info.file_size,
                offset=offset,
                create_version=info.create_version,
                create_system=info.create_system,
                extract_version=info.extract_version,
                internal_attr=info.internal_attr,
                external_attr=info.external_attr,
                extra=_strip_zip64(info.extra),
                comment=info.comment,
            )
        )

    def add_array(self, key: str, arr: np.ndarray, *, compress: bool, allow_pickle: bool = False) -> None:
        name = f"{key}.npy".encode()
        self._check_name(name)
        arr = np.asanyarray(arr)
        buf = io.BytesIO()
        if arr.dtype.hasobject:
            if not allow_pickle:
                raise ValueError(f"refusing to write object array '{key}' without allow_pickle")
            np.lib.format.write_array(buf, arr, allow_pickle=True)
            chunks: Iterable[bytes | memoryview] = [buf.getvalue()]
        else:
            chunks = [_npy_header_bytes(arr), *self._array_chunks(arr)]
        self._write_member(name, chunks, compress)

    @staticmethod
    def _array_chunks(arr: np.ndarray) -> list[memoryview]:
        """The array's bytes in the order its .npy header announces (C, or F for F-contiguous)."""
        fortran = arr.ndim > 1 and arr.flags.f_contiguous and not arr.flags.c_contiguous
        flat = (arr.T if fortran else np.ascontiguousarray(arr)).reshape(-1).view(np.uint8)
        mv = memoryview(flat)
        step = _OUT_CHUNK
        return [mv[i : i + step] for i in range(0, len(mv), step)] or [mv]

    def _write_member(self, name: bytes, chunks: Iterable[bytes | memoryview], compress: bool) -> None:
        fh = self.fh
        offset = fh.tell()
        dostime, dosdate = _dos_datetime()
        ctype = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        extra = struct.pack("<HHQQ", 1, 16, 0, 0)
        fh.write(struct.pack(_LOCAL_FMT, _LOCAL_SIG, 45, 0, 0, ctype, dostime, dosdate, 0,
                             _ZIP64_LIMIT, _ZIP64_LIMIT, len(name), len(extra)))
        fh.write(name)
        fh.write(extra)
        crc = 0
        usize = 0
        csize = 0
        comp = zlib.compressobj(self.compresslevel, zlib.DEFLATED, -zlib.MAX_WBITS) if compress else None
        for ch in chunks:
            crc = zlib.crc32(ch, crc)
            usize += len(ch)
            if comp is not None:
                out = comp.compress(ch)
                if out:
                    fh.write(out)
                    csize += len(out)
            else:
                fh.write(ch)
                csize += len(ch)
        if comp is not None:
            out = comp.flush()
            fh.write(out)
            csize += len(out)
        end = fh.tell()
        fh.seek(offset + 14)
        fh.write(struct.pack("<L", crc))
        fh.seek(offset + 30 + len(name) + 4)
        fh.write(struct.pack("<QQ", usize, csize))
        fh.seek(end)
        self.entries.append(_Entry(name=name, flag_bits=0, compress_type=ctype, dostime=dostime, dosdate=dosdate,
                                   crc=crc, compress_size=csize, file_size=usize, offset=offset))

    def finish(self) -> None:
        fh = self.fh
        cd_start = fh.tell()
        for e in self.entries:
            z64: list[int] = []
            fsize, csize, off = e.file_size, e.compress_size, e.offset
            if fsize >= _ZIP64_LIMIT or csize >= _ZIP64_LIMIT:
                z64 += [fsize, csize]
                fsize = csize = _ZIP64_LIMIT
            if off >= _ZIP64_LIMIT:
                z64.append(off)
                off = _ZIP64_LIMIT
            extra = e.extra
            ext_ver = e.extract_version
            if z64:
                extra = struct.pack("<HH" + "Q" * len(z64), 1, 8 * len(z64), *z64) + extra
                ext_ver = max(ext_ver, 45)
            fh.write(struct.pack(_CENTRAL_FMT, _CENTRAL_SIG, e.create_version, e.create_system, ext_ver, 0,
                                 e.flag_bits, e.compress_type, e.dostime, e.dosdate, e.crc, csize, fsize,
                                 len(e.name), len(extra), len(e.comment), 0, e.internal_attr, e.external_attr, off))
            fh.write(e.name)
            fh.write(extra)
            fh.write(e.comment)
        cd_end = fh.tell()
        n = len(self.entries)
        cd_size = cd_end - cd_start
        if n >= _ZIP64_COUNT_LIMIT or cd_start >= _ZIP64_LIMIT or cd_size >= _ZIP64_LIMIT:
            fh.write(struct.pack(_END64_FMT, b"PK\x06\x06", 44, 45, 45, 0, 0, n, n, cd_size, cd_start))
            fh.write(struct.pack(_LOC64_FMT, b"PK\x06\x07", 0, cd_end, 1))
            n16 = min(n, _ZIP64_COUNT_LIMIT)
            fh.write(struct.pack(_END_FMT, b"PK\x05\x06", 0, 0, n16, n16,
                                 min(cd_size, _ZIP64_LIMIT), min(cd_start, _ZIP64_LIMIT), 0))
        else:
            fh.write(struct.pack(_END_FMT, b"PK\x05\x06", 0, 0, n, n, cd_size, cd_start, 0))


def _npy_header_bytes(arr: np.ndarray) -> bytes:
    """The exact ``.npy`` header ``np.save`` would write for ``arr``."""
    buf = io.BytesIO()
    d = np.lib.format.header_data_from_array_1_0(arr)
    try:
        np.lib.format.write_array_header_1_0(buf, d)
    except ValueError:  # header too long for v1
        buf = io.BytesIO()
        np.lib.format.write_array_header_2_0(buf, d)
    return buf.getvalue()


def write_npz(
    fh: IO[bytes],
    arrays: Mapping[str, np.ndarray],
    *,
    source: NpzReader | None = None,
    replace: Mapping[str, np.ndarray] | None = None,
    drop: Iterable[str] = (),
    compress: bool = True,
    compresslevel: int = 6,
    allow_pickle: bool = False,
) -> None:
    """Write an npz to the open binary file ``fh``.

    Members of ``source`` are copied raw (byte-identical zip entries), in their order,
    except those in ``replace`` (written from the given array at the same position) and
    ``drop`` (omitted). ``arrays`` are appended after them.

    Parameters
    ----------
    fh : binary file
        Open for writing (and seeking) at its start.
    arrays : mapping of str to np.ndarray
        New members.
    source : NpzReader, optional
        The archive whose members are copied.
    replace : mapping of str to np.ndarray, optional
        Members of ``source`` to write anew (or to add when ``source`` lacks them).
    drop : iterable of str
        Members of ``source`` to leave out.
    compress : bool
        Deflate the new members (copied ones keep their compression).
    compresslevel : int
        zlib level of the new members.
    allow_pickle : bool
        Accept object arrays among the new members.

    Raises
    ------
    ValueError
        A duplicate member name, or an object array without ``allow_pickle``.
    """
    w = _NpzWriter(fh, compresslevel=compresslevel)
    replace = dict(replace or {})
    drop = set(drop)
    written: set[str] = set()
    if source is not None:
        for key in source.keys():
            if key in drop:
                continue
            if key in replace:
                w.add_array(key, replace[key], compress=compress, allow_pickle=allow_pickle)
                written.add(key)
            else:
                w.copy_raw(source, key)
                written.add(key)
    for key, arr in {**replace, **dict(arrays)}.items():
        if key not in written:
            w.add_array(key, arr, compress=compress, allow_pickle=allow_pickle)
            written.add(key)
    w.finish()


def rewrite_npz(
    path: str | os.PathLike[str],
    replace: Mapping[str, np.ndarray],
    *,
    source: str | os.PathLike[str] | None = "self",
    drop: Iterable[str] = (),
    compress: bool | None = None,
    compresslevel: int = 6,
    allow_pickle: bool = False,
) -> Path:
    """Atomically write ``path`` = ``source`` with ``replace`` members set and ``drop`` members removed.

    Every other member is copied raw (byte-identical).

    Parameters
    ----------
    path : path-like
        The npz to write.
    replace : mapping of str to np.ndarray
        Members to set.
    source : path-like, "self" or None
        ``"self"`` (default) keeps the members of ``path`` itself when it exists; ``None``
        writes a fresh archive; a path copies from that archive.
    drop : iterable of str
        Members to leave out.
    compress : bool, optional
        ``None`` follows the source (deflated if any source member is; a fresh archive is deflated).
    compresslevel : int
        zlib level of the new members.
    allow_pickle : bool
        Accept object arrays among the new members.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        A corrupt source archive, or an object array without ``allow_pickle``.
    """
    from .atomic import atomic_writer

    target = Path(path)
    if isinstance(source, str) and source == "self":
        src_path = target if target.exists() else None
    else:
        src_path = Path(source) if source is not None else None
    reader = NpzReader(src_path) if src_path is not None else None
    try:
        if compress is None:
            compress = True if reader is None else any(
                i.compress_type != zipfile.ZIP_STORED for i in reader.infos.values()
            )
        with atomic_writer(target) as fh:
            write_npz(fh, {}, source=reader, replace=replace, drop=drop, compress=compress,
                      compresslevel=compresslevel, allow_pickle=allow_pickle)
    finally:
        if reader is not None:
            reader.close()
    return target

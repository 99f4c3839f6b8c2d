"""Low-level npz access: fast member reads and rewrites that copy untouched members raw.

An ``.npz`` is a zip archive of ``<key>.npy`` members, stored or deflated. This module

* reads a member's ``.npy`` header without decompressing the rest (:meth:`NpzReader.header`);
* reads a member into a fresh writable array in one pass, with the zip CRC checked
  (:meth:`NpzReader.read`); pickled object members go through
  :mod:`~napari_medsegfm.io.safe_pickle`, never through ``pickle`` itself;
* writes a new npz where the members that are not replaced are copied **as raw zip
  entries** (local header, compressed bytes, data descriptor): no decompression, no
  re-compression, no re-pickling, so they stay byte-for-byte identical
  (:func:`rewrite_npz`). The zip writer is self-contained (zip64 aware) and does not
  rely on private parts of :mod:`zipfile`.

Errors are ``ValueError`` naming the file, the member and what was expected.
"""

from __future__ import annotations

import io
import logging
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

from .limits import array_nbytes, check_array_bytes, format_bytes, max_pickle_bytes
from .safe_pickle import UnsafePickleError, safe_loads

__all__ = ["NpzReader", "NpyHeader", "read_npy_header", "rewrite_npz", "write_npz", "npz_keys"]

logger = logging.getLogger(__name__)

_LOCAL_SIG = b"PK\x03\x04"
_CENTRAL_SIG = b"PK\x01\x02"
_DESCRIPTOR_SIG = b"PK\x07\x08"
_LOCAL_FMT = "<4s2B4HL2L2H"  # 30 bytes
_CENTRAL_FMT = "<4s4B4HL2L5H2L"  # 46 bytes
_END_FMT = "<4s4H2LH"
_END64_FMT = "<4sQ2H2L4Q"
_LOC64_FMT = "<4sLQL"
_ZIP64_LIMIT = 0xFFFFFFFF
_ZIP64_COUNT_LIMIT = 0xFFFF
_READ_CHUNK = 1 << 16  # compressed bytes per read (keeps zlib's output cache-hot)
_OUT_CHUNK = 1 << 20  # decompressed bytes per step / uncompressed bytes per compress call
_IO_CHUNK = 1 << 24  # raw copy fallback


#: longest ``.npy`` header read (numpy writes a few hundred bytes; its own parser allows 10000)
MAX_NPY_HEADER_BYTES = 1 << 16


@dataclass(frozen=True)
class NpyHeader:
    """What an ``.npy`` header says: ``shape``, ``dtype``, ``fortran_order``; ``offset``
    is where the array bytes start inside the (uncompressed) member."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    offset: int

    @property
    def nbytes(self) -> int:
        """``prod(shape) * itemsize``, exact (no int64 wrap-around for hostile shapes)."""
        return array_nbytes(self.shape, self.dtype.itemsize)


def read_npy_header(fp: IO[bytes]) -> NpyHeader:
    """Parse an ``.npy`` header from ``fp`` (a file or a zip member stream).

    The header length field is checked against :data:`MAX_NPY_HEADER_BYTES` *before* the
    header is read (numpy reads whatever length a file declares, up to 4 GiB), and the
    shape must be non-negative integers. ``ValueError`` otherwise.
    """
    magic = fp.read(8)
    if len(magic) != 8 or magic[:6] != b"\x93NUMPY":
        raise ValueError("not an .npy array (no \\x93NUMPY magic)")
    major = magic[6]
    if major == 1:
        raw_len = fp.read(2)
        hlen = struct.unpack("<H", raw_len)[0] if len(raw_len) == 2 else -1
    elif major in (2, 3):
        raw_len = fp.read(4)
        hlen = struct.unpack("<I", raw_len)[0] if len(raw_len) == 4 else -1
    else:
        raise ValueError(f"unsupported .npy format version {major}.{magic[7]}")
    if hlen < 0:
        raise ValueError("the .npy header ends early")
    if hlen > MAX_NPY_HEADER_BYTES:
        raise ValueError(f".npy header declares {hlen} bytes; at most {MAX_NPY_HEADER_BYTES} are accepted")
    body = fp.read(hlen)
    if len(body) != hlen:
        raise ValueError(f"the .npy header ends early ({len(body)} of {hlen} bytes)")
    buf = io.BytesIO(magic + raw_len + body)
    np.lib.format.read_magic(buf)
    read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(buf)
    if not all(isinstance(s, int) and s >= 0 for s in shape):
        raise ValueError(f".npy header has shape {shape}; expected non-negative integers")
    return NpyHeader(tuple(int(s) for s in shape), np.dtype(dtype), bool(fortran), len(magic) + len(raw_len) + hlen)


_read_npy_header = read_npy_header


def _parse_extra(extra: bytes) -> list[tuple[int, bytes]]:
    out = []
    i = 0
    while i + 4 <= len(extra):
        hid, size = struct.unpack_from("<HH", extra, i)
        out.append((hid, extra[i + 4 : i + 4 + size]))
        i += 4 + size
    return out


def _strip_zip64(extra: bytes) -> bytes:
    return b"".join(struct.pack("<HH", h, len(d)) + d for h, d in _parse_extra(extra) if h != 1)


class NpzReader:
    """Random access to the members of an npz file.

    Parameters
    ----------
    path : path-like
        The ``.npz`` file.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        Not a zip archive (e.g. truncated), or a member is not ``<key>.npy``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such npz file")
        try:
            # one open file for the zip directory and the raw reads: a file replaced (atomically) by a
            # writer meanwhile cannot mix the old directory with the new bytes
            self._fh = open(self.path, "rb")  # noqa: SIM115 - closed in close()
        except PermissionError:
            raise PermissionError(f"{self.path}: permission denied (the file exists but may not be read; "
                                  "check its permissions)") from None
        except OSError as exc:
            raise ValueError(f"{self.path}: cannot be opened ({exc.strerror})") from None
        try:
            self._zf = zipfile.ZipFile(self._fh)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            self._fh.close()
            raise ValueError(
                f"{self.path}: not a valid npz (zip) archive ({exc}); the file may be truncated or corrupt"
            ) from None
        self.infos: dict[str, zipfile.ZipInfo] = {}
        for info in self._zf.infolist():
            if info.is_dir():
                continue
            name = info.filename
            key = name[:-4] if name.endswith(".npy") else name
            self.infos[key] = info
        self._headers: dict[str, NpyHeader] = {}

    # context manager --------------------------------------------------------------
    def __enter__(self) -> NpzReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._zf.close()
        self._fh.close()

    # inspection -------------------------------------------------------------------
    def keys(self) -> list[str]:
        """Member names without ``.npy``, in archive order."""
        return list(self.infos)

    def __contains__(self, key: object) -> bool:
        return key in self.infos

    def header(self, key: str) -> NpyHeader:
        """The ``.npy`` header of ``key`` (reads only the first bytes of the member)."""
        if key not in self._headers:
            info = self._info(key)
            try:
                with self._zf.open(info) as fp:
                    self._headers[key] = _read_npy_header(fp)
            except (ValueError, zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
                raise ValueError(f"{self.path}: member '{key}' is not a valid .npy array ({exc})") from None
        return self._headers[key]

    def _info(self, key: str) -> zipfile.ZipInfo:
        try:
            return self.infos[key]
        except KeyError:
            raise KeyError(f"{self.path}: no member '{key}' (members: {', '.join(self.infos)})") from None

    def _data_span(self, info: zipfile.ZipInfo) -> tuple[int, int]:
        """(start of compressed data, end of the entry incl. data descriptor) in the file."""
        fh = self._fh
        fh.seek(info.header_offset)
        head = fh.read(30)
        if len(head) != 30 or head[:4] != _LOCAL_SIG:
            raise ValueError(f"{self.path}: member '{info.filename}' has a broken local zip header")
        fields = struct.unpack(_LOCAL_FMT, head)
        nlen, elen = fields[10], fields[11]
        extra = fh.read(nlen + elen)[nlen:]
        start = info.header_offset + 30 + nlen + elen
        end = start + info.compress_size
        if info.flag_bits & 0x08:
            zip64 = any(h == 1 for h, _ in _parse_extra(extra))
            fh.seek(end)
            sig = fh.read(4)
            size = 20 if zip64 else 12
            end += size + (4 if sig == _DESCRIPTOR_SIG else 0)
        return start, end

    # reading ----------------------------------------------------------------------
    def read(self, key: str, *, allow_object: bool = True) -> np.ndarray:
        """Read member ``key`` into a new writable array.

        Object (pickled) members go through the restricted unpickler; with
        ``allow_object=False`` they are refused. The zip CRC is verified.

        Raises
        ------
        ValueError
            Truncated/corrupt member, CRC mismatch, refused pickle (the message names
            the file and the member).
        """
        info = self._info(key)
        hdr = self.header(key)
        if hdr.dtype.hasobject:
            if not allow_object:
                raise ValueError(f"{self.path}: member '{key}' is a pickled object array; not expected here")
            cap = max_pickle_bytes()
            if info.file_size > cap:
                raise UnsafePickleError(
                    f"{self.path}: member '{key}' is a pickle of {format_bytes(info.file_size)}, more than the "
                    f"limit of {format_bytes(cap)} (MEDSEGFM_MAX_PICKLE_BYTES); not read")
            try:
                with self._zf.open(info) as fp:
                    raw = fp.read(cap + 1)
            except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
                raise ValueError(f"{self.path}: member '{key}' is corrupt ({exc})") from None
            if len(raw) > cap:
                raise UnsafePickleError(f"{self.path}: member '{key}' holds more than {format_bytes(cap)} of pickle "
                                        "(MEDSEGFM_MAX_PICKLE_BYTES); not read")
            try:
                arr = safe_loads(memoryview(raw)[hdr.offset :])
            except UnsafePickleError as exc:
                raise UnsafePickleError(f"{self.path}: member '{key}' refused: {exc}") from None
            if not isinstance(arr, np.ndarray):
                raise ValueError(f"{self.path}: member '{key}' unpickled to {type(arr).__name__}, expected an array")
            return arr
        expected = hdr.offset + hdr.nbytes
        if info.file_size != expected:
            raise ValueError(
                f"{self.path}: member '{key}' holds {info.file_size} bytes, but its header "
                f"(shape {hdr.shape}, dtype {hdr.dtype}) needs {expected}"
            )
        check_array_bytes(hdr.nbytes, f"{self.path}: member '{key}' (shape {hdr.shape}, dtype {hdr.dtype})")
        out = np.empty(hdr.nbytes, dtype=np.uint8)
        try:
            if info.compress_type == zipfile.ZIP_STORED:
                crc = self._read_stored(info, hdr, out)
            elif info.compress_type == zipfile.ZIP_DEFLATED:
                crc = self._read_deflated(info, hdr, out)
            else:
                with self._zf.open(info) as fp:
                    fp.seek(hdr.offset) if fp.seekable() else fp.read(hdr.offset)
                    n = fp.readinto(memoryview(out))
                    if n != hdr.nbytes:
                        raise EOFError(f"read {n} of {hdr.nbytes} bytes")
                crc = info.CRC
        except (zlib.error, EOFError, OSError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{self.path}: member '{key}' is truncated or corrupt ({exc})") from None
        if crc != info.CRC:
            raise ValueError(f"{self.path}: member '{key}' fails its CRC check (file corrupt)")
        arr = out.view(hdr.dtype)
        if hdr.fortran_order:
            return arr.reshape(hdr.shape[::-1]).T
        return arr.reshape(hdr.shape)

    def _read_stored(self, info: zipfile.ZipInfo, hdr: NpyHeader, out: np.ndarray) -> int:
        start, _ = self._data_span(info)
        fh = self._fh
        fh.seek(start)
        head = fh.read(hdr.offset)
        mv = memoryview(out)
        n = 0
        while n < hdr.nbytes:
            got = fh.readinto(mv[n:])
            if not got:
                raise EOFError(f"read {n} of {hdr.nbytes} bytes")
            n += got
        return zlib.crc32(out, zlib.crc32(head))

    def _read_deflated(self, info: zipfile.ZipInfo, hdr: NpyHeader, out: np.ndarray) -> int:
        start, _ = self._data_span(info)
        fh = self._fh
        fh.seek(start)
        remaining = info.compress_size
        dec = zlib.decompressobj(-zlib.MAX_WBITS)
        crc = 0
        skip = hdr.offset  # npy header bytes still to skip
        pos = 0
        mv = memoryview(out)
        pending = b""
        while True:
            if not pending:
                if remaining <= 0:
                    break
                pending = fh.read(min(_READ_CHUNK, remaining))
                if not pending:
                    raise EOFError("compressed data ends early")
                remaining -= len(pending)
            piece = dec.decompress(pending, _OUT_CHUNK)
            pending = dec.unconsumed_tail
            if piece:
                crc = zlib.crc32(piece, crc)
                if skip:
                    cut = min(skip, len(piece))
                    skip -= cut
                    piece = memoryview(piece)[cut:]
                k = len(piece)
                if pos + k > hdr.nbytes:
                    raise EOFError("member decompresses to more bytes than its header says")
                mv[pos : pos + k] = piece
                pos += k
        tail = dec.flush()
        if tail:
            crc = zlib.crc32(tail, crc)
            if pos + len(tail) - skip > hdr.nbytes:
                raise EOFError("member decompresses to more bytes than its header says")
            tail = tail[skip:]
            mv[pos : pos + len(tail)] = tail
            pos += len(tail)
        if pos != hdr.nbytes or not dec.eof:
            raise EOFError(f"decompressed {pos} of {hdr.nbytes} bytes")
        return crc

    def raw_entry(self, key: str) -> tuple[zipfile.ZipInfo, int, int]:
        """``(info, start, end)``: the byte range of the whole zip entry of ``key``."""
        info = self._info(key)
        _, end = self._data_span(info)
        return info, info.header_offset, end

    @property
    def fileno(self) -> int:
        return self._fh.fileno()


def npz_keys(path: str | os.PathLike[str]) -> list[str] | None:
    """Member keys of an npz, or ``None`` if it is not a readable zip (never raises)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return [n[:-4] if n.endswith(".npy") else n for n in zf.namelist()]
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return None


# ----------------------------------------------------------------------------- writing
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
    ``drop`` (omitted). ``arrays`` are appended after them. New members are deflated
    when ``compress``.
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
    """Atomically write ``path`` = ``source`` with ``replace`` members set and ``drop``
    members removed; every other member is copied raw.

    ``source="self"`` (default) keeps the members of ``path`` itself when it exists;
    ``source=None`` writes a fresh archive. ``compress=None`` follows the source
    (deflated if any source member is).
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

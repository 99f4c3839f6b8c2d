"""Low-level npz access: fast member reads and rewrites that copy untouched members raw.

An ``.npz`` is a zip archive of ``<key>.npy`` members, stored or deflated. This module

* reads a member's ``.npy`` header without decompressing the rest (:meth:`NpzReader.header`);
* reads a member into a fresh writable array in one pass, with the zip CRC checked
  (:meth:`NpzReader.read`); pickled object members go through
  :mod:`~napari_medsegfm.io.safe_pickle`, never through ``pickle`` itself;
* and, in :mod:`~napari_medsegfm.io.npzwrite`, writes a new npz where the members that
  are not replaced are copied **as raw zip entries** (local header, compressed bytes,
  data descriptor): no decompression, no re-compression, no re-pickling, so they stay
  byte-for-byte identical (:func:`~napari_medsegfm.io.npzwrite.rewrite_npz`).

Errors are ``ValueError`` naming the file, the member and what was expected.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from .limits import array_nbytes, check_array_bytes, format_bytes, max_pickle_bytes
from .safe_pickle import UnsafePickleError, safe_loads

__all__ = ["NpzReader", "NpyHeader", "read_npy_header", "npz_keys"]

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
    """What an ``.npy`` header says.

    Parameters
    ----------
    shape : tuple of int
        Array shape.
    dtype : np.dtype
        Element type.
    fortran_order : bool
        Column-major data.
    offset : int
        Where the array bytes start inside the (uncompressed) member.
    """

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
    shape must be non-negative integers.

    Parameters
    ----------
    fp : binary file
        Positioned at the start of the ``.npy`` data.

    Returns
    -------
    NpyHeader

    Raises
    ------
    ValueError
        Not an ``.npy`` header, an unknown version, an oversized header, or a bad shape.
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
        """Close the archive and its file."""
        self._zf.close()
        self._fh.close()

    # inspection -------------------------------------------------------------------
    def keys(self) -> list[str]:
        """Member names without ``.npy``, in archive order."""
        return list(self.infos)

    def __contains__(self, key: object) -> bool:
        return key in self.infos

    def header(self, key: str) -> NpyHeader:
        """The ``.npy`` header of ``key`` (reads only the first bytes of the member; cached).

        Parameters
        ----------
        key : str
            Member name without ``.npy``.

        Returns
        -------
        NpyHeader

        Raises
        ------
        KeyError
            No such member.
        ValueError
            The member is not a valid ``.npy`` array.
        """
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

        Parameters
        ----------
        key : str
            Member name without ``.npy``.
        allow_object : bool
            Accept pickled object members.

        Returns
        -------
        np.ndarray

        Raises
        ------
        KeyError
            No such member.
        ValueError
            Truncated/corrupt member, CRC mismatch, a size above the limits, refused pickle
            (the message names the file and the member).
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
        """The byte range of the whole zip entry of ``key`` (for raw copies).

        Parameters
        ----------
        key : str
            Member name without ``.npy``.

        Returns
        -------
        (info, start, end)
            The ``zipfile.ZipInfo`` and the entry's start and end offsets in the file
            (local header to end of data descriptor).
        """
        info = self._info(key)
        _, end = self._data_span(info)
        return info, info.header_offset, end

    @property
    def fileno(self) -> int:
        """The open file's descriptor."""
        return self._fh.fileno()


def npz_keys(path: str | os.PathLike[str]) -> list[str] | None:
    """Member keys of an npz (``.npy`` stripped), or ``None`` if it is not a readable zip. Never raises.

    Parameters
    ----------
    path : path-like
        The file.

    Returns
    -------
    list of str or None
    """
    try:
        with zipfile.ZipFile(path) as zf:
            return [n[:-4] if n.endswith(".npy") else n for n in zf.namelist()]
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return None

"""Writers of hostile files: zip archives with any declared sizes, npy headers, NIfTI and PNG
headers declaring what they do not hold, HDF5 datasets declaring 20 GiB in a few KB.

Everything is small on disk (the largest file is a real 256 MiB zip bomb of 250 KB).
"""

from __future__ import annotations

import gzip
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np


# ----------------------------------------------------------------------------- zip / npy
def npy_header(shape: tuple[int, ...], descr: str = "|u1", *, version: int = 1) -> bytes:
    """An ``.npy`` header declaring ``shape``/``descr`` (nothing is checked: hostile shapes allowed)."""
    body = repr({"descr": descr, "fortran_order": False, "shape": tuple(shape)}).encode("latin1")
    pre = 10 if version == 1 else 12
    pad = (-(pre + len(body) + 1)) % 64
    body = body + b" " * pad + b"\n"
    if version == 1:
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body
    return b"\x93NUMPY\x02\x00" + struct.pack("<I", len(body)) + body


def npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asanyarray(arr), allow_pickle=True)
    return buf.getvalue()


def raw_zip(path: Path, members: list[tuple[str, bytes, int, int, int]]) -> Path:
    """A zip of ``(name, stored bytes, method, crc, declared uncompressed size)`` members.

    The declared size goes into the zip headers as given (zip64 when it needs 8 bytes), so a
    member can claim 20 GiB while holding a few bytes.
    """
    out = bytearray()
    central = bytearray()
    for name, data, method, crc, usize in members:
        nm = name.encode()
        off = len(out)
        z64 = usize >= 0xFFFFFFFF or len(data) >= 0xFFFFFFFF
        extra = struct.pack("<HHQQ", 1, 16, usize, len(data)) if z64 else b""
        cs, us = (0xFFFFFFFF, 0xFFFFFFFF) if z64 else (len(data), usize)
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", 45, 0, method, 0, 0, crc, cs, us, len(nm), len(extra))
        out += nm + extra + data
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 45, 45, 0, method, 0, 0, crc, cs, us, len(nm),
                               len(extra), 0, 0, 0, 0o644 << 16, off)
        central += nm + extra
    cd_off = len(out)
    out += central
    out += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central), cd_off, 0)
    path.write_bytes(bytes(out))
    return path


def member(name: str, payload: bytes, *, declared: int | None = None, deflate: bool = True,
           crc: int | None = None) -> tuple[str, bytes, int, int, int]:
    """A zip member holding ``payload`` (deflated) that declares ``declared`` bytes uncompressed."""
    data = zlib.compress(payload, 6)[2:-4] if deflate else payload
    return (name, data, 8 if deflate else 0, zlib.crc32(payload) if crc is None else crc,
            len(payload) if declared is None else declared)


def deflated(head: bytes, filler: bytes, repeats: int) -> tuple[bytes, int]:
    """(raw deflate stream of ``head`` + ``repeats`` x ``filler``, its CRC-32), built piece by piece:
    a zip bomb is a few hundred KB to write and never held uncompressed."""
    c = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [c.compress(head)]
    crc = zlib.crc32(head)
    for _ in range(repeats):
        parts.append(c.compress(filler))
        crc = zlib.crc32(filler, crc)
    parts.append(c.flush())
    return b"".join(parts), crc


def small_case_members(shape: tuple[int, int, int] = (5, 7, 11)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"imgs": rng.integers(0, 255, shape, dtype=np.uint8), "spacing": np.array([1.0, 1.0, 2.0])}


def npz(path: Path, arrays: dict[str, np.ndarray], extra: list[tuple[str, bytes, int, int, int]] = ()) -> Path:
    """An npz of ``arrays`` (+ raw ``extra`` members, e.g. a hostile pickle)."""
    members = [member(f"{k}.npy", npy(v)) for k, v in arrays.items()]
    return raw_zip(path, members + list(extra))


def pickled_member(key: str, pickle_bytes: bytes) -> tuple[str, bytes, int, int, int]:
    """An object-array ``.npy`` member whose pickle is ``pickle_bytes``."""
    return member(f"{key}.npy", npy_header((1,), "|O") + pickle_bytes)


# ----------------------------------------------------------------------------- NIfTI
def nifti_bytes(dims: tuple[int, ...], *, dtype: str = "int16", version: int = 1) -> bytes:
    """A NIfTI-1/2 file (uncompressed bytes) whose header declares ``dims`` but holds 8 voxels."""
    import tempfile

    import nibabel as nib

    cls = nib.Nifti1Image if version == 1 else nib.Nifti2Image
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d) / "x.nii"
        nib.save(cls(np.zeros((2, 2, 2), dtype), np.eye(4)), str(tmp))
        hdr = bytearray(tmp.read_bytes())
    d_ = [len(dims), *dims, *([1] * (7 - len(dims)))]
    if version == 1:
        hdr[40:56] = struct.pack("<8h", *d_)
    else:
        hdr[16:80] = struct.pack("<8q", *d_)
    return bytes(hdr)


def write_nifti(path: Path, dims: tuple[int, ...], **kw) -> Path:
    raw = nifti_bytes(dims, **kw)
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return path


def nifti_with_values(path: Path, values: np.ndarray) -> Path:
    import nibabel as nib

    nib.save(nib.Nifti1Image(values.astype(np.float32), np.diag([1.0, 1.0, 2.0, 1.0])), str(path))
    return path


# ----------------------------------------------------------------------------- HDF5
def h5_declaring(path: Path, datasets: dict[str, tuple[tuple[int, ...], str]],
                 real: dict[str, np.ndarray] | None = None) -> Path:
    """An HDF5 file with chunked, compressed datasets that declare ``shape``/``dtype`` but hold no data."""
    import h5py

    with h5py.File(path, "w") as f:
        for k, (shape, dt) in datasets.items():
            f.create_dataset(k, shape=shape, dtype=dt, chunks=tuple(min(64, s) for s in shape), compression="gzip")
        for k, v in (real or {}).items():
            f.create_dataset(k, data=v)
    return path


# ----------------------------------------------------------------------------- PNG
def png_declaring(path: Path, width: int, height: int, *, mode: int = 0) -> Path:
    """A PNG whose IHDR declares ``width`` x ``height`` (grey 8-bit) with a tiny IDAT."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, mode, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def small_png(path: Path, size: int = 8, value: int = 100) -> Path:
    from PIL import Image

    Image.fromarray(np.full((size, size), value, np.uint8)).save(path)
    return path


# ----------------------------------------------------------------------------- JSON
def deep_json(path: Path, depth: int = 100_000) -> Path:
    path.write_text("[" * depth + "]" * depth)
    return path


def json_file(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj))
    return path

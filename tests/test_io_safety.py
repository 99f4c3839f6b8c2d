"""The restricted unpickler: real CVPR pickles load, anything else is refused and nothing runs."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from napari_medsegfm.io import UnsafePickleError, detect_format, load_case, safe_load_npz
from napari_medsegfm.io.reader import napari_get_reader
from napari_medsegfm.io.safe_pickle import safe_loads, scan_pickle


class _Payload:
    """Pickles to ``os.system(command)``."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _EvalPayload:
    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return (eval, (self.code,))


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=True)
    return buf.getvalue()


def _malicious_npz(path: Path, marker: Path, member: str = "boxes") -> Path:
    """A CVPR-looking npz whose pickled member runs ``touch marker`` when unpickled."""
    evil = np.empty(1, dtype=object)
    evil[0] = _Payload(f"touch {marker}")
    imgs = np.zeros((4, 8, 8), np.uint8)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("imgs.npy", _npy_bytes(imgs))
        zf.writestr("spacing.npy", _npy_bytes(np.array([1.0, 1.0, 1.0])))
        zf.writestr(f"{member}.npy", _npy_bytes(evil))
    return path


def test_real_cvpr25_pickles_match_numpy(shared_data):
    path = shared_data / "cvpr25/imgs/CT_AMOS_amos_0018.npz"
    ours = safe_load_npz(path)
    ref = np.load(path, allow_pickle=True)  # trusted file from the manifest
    assert set(ours) == set(ref.files)
    assert ours["text_prompts"] == ref["text_prompts"].item()
    assert [dict(b) for b in ours["boxes"]] == [dict(b) for b in ref["boxes"]]
    assert isinstance(ours["boxes"][0]["z_min"], np.int64)
    assert np.array_equal(ours["imgs"], ref["imgs"])


@pytest.mark.parametrize("member", ["boxes", "text_prompts", "clicks"])
def test_malicious_npz_is_refused_and_executes_nothing(tmp_path, member):
    marker = tmp_path / "pwned"
    path = _malicious_npz(tmp_path / f"evil_{member}.npz", marker, member)
    assert detect_format(path) == "cvpr25_npz"  # claimed (it looks like a case) ...
    with pytest.raises(ValueError) as ei:  # ... and refused when read
        load_case(path)
    msg = str(ei.value)
    assert str(path) in msg and f"'{member}'" in msg and ("posix.system" in msg or "os.system" in msg)
    with pytest.raises(UnsafePickleError):
        safe_load_npz(path)
    reader = napari_get_reader(str(path))
    assert reader is not None
    with pytest.raises(ValueError):
        reader(str(path))
    assert not marker.exists()


def test_the_malicious_file_really_is_malicious(tmp_path):
    """Control: plain ``np.load(allow_pickle=True)`` runs the payload (in a child process)."""
    marker = tmp_path / "pwned"
    path = _malicious_npz(tmp_path / "evil.npz", marker)
    code = f"import numpy as np; np.load({str(path)!r}, allow_pickle=True)['boxes']"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert marker.exists()


@pytest.mark.parametrize(
    "obj",
    [
        _EvalPayload("__import__('os').getcwd()"),
        {"ok": 1, "bad": _Payload("true")},
    ],
)
def test_other_payloads_refused(obj):
    for proto in (0, 2, 4):
        data = pickle.dumps(obj, protocol=proto)
        with pytest.raises(UnsafePickleError):
            safe_loads(data)


def test_forbidden_opcodes_refused():
    # protocol-0 INST opcode naming an allowed-looking class is refused by the scan
    data = b"(i__builtin__\nobject\n."
    with pytest.raises(UnsafePickleError, match="INST"):
        scan_pickle(data)
    with pytest.raises(UnsafePickleError, match="PERSID"):
        safe_loads(b"\x80\x02X\x01\x00\x00\x00aQ.")  # BINPERSID
    with pytest.raises(UnsafePickleError):
        safe_loads(b"not a pickle")


def test_allowed_values_roundtrip():
    values = [
        {"1": "Liver", "instance_label": 1},
        [{"fg": [[1, 2, 3]], "bg": []}, {"fg": [], "bg": [[0, 0, 0]]}],
        np.array([1.5, 2.5]),
        np.int64(7),
        np.float32(0.25),
        (1, 2.0, "x", b"y", None, True, frozenset({1}), {2}),
    ]
    for v in values:
        for proto in (2, 4, 5):
            got = safe_loads(pickle.dumps(v, protocol=proto))
            if isinstance(v, np.ndarray):
                assert np.array_equal(got, v)
            else:
                assert got == v and type(got) is type(v)


def test_object_scalar_refused():
    # numpy scalar of object dtype = raw pointer: refused before numpy sees it
    data = pickle.dumps(np.float64(1.0), protocol=2).replace(b"f8", b"O8")
    with pytest.raises(UnsafePickleError):
        safe_loads(data)

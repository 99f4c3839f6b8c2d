"""The shared helpers: one SHA-256 for files and folders, one label-dtype rule."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from napari_medsegfm.utils import label_dtype_for, sha256_file, sha256_path


def test_sha256_of_files_and_folders(tmp_path):
    data = bytes(range(256)) * 5000  # > one chunk at a small chunk size
    f = tmp_path / "a.bin"
    f.write_bytes(data)
    assert sha256_file(f, chunk=1000) == hashlib.sha256(data).hexdigest() == sha256_path(f)
    d = tmp_path / "folder"
    (d / "sub").mkdir(parents=True)
    (d / "x.txt").write_bytes(b"x")
    (d / "sub" / "y.txt").write_bytes(b"y")
    h1 = sha256_path(d)
    (d / "sub" / "y.txt").write_bytes(b"z")  # content counts
    h2 = sha256_path(d)
    (d / "sub" / "y.txt").rename(d / "sub" / "w.txt")  # names count
    assert len({h1, h2, sha256_path(d)}) == 3


@pytest.mark.parametrize("mx,dt", [(0, np.uint8), (255, np.uint8), (256, np.uint16), (65535, np.uint16),
                                   (65536, np.uint32), (2**32 - 1, np.uint32)])
def test_label_dtype_rule(mx, dt):
    assert label_dtype_for(mx) == np.dtype(dt)

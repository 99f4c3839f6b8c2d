"""The shared helpers: one SHA-256 for files and folders, one label-dtype rule."""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

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


def _tuning_in_subprocess(env_value: str) -> str:
    env = {**os.environ, "MEDSEGFM_MALLOC_TUNING": env_value}
    code = "from napari_medsegfm.utils import keep_freed_memory; print(keep_freed_memory())"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_keep_freed_memory_is_off_on_request():
    # in a child process: the setting lasts for the whole process
    assert _tuning_in_subprocess("0") == "False"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_keep_freed_memory_sets_glibc_thresholds():
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert _tuning_in_subprocess("1") == "True"


def test_predict_program_writes_the_same_segs_with_and_without_tuning(shared_data, tmp_path):
    """`medsegfm predict` as a program (the challenge's process per step), tuning on and off."""
    src = shared_data / "dev3d" / "CT_MSD_spleen_2_crop.npz"
    if not src.is_file():
        pytest.skip(f"{src.name} is not in the shared data")
    exe = shutil.which("medsegfm", path=str(Path(sys.executable).parent))
    assert exe, "the medsegfm program is not installed next to this interpreter"
    segs = {}
    for value in ("1", "0"):
        out = tmp_path / f"segs_{value}.npz"
        env = {**os.environ, "MEDSEGFM_MALLOC_TUNING": value}
        subprocess.run([exe, "predict", "-i", str(src), "-o", str(out), "--backend", "classic", "--device", "cpu",
                        "--no-progress"], env=env, check=True, capture_output=True)
        with np.load(out) as z:
            segs[value] = np.asarray(z["segs"])
    assert segs["1"].any() and np.array_equal(segs["1"], segs["0"])

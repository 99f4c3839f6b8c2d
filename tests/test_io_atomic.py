"""Atomic writes: an interrupted writer never damages the previous file."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from napari_medsegfm.io import load_case
from napari_medsegfm.io.atomic import (
    atomic_path,
    atomic_write_bytes,
    atomic_writer,
    backup_file,
    is_temp_name,
    remove_stale_temps,
)


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_atomic_write_and_failure_leaves_old_file(tmp_path):
    p = tmp_path / "a.bin"
    atomic_write_bytes(p, b"one")
    assert p.read_bytes() == b"one"
    with pytest.raises(RuntimeError), atomic_writer(p) as fh:
        fh.write(b"half of two")
        raise RuntimeError("crash in the middle")
    assert p.read_bytes() == b"one"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.bin"]
    with atomic_writer(tmp_path / "t.json", "w") as fh:
        fh.write('{"x": 1}')
    assert (tmp_path / "t.json").read_text() == '{"x": 1}'
    with pytest.raises(FileNotFoundError):
        atomic_write_bytes(tmp_path / "missing" / "x", b"")


def test_atomic_path_keeps_suffix(tmp_path):
    with atomic_path(tmp_path / "x.nii.gz") as tmp:
        assert tmp.name.endswith(".nii.gz") and tmp.parent == tmp_path
        tmp.write_bytes(b"data")
    assert (tmp_path / "x.nii.gz").read_bytes() == b"data"
    with pytest.raises(FileNotFoundError), atomic_path(tmp_path / "y.h5") as tmp:
        tmp.unlink()  # the "library" failed to create anything
    assert not (tmp_path / "y.h5").exists()


def test_backup_survives_atomic_replace(tmp_path):
    p = tmp_path / "case.npz"
    p.write_bytes(b"old")
    bak = backup_file(p)
    atomic_write_bytes(p, b"new")
    assert bak.read_bytes() == b"old" and p.read_bytes() == b"new"
    assert backup_file(tmp_path / "nothing") is None


_WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from napari_medsegfm.io import save_labels
    path = sys.argv[1]
    labels = np.random.default_rng(1).integers(0, 200, (96, 512, 512), dtype=np.uint8)
    print("saving", flush=True)
    save_labels(labels, path)   # slow: deflating 25 MB of noise
    print("done", flush=True)
    """
)


def test_kill_writer_mid_save_keeps_previous_file(tmp_path):
    target = tmp_path / "case.npz"
    imgs = np.random.default_rng(0).integers(0, 255, (96, 512, 512), np.uint8)
    np.savez_compressed(target, imgs=imgs, spacing=np.array([0.8, 0.8, 2.5]))
    before = _sha(target)
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "saving"
        deadline = time.monotonic() + 60
        tmp = None
        while time.monotonic() < deadline:
            temps = [p for p in tmp_path.iterdir() if is_temp_name(p.name)]
            if temps and temps[0].stat().st_size > 1_000_000:
                tmp = temps[0]
                break
            assert proc.poll() is None, "the writer finished before it could be killed"
            time.sleep(0.005)
        assert tmp is not None, "no temp file appeared"
        os.kill(proc.pid, signal.SIGKILL)  # kill -9 while the temp file is being written
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert _sha(target) == before  # the previous file is untouched ...
    case = load_case(target)  # ... and still a valid case
    assert np.array_equal(case.image.array, imgs) and "segs" not in case.labels
    assert remove_stale_temps(tmp_path) == [tmp]  # only the killed writer's temp file is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.npz"]

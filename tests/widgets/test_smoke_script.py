"""scripts/smoke_napari.py (the older-napari check of the README) works on the installed napari."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.gui
@pytest.mark.slow
def test_smoke_script_segments_the_sample_through_napari(tmp_path):
    if not os.environ.get("DISPLAY"):
        pytest.skip("needs a display (pytest-xvfb provides one)")
    out = tmp_path / "smoke.png"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "smoke_napari.py"), str(out)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "objects segmented: 1" in proc.stdout
    assert out.is_file() and out.stat().st_size > 10_000

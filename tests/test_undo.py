"""Undo storage: compressed XOR diffs of the tight changed box, bounded levels, small memory."""

from __future__ import annotations

import numpy as np
import pytest
from _engine_fakes import FillBox

from napari_medsegfm.engine.postprocess import bbox_of
from napari_medsegfm.engine.session import AnnotationSession
from napari_medsegfm.engine.undo import (
    LabelDiff,
    UndoEntry,
    UndoStack,
    bbox_from_list,
    bbox_to_list,
)
from napari_medsegfm.types import Box3D, Point, Volume


def test_labeldiff_is_tight_and_involutive():
    lab = np.zeros((20, 30, 40), np.uint8)
    lab[2:5, 3:9, 4:10] = 3
    new = lab.copy()
    new[3, 5:7, 20:23] = 7
    new[4, 4, 4] = 0
    d = LabelDiff.between(lab, new)
    assert d.bbox == (slice(3, 5), slice(4, 7), slice(4, 23))
    assert d.shape == (2, 3, 19)
    x = lab.copy()
    d.apply(x)
    assert np.array_equal(x, new)
    d.apply(x)
    assert np.array_equal(x, lab)
    assert LabelDiff.between(lab, lab.copy()) is None
    # an offset region maps into the full image
    d2 = LabelDiff.between(lab[2:5], new[2:5], offset=(slice(2, 5), slice(0, 30), slice(0, 40)))
    assert d2.bbox == d.bbox
    # widened labels (uint8 -> uint16) still take a uint8 diff exactly
    y = lab.astype(np.uint16)
    y[0, 0, 0] = 1000
    d.apply(y)
    assert np.array_equal(y[3:5, 4:7, 4:23], new[3:5, 4:7, 4:23]) and y[0, 0, 0] == 1000
    with pytest.raises(ValueError, match="narrower"):
        LabelDiff.between(y, y ^ 1).apply(lab)


def test_bbox_json_roundtrip():
    b = (slice(1, 4), slice(0, 9))
    assert bbox_from_list(bbox_to_list(b)) == b and bbox_from_list(None) is None
    with pytest.raises(ValueError, match="bbox"):
        bbox_from_list([[1]])


def test_stack_levels_and_redo_branch():
    st = UndoStack(3)
    for i in range(5):
        st.push(UndoEntry("edit", str(i)))
    assert [e.description for e in st.undo_entries] == ["2", "3", "4"]
    assert st.pop_undo().description == "4" and st.can_redo
    st.push(UndoEntry("edit", "5"))
    assert not st.can_redo and len(st) == 3
    with pytest.raises(ValueError, match="undo_levels"):
        UndoStack(0)


def test_session_undo_memory_is_compressed_region_diffs_not_volumes():
    """120 steps on a 40x256x256 volume: entries hold tight compressed diffs; total << volumes."""
    shape = (40, 256, 256)
    vol_bytes = int(np.prod(shape))
    with AnnotationSession(Volume(np.zeros(shape, np.uint8)), FillBox(), use_worker=False) as s:
        rng = np.random.default_rng(0)
        ids = [s.add_object().label_id for _ in range(6)]
        for i in range(120):
            lid = ids[i % len(ids)]
            if i % 4 == 3:
                z, y, x = (int(v) for v in rng.integers(0, [40, 230, 230]))
                s.labels[z, y:y + 20, x:x + 20] = lid  # brush dab
                s.apply_edit(bbox=(slice(z, z + 1), slice(y, y + 20), slice(x, x + 20)))
            elif i % 4 == 2:
                s.add_prompt(Point(tuple(int(v) for v in rng.integers(0, shape)), object_id=lid))
            else:
                z, y, x = (int(v) for v in rng.integers(0, [30, 180, 180]))
                s.add_prompt(Box3D(z, z + 8, y, x, y + 60, x + 70, object_id=lid))
        entries = s.undo_stack.undo_entries
        assert len(entries) >= 100
        diffs = [e.diff for e in entries if e.diff is not None]
        assert len(diffs) >= 90
        for d in diffs:
            assert isinstance(d.payload, bytes)
            # never a whole-volume copy: the box is tight around the changed voxels
            changed = d.xor() != 0
            assert bbox_of(changed) == tuple(slice(0, n) for n in d.shape)
            assert np.prod(d.shape) < 0.5 * vol_bytes
            assert len(d.payload) < np.prod(d.shape)  # compressed below raw size
        mem = s.undo_memory_bytes()
        assert mem == s.undo_stack.memory_bytes() > 0
        # far below even ONE full volume per 10 steps; a whole-volume scheme would hold 120 volumes
        assert mem < vol_bytes * 0.25, f"{mem / 1e6:.1f} MB for {len(entries)} steps"
        # and the diffs are exact: undo everything returns to empty
        while s.undo() is not None:
            pass
        assert s.labels.max() == 0


def test_engine_bench_runs_small_and_merges_sections(tmp_path, shared_data, monkeypatch):
    """The benchmark script itself (tiny shape): JSON + markdown, sections merged across runs."""
    import importlib.util
    import json
    import sys
    from pathlib import Path

    monkeypatch.setenv("MEDSEGFM_TEST_DATA", str(shared_data))
    spec = importlib.util.spec_from_file_location(
        "engine_bench", Path(__file__).resolve().parents[1] / "benchmarks" / "engine_bench.py")
    eb = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "engine_bench", eb)  # dataclasses look their module up
    spec.loader.exec_module(eb)
    eb.run(["undo_memory"], (24, 64, 64), tmp_path)
    eb.run(["worker_overhead"], (24, 64, 64), tmp_path)
    res = json.loads((tmp_path / "engine_bench.json").read_text())
    assert set(res["sections"]) == {"undo_memory", "worker_overhead"}
    um = res["sections"]["undo_memory"]["data"]
    assert um["steps"] == 100 and um["undo_all_empty"] and um["redo_all_exact"]
    assert um["undo_memory_bytes"] < 200e6
    md = (tmp_path / "engine_bench.md").read_text()
    assert "| undo history memory" in md and "worker-thread overhead" in md
    with pytest.raises(ValueError, match="unknown section"):
        eb.run(["nope"], (24, 64, 64), tmp_path)

"""Autosave store: file format, atomicity, interval/accept triggers, lock checks."""

from __future__ import annotations

import numpy as np
import pytest
from _engine_fakes import ManualClock, wait_until

from napari_medsegfm.dataset.autosave import (
    Autosaver,
    CorrectionStore,
    safe_case_filename,
    sidecar_dir,
)
from napari_medsegfm.dataset.status import LockLostError, StatusStore


def _gts(shared_data):
    with np.load(shared_data / "cvpr25" / "gts" / "MR_BraTS-T1c_bratsgli_0017.npz") as z:
        return z["gts"][20:40].copy()


def test_sidecar_default_env_and_explicit(tmp_path, monkeypatch):
    ds = tmp_path / "ds"
    ds.mkdir()
    monkeypatch.delenv("MEDSEGFM_SIDECAR", raising=False)
    assert sidecar_dir(ds) == (ds / ".medsegfm").resolve()
    assert (ds / ".medsegfm" / "README.txt").is_file()
    assert sidecar_dir(ds, tmp_path / "elsewhere") == (tmp_path / "elsewhere").resolve()
    monkeypatch.setenv("MEDSEGFM_SIDECAR", str(tmp_path / "central"))
    s = sidecar_dir(ds)
    assert s.parent == (tmp_path / "central").resolve() and s.name.startswith("ds-")


def test_safe_names_are_distinct():
    ids = ["a/b", "a_b", "CT_AMOS_amos_0018", "x" * 300, "ct_00--AMOS--c--x_0125"]
    names = [safe_case_filename(i) for i in ids]
    assert len(set(names)) == len(ids)
    assert names[2] == "CT_AMOS_amos_0018" and names[4] == "ct_00--AMOS--c--x_0125"
    assert all("/" not in n and len(n) <= 120 for n in names)


def test_correction_roundtrip_is_plain_npz(tmp_path, shared_data):
    gts = _gts(shared_data)
    store = CorrectionStore(tmp_path / "side")
    p = store.save("MR/BraTS 17", gts, {"label_names": {"1": "necrosis"}, "source": tmp_path / "x.npz"})
    with np.load(p, allow_pickle=False) as z:  # no pickles: opens with plain np.load
        assert set(z.files) == {"labels", "meta"}
        np.testing.assert_array_equal(z["labels"], gts)
    c = store.load("MR/BraTS 17")
    np.testing.assert_array_equal(c.labels, gts)
    assert c.label_names == {1: "necrosis"} and c.meta["shape"] == list(gts.shape)
    assert store.meta("MR/BraTS 17")["case_id"] == "MR/BraTS 17"
    assert store.case_ids() == ["MR/BraTS 17"]
    assert store.load("other") is None
    # a truncated file is reported, never silently used
    bad = store.path_for("broken")
    bad.write_bytes(p.read_bytes()[:200])
    with pytest.raises(ValueError, match="unreadable"):
        store.load("broken")


def test_autosaver_interval_accept_and_close(tmp_path, shared_data):
    gts = _gts(shared_data)
    labels = np.zeros_like(gts)
    side = sidecar_dir(tmp_path / "ds", tmp_path / "side")
    st = StatusStore(side / "status.sqlite", user="carol")
    st.acquire("c1")
    saved = []
    clock = ManualClock()
    aus = Autosaver(CorrectionStore(side), "c1", lambda: labels, interval_s=0.3, status=st, clock=clock,
                    get_meta=lambda: {"label_names": {"1": "a"}}, on_saved=lambda p, m: saved.append(m["reason"]))
    assert aus.tick() is None and aus.save() is None  # nothing dirty: nothing written
    labels[gts == 1] = 1
    aus.mark_dirty()
    assert aus.tick() is None  # not due yet
    clock.advance(0.29)
    assert aus.tick() is None and aus.dirty
    clock.advance(0.02)
    aus.tick().result()
    assert saved == ["interval"]
    np.testing.assert_array_equal(CorrectionStore(side).load("c1").labels, labels)
    labels[gts == 2] = 2
    aus.accepted().result()
    assert saved[-1] == "accepted prompt"
    assert CorrectionStore(side).load("c1").meta["seq"] == 2
    # the snapshot is a copy: edits after save() do not leak into the written file
    labels[gts == 3] = 3
    aus.mark_dirty()
    fut = aus.save("manual")
    labels[:] = 0
    fut.result()
    np.testing.assert_array_equal(CorrectionStore(side).load("c1").labels[gts == 3], 3)
    labels[0, 0, 0] = 4
    aus.mark_dirty()
    aus.close()  # final save of the pending edit
    assert saved[-1] == "close" and CorrectionStore(side).load("c1").labels[0, 0, 0] == 4
    rec = st.get("c1")
    assert rec.status == "in progress" and rec.edited_by == "carol"
    assert st.history("c1")[0].count == 4
    st.close()


def test_autosaver_timer_thread(tmp_path):
    labels = np.zeros((4, 8, 8), np.uint8)
    store = CorrectionStore(tmp_path / "side")
    clock = ManualClock()
    aus = Autosaver(store, "t", lambda: labels, interval_s=0.2, clock=clock)
    aus.start_timer(0.05)
    labels[1, 2, 3] = 7
    aus.mark_dirty()
    clock.advance(0.2)  # due now: the timer thread's next tick writes it
    assert wait_until(lambda: store.exists("t"), timeout=10)
    aus.close()
    assert store.load("t").labels[1, 2, 3] == 7


def test_autosaver_stops_when_lock_lost(tmp_path):
    side = tmp_path / "side"
    a = StatusStore(side / "status.sqlite", user="a")
    b = StatusStore(side / "status.sqlite", user="b")
    a.acquire("c")
    labels = np.ones((2, 3, 3), np.uint8)
    errors = []
    aus = Autosaver(CorrectionStore(side), "c", lambda: labels, interval_s=1, status=a, on_error=errors.append)
    b.acquire("c", steal=True)
    aus.mark_dirty()
    with pytest.raises(LockLostError):
        aus.save(wait=True)
    assert isinstance(errors[0], LockLostError) and aus.closed
    assert not CorrectionStore(side).exists("c")  # never wrote over the other viewer's work
    aus.close()
    a.close()
    b.close()


def test_interval_limits(tmp_path, monkeypatch):
    store = CorrectionStore(tmp_path)
    with pytest.raises(ValueError, match="30"):
        Autosaver(store, "c", lambda: np.zeros(3, np.uint8), interval_s=60)
    monkeypatch.setenv("MEDSEGFM_AUTOSAVE_S", "2.5")
    a = Autosaver(store, "c", lambda: np.zeros(3, np.uint8))
    assert a.interval_s == 2.5
    a.close()

"""Hostile and odd situations of the workflow: no silently lost correction, no dead worker.

Families: dataset ids and sidecars (additions, migration, symlinks, damaged status
database and its recovery, the CLI), atomic writes (long names, read-only and symlinked
targets, permission denied, leftovers of killed saves), the worker and what backends
return, contrast limits of NaN images.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from _dataset_data import make_small_cvpr
from _engine_fakes import FillBox

from napari_medsegfm.dataset.autosave import encode_correction, safe_case_filename
from napari_medsegfm.dataset.catalog import discover
from napari_medsegfm.dataset.export import export_corrections
from napari_medsegfm.dataset.status import CaseLockedError, StatusDatabaseError, StatusStore
from napari_medsegfm.dataset.workspace import DatasetWorkspace, recover_status
from napari_medsegfm.engine.session import AnnotationSession
from napari_medsegfm.engine.worker import InferenceWorker
from napari_medsegfm.io import list_cases, load_case, save_labels
from napari_medsegfm.io.atomic import ReadOnlyFileError, is_temp_name, remove_stale_temps
from napari_medsegfm.io.layers import contrast_limits_for
from napari_medsegfm.types import Box3D, Volume

CLI = [str(Path(sys.executable).with_name("medsegfm"))]


@pytest.fixture
def small(tmp_path, shared_data):
    return make_small_cvpr(shared_data, tmp_path / "ds", 2)


def _edit_and_autosave(ws: DatasetWorkspace, case_id: str, value: int = 9) -> np.ndarray:
    oc = ws.open(case_id)
    oc.labels[0, :20, :20] = value
    oc.start_autosave().mark_dirty()
    labels = oc.labels.copy()
    ws.close_case(oc)
    return labels


# =========================================================================== dataset ids
def test_adding_a_sibling_folder_renames_nothing(tmp_path, small, shared_data):
    ws = DatasetWorkspace(small, user="ann")
    ids = ws.catalog.ids()
    assert ids == ["imgs/CT_small00", "imgs/MR_small01"]
    edited = _edit_and_autosave(ws, "imgs/CT_small00")
    ws.set_status("imgs/CT_small00", "done", "checked")
    ws.close()
    # a second folder of cases appears beside imgs/ (the old ids lost their common prefix here)
    make_small_cvpr(shared_data, tmp_path / "more", 1)
    shutil.copytree(tmp_path / "more" / "imgs", small / "imgs_extra")
    with DatasetWorkspace(small, user="ann") as ws2:
        assert ws2.catalog.ids() == ["imgs/CT_small00", "imgs/MR_small01", "imgs_extra/CT_small00"]
        rec = ws2.store.get("imgs/CT_small00")
        assert rec.status == "done" and rec.comment == "checked"
        oc = ws2.open("imgs/CT_small00")
        assert oc.labels_source == "correction" and np.array_equal(oc.labels, edited)
        ws2.close_case(oc, save=False)
        rep = export_corrections(ws2, tmp_path / "out")
        assert [r["case_id"] for r in rep.exported] == ["imgs/CT_small00"] and not rep.failed


def _old_sidecar(root: Path, old_ids: dict[str, str], shape: tuple[int, ...]) -> Path:
    """A sidecar as the earlier code wrote it: status rows, history and a correction under the
    ids that had the common leading folders stripped, no ``id_scheme`` in the database."""
    from napari_medsegfm.dataset.status import _SCHEMA

    side = root / ".medsegfm"
    (side / "corrections").mkdir(parents=True)
    con = sqlite3.connect(side / "status.sqlite")
    con.executescript(_SCHEMA)
    con.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '1')")
    for old, status in old_ids.items():
        con.execute("INSERT INTO cases (case_id, status, comment, status_at, status_by, edited_at, edited_by) "
                    "VALUES (?, ?, ?, 1.0, 'bob', 2.0, 'bob')", (old, status, f"note on {old}"))
        con.execute("INSERT INTO history (case_id, at, who, action, detail) VALUES (?, 2.0, 'bob', 'autosave', '')",
                    (old,))
        con.execute("INSERT INTO metrics (case_id, name, value, at) VALUES (?, 'dice_pred', 0.5, 1.0)", (old,))
    con.commit()
    con.close()
    first = next(iter(old_ids))
    labels = np.zeros(shape, np.uint8)
    labels[1:3, 5:9, 5:9] = 4
    meta = {"case_id": first, "saved_at": 2.0, "saved_by": "bob", "label_names": {"4": "lesion"}}
    (side / "corrections" / f"{safe_case_filename(first)}.npz").write_bytes(encode_correction(labels, meta))
    return side


def test_old_sidecar_is_migrated_to_the_new_ids(tmp_path, small):
    shape = load_case(small / "imgs" / "CT_small00.npz").image.spatial_shape
    _old_sidecar(small, {"CT_small00": "flagged", "MR_small01": "done"}, shape)
    with DatasetWorkspace(small, user="ann") as ws:
        assert ws.migrated == {"CT_small00": "imgs/CT_small00", "MR_small01": "imgs/MR_small01"}
        recs = ws.store.records()
        assert set(recs) == {"imgs/CT_small00", "imgs/MR_small01"}  # no orphan rows left behind
        assert recs["imgs/CT_small00"].status == "flagged" and recs["imgs/CT_small00"].comment == "note on CT_small00"
        assert ws.store.metric("imgs/MR_small01", "dice_pred") == 0.5
        assert [e.action for e in ws.store.history("imgs/CT_small00")][:2] == ["migrate", "autosave"]
        oc = ws.open("imgs/CT_small00")
        assert oc.labels_source == "correction" and int(oc.labels.max()) == 4 and oc.label_names[4] == "lesion"
        ws.close_case(oc, save=False)
        assert [p.name for p in ws.corrections.folder.glob("*.npz")] == [
            f"{safe_case_filename('imgs/CT_small00')}.npz"]
        assert ws.rows()[0].has_correction
    # migrating again is a no-op; the database now records the scheme
    with DatasetWorkspace(small) as ws:
        assert ws.migrated == {} and ws.store.meta_value("id_scheme") == "2"


def test_old_sidecar_then_a_sibling_folder(tmp_path, small, shared_data):
    """The issue's sequence: old sidecar with stripped ids, then a folder added, then the new code."""
    shape = load_case(small / "imgs" / "CT_small00.npz").image.spatial_shape
    _old_sidecar(small, {"CT_small00": "done"}, shape)
    make_small_cvpr(shared_data, tmp_path / "more", 1)
    shutil.copytree(tmp_path / "more" / "imgs", small / "imgs_extra")  # also holds a CT_small00 ...
    with DatasetWorkspace(small, user="ann") as ws:
        # ... so "CT_small00" matches two cases: ambiguous, nothing is guessed, nothing lost
        assert ws.migrated == {}
        assert ws.store.get("CT_small00").status == "done"
        assert ws.corrections.path_for("CT_small00").is_file()
    shutil.rmtree(small / "imgs_extra")
    (small / "more_cases").mkdir()
    shutil.copy(tmp_path / "more" / "imgs" / "CT_small00.npz", small / "more_cases" / "CT_other.npz")
    with DatasetWorkspace(small, user="ann") as ws:
        # the database was seen once; corrections with an old id are still looked at
        assert ws.migrated == {"CT_small00": "imgs/CT_small00"}
        assert ws.corrections.load("imgs/CT_small00") is not None


def test_symlinked_alias_gives_one_case_and_one_lock(tmp_path, small):
    os.symlink(small / "imgs", small / "also_imgs")
    os.symlink(small / "imgs" / "CT_small00.npz", small / "imgs" / "CT_same.npz")
    cat = discover(small)
    assert cat.ids() == ["imgs/CT_small00", "imgs/MR_small01"]
    with DatasetWorkspace(small, user="ann") as a, DatasetWorkspace(small, user="bob") as b:
        oc = a.open("imgs/CT_small00")
        with pytest.raises(CaseLockedError):
            b.open("imgs/CT_small00")  # there is no second name to edit it under
        a.close_case(oc, save=False)


def test_export_into_the_dataset_is_refused(tmp_path, small):
    with DatasetWorkspace(small) as ws:
        _edit_and_autosave(ws, "imgs/CT_small00")
        before = sorted(str(p.relative_to(small)) for p in small.rglob("*") if ".medsegfm" not in p.parts)
        for out in (small, small / "imgs", small / "new_folder"):
            with pytest.raises(ValueError, match="inside the dataset"):
                export_corrections(ws, out, fmt="nifti")
        after = sorted(str(p.relative_to(small)) for p in small.rglob("*") if ".medsegfm" not in p.parts)
        assert after == before
        assert discover(small).ids() == ["imgs/CT_small00", "imgs/MR_small01"]


# ================================================================ damaged status database
def _damage(side: Path, how: str) -> None:
    db = side / "status.sqlite"
    if how == "garbage":
        db.write_bytes(os.urandom(16384))
    elif how == "truncated":
        db.write_bytes(db.read_bytes()[:3000])
    elif how == "wal":
        (side / "status.sqlite-wal").write_bytes(b"not a write-ahead log" * 50)


@pytest.mark.parametrize("how", ["garbage", "truncated", "wal"])
def test_damaged_status_db_error_then_recovery_from_corrections(tmp_path, small, how):
    ws = DatasetWorkspace(small, user="ann")
    edited = _edit_and_autosave(ws, "imgs/CT_small00", 5)
    ws.set_status("imgs/MR_small01", "flagged", "look again")
    for _k in range(300):  # enough rows that a cut file loses pages
        ws.store.add_history("imgs/MR_small01", "note", "x" * 100)
    ws.close()
    side = small / ".medsegfm"
    _damage(side, how)
    snapshot = {p.name: p.read_bytes() for p in side.iterdir() if p.is_file()}
    with pytest.raises(StatusDatabaseError) as ei:
        DatasetWorkspace(small)
    msg = str(ei.value)
    assert "status.sqlite" in msg and "left as it is" in msg and f"medsegfm dataset recover {small}" in msg
    after = {p.name: p.read_bytes() for p in side.iterdir() if p.is_file()}
    assert {k: after.get(k) for k in snapshot} == snapshot  # never a silent wipe
    # (SQLite itself may have added its empty -wal / shared-memory index while reading)
    assert set(after) - set(snapshot) <= {"status.sqlite-shm", "status.sqlite-wal"}
    assert not after.get("status.sqlite-wal", b"") or "status.sqlite-wal" in snapshot
    # the CLI says the same in one line, without a traceback
    r = subprocess.run([*CLI, "dataset", "status", str(small)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "medsegfm dataset recover" in r.stderr
    # recovery: the damaged files are moved aside, the database is rebuilt from the corrections
    r = subprocess.run([*CLI, "dataset", "recover", str(small)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "1 correction(s) re-registered" in r.stdout
    damaged = next(side.glob("damaged-*"))
    kept = {p.name: p.read_bytes() for p in damaged.iterdir()}
    assert {k: kept.get(k) for k in snapshot if k.startswith("status.sqlite")} == {
        k: v for k, v in snapshot.items() if k.startswith("status.sqlite")}
    with DatasetWorkspace(small, user="ann") as ws2:
        rec = ws2.store.get("imgs/CT_small00")
        assert rec.status in ("in progress", "done") and rec.edited_by == "ann"
        assert np.array_equal(ws2.corrections.load("imgs/CT_small00").labels, edited)
        if how == "wal":  # the database itself was intact: everything salvaged
            assert ws2.store.get("imgs/MR_small01").comment == "look again"


def test_foreign_sqlite_file_is_not_touched(tmp_path, small):
    side = small / ".medsegfm"
    side.mkdir()
    con = sqlite3.connect(side / "status.sqlite")
    con.execute("CREATE TABLE songs (title TEXT)")
    con.execute("INSERT INTO songs VALUES ('x')")
    con.commit()
    con.close()
    before = (side / "status.sqlite").read_bytes()
    with pytest.raises(StatusDatabaseError, match="another program"):
        StatusStore(side / "status.sqlite")
    assert (side / "status.sqlite").read_bytes() == before
    rep = recover_status(small)
    assert rep["salvaged_cases"] == 0 and rep["moved_to"] is not None
    assert sqlite3.connect(Path(rep["moved_to"]) / "status.sqlite").execute("SELECT title FROM songs").fetchall() \
        == [("x",)]


# ============================================================================ atomic writes
def _segs(case_path: Path) -> np.ndarray:
    c = load_case(case_path)
    out = np.zeros(c.image.spatial_shape, np.uint8)
    out[1, 2:5, 3:7] = 3
    return out


@pytest.mark.parametrize("ext", [".npz", ".nii.gz"])
def test_file_names_of_255_characters_save(tmp_path, small, ext):
    src = small / "imgs" / "CT_small00.npz"
    name = "n" * (255 - len(ext)) + ext
    target = tmp_path / name
    if ext == ".npz":
        shutil.copyfile(src, target)
        save_labels(_segs(target), target)
        assert int(load_case(target).labels["segs"].max()) == 3
    else:
        case = load_case(src)
        save_labels(_segs(src), target, case=case)
        assert int(np.asarray(load_case(target, as_labels=True).labels["gts"]).max()) == 3
    assert len(name) == 255 and not [p for p in tmp_path.iterdir() if is_temp_name(p.name)]


def test_read_only_target_is_not_overwritten(tmp_path, small):
    (tmp_path / "ro").mkdir()
    target = tmp_path / "ro" / "case.npz"
    shutil.copyfile(small / "imgs" / "CT_small00.npz", target)
    segs = _segs(target)
    os.chmod(target, 0o444)
    before = target.read_bytes()
    with pytest.raises(ReadOnlyFileError) as ei:
        save_labels(segs, target)
    assert isinstance(ei.value, PermissionError) and "read-only" in str(ei.value) and "case.npz" in str(ei.value)
    assert target.read_bytes() == before and sorted(p.name for p in target.parent.iterdir()) == ["case.npz"]
    os.chmod(target, 0o644)  # what the message says to do
    save_labels(segs, target)
    assert "segs" in load_case(target).labels


def test_symlinked_case_stays_a_link(tmp_path, small):
    (tmp_path / "store").mkdir()
    (tmp_path / "view").mkdir()
    real = tmp_path / "store" / "case.npz"
    shutil.copyfile(small / "imgs" / "CT_small00.npz", real)
    link = tmp_path / "view" / "case.npz"
    os.symlink(real, link)
    save_labels(_segs(link), link)
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert int(load_case(real).labels["segs"].max()) == 3  # written through to the file it points to
    assert sorted(p.name for p in (tmp_path / "view").iterdir()) == ["case.npz"]
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["case.npz"]


def _unprivileged(fn, *args):
    """Run ``fn(*args)`` where permissions apply: in a forked child as ``nobody`` when we are root."""
    if os.getuid() != 0:
        return fn(*args)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(r)
        try:
            os.setgid(65534)
            os.setuid(65534)
            res = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            res = exc
        with os.fdopen(w, "wb") as fh:
            import pickle

            try:
                pickle.dump(res, fh)
            except Exception:  # noqa: BLE001
                pickle.dump(RuntimeError(repr(res)), fh)
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        import pickle

        res = pickle.load(fh)
    os.waitpid(pid, 0)
    return res


def _try_load(path: str) -> object:
    try:
        load_case(path)
    except BaseException as exc:  # noqa: BLE001
        return exc
    return None


@pytest.mark.parametrize("kind", ["npz", "nifti", "h5", "png"])
def test_permission_denied_is_reported_as_such(tmp_path, small, shared_data, kind):
    import h5py
    import nibabel  # noqa: F401 - imported before dropping privileges
    from PIL import Image, PngImagePlugin  # noqa: F401

    d = Path(tempfile.mkdtemp())
    os.chmod(d, 0o755)
    try:
        if kind == "npz":
            p = d / "case.npz"
            shutil.copyfile(small / "imgs" / "CT_small00.npz", p)
        elif kind == "nifti":
            p = d / "ct.nii.gz"
            shutil.copyfile(shared_data / "totalsegmentator" / "example_ct_sm.nii.gz", p)
        elif kind == "h5":
            p = d / "scan.h5"
            with h5py.File(p, "w") as f:
                f.create_dataset("volume", data=np.zeros((4, 5, 6), np.int16))
        else:
            (d / "images").mkdir()
            os.chmod(d / "images", 0o755)
            p = d / "images" / "ct_00--AMOS--c1--2d_none.png"
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(p)
        os.chmod(p, 0o000 if os.getuid() != 0 else 0o600)
        exc = _unprivileged(_try_load, str(p))
        assert isinstance(exc, PermissionError), exc
        assert "permission denied" in str(exc) and p.name in str(exc) and "corrupt" not in str(exc)
    finally:
        shutil.rmtree(d)


def test_killed_save_leftovers_never_listed_and_cleaned_safely(tmp_path, small):
    imgs = small / "imgs"
    full = (imgs / "CT_small00.npz").read_bytes()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # a pid that has exited
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        from napari_medsegfm.io import atomic

        tag = __import__("hashlib").sha1(b"CT_small00.npz").hexdigest()[:8]
        stale = imgs / f".msf-{tag}-{atomic._HOST_TAG}{dead_pid}-abc123.tmp"
        alive = imgs / f".msf-{tag}-{atomic._HOST_TAG}{live.pid}-def456.tmp"
        foreign_new = imgs / f".msf-{tag}-0000{dead_pid}-ghi789.tmp"  # another host: only by age
        foreign_old = imgs / f".msf-{tag}-0000{dead_pid}-jkl012.tmp"
        legacy = imgs / ".CT_small00.npz.medsegfm-x1y2z3.tmp.npz"
        for p in (stale, alive, foreign_new, foreign_old, legacy):
            p.write_bytes(full)  # full-size, ends like a case file where it can
        os.utime(foreign_old, (time.time() - 7200, time.time() - 7200))
        assert discover(small).ids() == ["imgs/CT_small00", "imgs/MR_small01"]
        assert [r.name for r in list_cases(imgs)] == ["CT_small00", "MR_small01"]
        save_labels(_segs(imgs / "CT_small00.npz"), imgs / "CT_small00.npz")  # the next save cleans up
        left = sorted(p.name for p in imgs.iterdir() if is_temp_name(p.name))
        assert left == sorted([alive.name, foreign_new.name, legacy.name])  # a live writer's temp stays
        live.kill()
        live.wait()
        assert remove_stale_temps(imgs) == [alive]
    finally:
        if live.poll() is None:
            live.kill()
            live.wait()


def test_reader_sees_one_file_while_a_writer_replaces_it(tmp_path, monkeypatch):
    """The zip directory and the member bytes come from the same file even when an autosave
    replaces it (atomically) while the reader opens it."""
    import zipfile

    from napari_medsegfm.io import npzfile

    path = tmp_path / "c.npz"
    old = np.arange(4000, dtype=np.uint8).reshape(40, 100)
    np.savez_compressed(path, labels=old, meta=np.array('{"v": 1}'))
    np.savez_compressed(tmp_path / "new.npz", pad=np.ones(999, np.uint8), labels=old[::-1] + 1,
                        meta=np.array('{"v": 2}'))

    class Racing(zipfile.ZipFile):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            os.replace(tmp_path / "new.npz", path)  # the writer's rename lands right now

    monkeypatch.setattr(npzfile.zipfile, "ZipFile", Racing)
    with npzfile.NpzReader(path) as r:
        assert np.array_equal(r.read("labels"), old) and str(r.read("meta")[()]) == '{"v": 1}'


def test_corrupt_correction_file_is_reported_not_fatal(tmp_path, small):
    with DatasetWorkspace(small) as ws:
        _edit_and_autosave(ws, "imgs/MR_small01")
        bad = ws.corrections.path_for("imgs/CT_small00")
        bad.write_bytes(b"PK\x03\x04 not really a zip")
        assert ws.corrections.case_ids() == ["imgs/MR_small01"]  # skipped with a warning
        with pytest.raises(ValueError, match="correction file .* is unreadable"):
            ws.open("imgs/CT_small00")
        assert ws.store.lock_holder("imgs/CT_small00") is None  # the lock was given back
        assert bad.read_bytes() == b"PK\x03\x04 not really a zip"  # and the file kept for inspection


# ================================================================= worker and backend output
class _Raises(FillBox):
    def __init__(self, exc: BaseException) -> None:
        super().__init__()
        self.exc = exc
        self.raise_next = True

    def predict(self, prompts, prev_mask, cancel):
        if self.raise_next:
            self.raise_next = False
            raise self.exc
        return super().predict(prompts, prev_mask, cancel)


class _MyBase(BaseException):
    pass


@pytest.mark.parametrize("exc", [SystemExit(3), KeyboardInterrupt(), _MyBase("odd"), GeneratorExit()],
                         ids=["SystemExit", "KeyboardInterrupt", "BaseException", "GeneratorExit"])
def test_worker_survives_any_backend_exception(exc):
    vol = Volume(np.zeros((6, 20, 20), np.uint8))
    be = _Raises(exc)
    errors = []
    with AnnotationSession(vol, be) as s:
        s.add_listener(lambda ch: errors.append(ch) if ch.kind == "error" else None)
        obj = s.add_object("a")
        results = []
        s.submit(Box3D(1, 3, 2, 2, 8, 8, object_id=obj.label_id), results.append)
        assert s.worker.wait_idle(10) and not s.busy
        assert len(results) == 1 and results[0].error is not None
        assert type(exc).__name__ in results[0].error_message
        assert not s.apply_result(results[0]) and errors and not s.labels.any()
        thread = s.worker.thread
        s.submit(Box3D(1, 3, 2, 2, 8, 8, object_id=obj.label_id), results.append)  # the session still works
        assert s.worker.wait_idle(10) and s.worker.thread is thread and thread.is_alive()
        assert results[1].error is None and s.apply_result(results[1]) and s.labels.any()


def test_worker_callback_raising_systemexit_does_not_end_the_thread():
    got = []
    with InferenceWorker("t") as w:
        w.submit(1, lambda tok: 1, lambda out: (_ for _ in ()).throw(SystemExit(1)))
        w.submit(2, lambda tok: 2, got.append)
        assert w.wait_idle(10) and w.thread.is_alive() and got[0].value == 2


class _Returns(FillBox):
    def __init__(self, make) -> None:
        super().__init__()
        self.make = make

    def predict(self, prompts, prev_mask, cancel):
        return self.make(self.volume.spatial_shape)


def _prob(shape):
    m = np.random.default_rng(0).random(shape).astype(np.float32)
    return m


BAD_OUTPUTS = {
    "nan": (lambda sh: np.full(sh, np.nan, np.float32), ["float32", "NaN"]),
    "probabilities": (_prob, ["float32", "values 0", "threshold"]),
    "inf": (lambda sh: np.where(np.ones(sh, bool), np.inf, 0.0), ["float64", "inf"]),
    "float_zero_one": (lambda sh: np.ones(sh, np.float64), ["float64", "values 1..1"]),
    "labels_0_255": (lambda sh: np.full(sh, 255, np.uint8), ["integer mask with values 255..255"]),
    "negative_int": (lambda sh: np.full(sh, -1, np.int32), ["values -1..-1"]),
    "wrong_shape": (lambda sh: np.ones((sh[0], sh[1] + 1, sh[2]), bool), ["shape (6, 21, 20)", "expected (6, 20, 20)"]),
    "none": (lambda sh: None, ["no mask (None)"]),
    "object": (lambda sh: np.empty(sh, object), ["dtype object"]),
}


@pytest.mark.parametrize("kind", list(BAD_OUTPUTS))
def test_backend_output_that_is_not_a_binary_mask_is_refused(kind):
    make, fragments = BAD_OUTPUTS[kind]
    vol = Volume(np.zeros((6, 20, 20), np.uint8))
    with AnnotationSession(vol, _Returns(make), use_worker=False) as s:
        obj = s.add_object("a")
        res = s.add_prompt(Box3D(1, 3, 2, 2, 8, 8, object_id=obj.label_id))
        assert res.error is not None and not res.applied and not s.labels.any()
        msg = res.error_message
        assert "BackendOutputError" in msg and "'fillbox'" in msg, msg
        for f in fragments:
            assert f in msg, (f, msg)


@pytest.mark.parametrize("dtype", [bool, np.uint8, np.int64])
def test_binary_masks_are_accepted(dtype):
    vol = Volume(np.zeros((6, 20, 20), np.uint8))

    def make(sh):
        m = np.zeros(sh, dtype)
        m[2, 3:6, 3:6] = 1
        return m

    with AnnotationSession(vol, _Returns(make), use_worker=False) as s:
        obj = s.add_object("a")
        res = s.add_prompt(Box3D(1, 3, 2, 2, 8, 8, object_id=obj.label_id))
        assert res.error is None and res.applied and int((s.labels == obj.label_id).sum()) == 9


# ======================================================================== contrast limits
@pytest.mark.parametrize("fill", [np.nan, np.inf, -np.inf])
def test_contrast_limits_are_finite_with_nan_or_inf_voxels(fill, caplog):
    arr = np.random.default_rng(0).normal(0, 1, (8, 30, 30)).astype(np.float32)
    arr[3] = fill
    lo, hi = contrast_limits_for(arr, "ct.nii.gz")
    assert np.isfinite([lo, hi]).all() and hi > lo and -5 < lo < hi < 5
    assert any("ct.nii.gz" in r.getMessage() and "900 of 7200" in r.getMessage() for r in caplog.records)
    assert contrast_limits_for(np.full((4, 4), np.nan, np.float32)) == [0.0, 1.0]


def test_cli_corrupt_status_db_json_and_history_one_line(tmp_path, small):
    side = small / ".medsegfm"
    side.mkdir()
    (side / "status.sqlite").write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    for args in (["dataset", "status", str(small), "--json"], ["dataset", "history", str(small)],
                 ["dataset", "set", str(small), "CT_small00", "--status", "done"]):
        r = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        line, = r.stderr.strip().splitlines()
        assert "status database" in line and "recover" in line
    assert (side / "status.sqlite").read_bytes()[:16] == b"SQLite format 3\x00"

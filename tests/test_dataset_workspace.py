"""Workspace (rows, filter/sort/review queue, open/restore/locks), export with manifest, dataset CLI."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from _dataset_data import make_nnunet, make_small_cvpr

from napari_medsegfm.cli import main as cli_main
from napari_medsegfm.dataset.batch import run_batch
from napari_medsegfm.dataset.export import export_corrections
from napari_medsegfm.dataset.status import CaseLockedError
from napari_medsegfm.dataset.workspace import DatasetWorkspace


@pytest.fixture
def small(tmp_path, shared_data):
    return make_small_cvpr(shared_data, tmp_path / "ds", 4)


def test_rows_scan_sort_filter_review(tmp_path, small):
    run_batch(small, "boxfill", tmp_path / "pred", scheduler="sync", progress=False,
              status_store=(ws0 := DatasetWorkspace(small)).store)
    ws0.close()
    with DatasetWorkspace(small) as ws:
        rows = ws.rows()
        assert [r.name for r in rows] == ["CT_small00", "CT_small02", "MR_small01", "MR_small03"]
        assert rows[0].modality == "CT" and rows[0].shape == (12, 160, 160) and rows[0].n_labels is None
        assert all(r.dice is not None for r in rows) and all(r.status == "todo" for r in rows)
        assert ws.scan() == 4 and ws.scan() == 0  # cached by file signature
        rows = ws.rows()
        assert all(r.n_labels and r.n_labels > 0 for r in rows)
        queue = ws.review_queue(rows)
        dices = [r.dice for r in queue]
        assert dices == sorted(dices)  # worst agreement (lowest Dice) first
        ws.set_status("imgs/MR_small01", "flagged", "boundary leaks")
        ws.set_status("imgs/CT_small02", "done")
        rows = ws.rows()
        assert [r.case_id for r in ws.filter(rows, ["flagged"])] == ["imgs/MR_small01"]
        assert [r.case_id for r in ws.filter(rows, text="leaks")] == ["imgs/MR_small01"]
        by_status = ws.sort(rows, "status")
        assert [r.status for r in by_status] == ["todo", "todo", "done", "flagged"]
        by_labels = ws.sort(rows, "n_labels", descending=True)
        assert by_labels[0].n_labels == max(r.n_labels for r in rows)
        with pytest.raises(ValueError, match="cannot sort"):
            ws.sort(rows, "colour")
        assert ws.neighbour(["a", "b", "c"], "b", 1) == "c" and ws.neighbour(["a", "b"], "b", 1) == "b"
        assert ws.neighbour(["a", "b"], None, -1) == "b"


def test_open_edit_autosave_restore_and_locks(tmp_path, small):
    ws = DatasetWorkspace(small, user="ann", autosave_s=1)
    other = DatasetWorkspace(small, user="bob")
    try:
        ws.prefetch("imgs/CT_small00")
        oc = ws.open("imgs/CT_small00")
        assert oc.labels_source == "gts" and not oc.restored
        gts = oc.labels.copy()
        with pytest.raises(CaseLockedError, match="ann"):
            other.open("imgs/CT_small00")
        ro = other.open("imgs/CT_small00", read_only=True)
        assert ro.read_only and "being edited elsewhere by ann" in ro.message()
        with pytest.raises(ValueError, match="read-only"):
            ro.start_autosave()
        assert other.rows()[0].locked_by.startswith("ann@")
        aus = oc.start_autosave()
        oc.labels[gts == 1] = 0  # an edit in place
        aus.mark_dirty()
        ws.close_case(oc)  # final save + unlock
        assert ws.corrections.exists("imgs/CT_small00")
        oc2 = other.open("imgs/CT_small00")  # free now; restores the correction
        assert oc2.restored and oc2.labels_source == "correction" and "restored" in oc2.message()
        np.testing.assert_array_equal(oc2.labels, np.where(gts == 1, 0, gts))
        other.close_case(oc2)
        rec = ws.store.get("imgs/CT_small00")
        assert rec.status == "in progress" and rec.edited_by == "ann"
        assert [e.action for e in ws.store.history("imgs/CT_small00")][:4] == ["restore", "autosave", "status", "open"]
        assert ws.rows()[0].has_correction
    finally:
        ws.close()
        other.close()


def test_export_folder_nifti_and_in_place(tmp_path, small, shared_data):
    ws = DatasetWorkspace(small, user="ann")
    for cid in ("imgs/CT_small00", "imgs/MR_small01"):
        oc = ws.open(cid)
        oc.labels[oc.labels == 1] = 7
        oc.label_names[7] = "relabelled"
        oc.start_autosave().mark_dirty()
        ws.close_case(oc)
    ws.set_status("imgs/CT_small00", "done", "ok")
    rep = export_corrections(ws, tmp_path / "export", fmt="npz")
    assert [r["case_id"] for r in rep.exported] == ["imgs/CT_small00", "imgs/MR_small01"] and not rep.failed
    with np.load(tmp_path / "export" / "imgs" / "CT_small00.npz") as z:  # <out>/<case id>.npz
        assert 7 in np.unique(z["gts"]) and "spacing" in z.files
    man = json.loads((tmp_path / "export" / "export_manifest.json").read_text())
    row = man["cases"][0]
    assert row["status"] == "done" and row["edited_by"] == "ann" and row["exported_by"] == "ann"
    assert row["label_names"]["7"] == "relabelled" and 7 in row["label_ids"] and len(row["sha256"]) == 64
    with open(tmp_path / "export" / "export_manifest.csv") as fh:
        assert [r["case_id"] for r in csv.DictReader(fh)] == ["imgs/CT_small00", "imgs/MR_small01"]
    only_done = export_corrections(ws, tmp_path / "done_only", statuses=["done"])
    assert [r["case_id"] for r in only_done.exported] == ["imgs/CT_small00"]
    # exporting into the dataset folder (over its own files, or beside them) is refused, nothing written
    for inside in (small / "gts", small, small / "exports"):
        with pytest.raises(ValueError, match="inside the dataset"):
            export_corrections(ws, inside, fmt="npz")
    assert not (small / "exports").exists() and not (small / "gts" / "imgs").exists()
    # in place: originals backed up in the sidecar, then replaced
    before = (small / "gts" / "CT_small00.npz").read_bytes()
    rep = export_corrections(ws, in_place=True, cases=["imgs/CT_small00"])
    assert rep.exported[0]["output"] == str(small / "gts" / "CT_small00.npz")
    backup = rep.backup_dir / "gts" / "CT_small00.npz"
    assert backup.read_bytes() == before
    with np.load(small / "gts" / "CT_small00.npz") as z:
        assert 7 in np.unique(z["gts"])
    ws.close()

    nn = make_nnunet(shared_data, tmp_path / "nn")
    ws2 = DatasetWorkspace(nn)
    oc = ws2.open("imagesTr/ts_002")
    oc.labels[:2] = 0
    oc.start_autosave().mark_dirty()
    ws2.close_case(oc)
    rep = export_corrections(ws2, tmp_path / "nii", fmt="nifti")
    import nibabel as nib

    out = nib.load(str(tmp_path / "nii" / "imagesTr" / "ts_002.nii.gz"))
    src = nib.load(str(nn / "labelsTr" / "ts_002.nii.gz"))
    assert np.allclose(out.affine, src.affine) and out.shape == src.shape  # back in the source orientation
    ws2.close()


def test_dataset_cli(tmp_path, small, capsys):
    assert cli_main(["dataset", "set", str(small), "MR_small01", "--status", "flagged", "--comment", "check"]) == 0
    assert "flagged" in capsys.readouterr().out
    assert cli_main(["dataset", "status", str(small), "--json", "--filter", "flagged"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["case_id"] for r in rows] == ["imgs/MR_small01"] and rows[0]["comment"] == "check"
    assert cli_main(["dataset", "status", str(small)]) == 0
    out = capsys.readouterr().out
    assert "CT_small00" in out and "1 flagged" in out
    assert cli_main(["dataset", "history", str(small), "MR_small01"]) == 0
    assert "todo -> flagged" in capsys.readouterr().out
    ws = DatasetWorkspace(small, user="zed")
    ws.store.acquire("imgs/CT_small00")
    assert cli_main(["dataset", "unlock", str(small), "CT_small00"]) == 0
    assert "zed" in capsys.readouterr().out
    oc = ws.open("imgs/CT_small02")
    oc.start_autosave().mark_dirty()
    ws.close_case(oc)
    ws.close()
    assert cli_main(["dataset", "export", str(small), str(tmp_path / "ex")]) == 0
    assert (tmp_path / "ex" / "imgs" / "CT_small02.npz").is_file() and "exported 1" in capsys.readouterr().out
    assert cli_main(["dataset", "set", str(small), "nosuchcase", "--status", "done"]) == 2


def test_export_same_format_multi_file_layouts(tmp_path, shared_data):
    """``fmt="same"`` writes IVDM3Seg, SA-Med2D and medsegpy cases back in their own formats."""
    from _dataset_data import make_ivdm3seg, make_medsegpy_h5, make_medsegpy_slices, make_samed2d

    from napari_medsegfm.dataset.catalog import discover

    for maker, name in ((make_ivdm3seg, "iv"), (make_samed2d, "sa"), (make_medsegpy_h5, "h5"),
                        (make_medsegpy_slices, "sl")):
        root = maker(shared_data, tmp_path / name)
        with DatasetWorkspace(root) as ws:
            cid = ws.catalog.ids()[0]
            oc = ws.open(cid)
            oc.labels[oc.labels > 0] = 1  # merge the objects: a visible correction
            oc.start_autosave().mark_dirty()
            ws.close_case(oc)
            rep = export_corrections(ws, tmp_path / f"out_{name}", fmt="same")
            assert not rep.failed, rep.failed
            out = tmp_path / f"out_{name}" / rep.exported[0]["output"]
            assert out.exists() and len(rep.exported[0]["sha256"]) == 64
            # what was written reads back (through the catalog of the export folder where it is a dataset)
            if name == "h5":
                back = discover(out.parent).load(out.stem).labels["gts"]
                np.testing.assert_array_equal(back > 0, oc.labels > 0)

"""Batch pre-segmentation on a real Dask LocalCluster (2 worker processes) with real cases."""

from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np
import pytest
from _dataset_data import make_nnunet, make_small_cvpr

from napari_medsegfm.cli import main as cli_main
from napari_medsegfm.dataset.batch import read_manifest, read_segs, run_batch
from napari_medsegfm.dataset.catalog import discover
from napari_medsegfm.dataset.status import StatusStore


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit="1GiB",
                           dashboard_address=None)
    c = Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture
def dataset(tmp_path, shared_data):
    """4 small real CVPR-style cases + one official case without boxes + one with a corrupt gts file."""
    root = make_small_cvpr(shared_data, tmp_path / "ds", 4)
    shutil.copy(shared_data / "cvpr25" / "imgs" / "MR_BraTS-T1c_bratsgli_0017.npz", root / "imgs")
    shutil.copy(root / "imgs" / "CT_small00.npz", root / "imgs" / "CT_broken.npz")
    good = (root / "gts" / "CT_small00.npz").read_bytes()
    (root / "gts" / "CT_broken.npz").write_bytes(good[: len(good) // 2])  # truncated
    return root


@pytest.mark.timing
def test_two_workers_match_single_process_failures_recorded_and_resume(tmp_path, dataset, client):
    ref = run_batch(dataset, "boxfill", tmp_path / "ref", scheduler="sync", progress=False)
    assert sorted(ref.failed) == ["imgs/CT_broken", "imgs/MR_BraTS-T1c_bratsgli_0017"]

    t0 = time.time()
    rep = run_batch(dataset, "boxfill", tmp_path / "dask", client=client, progress=False)
    assert time.time() - t0 < 60
    assert sorted(rep.ok) == ["imgs/CT_small00", "imgs/CT_small02", "imgs/MR_small01", "imgs/MR_small03"]
    assert sorted(rep.failed) == ["imgs/CT_broken", "imgs/MR_BraTS-T1c_bratsgli_0017"]  # the batch went on
    workers = {rep.records[c]["worker"] for c in rep.ok + rep.failed}
    assert len(workers) == 2, workers  # both worker processes did work
    for cid in rep.ok:
        a, b = ref.records[cid], rep.records[cid]
        np.testing.assert_array_equal(read_segs(tmp_path / "ref" / a["output"]), read_segs(tmp_path / "dask" / b["output"]))
        assert a["output_sha256"] == b["output_sha256"]  # byte-identical files
        assert a["dice"] == pytest.approx(b["dice"]) and 0.3 < b["dice"] < 1.0
        assert set(b["dice_per_label"]) == {str(i) for i in b["label_ids"]}
    # errors are in the manifest on disk, with the reason
    man = json.loads((tmp_path / "dask" / "manifest.json").read_text())
    by_id = {r["case_id"]: r for r in man["cases"]}
    assert "no boxes" in by_id["imgs/MR_BraTS-T1c_bratsgli_0017"]["error"]
    assert by_id["imgs/CT_broken"]["status"] == "error" and "CT_broken.npz" in by_id["imgs/CT_broken"]["traceback"] + by_id["imgs/CT_broken"]["error"]
    assert man["summary"] == {"ok": 4, "error": 2}

    # resume: done cases are skipped (checksums verified); failed ones are retried
    rep2 = run_batch(dataset, "boxfill", tmp_path / "dask", client=client, progress=False)
    assert sorted(rep2.skipped) == sorted(rep.ok) and sorted(rep2.processed) == sorted(rep.failed)
    # a tampered output is redone; a touched but identical input is still skipped (SHA-256)
    out0 = tmp_path / "dask" / rep.records["imgs/CT_small00"]["output"]
    raw = bytearray(out0.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    out0.write_bytes(bytes(raw))
    inp = dataset / "imgs" / "MR_small01.npz"
    os.utime(inp, (time.time() + 5, time.time() + 5))
    # a changed input is redone
    with np.load(dataset / "imgs" / "CT_small02.npz", allow_pickle=True) as z:
        members = {k: z[k] for k in z.files}
    members["imgs"] = (members["imgs"] // 2).astype(np.uint8)
    np.savez_compressed(dataset / "imgs" / "CT_small02.npz", **members)
    rep3 = run_batch(dataset, "boxfill", tmp_path / "dask", client=client, progress=False, cases=[
        "imgs/CT_small00", "imgs/CT_small02", "imgs/MR_small01", "imgs/MR_small03"])
    assert sorted(rep3.processed) == ["imgs/CT_small00", "imgs/CT_small02"]
    assert sorted(rep3.skipped) == ["imgs/MR_small01", "imgs/MR_small03"]
    assert read_manifest(tmp_path / "dask")["imgs/CT_small00"]["output_sha256"] == ref.records["imgs/CT_small00"]["output_sha256"]


def test_prompts_from_gts_on_nifti_records_dice_in_status_db(tmp_path, shared_data):
    root = make_nnunet(shared_data, tmp_path / "nn")
    cat = discover(root)
    store = StatusStore(tmp_path / "side" / "status.sqlite")
    rep = run_batch(cat, "boxfill", tmp_path / "out", prompts_from="gts", scheduler="sync", status_store=store,
                    progress=False)
    assert sorted(rep.ok) == ["imagesTr/ts_001", "imagesTr/ts_002"]
    assert rep.failed == ["imagesTs/ts_101"]  # no labels to take boxes from
    r = rep.records["imagesTr/ts_001"]
    gts = cat.load("imagesTr/ts_001").labels["gts"]
    segs = read_segs(tmp_path / "out" / r["output"])
    # every label keeps its own id (non-consecutive TotalSegmentator ids), boxes cover the labels
    assert set(r["label_ids"]) <= set(np.unique(gts)) and len(r["label_ids"]) > 10
    assert store.metric("imagesTr/ts_001", "dice_pred") == pytest.approx(r["dice"])
    det = store.metric_details("dice_pred")["imagesTr/ts_001"]
    assert det["pred_path"].endswith("ts_001.npz") and segs.shape == gts.shape
    assert store.history("imagesTr/ts_001")[0].action == "batch"
    store.close()


def test_cli_batch(tmp_path, shared_data, capsys):
    root = make_small_cvpr(shared_data, tmp_path / "ds", 2)
    rc = cli_main(["batch", str(root), "--backend", "boxfill", "--out", str(tmp_path / "o"), "--scheduler", "sync",
                   "--no-progress", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and sorted(out["done"]) == ["imgs/CT_small00", "imgs/MR_small01"]
    # recorded in the dataset's own sidecar database
    st = StatusStore(root / ".medsegfm" / "status.sqlite")
    assert st.metric("imgs/CT_small00", "dice_pred") is not None
    st.close()
    rc = cli_main(["batch", str(root), "--backend", "nosuch", "--out", str(tmp_path / "o"), "--scheduler", "sync"])
    assert rc == 2 and "unknown backend" in capsys.readouterr().err
    rc = cli_main(["batch", str(root), "--backend", "boxfill", "--out", str(tmp_path / "o"), "--prompts-from", "text",
                   "--scheduler", "sync"])
    assert rc == 2 and "cannot serve prompts from 'text'" in capsys.readouterr().err


def test_worker_over_memory_limit_is_recorded(tmp_path, shared_data):
    """A case that blows the per-worker memory limit fails alone; the other case still finishes."""
    root = make_small_cvpr(shared_data, tmp_path / "ds", 1)
    big = np.zeros((160, 1024, 1024), np.uint8)  # 160 MiB image, boxes over all of it
    boxes = np.empty(3, dtype=object)
    for j in range(3):
        boxes[j] = {"z_min": np.int64(0), "z_max": np.int64(159), "z_mid": np.int64(80), "z_mid_x_min": np.int64(0),
                    "z_mid_y_min": np.int64(0), "z_mid_x_max": np.int64(1023), "z_mid_y_max": np.int64(1023)}
    np.savez_compressed(root / "imgs" / "ZZ_huge.npz", imgs=big, spacing=np.ones(3), boxes=boxes)
    # run_batch's own LocalCluster: 1 worker process with a 600 MiB limit, no retries of a killed case
    rep = run_batch(root, "boxfill", tmp_path / "out", n_workers=1, memory_limit="600MiB", progress=False)
    assert rep.ok == ["imgs/CT_small00"]
    assert rep.failed == ["imgs/ZZ_huge"]
    err = rep.records["imgs/ZZ_huge"]["error"]
    assert "KilledWorker" in err or "memory" in err.lower(), err


def test_existing_scheduler_by_address(tmp_path, shared_data, client):
    """--scheduler ADDRESS: the batch connects to a running cluster instead of starting one."""
    root = make_small_cvpr(shared_data, tmp_path / "ds", 2)
    rep = run_batch(root, "boxfill", tmp_path / "out", scheduler=client.scheduler.address, progress=False)
    assert sorted(rep.ok) == ["imgs/CT_small00", "imgs/MR_small01"] and rep.n_workers == 2
    assert all(r["worker"].startswith("tcp://") for r in rep.records.values())

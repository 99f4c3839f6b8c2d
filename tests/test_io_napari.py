"""The napari hooks (headless): reader tuples, writer round trips, manifest, samples, CLI convert."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_medsegfm.io import fixtures as fx
from napari_medsegfm.io import load_case
from napari_medsegfm.io.reader import napari_get_reader
from napari_medsegfm.io.writer import napari_write_labels

MANIFEST = Path(__file__).resolve().parents[1] / "napari_medsegfm" / "napari.yaml"


def _layers(path):
    reader = napari_get_reader(str(path))
    assert callable(reader), path
    return reader(str(path))


def test_reader_layers_cvpr25(shared_data):
    layers = _layers(shared_data / "cvpr25/imgs/CT_AMOS_amos_0018.npz")
    assert [t for _d, _k, t in layers] == ["image", "labels", "shapes"]
    (img, ikw, _), (lab, lkw, _), (rects, skw, _) = layers
    assert img.shape == lab.shape == (63, 512, 512)
    assert ikw["scale"] == lkw["scale"] == skw["scale"] == pytest.approx((5.0, 0.846, 0.846))
    md = lkw["metadata"]
    assert md["medsegfm_format"] == "cvpr25_npz" and md["medsegfm_key"] == "gts"
    assert md["medsegfm_case"].endswith("imgs/CT_AMOS_amos_0018.npz")
    assert md["medsegfm_labels_file"].endswith("gts/CT_AMOS_amos_0018.npz")
    f = lkw["features"]
    assert f["index"] == list(range(16)) and f["name"][1] == "CT imaging of the spleen within the abdomen"
    assert f["text_prompt"][1] == f["name"][1] and f["instance"][1] is False
    assert len(rects) == 15 and skw["features"]["z_mid"][0] == rects[0][0, 0]
    assert skw["shape_type"] == "rectangle"


def test_reader_list_of_paths(shared_data):
    paths = [str(shared_data / fx.TOTALSEG_MR), str(shared_data / fx.TOTALSEG_MR_SEG)]
    layers = napari_get_reader(paths)(paths)
    assert [t for _d, _k, t in layers] == ["image", "labels"]
    assert layers[0][0].shape == layers[1][0].shape


def test_writer_npz_roundtrip_via_layer_metadata(shared_data, tmp_path):
    src = tmp_path / "case.npz"
    shutil.copyfile(shared_data / "medsam2_recist/CT_Lesion_000001_02_01_008-023.npz", src)  # writable copy
    layers = _layers(src)
    data, kw, _ = next(x for x in layers if x[2] == "labels")
    assert kw["metadata"]["medsegfm_key"] == "gts"
    edited = np.asarray(data).copy()
    edited[0, :3, :3] = 2
    meta = {**kw, "features": kw.get("features")}
    # a gts layer is saved as segs unless the user asked to replace gts
    out = napari_write_labels(str(src), edited, meta)
    assert out == [str(src)]
    back = load_case(src)
    assert np.array_equal(back.labels["segs"], edited) and np.array_equal(back.labels["gts"], data)
    meta["metadata"] = {**kw["metadata"], "medsegfm_overwrite_gt": True}
    napari_write_labels(str(src), edited, meta)
    assert np.array_equal(load_case(src).labels["gts"], edited) and (tmp_path / "case.npz.bak").exists()


def test_writer_nifti_from_layer_metadata(shared_data, tmp_path):
    layers = _layers(shared_data / fx.TOTALSEG_MR_SEG)
    data, kw, _ = layers[0]
    out = tmp_path / "corrected.nii.gz"
    napari_write_labels(str(out), data, kw)
    import nibabel as nib

    a, b = nib.load(str(shared_data / fx.TOTALSEG_MR_SEG)), nib.load(str(out))
    assert np.array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj)) and np.array_equal(a.affine, b.affine)
    with pytest.raises(ValueError, match="ground-truth"):
        napari_write_labels(str(shared_data / fx.TOTALSEG_MR_SEG), data, kw)


def test_writer_plain_layer(tmp_path):
    lab = np.zeros((4, 5, 6), np.int32)
    lab[1, 2, 3] = 4
    napari_write_labels(str(tmp_path / "new.npz"), lab, {"metadata": {}, "scale": (2.0, 1.0, 0.5)})
    assert np.load(tmp_path / "new.npz")["segs"][1, 2, 3] == 4
    with pytest.raises(ValueError, match="did not come from a case"):
        napari_write_labels(str(tmp_path / "x.png"), lab, {"metadata": {}})


def test_npe2_manifest_valid():
    """``npe2 validate`` on the manifest file, and every io/sample command resolves."""
    res = subprocess.run([sys.executable, "-m", "npe2", "validate", str(MANIFEST)], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    import importlib

    import yaml

    manifest = yaml.safe_load(MANIFEST.read_text())
    contrib = manifest["contributions"]
    commands = {c["id"]: c["python_name"] for c in contrib["commands"]}
    ours = [r["command"] for r in contrib["readers"]] + [w["command"] for w in contrib["writers"]] + \
        [s["command"] for s in contrib["sample_data"]]
    assert len(contrib["sample_data"]) >= 3
    for cid in ours:
        module, _, attr = commands[cid].partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), cid
    # the dock widgets are other modules' business; they must at least still be declared
    assert {"napari-medsegfm.annotation_widget", "napari-medsegfm.dataset_widget"} <= set(commands)


def test_sample_data():
    from napari_medsegfm import sample_data

    ct = sample_data.ct_lesion()
    assert [t for _d, _k, t in ct] == ["image", "labels"] and ct[0][0].shape == (16, 512, 512)
    mr = sample_data.mr_totalseg()
    assert [t for _d, _k, t in mr] == ["image", "labels"]
    sa = sample_data.samed2d_slice()
    assert [t for _d, _k, t in sa] == ["image", "labels"] and len(sa[1][1]["features"]["index"]) == 16


def test_cli_convert(shared_data, tmp_path):
    from napari_medsegfm.cli import main

    src = shared_data / "medsam2_recist/CT_Lesion_000001_02_01_008-023.npz"
    ref = load_case(src)
    assert main(["convert", str(src), str(tmp_path / "les.nii.gz")]) == 0
    import nibabel as nib

    # the npz's direction/origin (a transposed, flipped DeepLesion slab) become the NIfTI affine;
    # the voxels are stored as they were, in (x, y, z) file order
    raw_img, raw_lab = nib.load(str(tmp_path / "les.nii.gz")), nib.load(str(tmp_path / "les_seg.nii.gz"))
    assert np.array_equal(np.asanyarray(raw_img.dataobj), ref.image.array.transpose(2, 1, 0))
    assert np.array_equal(np.asanyarray(raw_lab.dataobj), ref.labels["gts"].transpose(2, 1, 0))
    assert np.allclose(raw_img.affine, ref.image.affine[:, [2, 1, 0, 3]], atol=1e-5)
    img = load_case(tmp_path / "les.nii.gz")  # shown canonical: reoriented, same voxel count
    assert img.image.array.size == ref.image.array.size and img.meta["axcodes"] == "PLI"
    assert main(["convert", str(tmp_path / "les.nii.gz"), str(tmp_path / "les.h5")]) == 0
    assert np.array_equal(load_case(tmp_path / "les.h5").image.array, img.image.array)
    assert main(["convert", str(src), str(tmp_path / "sa"), "--to", "samed2d"]) == 0
    sa = load_case(tmp_path / "sa")
    assert np.array_equal(sa.labels["gts"], ref.labels["gts"]) and sa.image.array.shape == (16, 512, 512)
    amos = shared_data / "cvpr25/imgs/CT_AMOS_amos_0018.npz"
    assert main(["convert", str(amos), str(tmp_path / "amos.npz")]) == 0
    back, orig = load_case(tmp_path / "amos.npz", gts_path=None), load_case(amos)
    assert back.boxes == orig.boxes and back.text_prompts == orig.text_prompts
    assert np.array_equal(back.labels["gts"], orig.labels["gts"])
    assert main(["convert", str(amos), str(tmp_path / "amos.npz")]) == 2  # exists, no --overwrite

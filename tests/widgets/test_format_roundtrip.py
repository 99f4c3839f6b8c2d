"""Every supported case format opened through napari's own reader machinery, one box run with
the weight-free ``classic`` backend from the dock, saved, reopened and compared — in one
real napari window under Xvfb.

Formats: the five seed formats (CVPR 2025 npz, CVPR 2024 npz, medsegpy (3D .h5 and 2D slice
folder), SA-Med2D PNG, IVDM3Seg), NIfTI, and the 2D RGB CVPR npz with and without a
placeholder ``spacing`` and in-file ``gts``. Screenshots: ``roundtrip_<format>.png``."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import wait_until

from napari_medsegfm.io import fixtures as fx
from napari_medsegfm.io import load_case

pytestmark = [pytest.mark.gui, pytest.mark.slow]

PLUGIN = "napari-medsegfm"
HEART = "2DBox_MR_BiomedParse08_heart"



def _copy(src, dst):
    """``shutil.copy`` without the mode: a writable copy (the shared data files are 0444)."""
    dst = Path(dst)
    if dst.is_dir():
        dst = dst / Path(src).name
    return shutil.copyfile(src, dst)

def _heart(shared: Path, root: Path, *, spacing: bool, gts: bool) -> Path:
    with np.load(shared / "cvpr24" / "imgs" / f"{HEART}.npz") as z:
        m = {"imgs": z["imgs"], "boxes": z["boxes"]}
    if gts:
        with np.load(shared / "cvpr24" / "gts" / f"{HEART}.npz") as z:
            m["gts"] = z["gts"]
    if spacing:
        m["spacing"] = np.array([1.0, 1.0, 1.0])
    p = root / f"heart{'_sp' if spacing else ''}{'_gts' if gts else ''}" / f"{HEART}.npz"
    p.parent.mkdir(parents=True)
    np.savez(p, **m)
    return p


@pytest.fixture(scope="module")
def cases(shared_data, tmp_path_factory):
    """name -> (path to open, how Save writes: None = the dock's default, or a Save-as target)."""
    root = tmp_path_factory.mktemp("roundtrip")
    (root / "cvpr25" / "imgs").mkdir(parents=True)
    (root / "cvpr25" / "gts").mkdir()
    for sub in ("imgs", "gts"):
        _copy(shared_data / "cvpr25" / sub / "CT_AMOS_amos_0018.npz", root / "cvpr25" / sub)
    (root / "cvpr24").mkdir()
    _copy(shared_data / "cvpr24" / "imgs" / "3DBox_CT_Lesion_000001_02_01_008-023.npz", root / "cvpr24")
    m3d = fx.make_medsegpy_h5(shared_data, root / "medsegpy3d")
    fx.make_medsegpy_slices(shared_data, root / "medsegpy2d")
    sa = fx.make_samed2d(shared_data, root / "samed2d")
    fx.make_ivdm3seg(shared_data, root / "ivdm3seg", cases=("01",), flat=False)
    (root / "nifti").mkdir()
    _copy(shared_data / fx.TOTALSEG_MR, root / "nifti")
    out = root / "out"
    out.mkdir()
    return {
        "cvpr25_npz": (root / "cvpr25" / "imgs" / "CT_AMOS_amos_0018.npz", None),
        "cvpr24_npz": (root / "cvpr24" / "3DBox_CT_Lesion_000001_02_01_008-023.npz", None),
        "medsegpy_h5": (m3d["path"], out / "medsegpy.h5"),
        "medsegpy_slices": (root / "medsegpy2d", out / "slices"),
        "samed2d": (sa["root"] / "images" / "ct_00--TotalSegmentator--s0114--z_0111.png", out / "sa" / "masks"),
        "ivdm3seg": (root / "ivdm3seg" / "01", None),
        "nifti": (root / "nifti" / Path(fx.TOTALSEG_MR).name, None),
        "rgb2d_spacing_gts": (_heart(shared_data, root, spacing=True, gts=True), None),
        "rgb2d_spacing": (_heart(shared_data, root, spacing=True, gts=False), None),
        "rgb2d_gts": (_heart(shared_data, root, spacing=False, gts=True), None),
        "rgb2d": (_heart(shared_data, root, spacing=False, gts=False), None),
    }


def _box_for(case, shape):
    """A box around the first labelled structure (a few slices of it), else the image centre."""
    from napari_medsegfm.types import Box2D, Box3D

    lab = next(iter(case.labels.values()), None) if case.labels else None
    if case.boxes:
        b = case.boxes[0]
        return b.__class__(**{**b.__dict__, "object_id": 1})
    if lab is not None and lab.any():
        idx = np.argwhere(lab == np.unique(lab[lab > 0])[0])
        lo, hi = idx.min(0), idx.max(0)
    else:
        c = np.array(shape) // 2
        lo, hi = c - np.array(shape) // 6, c + np.array(shape) // 6
    if len(shape) == 3:
        zm = int((lo[0] + hi[0]) // 2)
        return Box3D(max(int(lo[0]), zm - 2), min(int(hi[0]), zm + 2), int(lo[1]), int(lo[2]), int(hi[1]), int(hi[2]),
                     object_id=1)
    return Box2D(int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1]), object_id=1)


def _reopen(name, path, target, written):
    """The saved labels read back (the plugin's reader; for the multi-file formats from a copy of
    the case with the written masks/segs in place)."""
    if name.endswith("npz") or name.startswith("rgb2d"):
        return load_case(path).labels["segs"]
    if name in ("nifti", "ivdm3seg"):
        return load_case(written, as_labels=True).labels["gts"]
    if name == "medsegpy_h5":
        return load_case(written).labels["gts"]
    if name == "medsegpy_slices":
        for im in Path(path).glob("*.im"):
            _copy(im, target / im.name)
        return load_case(target).labels["gts"]
    if name == "samed2d":
        (target.parent / "images").mkdir(exist_ok=True)
        _copy(path, target.parent / "images" / Path(path).name)
        _copy(Path(path).parents[1] / "SAMed2D_v1_class_mapping_id.json", target.parent)
        return load_case(target.parent / "images" / Path(path).name).labels["gts"]
    raise AssertionError(name)


def test_open_segment_save_reopen_every_format(make_napari_viewer, qtbot, cases, artifacts_dir):
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1280, 800)
    _dock, w = viewer.window.add_plugin_dock_widget(PLUGIN, "Interactive segmentation")
    c = w.controller
    for name, (path, target) in cases.items():
        viewer.layers.clear()
        layers = viewer.open(str(path), plugin=PLUGIN)
        image = next(ly for ly in layers if type(ly).__name__ == "Image" and ly.visible)
        c.attach(image, backend="classic")
        wait_until(qtbot, lambda: c.attached and c.backend_name == "classic" and not c.busy, timeout=60)
        case = load_case(path)
        assert c.volume.spatial_shape == case.image.spatial_shape, name
        if name.startswith("rgb2d"):
            assert c.volume.is_rgb and c.volume.spatial_shape == (1024, 1024), name
        box = _box_for(case, c.volume.spatial_shape)
        lid = c.add_object("aorta" if name == "samed2d" else f"{name} object")  # SA-Med2D masks are named by class
        c.submit(box.__class__(**{**box.__dict__, "object_id": lid}))
        wait_until(qtbot, lambda: not c.busy, timeout=120)
        labels = np.array(c.session.labels)
        assert (labels == lid).sum() > 20, f"{name}: classic segmented nothing"
        if c.volume.ndim == 3:
            viewer.dims.set_current_step(0, int(np.argwhere(labels == lid)[:, 0].mean()))
        viewer.reset_view()
        from qtpy.QtWidgets import QApplication

        QApplication.processEvents()
        viewer.window._qt_window.grab().save(str(artifacts_dir / f"roundtrip_{name}.png"))
        # save: the dock's Save (its own file / beside it), or Save as for the multi-file formats
        fut = c.save(target, wait=True) if target is not None else c.save(wait=True)
        written = Path(fut.result())
        wait_until(qtbot, lambda: not c.saving, timeout=60)
        assert not c.dirty, f"{name}: {c.last_message}"
        back = _reopen(name, path, target, written)
        got = np.asarray(back)
        assert got.shape == labels.shape, name
        # the object's voxels under one label (SA-Med2D renumbers labels on reading: its masks are files)
        vals, counts = np.unique(got[labels == lid], return_counts=True)
        same = int(vals[np.argmax(counts)])
        assert same != 0 and (same == lid or name == "samed2d"), name
        np.testing.assert_array_equal(got == same, labels == lid, err_msg=name)
        # reopening the saved case through napari shows the object again
        if name.endswith("npz") or name.startswith("rgb2d"):
            viewer.layers.clear()
            again = viewer.open(str(path), plugin=PLUGIN)
            segs = next(ly for ly in again if ly.metadata.get("medsegfm_key") == "segs")
            assert (np.asarray(segs.data) == lid).sum() == (labels == lid).sum(), name

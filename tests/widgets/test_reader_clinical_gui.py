"""Clinical formats through napari's own reader/writer machinery in a real window (Xvfb).

Screenshots: ``test-artifacts/io_reader_dicom_seg.png`` (the real CT series with dcmqi's
liver SEG), ``io_reader_dicom_oblique.png`` / ``io_reader_nifti_oblique.png`` (the same
oblique anisotropic CT as a DICOM series and as NIfTI), ``io_reader_seg_nrrd.png``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _clinical_data import (  # noqa: E402
    DICOM_DIR,
    SEG_DIR,
    copy_real_series,
    oblique_nifti,
    template,
    write_series,
)

pytestmark = pytest.mark.gui

PLUGIN = "napari-medsegfm"


def _kinds(layers) -> list[str]:
    return [type(layer).__name__.lower() for layer in layers]


def _shot(viewer, path: Path) -> np.ndarray:
    viewer.reset_view()
    shot = viewer.screenshot(path=str(path), canvas_only=True, flash=False)
    assert shot.shape[2] == 4 and shot[..., :3].std() > 5, f"{path.name}: blank screenshot"
    return shot


def test_dicom_nrrd_seg_through_viewer_open(make_napari_viewer, shared_data, tmp_path, artifacts_dir):
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(900, 700)
    # a series folder holding a DICOM-SEG that references it: CT in HU + the SEG as labels
    folder = tmp_path / "ct"
    copy_real_series(shared_data, folder)
    shutil.copy(shared_data / SEG_DIR / "liver_SEG.dcm", folder / "liver_SEG.dcm")
    layers = viewer.open(str(folder), plugin=PLUGIN)
    assert _kinds(layers) == ["image", "labels"]
    img, lab = layers
    assert img.data.shape == (3, 512, 512) and img.data.min() == -3024
    assert tuple(img.scale) == pytest.approx((1.0, 0.810547, 0.810547), abs=1e-5) and tuple(lab.scale) == tuple(img.scale)
    nrrd_liver = np.asarray(viewer.open(str(shared_data / SEG_DIR / "liver_seg.nrrd"), plugin=PLUGIN)[0].data)
    np.testing.assert_array_equal(np.asarray(lab.data), nrrd_liver)
    viewer.layers.remove(viewer.layers[-1])
    md = img.metadata
    assert md["medsegfm_format"] == "dicom"
    viewer.dims.set_current_step(0, 1)
    _shot(viewer, artifacts_dir / "io_reader_dicom_seg.png")
    # the writer by extension: .dcm (DICOM-SEG) and .seg.nrrd from the labels layer
    from napari.plugins.io import save_layers

    lab.data[1, 10:60, 10:60] = 2
    lab.refresh()
    out = tmp_path / "corrected.dcm"
    assert save_layers(str(out), [lab], plugin=PLUGIN) == [str(out)]
    from napari_medsegfm.io import load_case

    np.testing.assert_array_equal(load_case(folder, labels_file=out).labels["gts"], np.asarray(lab.data))
    out2 = tmp_path / "corrected.seg.nrrd"
    assert save_layers(str(out2), [lab], plugin=PLUGIN) == [str(out2)]
    back = load_case(out2)
    np.testing.assert_array_equal(back.labels["gts"], np.asarray(lab.data))
    assert back.label_names[1] == "Liver"

    # a Slicer .seg.nrrd opened together with the series
    viewer.layers.clear()
    layers = viewer.open([str(shared_data / DICOM_DIR), str(out2)], plugin=PLUGIN, stack=False)
    assert _kinds(layers) == ["image", "labels"]
    assert layers[1].data.shape == layers[0].data.shape
    viewer.dims.set_current_step(0, 1)
    _shot(viewer, artifacts_dir / "io_reader_seg_nrrd.png")


def test_oblique_series_shows_like_its_nifti(make_napari_viewer, shared_data, tmp_path, artifacts_dir):
    nii, data, aff = oblique_nifti(shared_data, tmp_path / "obl.nii.gz")
    write_series(tmp_path / "series", data, aff, template(shared_data))
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(900, 700)
    (a,) = viewer.open(str(nii), plugin=PLUGIN)
    (b,) = viewer.open(str(tmp_path / "series"), plugin=PLUGIN)
    np.testing.assert_array_equal(np.asarray(a.data), np.asarray(b.data))
    assert tuple(b.scale) == pytest.approx(tuple(a.scale), rel=1e-5)
    assert len({round(s, 3) for s in a.scale}) == 3
    viewer.dims.set_current_step(0, a.data.shape[0] // 2)
    a.visible = False
    shot_b = _shot(viewer, artifacts_dir / "io_reader_dicom_oblique.png")
    a.visible, b.visible = True, False
    shot_a = _shot(viewer, artifacts_dir / "io_reader_nifti_oblique.png")
    assert np.array_equal(shot_a, shot_b)  # pixel for pixel the same picture


def test_multi_series_folder_opens_one_layer_per_series(make_napari_viewer, shared_data, tmp_path):
    folder = tmp_path / "study"
    copy_real_series(shared_data, folder)
    nii, data, aff = oblique_nifti(shared_data, tmp_path / "obl.nii.gz")
    write_series(folder, data, aff, template(shared_data), series_number=9, description="oblique")
    viewer = make_napari_viewer()
    layers = viewer.open(str(folder), plugin=PLUGIN)
    assert _kinds(layers) == ["image", "image"]
    assert [layer.data.shape for layer in layers] == [(3, 512, 512), tuple(np.asarray(
        viewer.open(str(nii), plugin=PLUGIN)[0].data).shape)]
    assert "oblique" in layers[1].name

"""GUI smoke test: every format opened through napari's own reader machinery, a screenshot each.

Runs a real napari viewer under Xvfb (pytest-xvfb). Screenshots go to the artifacts folder
(``test-artifacts/io_reader_<format>.png``) for a person to look at.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from napari_medsegfm.io import fixtures as fx

pytestmark = pytest.mark.gui

PLUGIN = "napari-medsegfm"


@pytest.fixture(scope="module")
def cases(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("gui_cases")
    m3d = fx.make_medsegpy_h5(shared_data, root / "medsegpy3d")
    fx.make_medsegpy_slices(shared_data, root / "medsegpy2d")
    sa = fx.make_samed2d(shared_data, root / "samed2d")
    fx.make_ivdm3seg(shared_data, root / "ivdm3seg", cases=("01",), flat=False)
    amos = root / "cvpr25" / "imgs"
    amos.mkdir(parents=True)
    (root / "cvpr25" / "gts").mkdir()
    shutil.copy(shared_data / "cvpr25/imgs/CT_AMOS_amos_0018.npz", amos)
    shutil.copy(shared_data / "cvpr25/gts/CT_AMOS_amos_0018.npz", root / "cvpr25" / "gts")
    return {
        # name: (path, expected layer types, 3D slice to show (None: keep))
        "cvpr25_npz": (amos / "CT_AMOS_amos_0018.npz", ["image", "labels", "shapes"], 41),
        "cvpr24_npz": (shared_data / "cvpr24/imgs/2DBox_MR_BiomedParse08_heart.npz", ["image", "labels", "shapes"],
                       None),
        "nifti": ([shared_data / fx.TOTALSEG_MR, shared_data / fx.TOTALSEG_MR_SEG], ["image", "labels"], 10),
        "medsegpy_h5": (m3d["path"], ["image", "labels"], 6),
        "medsegpy_slices": (root / "medsegpy2d", ["image", "labels"], 6),
        "samed2d": (sa["root"] / "images" / "ct_00--TotalSegmentator--s0114--z_0111.png", ["image", "labels"], None),
        "samed2d_stack": (sa["root"], ["image", "labels"], None),
        "ivdm3seg": (root / "ivdm3seg" / "01", ["image"] * 4 + ["labels"], 10),
    }


def _layer_type(layer) -> str:
    return type(layer).__name__.lower()


def test_open_every_format_and_screenshot(make_napari_viewer, cases, artifacts_dir, tmp_path):
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(900, 700)
    for name, (path, kinds, z) in cases.items():
        viewer.layers.clear()
        paths = [str(p) for p in path] if isinstance(path, list) else [str(path)]
        if name == "samed2d_stack":  # a dataset root holding several cases opens its first (sorted) case
            paths = [str(path)]
        layers = viewer.open(paths, plugin=PLUGIN, stack=False)
        assert [_layer_type(layer) for layer in layers] == kinds, name
        labels = [lay for lay in viewer.layers if _layer_type(lay) == "labels"]
        assert labels and labels[0].metadata["medsegfm_format"] in name, name
        assert np.any(np.asarray(labels[0].data)), name
        img = viewer.layers[0]
        assert tuple(img.scale) == tuple(labels[0].scale), name
        if z is not None and img.ndim == 3:
            viewer.dims.set_current_step(0, z)
        viewer.reset_view()
        shot = viewer.screenshot(path=str(artifacts_dir / f"io_reader_{name}.png"), canvas_only=True, flash=False)
        assert shot.shape[2] == 4 and shot[..., :3].std() > 5, f"{name}: blank screenshot"
    # a bundled sample through napari's File > Open Sample machinery
    viewer.layers.clear()
    viewer.open_sample(PLUGIN, "ct_lesion")
    assert [_layer_type(lay) for lay in viewer.layers] == ["image", "labels"]
    viewer.dims.set_current_step(0, int(np.argmax(np.asarray(viewer.layers[1].data).sum(axis=(1, 2)))))
    viewer.reset_view()
    viewer.screenshot(path=str(artifacts_dir / "io_reader_sample_ct_lesion.png"), canvas_only=True, flash=False)
    # the writer through napari's machinery: save the last labels layer back as a CVPR npz
    viewer.layers.clear()
    path = cases["cvpr25_npz"][0]
    viewer.open(str(path), plugin=PLUGIN)
    lab = next(lay for lay in viewer.layers if _layer_type(lay) == "labels")
    lab.data[0, 0, 0] = 9
    out = tmp_path / "saved.npz"
    from napari.plugins.io import save_layers

    written = save_layers(str(out), [lab], plugin=PLUGIN)
    assert written == [str(out)]
    got = np.load(out)["segs"]
    assert got[0, 0, 0] == 9 and np.array_equal(got[1:], np.asarray(lab.data)[1:])

"""napari's menus: the plugin's Layers > Segment and File > IO utilities commands, run as napari runs them."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gui

PLUGIN = "napari-medsegfm"


def _manifest():
    import npe2

    return npe2.PluginManager.instance().get_manifest(PLUGIN)


def test_manifest_contributes_menu_commands(make_napari_viewer):
    make_napari_viewer()
    menus = _manifest().contributions.menus
    assert [m.command for m in menus["napari/layers/segment"]] == ["napari-medsegfm.segment_menu",
                                                                   "napari-medsegfm.dataset_menu"]
    assert [m.command for m in menus["napari/file/io_utilities"]] == ["napari-medsegfm.prefer_reader"]


def test_segment_menu_docks_the_widgets(make_napari_viewer, qtbot, fake_backend):
    import npe2
    import numpy as np

    from napari_medsegfm.widgets import AnnotationWidget, DatasetNavigator

    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.zeros((8, 32, 32), np.uint8), name="img")
    pm = npe2.PluginManager.instance()
    ann = pm.get_command("napari-medsegfm.segment_menu").exec(kwargs={"viewer": viewer})
    assert isinstance(ann, AnnotationWidget) and "Interactive segmentation" in " ".join(viewer.window.dock_widgets)
    nav = pm.get_command("napari-medsegfm.dataset_menu").exec(kwargs={"viewer": viewer})
    assert isinstance(nav, DatasetNavigator)
    qtbot.waitUntil(lambda: ann.controller.attached, timeout=20000)
    ann.teardown()


def test_prefer_reader_sets_napari_reader_preference_on_request(make_napari_viewer):
    import npe2
    from napari.settings import get_settings

    make_napari_viewer()
    plugins = get_settings().plugins
    before = dict(plugins.extension2reader)
    try:
        plugins.extension2reader = {**before, "*.tif": "some-other-plugin"}
        out = npe2.PluginManager.instance().get_command("napari-medsegfm.prefer_reader").exec()
        assert out["*.npz"] == PLUGIN and out["*.nii.gz"] == PLUGIN
        assert plugins.extension2reader["*.npz"] == PLUGIN and plugins.extension2reader["*.tif"] == "some-other-plugin"
        from napari_medsegfm.widgets.menu_actions import prefer_medsegfm_reader

        with pytest.raises(ValueError, match=r"\*\.npz"):
            prefer_medsegfm_reader(("npz",))
    finally:
        plugins.extension2reader = before


def test_reader_patterns_leave_ordinary_pngs_to_other_plugins(make_napari_viewer, tmp_path):
    """napari offers the plugin for a PNG only when it follows SA-Med2D's ``--`` naming scheme, so
    opening an ordinary PNG never asks which plugin to use."""
    import npe2

    make_napari_viewer()
    pm = npe2.PluginManager.instance()

    def ours(name: str) -> bool:
        return any(r.plugin_name == PLUGIN for r in pm.iter_compatible_readers([str(tmp_path / name)]))

    assert not ours("photo.png") and not ours("scan_001.png")
    assert ours("ct_00--TotalSegmentator--s0114--z_0111.png")
    assert ours("case.npz") and ours("brain.nii.gz")


def test_reader_patterns_claim_medsegpy_slices_by_their_naming_scheme(make_napari_viewer, shared_data, tmp_path):
    """medsegpy's 2D slices are claimed only when named ``%07d_V%02d-Aug%02d_%03d`` (any other
    ``.im``/``.seg`` is left to other readers); files made from the shared data open through the
    plugin: a slice, its ``.seg``, the scan's folder and a 3D ``.h5``. An ordinary HDF5 file is still
    offered (medsegpy's 3D files have no naming scheme), and the plugin's reader declines it."""
    import h5py
    import npe2
    import numpy as np

    from napari_medsegfm.io.fixtures import make_medsegpy_h5, make_medsegpy_slices
    from napari_medsegfm.io.reader import napari_get_reader

    viewer = make_napari_viewer()
    pm = npe2.PluginManager.instance()

    def ours(path) -> bool:
        return any(r.plugin_name == PLUGIN for r in pm.iter_compatible_readers([str(path)]))

    assert ours(tmp_path / "0123456_V00-Aug00_001.im") and ours(tmp_path / "0123456_V01-Aug04_999.seg")
    assert ours(tmp_path / "0123456_v00-aug00_001.SEG")  # (napari lowercases only the extension)
    for name in ("data.im", "liver.seg", "scan_001.im", "0123456_V00_001.im", "V00-Aug00.seg"):
        assert not ours(tmp_path / name), name

    sl = make_medsegpy_slices(shared_data, tmp_path / "slices", scan="0000002_V01-Aug00")
    files = sorted((tmp_path / "slices").glob("*.im"))
    assert files
    for path in (files[0], files[0].with_suffix(".seg"), tmp_path / "slices"):
        assert ours(path) or path.is_dir()
        layers = viewer.open(str(path), plugin=PLUGIN)
        img = next(ly for ly in layers if ly.__class__.__name__ == "Image")
        assert img.data.shape == sl["image"].shape, path
        viewer.layers.clear()
    m3d = make_medsegpy_h5(shared_data, tmp_path / "vol")
    assert ours(m3d["path"])
    layers = viewer.open(str(m3d["path"]), plugin=PLUGIN)
    assert next(ly for ly in layers if ly.__class__.__name__ == "Image").data.shape == m3d["image"].shape

    plain = tmp_path / "data.h5"
    with h5py.File(plain, "w") as f:
        f["images"] = np.zeros((4, 5), np.float32)
    assert ours(plain) and napari_get_reader(str(plain)) is None

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

"""The dataset navigator on a damaged status database: a clear message in the dock, files kept."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _dataset_data import make_small_cvpr  # noqa: E402

pytestmark = pytest.mark.gui


def test_navigator_reports_a_damaged_status_database(make_napari_viewer, tmp_path, shared_data, artifacts_dir):
    from qtpy.QtWidgets import QApplication

    root = make_small_cvpr(shared_data, tmp_path / "ds", 2)
    side = root / ".medsegfm"
    side.mkdir()
    damaged = os.urandom(8192)
    (side / "status.sqlite").write_bytes(damaged)
    from napari_medsegfm.widgets import DatasetNavigator

    viewer = make_napari_viewer(show=True)
    # built directly, as the other navigator tests do: through add_plugin_dock_widget the navigator
    # currently fails in _install_shortcuts (QShortcut on the public-only proxy of the window)
    nav = DatasetNavigator(viewer, use_annotation_widget=False)
    viewer.window.add_dock_widget(nav, name="Dataset correction", area="right")
    assert not nav.open_dataset(root)
    text = nav.message.text()
    assert "status.sqlite" in text and "not an SQLite database" in text and "medsegfm dataset recover" in text
    assert nav.workspace is None and (side / "status.sqlite").read_bytes() == damaged
    QApplication.processEvents()
    viewer.window._qt_window.grab().save(str(artifacts_dir / "navigator_damaged_status_db.png"))
    # after the recovery the same dock opens the dataset
    from napari_medsegfm.dataset.workspace import recover_status

    recover_status(root)
    assert nav.open_dataset(root) and nav.model.rowCount() == 2
    nav.close_dataset()

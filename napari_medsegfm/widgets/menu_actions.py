"""Commands of napari's menus (``menus`` in ``napari.yaml``), through napari's public API only.

* :func:`segment_with_medsegfm` (Layers > Segment): dock the Interactive segmentation
  widget, which annotates the selected image;
* :func:`correct_dataset` (Layers > Segment): dock the Dataset correction widget;
* :func:`prefer_medsegfm_reader` (File > IO utilities): make MedSegFM the preferred
  reader of ``.npz`` and ``.nii.gz`` files (napari's ``plugins.extension2reader``
  setting, the one its "remember this choice" box writes), so opening such a file never
  asks which plugin to use. Only on request: the plugin never changes it by itself.
"""

from __future__ import annotations

from typing import Any

from napari.viewer import Viewer  # (napari injects the viewer by this annotation)

__all__ = ["PLUGIN", "PREFERRED_PATTERNS", "segment_with_medsegfm", "correct_dataset", "prefer_medsegfm_reader"]

PLUGIN = "napari-medsegfm"
#: the file patterns :func:`prefer_medsegfm_reader` gives to MedSegFM
PREFERRED_PATTERNS = ("*.npz", "*.nii.gz")


def _dock(viewer: Any, widget: str) -> Any:
    _dock_widget, inner = viewer.window.add_plugin_dock_widget(PLUGIN, widget)
    return inner


def segment_with_medsegfm(viewer: Viewer) -> Any:
    """Dock the Interactive segmentation widget (or show it again); returns it."""
    return _dock(viewer, "Interactive segmentation")


def correct_dataset(viewer: Viewer) -> Any:
    """Dock the Dataset correction widget (or show it again); returns it."""
    return _dock(viewer, "Dataset correction")


def prefer_medsegfm_reader(patterns: tuple[str, ...] = PREFERRED_PATTERNS) -> dict[str, str]:
    """Make MedSegFM napari's preferred reader for ``patterns``; returns the new mapping.

    Other patterns' preferences are kept. napari saves its settings itself.
    """
    from napari.settings import get_settings

    bad = [p for p in patterns if not isinstance(p, str) or not p.startswith("*.")]
    if bad:
        raise ValueError(f"reader patterns must look like '*.npz'; got {bad}")
    plugins = get_settings().plugins
    mapping = dict(plugins.extension2reader)
    mapping.update({p: PLUGIN for p in patterns})
    plugins.extension2reader = mapping
    try:
        from napari.utils.notifications import show_info

        show_info(f"MedSegFM is now the preferred reader for {', '.join(patterns)} "
                  "(File > Preferences > Plugins to change it)")
    except ImportError:  # pragma: no cover - napari is a dependency
        pass
    return mapping

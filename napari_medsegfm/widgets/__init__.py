"""napari widgets: the only package of napari-medsegfm that imports Qt.

Imports are lazy so that ``import napari_medsegfm.widgets.controller`` (the Qt-free
logic) does not pull in a Qt binding:

* :class:`AnnotationWidget` — the interactive segmentation dock (``view.py``),
* :class:`AnnotationController` — its Qt-free logic (``controller.py``),
* :class:`DatasetNavigator` — the dataset correction dock (``navigator.py``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["AnnotationWidget", "AnnotationController", "DatasetNavigator"]

_LAZY = {
    "AnnotationWidget": ("view", "AnnotationWidget"),
    "AnnotationController": ("controller", "AnnotationController"),
    "DatasetNavigator": ("navigator", "DatasetNavigator"),
}


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    import importlib

    return getattr(importlib.import_module(f".{module}", __name__), attr)


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)

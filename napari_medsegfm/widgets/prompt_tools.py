"""Prompt tools of the annotation controller: which tool can be used now (and why not), activating
a tool's layer and mode, and the clicks, scribbles, brush strokes and text that become prompts.

Qt-free. :class:`PromptTools` is a mixin of
:class:`~napari_medsegfm.widgets.controller.AnnotationController`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backends.base import capability_names
from ..engine.postprocess import BBox
from ..types import Capability, Scribble, TextPrompt
from .layer_sync import NEGATIVE_RGBA, POSITIVE_RGBA, _set_defaults
from .prompts import point_to_prompt, scribbles_from_atoms

__all__ = ["PromptTools", "ToolState", "TOOLS"]

TOOLS = ("box", "click", "scribble", "brush", "text", "z_extent", "run_boxes")


@dataclass(frozen=True)
class ToolState:
    """Whether a tool can be used now, and why not."""

    enabled: bool
    reason: str = ""


def _bbox_of_atoms(atoms: Any, shape: tuple[int, ...]) -> BBox | None:
    lo = np.full(len(shape), np.iinfo(np.int64).max, dtype=np.int64)
    hi = np.full(len(shape), -1, dtype=np.int64)
    for atom in atoms:
        if hasattr(atom, "slice_key"):
            key = atom.slice_key
            lo = np.minimum(lo, [s.start or 0 for s in key])
            hi = np.maximum(hi, [(s.stop if s.stop is not None else n) - 1 for s, n in zip(key, shape)])
        else:
            idx = atom[0]
            if len(idx) == 0 or np.asarray(idx[0]).size == 0:
                continue
            lo = np.minimum(lo, [int(np.min(a)) for a in idx])
            hi = np.maximum(hi, [int(np.max(a)) for a in idx])
    if np.any(hi < 0):
        return None
    lo = np.clip(lo, 0, np.asarray(shape) - 1)
    hi = np.clip(hi, 0, np.asarray(shape) - 1)
    return tuple(slice(int(a), int(b) + 1) for a, b in zip(lo, hi))


class PromptTools:
    """The controller's prompt tools (mixin; see module docstring)."""

    @property
    def capabilities(self) -> Capability:
        b = self.session.backend if self.session is not None else None
        return getattr(b, "capabilities", Capability.NONE) if b is not None else Capability.NONE

    def tool_states(self) -> dict[str, ToolState]:
        """Enabled state of each tool in :data:`TOOLS`, with the reason when disabled."""
        out: dict[str, ToolState] = {}
        if self.session is None:
            why = "open an image first"
            return {t: ToolState(False, why) for t in TOOLS}
        caps = self.capabilities
        name = self._backend_name or "no backend"
        loading = self._backend_loading is not None and self.session.backend is None
        in3d = self.viewer.dims.ndisplay == 3
        vol3d = self.volume.ndim == 3
        axial = not vol3d or tuple(self.viewer.dims.order[-2:]) == (
            self.viewer.dims.ndim - 2, self.viewer.dims.ndim - 1)

        def cap(flag: Capability, label: str) -> ToolState:
            if loading:
                return ToolState(False, f"loading backend {self._backend_loading}…")
            if self.session.backend is None:
                return ToolState(False, "pick a backend first")
            if not (flag & caps):
                have = ", ".join(capability_names(caps)) or "nothing"
                return ToolState(False, f"backend {name!r} cannot use {label} (it supports: {have})")
            return ToolState(True)

        box_caps = Capability.BOX3D | Capability.BOX2D
        st = cap(box_caps, "boxes")
        if st.enabled and in3d:
            st = ToolState(False, "boxes are drawn on a slice: switch to the 2D view (Ctrl+Y)")
        elif st.enabled and not axial:
            st = ToolState(False, "boxes are drawn on axial (z) slices: reset the axis order (View > Axes)")
        out["box"] = st
        out["run_boxes"] = cap(box_caps, "boxes")
        out["z_extent"] = (ToolState(False, "2D image: no z extent") if not vol3d else
                           cap(Capability.BOX3D, "3D boxes"))
        st = cap(Capability.POINTS, "clicks")
        if st.enabled and in3d:
            st = ToolState(False, "clicks are placed on a slice: switch to the 2D view (Ctrl+Y)")
        out["click"] = st
        st = cap(Capability.SCRIBBLE, "scribbles")
        if st.enabled and in3d:
            st = ToolState(False, "scribbles are painted on a slice: switch to the 2D view (Ctrl+Y)")
        out["scribble"] = st
        out["brush"] = (ToolState(False, "the brush paints on a slice: switch to the 2D view (Ctrl+Y)") if in3d
                        else ToolState(True))
        if loading or self.session.backend is None or Capability.TEXT in caps:
            out["text"] = cap(Capability.TEXT, "text")
        else:
            out["text"] = ToolState(False, f"backend {name!r} cannot segment from text: the text only names the "
                                           "object; segment it with a box, clicks or scribbles")
        return out

    # ================================================================ tools
    def activate_tool(self, tool: str) -> None:
        """Select the layer and mode of a tool: ``box``, ``click``, ``scribble``, ``brush``, ``pan``."""
        self._require_session()
        if tool != "pan":
            st = self.tool_states().get(tool)
            if st is not None and not st.enabled:
                self._message(st.reason, "warning")
                return
        self._ensure_prompt_layers()
        sel = self.viewer.layers.selection
        if tool == "box":
            self.ensure_object()
            self._select_current_in_layers()
            sel.active = self.box_layer
            self.box_layer.selected_data = set()
            self.box_layer.mode = "add_rectangle"
        elif tool == "click":
            self.ensure_object()
            sel.active = self.click_layer
            self.click_layer.mode = "add"
        elif tool == "scribble":
            self.ensure_object()
            sel.active = self.scribble_layer
            self.scribble_layer.selected_label = 2 if self.negative else 1
            self.scribble_layer.mode = "paint"
        elif tool == "brush":
            lid = self.ensure_object()
            sel.active = self.seg_layer
            self.seg_layer.selected_label = lid
            self.seg_layer.mode = "paint"
        elif tool == "pan":
            active = sel.active
            if active is not None and hasattr(active, "mode"):
                active.mode = "pan_zoom"
        else:
            raise ValueError(f"unknown tool {tool!r}; expected box, click, scribble, brush or pan")
        self.events.tools.emit()

    def set_negative(self, negative: bool) -> None:
        """Clicks and scribbles mark background (True) or the object (False)."""
        self.negative = bool(negative)
        if self.scribble_layer is not None and self.scribble_layer.selected_label in (1, 2):
            self.scribble_layer.selected_label = 2 if negative else 1
        self.events.tools.emit()
        self._message("negative (background) prompts" if negative else "positive (object) prompts")

    def toggle_negative(self) -> None:
        self.set_negative(not self.negative)

    # ------------------------------------------------------------ clicks
    def _on_points_press(self, layer: Any, event: Any) -> None:
        mods = {str(getattr(m, "name", m)).lower() for m in (event.modifiers or ())}
        self._press_shift = "shift" in mods
        if layer.mode == "add":
            positive = not (self.negative ^ self._press_shift)
            layer.selected_data = set()
            self._syncing += 1
            try:
                _set_defaults(layer, object_id=self.current_id or 0, positive=positive)
                layer.current_face_color = POSITIVE_RGBA if positive else NEGATIVE_RGBA
            finally:
                self._syncing -= 1

    def _on_points_data(self, event: Any) -> None:
        if self._syncing or self.session is None:
            return
        if str(getattr(event, "action", "")) != "added":
            return
        layer = self.click_layer
        n = len(layer.data)
        idx = sorted({i % n for i in (event.data_indices or ())}) if n else []
        for i in idx:
            positive = bool(layer.features["positive"].iloc[i]) if "positive" in layer.features else True
            self.add_click(layer.data[i], positive=positive, _from_layer=True)

    def add_click(self, coord: Any, positive: bool = True, *, _from_layer: bool = False) -> int | None:
        """Submit a click at data coordinate ``coord`` for the current object."""
        self._require_session()
        lid = self.ensure_object()
        try:
            p = point_to_prompt(coord, self.volume.spatial_shape, lid, positive=positive)
        except ValueError as exc:
            self._message(str(exc), "error")
            if _from_layer:
                self._shown_points = None
                self._sync_prompt_layers()
            return None
        gen = self.submit(p)
        if not _from_layer:
            self._shown_points = None
            self._sync_prompt_layers()
        elif gen is None:
            self._shown_points = None
            self._sync_prompt_layers()
        return gen

    # ------------------------------------------------------------ scribbles
    def _on_scribble_paint(self, event: Any) -> None:
        if self._syncing or self.session is None:
            return
        lid = self.ensure_object()
        prompts = scribbles_from_atoms(event.value, self.volume.spatial_shape, lid)
        shown = self._shown_scribbles
        for p in prompts:
            self.submit(p)
        if shown is not None and lid == self.current_id:
            # napari already draws the stroke: count it as shown, no rewrite of the layer
            mine = self.session.prompts_in_effect(lid)
            self._shown_scribbles = tuple(id(p) for p in mine if isinstance(p, Scribble))

    # ------------------------------------------------------------ brush
    def _on_seg_paint(self, event: Any) -> None:
        if self._syncing or self.session is None:
            return
        bbox = _bbox_of_atoms(event.value, tuple(self.seg_layer.data.shape))
        if bbox is None:
            return
        values = {int(getattr(a, "new_value", 0)) for a in event.value if hasattr(a, "new_value")}
        desc = "eraser" if values == {0} else "brush"
        sess = self.session

        def commit() -> None:
            # napari emits ``paint`` before writing for programmatic paint() calls: commit afterwards.
            # (napari keeps its own bounded stroke history too; Ctrl+Z is the dock's while docked.)
            if self.session is sess:
                sess.apply_edit(bbox=bbox, description=desc)

        self._post(commit)

    # ------------------------------------------------------------ text
    def text_prompt(self, text: str, *, instance: bool | None = None) -> int | None:
        """Name the current object ``text`` and, if the backend reads text, segment it from the text."""
        self._require_session()
        text = (text or "").strip()
        if not text:
            return None
        lid = self.ensure_object()
        self.rename_object(lid, text)
        if self._backend_loading is None and Capability.TEXT not in self.capabilities:
            self._message(f"named the object {text!r}. Backend {self._backend_name or 'none'!r} cannot segment "
                          "from text: draw a box, click or scribble on it.")
            return None
        inst = self.objects[lid].instance if instance is None else instance
        return self.submit(TextPrompt(text, instance=bool(inst), object_id=lid))

"""Keyboard shortcuts of the annotation widget: one table, used by the view and the help panel.

Qt-free. Keys are written in Qt's portable text form (``"Ctrl+Shift+Z"``); the view
turns each into a ``QShortcut`` on napari's main window, so a shortcut works
whichever layer is active (napari's own layer hotkeys would otherwise win).
Keys are chosen not to steal napari's brush keys (P paint, E erase, ``[``/``]``
brush size, M new label, Z pan) that are used for manual correction.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

__all__ = ["Shortcut", "SHORTCUTS", "shortcut_for", "keys_text", "help_rows", "help_html"]


@dataclass(frozen=True)
class Shortcut:
    """One action of the widget: ``action`` is the controller/view method name it triggers."""

    action: str
    keys: tuple[str, ...]
    description: str
    group: str = "Tools"
    only_when_busy: bool = False


SHORTCUTS: tuple[Shortcut, ...] = (
    # tools
    Shortcut("tool_box", ("B",), "Box tool: draw a rectangle on the current slice", "Prompt tools"),
    Shortcut("tool_click", ("C",), "Click tool: click on the object (Shift+click = negative)", "Prompt tools"),
    Shortcut("toggle_negative", ("N",), "Toggle negative clicks / scribbles", "Prompt tools"),
    Shortcut("tool_scribble", ("G",), "Scribble tool: paint strokes (1 = object, 2 = background)", "Prompt tools"),
    Shortcut("tool_brush", ("D",), "Correct with napari's brush on the segmentation (E = eraser)", "Prompt tools"),
    Shortcut("tool_pan", ("Shift+Z",), "Pan/zoom: leave the drawing tools", "Prompt tools"),
    Shortcut("set_z_min", (",",), "Box: bottom of z extent = current slice (the '<' key)", "3D box"),
    Shortcut("set_z_max", (".",), "Box: top of z extent = current slice (the '>' key)", "3D box"),
    Shortcut("run_box", ("Ctrl+Return",), "Run the selected box (or the current object's boxes)", "3D box"),
    Shortcut("run_all_boxes", ("Ctrl+Shift+Return",), "Run every box of the box layer (e.g. the file's boxes)", "3D box"),
    # objects
    Shortcut("new_object", ("O",), "New object", "Objects"),
    Shortcut("next_object", ("PgDown",), "Next object", "Objects"),
    Shortcut("previous_object", ("PgUp",), "Previous object", "Objects"),
    Shortcut("focus_name", ("F2",), "Name the object / type a text prompt", "Objects"),
    Shortcut("accept_object", ("K",), "Accept the object (keep it)", "Objects"),
    Shortcut("reset_object", ("Shift+R",), "Reset the object (clear its mask and prompts)", "Objects"),
    Shortcut("delete_object", ("Shift+Del",), "Delete the object", "Objects"),
    # session
    Shortcut("undo", ("Ctrl+Z",), "Undo (prompts and brush edits)", "Session"),
    Shortcut("redo", ("Ctrl+Shift+Z",), "Redo", "Session"),
    Shortcut("save", ("Ctrl+S",), "Save the segmentation into the case's own file/format", "Session"),
    Shortcut("cancel", ("Esc",), "Cancel the running segmentation (only while busy)", "Session", only_when_busy=True),
    Shortcut("toggle_help", ("F1",), "Show / hide this list", "Session"),
)

_BY_ACTION = {s.action: s for s in SHORTCUTS}


def shortcut_for(action: str) -> Shortcut:
    """The shortcut of an action; ``KeyError`` naming the known actions otherwise."""
    try:
        return _BY_ACTION[action]
    except KeyError:
        raise KeyError(f"no shortcut for action {action!r}; known: {', '.join(_BY_ACTION)}") from None


def keys_text(action: str) -> str:
    """Human text of an action's keys, e.g. ``"Ctrl+Shift+Z"``."""
    return " / ".join(shortcut_for(action).keys)


def help_rows() -> list[tuple[str, str, str]]:
    """``(group, keys, description)`` rows in display order."""
    return [(s.group, " / ".join(s.keys), s.description) for s in SHORTCUTS]


def help_html() -> str:
    """The shortcut table as a small HTML document (for a tooltip or help panel)."""
    rows = []
    group = None
    for g, keys, desc in help_rows():
        if g != group:
            rows.append(f"<tr><td colspan='2'><b>{html.escape(g)}</b></td></tr>")
            group = g
        rows.append(f"<tr><td width='32%' style='white-space:nowrap'><code>{html.escape(keys)}</code>&nbsp;</td>"
                    f"<td>{html.escape(desc)}</td></tr>")
    rows.append("<tr><td colspan='2'><i>Mouse: Shift+click = negative click. napari's brush keys "
                "P (paint), E (erase), [ ] (size) work on the segmentation layer.</i></td></tr>")
    return "<table width='100%' cellspacing='0' cellpadding='1'>" + "".join(rows) + "</table>"

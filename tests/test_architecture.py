"""The layering rules of DESIGN.md as tests: Qt only in widgets/, torch only in backends/."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    """import-linter contracts in pyproject.toml (forbidden Qt/torch imports, layers)."""
    exe = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(exe), str(REPO / "pyproject.toml")], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_headless_api_loads_without_qt_or_torch():
    """Importing the headless layers pulls in neither a Qt binding nor torch."""
    code = textwrap.dedent(
        """
        import importlib, pkgutil, sys
        import napari_medsegfm
        for pkg in ("types", "engine", "tasks", "io", "dataset"):
            mod = importlib.import_module("napari_medsegfm." + pkg)
            if hasattr(mod, "__path__"):
                for info in pkgutil.iter_modules(mod.__path__):
                    importlib.import_module(f"napari_medsegfm.{pkg}.{info.name}")
        bad = sorted(m for m in sys.modules if m.split(".")[0] in
                     {"qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "torch", "magicgui"})
        print(",".join(bad))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"headless import pulled in: {proc.stdout.strip()}"


def test_qt_imports_only_in_widgets():
    """No module outside widgets/ names a Qt binding, magicgui or superqt in an import."""
    offenders = []
    for path in (REPO / "napari_medsegfm").rglob("*.py"):
        rel = path.relative_to(REPO / "napari_medsegfm")
        if rel.parts[0] == "widgets":
            continue
        for line in path.read_text().splitlines():
            s = line.strip()
            if s.startswith(("import ", "from ")) and any(
                s.split()[1].split(".")[0] == q
                for q in ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "superqt")
            ):
                offenders.append(f"{rel}: {s}")
    assert not offenders, offenders

"""Packaging regressions fail (never skip): every entry point setup.cfg declares is installed and loads.

A stale install (metadata from before an entry point was added) makes this fail with the
command that fixes it, instead of hiding the gap behind a skip.
"""

from __future__ import annotations

import configparser
import importlib.metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIX = "reinstall the package metadata: python -m pip install -c constraints.txt -e ."


def _declared() -> list[tuple[str, str, str]]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    out = []
    for group, body in cfg["options.entry_points"].items():
        for line in body.strip().splitlines():
            name, _, target = (s.strip() for s in line.partition("="))
            if name:
                out.append((group, name, target))
    return out


def test_setup_cfg_declares_the_backends_the_cli_and_the_manifest():
    groups = {g for g, _, _ in _declared()}
    assert {"console_scripts", "napari.manifest", "napari_medsegfm.backends"} <= groups
    names = {n for g, n, _ in _declared() if g == "napari_medsegfm.backends"}
    assert {"classic", "litemedsam", "vista3d"} <= names


@pytest.mark.parametrize("group,name,target", _declared(), ids=lambda v: str(v))
def test_declared_entry_point_is_installed_and_loads(group, name, target):
    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group=group)}
    assert name in eps, f"entry point {group}:{name} is declared in setup.cfg but not installed; {FIX}"
    assert eps[name].value == target, f"installed {group}:{name} = {eps[name].value!r}, setup.cfg says {target!r}; {FIX}"
    if group != "napari.manifest":  # a module:file.yaml value, checked by the napari tests
        assert eps[name].load() is not None

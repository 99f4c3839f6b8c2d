"""LiteMedSAM backend: the bundled promptable foundation model (TinyViT + SAM decoder).

Importing this package is cheap (no torch): ``LiteMedSAMBackend.status()`` only looks
for the checkpoint file. torch is imported when a backend instance first needs the model.

Modules: ``weights`` (locating/verifying the checkpoint), ``tinyvit``, ``prompt_encoder``,
``mask_decoder``, ``model`` (network + strict load), ``predictor`` (2D preprocessing,
encoding, decoding), ``cache`` (embedding caches), ``propagate`` (3D logic), ``backend``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LiteMedSAMBackend"]


def __getattr__(name: str) -> Any:
    if name == "LiteMedSAMBackend":
        from .backend import LiteMedSAMBackend

        return LiteMedSAMBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

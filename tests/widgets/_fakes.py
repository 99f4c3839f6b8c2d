"""A deterministic, optionally slow backend for the widget tests (no weights needed).

Boxes fill their voxels; a positive click sets a cube of ``radius`` around it and a
negative one clears it; scribbles set/clear their voxels; a text prompt fills a cube
in the image centre. Without a box among the prompts it starts from ``prev_mask``.
``delay_s`` is spent in ``cancel.wait`` steps (cancellable, releases the GIL like a
real model's tensor work does).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from napari_medsegfm.types import (
    Box2D,
    Box3D,
    CancelToken,
    Capability,
    Point,
    Prompt,
    Scribble,
    TextPrompt,
    Volume,
)

ALL = Capability.BOX3D | Capability.BOX2D | Capability.POINTS | Capability.SCRIBBLE | Capability.TEXT


class SlowFake:
    name = "slowfake"
    capabilities = ALL

    def __init__(self, delay_s: float = 0.0, radius: int = 3, capabilities: Capability | None = None,
                 fail_on: str | None = None) -> None:
        self.delay_s = delay_s
        self.radius = radius
        self.fail_on = fail_on
        if capabilities is not None:
            self.capabilities = capabilities
        self.shape: tuple[int, ...] = ()
        self.calls = 0
        self.cancelled = 0
        self.started = threading.Event()
        self.threads: set[str] = set()

    def set_image(self, volume: Volume) -> None:
        self.shape = tuple(volume.spatial_shape)

    def reset(self) -> None:
        self.shape = ()

    def predict(self, prompts: Sequence[Prompt], prev_mask: np.ndarray | None, cancel: CancelToken) -> np.ndarray:
        self.calls += 1
        self.threads.add(threading.current_thread().name)
        self.started.set()
        if self.delay_s:
            steps = max(int(self.delay_s / 0.01), 1)
            for _ in range(steps):
                if cancel.wait(self.delay_s / steps):
                    self.cancelled += 1
                    cancel.check()
        cancel.check()
        kinds = {type(p).__name__ for p in prompts}
        if self.fail_on and self.fail_on in kinds:
            raise RuntimeError(f"fake backend refuses {self.fail_on} prompts")
        has_box = any(isinstance(p, (Box2D, Box3D)) for p in prompts)
        if prev_mask is not None and not has_box:
            mask = prev_mask.copy()
        else:
            mask = np.zeros(self.shape, dtype=bool)
        nd = len(self.shape)
        r = self.radius
        for p in prompts:
            if isinstance(p, Box3D):
                mask[p.z_min:p.z_max + 1, p.y_min:p.y_max + 1, p.x_min:p.x_max + 1] = True
            elif isinstance(p, Box2D):
                if nd == 3:
                    mask[p.z, p.y_min:p.y_max + 1, p.x_min:p.x_max + 1] = True
                else:
                    mask[p.y_min:p.y_max + 1, p.x_min:p.x_max + 1] = True
            elif isinstance(p, Point):
                sl = tuple(slice(max(c - r, 0), c + r + 1) for c in p.zyx)
                mask[sl] = p.positive
            elif isinstance(p, Scribble):
                mask[tuple(p.voxels.T)] = p.positive
            elif isinstance(p, TextPrompt):
                sl = tuple(slice(s // 2 - 2, s // 2 + 3) for s in self.shape)
                mask[sl] = True
        return mask

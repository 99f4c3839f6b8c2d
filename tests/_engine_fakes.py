"""Small deterministic fake backends for the engine tests (session, worker, prompt log).

Not collected by pytest (leading underscore); imported by tests/test_session*.py,
test_worker*.py, test_promptlog*.py and benchmarks/engine_bench.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_medsegfm.types import (
    Box2D,
    Box3D,
    CancelToken,
    Capability,
    Point,
    Prompt,
    Scribble,
    Volume,
)

ALL_GEOMETRIC = Capability.BOX3D | Capability.BOX2D | Capability.POINTS | Capability.SCRIBBLE


class FillBox:
    """Deterministic: boxes fill, clicks set/clear a cube of ``radius``, scribbles set/clear voxels.

    Without a box among the prompts it starts from ``prev_mask`` (so clicks refine).
    ``last_box_only``: only the newest box and the prompts after it count (SAM-like).
    ``delay_s`` is spent in ``cancel.wait`` steps of ``step_s`` (cancellable work).
    """

    name = "fillbox"
    capabilities = ALL_GEOMETRIC

    def __init__(self, delay_s: float = 0.0, step_s: float = 0.01, radius: int = 2,
                 last_box_only: bool = False) -> None:
        self.last_box_only = last_box_only
        self.delay_s = delay_s
        self.step_s = step_s
        self.radius = radius
        self.volume: Volume | None = None
        self.set_image_calls = 0
        self.calls = 0  # predict calls started
        self.completed = 0  # predict calls that returned a mask
        self.threads: set[int] = set()
        self.last_prompts: tuple[Prompt, ...] = ()
        self._lock = threading.Lock()

    @property
    def params(self) -> dict:
        return {"radius": self.radius}

    def set_image(self, volume: Volume) -> None:
        self.volume = volume
        self.set_image_calls += 1

    def reset(self) -> None:
        self.volume = None

    def predict(self, prompts: Sequence[Prompt], prev_mask: np.ndarray | None, cancel: CancelToken) -> np.ndarray:
        assert self.volume is not None, "set_image was not called"
        with self._lock:
            self.calls += 1
            self.threads.add(threading.get_ident())
        self.last_prompts = tuple(prompts)
        t_end = time.perf_counter() + self.delay_s
        while time.perf_counter() < t_end:
            cancel.check()
            cancel.wait(min(self.step_s, max(t_end - time.perf_counter(), 0)))
        cancel.check()
        shape = self.volume.spatial_shape
        has_box = any(isinstance(p, (Box3D, Box2D)) for p in prompts)
        mask = np.zeros(shape, bool) if (has_box or prev_mask is None) else prev_mask.copy()
        if self.last_box_only and has_box:
            last = max(i for i, p in enumerate(prompts) if isinstance(p, (Box3D, Box2D)))
            prompts = prompts[last:]
        for p in prompts:
            if isinstance(p, Box3D):
                mask[p.z_min:p.z_max + 1, p.y_min:p.y_max + 1, p.x_min:p.x_max + 1] = True
            elif isinstance(p, Box2D):
                if len(shape) == 3:
                    mask[p.z, p.y_min:p.y_max + 1, p.x_min:p.x_max + 1] = True
                else:
                    mask[p.y_min:p.y_max + 1, p.x_min:p.x_max + 1] = True
            elif isinstance(p, Point):
                sl = tuple(slice(max(c - self.radius, 0), c + self.radius + 1) for c in p.zyx)
                mask[sl] = p.positive
            elif isinstance(p, Scribble):
                mask[tuple(p.voxels.T)] = p.positive
        with self._lock:
            self.completed += 1
        return mask


class Crash(FillBox):
    """Raises ``RuntimeError`` on every predict, or only on prompts of ``bad_ids``' objects."""

    name = "crash"

    def __init__(self, bad_ids: Sequence[int] | None = None, **kw) -> None:
        super().__init__(**kw)
        self.bad_ids = None if bad_ids is None else set(bad_ids)

    def predict(self, prompts, prev_mask, cancel):
        if self.bad_ids is None or prompts[-1].object_id in self.bad_ids:
            with self._lock:
                self.calls += 1
            raise RuntimeError(f"model exploded on object {prompts[-1].object_id}")
        return super().predict(prompts, prev_mask, cancel)


class BoxOnly(FillBox):
    name = "boxonly"
    capabilities = Capability.BOX3D


def load_real_crop(shared_data: Path, size=(24, 96, 96)) -> tuple[np.ndarray, np.ndarray, tuple]:
    """A real CT crop (image, ground truth, spacing zyx) from the CVPR25 AMOS case."""
    name = "CT_AMOS_amos_0018.npz"
    img = np.load(shared_data / "cvpr25" / "imgs" / name)["imgs"]
    g = np.load(shared_data / "cvpr25" / "gts" / name)
    gts, sp = g["gts"], g["spacing"]
    # crop around the centre of label 1 (liver or spleen, whatever it is)
    zz, yy, xx = np.nonzero(gts == 1)
    c = (int(np.median(zz)), int(np.median(yy)), int(np.median(xx)))
    sl = tuple(
        slice(max(0, min(ci - s // 2, n - s)), max(0, min(ci - s // 2, n - s)) + s)
        for ci, s, n in zip(c, size, gts.shape)
    )
    return np.ascontiguousarray(img[sl]), np.ascontiguousarray(gts[sl]), tuple(float(v) for v in sp[::-1])


def wait_until(pred, timeout: float = 5.0, step: float = 0.002) -> bool:
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if pred():
            return True
        time.sleep(step)
    return pred()


class ManualClock:
    """A clock for injected-time tests: stands still until :meth:`advance` (thread-safe)."""

    def __init__(self, start: float = 1000.0) -> None:
        self._t = float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._t

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._t += float(seconds)

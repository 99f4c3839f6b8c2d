"""The CVPR 2025 interactive evaluation protocol, end to end, in process.

Per case: step 0 predicts from the boxes (a box-less case skips it and scores 0),
then ``n_clicks`` steps each add one simulated click per class with an error
(:mod:`~napari_medsegfm.tasks.clicks`) and predict again. Every step goes through
:func:`~napari_medsegfm.tasks.predict.predict_case` with the same input members the
challenge hands its fresh process:

* step 0: every member of the case file except ``gts`` (``imgs``, ``spacing``,
  ``boxes``, ``text_prompts``, ...);
* click steps: ``imgs``, ``spacing``, ``clicks``, ``clicks_order``, ``prev_pred`` and,
  for a box case, ``boxes``.

Scores per step: DSC (mean over the ground-truth labels) and NSD at 2 mm, NSD only
where DSC > 0.2; case scores DSC_AUC/NSD_AUC (trapezoid over the click steps, x =
0..n-1) and the final DSC/NSD. NSD is computed with the official scorer's spacing
order (npz ``(x, y, z)`` as-is) and, separately, the physically correct order.

Case folders understood by :func:`find_cases`: ``DIR/imgs/*.npz`` with
``DIR/gts/*.npz`` (CVPR 2025 validation, CVPR 2024 style), a folder of npz files
holding their own ``gts`` (CVPR 2025 training, MedSAM2 RECIST), or one npz file.
Files with ``gts`` inside but no ``boxes`` get boxes made from the ground truth by
the challenge's rule (tight z range, the median labelled slice's xy box grown by
0-5 px x size/256, seeded) unless their name marks a box-less kind
(``vessel``, ``brats``); see ``boxes`` in :func:`run_case`.
"""

from __future__ import annotations

import copy
import logging
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..io.cvpr import read_cvpr_members
from . import metrics
from .clicks import empty_clicks, simulate_clicks
from .eval_results import CaseResult, EvalCase, format_table, summarize, write_csv
from .predict import predict_case

__all__ = [
    "EvalCase",
    "CaseResult",
    "find_cases",
    "load_case_arrays",
    "synthesize_boxes",
    "run_case",
    "evaluate",
    "summarize",
    "format_table",
    "write_csv",
    "BOXLESS_NAME_MARKERS",
]

log = logging.getLogger(__name__)

#: file-name parts of the kinds of cases the challenge evaluates without boxes
BOXLESS_NAME_MARKERS = ("vessel", "brats")


# ------------------------------------------------------------------------- loading
def _load_npz(path: Path) -> dict[str, Any]:
    from ..io import safe_load_npz  # restricted unpickler for boxes/text_prompts/clicks

    return dict(safe_load_npz(path))


def find_cases(cases: str | Path, gts: str | Path | None = None) -> list[EvalCase]:
    """Cases of a folder or file, sorted by name.

    Parameters
    ----------
    cases : path
        ``DIR`` with ``imgs/`` (and usually ``gts/``), a folder of npz files, or one
        npz file.
    gts : path, optional
        Folder (or, for one case, file) of ground-truth npz files with the same names.
        Default: ``DIR/gts`` when it exists, else the ``gts`` inside each image file.

    Raises
    ------
    FileNotFoundError
        Missing path, or no npz found.
    """
    root = Path(cases)
    if not root.exists():
        raise FileNotFoundError(f"cases path {root} does not exist")
    gt_root = Path(gts) if gts is not None else None
    if gt_root is not None and not gt_root.exists():
        raise FileNotFoundError(f"ground-truth path {gt_root} does not exist")
    if root.is_file():
        if root.suffix != ".npz":
            raise ValueError(f"{root} is not an npz file")
        gp = None
        if gt_root is not None:
            gp = gt_root if gt_root.is_file() else gt_root / root.name
        elif root.parent.name == "imgs" and (root.parent.parent / "gts" / root.name).is_file():
            gp = root.parent.parent / "gts" / root.name
        return [EvalCase(root.stem, root, gp)]
    img_dir = root / "imgs" if (root / "imgs").is_dir() else root
    if gt_root is None and (root / "gts").is_dir() and img_dir != root:
        gt_root = root / "gts"
    files = sorted(p for p in img_dir.glob("*.npz") if not p.name.startswith("."))
    if not files:
        raise FileNotFoundError(f"no .npz cases in {img_dir}")
    out = []
    for f in files:
        gp = None
        if gt_root is not None:
            cand = gt_root / f.name
            gp = cand if cand.is_file() else None
            if gp is None:
                log.warning("no ground truth %s; using the gts inside %s if any", cand, f.name)
        out.append(EvalCase(f.stem, f, gp))
    return out


def load_case_arrays(case: EvalCase) -> tuple[dict[str, Any], np.ndarray]:
    """The image file's members and the ground truth of a case, checked by the CVPR parser.

    Parameters
    ----------
    case : EvalCase
        Where the files are.

    Returns
    -------
    members : dict
        The image file's members without ``gts`` (``spacing`` and ``boxes`` taken from the
        ground-truth file when the image file lacks them).
    gts : np.ndarray
        Integer labels ``(Z, Y, X)`` or ``(Y, X)``.

    Raises
    ------
    ValueError
        A file without ``imgs``/``gts``, or members the parser refuses.
    FileNotFoundError
        No ground truth anywhere.
    """
    members = _load_npz(case.image_path)
    if "imgs" not in members:
        raise ValueError(f"{case.image_path} has no 'imgs' member")
    if case.gt_path is not None:
        gmem = _load_npz(case.gt_path)
        if "gts" not in gmem:
            raise ValueError(f"{case.gt_path} has no 'gts' member")
        gts = np.asarray(gmem["gts"])
        if "spacing" not in members and "spacing" in gmem:
            members["spacing"] = gmem["spacing"]
        if "boxes" not in members and "boxes" in gmem:
            members["boxes"] = gmem["boxes"]
    elif "gts" in members:
        gts = np.asarray(members["gts"])
    else:
        raise FileNotFoundError(f"no ground truth for {case.image_path}: no 'gts' member and no gts file")
    members.pop("gts", None)
    # the io parser decides 2D RGB vs 3D (and checks every member) as for any other entry point
    parsed = read_cvpr_members({**members, "gts": gts}, case.image_path)
    return members, parsed.labels["gts"]


def synthesize_boxes(gts: np.ndarray, labels: Sequence[int], seed: int = 0) -> np.ndarray:
    """CVPR 2025-style box dicts for 3D ``gts``.

    Per label: the tight inclusive z range; ``z_mid`` the middle labelled slice; the
    tight xy box on that slice grown on each side by ``s * H/256`` (y) and ``s * W/256``
    (x) pixels, ``s`` drawn from ``0..5`` with a generator seeded by ``seed``.

    Parameters
    ----------
    gts : np.ndarray
        Integer labels ``(Z, Y, X)``.
    labels : sequence of int
        The labels to box, in order.
    seed : int
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    np.ndarray
        1D object array of dicts (``z_min``, ``z_max``, ``z_mid``, ``z_mid_x_min``, ...,
        voxel indices, inclusive); ``boxes[i]`` for ``labels[i]``.

    Raises
    ------
    ValueError
        ``gts`` is not 3D, or a label is empty.
    """
    if gts.ndim != 3:
        raise ValueError(f"synthesize_boxes needs a 3D label image; got shape {gts.shape}")
    rng = np.random.default_rng(seed)
    d, h, w = gts.shape
    out = []
    for lab in labels:
        m = gts == lab
        zs = np.flatnonzero(m.any(axis=(1, 2)))
        if zs.size == 0:
            raise ValueError(f"label {lab} is empty; cannot make its box")
        zm = int(zs[len(zs) // 2])
        ys, xs = np.nonzero(m[zm])
        s = int(rng.integers(0, 6))
        gy, gx = int(s * h / 256), int(s * w / 256)
        out.append({
            "z_min": int(zs[0]), "z_max": int(zs[-1]), "z_mid": zm,
            "z_mid_x_min": max(int(xs.min()) - gx, 0), "z_mid_y_min": max(int(ys.min()) - gy, 0),
            "z_mid_x_max": min(int(xs.max()) + gx, w - 1), "z_mid_y_max": min(int(ys.max()) + gy, h - 1),
        })
    arr = np.empty(len(out), dtype=object)
    for i, b in enumerate(out):
        arr[i] = b
    return arr


def _as_saved(value: Any) -> np.ndarray:
    """What ``np.savez`` + ``np.load`` would give back for a Python list member."""
    try:
        arr = np.asarray(value)
        if arr.dtype != object or arr.ndim == 1:
            return arr
    except ValueError:  # ragged
        pass
    arr = np.empty(len(value), dtype=object)
    for i, v in enumerate(value):
        arr[i] = v
    return arr


def _clicks_array(clicks: list[dict[str, list[list[int]]]]) -> np.ndarray:
    arr = np.empty(len(clicks), dtype=object)
    for i, c in enumerate(clicks):
        arr[i] = copy.deepcopy(c)
    return arr


# ------------------------------------------------------------------------- protocol
def _scores(gts: np.ndarray, segs: np.ndarray, npz_spacing: Any, labels: Sequence[int],
            tolerance: float, physical: bool) -> tuple[float, float, float]:
    nd = gts.ndim
    d = metrics.multi_class_dsc(gts, segs, labels)
    if not d > metrics.NSD_DSC_THRESHOLD:
        return d, 0.0, 0.0
    sp_off = metrics.scorer_spacing(npz_spacing, nd, "official")
    n_off = metrics.multi_class_nsd(gts, segs, sp_off, tolerance, labels)
    n_phys = float("nan")
    if physical:
        sp_phys = metrics.scorer_spacing(npz_spacing, nd, "physical")
        n_phys = n_off if sp_phys == sp_off else metrics.multi_class_nsd(gts, segs, sp_phys, tolerance, labels)
    return d, n_off, n_phys


def _box_source(case: EvalCase, members: dict[str, Any], mode: str) -> str:
    has = "boxes" in members and members["boxes"] is not None and np.asarray(members["boxes"], dtype=object).size > 0
    if mode == "none":
        return "none"
    if mode == "file":
        return "file" if has else "none"
    if mode == "gt":
        return "synthesized"
    # auto
    if has:
        return "file"
    boxless_kind = any(k in case.name.lower() for k in BOXLESS_NAME_MARKERS)
    if case.gt_path is None and not boxless_kind:
        return "synthesized"
    return "none"


def run_case(
    case: EvalCase,
    backend: Any,
    *,
    n_clicks: int = 5,
    boxes: str = "auto",
    tolerance: float = 2.0,
    physical_nsd: bool = True,
    on_step: Callable[[int], None] | None = None,
    keep_segs: bool = False,
    predict_fn: Callable[[dict[str, Any]], np.ndarray] | None = None,
) -> tuple[CaseResult, list[np.ndarray]]:
    """Run the interactive protocol on one case.

    Parameters
    ----------
    case : EvalCase
    backend : SegmentationBackend
    n_clicks : int
        Click steps after the box step (the challenge uses 5).
    boxes : {"auto", "file", "gt", "none"}
        ``file``: the file's boxes (box-less if none); ``gt``: boxes made from the
        ground truth (:func:`synthesize_boxes`); ``none``: clicks only; ``auto``:
        the file's boxes, else synthesized for a training-layout file (``gts``
        inside) whose name is not a box-less kind, else none.
    tolerance : float
        NSD tolerance in mm.
    physical_nsd : bool
        Also compute NSD with the physically correct spacing order.
    on_step : callable(step), optional
        Called after each step (progress bars).
    keep_segs : bool
        Return every step's prediction.
    predict_fn : callable(inputs) -> segs, optional
        Runs one step instead of ``predict_case(inputs, backend)`` (a benchmark that
        drives ``medsegfm predict`` as a fresh process per step, as the challenge
        does); each step's seconds are then the call's wall time.

    Returns
    -------
    (CaseResult, list of np.ndarray)
    """
    if boxes not in ("auto", "file", "gt", "none"):
        raise ValueError(f"boxes must be auto, file, gt or none; got {boxes!r}")
    members, gts = load_case_arrays(case)
    labels = [int(v) for v in np.unique(gts) if v != 0]
    res = CaseResult(name=case.name, n_classes=len(labels), n_clicks=n_clicks)
    if labels != list(range(1, len(labels) + 1)):
        log.warning("%s: labels %s are not 1..N; the challenge maps boxes[i]/clicks[i] to label i+1",
                    case.name, labels)
    src = _box_source(case, members, boxes)
    res.box_source = src
    if src == "synthesized":
        members["boxes"] = synthesize_boxes(gts, labels, seed=zlib.crc32(case.name.encode()) & 0xFFFF)
    elif src == "none":
        members.pop("boxes", None)
    npz_spacing = members.get("spacing")
    step_fn = predict_fn if predict_fn is not None else (lambda inp: predict_case(inp, backend, source=case.image_path))
    segs_all: list[np.ndarray] = []
    clicks, order = empty_clicks(len(labels))

    def record(segs: np.ndarray, secs: float) -> None:
        d, n_off, n_phys = _scores(gts, segs, npz_spacing, labels, tolerance, physical_nsd)
        res.dsc.append(d)
        res.nsd.append(n_off)
        res.nsd_physical.append(n_phys if physical_nsd else float("nan"))
        res.seconds.append(secs)
        if keep_segs:
            segs_all.append(segs)

    # step 0: the box
    if src != "none":
        step0 = dict(members)
        t0 = time.perf_counter()
        segs = step_fn(step0)
        record(segs, time.perf_counter() - t0)
    else:
        segs = np.zeros(gts.shape, dtype=np.uint8)
        res.dsc.append(0.0)
        res.nsd.append(0.0)
        res.nsd_physical.append(0.0)
        res.seconds.append(0.0)
        if keep_segs:
            segs_all.append(segs)
    if on_step:
        on_step(0)

    for step in range(1, n_clicks + 1):
        simulate_clicks(gts, segs, clicks, order, labels)
        inputs: dict[str, Any] = {"imgs": members["imgs"]}
        if npz_spacing is not None:
            inputs["spacing"] = npz_spacing
        inputs["clicks"] = _clicks_array(clicks)
        inputs["clicks_order"] = _as_saved([list(o) for o in order])
        inputs["prev_pred"] = segs
        if src != "none":
            inputs["boxes"] = members["boxes"]
        t0 = time.perf_counter()
        segs = step_fn(inputs)
        record(segs, time.perf_counter() - t0)
        if on_step:
            on_step(step)
    res.clicks = copy.deepcopy(clicks)
    res.clicks_order = [list(o) for o in order]
    return res, segs_all


def evaluate(
    cases: Iterable[EvalCase],
    backend: Any,
    *,
    n_clicks: int = 5,
    boxes: str = "auto",
    tolerance: float = 2.0,
    physical_nsd: bool = True,
    progress: bool = False,
    stop_on_error: bool = False,
) -> list[CaseResult]:
    """Run :func:`run_case` on each case; a failing case is recorded with its error.

    Parameters
    ----------
    cases : iterable of EvalCase
        The cases.
    backend : SegmentationBackend
        The model.
    n_clicks : int
        Click steps after the box step.
    boxes : {"auto", "file", "gt", "none"}
        Where the box step's boxes come from (see :func:`run_case`).
    tolerance : float
        NSD tolerance in mm.
    physical_nsd : bool
        Also compute NSD with the physically correct spacing order.
    progress : bool
        Show a tqdm bar over all steps of all cases (on stderr).
    stop_on_error : bool
        Raise the first case's error instead of recording it.

    Returns
    -------
    list of CaseResult
        One per case, in order; failed cases have ``error`` set.
    """
    cases = list(cases)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(cases) * (n_clicks + 1), unit="step", desc="evaluate", leave=False, file=sys.stderr,
                   dynamic_ncols=True)
    out = []
    try:
        for case in cases:
            if bar is not None:
                bar.set_postfix_str(case.name[:40])
            done = [0]

            def on_step(step: int, _d: list[int] = done, _name: str = case.name[:40]) -> None:
                _d[0] += 1
                if bar is not None:
                    bar.set_postfix_str(f"{_name}: {'box' if step == 0 else f'click {step}'} done", refresh=False)
                    bar.update(1)

            try:
                res, _ = run_case(case, backend, n_clicks=n_clicks, boxes=boxes, tolerance=tolerance,
                                  physical_nsd=physical_nsd, on_step=on_step)
            except (ValueError, RuntimeError, FileNotFoundError, OSError) as exc:
                if stop_on_error:
                    raise
                log.error("%s: %s", case.name, exc)
                res = CaseResult(name=case.name, n_clicks=n_clicks, error=f"{type(exc).__name__}: {exc}")
                if bar is not None:
                    bar.update(n_clicks + 1 - done[0])
            finally:
                reset = getattr(backend, "reset", None)
                if callable(reset):
                    reset()
            out.append(res)
    finally:
        if bar is not None:
            bar.close()
    return out



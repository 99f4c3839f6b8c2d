"""``medsegfm evaluate --task text``: the CVPR 2025 text-guided segmentation task.

Each case is predicted from its text prompts alone (the image file's ``imgs``,
``spacing`` and ``text_prompts``; boxes and clicks are dropped, as in the text task) with
a backend that has the TEXT capability, or taken from ``--segs DIR`` (existing
predictions), then scored by :func:`napari_medsegfm.tasks.text_eval.evaluate_text`:
semantic cases (``instance_label = 0``) by DSC/NSD over the prompted classes, instance
cases (``instance_label = 1``) by F1 at IoU >= 0.5 with one-to-one matching.

Called from ``cli/evaluate.py`` (which owns the subcommand); kept here so the
interactive protocol's code stays untouched.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

from . import CLIError
from ._backend_args import EXIT_INPUT, EXIT_PARTIAL, EXIT_PROMPT, make_backend

log = logging.getLogger(__name__)

TEXT_MEMBERS = ("imgs", "spacing", "text_prompts")


def add_text_args(p: argparse.ArgumentParser) -> None:
    """Add the options of ``--task text`` to ``medsegfm evaluate`` (``--task``, ``--segs``, ``--save-segs``, ``--spacing-order``).

    Parameters
    ----------
    p : argparse.ArgumentParser
        The ``evaluate`` parser.
    """
    p.add_argument("--task", choices=("interactive", "text"), default="interactive",
                   help="interactive: box + clicks protocol (default); text: CVPR 2025 text-guided task "
                        "(semantic DSC/NSD, instance F1 at IoU >= 0.5)")
    p.add_argument("--segs", default=None, metavar="DIR",
                   help="--task text: score these existing predictions (NAME.npz with 'segs') instead of predicting")
    p.add_argument("--save-segs", default=None, metavar="DIR",
                   help="--task text: keep the predictions made here (default: a temporary folder)")
    p.add_argument("--spacing-order", choices=("official", "physical"), default="official",
                   help="--task text: NSD spacing as the official scorer passes it, or in array axis order")


def _case_folders(args: argparse.Namespace) -> tuple[Path, Path]:
    root = Path(args.cases)
    if not root.is_dir():
        raise CLIError(f"--task text needs a folder of cases (imgs/ and gts/); {root} is not a folder",
                       code=EXIT_INPUT)
    imgs = root / "imgs" if (root / "imgs").is_dir() else root
    gts = Path(args.gts) if args.gts else (root / "gts" if (root / "gts").is_dir() else imgs)
    if not gts.is_dir():
        raise CLIError(f"ground-truth folder {gts} does not exist", code=EXIT_INPUT)
    return imgs, gts


def _names(args: argparse.Namespace, imgs: Path, gts: Path) -> list[str]:
    names = sorted(p.name for p in gts.glob("*.npz") if not p.name.startswith(".") and (imgs / p.name).is_file())
    if args.include:
        keys = [k for k in args.include.split(",") if k]
        names = [n for n in names if any(k in n for k in keys)]
    if args.exclude:
        keys = [k for k in args.exclude.split(",") if k]
        names = [n for n in names if not any(k in n for k in keys)]
    if not names:
        raise CLIError(f"no case has both {imgs}/NAME.npz and {gts}/NAME.npz", code=EXIT_INPUT)
    return names


def _predict(names: list[str], imgs: Path, out: Path, args: argparse.Namespace) -> dict[str, str]:
    """Predict every case from its text prompts into ``out``; returns name -> error for failures."""
    from ..backends.base import UnsupportedPromptError
    from ..tasks.predict import predict_case
    from .predict import _read, write_segs

    backend = make_backend(args.backend, args.device)
    errors: dict[str, str] = {}
    for n in names:
        members = _read(imgs / n)
        if "text_prompts" not in members:
            errors[n] = "no text_prompts in the image file"
            continue
        inputs = {k: members[k] for k in TEXT_MEMBERS if k in members}
        try:
            segs = predict_case(inputs, backend, source=imgs / n)
        except UnsupportedPromptError as exc:
            raise CLIError(str(exc), code=EXIT_PROMPT) from None
        except (ValueError, RuntimeError) as exc:  # e.g. text no class matches
            errors[n] = f"{type(exc).__name__}: {exc}"
            log.error("%s: %s", n, errors[n])
            continue
        finally:
            reset = getattr(backend, "reset", None)
            if callable(reset):
                reset()
        write_segs(out / n, segs)
    return errors


def _clean(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


def run_text(args: argparse.Namespace) -> int:
    """``medsegfm evaluate --task text``: predict (or take ``--segs``) and score the text task.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``evaluate`` options.

    Returns
    -------
    int
        0, or 1 (``EXIT_PARTIAL``) when some case failed.

    Raises
    ------
    CLIError
        A folder that is not a case folder, a missing ``--segs`` folder, or a backend without TEXT.
    """
    from ..tasks.text_eval import evaluate_text, format_text_table, summarize_text

    imgs, gts = _case_folders(args)
    names = _names(args, imgs, gts)
    errors: dict[str, str] = {}
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if args.segs:
        segs_dir = Path(args.segs)
        if not segs_dir.is_dir():
            raise CLIError(f"--segs folder {segs_dir} does not exist", code=EXIT_INPUT)
    else:
        if args.save_segs:
            segs_dir = Path(args.save_segs)
            segs_dir.mkdir(parents=True, exist_ok=True)
        else:
            tmp = tempfile.TemporaryDirectory(prefix="medsegfm-text-")
            segs_dir = Path(tmp.name)
        errors = _predict(names, imgs, segs_dir, args)
    try:
        results = evaluate_text(segs_dir, gts, imgs, names=names, spacing_order=args.spacing_order,
                                tolerance=args.tolerance)
    finally:
        if tmp is not None:
            tmp.cleanup()
    for r in results:
        if r.name + ".npz" in errors:
            r.error = errors[r.name + ".npz"]
    if args.csv:
        with open(args.csv, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["case", "kind", "classes", "DSC", "NSD", "F1", "tp", "fp", "fn", "error"])
            for r in results:
                s = r.instance_score
                w.writerow([r.name, "instance" if r.instance else "semantic", len(r.labels), _clean(r.dsc),
                            _clean(r.nsd), _clean(r.f1), s.tp if s else "", s.fp if s else "", s.fn if s else "",
                            r.error])
    summary = summarize_text(results)
    if args.json:
        print(json.dumps({"task": "text", "cases": [{k: _clean(v) for k, v in r.to_dict().items()} for r in results],
                          "mean": {k: _clean(v) for k, v in summary.items()}}, indent=2, default=str))
    else:
        title = f"text task, {'predictions from ' + str(segs_dir) if args.segs else 'backend ' + str(args.backend)}"
        print(format_text_table(results, title=title))
    failed = [r.name for r in results if r.error]
    if failed:
        print(f"medsegfm evaluate: {len(failed)} case(s) failed: {', '.join(failed)}", file=sys.stderr)
        return EXIT_PARTIAL
    return 0

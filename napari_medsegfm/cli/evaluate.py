"""``medsegfm evaluate --cases DIR --backend NAME``: the CVPR 2025 interactive protocol.

Per case: a box step (skipped and scored 0 for box-less cases), then N simulated
clicks (largest 26-connected error component, its distance-transform maximum,
foreground/background by the ground truth), each step predicted exactly as
``medsegfm predict`` would. Reports per case and mean DSC per step, DSC_AUC,
NSD_AUC, final DSC/NSD (2 mm; official scorer's spacing order, plus the physically
correct order as NSDphys) and seconds per step; ``--csv`` writes every number.

DIR layouts: ``DIR/imgs`` + ``DIR/gts`` (CVPR 2025 validation, CVPR 2024 style), a
folder of npz files with ``gts`` inside (training layout, MedSAM2 RECIST), or one
npz file. ``--boxes auto`` uses the file's boxes, or boxes made from the ground truth
for training-layout files without any (except vessel/BraTS cases, box-less in the
challenge).

A progress bar on stderr follows the steps of every case (``--no-progress`` turns it
off); a one-line summary (cases, time, mean scores) ends the run on stderr.

Exit codes: 0 ok; 1 some cases failed; 2 missing/bad input or unknown backend;
4 backend not usable here.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

from . import CLIError
from ._backend_args import EXIT_INPUT, EXIT_PARTIAL, add_backend_args, make_backend
from ._text_task import add_text_args, run_text  # [text helper] --task text

log = logging.getLogger(__name__)


def register(sub: Any) -> None:
    """Add the ``evaluate`` sub-command (its options and help) to the ``medsegfm`` parser.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        The top-level parser's sub-parsers (``add_subparsers()``).
    """
    p = sub.add_parser(
        "evaluate",
        help="run the CVPR 2025 interactive protocol (box + clicks) and report DSC/NSD/AUC",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--cases", required=True, metavar="DIR", help="cases folder (imgs/ + gts/, or npz files) or one npz")
    p.add_argument("--gts", default=None, metavar="DIR", help="ground-truth folder (default: DIR/gts or inside the files)")
    add_backend_args(p)
    p.add_argument("--clicks", type=int, default=5, metavar="N", help="click steps after the box step (default 5)")
    p.add_argument("--boxes", choices=("auto", "file", "gt", "none"), default="auto",
                   help="box source (default auto, see above)")
    p.add_argument("--tolerance", type=float, default=2.0, metavar="MM", help="NSD tolerance in mm (default 2)")
    p.add_argument("--no-physical-nsd", action="store_true", help="skip the physically ordered NSD")
    p.add_argument("--csv", default=None, metavar="OUT", help="write per-case and mean rows to this CSV")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--include", default=None, metavar="TEXT", help="only cases whose name contains TEXT (comma-separated)")
    p.add_argument("--exclude", default=None, metavar="TEXT", help="skip cases whose name contains TEXT (comma-separated)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_text_args(p)  # [text helper] --task text, --segs, --save-segs, --spacing-order
    p.set_defaults(func=run)


def _clean(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def run(args: argparse.Namespace) -> int:
    """``medsegfm evaluate``: run the CVPR 2025 evaluation (box step + simulated clicks, or ``--task text``) and print and write the scores.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed options of the sub-command.

    Returns
    -------
    int
        Exit code: 0, or 1 (``EXIT_PARTIAL``) when some case failed.

    Raises
    ------
    CLIError
        Bad input or options; :func:`~napari_medsegfm.cli.main` prints it as one line on stderr and exits with its code.
    """
    from ..tasks import evaluation as ev

    if getattr(args, "task", "interactive") == "text":  # [text helper] CVPR 2025 text-guided task
        return run_text(args)
    if args.clicks < 1:
        raise CLIError(f"--clicks must be >= 1; got {args.clicks}", code=EXIT_INPUT)
    try:
        cases = ev.find_cases(args.cases, args.gts)
    except (FileNotFoundError, ValueError) as exc:
        raise CLIError(str(exc), code=EXIT_INPUT) from None
    if args.include:
        keys = [k for k in args.include.split(",") if k]
        cases = [c for c in cases if any(k in c.name for k in keys)]
    if args.exclude:
        keys = [k for k in args.exclude.split(",") if k]
        cases = [c for c in cases if not any(k in c.name for k in keys)]
    if not cases:
        raise CLIError("no cases left to evaluate", code=EXIT_INPUT)
    if args.csv and not Path(args.csv).parent.is_dir():
        raise CLIError(f"folder of --csv {args.csv} does not exist", code=EXIT_INPUT)
    t_start = time.perf_counter()
    backend = make_backend(args.backend, args.device)
    name = getattr(backend, "name", type(backend).__name__)
    results = ev.evaluate(cases, backend, n_clicks=args.clicks, boxes=args.boxes, tolerance=args.tolerance,
                          physical_nsd=not args.no_physical_nsd, progress=not args.no_progress)
    if args.csv:
        ev.write_csv(results, args.csv)
    if args.json:
        out = {"backend": name, "device": getattr(backend, "device", None), "n_clicks": args.clicks,
               "cases": [{k: _clean(v) for k, v in r.row().items()} for r in results],
               "mean": {k: _clean(v) for k, v in ev.summarize(results).items()}}
        print(json.dumps(out, indent=2))
    else:
        print(ev.format_table(results, title=f"backend {name}, {args.clicks} clicks, NSD at {args.tolerance:g} mm"))
    failed = [r.name for r in results if r.error]
    mean = ev.summarize(results)
    scores = (f": mean DSC_AUC {mean['DSC_AUC']:.3f}, final DSC {mean['DSC_Final']:.3f}, "
              f"final NSD {mean['NSD_Final']:.3f}") if mean["n_cases"] else ""
    print(f"medsegfm evaluate: {len(results) - len(failed)} of {len(results)} case(s) with {name} in "
          f"{time.perf_counter() - t_start:.1f} s{scores}"
          + (f"; {len(failed)} failed: {', '.join(failed)}" if failed else ""), file=sys.stderr)
    if failed:
        return EXIT_PARTIAL
    return 0

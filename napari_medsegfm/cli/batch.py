"""``medsegfm batch``: pre-segment a whole dataset with a backend on Dask distributed."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from . import CLIError

logger = logging.getLogger(__name__)


def register(sub: Any) -> None:
    """Add the ``batch`` sub-command (its options and help) to the ``medsegfm`` parser.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        The top-level parser's sub-parsers (``add_subparsers()``).
    """
    p = sub.add_parser(
        "batch",
        help="pre-segment every case of a dataset (Dask; resumable)",
        description=(
            "Run a backend over every case of DATASET and write <OUT>/<case>.npz (member 'segs') plus "
            "<OUT>/manifest.json. Runs on a new Dask LocalCluster (--workers processes) or on an existing "
            "cluster (--scheduler). Cases whose output and inputs are unchanged since a previous run "
            "(verified by SHA-256) are skipped; a failing case is recorded in the manifest and the batch "
            "goes on. Where cases have labels, the Dice of the prediction against them goes into the "
            "manifest and the dataset's status database (the navigator's review queue)."
        ),
    )
    p.add_argument("dataset", help="dataset folder (CVPR npz, NIfTI, nnU-Net, medsegpy, SA-Med2D, IVDM3Seg)")
    p.add_argument("--backend", required=True, help="backend name (see `medsegfm backends`)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--prompts-from", choices=("boxes", "gts", "text"), default="boxes",
                   help="boxes stored in the cases (default), boxes derived from the existing labels, or text prompts")
    p.add_argument("--scheduler", default=None,
                   help="address of an existing Dask scheduler (tcp://host:8786); 'sync' runs in this process")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default 2)")
    p.add_argument("--threads-per-worker", type=int, default=1, help="threads per worker (default 1)")
    p.add_argument("--memory-limit", default="2GiB",
                   help="memory limit per worker, e.g. 2GiB; a worker above it is restarted and its case "
                        "recorded as failed ('none' disables)")
    p.add_argument("--backend-option", action="append", default=[], metavar="KEY=VALUE",
                   help="keyword argument for the backend constructor (repeatable), e.g. device=cpu")
    p.add_argument("--case", action="append", default=None, metavar="CASE_ID", help="only this case (repeatable)")
    p.add_argument("--force", action="store_true", help="redo cases that are already done")
    p.add_argument("--rehash", action="store_true", help="verify unchanged inputs by SHA-256 even if size/mtime match")
    p.add_argument("--sidecar", default=None, help="sidecar folder of the dataset (default DATASET/.medsegfm)")
    p.add_argument("--no-record", action="store_true",
                   help="do not store Dice values and history in the dataset's status database")
    prog = p.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=None, help="show a progress bar on stderr (the default)")
    prog.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def _parse_options(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for it in items:
        if "=" not in it:
            raise CLIError(f"--backend-option {it!r}: expected KEY=VALUE")
        k, v = it.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def run(args: argparse.Namespace) -> int:
    """``medsegfm batch``: pre-segment the cases of a dataset with a backend, recording per-case results in its status database.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed options of the sub-command.

    Returns
    -------
    int
        Exit code: 0, or 1 when some case failed.

    Raises
    ------
    CLIError
        Bad input or options; :func:`~napari_medsegfm.cli.main` prints it as one line on stderr and exits with its code.
    """
    from ..dataset.autosave import sidecar_dir
    from ..dataset.batch import run_batch
    from ..dataset.catalog import discover
    from ..dataset.status import StatusStore

    catalog = discover(args.dataset)
    store = None
    if not args.no_record:
        try:
            store = StatusStore(sidecar_dir(catalog.root, args.sidecar) / "status.sqlite")
            store.ensure_cases(catalog.ids())
        except (ValueError, OSError) as exc:
            logger.warning("not recording in the status database: %s", exc)
            store = None
    mem = None if str(args.memory_limit).lower() in ("none", "0", "") else args.memory_limit
    try:
        report = run_batch(
            catalog, args.backend, args.out, prompts_from=args.prompts_from, scheduler=args.scheduler,
            n_workers=args.workers, threads_per_worker=args.threads_per_worker, memory_limit=mem,
            backend_kwargs=_parse_options(args.backend_option), cases=args.case, force=args.force,
            rehash=args.rehash, progress=args.progress is not False, status_store=store,
        )
    finally:
        if store is not None:
            store.close()
    if args.json:
        print(json.dumps({"done": report.ok, "skipped": report.skipped, "failed": report.failed,
                          "seconds": round(report.seconds, 2), "manifest": str(report.manifest_path)}))
    else:
        print(report.summary())
        for cid in report.failed:
            print(f"  failed: {cid}: {report.records[cid].get('error')}", file=sys.stderr)
    return 1 if report.failed else 0

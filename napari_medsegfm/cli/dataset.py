"""``medsegfm dataset``: status, history, locks and export of a dataset being corrected."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from . import CLIError


def register(sub: Any) -> None:
    """Add the ``dataset`` sub-command and its actions (status, set, history, export, unlock, recover).

    Parameters
    ----------
    sub : argparse._SubParsersAction
        The top-level parser's sub-parsers (``add_subparsers()``).
    """
    p = sub.add_parser("dataset", help="status, export and locks of a dataset under correction",
                       description="Inspect and manage a dataset opened with the navigator.")
    p.add_argument("--sidecar", default=None, help="sidecar folder (default DATASET/.medsegfm)")
    dsub = p.add_subparsers(dest="dataset_command", metavar="ACTION")

    s = dsub.add_parser("status", help="list cases with status, comment, last edit, Dice")
    s.add_argument("dataset")
    s.add_argument("--filter", action="append", default=None, metavar="STATUS",
                   help="only this status (repeatable): todo, 'in progress', done, flagged")
    s.add_argument("--sort", default="case_id", help="column: name, modality, n_labels, status, last_edited, dice, ...")
    s.add_argument("--review", action="store_true", help="review queue: worst agreement (1 - Dice) first")
    s.add_argument("--scan", action="store_true", help="load cases to count labels (slow on big datasets)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_status)

    st = dsub.add_parser("set", help="set the status and/or comment of a case")
    st.add_argument("dataset")
    st.add_argument("case")
    st.add_argument("--status", default=None)
    st.add_argument("--comment", default=None)
    st.set_defaults(func=_set)

    h = dsub.add_parser("history", help="edit history (of one case or the dataset)")
    h.add_argument("dataset")
    h.add_argument("case", nargs="?", default=None)
    h.add_argument("--limit", type=int, default=50)
    h.set_defaults(func=_history)

    e = dsub.add_parser("export", help="export corrected cases with a manifest")
    e.add_argument("dataset")
    e.add_argument("out", nargs="?", default=None, help="output folder")
    e.add_argument("--format", choices=("npz", "nifti", "same", "dicom_seg", "slicer_seg", "nrrd"), default="npz",
                   help="npz, nifti, each case's own format (same: DICOM cases as DICOM-SEG), or a clinical label "
                        "format for every case")
    e.add_argument("--key", default="gts", help="npz member for the labels (default gts)")
    e.add_argument("--status", action="append", default=None, help="only cases with this status (repeatable)")
    e.add_argument("--in-place", action="store_true",
                   help="write over the dataset's own label files (originals are backed up in the sidecar)")
    e.set_defaults(func=_export)

    u = dsub.add_parser("unlock", help="remove a stale edit lock")
    u.add_argument("dataset")
    u.add_argument("case")
    u.set_defaults(func=_unlock)

    r = dsub.add_parser("recover", help="rebuild a damaged status database from the corrections folder",
                        description="Move a damaged or foreign status database (and its -wal) aside, into "
                                    "SIDECAR/damaged-<time>/, and rebuild it: statuses, comments and history the old "
                                    "file still yields are kept; every case with an autosaved correction is at least "
                                    "'in progress'. Nothing is deleted.")
    r.add_argument("dataset")
    r.set_defaults(func=_recover)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def _ws(args: argparse.Namespace) -> Any:
    from ..dataset.workspace import DatasetWorkspace

    return DatasetWorkspace(args.dataset, sidecar=args.sidecar)


def _status(args: argparse.Namespace) -> int:
    ws = _ws(args)
    try:
        if args.scan:
            ws.scan()
        rows = ws.rows()
        if args.filter:
            rows = ws.filter(rows, [f.replace("_", " ") for f in args.filter])
        rows = ws.review_queue(rows) if args.review else ws.sort(rows, args.sort)
        if args.json:
            print(json.dumps([{"case_id": r.case_id, "name": r.name, "modality": r.modality,
                               "shape": list(r.shape) if r.shape else None, "n_labels": r.n_labels,
                               "status": r.status, "comment": r.comment, "last_edited": r.last_edited_text,
                               "by": r.last_by, "dice": r.dice, "corrected": r.has_correction,
                               "locked_by": r.locked_by} for r in rows], indent=1))
            return 0
        head = ("case", "modality", "shape", "labels", "status", "last edited", "by", "dice", "comment")
        table = [head] + [(r.case_id + (" *" if r.has_correction else ""), r.modality, r.shape_text,
                           "" if r.n_labels is None else str(r.n_labels), r.status + (f" [{r.locked_by}]" if r.locked_by else ""),
                           r.last_edited_text, r.last_by, "" if r.dice is None else f"{r.dice:.3f}", r.comment)
                          for r in rows]
        widths = [max(len(str(row[i])) for row in table) for i in range(len(head))]
        for row in table:
            print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
        counts: dict[str, int] = {}
        for r in ws.rows():
            counts[r.status] = counts.get(r.status, 0) + 1
        print(f"\n{ws.catalog.describe()}: " + ", ".join(f"{v} {k}" for k, v in counts.items())
              + "   (* = has an autosaved correction)")
        return 0
    finally:
        ws.close()


def _case_id(ws: Any, text: str) -> str:
    """The case id for ``text`` (an id, a name or part of an id)."""
    if text in ws.catalog:
        return text
    found = ws.catalog.find(text)
    if found is None:
        raise CLIError(f"no case {text!r} in {ws.catalog.describe()}")
    return found.case_id


def _set(args: argparse.Namespace) -> int:
    ws = _ws(args)
    try:
        args.case = _case_id(ws, args.case)
        if args.status is None and args.comment is None:
            raise CLIError("nothing to set: give --status and/or --comment")
        if args.status is not None:
            ws.set_status(args.case, args.status, args.comment)
        else:
            ws.set_comment(args.case, args.comment)
        r = ws.store.get(args.case)
        print(f"{args.case}: {r.status}" + (f" — {r.comment}" if r.comment else ""))
        return 0
    finally:
        ws.close()


def _history(args: argparse.Namespace) -> int:
    from ..dataset.status import format_time

    ws = _ws(args)
    try:
        case = None if args.case is None else _case_id(ws, args.case)
        for ev in ws.store.history(case, limit=args.limit):
            times = f" (x{ev.count})" if ev.count > 1 else ""
            print(f"{format_time(ev.at)}  {ev.who:<10} {ev.case_id:<30} {ev.action:<8} {ev.detail}{times}")
        return 0
    finally:
        ws.close()


def _export(args: argparse.Namespace) -> int:
    from ..dataset.export import export_corrections

    if args.out is None and not args.in_place:
        raise CLIError("give an output folder, or --in-place to write over the originals (with backups)")
    ws = _ws(args)
    try:
        rep = export_corrections(ws, args.out, fmt=args.format, key=args.key, in_place=args.in_place,
                                 statuses=[s.replace("_", " ") for s in args.status] if args.status else None)
        print(f"exported {len(rep.exported)} case(s), {len(rep.failed)} failed; manifest {rep.manifest_path}")
        if rep.backup_dir is not None:
            print(f"originals backed up in {rep.backup_dir}")
        for f in rep.failed:
            print(f"  failed: {f['case_id']}: {f['error']}", file=sys.stderr)
        return 1 if rep.failed else 0
    finally:
        ws.close()


def _unlock(args: argparse.Namespace) -> int:
    ws = _ws(args)
    try:
        info = ws.store.force_unlock(_case_id(ws, args.case))
        print(f"removed the lock of {info.user}@{info.host} (pid {info.pid})" if info else "no lock on that case")
        return 0
    finally:
        ws.close()


def _recover(args: argparse.Namespace) -> int:
    from ..dataset.recovery import recover_status

    rep = recover_status(args.dataset, sidecar=args.sidecar)
    where = f"; the damaged files are in {rep['moved_to']}" if rep["moved_to"] else ""
    print(f"status database rebuilt: {rep['salvaged_cases']} case record(s), {rep['salvaged_history']} history "
          f"event(s) and {rep['salvaged_metrics']} metric(s) salvaged, {rep['corrections']} correction(s) "
          f"re-registered{where}")
    return 0

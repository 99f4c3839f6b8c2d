"""``medsegfm weights list|where|verify``: where model weights are, and whether they check out.

Examples::

    medsegfm weights list                    # every model: ready / missing, where, how found
    medsegfm weights where vista3d           # the folder to put the VISTA3D files in, and which files
    medsegfm weights verify                  # SHA-256 of every weights file in use
    medsegfm weights verify nninteractive --path /data/nnInteractive_v1.0 --record   # pin them in SHA256SUMS

Nothing is downloaded. Exit code 1 when a named model is missing or a checksum does not match.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..backends import weights as W
from . import CLIError


def register(subparsers: Any) -> None:
    """Add the ``weights`` sub-command (its options and help) to the ``medsegfm`` parser.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        The top-level parser's sub-parsers (``add_subparsers()``).
    """
    p = subparsers.add_parser(
        "weights",
        help="list, locate and verify model weights (no downloads)",
        description="Where model weights are looked for (explicit path > per-model environment variable > "
                    f"${W.WEIGHTS_DIR_ENV}/<model> > <user cache>/medsegfm/weights/<model>), and their SHA-256.",
    )
    sub = p.add_subparsers(dest="weights_command", metavar="ACTION")
    for action, helptext in (("list", "state of every model's weights"),
                             ("where", "folder and files a model's weights go in"),
                             ("verify", "hash the weights and compare with published/recorded SHA-256")):
        a = sub.add_parser(action, help=helptext, description=helptext)
        a.add_argument("name", nargs="?", help="model name (default: all)")
        a.add_argument("--path", help="check this file/folder instead of the configured location (needs NAME)")
        a.add_argument("--json", action="store_true", help="print JSON")
        if action == "verify":
            a.add_argument("--record", action="store_true",
                           help=f"write {W.CHECKSUM_FILE} next to the weights (pins the current files)")
        a.set_defaults(func=run)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _names(args: argparse.Namespace) -> list[str]:
    known = W.known_weights()
    if args.name:
        if args.name not in known:
            raise CLIError(f"unknown model {args.name!r}; known: {', '.join(known)}")
        return [args.name]
    if args.path:
        raise CLIError("--path needs a model NAME")
    return list(known)


def _loc_dict(loc: W.WeightsLocation) -> dict[str, Any]:
    return {"name": loc.name, "state": loc.state, "folder": str(loc.folder), "via": loc.via,
            "root": str(loc.root) if loc.root else None, "files": [str(f) for f in loc.files],
            "missing": [str(f) for f in loc.missing], "message": loc.message}


def run(args: argparse.Namespace) -> int:
    """``medsegfm weights``: list, locate, verify or pin (``SHA256SUMS``) model weights.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed options of the sub-command.

    Returns
    -------
    int
        Exit code: 0, or 1 when a named model's weights are missing or a checksum differs.

    Raises
    ------
    CLIError
        Bad input or options; :func:`~napari_medsegfm.cli.main` prints it as one line on stderr and exits with its code.
    """
    action = args.weights_command
    names = _names(args)
    specs = W.known_weights()
    if action == "list":
        locs = [W.locate(n, args.path) for n in names]
        if args.json:
            json.dump([_loc_dict(lc) for lc in locs], sys.stdout, indent=1)
            print()
        else:
            print(f"weights root: {W.weights_root()}  (set ${W.WEIGHTS_DIR_ENV} to change it)")
            for lc in locs:
                where = lc.path if lc.ok else lc.folder
                print(f"{lc.name:<14} {lc.state:<11} {where}  [via {lc.via}; env {specs[lc.name].env_var}]")
        return 1 if args.name and not locs[0].ok else 0
    if action == "where":
        out = []
        for n in names:
            spec = specs[n]
            loc = W.locate(n, args.path)
            files = [[wf.relpath for wf in lay] for lay in spec.layouts]
            folder = (loc.root or loc.folder) if loc.ok else (loc.folder if args.path else W.where(n))
            out.append({"name": n, "folder": str(folder), "env_var": spec.env_var,
                        "layouts": files, "subfolders": list(spec.subfolders), "source": spec.source,
                        "license": spec.license, "state": loc.state})
        if args.json:
            json.dump(out[0] if len(out) == 1 else out, sys.stdout, indent=1)
            print()
        else:
            for i, d in enumerate(out):
                if i:
                    print()
                print(f"{d['name']}: {d['folder']}   ({d['state']})")
                print("  files: " + "  OR  ".join(", ".join(lay) for lay in d["layouts"])
                      + (f"   (also accepted in subfolder {', '.join(d['subfolders'])})" if d["subfolders"] else ""))
                print(f"  override: ${d['env_var']} (file or folder), or ${W.WEIGHTS_DIR_ENV}/{d['name']}/")
                print(f"  source: {d['source']}")
                print(f"  license: {d['license']}")
        return 0
    if action == "verify":
        reps = [W.verify(n, args.path) for n in names]
        if getattr(args, "record", False):
            for r in reps:
                if r.location.ok:
                    print(f"{r.name}: wrote {W.record_checksums(r.name, args.path)}", file=sys.stderr)
            reps = [W.verify(n, args.path) for n in names]
        if args.json:
            json.dump([{"name": r.name, "state": r.state, "ok": r.ok, "location": _loc_dict(r.location),
                        "files": [{"path": str(f.path), "size": f.size, "sha256": f.sha256, "expected": f.expected,
                                   "source": f.source, "ok": f.ok} for f in r.files]} for r in reps],
                      sys.stdout, indent=1)
            print()
        else:
            for r in reps:
                print(f"{r.name:<14} {r.state}")
                if not r.location.ok:
                    print(f"  {r.location.message}")
                for f in r.files:
                    mark = "ok" if f.ok and f.expected else ("MISMATCH" if not f.ok else "no published sum")
                    print(f"  {f.sha256}  {f.path}  ({f.size:,} bytes; {mark}"
                          + (f", expected {f.expected} from {f.source}" if f.expected and not f.ok else "") + ")")
        bad = any(r.location.ok and not r.ok for r in reps) or (args.name is not None and not reps[0].location.ok)
        return 1 if bad else 0
    raise CLIError("give an action: list, where or verify")

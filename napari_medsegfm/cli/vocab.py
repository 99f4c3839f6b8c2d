"""``medsegfm vocab``: resolve free text to a class of the vocabulary.

Examples::

    medsegfm vocab "left kidney"
    medsegfm vocab "kidney" --space totalseg          # ambiguous: lists left and right kidney
    medsegfm vocab "livr" --json
    medsegfm vocab "right kidney" --vocab path/to/CVPR25_TextSegFMData_with_class.json --space cvpr25:CT_AMOS
    medsegfm vocab --list --space vista3d
    medsegfm vocab --complete "kid"

Exit code 0 when every query resolved to one class, 1 when one was ambiguous or unknown.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..engine.vocab import Resolution, Vocabulary, default_vocabulary, load_vocabulary
from . import CLIError


def register(subparsers: Any) -> None:
    """Add the ``vocab`` sub-command (its options and help) to the ``medsegfm`` parser.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        The top-level parser's sub-parsers (``add_subparsers()``).
    """
    p = subparsers.add_parser(
        "vocab",
        help="resolve free text ('left kidney', 'livr') to a class and its label ids",
        description="Resolve free text to a class of the vocabulary: the class, its confidence, its label ids "
                    "and the alternatives. Ambiguous text lists the candidates instead of guessing.",
    )
    p.add_argument("query", nargs="*", help="text to resolve (quote multi-word text)")
    p.add_argument("--json", action="store_true", help="print JSON (one object per query, in a list if several)")
    p.add_argument("--vocab", metavar="FILE", help="a vocabulary JSON or CVPR25_TextSegFMData_with_class.json "
                   "(or a folder holding it), merged into the shipped vocabulary")
    p.add_argument("--space", metavar="SPACE", help="resolve only among classes of this label space "
                   "(e.g. vista3d, totalseg, cvpr25:CT_AMOS) and print the id there")
    p.add_argument("--min-confidence", type=float, default=0.6, metavar="X",
                   help="below this score the text counts as unknown (default 0.6)")
    p.add_argument("--list", action="store_true", help="list every class name (of --space if given)")
    p.add_argument("--spaces", action="store_true", help="list the label spaces")
    p.add_argument("--complete", metavar="PREFIX", help="autocomplete suggestions for PREFIX")
    p.set_defaults(func=run)


def _vocabulary(args: argparse.Namespace) -> Vocabulary:
    if args.vocab:
        return load_vocabulary(args.vocab, base=True)
    return default_vocabulary()


def _print_resolution(r: Resolution) -> None:
    if r.ok:
        c = r.cls
        assert c is not None
        print(f"{c.name}  ({r.status}, confidence {r.confidence:.2f})")
        details = [f"category: {c.category or '-'}", f"side: {c.side or '-'}",
                   f"instance: {'yes' if c.instance else 'no'}"]
        print("  " + "   ".join(details))
        if c.ids:
            shown = sorted(c.ids.items())
            if r.space:
                shown = [(r.space, c.ids.get(r.space, ()))]
            print("  label ids: " + ", ".join(f"{k} {'/'.join(map(str, v))}" for k, v in shown[:12])
                  + (f", ... ({len(shown) - 12} more spaces)" if len(shown) > 12 else ""))
        if r.alternatives:
            print("  alternatives: " + ", ".join(f"{a.cls.name} ({a.score:.2f})" for a in r.alternatives[:4]))
    elif r.ambiguous:
        print(f"ambiguous: {r.query!r} could be:")
        for cand in r.candidates:
            lid = f"  [{r.space} {cand.cls.label_id(r.space)}]" if r.space else ""
            print(f"  {cand.cls.name}  ({cand.score:.2f}){lid}")
    else:
        print(f"no class matches {r.query!r}" + (f" in {r.space}" if r.space else ""))
        if r.candidates:
            print("  closest: " + ", ".join(f"{c.cls.name} ({c.score:.2f})" for c in r.candidates[:5]))


def run(args: argparse.Namespace) -> int:
    """``medsegfm vocab``: list the label spaces and vocabulary, or resolve free-text class names.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed options of the sub-command.

    Returns
    -------
    int
        Exit code: 0, or 1 when a resolution failed.

    Raises
    ------
    CLIError
        Bad input or options; :func:`~napari_medsegfm.cli.main` prints it as one line on stderr and exits with its code.
    """
    vocab = _vocabulary(args)
    if args.space and args.space not in vocab.spaces():
        raise CLIError(f"unknown label space {args.space!r}; known: {', '.join(vocab.spaces())}")
    if args.spaces:
        for sp in vocab.spaces():
            print(f"{sp}\t{len(vocab.space(sp))} labels")
        return 0
    if args.list:
        names = vocab.names(args.space)
        if args.json:
            json.dump(names, sys.stdout, indent=1)
            print()
        else:
            print("\n".join(names))
        return 0
    if args.complete is not None:
        names = vocab.complete(args.complete, space=args.space)
        if args.json:
            json.dump(names, sys.stdout, indent=1)
            print()
        else:
            print("\n".join(names))
        return 0
    if not args.query:
        raise CLIError("give a QUERY (or --list, --spaces, --complete PREFIX)")
    results = [vocab.resolve(q, space=args.space, min_confidence=args.min_confidence) for q in args.query]
    if args.json:
        out = [r.to_dict() for r in results]
        json.dump(out[0] if len(out) == 1 else out, sys.stdout, indent=1)
        print()
    else:
        for i, r in enumerate(results):
            if i:
                print()
            _print_resolution(r)
    return 0 if all(r.ok for r in results) else 1

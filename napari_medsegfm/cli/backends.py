"""``medsegfm backends``: the installed segmentation backends, their capabilities,
device and weights status (``--json`` for scripts)."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from . import CLIError


def register(sub: Any) -> None:
    """Add the ``backends`` sub-command (its options and help) to the ``medsegfm`` parser.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        The top-level parser's sub-parsers (``add_subparsers()``).
    """
    p = sub.add_parser("backends", help="list installed segmentation backends (capabilities, device, weights)",
                       description=__doc__)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--device", default=None, metavar="DEV", help="device preference to report (default: $MEDSEGFM_DEVICE, else auto)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """``medsegfm backends``: list the installed backends with capabilities, device and weights state.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed options of the sub-command.

    Returns
    -------
    int
        Exit code: 0.

    Raises
    ------
    CLIError
        Bad input or options; :func:`~napari_medsegfm.cli.main` prints it as one line on stderr and exits with its code.
    """
    from ..backends.base import capability_names
    from ..backends.device import ENV_VAR, available_devices, select_device
    from ..backends.registry import default_backend_choice, list_backends

    try:
        device = select_device(args.device)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    statuses = list_backends()
    default, why = default_backend_choice()
    rows = []
    for name, st in statuses.items():
        rows.append({
            "name": name,
            "default": name == default,
            "state": st.state,
            "capabilities": capability_names(st.capabilities),
            "device": st.device,
            "weights": st.weights,
            "message": st.message,
        })
    if args.json:
        print(json.dumps({"device": device, "available_devices": available_devices(),
                          "env": os.environ.get(ENV_VAR), "default": default, "default_reason": why,
                          "backends": rows}, indent=2))
        return 0
    head = ["backend", "state", "capabilities", "device", "weights"]
    table = [[r["name"] + (" *" if r["default"] else ""), r["state"], ",".join(r["capabilities"]) or "-",
              r["device"] or "-", r["weights"] or "-"] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *table)]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    print("  ".join("-" * w for w in widths))
    for row in table:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)))
    notes = [(r["name"], r["message"]) for r in rows if r["message"] and r["state"] != "ready"]
    for name, msg in notes:
        print(f"  {name}: {msg}")
    env = os.environ.get(ENV_VAR)
    print(f"* default backend ({default}): {why}")
    print(f"Device: {device} (available: {', '.join(available_devices())}; "
          f"${ENV_VAR}={env if env else 'unset'}; override with --device)")
    return 0

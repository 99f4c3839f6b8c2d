"""Helpers shared by the eval helper's subcommands (predict, evaluate, backends)."""

from __future__ import annotations

import argparse
from typing import Any

from . import CLIError

# exit codes (documented in each subcommand's --help)
EXIT_INPUT = 2  # missing file, bad npz, unknown backend, bad option
EXIT_PROMPT = 3  # a prompt the backend cannot serve
EXIT_BACKEND = 4  # backend known but not usable here (package/weights/device)
EXIT_PARTIAL = 1  # some cases of a folder failed


def add_backend_args(p: argparse.ArgumentParser) -> None:
    """Add ``--backend/-b NAME`` and ``--device DEV`` to a sub-command's parser.

    Parameters
    ----------
    p : argparse.ArgumentParser
        The sub-command's parser.
    """
    p.add_argument("--backend", "-b", default=None, metavar="NAME",
                   help="segmentation backend (default: the best installed one; see `medsegfm backends`)")
    p.add_argument("--device", default=None, metavar="DEV",
                   help="auto, cpu, cuda, cuda:N or mps (default: $MEDSEGFM_DEVICE, else auto)")


def make_backend(name: str | None, device: str | None) -> Any:
    """The backend, with registry/device errors turned into :class:`~napari_medsegfm.cli.CLIError`.

    Parameters
    ----------
    name : str or None
        Registry name; ``None``: the best installed backend.
    device : str or None
        ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; ``None``: ``$MEDSEGFM_DEVICE``, else auto.

    Returns
    -------
    SegmentationBackend

    Raises
    ------
    CLIError
        Code 4 (``EXIT_BACKEND``) for a backend that cannot run here, 2 (``EXIT_INPUT``) for an
        unknown backend or device.
    """
    from ..backends.base import BackendUnavailableError
    from ..backends.registry import get_backend

    try:
        return get_backend(name, device=device)
    except BackendUnavailableError as exc:
        raise CLIError(str(exc), code=EXIT_BACKEND) from None
    except ValueError as exc:  # unknown backend / unknown or unavailable device
        raise CLIError(str(exc), code=EXIT_INPUT) from None

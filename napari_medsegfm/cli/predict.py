"""``medsegfm predict -i IN -o OUT``: challenge-compatible prediction.

IN is an npz file or a folder of npz files (CVPR 2025/2024 layout: ``imgs``,
``spacing``, optional ``boxes``, ``clicks``, ``clicks_order``, ``prev_pred``,
``text_prompts``); each is read with the restricted unpickler, parsed like the napari
reader parses it (:mod:`napari_medsegfm.io.cvpr`: 2D RGB or 3D from all the evidence of
the file; a box that reaches outside the image is clipped to it with a warning, one
wholly outside is an error) and predicted with
:func:`napari_medsegfm.tasks.predict.predict_case`; OUT receives an npz of the same
name holding ``segs`` (uint8 labels, the image's spatial shape), written atomically.
OUT is a folder (created if needed), or a ``.npz`` file when IN is one file.

A progress bar on stderr follows the files and the objects of each (``--no-progress``
turns it off); a one-line summary ends the run.

Exit codes: 0 ok; 1 some files of a folder failed; 2 missing/bad input or unknown
backend/device; 3 a prompt the backend cannot serve; 4 backend not usable here.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..utils import keep_freed_memory
from . import CLIError
from ._backend_args import EXIT_INPUT, EXIT_PARTIAL, EXIT_PROMPT, add_backend_args, make_backend

log = logging.getLogger(__name__)


def register(sub: Any) -> None:
    """Add the ``predict`` sub-command (its options and help) to the ``medsegfm`` parser.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        The top-level parser's sub-parsers (``add_subparsers()``).
    """
    p = sub.add_parser(
        "predict",
        help="predict segs for CVPR-style npz files (boxes, clicks, prev_pred)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-i", "--input", required=True, metavar="IN", help="npz file or folder of npz files")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder (or .npz file for one input)")
    add_backend_args(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _inputs(path: Path) -> list[Path]:
    if not path.exists():
        raise CLIError(f"input {path} does not exist", code=EXIT_INPUT)
    if path.is_file():
        if path.suffix.lower() != ".npz":
            raise CLIError(f"input {path} is not an .npz file", code=EXIT_INPUT)
        return [path]
    files = sorted(p for p in path.glob("*.npz") if not p.name.startswith("."))
    if not files:
        raise CLIError(f"no .npz files in {path}", code=EXIT_INPUT)
    return files


def _read(path: Path) -> dict[str, Any]:
    from ..io import safe_load_npz

    try:
        return dict(safe_load_npz(path))
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as exc:
        raise CLIError(f"{path}: not a readable npz file ({type(exc).__name__}: {exc})", code=EXIT_INPUT) from None
    except ValueError as exc:  # includes refused pickles
        msg = str(exc)
        raise CLIError(msg if path.name in msg else f"{path}: {msg}", code=EXIT_INPUT) from None


def write_segs(path: Path, segs: np.ndarray) -> Path:
    """Write ``{"segs": segs}`` as a compressed npz, atomically.

    Parameters
    ----------
    path : Path
        The output ``.npz``.
    segs : np.ndarray
        Label image ``(Z, Y, X)`` or ``(Y, X)``.

    Returns
    -------
    Path
        ``path``.
    """
    from ..io.atomic import atomic_write_bytes

    buf = io.BytesIO()
    np.savez_compressed(buf, segs=segs)
    return atomic_write_bytes(path, buf.getvalue())


def predict_file(path: Path, out: Path, backend: Any,
                 progress: Callable[[int, int], None] | None = None) -> float:
    """Predict one CVPR-style npz file into ``out``.

    Parameters
    ----------
    path : Path
        The input npz (``imgs`` with ``boxes``, ``clicks`` or ``text_prompts``; ``prev_pred``).
    out : Path
        The output npz (``segs``).
    backend : SegmentationBackend
        The model.
    progress : callable, optional
        ``progress(done, total)`` after each object.

    Returns
    -------
    float
        Seconds the prediction took (reading and writing excluded).

    Raises
    ------
    CLIError
        Code 3 for a prompt the backend cannot serve, 2 for bad input (naming the file).
    """
    from ..backends.base import UnsupportedPromptError
    from ..tasks.predict import predict_case

    inputs = _read(path)
    t0 = time.perf_counter()
    try:
        segs = predict_case(inputs, backend, source=path, progress=progress)
    except UnsupportedPromptError as exc:
        raise CLIError(f"{path.name}: {exc}", code=EXIT_PROMPT) from None
    except ValueError as exc:
        msg = str(exc)
        raise CLIError(msg if str(path) in msg else f"{path.name}: {msg}", code=EXIT_INPUT) from None
    dt = time.perf_counter() - t0
    write_segs(out, segs)
    return dt


def run(args: argparse.Namespace) -> int:
    """``medsegfm predict``: predict ``segs`` for each npz input and write them to the output folder (or file).

    Parameters
    ----------
    args : argparse.Namespace
        The parsed options of the sub-command.

    Returns
    -------
    int
        Exit code: 0; a :class:`~napari_medsegfm.cli.CLIError` with ``EXIT_PARTIAL`` (1) when some files failed.

    Raises
    ------
    CLIError
        Bad input or options; :func:`~napari_medsegfm.cli.main` prints it as one line on stderr and exits with its code.
    """
    src = Path(args.input)
    files = _inputs(src)
    dst = Path(args.output)
    single_file_out = src.is_file() and dst.suffix.lower() == ".npz"
    if single_file_out:
        if not dst.parent.is_dir():
            raise CLIError(f"output folder {dst.parent} does not exist", code=EXIT_INPUT)
    else:
        if dst.exists() and not dst.is_dir():
            raise CLIError(f"output {dst} exists and is not a folder", code=EXIT_INPUT)
        dst.mkdir(parents=True, exist_ok=True)
    if getattr(args, "own_process", False):  # the program's own short-lived process, not a caller's
        keep_freed_memory()  # reuse freed volume-sized blocks instead of faulting them in again
    t_start = time.perf_counter()
    backend = make_backend(args.backend, args.device)
    name = getattr(backend, "name", type(backend).__name__)
    log.info("backend %s on %s", name, getattr(backend, "device", "?"))
    from tqdm import tqdm

    bar = tqdm(total=len(files), unit="file", desc="predict", file=sys.stderr, disable=args.no_progress,
               dynamic_ncols=True)
    failed: list[str] = []
    seconds: list[float] = []
    try:
        for f in files:
            out = dst if single_file_out else dst / f.name

            def step(done: int, total: int, _f: Path = f) -> None:
                bar.set_postfix_str(f"{_f.name}: object {done}/{total}", refresh=True)

            bar.set_postfix_str(f"{f.name}: loading", refresh=True)
            try:
                dt = predict_file(f, out, backend, progress=step)
                seconds.append(dt)
                log.info("%s: %.2f s -> %s", f.name, dt, out)
            except CLIError as exc:
                if len(files) == 1:
                    raise
                failed.append(f.name)
                bar.write(f"medsegfm predict: {exc}", file=sys.stderr)
                log.debug("%s", exc)
            finally:
                reset = getattr(backend, "reset", None)
                if callable(reset):
                    reset()
                bar.update(1)
    finally:
        bar.close()
    total = time.perf_counter() - t_start
    done = len(files) - len(failed)
    where = dst if single_file_out else f"{dst}/"
    print(f"medsegfm predict: {done} of {len(files)} file(s) -> {where} with {name} in {total:.1f} s"
          + (f" ({sum(seconds) / len(seconds):.1f} s per file predicting)" if seconds else "")
          + (f"; {len(failed)} failed: {', '.join(failed)}" if failed else ""), file=sys.stderr)
    if failed:
        raise CLIError(f"{len(failed)} of {len(files)} files failed: {', '.join(failed)}", code=EXIT_PARTIAL)
    return 0

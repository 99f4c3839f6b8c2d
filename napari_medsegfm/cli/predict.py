"""``medsegfm predict -i IN -o OUT``: challenge-compatible prediction.

IN is an npz file or a folder of npz files (CVPR 2025/2024 layout: ``imgs``,
``spacing``, optional ``boxes``, ``clicks``, ``clicks_order``, ``prev_pred``,
``text_prompts``); each is read with the restricted unpickler and predicted with
:func:`napari_medsegfm.core.predict.predict_case`; OUT receives an npz of the same
name holding ``segs`` (uint8 labels, the image's spatial shape), written atomically.
OUT is a folder (created if needed), or a ``.npz`` file when IN is one file.

Exit codes: 0 ok; 1 some files of a folder failed; 2 missing/bad input or unknown
backend/device; 3 a prompt the backend cannot serve; 4 backend not usable here.
"""

from __future__ import annotations

import argparse
import io
import logging
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from . import CLIError
from ._backend_args import EXIT_INPUT, EXIT_PARTIAL, EXIT_PROMPT, add_backend_args, make_backend

log = logging.getLogger(__name__)


def register(sub: Any) -> None:
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
    """Write ``{'segs': segs}`` as a compressed npz, atomically."""
    from ..io.atomic import atomic_write_bytes

    buf = io.BytesIO()
    np.savez_compressed(buf, segs=segs)
    return atomic_write_bytes(path, buf.getvalue())


def predict_file(path: Path, out: Path, backend: Any) -> float:
    """Predict one file into ``out``; returns the seconds the prediction took."""
    from ..backends.base import UnsupportedPromptError
    from ..core.predict import predict_case

    inputs = _read(path)
    t0 = time.perf_counter()
    try:
        segs = predict_case(inputs, backend)
    except UnsupportedPromptError as exc:
        raise CLIError(f"{path.name}: {exc}", code=EXIT_PROMPT) from None
    except ValueError as exc:
        raise CLIError(f"{path.name}: {exc}", code=EXIT_INPUT) from None
    dt = time.perf_counter() - t0
    write_segs(out, segs)
    return dt


def run(args: argparse.Namespace) -> int:
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
    backend = make_backend(args.backend, args.device)
    log.info("backend %s on %s", getattr(backend, "name", backend), getattr(backend, "device", "?"))
    it: Any = files
    if not args.no_progress and len(files) > 1:
        from tqdm import tqdm

        it = tqdm(files, unit="case", desc="predict", leave=False)
    failed: list[str] = []
    for f in it:
        out = dst if single_file_out else dst / f.name
        try:
            dt = predict_file(f, out, backend)
            log.info("%s: %.2f s -> %s", f.name, dt, out)
        except CLIError as exc:
            if len(files) == 1:
                raise
            failed.append(f.name)
            log.error("%s", exc)
        finally:
            reset = getattr(backend, "reset", None)
            if callable(reset):
                reset()
    if failed:
        raise CLIError(f"{len(failed)} of {len(files)} files failed: {', '.join(failed)}", code=EXIT_PARTIAL)
    return 0

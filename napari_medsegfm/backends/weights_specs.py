"""Where weights live and how a model's weights are described: the data of :mod:`~napari_medsegfm.backends.weights`.

:func:`weights_root` is the folder every model's weights go in by default;
:class:`ModelWeights` describes one model's files, :class:`WeightsLocation` is where
:func:`~napari_medsegfm.backends.weights.locate` found them. Every name here is
importable from :mod:`~napari_medsegfm.backends.weights` too.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["WEIGHTS_DIR_ENV", "user_cache_dir", "weights_root", "WeightFile", "ModelWeights", "WeightsLocation"]

#: Environment variable replacing the weights root folder (``<cache>/medsegfm/weights``).
WEIGHTS_DIR_ENV = "MEDSEGFM_WEIGHTS_DIR"


# --------------------------------------------------------------------------- folders
def user_cache_dir() -> Path:
    """The platform's per-user cache folder (not created)."""
    if sys.platform.startswith("win"):
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base)
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches"
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return Path(xdg) if xdg else Path.home() / ".cache"


def weights_root() -> Path:
    """``$MEDSEGFM_WEIGHTS_DIR`` if set, else ``<user cache dir>/medsegfm/weights`` (not created)."""
    env = os.environ.get(WEIGHTS_DIR_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return user_cache_dir() / "medsegfm" / "weights"


# --------------------------------------------------------------------------- specs
@dataclass(frozen=True)
class WeightFile:
    """One file of a weights set, relative to the model folder.

    Parameters
    ----------
    relpath : str
        Path below the model folder, ``/``-separated.
    sha256 : str, optional
        Lower-case hex SHA-256, where the upstream publishes it.
    size : int, optional
        Size in bytes, where known.
    note : str
        Shown next to the file in "missing" messages.
    """

    relpath: str
    sha256: str | None = None  # lower-case hex, where the upstream publishes it
    size: int | None = None  # bytes, where known
    note: str = ""


@dataclass(frozen=True)
class ModelWeights:
    """How to find and check the weights of one model.

    Parameters
    ----------
    name : str
        Model name (the backend's registry name).
    title : str
        Human name for messages.
    env_var : str
        Environment variable that may name the model folder (or the file, ``single_file``).
    layouts : tuple of tuple of WeightFile
        Accepted alternatives, each a tuple of files that must all be present; the first
        complete layout wins.
    source : str
        Where to download the weights (shown when they are missing).
    license : str
        The weights' licence.
    subfolders : tuple of str
        Tried inside the model folder too (e.g. ``nnInteractive_v1.0``), in order, after
        the folder itself.
    single_file : bool
        The model is one file: an environment variable or explicit path may then name that
        file directly, whatever its name.
    locator : callable, optional
        For weights shipped in a Python package: returns ``(path or None, how)``.
    """

    name: str
    title: str
    env_var: str
    layouts: tuple[tuple[WeightFile, ...], ...]
    source: str
    license: str
    subfolders: tuple[str, ...] = ()
    single_file: bool = False
    #: custom locator for weights shipped in a Python package: returns (path or None, how)
    locator: Callable[[], tuple[Path | None, str]] | None = None

    @property
    def default_folder(self) -> Path:
        """``<weights root>/<name>``: where the weights go when nothing else is configured."""
        return weights_root() / self.name


@dataclass
class WeightsLocation:
    """Where a model's weights are (or should be), from :func:`locate`.

    Parameters
    ----------
    name : str
        Model name.
    state : str
        ``"ready"``, ``"missing"`` or ``"incomplete"``.
    folder : Path
        The folder searched (or that holds them).
    via : str
        How it was found: ``"argument"``, ``"$<ENV_VAR>"``, ``"$MEDSEGFM_WEIGHTS_DIR"``,
        ``"cache"`` or ``"package"``.
    files : list of Path
        The files of the layout in use.
    missing : list of Path
        What to put where (for the first layout) when not ready.
    root : Path, optional
        The model folder actually holding the layout (may be a subfolder of ``folder``).
    message : str
        What to do when not ready.
    """

    name: str
    state: str  # "ready" | "missing" | "incomplete"
    folder: Path  # the folder searched (or that holds them)
    via: str  # "argument" | "$ENV" | "$MEDSEGFM_WEIGHTS_DIR" | "cache" | "package"
    files: list[Path] = field(default_factory=list)  # the files of the layout in use
    missing: list[Path] = field(default_factory=list)  # what to put where (first layout)
    root: Path | None = None  # model folder actually holding the layout (may be a subfolder)
    message: str = ""

    @property
    def ok(self) -> bool:
        """True when ``state == "ready"``."""
        return self.state == "ready"

    @property
    def path(self) -> Path | None:
        """The single weights file (single-file models), else the model folder."""
        if not self.ok:
            return None
        if len(self.files) == 1:
            return self.files[0]
        return self.root

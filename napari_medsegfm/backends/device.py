"""Compute-device selection, in one place.

Order of precedence: an explicit ``preference`` (the CLI's ``--device`` flag, a
widget setting) > the ``MEDSEGFM_DEVICE`` environment variable > automatic
(CUDA, then Apple MPS, then CPU). torch is imported lazily, only when a device
other than plain ``cpu`` has to be checked, so weight-free code paths stay light.
"""

from __future__ import annotations

import logging
import os

__all__ = ["ENV_VAR", "select_device", "status_device", "available_devices", "torch_available"]

log = logging.getLogger(__name__)

ENV_VAR = "MEDSEGFM_DEVICE"
_VALID = ("auto", "cpu", "cuda", "mps")


def torch_available() -> bool:
    """True when torch can be imported (without importing it when already known)."""
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def _cuda_count() -> int:
    if not torch_available():
        return 0
    import torch

    try:
        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except RuntimeError as exc:  # a broken driver install
        log.warning("CUDA check failed: %s", exc)
        return 0


def _mps_ok() -> bool:
    if not torch_available():
        return False
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available_devices() -> list[str]:
    """Devices usable here, best first, e.g. ``['cuda:0', 'cpu']``."""
    out = [f"cuda:{i}" for i in range(_cuda_count())]
    if _mps_ok():
        out.append("mps")
    out.append("cpu")
    return out


def _normalize(value: str) -> str:
    v = value.strip().lower()
    base = v.split(":", 1)[0]
    if base not in _VALID:
        raise ValueError(
            f"unknown device {value!r}; expected one of auto, cpu, cuda, cuda:N, mps"
        )
    if base == "cuda" and ":" in v:
        idx = v.split(":", 1)[1]
        if not idx.isdigit():
            raise ValueError(f"unknown device {value!r}; expected cuda:N with an integer N")
    return v


def select_device(preference: str | None = None) -> str:
    """Pick the compute device.

    Parameters
    ----------
    preference : str, optional
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``. ``None`` (or
        ``"auto"``) defers to ``$MEDSEGFM_DEVICE``, then to automatic choice.

    Returns
    -------
    str
        ``"cuda"``/``"cuda:N"``, ``"mps"`` or ``"cpu"``.

    Raises
    ------
    ValueError
        For an unknown name, or a device that was asked for explicitly but is not
        available here (the message lists what is).
    """
    source = "argument"
    pref = preference
    if pref is None or pref.strip().lower() == "auto":
        env = os.environ.get(ENV_VAR, "").strip()
        if env and env.lower() != "auto":
            pref, source = env, f"${ENV_VAR}"
        else:
            pref = "auto"
    pref = _normalize(pref)
    if pref == "cpu":
        return "cpu"
    if pref == "auto":
        n = _cuda_count()
        if n:
            return "cuda"
        if _mps_ok():
            return "mps"
        return "cpu"
    if pref.startswith("cuda"):
        n = _cuda_count()
        idx = int(pref.split(":", 1)[1]) if ":" in pref else 0
        if idx >= n:
            raise ValueError(
                f"device {pref!r} (from {source}) is not available; available: {', '.join(available_devices())}"
            )
        return pref
    if pref == "mps":
        if not _mps_ok():
            raise ValueError(
                f"device 'mps' (from {source}) is not available; available: {', '.join(available_devices())}"
            )
        return "mps"
    raise AssertionError(pref)  # pragma: no cover


def status_device() -> str:
    """The device a new backend instance would use, for ``status()`` reports.

    Checking CUDA/MPS would import torch (about a second), so unless torch is imported
    already (or ``$MEDSEGFM_DEVICE`` is ``cpu``, which needs no probe) this says what a new
    instance will do: the ``$MEDSEGFM_DEVICE`` value, or ``"auto"``. An unusable
    preference reads ``"invalid (<reason>)"``.
    """
    import sys

    env = os.environ.get(ENV_VAR, "").strip()
    if "torch" in sys.modules or env.lower() == "cpu":
        try:
            return select_device(None)
        except ValueError as exc:
            return f"invalid ({exc})"
    return env or "auto"

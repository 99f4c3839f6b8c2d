"""backends.registry and backends.device."""

from __future__ import annotations

import pytest

from napari_medsegfm.backends import registry
from napari_medsegfm.backends.base import BackendStatus, BackendUnavailableError
from napari_medsegfm.backends.boxfill import BoxFillBackend
from napari_medsegfm.backends.device import ENV_VAR, available_devices, select_device
from napari_medsegfm.types import Capability


def test_builtin_backends_listed_ready():
    st = registry.list_backends()
    assert st["classic"].state == "ready"
    assert st["boxfill"].state == "ready"
    assert Capability.BOX3D in st["classic"].capabilities
    assert Capability.POINTS in st["classic"].capabilities
    assert "litemedsam" in st  # listed whatever its state


def test_unknown_backend_lists_known_names():
    with pytest.raises(ValueError, match=r"unknown backend 'nope'.*classic.*boxfill|unknown backend 'nope'.*boxfill.*classic"):
        registry.get_backend("nope")


def test_broken_backends_are_listed_with_reason(monkeypatch):
    specs = dict(registry._specs())
    specs["ghost"] = "no_such_module_medsegfm_xyz:Backend"
    specs["broken"] = "napari_medsegfm.types:NoSuchClass"
    monkeypatch.setattr(registry, "_specs", lambda: specs)
    st = registry.list_backends()
    assert st["ghost"].state == "package missing"
    assert "no_such_module_medsegfm_xyz" in st["ghost"].message
    assert st["broken"].state == "error"
    assert "NoSuchClass" in st["broken"].message
    with pytest.raises(BackendUnavailableError, match="ghost"):
        registry.get_backend("ghost")
    assert st["classic"].ready  # the others still work


def test_runtime_registration_status_and_default(monkeypatch):
    class Fake:
        name = "fake"
        capabilities = Capability.POINTS

        def __init__(self, device: str = "cpu") -> None:
            self.device = device

        @classmethod
        def status(cls):
            return BackendStatus(name="fake", capabilities=cls.capabilities, state="weights missing",
                                 message="put weights somewhere")

    registry.register_backend("fake", Fake)
    try:
        assert registry.list_backends()["fake"].state == "weights missing"
        with pytest.raises(BackendUnavailableError, match="put weights somewhere"):
            registry.get_backend("fake")
    finally:
        registry.unregister_backend("fake")
    # the default is the first usable backend of DEFAULT_PREFERENCE, with its reason
    usable = {"classic", "litemedsam"}
    monkeypatch.setattr(registry, "_resolve", lambda name: (BoxFillBackend, None))
    monkeypatch.setattr(registry, "_status_of", lambda name, f: BackendStatus(
        name=name, capabilities=Capability.BOX3D, state="ready" if name in usable else "package missing"))
    name, why = registry.default_backend_choice()
    assert name == "classic" and "unseen" in why
    usable = {"litemedsam"}
    assert registry.default_backend_name() == "litemedsam"
    usable = set()
    assert registry.default_backend_name() == "classic"


def test_get_backend_passes_the_selected_device(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    b = registry.get_backend("boxfill", device="cpu")
    assert isinstance(b, BoxFillBackend)
    assert registry.get_backend(None).name == "classic"
    with pytest.raises(ValueError, match="unknown device"):
        registry.get_backend("classic", device="tpu")


def test_select_device_precedence(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert select_device() in ("cpu", "cuda", "mps")
    assert select_device("cpu") == "cpu"
    assert available_devices()[-1] == "cpu"
    monkeypatch.setenv(ENV_VAR, "cpu")
    assert select_device(None) == "cpu"
    assert select_device("auto") == "cpu"
    monkeypatch.setenv(ENV_VAR, "quantum")
    with pytest.raises(ValueError, match="quantum"):
        select_device()
    assert select_device("cpu") == "cpu"  # the explicit flag wins over the environment
    monkeypatch.delenv(ENV_VAR)
    if "cuda:0" not in available_devices():
        with pytest.raises(ValueError, match="not available"):
            select_device("cuda")
    with pytest.raises(ValueError, match="cuda:N"):
        select_device("cuda:x")

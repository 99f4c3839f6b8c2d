"""The weights manager (backends/weights.py) and `medsegfm weights`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from napari_medsegfm.backends import weights as W
from napari_medsegfm.backends.base import BackendUnavailableError


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A clean weights environment: cache under tmp, no overrides."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for var in (W.WEIGHTS_DIR_ENV, "MEDSEGFM_VISTA3D_WEIGHTS", "MEDSEGFM_NNINTERACTIVE_WEIGHTS"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def _nni_folder(root: Path, sub: str = "nnInteractive_v1.0", skip: str = "") -> Path:
    d = root / sub
    for rel in ("plans.json", "dataset.json", "inference_session_class.json", "fold_0/checkpoint_final.pth"):
        if rel == skip:
            continue
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(b"{}" if rel.endswith(".json") else b"weights")
    return d


def test_roots_and_precedence(env, monkeypatch):
    import sys

    if sys.platform.startswith("linux"):
        assert W.weights_root() == env / "cache" / "medsegfm" / "weights"
    monkeypatch.setenv(W.WEIGHTS_DIR_ENV, str(env / "w"))
    assert W.weights_root() == env / "w"
    assert W.where("vista3d") == env / "w" / "vista3d"
    monkeypatch.setenv("MEDSEGFM_VISTA3D_WEIGHTS", str(env / "elsewhere" / "v.pt"))
    assert W.where("vista3d") == env / "elsewhere" / "v.pt"
    assert set(W.known_weights()) >= {"vista3d", "nninteractive"}
    with pytest.raises(ValueError, match="known"):
        W.locate("nope")


def test_missing_weights_name_the_exact_files(env):
    loc = W.locate("vista3d")
    assert not loc.ok and loc.state == "missing" and loc.via == "cache"
    expected = W.weights_root() / "vista3d" / "model.pt"
    assert loc.missing == [expected]
    assert str(expected) in loc.message and "MEDSEGFM_VISTA3D_WEIGHTS" in loc.message
    assert "nothing is downloaded" in loc.message
    with pytest.raises(BackendUnavailableError) as ei:
        W.require("nninteractive")
    msg = str(ei.value)
    for rel in ("plans.json", "dataset.json", "fold_0/checkpoint_final.pth", "inference_session_class.json"):
        assert str(W.weights_root() / "nninteractive" / rel) in msg
    assert "nnInteractive_v1.0" in msg and "CC BY-NC-SA 4.0" in msg


def test_single_file_model_found_in_cache_env_and_argument(env, monkeypatch):
    d = W.weights_root() / "vista3d"
    d.mkdir(parents=True)
    (d / "model.pt").write_bytes(b"x" * 10)
    loc = W.locate("vista3d")
    assert loc.ok and loc.path == d / "model.pt" and loc.via == "cache"
    other = env / "my_vista.ckpt"
    other.write_bytes(b"y")
    monkeypatch.setenv("MEDSEGFM_VISTA3D_WEIGHTS", str(other))
    loc = W.locate("vista3d")
    assert loc.ok and loc.path == other and loc.via == "$MEDSEGFM_VISTA3D_WEIGHTS"
    bundle = env / "bundle" / "vista3d"
    (bundle / "models").mkdir(parents=True)
    (bundle / "models" / "model.pt").write_bytes(b"z")
    loc = W.locate("vista3d", bundle)  # the MONAI bundle layout, given explicitly
    assert loc.ok and loc.path == bundle / "models" / "model.pt" and loc.via == "argument"


def test_folder_model_layouts_and_partial_sets(env, monkeypatch):
    base = W.weights_root() / "nninteractive"
    d = _nni_folder(base, skip="fold_0/checkpoint_final.pth")
    loc = W.locate("nninteractive")
    assert loc.state == "incomplete" and loc.missing == [d / "fold_0" / "checkpoint_final.pth"]
    (d / "fold_0").mkdir()
    (d / "fold_0" / "checkpoint_final.pth").write_bytes(b"w")
    loc = W.locate("nninteractive")
    assert loc.ok and loc.root == d and loc.path == d and len(loc.files) == 4
    # a folder given directly, newer capability metadata instead of the legacy json
    d2 = env / "direct"
    for rel in ("plans.json", "dataset.json", "inference_info.json", "fold_0/checkpoint_final.pth"):
        (d2 / rel).parent.mkdir(parents=True, exist_ok=True)
        (d2 / rel).write_bytes(b"1")
    monkeypatch.setenv("MEDSEGFM_NNINTERACTIVE_WEIGHTS", str(d2))
    loc = W.locate("nninteractive")
    assert loc.ok and loc.root == d2
    f = env / "file.pth"
    f.write_bytes(b"1")
    assert W.locate("nninteractive", f).state == "incomplete"  # needs a folder


def test_verify_record_and_tamper(env):
    d = _nni_folder(W.weights_root() / "nninteractive")
    rep = W.verify("nninteractive")
    assert rep.ok and rep.state == "ready (unverified)" and all(f.expected is None for f in rep.files)
    sums = W.record_checksums("nninteractive")
    assert sums == d / W.CHECKSUM_FILE and len(sums.read_text().splitlines()) == 4
    rep = W.verify("nninteractive")
    assert rep.ok and rep.state == "verified" and {f.source for f in rep.files} == {W.CHECKSUM_FILE}
    (d / "fold_0" / "checkpoint_final.pth").write_bytes(b"tampered!")
    rep = W.verify("nninteractive")
    assert not rep.ok and rep.state == "checksum mismatch"
    bad = [f for f in rep.files if not f.ok]
    assert len(bad) == 1 and bad[0].path.name == "checkpoint_final.pth"
    (d / W.CHECKSUM_FILE).write_text("nonsense\n")
    with pytest.raises(ValueError, match="SHA256SUMS:1"):
        W.verify("nninteractive")


def test_published_sha256_is_checked(env, monkeypatch):
    if "litemedsam" not in W.known_weights():
        pytest.skip("litemedsam backend not present")
    fake = env / "lite_medsam.pth"
    fake.write_bytes(b"not the checkpoint")
    monkeypatch.setenv("MEDSEGFM_LITEMEDSAM_WEIGHTS", str(fake))
    rep = W.verify("litemedsam")
    assert rep.location.ok and not rep.ok and rep.state == "checksum mismatch"
    assert rep.files[0].source == "upstream" and rep.files[0].expected.startswith("79d8c9dc")


def test_cli_weights(env, capsys):
    from napari_medsegfm.cli import main

    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "vista3d" in out and "missing" in out and "nninteractive" in out
    assert main(["weights", "list", "vista3d"]) == 1
    capsys.readouterr()
    assert main(["weights", "where", "vista3d", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["folder"] == str(W.weights_root() / "vista3d") and ["model.pt"] in d["layouts"]
    assert main(["weights", "verify", "nninteractive"]) == 1
    assert "not found" in capsys.readouterr().out
    _nni_folder(W.weights_root() / "nninteractive")
    assert main(["weights", "verify", "nninteractive", "--record"]) == 0
    out = capsys.readouterr().out
    assert "verified" in out
    assert main(["weights", "verify", "--json"]) == 0
    reps = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert reps["nninteractive"]["state"] == "verified" and reps["vista3d"]["state"] == "missing"
    assert main(["weights", "where", "nope"]) == 2
    assert "unknown model" in capsys.readouterr().err

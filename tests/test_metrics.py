"""tasks.metrics: DSC, NSD (surfel-weighted, like the challenge scorer), spacing order, AUC."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_medsegfm.tasks import metrics as M


def cube(shape, lo, hi):
    m = np.zeros(shape, dtype=bool)
    m[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return m


# ------------------------------------------------------------------------------ DSC
def test_dsc_hand_computed():
    g = cube((8, 8, 8), (0, 0, 0), (4, 4, 4))  # 64 voxels
    p = cube((8, 8, 8), (1, 0, 0), (5, 4, 4))  # shifted by one slice: 48 shared
    assert M.dsc(g, p) == pytest.approx(2 * 48 / 128)
    assert M.dsc(g, g) == 1.0
    assert M.dsc(g, np.zeros_like(g)) == 0.0
    assert math.isnan(M.dsc(np.zeros_like(g), np.zeros_like(g)))


def test_multi_class_dsc_is_mean_over_gt_labels_only():
    gt = np.zeros((4, 10), np.uint8)
    gt[:, :4] = 1
    gt[:, 6:] = 2
    seg = gt.copy()
    seg[:, 6:8] = 0  # label 2: 8 of 16 -> 2*8/(16+8)
    seg[0, 4] = 3  # label 3 is not in the ground truth: ignored
    per = M.per_class_dsc(gt, seg)
    assert set(per) == {1, 2}
    assert per[1] == 1.0
    assert per[2] == pytest.approx(16 / 24)
    assert M.multi_class_dsc(gt, seg) == pytest.approx((1 + 16 / 24) / 2)
    with pytest.raises(ValueError, match="shapes differ"):
        M.multi_class_dsc(gt, seg[:, :5])


# ------------------------------------------------------------------------------ NSD
def test_nsd_identical_disjoint_and_empty():
    g = cube((10, 12, 12), (2, 2, 2), (7, 8, 8))
    sp = (1.0, 1.0, 1.0)
    assert M.nsd(g, g, sp) == pytest.approx(1.0)
    far = cube((10, 40, 40), (2, 30, 30), (7, 36, 36))
    g40 = cube((10, 40, 40), (2, 2, 2), (7, 8, 8))
    assert M.nsd(g40, far, sp) == 0.0
    assert M.nsd(g, np.zeros_like(g), sp) == 0.0
    assert math.isnan(M.nsd(np.zeros_like(g), np.zeros_like(g), sp))


def test_nsd_tolerance_against_spacing():
    """A one-voxel shift along an axis is within tolerance iff that axis' spacing is <= 2 mm."""
    g = cube((12, 12, 12), (3, 3, 3), (9, 9, 9))
    p = np.roll(g, 1, axis=0)
    assert M.nsd(g, p, (2.0, 1.0, 1.0)) == pytest.approx(1.0)
    assert M.nsd(g, p, (2.5, 1.0, 1.0)) < 0.9
    # a 2D square shifted 3 px with 1 px spacing: the shifted sides are out of the 2 px tolerance
    g2 = cube((20, 20), (5, 5), (15, 15))
    p2 = np.roll(g2, 3, axis=1)
    v = M.nsd(g2, p2, (1.0, 1.0))
    assert 0.3 < v < 0.8


def _monai_nsd(gt: np.ndarray, pred: np.ndarray, spacing, tolerance: float) -> float:
    """MONAI's surfel-area NSD (``use_subvoxels=True``: the DeepMind scorer's method), computed live."""
    import torch
    from monai.metrics import compute_surface_dice

    def onehot(m):
        return torch.from_numpy(np.stack([~m, m])[None].astype(np.float32))

    return float(compute_surface_dice(onehot(pred), onehot(gt), [tolerance], include_background=False,
                                      spacing=[float(s) for s in spacing], use_subvoxels=True)[0, 0])


def _blob(rng, shape, sigma=2.0, keep=0.3):
    from scipy import ndimage

    a = ndimage.gaussian_filter(rng.random(shape), sigma)
    return a > np.quantile(a, 1 - keep)


@pytest.mark.parametrize("seed,shape,spacing", [
    (0, (20, 24, 28), (1.0, 1.0, 1.0)),
    (1, (16, 30, 30), (2.5, 0.8, 0.8)),
    (2, (12, 20, 25), (3.0, 1.0, 0.5)),
    (3, (40, 50), (1.0, 1.0)),
    (4, (40, 50), (0.7, 1.3)),
])
@pytest.mark.parametrize("tolerance", [1.0, 2.0])
def test_nsd_matches_monai_on_random_shapes(seed, shape, spacing, tolerance):
    rng = np.random.default_rng(seed)
    g, p = _blob(rng, shape), _blob(rng, shape)
    ours = M.nsd(g, p, spacing, tolerance)
    assert 0.0 < ours < 1.0
    assert ours == pytest.approx(_monai_nsd(g, p, spacing, tolerance), abs=1e-6)


def test_nsd_matches_monai_on_real_masks(shared_data):
    """Real organ masks, shifted: our NSD and MONAI's agree (both follow the challenge's scorer)."""
    from napari_medsegfm.io import safe_load_npz

    g = safe_load_npz(shared_data / "cvpr24" / "gts" / "2DBox_MR_BiomedParse08_heart.npz")["gts"]
    a = g[300:700, 300:700] == 2
    b = np.roll(a, 3, axis=1)
    assert M.nsd(a, b, (1.0, 1.0), 2.0) == pytest.approx(_monai_nsd(a, b, (1.0, 1.0), 2.0), abs=1e-6)

    gt = safe_load_npz(shared_data / "cvpr25" / "gts" / "CT_AMOS_amos_0018.npz")["gts"][36:46, 180:300, 180:260]
    a = gt == 11
    b = np.roll(a, 2, axis=2)
    b[0] = False
    sp = (0.846, 0.846, 5.0)
    assert M.nsd(a, b, sp, 2.0) == pytest.approx(_monai_nsd(a, b, sp, 2.0), abs=1e-6)
    assert M.nsd(a, b, (5.0, 0.846, 0.846), 2.0) == pytest.approx(1.0, abs=1e-9)


def test_scorer_spacing_orders():
    sp = np.array([0.846, 0.846, 5.0])  # npz (x, y, z)
    assert M.scorer_spacing(sp, 3, "official") == (0.846, 0.846, 5.0)
    assert M.scorer_spacing(sp, 3, "physical") == (5.0, 0.846, 0.846)
    assert M.scorer_spacing(None, 2) == (1.0, 1.0)
    with pytest.raises(ValueError, match="official"):
        M.scorer_spacing(sp, 3, "zyx")


def test_multi_class_nsd_official_vs_physical_on_anisotropic_case(shared_data):
    from napari_medsegfm.io import safe_load_npz

    gt = safe_load_npz(shared_data / "cvpr25" / "gts" / "CT_AMOS_amos_0018.npz")["gts"][30:46]
    seg = np.roll(gt, 1, axis=0)  # one slice off (5 mm physically)
    off = M.multi_class_nsd(gt, seg, M.scorer_spacing([0.846, 0.846, 5.0], 3, "official"))
    phys = M.multi_class_nsd(gt, seg, M.scorer_spacing([0.846, 0.846, 5.0], 3, "physical"))
    # the official order treats the 5 mm slice axis as 0.846 mm: a one-slice error looks milder
    assert off > phys + 0.1
    # ... and the in-plane x axis as 5 mm: a 2-pixel (1.7 mm) shift is no longer within 2 mm
    seg = np.roll(gt, 2, axis=2)
    assert M.multi_class_nsd(gt, seg, M.scorer_spacing([0.846, 0.846, 5.0], 3, "physical")) == pytest.approx(1.0)
    assert M.multi_class_nsd(gt, seg, M.scorer_spacing([0.846, 0.846, 5.0], 3, "official")) < 0.99


# ------------------------------------------------------------------------- protocol
def test_auc_is_trapezoid_over_last_five():
    assert M.auc([0, 1, 1, 1, 1, 1]) == pytest.approx(4.0)
    assert M.auc([0.9, 0.2, 0.4, 0.6, 0.8, 1.0]) == pytest.approx(2.4)
    assert M.auc([0.5]) == 0.0


def test_step_scores_skip_nsd_below_threshold():
    gt = np.zeros((6, 6), np.uint8)
    gt[1:5, 1:5] = 1
    seg = np.zeros_like(gt)
    seg[1, 1] = 1  # DSC 2/17 < 0.2
    d, n = M.step_scores(gt, seg, (1.0, 1.0))
    assert d == pytest.approx(2 / 17)
    assert n == 0.0
    d, n = M.step_scores(gt, gt, (1.0, 1.0))
    assert (d, n) == (1.0, pytest.approx(1.0))

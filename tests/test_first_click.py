"""Objects grown from clicks alone (no box) with the classic backend, on real MR.

The CVPR 2025 protocol gives brain-tumour cases no boxes: every sub-region starts from one
positive click. The first click grows the intensity-homogeneous region connected to it (opened
so thin bridges break, never so far that the object itself is erased); a later negative click
removes the wrong branch of such a region that it points at, and never what lies nearer a
positive click than itself. Pinned here on the dev3d BraTS 2013 FLAIR case (every sub-region),
the ACDC myocardium (a thin ring the opening would erase) and the FLAIR enhancing rim whose
first region runs on into the oedema, each against the same backend with the behaviour off.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_medsegfm.backends.classic import ClassicBackend
from napari_medsegfm.io.cvpr import load_cvpr_npz
from napari_medsegfm.tasks.clicks import simulate_click
from napari_medsegfm.tasks.metrics import dsc
from napari_medsegfm.types import CancelToken, Point


def _case(shared_data, name):
    path = shared_data / "dev3d" / f"{name}.npz"
    if not path.is_file():
        pytest.skip(f"dev3d/{name}.npz is not in the shared data")
    case = load_cvpr_npz(path)
    return case.image, case.labels["gts"]


@pytest.fixture(scope="module")
def flair(shared_data):
    return _case(shared_data, "MR_BraTS2013_pat0006_Flair")


def _first(backend, gts, lab):
    c = simulate_click(gts, np.zeros_like(gts), lab)  # the box-less protocol's first click
    assert c.kind == "fg"
    m = backend.predict([Point(c.position, True, object_id=lab)], None, CancelToken())
    return c.position, m


def test_region_first_click_beats_the_ball_on_every_sub_region_together(flair):
    vol, gts = flair
    labels = [int(v) for v in np.unique(gts) if v]
    assert len(labels) >= 3
    region, ball = ClassicBackend(), ClassicBackend(first_click_region=False)
    region.set_image(vol)
    ball.set_image(vol)
    sp = np.asarray(vol.spacing)
    got, base = [], []
    for lab in labels:
        pos, m = _first(region, gts, lab)
        _, m0 = _first(ball, gts, lab)
        got.append(dsc(gts == lab, m))
        base.append(dsc(gts == lab, m0))
        # the click's own object: holds the click, one piece, within the click reach
        assert m[pos]
        assert ndimage.label(m)[1] == 1
        zz, yy, xx = np.nonzero(m)
        far = np.sqrt((((np.stack([zz, yy, xx], 1) - np.asarray(pos)) * sp) ** 2).sum(1))
        assert far.max() <= region.click_radius_max_mm + 1e-6
    assert np.mean(got) > np.mean(base) + 0.05, (got, base)


def test_opening_does_not_erase_a_thin_structure(shared_data):
    vol, gts = _case(shared_data, "MR_ACDC_patient001_frame01")
    myo = 2  # ACDC: 1 right ventricle, 2 myocardium (a ring a few voxels thick), 3 left ventricle
    b = ClassicBackend()
    b.set_image(vol)
    pos, m = _first(b, gts, myo)
    v_ball = 4.0 / 3.0 * np.pi * (b.first_click_min_mm / 2) ** 3 / np.prod(vol.spacing)
    assert m[pos] and np.count_nonzero(m) >= v_ball
    assert dsc(gts == myo, m) > 0.2


def _leak_step(backend, vol, gts, lab):
    """The first click, then the protocol's next (negative) click: (before, after, pos, neg)."""
    backend.set_image(vol)
    pos, m = _first(backend, gts, lab)
    seg = np.where(m, lab, 0).astype(gts.dtype)
    c = simulate_click(gts, seg, lab)
    assert c.kind == "bg" and m[c.position]
    prompts = [Point(pos, True, object_id=lab), Point(c.position, False, object_id=lab)]
    return m, backend.predict(prompts, m, CancelToken()), pos, c.position


def test_negative_click_removes_the_leak_it_points_at(flair):
    vol, gts = flair
    lab = 4  # the enhancing rim: its first region runs on into the oedema of similar intensity
    before, after, pos, neg = _leak_step(ClassicBackend(), vol, gts, lab)
    _, after_off, _, _ = _leak_step(ClassicBackend(leak_cut=False, neg_keep_near=0), vol, gts, lab)
    assert np.count_nonzero(before) > 2 * np.count_nonzero(gts == lab)  # the leak is real
    removed, removed_off = before & ~after, before & ~after_off
    assert not (after & ~before).any() and not (after_off & ~before).any()  # a negative click only removes
    assert np.count_nonzero(removed) > 1.5 * np.count_nonzero(removed_off)
    assert dsc(gts == lab, after) > dsc(gts == lab, after_off) + 0.02
    assert after[pos] and not after[neg]
    sp = np.asarray(vol.spacing)
    idx = np.stack(np.nonzero(removed), 1)
    d_neg = np.sqrt((((idx - np.asarray(neg)) * sp) ** 2).sum(1))
    d_pos = np.sqrt((((idx - np.asarray(pos)) * sp) ** 2).sum(1))
    # what it removes lies nearer the negative click than the positive one, never the reverse
    assert (d_neg <= d_pos + 1e-6).mean() > 0.99
    assert dsc(gts == lab, after) > dsc(gts == lab, before)


def test_with_a_box_the_negative_click_edit_is_the_local_one(flair):
    from napari_medsegfm.types import Box3D

    vol, gts = flair
    lab = 1
    z, y, x = np.nonzero(gts == lab)
    box = Box3D(z_min=int(z.min()), z_max=int(z.max()), y_min=int(y.min()), x_min=int(x.min()),
                y_max=int(y.max()), x_max=int(x.max()), object_id=lab)
    out = []
    for opts in ({}, {"leak_cut": False, "neg_keep_near": 0}):
        b = ClassicBackend(**opts)
        b.set_image(vol)
        m = b.predict([box], None, CancelToken())
        c = simulate_click(gts, np.where(m, lab, 0).astype(gts.dtype), lab)
        out.append(b.predict([box, Point(c.position, c.kind == "fg", object_id=lab)], m, CancelToken()))
    assert np.array_equal(out[0], out[1])


def test_box_less_protocol_run_gains_over_the_ball_and_local_edits(shared_data):
    """The challenge's box-less run (first click, then 5 simulated clicks) on the FLAIR case."""
    from napari_medsegfm.tasks.evaluation import EvalCase, run_case

    path = shared_data / "dev3d" / "MR_BraTS2013_pat0006_Flair.npz"
    if not path.is_file():
        pytest.skip("dev3d/MR_BraTS2013_pat0006_Flair.npz is not in the shared data")
    ec = EvalCase(path.stem, path, None)
    new, _ = run_case(ec, ClassicBackend(), n_clicks=5, boxes="none")
    old, _ = run_case(ec, ClassicBackend(first_click_region=False, leak_cut=False, neg_keep_near=0),
                      n_clicks=5, boxes="none")
    assert new.dsc[0] == old.dsc[0] == 0.0  # box-less: the box step scores 0
    assert new.dsc_auc > old.dsc_auc + 0.3 and new.dsc_final > old.dsc_final + 0.05
    assert all(b >= a - 0.01 for a, b in zip(new.dsc[1:], new.dsc[2:]))  # no click costs more than 0.01

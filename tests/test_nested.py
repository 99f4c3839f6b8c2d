"""Nested boxes on the box step: an object whose box holds other objects' boxes is cut as what surrounds them.

Real case: ACDC patient075 (cardiac cine MR), whose myocardium box holds the left-ventricle
blood pool's box; the right ventricle's box is not inside either.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_medsegfm.backends.classic import ClassicBackend
from napari_medsegfm.io import safe_load_npz
from napari_medsegfm.tasks.predict import predict_case
from napari_medsegfm.types import Box3D, Volume, boxes_extent, extent_nested, nested_inner

RV, MYO, LV = 1, 2, 3


def _dsc(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s


@pytest.fixture(scope="module")
def acdc(shared_data):
    path = shared_data / "dev3d" / "MR_ACDC_patient075_frame01.npz"
    if not path.is_file():
        pytest.skip(f"{path} not in the shared data")
    d = safe_load_npz(path)
    members = {k: d[k] for k in ("imgs", "spacing", "boxes")}
    return members, d["gts"]


def test_box_extent_and_nesting_rules():
    outer = Box3D(z_min=0, z_max=9, y_min=10, x_min=10, y_max=50, x_max=50, object_id=1)
    inner = Box3D(z_min=1, z_max=8, y_min=20, x_min=20, y_max=40, x_max=40, object_id=2)
    beside = Box3D(z_min=0, z_max=9, y_min=45, x_min=45, y_max=70, x_max=70, object_id=3)
    e_o, e_i, e_b = boxes_extent([outer]), boxes_extent([inner]), boxes_extent([beside])
    assert e_o == ((0, 10, 10), (9, 50, 50))
    assert extent_nested(e_i, e_o) and not extent_nested(e_o, e_i)
    assert not extent_nested(e_b, e_o)          # overlapping is not nested
    assert not extent_nested(e_o, e_o)          # the same box is not nested in itself
    assert boxes_extent([]) is None
    objects = {1: [outer], 2: [inner], 3: [beside]}
    m2 = np.zeros((10, 80, 80), bool)
    m2[4, 30, 30] = True
    m3 = np.zeros_like(m2)
    m3[4, 60, 60] = True
    got = nested_inner(1, objects, {2: m2, 3: m3})
    assert got is not None and got[4, 30, 30] and not got[4, 60, 60]
    assert nested_inner(3, objects, {2: m2}) is None


def test_myocardium_around_the_blood_pool_is_a_ring(acdc):
    members, gts = acdc
    plain = predict_case(dict(members), ClassicBackend(nested=False))
    nested = predict_case(dict(members), ClassicBackend(nested=True))
    # the myocardium's box holds the blood pool's: with nesting its intensity model is the
    # muscle's, not the bright blood's, and the ring follows the myocardium
    assert _dsc(nested == MYO, gts == MYO) > _dsc(plain == MYO, gts == MYO) + 0.15
    # the objects that contain nothing are cut as before (only the overlap with the new ring moves)
    assert _dsc(nested == RV, plain == RV) > 0.95
    assert _dsc(nested == RV, gts == RV) >= _dsc(plain == RV, gts == RV) - 0.02
    assert _dsc(nested == LV, gts == LV) >= _dsc(plain == LV, gts == LV) - 0.02
    # the blood pool stays its own label: nested objects are written on top of their container
    assert _dsc(nested == LV, plain == LV) > 0.9


def test_predict_nested_checks_its_inputs(acdc):
    members, _ = acdc
    be = ClassicBackend(nested=True)
    img = np.asarray(members["imgs"])
    be.set_image(Volume(img, spacing=(1.0, 1.0, 1.0)))
    box = Box3D(z_min=0, z_max=13, y_min=89, x_min=50, y_max=127, x_max=84, object_id=MYO)
    with pytest.raises(ValueError, match="inner has shape"):
        be.predict_nested([box], np.zeros((3, 3, 3), bool))
    # nothing inside: the same as a plain box step
    empty = np.zeros(img.shape, bool)
    assert np.array_equal(be.predict_nested([box], empty), be.predict([box], None))
    # the inner voxels belong to the container's region
    inner = np.zeros(img.shape, bool)
    inner[7, 105:112, 62:70] = True
    assert be.predict_nested([box], inner)[inner].all()

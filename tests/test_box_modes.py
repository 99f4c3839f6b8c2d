"""The box step also tries the box's other big intensity modes.

A right ventricle's box is centred on the septum and the left ventricle: the box's main
intensity mode (weighted to its centre) is the dark wall, and a cut on it found the wall, not
the bright crescent of blood. ``box_modes`` adds the next big mode as a candidate model; the
candidate whose mask best spans the box wins, as before.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_medsegfm.backends.classic import ClassicBackend
from napari_medsegfm.backends.classic_ops import hist_costs, histogram_modes
from napari_medsegfm.io.cvpr import load_cvpr_npz
from napari_medsegfm.tasks.metrics import dsc
from napari_medsegfm.types import CancelToken

CASE = "dev3d/MR_ACDC_patient001_frame01.npz"


def test_histogram_modes_finds_separate_modes_highest_first():
    rng = np.random.default_rng(1)
    two = np.r_[rng.normal(60, 5, 6000), rng.normal(180, 6, 3000)].clip(0, 255)
    lut, _ = hist_costs(two, two)
    modes = histogram_modes(lut, 3)
    assert len(modes) == 2
    assert abs(modes[0] - 60) <= 4 and abs(modes[1] - 180) <= 4
    one = rng.normal(120, 8, 9000).clip(0, 255)
    lut1, _ = hist_costs(one, one)
    assert len(histogram_modes(lut1, 3)) == 1
    # a small bump is not a mode of its own
    bump = np.r_[rng.normal(60, 5, 9500), rng.normal(180, 5, 500)].clip(0, 255)
    lut2, _ = hist_costs(bump, bump)
    assert len(histogram_modes(lut2, 3)) == 1


@pytest.fixture(scope="module")
def acdc(shared_data):
    path = shared_data / CASE
    if not path.is_file():
        pytest.skip(f"{CASE} is not in the shared data")
    return load_cvpr_npz(path)


def test_right_ventricle_box_finds_the_blood_not_the_wall(acdc):
    vol, gts = acdc.image, acdc.labels["gts"]
    box = next(b for b in acdc.boxes if b.object_id == 1)  # ACDC label 1: the right ventricle
    gt = gts == 1
    res = {}
    for modes in (1, 2):
        b = ClassicBackend(box_modes=modes)
        b.set_image(vol)
        res[modes] = b.predict([box], None, CancelToken())
    assert ClassicBackend().box_modes == 2  # the default tries the second mode
    # one mode: the wall in the box's centre; two: the crescent of blood
    assert dsc(gt, res[2]) > dsc(gt, res[1]) + 0.3, (dsc(gt, res[1]), dsc(gt, res[2]))
    img = vol.array
    assert img[res[2]].mean() > img[res[1]].mean()

"""A positive click beside the mask takes the missed band it points at, where that band has an edge.

The box step often falls short of an object all along one side (the bright edge of the left
ventricle's blood pool, a tumour's enhancing rim); the protocol's click then sits a few voxels
outside the mask, and a local edit only patches the band around it. ``classic`` also takes
the band: the voxels near the mask's surface, within the click's intensity tolerance and reach,
connected to the click, kept only where the band stands out from its surroundings
(``band_contrast``). Pinned on real MR against the same backend with the band off:
the ACDC left ventricle gains the band (and nothing beyond the click's reach), and on the
spinal cord, whose missed voxels are the same tissue as their surroundings, nothing changes.
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
    return case.image, case.labels["gts"], {b.object_id: b for b in case.boxes}


def _click_step(vol, gts, boxes, lab):
    """Box step, then the protocol's click, with the band on and off: (mask, click, on, off)."""
    on, off = ClassicBackend(), ClassicBackend(band_contrast=0)
    on.set_image(vol)
    off.set_image(vol)
    box = boxes[lab]
    mask = on.predict([box], None, CancelToken())
    assert np.array_equal(mask, off.predict([box], None, CancelToken()))  # the box step is untouched
    c = simulate_click((gts == lab).astype(np.uint8), mask.astype(np.uint8), 1)
    prompts = [box, Point(c.position, c.kind == "fg", object_id=lab)]
    return mask, c, on.predict(prompts, mask, CancelToken()), off.predict(prompts, mask, CancelToken())


def test_positive_click_takes_the_missed_band_with_an_edge(shared_data):
    vol, gts, boxes = _case(shared_data, "MR_ACDC_patient045_frame02")
    lv = 3  # ACDC: 1 right ventricle, 2 myocardium, 3 left ventricle
    g = gts == lv
    mask, c, on, off = _click_step(vol, gts, boxes, lv)
    assert c.kind == "fg" and not mask[c.position]
    assert on[c.position] and off[c.position]
    # the click's error region: the missed voxels connected to it
    lab, _ = ndimage.label(g & ~mask)
    region = lab == lab[c.position]
    gain_on = int((on & region).sum())
    gain_off = int((off & region).sum())
    assert gain_on > 2 * gain_off, (gain_on, gain_off)
    assert dsc(g, on) > dsc(g, off) + 0.02, (dsc(g, on), dsc(g, off))
    # a positive click only adds here, and nothing beyond its reach changes
    assert not (mask & ~on).any()
    added = np.argwhere(on & ~off)
    sp = np.asarray(vol.spacing)
    far = np.sqrt((((added - np.asarray(c.position)) * sp) ** 2).sum(1))
    assert far.max() <= ClassicBackend().click_radius_max_mm + 1e-6


def test_no_band_where_the_missed_voxels_look_like_their_surroundings(shared_data):
    vol, gts, boxes = _case(shared_data, "MR_SCT_errsm30_T2_cord_levels")
    for lab in (1, 2):
        mask, c, on, off = _click_step(vol, gts, boxes, lab)
        if c.kind != "fg":
            continue
        assert np.array_equal(on, off), lab
        return
    pytest.fail("no positive click on the cord levels' first two objects")

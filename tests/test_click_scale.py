"""Click edits are sized in pixels on images with fine voxels.

The classic backend bounds the error radius a click marks from below by 4 mm, which suits CT
and MR; at a microscopy (or ultrasound) spacing of 0.15 mm that is 26 pixels, wider than a
cell, and a click grew into the neighbouring cells. ``click_radius_min_px`` caps the floor in
pixels. Pinned on the real PlantSeg ovule volume: every change a click makes lies within the
edit's zone around the click (two floored error radii in plane), and without the cap the same
clicks change voxels beyond it.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_medsegfm.backends.classic import ClassicBackend
from napari_medsegfm.io.cvpr import load_cvpr_npz
from napari_medsegfm.tasks.clicks import simulate_click
from napari_medsegfm.types import CancelToken, Point, Volume

CASE = "dev3d/Microscopy_PlantSeg_ovule_cells.npz"
CELLS = (1, 2, 3, 5)


@pytest.fixture(scope="module")
def ovule(shared_data):
    path = shared_data / CASE
    if not path.is_file():
        pytest.skip(f"{CASE} is not in the shared data")
    case = load_cvpr_npz(path)
    return case.image, case.labels["gts"], {b.object_id: b for b in case.boxes}


def _far_changes(backend: ClassicBackend, vol: Volume, gts: np.ndarray, boxes: dict,
                 floor: float) -> list[tuple[int, int]]:
    """(cell, voxels changed beyond the zone of a ``floor``-pixel floored radius) for one click per cell."""
    backend.set_image(vol)
    far = []
    for cell in CELLS:
        box = boxes[cell]
        mask = backend.predict([box], None, CancelToken())
        c = simulate_click((gts == cell).astype(np.uint8), mask.astype(np.uint8), 1)
        radii = backend._error_radius(mask, c.position, c.kind == "fg")
        r_p = max(radii[0] if radii else 0.0, floor)
        new = backend.predict([box, Point(c.position, c.kind == "fg", object_id=cell)], mask, CancelToken())
        assert new[c.position] == (c.kind == "fg")  # the clicked voxel is fixed
        changed = np.argwhere(new != mask)
        d_plane = np.hypot(changed[:, 1] - c.position[1], changed[:, 2] - c.position[2])
        far.append((cell, int((d_plane > backend.change_limit * r_p + 1.5).sum())))
    return far


def test_click_edits_on_fine_voxels_stay_near_the_click(ovule):
    vol, gts, boxes = ovule
    assert min(vol.spacing[1:]) < 0.2  # the case this is about: 4 mm would be > 20 pixels
    backend = ClassicBackend()
    floor = backend.click_radius_min_px
    assert floor > 0 and backend.click_radius_min_mm / min(vol.spacing[1:]) > 2 * floor
    default = _far_changes(backend, vol, gts, boxes, floor)
    assert all(n == 0 for _, n in default), default
    # the same clicks with the millimetre floor alone reach past that zone
    mm_only = _far_changes(ClassicBackend(click_radius_min_px=0), vol, gts, boxes, floor)
    assert sum(n for _, n in mm_only) > 0, mm_only

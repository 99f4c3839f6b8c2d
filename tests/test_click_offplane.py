"""A positive click on a slice the mask does not reach edits only the slices near it.

The classic backend sizes a click's edit by its distance to the mask: in plane (pixels) and
through the slices. Where the clicked slice holds no mask voxel, that distance is measured in
3D. It used to be taken in unit voxels for the z radius, so on 6.5 mm slices a mask 18 pixels
away in plane counted as 18 *slices* (clipped to the 40 mm reach: six), and one click on a
missed end slice re-cut every slice of the tumour. This happens when a mask the backend did not
make is corrected (a label file that misses an end slice, a LiteMedSAM mask): measured in
``benchmarks/ceiling_bench.py``, such a click took pyradiomics brain1 from 0.83 to 0.61.

Pinned on the real pyradiomics brain1 tumour (7 slices of 6.5 mm): the ground truth without its
first slice, and without the part of the second slice under that slice's tumour, so the nearest
mask voxel lies far in plane. The click the challenge places there raises the DSC and changes
only the slices within the edit's z reach; without the fix the same click changes every slice.
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

CASE = "dev3d/MR_pyradiomics_brain1_tumor.npz"


@pytest.fixture(scope="module")
def brain1(shared_data):
    path = shared_data / CASE
    if not path.is_file():
        pytest.skip(f"{CASE} is not in the shared data")
    case = load_cvpr_npz(path)
    g = np.asarray(case.labels["gts"]) == 1
    z0 = int(np.flatnonzero(g.any(axis=(1, 2)))[0])
    mask = g.copy()
    mask[z0] = False  # the end slice is missed ...
    cy, cx = ndimage.center_of_mass(g[z0])
    yy, xx = np.mgrid[: g.shape[1], : g.shape[2]]
    mask[z0 + 1] &= np.hypot(yy - cy, xx - cx) > 12  # ... and the next slice's mask lies off to the side
    click = simulate_click(g.astype(np.uint8), mask.astype(np.uint8), 1)
    return case, g, mask, click, z0


def _click(backend: ClassicBackend, case, mask: np.ndarray, click) -> np.ndarray:
    backend.set_image(case.image)
    box = case.boxes[0]
    return backend.predict([box, Point(click.position, click.kind == "fg", object_id=1)], mask, CancelToken())


def test_click_on_a_missed_slice_stays_near_it(brain1):
    case, g, mask, click, z0 = brain1
    sp = np.asarray(case.image.spacing, dtype=float)
    assert sp[0] > 4 * sp[1]  # thick slices: the case this is about
    assert click.kind == "fg" and click.position[0] == z0 and not mask[z0].any()
    d_mm = float(ndimage.distance_transform_edt(~mask, sampling=sp)[click.position])
    assert d_mm / sp[1] > 10  # the nearest mask voxel is far in plane

    backend = ClassicBackend()
    reach = backend.change_limit * d_mm / sp[0]  # slices the edit may touch: its change limit in z
    new = _click(backend, case, mask, click)
    assert new[click.position]
    assert dsc(g, new) > dsc(g, mask)
    changed = np.flatnonzero((new != mask).any(axis=(1, 2)))
    assert changed.max() - z0 <= reach, (changed.tolist(), reach)

    # the old z radius (the 3D distance in unit voxels) re-cuts slices beyond that reach
    old = _click(ClassicBackend(offplane_z_mm=False), case, mask, click)
    changed_old = np.flatnonzero((old != mask).any(axis=(1, 2)))
    assert changed_old.max() - z0 > reach

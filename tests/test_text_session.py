"""TextPrompt through the annotation session with a TEXT backend (VISTA3D adapter)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from napari_medsegfm.backends.base import UnsupportedPromptError  # noqa: E402
from napari_medsegfm.backends.boxfill import BoxFillBackend  # noqa: E402
from napari_medsegfm.backends.vista3d import VISTA3DBackend  # noqa: E402
from napari_medsegfm.engine.session import AnnotationSession  # noqa: E402
from napari_medsegfm.types import Point, TextPrompt, Volume  # noqa: E402


class _Encoder(torch.nn.Module):
    def forward(self, x, with_point=True, with_label=True):
        f = x.repeat(1, 4, 1, 1, 1)
        return f, f


class _ClassHead(torch.nn.Module):
    """Class 1 (liver): bright voxels; any other class: nothing."""

    def forward(self, src, class_vector):
        out = (src[:, :1] > 0.5).float() * 20 - 10
        return torch.cat([out if int(c) == 1 else torch.full_like(out, -10.0) for c in class_vector.view(-1)]), None


class _PointHead(torch.nn.Module):
    def forward(self, out, point_coords, point_labels, class_vector=None):
        grid = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in out.shape[-3:]],
                                          indexing="ij"), -1)
        d = ((grid - point_coords[0][0]) ** 2).sum(-1).sqrt()
        return torch.where(d <= 2.0, 10.0, -10.0)[None, None]


@pytest.fixture
def volume():
    vol = np.zeros((12, 32, 32), np.uint8)
    vol[3:8, 4:14, 18:28] = 250
    return Volume(vol, spacing=(2.0, 1.0, 1.0))


@pytest.fixture
def vista():
    from monai.networks.nets.vista3d import VISTA3D

    net = VISTA3D(image_encoder=_Encoder(), class_head=_ClassHead(), point_head=_PointHead())
    return VISTA3DBackend(device="cpu", network=net, patch_size=(16, 16, 16), target_spacing=None)


def test_text_prompt_segments_through_the_session(volume, vista):
    s = AnnotationSession(volume, backend=vista, use_worker=False)
    try:
        assert vista.text_resolver is not None  # the session attached the vocabulary
        obj = s.add_object(name="liver")
        res = s.add_prompt(TextPrompt("CT imaging of the liver within the abdomen", object_id=obj.label_id))
        assert res.error is None, res.error_message
        truth = volume.array > 0
        assert np.array_equal(s.labels == obj.label_id, truth)
        # text + a click on the same object
        res = s.add_prompt(Point((10, 25, 5), True, object_id=obj.label_id))
        assert res.error is None and s.labels[10, 25, 5] == obj.label_id
        # ambiguous text: an error result naming the candidates, labels untouched
        other = s.add_object(name="")
        before = s.labels.copy()
        res = s.add_prompt(TextPrompt("adrenal gland", object_id=other.label_id))
        assert res.error is not None and "left adrenal gland" in res.error_message
        assert np.array_equal(s.labels, before)
    finally:
        s.close()


def test_text_prompt_on_the_worker(volume, vista):
    s = AnnotationSession(volume, backend=vista, use_worker=True)
    try:
        obj = s.add_object(name="liver")
        done = threading.Event()
        got = []
        s.submit(TextPrompt("liver", object_id=obj.label_id), lambda r: (got.append(r), done.set()))
        assert done.wait(60)
        assert got[0].error is None and s.apply_result(got[0])
        assert np.count_nonzero(s.labels == obj.label_id) == np.count_nonzero(volume.array)
    finally:
        s.close()


def test_text_prompt_without_text_backend_is_refused(volume):
    s = AnnotationSession(volume, backend=BoxFillBackend(), use_worker=False)
    try:
        obj = s.add_object(name="liver")
        with pytest.raises(UnsupportedPromptError, match="text"):
            s.add_prompt(TextPrompt("liver", object_id=obj.label_id))
    finally:
        s.close()

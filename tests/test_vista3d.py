"""VISTA3D adapter against the real `monai` package (backends/vista3d.py).

Two kinds of network:

* the real architecture (``monai.networks.nets.vista3d132``) at a small width with random
  weights, saved as a checkpoint and loaded through the weights manager: strict loading,
  shapes, prompt translation into the network's arguments, cancellation;
* the real ``monai`` ``VISTA3D`` module (its patch/point bookkeeping and combine logic)
  with transparent stand-in heads: the class head marks bright voxels, the point head a
  ball around the click it receives. The output must then land exactly where the click /
  the bright cube is in the input array, through transposition and resampling.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from napari_medsegfm.backends import vista3d as V  # noqa: E402
from napari_medsegfm.backends.base import BackendUnavailableError, UnsupportedPromptError  # noqa: E402
from napari_medsegfm.engine.vocab import attach_vocabulary, default_vocabulary  # noqa: E402
from napari_medsegfm.types import Box3D, Cancelled, CancelToken, Point, TextPrompt, Volume  # noqa: E402

SMALL = 8  # encoder width of the test network (48 in the released weights)


@pytest.fixture(autouse=True)
def _clean_env(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for var in ("MEDSEGFM_WEIGHTS_DIR", "MEDSEGFM_VISTA3D_WEIGHTS", "MEDSEGFM_DEVICE"):
        monkeypatch.delenv(var, raising=False)
    torch.set_num_threads(2)


@pytest.fixture(scope="module")
def ct_crop(shared_data):
    """A real CT crop (Z, Y, X) = (24, 32, 32) from CVPR25 AMOS, spacing in array order."""
    with np.load(shared_data / "cvpr25" / "gts" / "CT_AMOS_amos_0018.npz") as z:
        spacing_xyz = z["spacing"]
    from napari_medsegfm.io import safe_load_npz

    m = safe_load_npz(shared_data / "cvpr25" / "imgs" / "CT_AMOS_amos_0018.npz")
    img = np.asarray(m["imgs"])[20:44, 240:272, 300:332]
    return Volume(np.ascontiguousarray(img), spacing=tuple(float(s) for s in spacing_xyz[::-1]))


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from monai.networks.nets import vista3d132

    torch.manual_seed(0)
    net = vista3d132(encoder_embed_dim=SMALL)
    path = tmp_path_factory.mktemp("vista") / "model.pt"
    torch.save({"model": net.state_dict()}, path)  # wrapped, as some trainers save it
    return path


# ----------------------------------------------------------------------- status/weights
def test_status_states(tmp_path, monkeypatch):
    st = V.VISTA3DBackend.status()
    assert st.state == "weights missing" and not st.ready
    assert "model.pt" in st.message and "MEDSEGFM_VISTA3D_WEIGHTS" in st.message
    assert V.VISTA3DBackend.capabilities & V.Capability.TEXT and V.VISTA3DBackend.capabilities & V.Capability.POINTS
    f = tmp_path / "vista.pt"
    f.write_bytes(b"x")
    monkeypatch.setenv("MEDSEGFM_VISTA3D_WEIGHTS", str(f))
    st = V.VISTA3DBackend.status()
    assert st.ready and st.weights == str(f)
    monkeypatch.setattr(V, "_monai_available", lambda: False)
    st = V.VISTA3DBackend.status()
    assert st.state == "package missing" and "monai" in st.message
    with pytest.raises(BackendUnavailableError, match="monai"):
        V.VISTA3DBackend()


def test_missing_weights_name_the_file():
    with pytest.raises(BackendUnavailableError) as ei:
        V.VISTA3DBackend(device="cpu")
    assert "vista3d/model.pt" in str(ei.value).replace("\\", "/")


def test_registered_as_entry_point_or_builtin():
    from napari_medsegfm.backends.registry import known_names, list_backends

    assert "vista3d" in known_names(), ("vista3d is not registered: reinstall the package metadata "
                                        "(python -m pip install -c constraints.txt -e .)")
    assert list_backends()["vista3d"].state == "weights missing"


def test_checkpoint_loading(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSEGFM_VISTA3D_WEIGHTS", str(tiny_checkpoint))
    b = V.VISTA3DBackend(device="cpu", encoder_embed_dim=SMALL, patch_size=(32, 32, 32), target_spacing=None)
    assert b.weights_path == str(tiny_checkpoint)
    ref = torch.load(tiny_checkpoint, weights_only=True)["model"]
    got = b.network.state_dict()
    assert all(torch.equal(ref[k], got[k].cpu()) for k in list(ref)[:20])
    with pytest.raises(ValueError, match="does not fit"):
        V.VISTA3DBackend(device="cpu", encoder_embed_dim=16)  # wrong width for this checkpoint
    bad = tmp_path / "bad.pt"
    torch.save([1, 2, 3], bad)
    with pytest.raises(ValueError, match="state dict"):
        V.VISTA3DBackend(weights=bad, device="cpu", encoder_embed_dim=SMALL)
    sd = V.load_vista3d_state_dict(tiny_checkpoint)
    torch.save({"module." + k: v for k, v in sd.items()}, tmp_path / "dp.pt")  # DataParallel prefix
    assert set(V.load_vista3d_state_dict(tmp_path / "dp.pt")) == set(sd)


# ---------------------------------------------------------------- real architecture
class _Spy:
    """Records the keyword arguments each network call receives."""

    def __init__(self, net):
        self.net, self.calls = net, []
        self.point_head = net.point_head

    def eval(self):
        return self

    def to(self, _dev):
        return self

    def __call__(self, *args, **kwargs):
        self.calls.append({k: (v.clone() if torch.is_tensor(v) else v) for k, v in kwargs.items()})
        return self.net(*args, **kwargs)


def test_real_architecture_text_and_clicks(tiny_checkpoint, ct_crop, monkeypatch):
    monkeypatch.setenv("MEDSEGFM_VISTA3D_WEIGHTS", str(tiny_checkpoint))
    b = V.VISTA3DBackend(device="cpu", encoder_embed_dim=SMALL, patch_size=(32, 32, 32), target_spacing=None)
    spy = _Spy(b.network)
    b.network = spy
    b.set_image(ct_crop)
    assert b._image.shape == (1, 1, 32, 32, 24)  # (X, Y, Z)
    tok = CancelToken()
    # without a vocabulary only VISTA3D's own names resolve
    m = b.predict([TextPrompt("Spleen", object_id=1)], None, tok)
    assert m.shape == ct_crop.spatial_shape and m.dtype == bool
    assert spy.calls[-1]["class_vector"].tolist() == [[3]]
    with pytest.raises(ValueError, match="attach_vocabulary"):
        b.predict([TextPrompt("CT imaging of the spleen within the abdomen", object_id=1)], None, tok)
    assert attach_vocabulary(b)
    n = len(spy.calls)
    b.predict([TextPrompt("kidney_left", object_id=2)], None, tok)
    assert spy.calls[-1]["class_vector"].tolist() == [[14]]
    b.predict([TextPrompt("kidney left", object_id=2)], None, tok)  # cached: no new network call
    assert len(spy.calls) == n + 1
    with pytest.raises(ValueError, match="ambiguous"):
        b.predict([TextPrompt("adrenal gland", object_id=3)], None, tok)
    # a click on a special class (liver tumor, 26): label 1 -> 3; coordinates arrive as (x, y, z)
    spy.calls.clear()
    pts = [TextPrompt("liver tumour", object_id=4), Point((5, 7, 11), True, object_id=4),
           Point((6, 20, 25), False, object_id=4)]
    m = b.predict(pts, None, tok)
    assert m.shape == ct_crop.spatial_shape
    last = spy.calls[-1]
    assert last["class_vector"].tolist() == [[26]] and last["prompt_class"].tolist() == [[26]]
    assert last["point_labels"].tolist() == [[3, 2]]
    # (x, y, z); monai's window inferer pads z from 24 to the 32-voxel window (4 before) first
    assert last["point_coords"][0].tolist() == [[11.0, 7.0, 5.0 + 4], [25.0, 20.0, 6.0 + 4]]
    # clicks without text: labels 1/0, no class
    spy.calls.clear()
    m2 = b.predict([Point((12, 16, 16), True, object_id=5)], None, tok)
    assert m2.shape == ct_crop.spatial_shape
    assert spy.calls[-1]["class_vector"] is None and spy.calls[-1]["point_labels"].tolist() == [[1]]
    with pytest.raises(UnsupportedPromptError):
        b.predict([Box3D(0, 3, 0, 0, 5, 5, object_id=6)], None, tok)


def test_cancellation_stops_between_windows(tiny_checkpoint, ct_crop, monkeypatch):
    monkeypatch.setenv("MEDSEGFM_VISTA3D_WEIGHTS", str(tiny_checkpoint))
    b = V.VISTA3DBackend(device="cpu", encoder_embed_dim=SMALL, patch_size=(32, 32, 32), target_spacing=None)
    big = np.pad(ct_crop.array, ((0, 0), (0, 16), (0, 16)), mode="reflect")  # (24, 48, 48): 4 windows
    b.set_image(Volume(big, spacing=ct_crop.spacing))
    tok = CancelToken()
    calls = []
    real = b.network

    class Cancelling:
        point_head = real.point_head

        def __call__(self, *a, **k):
            calls.append(1)
            tok.cancel("user pressed escape")
            return real(*a, **k)

    b.network = Cancelling()
    with pytest.raises(Cancelled):
        b.predict([TextPrompt("liver", object_id=1)], None, tok)
    assert len(calls) == 1  # stopped after the first window
    done = CancelToken()
    done.cancel()
    with pytest.raises(Cancelled):
        b.predict([TextPrompt("liver", object_id=1)], None, done)


# ---------------------------------------------------------- geometry with stand-in heads
class _Encoder(torch.nn.Module):
    def forward(self, x, with_point=True, with_label=True):
        feats = x.repeat(1, 4, 1, 1, 1)
        return feats, feats


class _ClassHead(torch.nn.Module):
    """Logits +10 where the (scaled) image is bright, whatever the class."""

    def forward(self, src, class_vector):
        return (src[:, :1] > 0.5).float().repeat(class_vector.shape[0], 1, 1, 1, 1) * 20 - 10, None


class _PointHead(torch.nn.Module):
    """Logits +10 within 2.5 voxels of the first positive click (window coordinates)."""

    last_supported = 132

    def forward(self, out, point_coords, point_labels, class_vector=None):
        shape = out.shape[-3:]
        grid = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in shape], indexing="ij"), -1)
        outs = []
        for b in range(point_coords.shape[0]):
            pos = point_coords[b][(point_labels[b] == 1) | (point_labels[b] == 3)]
            d = ((grid - pos[0]) ** 2).sum(-1).sqrt()
            outs.append(torch.where(d <= 2.5, 10.0, -10.0)[None])
        return torch.stack(outs)


@pytest.fixture
def oracle_backend(monkeypatch, tmp_path):
    from monai.networks.nets.vista3d import VISTA3D

    net = VISTA3D(image_encoder=_Encoder(), class_head=_ClassHead(), point_head=_PointHead())
    return V.VISTA3DBackend(device="cpu", network=net, patch_size=(16, 16, 16), target_spacing=(1.5, 1.5, 1.5),
                            vocabulary=default_vocabulary())


def _asymmetric_volume():
    vol = np.zeros((10, 30, 40), dtype=np.uint8)  # (Z, Y, X), anisotropic spacing
    vol[3:6, 5:12, 25:35] = 255  # a bright box
    return Volume(vol, spacing=(3.0, 1.0, 0.75))


def test_click_lands_where_it_was_given(oracle_backend):
    b = oracle_backend
    vol = _asymmetric_volume()
    b.set_image(vol)
    # working grid (X, Y, Z) at 1.5 mm: 40*0.75/1.5=20, 30*1/1.5=20, 10*3/1.5=20
    assert b._work_xyz == (20, 20, 20)
    click = (7, 20, 8)  # (z, y, x), far from the bright box
    m = b.predict([Point(click, True, object_id=1)], None, CancelToken())
    assert m.shape == (10, 30, 40) and m[click]
    zz, yy, xx = np.nonzero(m)
    centre = (zz.mean(), yy.mean(), xx.mean())
    assert np.allclose(centre, click, atol=1.0), centre
    # the ball is 2.5 working voxels = 3.75 mm: about 1 slice in z, 4 px in y, 5 px in x
    assert zz.max() - zz.min() <= 4 and xx.max() - xx.min() > yy.max() - yy.min()


def test_text_result_and_click_correction_in_input_geometry(oracle_backend):
    b = oracle_backend
    vol = _asymmetric_volume()
    b.set_image(vol)
    tok = CancelToken()
    m = b.predict([TextPrompt("liver", object_id=1)], None, tok)
    truth = vol.array > 0
    inter = np.count_nonzero(m & truth)
    assert 2 * inter / (m.sum() + truth.sum()) > 0.8  # the bright box, back in (Z, Y, X)
    # a positive click away from the box adds its ball; the box stays
    m2 = b.predict([TextPrompt("liver", object_id=1), Point((7, 20, 8), True, object_id=1)], m, tok)
    assert m2[7, 20, 8] and np.count_nonzero(m2 & truth) >= 0.9 * inter
    with pytest.raises(ValueError, match="3D"):
        b.set_image(Volume(np.zeros((20, 20), np.uint8)))

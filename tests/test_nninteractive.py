"""nnInteractive adapter (backends/nninteractive.py).

The package cannot live in the project's environment (it pulls torchvision/timm through
nnunetv2 -> dynamic-network-architectures, which do not import beside the pinned CPU
torch), so most tests drive the adapter against a faithful fake of the documented
session interface (``nnInteractiveInferenceSession``: ``set_image((1, Z, Y, X))``,
``set_target_buffer``, ``add_bbox_interaction([[z0, z1], [y0, y1], [x0, x1]], ...)`` with
half-open intervals, ``add_point_interaction((z, y, x), ...)``, ``add_scribble_interaction``,
``add_lasso_interaction``, ``add_initial_seg_interaction``, ``reset_interactions``,
``supported_interactions``, ``network``, ``target_buffer``). The last test runs the real
package with a tiny random checkpoint where it is importable (a throwaway venv), and is
skipped otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_medsegfm.backends import nninteractive as N
from napari_medsegfm.backends.base import BackendUnavailableError, UnsupportedPromptError
from napari_medsegfm.types import (
    Box2D,
    Box3D,
    Cancelled,
    CancelToken,
    Point,
    Scribble,
    TextPrompt,
    Volume,
)


class FakeSession:
    """Mimics nnInteractiveInferenceSession: same methods, argument conventions and checks.

    "Prediction" paints the interactions: a box fills its (half-open) region, a click a
    3x3x3 cube, scribbles/lassos their voxels; negative ones erase. Every prediction
    calls ``self.network`` once, as the real session calls its network.
    """

    def __init__(self, device=None, use_torch_compile=False, verbose=False, torch_n_threads=8, do_autozoom=True,
                 interactions_storage="auto", enable_undo=True):
        self.kwargs = dict(device=device, use_torch_compile=use_torch_compile, torch_n_threads=torch_n_threads,
                           do_autozoom=do_autozoom, enable_undo=enable_undo)
        self.calls: list[tuple] = []
        self.supported_interactions = {"scribble": True, "lasso": True, "points": True, "bbox2d": True,
                                       "bbox3d": False}
        self.net_calls = 0
        self.network = self._forward
        self.target_buffer = None
        self.state = None

    def _forward(self, x):
        self.net_calls += 1

    def initialize_from_trained_model_folder(self, model_training_output_dir, use_fold=None,
                                             checkpoint_name="checkpoint_final.pth"):
        self.calls.append(("init", model_training_output_dir, use_fold))

    def set_image(self, image, image_properties=None):
        assert image.ndim == 4, f"expected a 4d image as input, got {image.ndim}d"
        self.calls.append(("set_image", image.shape, image.dtype))
        self.state = np.zeros(image.shape[1:], bool)

    def set_target_buffer(self, target_buffer):
        self.target_buffer = target_buffer

    def reset_interactions(self):
        self.calls.append(("reset",))
        self.state[:] = False

    def _done(self, run_prediction):
        if run_prediction:
            self.network(None)
            self.target_buffer[:] = 0
            self.target_buffer[self.state] = 1

    def add_bbox_interaction(self, bbox_coords, include_interaction, run_prediction=True,
                             override_capability_checks=False):
        size = [b - a for a, b in bbox_coords]
        if any(s == 0 for s in size):
            raise ValueError(f"Given bounding box size is zero in at least one dimension: {bbox_coords}")
        if not self.supported_interactions["bbox3d"] and sum(s == 1 for s in size) == 0:
            raise ValueError("3D bounding box not supported by the loaded model checkpoint")
        self.calls.append(("bbox", [list(map(int, b)) for b in bbox_coords], include_interaction, run_prediction))
        self.state[tuple(slice(a, b) for a, b in bbox_coords)] = include_interaction
        self._done(run_prediction)

    def add_point_interaction(self, coordinates, include_interaction, run_prediction=True,
                              override_capability_checks=False):
        self.calls.append(("point", tuple(coordinates), include_interaction, run_prediction))
        self.state[tuple(slice(max(c - 1, 0), c + 2) for c in coordinates)] = include_interaction
        self._done(run_prediction)

    def _mask(self, kind, image, include_interaction, run_prediction):
        assert image.shape == self.state.shape and image.dtype == np.uint8
        self.calls.append((kind, int(image.sum()), include_interaction, run_prediction))
        self.state[image > 0] = include_interaction
        self._done(run_prediction)

    def add_scribble_interaction(self, scribble_image, include_interaction, run_prediction=True,
                                 override_capability_checks=False, interaction_bbox=None):
        self._mask("scribble", scribble_image, include_interaction, run_prediction)

    def add_lasso_interaction(self, lasso_image, include_interaction, run_prediction=True,
                              override_capability_checks=False, interaction_bbox=None):
        self._mask("lasso", lasso_image, include_interaction, run_prediction)

    def add_initial_seg_interaction(self, initial_seg, run_prediction=False, override_capability_checks=False):
        assert initial_seg.shape == self.state.shape
        self.calls.append(("initial_seg", int(initial_seg.sum()), run_prediction))
        self.state[:] = initial_seg > 0
        if isinstance(self.target_buffer, np.ndarray):
            self.target_buffer[:] = initial_seg
        else:  # a torch buffer, as the real session handles both
            import torch

            self.target_buffer[:] = torch.from_numpy(initial_seg)
        self._done(run_prediction)


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for var in ("MEDSEGFM_WEIGHTS_DIR", "MEDSEGFM_NNINTERACTIVE_WEIGHTS", "MEDSEGFM_DEVICE"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


@pytest.fixture
def backend():
    pytest.importorskip("torch")
    return N.NNInteractiveBackend(session=FakeSession(), device="cpu")


@pytest.fixture(scope="module")
def ct(shared_data):
    from napari_medsegfm.io import safe_load_npz

    m = safe_load_npz(shared_data / "cvpr25" / "imgs" / "CT_AMOS_amos_0018.npz")
    return Volume(np.ascontiguousarray(np.asarray(m["imgs"])[20:36, 200:264, 260:340]), spacing=(5.0, 0.846, 0.846))


def _weights_folder(root: Path) -> Path:
    d = root / "nnInteractive_v1.0"
    (d / "fold_0").mkdir(parents=True)
    for f in ("plans.json", "dataset.json", "inference_session_class.json"):
        (d / f).write_text("{}")
    (d / "fold_0" / "checkpoint_final.pth").write_bytes(b"0")
    return d


# ---------------------------------------------------------------------------- status
def test_status_and_missing_pieces(env, monkeypatch):
    monkeypatch.setattr(N, "_package_available", lambda: False)
    st = N.NNInteractiveBackend.status()
    assert st.state == "package missing" and "nninteractive" in st.message
    with pytest.raises(BackendUnavailableError, match="nninteractive"):
        N.NNInteractiveBackend(device="cpu")
    monkeypatch.setattr(N, "_package_available", lambda: True)
    st = N.NNInteractiveBackend.status()
    assert st.state == "weights missing" and "checkpoint_final.pth" in st.message
    assert "MEDSEGFM_NNINTERACTIVE_WEIGHTS" in st.message
    d = _weights_folder(env / "cache" / "medsegfm" / "weights" / "nninteractive")
    st = N.NNInteractiveBackend.status()
    assert st.ready and st.weights == str(d)
    for flag in ("BOX3D", "BOX2D", "POINTS", "SCRIBBLE", "LASSO"):
        assert getattr(N.Capability, flag) in st.capabilities
    assert N.Capability.TEXT not in st.capabilities


def test_constructor_builds_the_session_from_the_weights_folder(env, monkeypatch):
    pytest.importorskip("torch")
    d = _weights_folder(env / "w")
    monkeypatch.setattr(N, "_package_available", lambda: True)
    monkeypatch.setattr(N, "_session_class", lambda: FakeSession)
    b = N.NNInteractiveBackend(weights=env / "w", device="cpu", torch_threads=2)
    assert b.session.calls[0] == ("init", str(d), None)
    assert b.session.kwargs["enable_undo"] is False and b.session.kwargs["use_torch_compile"] is False
    assert b.session.kwargs["torch_n_threads"] == 2 and str(b.session.kwargs["device"]) == "cpu"
    assert b.weights_path == str(d)


# --------------------------------------------------------------------- translation
def test_boxes_points_scribbles_lassos_are_translated(backend, ct):
    b, s = backend, backend.session
    b.set_image(ct)
    assert s.calls[-1] == ("set_image", (1, 16, 64, 80), np.float32)
    tok = CancelToken()
    box = Box3D(z_min=4, z_max=10, y_min=10, x_min=20, y_max=30, x_max=50, object_id=1, z_mid=6)
    m = b.predict([box], None, tok)
    assert s.calls[-1] == ("bbox", [[6, 7], [10, 31], [20, 51]], True, True)  # v1.0: 2D box on z_mid
    assert m.shape == ct.spatial_shape and m.dtype == bool
    assert m[6, 10, 20] and m[6, 30, 50] and not m[6, 31, 50] and not m[5, 20, 30]
    s.supported_interactions["bbox3d"] = True
    b.predict([box], None, tok)
    assert s.calls[-1] == ("bbox", [[4, 11], [10, 31], [20, 51]], True, True)
    # clicks keep (z, y, x); only the last interaction predicts
    pts = [Point((8, 40, 60), True, object_id=2), Point((9, 41, 61), False, object_id=2)]
    b.predict(pts, None, tok)
    assert s.calls[-3:] == [("reset",), ("point", (8, 40, 60), True, False), ("point", (9, 41, 61), False, True)]
    b.predict([Box2D(5, 6, 15, 16, z=3, object_id=3)], None, tok)
    assert s.calls[-1] == ("bbox", [[3, 4], [5, 16], [6, 17]], True, True)
    stroke = Scribble(np.array([[2, 10, x] for x in range(10, 40)]), positive=False, object_id=4)
    b.predict([stroke], None, tok)
    assert s.calls[-1] == ("scribble", 30, False, True)
    lasso = N.lasso_scribble([(10, 10), (10, 40), (40, 40), (40, 10)], ct.spatial_shape, z=2, object_id=5)
    assert N.is_lasso(lasso) and not N.is_lasso(stroke)
    m = b.predict([lasso], None, tok)
    assert s.calls[-1] == ("lasso", len(lasso.voxels), True, True)
    assert m[2, 25, 25] and not m[2, 5, 5] and not m[3, 25, 25]
    with pytest.raises(UnsupportedPromptError):
        b.predict([TextPrompt("liver", object_id=6)], None, tok)


def test_incremental_requests_and_rebuilds(backend, ct):
    b, s = backend, backend.session
    b.set_image(ct)
    tok = CancelToken()
    p1 = [Box2D(10, 10, 30, 30, z=5, object_id=1)]
    m1 = b.predict(p1, None, tok)
    p2 = p1 + [Point((5, 35, 35), True, object_id=1)]
    n = len(s.calls)
    m2 = b.predict(p2, m1, tok)  # extends the last request, mask unchanged: only the new click
    assert s.calls[n:] == [("point", (5, 35, 35), True, True)]
    assert m2[5, 35, 35] and m2[5, 20, 20]
    # the user edited the mask: restart from it plus the newest prompt
    edited = m2.copy()
    edited[5, 10:15, 10:15] = False
    p3 = p2 + [Point((5, 12, 12), True, object_id=1)]
    n = len(s.calls)
    b.predict(p3, edited, tok)
    assert s.calls[n:] == [("reset",), ("initial_seg", int(edited.sum()), False), ("point", (5, 12, 12), True, True)]
    # another object: fresh state, every prompt replayed
    n = len(s.calls)
    b.predict([Point((1, 1, 1), True, object_id=2), Point((2, 2, 2), True, object_id=2)], None, tok)
    assert [c[0] for c in s.calls[n:]] == ["reset", "point", "point"]
    # 2D images are one-slice volumes
    b.set_image(Volume(ct.array[3]))
    m = b.predict([Point((20, 30), True, object_id=1)], None, tok)
    assert m.shape == ct.array[3].shape and m[20, 30]
    assert s.calls[-1] == ("point", (0, 20, 30), True, True)


def test_cancellation_inside_a_prediction(backend, ct):
    b, s = backend, backend.session
    b.set_image(ct)
    tok = CancelToken()
    real_net = b._net._net

    def cancelling(x):
        tok.cancel("escape")
        return real_net(x)

    b._net._net = cancelling
    b.predict([Point((3, 3, 3), True, object_id=1)], None, CancelToken())  # another token: runs
    with pytest.raises(Cancelled):
        b.predict([Point((3, 3, 3), True, object_id=1), Point((4, 4, 4), True, object_id=1)], None, tok)
    b._net._net = real_net
    n = len(s.calls)
    b.predict([Point((3, 3, 3), True, object_id=1), Point((4, 4, 4), True, object_id=1)], None, CancelToken())
    assert s.calls[n][0] == "reset"  # the cancelled request left the state stale: rebuilt
    done = CancelToken()
    done.cancel()
    with pytest.raises(Cancelled):
        b.predict([Point((3, 3, 3), True, object_id=1)], None, done)


def test_lasso_rasterization():
    sc = N.lasso_scribble([(0, 0), (0, 9), (9, 0)], (20, 20))  # a triangle on a 2D image
    assert sc.voxels.shape[1] == 2 and 40 <= len(sc.voxels) <= 60
    with pytest.raises(ValueError):
        N.lasso_scribble([(0, 0), (1, 1)], (20, 20))
    with pytest.raises(ValueError, match="slice z"):
        N.lasso_scribble([(0, 0), (0, 9), (9, 0)], (5, 20, 20))


# ------------------------------------------------------------- the real package
def _tiny_checkpoint(folder: Path) -> Path:
    """A loadable nnInteractive checkpoint folder with a tiny random network."""
    import torch
    from nnInteractive.trainer.nnInteractiveTrainer import nnInteractiveTrainer_stub
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    conv = "torch.nn.modules.conv.Conv3d"
    plans = {
        "dataset_name": "Dataset999_Tiny", "plans_name": "nnUNetPlans", "image_reader_writer": "SimpleITKIO",
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0], "original_median_shape_after_transp": [32, 32, 32],
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2], "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": {"mean": 0.0, "std": 1.0, "max": 1.0, "min": 0.0,
                                                              "median": 0.0, "percentile_00_5": 0.0,
                                                              "percentile_99_5": 1.0}},
        "configurations": {"3d_tiny": {
            "data_identifier": "tiny", "preprocessor_name": "DefaultPreprocessor", "batch_size": 1,
            "patch_size": [16, 64, 80], "median_image_size_in_voxels": [16, 64, 80], "spacing": [1.0, 1.0, 1.0],
            "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False],
            "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {}, "resampling_fn_seg_kwargs": {}, "resampling_fn_probabilities_kwargs": {},
            "batch_dice": False,
            "architecture": {
                "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                "arch_kwargs": {"n_stages": 3, "features_per_stage": [4, 8, 16], "conv_op": conv,
                                "kernel_sizes": [[3, 3, 3]] * 3, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
                                "n_conv_per_stage": [1, 1, 1], "n_conv_per_stage_decoder": [1, 1], "conv_bias": True,
                                "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                                "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None,
                                "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
                                "nonlin_kwargs": {"inplace": True}},
                "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}}},
    }
    dataset = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "object": 1}, "numTraining": 1,
               "file_ending": ".nii.gz"}
    d = folder / "nnInteractive_v1.0"
    (d / "fold_0").mkdir(parents=True)
    (d / "plans.json").write_text(json.dumps(plans))
    (d / "dataset.json").write_text(json.dumps(dataset))
    (d / "inference_session_class.json").write_text(json.dumps({"point_radius": 2, "interaction_decay": 0.9}))
    pm = PlansManager(plans)
    torch.manual_seed(0)
    net = nnInteractiveTrainer_stub.build_network_architecture(pm, pm.get_configuration("3d_tiny"), 1 + 7, 2,
                                                               enable_deep_supervision=False)
    torch.save({"trainer_name": "nnInteractiveTrainer_stub", "init_args": {"configuration": "3d_tiny"},
                "network_weights": net.state_dict()}, d / "fold_0" / "checkpoint_final.pth")
    return d


def test_real_package_with_a_tiny_checkpoint(env, ct, monkeypatch):
    pytest.importorskip("nnInteractive.inference.inference_session",
                        reason="nninteractive is not installable beside the pinned torch (see module docstring)")
    d = _tiny_checkpoint(env / "nni")
    monkeypatch.setenv("MEDSEGFM_NNINTERACTIVE_WEIGHTS", str(env / "nni"))
    assert N.NNInteractiveBackend.status().ready
    b = N.NNInteractiveBackend(device="cpu", torch_threads=2, do_autozoom=False)
    assert b.weights_path == str(d) and not b.bbox3d_supported
    b.set_image(ct)
    tok = CancelToken()
    box = Box3D(z_min=4, z_max=10, y_min=10, x_min=20, y_max=30, x_max=50, object_id=1, z_mid=6)
    m = b.predict([box], None, tok)
    assert m.shape == ct.spatial_shape and m.dtype == bool
    m2 = b.predict([box, Point((6, 20, 35), True, object_id=1)], m, tok)
    assert m2.shape == ct.spatial_shape
    lasso = N.lasso_scribble([(10, 10), (10, 40), (40, 40), (40, 10)], ct.spatial_shape, z=6, object_id=2)
    stroke = Scribble(np.array([[6, 50, x] for x in range(10, 40)]), positive=False, object_id=2)
    m3 = b.predict([lasso, stroke], None, tok)
    assert m3.shape == ct.spatial_shape
    tok2 = CancelToken()
    tok2.cancel()
    with pytest.raises(Cancelled):
        b.predict([Point((6, 20, 35), True, object_id=3)], None, tok2)

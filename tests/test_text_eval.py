"""Instance splitting and text-task scoring (tasks/text_eval.py), text mode of predict_case."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from napari_medsegfm.io import safe_load_npz
from napari_medsegfm.tasks.text_eval import (
    evaluate_text,
    format_text_table,
    instance_f1,
    instances_to_labels,
    match_instances,
    relabel_sequential,
    score_text_case,
    split_instances,
    summarize_text,
    text_masks_to_segs,
)


@pytest.fixture(scope="module")
def amos(shared_data):
    img = safe_load_npz(shared_data / "cvpr25" / "imgs" / "CT_AMOS_amos_0018.npz")
    gt = safe_load_npz(shared_data / "cvpr25" / "gts" / "CT_AMOS_amos_0018.npz")
    return img, gt


@pytest.fixture(scope="module")
def nuclei(shared_data):
    gt = safe_load_npz(shared_data / "cvpr25" / "gts" / "Microscopy_SELMA3D_patchvolume_nuclei_004.npz")
    return np.asarray(gt["gts"])[:60, :100, :100]


# -------------------------------------------------------------------------- splitting
def test_split_instances_connectivity_order_and_size_filter():
    m = np.zeros((6, 8, 8), bool)
    m[0:2, 0:2, 0:2] = True  # 8 voxels
    m[2:3, 2:3, 2:3] = True  # touches the first only at a corner
    m[4:6, 4:8, 4:8] = True  # 32 voxels, separate
    lab26, n26 = split_instances(m)
    lab6, n6 = split_instances(m, connectivity=6)
    assert (n26, n6) == (2, 3)
    assert lab6.dtype == np.uint8 and np.count_nonzero(lab6 == 1) == 32  # largest first
    assert np.count_nonzero(lab6 == 3) == 1
    lab, n = split_instances(m, connectivity=6, min_voxels=2)
    assert n == 2 and set(np.unique(lab)) == {0, 1, 2}
    assert split_instances(np.zeros((3, 3, 3)))[1] == 0
    lab2d, n2d = split_instances(np.eye(4, dtype=bool))  # diagonal: one 8-connected piece, four 4-connected
    assert n2d == 1 and split_instances(np.eye(4, dtype=bool), connectivity=4)[1] == 4
    with pytest.raises(ValueError):
        split_instances(m, connectivity=5)


def test_instances_to_labels_and_text_masks_to_segs():
    labels = np.zeros((4, 4, 4), np.uint8)
    labels[0] = 7
    inst = np.zeros_like(labels)
    inst[0, 0, 0] = 1  # lands on label 7: kept unless overwrite
    inst[3, 3, 3] = 2
    assert instances_to_labels(inst, labels, 10) == [10, 11]
    assert labels[0, 0, 0] == 7 and labels[3, 3, 3] == 11
    with pytest.raises(ValueError, match="do not fit"):
        instances_to_labels(inst, labels, 255)
    sem = np.zeros((4, 8, 8), bool)
    sem[:, :4] = True
    les = np.zeros((4, 8, 8), bool)
    les[0, 6, 6] = les[3, 6, 0] = True
    segs = text_masks_to_segs({1: sem, 2: les}, [2], (4, 8, 8))
    assert set(np.unique(segs)) == {0, 1, 2, 3}  # semantic 1; the two lesions 2 and 3
    only = text_masks_to_segs({1: les}, [1], (4, 8, 8))
    assert set(np.unique(only)) == {0, 1, 2}


# --------------------------------------------------------------------------- matching
def _brute_force_tp(gt, pred, thr):
    g, ng = relabel_sequential(gt)
    p, npred = relabel_sequential(pred)
    iou = np.zeros((ng, npred))
    for i in range(ng):
        for j in range(npred):
            a, b = g == i + 1, p == j + 1
            iou[i, j] = np.count_nonzero(a & b) / np.count_nonzero(a | b)
    best = 0
    for perm in itertools.permutations(range(max(ng, npred)), ng) if ng <= npred else \
            itertools.permutations(range(ng), npred):
        if ng <= npred:
            pairs = [(i, perm[i]) for i in range(ng)]
        else:
            pairs = [(perm[j], j) for j in range(npred)]
        best = max(best, sum(iou[i, j] >= thr for i, j in pairs))
    return best


def test_matching_is_one_to_one_and_optimal():
    rng = np.random.default_rng(3)
    for _ in range(12):
        gt = np.zeros((3, 12, 12), np.uint8)
        pred = np.zeros_like(gt)
        for k in range(1, 5):
            z, y, x = rng.integers(0, 3), rng.integers(0, 9), rng.integers(0, 9)
            gt[z, y:y + 3, x:x + 3] = k
            dz, dy, dx = rng.integers(-1, 2, size=3)
            pz, py, px = np.clip([z + dz, y + dy, x + dx], 0, [2, 9, 9])
            pred[pz, py:py + 3, px:px + 3] = k + 10 * rng.integers(0, 2)
        for thr in (0.3, 0.5):
            matches, _, _ = match_instances(gt, pred, thr)
            assert len(matches) == _brute_force_tp(gt, pred, thr)
            assert len({m[0] for m in matches}) == len({m[1] for m in matches}) == len(matches)


def test_instance_f1_cases():
    gt = np.zeros((1, 4, 10), np.uint8)
    gt[0, :, 0:4] = 1  # 16 voxels
    gt[0, :, 6:10] = 2
    assert instance_f1(gt, gt).f1 == 1.0
    # two halves of instance 1: each IoU 0.5 -> only one may match
    pred = np.zeros_like(gt)
    pred[0, :2, 0:4] = 1
    pred[0, 2:, 0:4] = 2
    s = instance_f1(gt, pred)
    assert (s.tp, s.fp, s.fn) == (1, 1, 1) and s.f1 == pytest.approx(0.5)
    # one blob covering both: IoU 16/40 < 0.5 with each
    s = instance_f1(gt, np.ones_like(gt))
    assert s.tp == 0 and s.f1 == 0.0
    # binary prediction: split into components (6-connectivity) before matching
    s = instance_f1(gt, (gt > 0).astype(np.uint8))
    assert s.n_pred == 2 and s.f1 == 1.0
    assert instance_f1(gt, np.zeros_like(gt)).f1 == 0.0
    with pytest.raises(ValueError):
        instance_f1(gt, gt[:, :2])


def test_instance_f1_on_real_nuclei(nuclei):
    s = instance_f1(nuclei, nuclei)
    assert s.f1 == 1.0 and s.n_gt == len(np.unique(nuclei)) - 1
    keep = np.unique(nuclei)[1::2]  # drop every other instance
    half = np.where(np.isin(nuclei, keep), nuclei, 0)
    s = instance_f1(nuclei, half)
    assert s.precision == 1.0 and s.recall == pytest.approx(len(keep) / s.n_gt)


# ---------------------------------------------------------------------------- scoring
def test_semantic_case_scores_on_real_amos(amos):
    img, gt = amos
    g = np.asarray(gt["gts"])[15:35]
    r = score_text_case(g, g, img["text_prompts"], gt["spacing"], name="amos")
    assert not r.instance and r.labels == list(range(1, 16))
    assert r.dsc == pytest.approx(1.0) and r.nsd == pytest.approx(1.0)
    seg = g.copy()
    seg[seg == 3] = 0
    r = score_text_case(g, seg, img["text_prompts"], gt["spacing"])
    present = [lab for lab in r.labels if (g == lab).any()]
    assert r.per_class_dsc[3] == 0.0 and r.dsc == pytest.approx((len(present) - 1) / len(present))
    with pytest.raises(ValueError, match="shape"):
        score_text_case(g, seg[:-1], img["text_prompts"], gt["spacing"])


def test_evaluate_text_folder(tmp_path, amos, nuclei):
    img, gt = amos
    for d in ("imgs", "gts", "segs"):
        (tmp_path / d).mkdir()
    g = np.asarray(gt["gts"])[15:35, 100:400, 100:400]
    tp_sem = np.array(img["text_prompts"], dtype=object)
    np.savez(tmp_path / "imgs" / "CT_AMOS_x.npz", imgs=np.zeros(g.shape, np.uint8), spacing=gt["spacing"],
             text_prompts=tp_sem, allow_pickle=True)
    np.savez(tmp_path / "gts" / "CT_AMOS_x.npz", gts=g, spacing=gt["spacing"])
    np.savez(tmp_path / "segs" / "CT_AMOS_x.npz", segs=g)
    tp_inst = np.array({"1": "Nucleus", "instance_label": 1}, dtype=object)
    np.savez(tmp_path / "imgs" / "Micro_y.npz", imgs=np.zeros(nuclei.shape, np.uint8), spacing=np.ones(3),
             text_prompts=tp_inst, allow_pickle=True)
    np.savez(tmp_path / "gts" / "Micro_y.npz", gts=nuclei, spacing=np.ones(3))
    np.savez(tmp_path / "segs" / "Micro_y.npz", segs=nuclei)
    np.savez(tmp_path / "imgs" / "Micro_z.npz", imgs=np.zeros(nuclei.shape, np.uint8), spacing=np.ones(3),
             text_prompts=tp_inst, allow_pickle=True)
    np.savez(tmp_path / "gts" / "Micro_z.npz", gts=nuclei, spacing=np.ones(3))  # no prediction
    res = evaluate_text(tmp_path / "segs", tmp_path / "gts", tmp_path / "imgs")
    by = {r.name: r for r in res}
    assert by["CT_AMOS_x"].dsc == pytest.approx(1.0) and by["Micro_y"].f1 == 1.0
    assert by["Micro_z"].f1 == 0.0 and "no prediction" in by["Micro_z"].error
    s = summarize_text(res)
    assert s["semantic_cases"] == 1 and s["instance_cases"] == 2 and s["F1"] == pytest.approx(0.5)
    table = format_text_table(res, "text task")
    assert "| Micro_y | instance |" in table and "**mean**" in table
    with pytest.raises(FileNotFoundError):
        evaluate_text(tmp_path / "segs", tmp_path / "nope", tmp_path / "imgs")


# --------------------------------------------------------------- predict_case, text mode
class _TextOracle:
    """A TEXT backend answering with ground truth, resolving text through the attached vocabulary."""

    name = "text-oracle"
    label_space = "vista3d"

    def __init__(self, masks_by_vista_id):
        from napari_medsegfm.types import Capability

        self.capabilities = Capability.TEXT
        self.text_resolver = None
        self.masks = masks_by_vista_id
        self.asked = []

    def set_image(self, volume):
        self.shape = volume.spatial_shape

    def predict(self, prompts, prev_mask, cancel):
        idx = self.text_resolver(prompts[-1].text)
        self.asked.append(idx)
        return self.masks.get(idx, np.zeros(self.shape, bool))

    def reset(self):
        pass


def test_predict_case_text_semantic_and_instances(amos, nuclei):
    from napari_medsegfm.tasks.predict import predict_case

    img, gt = amos
    g = np.asarray(gt["gts"])[15:35, 150:350, 150:350]
    # AMOS label -> VISTA3D class index, as the vocabulary resolves the case's sentences
    amos_to_vista = {1: 3, 2: 5, 3: 14, 6: 1}
    backend = _TextOracle({v: g == k for k, v in amos_to_vista.items()})
    tp = {str(k): img["text_prompts"][str(k)] for k in amos_to_vista}
    tp["instance_label"] = 0
    inputs = {"imgs": np.zeros(g.shape, np.uint8), "spacing": gt["spacing"], "text_prompts": tp}
    segs = predict_case(inputs, backend)
    assert backend.text_resolver is not None  # the vocabulary was attached
    assert sorted(backend.asked) == sorted(amos_to_vista.values())
    for k in amos_to_vista:
        assert np.array_equal(segs == k, g == k)
    # instance class: the backend returns one binary mask; predict writes one label per component
    binary = nuclei > 0
    backend = _TextOracle({128: binary})  # "bone lesion" stands in for any lesion class id
    inputs = {"imgs": np.zeros(nuclei.shape, np.uint8), "spacing": np.ones(3),
              "text_prompts": {"1": "bone lesions", "instance_label": 1}}
    segs = predict_case(inputs, backend)
    lab, n = split_instances(binary)
    assert segs.max() == n > 1 and np.array_equal(segs > 0, binary)
    assert instance_f1(lab, segs).f1 == 1.0


def test_predict_case_text_needs_a_text_backend(amos):
    from napari_medsegfm.backends.base import UnsupportedPromptError
    from napari_medsegfm.backends.boxfill import BoxFillBackend
    from napari_medsegfm.tasks.predict import predict_case

    img, gt = amos
    inputs = {"imgs": np.zeros((4, 8, 8), np.uint8), "spacing": gt["spacing"],
              "text_prompts": {"1": "liver", "instance_label": 0}}
    with pytest.raises(UnsupportedPromptError, match="text"):
        predict_case(inputs, BoxFillBackend())

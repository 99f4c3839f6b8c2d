"""`medsegfm predict` on text-task input and `medsegfm evaluate --task text` (real CVPR25 crops)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_medsegfm.backends.registry import register_backend, unregister_backend
from napari_medsegfm.cli import main
from napari_medsegfm.io import safe_load_npz
from napari_medsegfm.types import Capability

AMOS_LABELS = (1, 2, 3, 6)  # spleen, right kidney, left kidney, liver


class TextOracle:
    """A TEXT backend that answers from ground truth (keyed by the image it is given)."""

    name = "text-oracle"
    capabilities = Capability.TEXT
    truth: dict[bytes, tuple[np.ndarray, dict[str, int]]] = {}

    def __init__(self, device=None):
        self.device = device or "cpu"

    def set_image(self, volume):
        self.key = np.ascontiguousarray(volume.array).tobytes()[:4096]

    def predict(self, prompts, prev_mask, cancel):
        gts, by_text = self.truth[self.key]
        text = prompts[-1].text
        if prompts[-1].instance:
            return gts > 0  # one binary mask: predict_case splits it into instances
        return gts == by_text[text]

    def reset(self):
        pass


@pytest.fixture
def cases(tmp_path, shared_data):
    root = tmp_path / "cases"
    (root / "imgs").mkdir(parents=True)
    (root / "gts").mkdir()
    img = safe_load_npz(shared_data / "cvpr25" / "imgs" / "CT_AMOS_amos_0018.npz")
    gt = safe_load_npz(shared_data / "cvpr25" / "gts" / "CT_AMOS_amos_0018.npz")
    sl = (slice(15, 35), slice(150, 350), slice(150, 350))
    im, g = np.ascontiguousarray(img["imgs"][sl]), np.ascontiguousarray(gt["gts"][sl])
    g = np.where(np.isin(g, AMOS_LABELS), g, 0).astype(np.uint8)
    tp = {str(k): img["text_prompts"][str(k)] for k in AMOS_LABELS}
    tp["instance_label"] = 0
    boxes = np.array([{"z_min": 0, "z_max": 3, "z_mid": 1, "z_mid_x_min": 0, "z_mid_y_min": 0, "z_mid_x_max": 5,
                       "z_mid_y_max": 5}], dtype=object)  # the text task must ignore boxes
    np.savez(root / "imgs" / "CT_AMOS_t.npz", imgs=im, spacing=gt["spacing"], boxes=boxes,
             text_prompts=np.array(tp, dtype=object))
    np.savez(root / "gts" / "CT_AMOS_t.npz", gts=g, spacing=gt["spacing"])
    nimg = safe_load_npz(shared_data / "cvpr25" / "imgs" / "Microscopy_SELMA3D_patchvolume_nuclei_004.npz")
    ngt = safe_load_npz(shared_data / "cvpr25" / "gts" / "Microscopy_SELMA3D_patchvolume_nuclei_004.npz")
    nsl = (slice(0, 40), slice(0, 80), slice(0, 80))
    nim, ng = np.ascontiguousarray(nimg["imgs"][nsl]), np.ascontiguousarray(ngt["gts"][nsl])
    np.savez(root / "imgs" / "Micro_nuclei_t.npz", imgs=nim, spacing=np.ones(3),
             text_prompts=np.array({"1": "Light-sheet Microscopy imaging of Nucleus in brain", "instance_label": 1},
                                   dtype=object))
    np.savez(root / "gts" / "Micro_nuclei_t.npz", gts=ng, spacing=np.ones(3))
    TextOracle.truth = {
        im.tobytes()[:4096]: (g, {v: int(k) for k, v in tp.items() if k != "instance_label"}),
        nim.tobytes()[:4096]: (ng, {}),
    }
    register_backend("text-oracle", TextOracle)
    yield root
    unregister_backend("text-oracle")


def test_predict_text_input_needs_a_text_backend(cases, tmp_path, capsys):
    members = safe_load_npz(cases / "imgs" / "CT_AMOS_t.npz")
    src = tmp_path / "CT_AMOS_textonly.npz"  # the CVPR25 text-task input: imgs, spacing, text_prompts
    np.savez(src, imgs=members["imgs"], spacing=members["spacing"],
             text_prompts=np.array(members["text_prompts"], dtype=object))
    assert main(["predict", "-i", str(src), "-o", str(tmp_path / "out.npz"), "-b", "boxfill"]) == 3
    err = capsys.readouterr().err
    assert "text" in err and "TEXT" in err and "boxfill" in err
    assert main(["predict", "-i", str(src), "-o", str(tmp_path / "out.npz"), "-b", "text-oracle"]) == 0
    segs = safe_load_npz(tmp_path / "out.npz")["segs"]
    g = safe_load_npz(cases / "gts" / "CT_AMOS_t.npz")["gts"]
    assert segs.dtype == np.uint8 and np.array_equal(segs, g)


def test_evaluate_text_task_predicts_and_scores(cases, tmp_path, capsys):
    out_csv = tmp_path / "text.csv"
    code = main(["evaluate", "--task", "text", "--cases", str(cases), "-b", "text-oracle",
                 "--save-segs", str(tmp_path / "segs"), "--csv", str(out_csv), "--json"])
    assert code == 0
    d = json.loads(capsys.readouterr().out)
    by = {c["name"]: c for c in d["cases"]}
    assert by["CT_AMOS_t"]["dsc"] == pytest.approx(1.0) and by["CT_AMOS_t"]["nsd"] == pytest.approx(1.0)
    micro = by["Micro_nuclei_t"]
    assert micro["instance"] and 0 < micro["f1"] <= 1.0 and micro["instance_score"]["tp"] > 5
    segs = safe_load_npz(tmp_path / "segs" / "Micro_nuclei_t.npz")["segs"]
    assert segs.max() > 10  # one label per component, not a binary mask
    rows = out_csv.read_text().splitlines()
    assert rows[0].startswith("case,kind") and len(rows) == 3
    # scoring existing predictions; the boxfill backend cannot do the task
    assert main(["evaluate", "--task", "text", "--cases", str(cases), "--segs", str(tmp_path / "segs")]) == 0
    table = capsys.readouterr().out
    assert "| CT_AMOS_t | semantic | 4 | 1.0000 | 1.0000 |" in table
    assert main(["evaluate", "--task", "text", "--cases", str(cases), "-b", "boxfill"]) == 3
    assert "cannot serve text prompts" in capsys.readouterr().err
    assert main(["evaluate", "--task", "text", "--cases", str(cases / "nope")]) == 2

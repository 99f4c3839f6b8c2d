"""tasks.evaluation: the CVPR 2025 interactive protocol end to end, on small real crops."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from _eval_cases import amos_crop, amos_full, write_case

from napari_medsegfm.backends.boxfill import BoxFillBackend
from napari_medsegfm.tasks import evaluation as ev
from napari_medsegfm.tasks import metrics as M


@pytest.fixture(scope="module")
def cases_dir(tmp_path_factory, shared_data):
    imgs, gts, spacing = amos_crop(str(shared_data))
    root = tmp_path_factory.mktemp("cases")
    boxes = ev.synthesize_boxes(gts, [1, 2], seed=1)
    write_case(root, "CT_crop_box", imgs, gts, spacing, boxes=boxes,
               text={"1": "spleen", "2": "left kidney", "instance_label": 0})
    write_case(root, "MR_brats_like_nobox", imgs, gts, spacing, text={"1": "a", "2": "b", "instance_label": 0})
    return root


def test_synthesized_boxes_follow_the_challenge_rule(shared_data):
    imgs, gts, spacing, boxes = amos_full(str(shared_data))
    labels = list(range(1, 16))
    mine = ev.synthesize_boxes(gts, labels, seed=0)
    for a, b in zip(mine, boxes):
        assert (a["z_min"], a["z_max"], a["z_mid"]) == (b["z_min"], b["z_max"], b["z_mid"])
        for k in ("z_mid_x_min", "z_mid_y_min"):
            assert 0 <= b[k] - a[k] + 10 <= 20  # both within the 0..10 px growth of the tight box
        for k in ("z_mid_x_max", "z_mid_y_max"):
            assert 0 <= a[k] - b[k] + 10 <= 20


def test_find_cases_layouts(cases_dir, shared_data, tmp_path):
    cs = ev.find_cases(cases_dir)
    assert [c.name for c in cs] == ["CT_crop_box", "MR_brats_like_nobox"]
    assert all(c.gt_path == cases_dir / "gts" / f"{c.name}.npz" for c in cs)
    one = ev.find_cases(cases_dir / "imgs" / "CT_crop_box.npz")
    assert one[0].gt_path == cases_dir / "gts" / "CT_crop_box.npz"
    inside = ev.find_cases(shared_data / "medsam2_recist")
    assert len(inside) == 2 and all(c.gt_path is None for c in inside)
    with pytest.raises(FileNotFoundError):
        ev.find_cases(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="no .npz"):
        ev.find_cases(tmp_path)


def test_protocol_steps_inputs_and_scores(cases_dir, monkeypatch):
    """Six steps; each step's input members are exactly the challenge's; the AUC is the trapezoid."""
    seen: list[dict] = []
    real = ev.predict_case

    def spy(inputs, backend, **kw):
        seen.append({k: inputs[k] for k in inputs})
        return real(inputs, backend, **kw)

    monkeypatch.setattr(ev, "predict_case", spy)
    case = ev.find_cases(cases_dir)[0]
    res, segs = ev.run_case(case, BoxFillBackend(), keep_segs=True)
    assert len(seen) == 6 and len(res.dsc) == 6 and len(res.nsd) == 6 and len(segs) == 6
    assert set(seen[0]) == {"imgs", "spacing", "boxes", "text_prompts"}  # the case file minus gts
    for step in seen[1:]:
        assert set(step) == {"imgs", "spacing", "boxes", "clicks", "clicks_order", "prev_pred"}
    assert np.array_equal(seen[2]["prev_pred"], segs[1])
    # one click per class per step, recorded in order
    assert [len(o) for o in res.clicks_order] == [5, 5]
    assert res.dsc_auc == pytest.approx(M.auc(res.dsc)) and res.dsc_final == res.dsc[-1]
    _, gts = ev.load_case_arrays(case)
    assert res.dsc[3] == pytest.approx(M.multi_class_dsc(gts, segs[3]))
    assert res.box_source == "file" and res.n_classes == 2
    row = res.row()
    assert {"DSC_AUC", "NSD_AUC", "DSC_Final", "NSD_Final", "RunningTime_6", "NSDphys_1"} <= set(row)


def test_boxless_case_skips_step_zero_and_starts_from_clicks(cases_dir, monkeypatch):
    seen: list[set] = []
    real = ev.predict_case
    monkeypatch.setattr(ev, "predict_case", lambda i, b, **kw: (seen.append(set(i)), real(i, b, **kw))[1])
    case = ev.find_cases(cases_dir)[1]
    res, _ = ev.run_case(case, BoxFillBackend(), n_clicks=2)
    assert res.box_source == "none"
    assert res.dsc[0] == 0.0 and res.nsd[0] == 0.0 and res.seconds[0] == 0.0
    assert len(seen) == 2 and all("boxes" not in s for s in seen)
    assert all(o[0] == "fg" for o in res.clicks_order)  # first click at the object's centre
    assert res.dsc[1] > 0.0


def test_evaluate_report_and_csv(cases_dir, tmp_path):
    results = ev.evaluate(ev.find_cases(cases_dir), BoxFillBackend(), n_clicks=2)
    assert [r.error for r in results] == ["", ""]
    s = ev.summarize(results)
    assert s["n_cases"] == 2 and 0 <= s["DSC_Final"] <= 1
    table = ev.format_table(results)
    assert "MEAN" in table and "CT_crop_box" in table
    out = ev.write_csv(results, tmp_path / "r.csv")
    rows = list(csv.DictReader(open(out)))
    assert [r["case"] for r in rows] == ["CT_crop_box", "MR_brats_like_nobox", "MEAN"]
    assert float(rows[0]["DSC_Final"]) == pytest.approx(results[0].dsc_final)


def test_a_failing_case_is_reported_not_fatal(cases_dir, tmp_path):
    import shutil

    bad = tmp_path / "set"
    shutil.copytree(cases_dir, bad)
    (bad / "imgs" / "CT_crop_box.npz").write_bytes(b"not a zip")
    results = ev.evaluate(ev.find_cases(bad), BoxFillBackend(), n_clicks=1)
    assert results[0].error and not results[1].error
    assert ev.summarize(results)["n_failed"] == 1

"""``medsegfm predict``, ``evaluate`` and ``backends`` through napari_medsegfm.cli.main (and one subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _eval_cases import amos_crop, write_case

from napari_medsegfm.cli import main
from napari_medsegfm.tasks.evaluation import synthesize_boxes


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory, shared_data):
    imgs, gts, spacing = amos_crop(str(shared_data))
    root = tmp_path_factory.mktemp("cli")
    write_case(root, "CT_crop", imgs, gts, spacing, boxes=synthesize_boxes(gts, [1, 2], seed=2),
               text={"1": "spleen", "2": "left kidney", "instance_label": 0})
    write_case(root / "textonly", "MR_text", imgs[:4], gts[:4], spacing, text={"1": "spleen", "instance_label": 0})
    return root


def test_backends_json_and_table(capsys):
    assert main(["backends", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    names = {b["name"]: b for b in out["backends"]}
    assert names["classic"]["state"] == "ready" and "POINTS" in names["classic"]["capabilities"]
    assert out["device"] in out["available_devices"] or out["device"] == "cuda"
    assert main(["backends"]) == 0
    text = capsys.readouterr().out
    assert "classic" in text and "boxfill" in text and "Device:" in text


def test_predict_file_and_folder(case_dir, tmp_path):
    src = case_dir / "imgs" / "CT_crop.npz"
    assert main(["predict", "-i", str(src), "-o", str(tmp_path / "out"), "--backend", "classic", "--device", "cpu"]) == 0
    with np.load(tmp_path / "out" / "CT_crop.npz") as f:
        assert f.files == ["segs"]
        segs = f["segs"]
    assert segs.dtype == np.uint8 and segs.shape == (16, 190, 200)
    assert set(np.unique(segs)) == {0, 1, 2}
    assert main(["predict", "-i", str(case_dir / "imgs"), "-o", str(tmp_path / "o2"), "-b", "boxfill",
                 "--no-progress"]) == 0
    assert (tmp_path / "o2" / "CT_crop.npz").is_file()
    # a one-file run may name the output file
    assert main(["predict", "-i", str(src), "-o", str(tmp_path / "named.npz"), "-b", "boxfill"]) == 0
    assert (tmp_path / "named.npz").is_file()


def test_predict_errors_have_exit_codes(case_dir, tmp_path, capsys):
    assert main(["predict", "-i", str(tmp_path / "missing.npz"), "-o", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 truncated")
    assert main(["predict", "-i", str(bad), "-o", str(tmp_path / "o")]) == 2
    assert "bad.npz" in capsys.readouterr().err
    assert main(["predict", "-i", str(case_dir / "imgs"), "-o", str(tmp_path / "o"), "-b", "nope"]) == 2
    assert "known backends" in capsys.readouterr().err
    rc = main(["predict", "-i", str(case_dir / "textonly" / "imgs" / "MR_text.npz"), "-o", str(tmp_path / "o"),
               "-b", "classic"])
    assert rc == 3
    assert "cannot serve text prompts" in capsys.readouterr().err
    assert main(["predict", "-i", str(case_dir / "imgs"), "-o", str(tmp_path / "o"), "--device", "warp"]) == 2


def test_evaluate_table_csv_json(case_dir, tmp_path, capsys):
    csv_path = tmp_path / "m.csv"
    rc = main(["evaluate", "--cases", str(case_dir), "--backend", "boxfill", "--clicks", "2", "--csv", str(csv_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "CT_crop" in out and "MEAN" in out and "DSC_AUC" in out
    assert csv_path.read_text().splitlines()[0].startswith("case,")
    assert main(["evaluate", "--cases", str(case_dir), "-b", "boxfill", "--clicks", "1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["backend"] == "boxfill" and data["cases"][0]["case"] == "CT_crop"
    assert 0 <= data["mean"]["DSC_Final"] <= 1
    assert main(["evaluate", "--cases", str(tmp_path / "none")]) == 2


def test_console_script_subprocess(case_dir, tmp_path):
    exe = Path(sys.executable).with_name("medsegfm")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "napari_medsegfm.cli"]
    proc = subprocess.run(cmd + ["predict", "-i", str(case_dir / "imgs" / "CT_crop.npz"), "-o", str(tmp_path),
                                 "-b", "boxfill"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "CT_crop.npz").is_file()
    proc = subprocess.run(cmd + ["predict", "-i", str(tmp_path / "nope.npz"), "-o", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def test_predict_a_challenge_click_step_file(case_dir, tmp_path):
    """A click-step input saved the way the challenge's evaluator saves it (np.savez of lists)."""
    from napari_medsegfm.io import safe_load_npz

    src = safe_load_npz(case_dir / "imgs" / "CT_crop.npz")
    gts = safe_load_npz(case_dir / "gts" / "CT_crop.npz")["gts"]
    prev = np.zeros_like(gts)
    prev[gts == 1] = 1  # class 2 missing entirely
    z, y, x = (int(np.median(v)) for v in np.nonzero(gts == 2))
    clicks = [{"fg": [], "bg": []}, {"fg": [[np.int64(z), np.int64(y), np.int64(x)]], "bg": []}]
    order = [[], ["fg"]]
    step = tmp_path / "in" / "CT_crop.npz"
    step.parent.mkdir()
    arr_order = np.empty(2, dtype=object)
    arr_order[0], arr_order[1] = order
    np.savez_compressed(step, imgs=src["imgs"], spacing=src["spacing"], clicks=clicks, clicks_order=arr_order,
                        prev_pred=prev, boxes=src["boxes"])
    assert main(["predict", "-i", str(step.parent), "-o", str(tmp_path / "out"), "-b", "classic"]) == 0
    segs = np.load(tmp_path / "out" / "CT_crop.npz")["segs"]
    assert (segs[prev == 1] == 1).all()  # the object without a click is kept
    assert segs[z, y, x] == 2 and np.count_nonzero(segs == 2) > 50

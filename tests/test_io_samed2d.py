"""SA-Med2D-20M layout built from the real SAM-Med2D demo PNGs and the TotalSegmentator CT."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from napari_medsegfm.io import (
    GroundTruthProtected,
    detect_format,
    list_cases,
    load_case,
    save_labels,
)
from napari_medsegfm.io import fixtures as fx
from napari_medsegfm.io.layers import case_to_layers
from napari_medsegfm.io.samed2d import parse_image_stem, parse_mask_stem

S0619 = "ct_00--TotalSegmentator--s0619--z_0032"
VOLCASE = "ct_00--TotalSegCT--example_ct"


@pytest.fixture()
def sa(shared_data, tmp_path):
    return fx.make_samed2d(shared_data, tmp_path / "SAMed2D")


def test_names():
    assert parse_image_stem("mr_t1--BraTS2021--BraTS2021_00218--z_0141") == {
        "modality": "mr_t1", "dataset": "BraTS2021", "ori": "BraTS2021_00218", "axis": "z", "index": 141,
        "case": "mr_t1--BraTS2021--BraTS2021_00218"}
    assert parse_image_stem("x_ray--covid_19_ct_cxr--16660_5_1--2d_none")["index"] is None
    assert parse_mask_stem("ct_00--CAD_PE--001--x_0125--0000_002") == ("ct_00--CAD_PE--001--x_0125", 0, 2)
    assert parse_image_stem("amos_0004_75") is None and parse_mask_stem("amos_0004_75_liver_000") is None


def test_slice_with_instances(sa, shared_data):
    root = sa["root"]
    img = root / "images" / f"{S0619}.png"
    assert detect_format(img) == "samed2d"
    case = load_case(img)
    demo = shared_data / "sammed2d_demo/data_demo"
    ref = np.asarray(Image.open(demo / "images/s0619_32.png"))
    assert case.image.array.shape == (155, 225) and np.array_equal(case.image.array, ref[..., 0])
    names = case.label_names
    assert sorted(names.values()) == sorted(["colon", "femur_right", "gluteus_maximus_left", "gluteus_maximus_right",
                                             "hip_left 0", "hip_left 1", "hip_right 0", "hip_right 1"])
    lab = case.labels["gts"]
    for name, demo_mask in (("hip_left 1", "s0619_32_hip_left_001.png"), ("colon", "s0619_32_colon_000.png")):
        label = next(k for k, v in names.items() if v == name)
        m = np.asarray(Image.open(demo / "masks" / demo_mask)) > 0
        assert np.array_equal(lab == label, m)
    # opening one of its masks opens the same slice
    mask = next((root / "masks").glob(f"{S0619}--*.png"))
    assert np.array_equal(load_case(mask).labels["gts"], lab)
    kw = next(kw for _d, kw, t in case_to_layers(case) if t == "labels")
    assert kw["features"]["index"][0] == 0 and "hip_left 1" in kw["features"]["name"]


def test_restack_case(sa):
    root = sa["root"]
    assert detect_format(root) == "samed2d"
    assert VOLCASE in [r.case_id for r in list_cases(root)]
    case = load_case(root, case_id=VOLCASE)
    assert case.image.array.shape == sa["volume"].shape == (6, 101, 122)
    assert np.array_equal(case.image.array, sa["volume"])
    assert np.array_equal(case.labels["gts"], sa["volume_labels"])
    assert case.meta["slice_indices"] == list(range(10, 16))
    assert set(case.label_names.values()) == {"liver", "spleen", "kidney_right"}
    # dropping a slice: compact stacking vs. true positions
    (root / "images" / f"{VOLCASE}--z_0012.png").unlink()
    compact = load_case(root, case_id=VOLCASE)
    gapped = load_case(root, case_id=VOLCASE, fill_gaps=True)
    assert compact.image.array.shape[0] == 5 and gapped.image.array.shape[0] == 6
    assert not gapped.image.array[2].any() and np.array_equal(gapped.image.array[3], sa["volume"][3])


def test_masks_roundtrip(sa, tmp_path):
    root = sa["root"]
    case = load_case(root / "images" / f"{S0619}.png")
    out = tmp_path / "masks_out"
    written = save_labels(case.labels["gts"], out, case=case, fmt="samed2d")
    assert written == out
    orig = sorted(p.name for p in (root / "masks").glob(f"{S0619}--*.png"))
    assert sorted(p.name for p in out.iterdir()) == orig
    for name in orig:
        a = np.asarray(Image.open(root / "masks" / name)) > 0
        b = np.asarray(Image.open(out / name)) > 0
        assert np.array_equal(a, b), name


def test_overwrite_in_place_and_new_object(sa):
    root = sa["root"]
    case = load_case(root, case_id=VOLCASE)
    lab = case.labels["gts"].copy()
    spleen = next(k for k, v in case.label_names.items() if v == "spleen")
    lab[lab == spleen] = 0  # remove an object
    lab[0, :5, :5] = 9  # a new object, named after a class of the mapping
    with pytest.raises(GroundTruthProtected):
        save_labels(lab, root / "masks", case=case)
    with pytest.raises(ValueError, match="no SA-Med2D class"):
        save_labels(lab, root / "masks", case=case, overwrite_gt=True, label_names={9: "not a class"})
    save_labels(lab, root / "masks", case=case, overwrite_gt=True, label_names={9: "aorta"})
    again = load_case(root, case_id=VOLCASE)
    assert "spleen" not in again.label_names.values() and "aorta" in again.label_names.values()
    aorta = next(k for k, v in again.label_names.items() if v == "aorta")
    assert (again.labels["gts"][0, :5, :5] == aorta).all()
    spleen_id = sa["classes"]["spleen"]
    assert not list((root / "masks").glob(f"{VOLCASE}--*--{spleen_id:04d}_000.png"))
    assert list((root / "masks").glob(f"{VOLCASE}--*--{spleen_id:04d}_000.png.bak"))
    index = json.loads((root / "SAMed2D_v1.json").read_text())
    first = index[f"./images/{VOLCASE}--z_0010.png"]
    assert any(f"--{sa['classes']['aorta']:04d}_000.png" in m for m in first)
    assert not any(f"--{spleen_id:04d}_" in m for m in first)

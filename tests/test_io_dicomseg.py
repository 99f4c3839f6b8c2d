"""DICOM-SEG, Slicer .seg.nrrd and NRRD/MHA label maps on the real dcmqi CT series: write, read back, interoperate."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from _clinical_data import (  # noqa: E402
    DICOM_DIR,
    SEG_DIR,
    copy_real_series,
    oblique_nifti,
    template,
    write_series,
)

from napari_medsegfm.io import GroundTruthProtected, load_case, save_labels  # noqa: E402


@pytest.fixture
def series_with_labels(shared_data):
    """The real 3-slice CT with dcmqi's liver (1) + spine (2) label map as its labels."""
    return load_case(shared_data / DICOM_DIR, labels_file=shared_data / SEG_DIR / "liver_spine_seg.nrrd")


def test_dcmqi_seg_reads_onto_the_series_like_its_nrrd(shared_data):
    case = load_case(shared_data / DICOM_DIR, labels_file=shared_data / SEG_DIR / "liver_SEG.dcm")
    nrrd_liver = load_case(shared_data / SEG_DIR / "liver_seg.nrrd").labels["gts"]
    np.testing.assert_array_equal(case.labels["gts"], nrrd_liver)
    assert int(case.labels["gts"].sum()) > 100000 and case.label_names == {1: "Liver"}
    alone = load_case(shared_data / SEG_DIR / "liver_SEG.dcm")  # on its own geometry: the same grid here
    assert alone.format == "dicom_seg" and alone.meta["labels_only"]
    np.testing.assert_array_equal(alone.labels["gts"], nrrd_liver)


def test_dicom_seg_round_trip_codes_colours_and_references(series_with_labels, tmp_path, shared_data):
    import highdicom as hd
    import pydicom

    case = series_with_labels
    labels = case.labels["gts"].copy()
    labels[1, 100:140, 100:160] = 5  # a third object, label 5: segments are numbered 1..3
    names = {1: "liver", 2: "vertebrae", 5: "left kidney"}
    colors = {1: (220, 120, 60), 2: (240, 240, 200), 5: (40, 160, 250)}
    out = save_labels(labels, tmp_path / "corr.dcm", case=case, label_names=names, colors=colors)
    ds = pydicom.dcmread(str(out))
    assert ds.Modality == "SEG" and ds.SegmentationType == "BINARY"
    src = case.meta["dicom"]
    assert ds.SeriesInstanceUID != src["SeriesInstanceUID"]
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == src["SeriesInstanceUID"]
    assert ds.StudyInstanceUID == src["StudyInstanceUID"] and ds.PatientID == src["PatientID"]
    assert ds.FrameOfReferenceUID == src["FrameOfReferenceUID"]
    seg = hd.seg.segread(str(out))
    assert sorted(u[2] for u in seg.get_source_image_uids()) == sorted(src["sop_instance_uids"])
    descs = {n: seg.get_segment_description(n) for n in seg.get_segment_numbers()}
    assert [d.SegmentLabel for d in descs.values()] == ["liver", "vertebrae", "left kidney"]
    liver, _vert, kidney = descs.values()
    assert liver.SegmentAlgorithmType == "SEMIAUTOMATIC" and liver.SegmentAlgorithmName == "napari-medsegfm"
    assert (liver.SegmentedPropertyCategoryCodeSequence[0].CodeValue,
            liver.SegmentedPropertyTypeCodeSequence[0].CodeValue) == ("91723000", "10200004")  # SCT Liver
    ktype = kidney.SegmentedPropertyTypeCodeSequence[0]
    assert ktype.CodeMeaning == "Kidney" and ktype.SegmentedPropertyTypeModifierCodeSequence[0].CodeMeaning == "Left"
    rgb = hd.color.CIELabColor.from_dicom_value(list(kidney.RecommendedDisplayCIELabValue)).to_rgb()
    assert np.allclose(rgb, colors[5], atol=2)
    # read back onto the series: the same voxels (label = segment number), names, colours
    back = load_case(case.source, labels_file=out)
    expected = labels.copy()
    expected[labels == 5] = 3
    np.testing.assert_array_equal(back.labels["gts"], expected)
    assert back.label_names == {1: "liver", 2: "vertebrae", 3: "left kidney"}
    # through the folder: a SEG beside the series is its 'segs'
    folder = tmp_path / "series"
    copy_real_series(shared_data, folder)
    shutil.copy(out, folder / "corr.dcm")
    np.testing.assert_array_equal(load_case(folder).labels["segs"], expected)


def test_manual_algorithm_and_generic_codes(series_with_labels, tmp_path):
    import highdicom as hd

    out = save_labels(series_with_labels.labels["gts"], tmp_path / "m.dcm", case=series_with_labels,
                      label_names={1: "blob of something", 2: "liver"}, algorithm_type="MANUAL")
    seg = hd.seg.segread(str(out))
    d1, d2 = seg.get_segment_description(1), seg.get_segment_description(2)
    assert d1.SegmentAlgorithmType == "MANUAL" and "SegmentAlgorithmName" not in d1
    assert d1.SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Tissue"  # not invented: generic
    assert d2.SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Liver"


def test_dcmqi_reads_our_seg(series_with_labels, tmp_path, shared_data):
    exe = shutil.which("segimage2itkimage") or str(Path(sys.executable).parent / "segimage2itkimage")
    if not Path(exe).exists():
        pytest.skip("dcmqi (pip install dcmqi) is not installed")
    out = save_labels(series_with_labels.labels["gts"], tmp_path / "s.dcm", case=series_with_labels,
                      label_names={1: "liver", 2: "spine"})
    (tmp_path / "dq").mkdir()
    res = subprocess.run([exe, "--inputDICOM", str(out), "--outputDirectory", str(tmp_path / "dq"),
                          "--outputType", "nrrd"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    import nrrd

    meta = json.loads((tmp_path / "dq" / "meta.json").read_text())
    labels = [a[0]["SegmentLabel"] for a in meta["segmentAttributes"]]
    assert labels == ["liver", "spine"]
    for i, name in ((1, "liver"), (2, "spine")):
        got, _ = nrrd.read(str(tmp_path / "dq" / f"{i}.nrrd"))
        ref, _ = nrrd.read(str(shared_data / SEG_DIR / f"{name}_seg.nrrd"))
        np.testing.assert_array_equal(got > 0, ref > 0)  # dcmqi's own label maps, voxel for voxel


def test_seg_never_replaces_an_image_or_a_foreign_seg(series_with_labels, tmp_path, shared_data):
    folder = tmp_path / "s"
    copy_real_series(shared_data, folder)
    case = load_case(folder, labels_file=shared_data / SEG_DIR / "liver_spine_seg.nrrd")
    before = (folder / "01.dcm").read_bytes()
    with pytest.raises(ValueError, match="never replaces an original image"):
        save_labels(case.labels["gts"], folder / "01.dcm", case=case)
    assert (folder / "01.dcm").read_bytes() == before
    foreign = tmp_path / "foreign.dcm"
    shutil.copyfile(shared_data / SEG_DIR / "liver_SEG.dcm", foreign)  # writable, like a real file
    with pytest.raises(GroundTruthProtected, match="made by"):
        save_labels(case.labels["gts"], foreign, case=case)
    save_labels(case.labels["gts"], foreign, case=case, overwrite_gt=True)
    assert (tmp_path / "foreign.dcm.bak").read_bytes() == (shared_data / SEG_DIR / "liver_SEG.dcm").read_bytes()
    with pytest.raises(ValueError, match="not read from DICOM"):
        nii = load_case(shared_data / "totalsegmentator/example_ct_sm.nii.gz")
        save_labels(np.ones(nii.image.spatial_shape, np.uint8), tmp_path / "x.dcm", case=nii)
    assert not (tmp_path / "x.dcm").exists()


def test_oblique_series_seg_round_trip(shared_data, tmp_path):
    """Labels on an oblique, shuffled series go back to the right frames."""
    nii, data, aff = oblique_nifti(shared_data, tmp_path / "o.nii.gz")
    write_series(tmp_path / "obl", data, aff, template(shared_data))
    case = load_case(tmp_path / "obl")
    labels = (case.image.array > 100).astype(np.uint8)  # bone
    labels[case.image.array < -500] = 2  # air
    out = save_labels(labels, tmp_path / "obl_seg.dcm", case=case, label_names={1: "bone", 2: "air"})
    np.testing.assert_array_equal(load_case(tmp_path / "obl", labels_file=out).labels["gts"], labels)


def test_slicer_seg_nrrd_written_and_read_by_pynrrd_and_slicerio(series_with_labels, tmp_path, shared_data):
    import nrrd
    import slicerio

    case = series_with_labels
    out = save_labels(case.labels["gts"], tmp_path / "c.seg.nrrd", case=case, label_names={1: "liver", 2: "spine"},
                      colors={1: (255, 0, 0), 2: (0, 0, 255)})
    vox, hdr = nrrd.read(str(out))
    assert hdr["Segment0_Name"] == "liver" and hdr["Segment1_Name"] == "spine"
    assert hdr["space"] == "left-posterior-superior"
    ref, ref_hdr = nrrd.read(str(shared_data / SEG_DIR / "liver_spine_seg.nrrd"))
    np.testing.assert_array_equal(vox, ref)  # dcmqi's own voxel order and geometry
    np.testing.assert_allclose(hdr["space directions"], ref_hdr["space directions"])
    np.testing.assert_allclose(hdr["space origin"], ref_hdr["space origin"])
    seg = slicerio.read_segmentation(str(out))
    segs = {s["name"]: s for s in seg["segments"]}
    assert segs["liver"]["labelValue"] == 1 and segs["spine"]["labelValue"] == 2
    assert np.allclose(segs["liver"]["color"], (1, 0, 0)) and np.allclose(segs["spine"]["color"], (0, 0, 1))
    assert segs["liver"]["terminology"]["type"] == ["SCT", "10200004", "Liver"]
    back = load_case(out)
    assert back.format == "slicer_seg" and back.label_names == {1: "liver", 2: "spine"}
    assert back.meta["label_colors"] == {1: (255, 0, 0), 2: (0, 0, 255)}
    np.testing.assert_array_equal(back.labels["gts"], case.labels["gts"])


def test_slicer_seg_with_overlapping_layers(series_with_labels, tmp_path, caplog):
    import slicerio

    case = series_with_labels
    ijk = load_case(Path(case.meta["labels_file"])).labels["gts"]  # canonical view of dcmqi's map
    liver = (case.labels["gts"] == 1)
    grown = np.zeros_like(liver)
    grown[:, 200:300, 200:300] = True  # overlaps the liver
    from napari_medsegfm.io.geometry import to_source_order

    grid = case.meta["grid"]
    vox = np.stack([to_source_order(liver.astype(np.uint8), grid), to_source_order(grown.astype(np.uint8), grid)])
    seg = {"voxels": vox, "ijkToLPS": np.diag([-1.0, -1.0, 1.0, 1.0]) @ grid["affine_ras"], "encoding": "gzip",
           "segments": [{"id": "a", "name": "liver", "labelValue": 1, "layer": 0, "color": [1, 0, 0]},
                        {"id": "b", "name": "box", "labelValue": 1, "layer": 1, "color": [0, 1, 0]}]}
    p = tmp_path / "layers.seg.nrrd"
    slicerio.write_segmentation(str(p), seg)
    with caplog.at_level("WARNING"):
        back = load_case(p)
    assert "belong to more than one segment" in caplog.text
    assert back.label_names == {1: "liver", 2: "box"}
    assert np.array_equal(back.labels["gts"] == 2, grown) and np.array_equal(back.labels["gts"] == 1, liver & ~grown)
    assert ijk.shape == back.labels["gts"].shape


def test_nrrd_and_mha_label_maps_in_source_geometry(series_with_labels, tmp_path, shared_data):
    import nrrd
    import SimpleITK as sitk

    case = series_with_labels
    out = save_labels(case.labels["gts"], tmp_path / "lab.nrrd", case=case)
    got, hdr = nrrd.read(str(out))
    ref, ref_hdr = nrrd.read(str(shared_data / SEG_DIR / "liver_spine_seg.nrrd"))
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_allclose(hdr["space origin"], ref_hdr["space origin"])
    mha = save_labels(case.labels["gts"], tmp_path / "lab.mha", case=case)
    img = sitk.ReadImage(str(mha))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), ref.transpose(2, 1, 0))
    np.testing.assert_allclose(img.GetOrigin(), ref_hdr["space origin"], atol=1e-4)
    back = load_case(mha, as_labels=True)
    np.testing.assert_array_equal(back.labels["gts"], case.labels["gts"])
    with pytest.raises(ValueError, match="detached headers"):
        save_labels(case.labels["gts"], tmp_path / "lab.mhd", case=case)


def test_nrrd_mha_images_match_nifti_and_refuse_bombs(shared_data, tmp_path):
    """The oblique NIfTI case written as NRRD and MHA by SimpleITK opens identically."""
    import SimpleITK as sitk

    nii, _data, _aff = oblique_nifti(shared_data, tmp_path / "o.nii.gz")
    ref = load_case(nii)
    img = sitk.ReadImage(str(nii))
    for ext in (".nrrd", ".mha", ".nhdr", ".mhd"):
        p = tmp_path / f"o{ext}"
        sitk.WriteImage(img, str(p))
        c = load_case(p)
        assert c.format == ("nrrd" if "n" in ext[:3] else "metaimage") and not c.labels
        np.testing.assert_array_equal(c.image.array, ref.image.array)
        assert c.image.spacing == pytest.approx(ref.image.spacing, rel=1e-5)
    # a 200-byte NRRD declaring 100000 x 100000 x 1000 shorts is refused from its header
    bomb = tmp_path / "bomb.nrrd"
    bomb.write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 100000 100000 1000\nendian: little\nencoding: gzip\n\n"
                     + b"\x1f\x8b" + b"\x00" * 30)
    with pytest.raises(ValueError, match=r"bomb.nrrd: voxel data declares .* needs .* TiB, more than the limit"):
        load_case(bomb)
    mbomb = tmp_path / "bomb.mha"
    mbomb.write_bytes(b"ObjectType = Image\nNDims = 3\nDimSize = 100000 100000 1000\nElementType = MET_SHORT\n"
                      b"ElementDataFile = LOCAL\n" + b"\x00" * 64)
    with pytest.raises(ValueError, match=r"bomb.mha: voxel data declares .* needs .* TiB, more than the limit"):
        load_case(mbomb)


def test_fractional_label_map_refused(shared_data, tmp_path):
    import SimpleITK as sitk

    lab = load_case(shared_data / SEG_DIR / "liver_seg.nrrd").labels["gts"].astype(np.float32)
    img = sitk.GetImageFromArray(lab)
    sitk.WriteImage(img, str(tmp_path / "f_seg.mha"))
    assert load_case(tmp_path / "f_seg.mha").labels["gts"].dtype == np.uint8  # integer-valued floats: fine
    img = sitk.GetImageFromArray(lab * 0.5)
    sitk.WriteImage(img, str(tmp_path / "g_seg.mha"))
    with pytest.raises(ValueError, match=r"g_seg.mha: 'voxel data' holds fractional values \(e.g. 0.5\)"):
        load_case(tmp_path / "g_seg.mha", as_labels=True)


def test_labels_of_a_nifti_case_as_nrrd_mha_seg_nrrd_keep_its_geometry(shared_data, tmp_path):
    """Labels drawn on an oblique NIfTI case land in NRRD/MHA/.seg.nrrd on the NIfTI's own grid:
    SimpleITK reads the same voxel order, origin and direction as from the NIfTI itself."""
    import SimpleITK as sitk

    nii, _data, _aff = oblique_nifti(shared_data, tmp_path / "o.nii.gz")
    case = load_case(nii)
    labels = (case.image.array > 100).astype(np.uint8)
    ref = sitk.ReadImage(str(nii))
    for name in ("o_seg.nrrd", "o_seg.mha", "o.seg.nrrd"):
        out = save_labels(labels, tmp_path / name, case=case, label_names={1: "bone"})
        img = sitk.ReadImage(str(out))
        np.testing.assert_allclose(img.GetOrigin(), ref.GetOrigin(), atol=1e-3)
        np.testing.assert_allclose(img.GetDirection(), ref.GetDirection(), atol=1e-5)
        np.testing.assert_allclose(img.GetSpacing(), ref.GetSpacing(), rtol=1e-5)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(img) > 0, sitk.GetArrayFromImage(ref) > 100)
        np.testing.assert_array_equal(load_case(out, as_labels=True).labels["gts"] if not name.endswith(".seg.nrrd")
                                      else load_case(out).labels["gts"], labels)

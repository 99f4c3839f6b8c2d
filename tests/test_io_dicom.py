"""DICOM series reading on real files: sorting, HU, orientation, NIfTI equivalence, multi-series, bad input."""

from __future__ import annotations

import locale
import shutil
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
    real_stack,
    template,
    write_series,
)

from napari_medsegfm.cli import main  # noqa: E402
from napari_medsegfm.io import detect_format, list_cases, load_case  # noqa: E402
from napari_medsegfm.io.dicom import DicomError, list_series  # noqa: E402


def test_real_series_sorted_by_position_in_hu_and_canonical(shared_data):
    import pydicom

    case = load_case(shared_data / DICOM_DIR)
    assert case.format == "dicom" and detect_format(shared_data / DICOM_DIR) == "dicom"
    arr = case.image.array
    assert arr.shape == (3, 512, 512) and arr.dtype == np.int16
    assert case.image.spacing == pytest.approx((1.0, 0.810547, 0.810547), abs=1e-5)
    # slice order by position along the normal: 03.dcm is the lowest (z = -128.69), then 02, 01
    files = case.meta["dicom"]["files"]
    assert [Path(f).name for f in files] == ["03.dcm", "02.dcm", "01.dcm"]
    for k, name in enumerate(["03.dcm", "02.dcm", "01.dcm"]):
        ds = pydicom.dcmread(str(shared_data / DICOM_DIR / name))
        hu = ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
        # LPS rows/columns -> RAS closest canonical: both in-plane axes flip
        np.testing.assert_array_equal(arr[k], hu[::-1, ::-1])
    assert arr.min() == -3024  # HU: stored -2000 + intercept -1024
    d = case.meta["dicom"]
    assert d["PatientID"] == "99000" and d["Modality"] == "CT"
    assert d["SeriesInstanceUID"].endswith("23430.1") and len(d["sop_instance_uids"]) == 3
    # the same grid as dcmqi's NRRD label maps (index k of the NRRD = 03, 02, 01)
    nrrd_case = load_case(shared_data / SEG_DIR / "liver_seg.nrrd")
    assert nrrd_case.image.spatial_shape == case.image.spatial_shape
    np.testing.assert_allclose(nrrd_case.image.affine, case.image.affine, atol=1e-4)


def test_single_file_of_a_series_opens_the_series(shared_data, tmp_path):
    copy_real_series(shared_data, tmp_path / "s")
    case = load_case(tmp_path / "s" / "02.dcm")
    assert case.image.array.shape == (3, 512, 512)


def test_oblique_anisotropic_series_equals_nifti(shared_data, tmp_path):
    """A real CT on an oblique, anisotropic grid: as NIfTI and as a DICOM series (shuffled
    file names and instance numbers) the plugin shows the same voxels with the same scale."""
    nii, data, aff = oblique_nifti(shared_data, tmp_path / "obl.nii.gz")
    write_series(tmp_path / "series", data, aff, template(shared_data))
    a, b = load_case(nii), load_case(tmp_path / "series")
    assert a.image.array.shape == b.image.array.shape
    np.testing.assert_array_equal(np.asarray(a.image.array), b.image.array)
    assert b.image.spacing == pytest.approx(a.image.spacing, rel=1e-5)
    np.testing.assert_allclose(b.image.affine, a.image.affine, atol=1e-3)
    assert len(set(np.round(a.image.spacing, 3))) == 3  # really anisotropic
    assert a.meta["axcodes"] != "RAS"  # the oblique grid is not already canonical


def test_compressed_syntaxes_that_installed_decoders_read(shared_data, tmp_path):
    """RLE (pydicom), JPEG-LS (pyjpegls), JPEG Lossless (GDCM): the same HU as uncompressed."""
    import pydicom
    from pydicom.uid import JPEGLSLossless, RLELossless

    ref = load_case(shared_data / DICOM_DIR).image.array
    for name, syntax in (("rle", RLELossless), ("jpegls", JPEGLSLossless)):
        out = tmp_path / name
        for f in copy_real_series(shared_data, out):
            ds = pydicom.dcmread(str(f))
            ds.compress(syntax)
            ds.save_as(str(f))
        case = load_case(out)
        assert case.meta["dicom"]["transfer_syntax"] == str(syntax)
        np.testing.assert_array_equal(case.image.array, ref, err_msg=name)
    out = tmp_path / "jpeg_lossless"
    saved_locale = locale.setlocale(locale.LC_ALL)
    try:
        _write_jpeg_lossless(copy_real_series(shared_data, out))
    finally:  # GDCM's JPEG encoder (inside SimpleITK) switches the process locale to "C"
        locale.setlocale(locale.LC_ALL, saved_locale)
    ts = str(pydicom.dcmread(str(out / "01.dcm"), stop_before_pixels=True).file_meta.TransferSyntaxUID)
    assert ts == "1.2.840.10008.1.2.4.70"  # JPEG Lossless SV1: decoded by the GDCM plugin (python-gdcm)
    np.testing.assert_array_equal(load_case(out).image.array, ref)


def _write_jpeg_lossless(files: list[Path]) -> None:
    import pydicom
    import SimpleITK as sitk

    for f in files:
        r = sitk.ImageFileReader()
        r.SetFileName(str(f))
        r.LoadPrivateTagsOn()
        img = sitk.Cast(r.Execute() + 3024, sitk.sitkUInt16)  # GDCM's JPEG encoder takes unsigned 16 bit...
        w = sitk.ImageFileWriter()
        w.KeepOriginalImageUIDOn()
        w.SetImageIO("GDCMImageIO")
        w.SetFileName(str(f))
        w.SetUseCompression(True)
        w.SetCompressor("JPEG")
        for k in r.GetMetaDataKeys():
            img.SetMetaData(k, r.GetMetaData(k))
        img.SetMetaData("0028|1052", "0")
        img.SetMetaData("0028|0103", "0")  # PixelRepresentation: unsigned
        w.Execute(img)
        ds = pydicom.dcmread(str(f))  # ... so the intercept that undoes the shift goes in afterwards
        ds.RescaleIntercept = "-3024"
        ds.save_as(str(f))


def test_multi_series_folder_lists_and_picks(shared_data, tmp_path):
    folder = tmp_path / "study"
    copy_real_series(shared_data, folder)
    nii, data, aff = oblique_nifti(shared_data, tmp_path / "obl.nii.gz")
    write_series(folder, data, aff, template(shared_data), series_number=9)
    series = list_series(folder)
    assert [len(s.files) for s in series] == [3, data.shape[2]]
    with pytest.raises(DicomError, match=r"holds 2 image series.*series=") as err:
        load_case(folder)
    assert series[0].uid in str(err.value) and series[1].uid in str(err.value)
    refs = list_cases(folder)
    assert [r.case_id for r in refs] == [s.uid for s in series]
    second = refs[1].load()
    np.testing.assert_array_equal(second.image.array, load_case(nii).image.array)
    assert load_case(folder, series=1).image.array.shape == (3, 512, 512)  # by listing number
    assert load_case(folder, series=series[1].uid[:-3]).image.array.shape == second.image.array.shape  # prefix
    from napari_medsegfm.io.reader import napari_get_reader

    layers = napari_get_reader(str(folder))(str(folder))
    assert [t for _d, _k, t in layers] == ["image", "image"]


def _expect_error(src: Path, tmp_path: Path, match: str, names: str) -> None:
    with pytest.raises(ValueError, match=match) as err:
        load_case(src)
    assert names in str(err.value), str(err.value)
    out = tmp_path / "never.nii.gz"
    assert main(["convert", str(src), str(out)]) == 2
    assert not out.exists() and not list(tmp_path.glob("never*"))


def test_bad_input_unrelated_files(shared_data, tmp_path):
    folder = tmp_path / "junk"
    folder.mkdir()
    (folder / "notes.txt").write_text("not an image")
    shutil.copy(shared_data / "sammed2d_demo/data_demo/images/s0619_32.png", folder / "scan.dcm")
    # a folder of non-DICOM files is not claimed; a .dcm that is not DICOM is claimed and explained
    assert detect_format(folder) is None
    _expect_error(folder / "scan.dcm", tmp_path, "not a DICOM file", "scan.dcm")
    from napari_medsegfm.io.dicom import load_dicom

    with pytest.raises(DicomError, match="no DICOM files") as err:
        load_dicom(folder)
    assert "notes.txt" in str(err.value)


def test_bad_input_missing_slice(shared_data, tmp_path):
    real_stack(shared_data, 6, tmp_path / "gap", skip=(3,))
    _expect_error(tmp_path / "gap", tmp_path, r"missing 1 slice\(s\) between", ".dcm (position")


def test_bad_input_non_uniform_spacing(shared_data, tmp_path):
    import pydicom

    files = real_stack(shared_data, 5, tmp_path / "nonuni")
    by_pos = sorted(files, key=lambda f: float(pydicom.dcmread(str(f)).ImagePositionPatient[2]))
    ds = pydicom.dcmread(str(by_pos[-1]))
    ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1],
                               float(ds.ImagePositionPatient[2]) + 0.5]
    ds.save_as(str(by_pos[-1]))
    _expect_error(tmp_path / "nonuni", tmp_path, "non-uniform slice spacing", by_pos[-1].name)


def test_bad_input_mixed_series(shared_data, tmp_path):
    import pydicom

    files = copy_real_series(shared_data, tmp_path / "mixed")
    ds = pydicom.dcmread(str(files[1]))
    small = ds.pixel_array[:256, :256].copy()
    ds.Rows, ds.Columns = 256, 256
    ds.PixelData = small.tobytes()
    ds.save_as(str(files[1]))
    _expect_error(tmp_path / "mixed", tmp_path, "is mixed", "02.dcm")


def test_bad_input_corrupt_file(shared_data, tmp_path):
    files = copy_real_series(shared_data, tmp_path / "corrupt")
    raw = files[2].read_bytes()
    files[2].write_bytes(raw[: len(raw) // 2])  # truncated in the pixel data
    _expect_error(tmp_path / "corrupt", tmp_path, "truncated or corrupt", "03.dcm")
    files[2].write_bytes(raw[:700])  # truncated in the header
    _expect_error(tmp_path / "corrupt", tmp_path, "truncated or corrupt", "03.dcm")


def test_bad_input_compressed_without_decoder(shared_data, tmp_path):
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import HTJ2KLossless

    files = copy_real_series(shared_data, tmp_path / "htj2k")
    for f in files:
        ds = pydicom.dcmread(str(f))
        ds.file_meta.TransferSyntaxUID = HTJ2KLossless
        ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 60])  # a codestream no decoder here reads
        ds["PixelData"].VR = "OB"
        ds.save_as(str(f), enforce_file_format=True)
    _expect_error(tmp_path / "htj2k", tmp_path, "High-Throughput JPEG 2000", "htj2k")
    with pytest.raises(ValueError, match="pylibjpeg-openjpeg"):
        load_case(tmp_path / "htj2k")


def test_declared_size_limit_before_allocation(shared_data, tmp_path, monkeypatch):
    import pydicom

    copy_real_series(shared_data, tmp_path / "s")
    monkeypatch.setenv("MEDSEGFM_MAX_ARRAY_BYTES", "1M")
    with pytest.raises(ValueError, match=r"s: series .* declares \(3, 512, 512\) x int16 needs 1.5 MiB, more than the limit"):
        load_case(tmp_path / "s")
    monkeypatch.delenv("MEDSEGFM_MAX_ARRAY_BYTES")
    # a 600-byte-pixel multi-frame file that declares 100000 frames of 4096 x 4096: refused from its header
    ds = pydicom.dcmread(str(shared_data / DICOM_DIR / "01.dcm"))
    ds.NumberOfFrames = 100000
    ds.Rows = ds.Columns = 4096
    ds.PixelData = b"\x00" * 600
    bomb = tmp_path / "bomb.dcm"
    ds.save_as(str(bomb))
    with pytest.raises(ValueError, match=r"bomb.dcm: 100000 frames declares .* needs .* TiB, more than the limit"):
        load_case(bomb)


def test_enhanced_multiframe_equals_the_series(shared_data, tmp_path):
    """The real series converted to one multi-frame object (highdicom's legacy-converted enhanced
    CT, per-frame plane positions) opens with the same voxels; a SEG drawn on it reads back."""
    import highdicom as hd
    import pydicom

    from napari_medsegfm.io import save_labels

    dss = [pydicom.dcmread(str(f)) for f in sorted((shared_data / DICOM_DIR).glob("*.dcm"))]
    mf = hd.legacy.LegacyConvertedEnhancedCTImage(dss, series_instance_uid=hd.UID(), series_number=3,
                                                  sop_instance_uid=hd.UID(), instance_number=1)
    f = tmp_path / "enhanced.dcm"
    mf.save_as(str(f))
    ref = load_case(shared_data / DICOM_DIR)
    case = load_case(f)
    assert case.meta["dicom"]["geometry"] == "enhanced"
    np.testing.assert_array_equal(case.image.array, ref.image.array)
    assert case.image.spacing == pytest.approx(ref.image.spacing, abs=1e-4)
    labels = (case.image.array > 200).astype(np.uint8)
    out = save_labels(labels, tmp_path / "enh_seg.dcm", case=case, label_names={1: "bone"})
    np.testing.assert_array_equal(load_case(f, labels_file=out).labels["gts"], labels)


def test_multiframe_without_geometry_is_a_frame_stack(shared_data, tmp_path):
    """An ultrasound-style multi-frame object (no plane positions; pixel size in the ultrasound
    regions, in cm) opens as a frame stack with that pixel size; SEG writing is refused."""
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    dss = [pydicom.dcmread(str(f)) for f in sorted((shared_data / DICOM_DIR).glob("*.dcm"))]
    ds = dss[0]
    frames = np.stack([d.pixel_array[100:300, 120:360] for d in dss]).astype(np.uint16) + 2048
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"  # Ultrasound Multi-frame Image Storage
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Modality = "US"
    for k in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceLocation"):
        if k in ds:
            delattr(ds, k)
    ds.RescaleIntercept, ds.RescaleSlope = "0", "1"
    ds.NumberOfFrames = 3
    ds.Rows, ds.Columns = frames.shape[1:]
    ds.PixelRepresentation = 0
    region = Dataset()
    region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3  # cm
    region.PhysicalDeltaX, region.PhysicalDeltaY = 0.02, 0.03
    ds.SequenceOfUltrasoundRegions = [region]
    ds.PixelData = frames.tobytes()
    f = tmp_path / "cine.dcm"
    ds.save_as(str(f), enforce_file_format=True)
    case = load_case(f)
    assert case.meta["dicom"]["geometry"] == "frames" and case.image.spacing == pytest.approx((1.0, 0.3, 0.2))
    np.testing.assert_array_equal(case.image.array, frames)
    from napari_medsegfm.io import save_labels

    with pytest.raises(ValueError, match="carry no plane geometry"):
        save_labels(np.ones(frames.shape, np.uint8), tmp_path / "cine_seg.dcm", case=case)
    assert not (tmp_path / "cine_seg.dcm").exists()

"""Builders of DICOM test series from the real files in shared/data (no synthetic pixels).

Every series is written with pydicom from the real dcmqi CT slice as the header template
(real CT attributes, new UIDs) and pixel data from a real volume: the 3 dcmqi slices
themselves, or a TotalSegmentator NIfTI case placed on an oblique, anisotropic grid.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path

import numpy as np

DICOM_DIR = "dicom/dcmqi_ct-3slice"
SEG_DIR = "dicom/dcmqi_segmentations"
TOTALSEG_CT = "totalsegmentator/example_ct_sm.nii.gz"


def template(shared_data: Path):
    import pydicom

    return pydicom.dcmread(str(shared_data / DICOM_DIR / "01.dcm"))


def rotation(deg_z: float, deg_x: float) -> np.ndarray:
    az, ax = np.deg2rad(deg_z), np.deg2rad(deg_x)
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    return rz @ rx


def oblique_nifti(shared_data: Path, out: Path, spacing=(0.8, 1.1, 2.5), deg_z=20.0, deg_x=12.0,
                  crop=(slice(10, 110), slice(5, 95), slice(4, 26))) -> tuple[Path, np.ndarray, np.ndarray]:
    """A real CT (TotalSegmentator example) cropped and re-gridded oblique + anisotropic.

    Returns ``(nifti path, data (i, j, k) int16, affine (RAS))``.
    """
    import nibabel as nib

    img = nib.load(str(shared_data / TOTALSEG_CT))
    data = np.asanyarray(img.dataobj)[crop].astype(np.int16)
    aff = np.eye(4)
    # oblique (rotated) and not near RAS: i runs ~posterior, j ~right, k ~inferior (axcodes "PRI")
    perm = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    aff[:3, :3] = rotation(deg_z, deg_x) @ perm @ np.diag(spacing)
    aff[:3, 3] = (-40.0, 25.0, -60.0)
    nimg = nib.Nifti1Image(data, aff)
    nimg.header.set_xyzt_units("mm")
    nib.save(nimg, str(out))
    back = nib.load(str(out))  # what the file holds (float32 sform)
    return out, data, np.asarray(back.affine, dtype=float)


def write_series(folder: Path, data_ijk: np.ndarray, affine_ras: np.ndarray, tmpl, *, shuffle: bool = True,
                 intercept: int = -1024, series_uid: str | None = None, series_number: int = 7,
                 description: str = "oblique test series", skip: tuple[int, ...] = ()) -> list[Path]:
    """Write ``data_ijk`` (HU, (columns, rows, slices)) as one CT file per slice.

    File names and InstanceNumbers are shuffled (the reader must sort by position).
    ``skip`` leaves those slice indices out (a gap).
    """
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_ras
    sp = np.sqrt((lps[:3, :3] ** 2).sum(axis=0))
    row_dir, col_dir = lps[:3, 0] / sp[0], lps[:3, 1] / sp[1]
    uid = series_uid or generate_uid()
    n = data_ijk.shape[2]
    order = list(range(n))
    rng = random.Random(13)
    if shuffle:
        rng.shuffle(order)
    files = []
    for rank, k in enumerate(order):
        if k in skip:
            continue
        ds = copy.deepcopy(tmpl)
        ds.SeriesInstanceUID = uid
        ds.SeriesNumber = series_number
        ds.SeriesDescription = description
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = rank + 1
        ds.Rows, ds.Columns = int(data_ijk.shape[1]), int(data_ijk.shape[0])
        ds.PixelSpacing = [f"{sp[1]:.10g}", f"{sp[0]:.10g}"]
        ds.SliceThickness = f"{sp[2]:.10g}"
        ds.ImageOrientationPatient = [f"{v:.12g}" for v in (*row_dir, *col_dir)]
        ds.ImagePositionPatient = [f"{v:.10g}" for v in lps[:3, :3] @ np.array([0, 0, k]) + lps[:3, 3]]
        ds.RescaleIntercept = str(intercept)
        ds.RescaleSlope = "1"
        stored = (data_ijk[:, :, k].T.astype(np.int32) - intercept).astype(np.int16)
        ds.PixelData = np.ascontiguousarray(stored).tobytes()
        f = folder / f"IMG{rng.randrange(10**6):06d}_{rank}.dcm"
        ds.save_as(str(f), enforce_file_format=True)
        files.append(f)
    return files


def copy_real_series(shared_data: Path, folder: Path) -> list[Path]:
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for f in sorted((shared_data / DICOM_DIR).glob("*.dcm")):
        out.append(Path(shutil.copyfile(f, folder / f.name)))  # writable copies (the shared files are 0444)
    return out


def real_stack(shared_data: Path, n: int, folder: Path, *, skip: tuple[int, ...] = (), rows: int = 96,
               cols: int = 128) -> list[Path]:
    """``n`` slices of the real CT (the 3 dcmqi slices repeated, cropped to rows x cols), 1 mm apart."""
    import pydicom

    slices = [pydicom.dcmread(str(f)) for f in sorted((shared_data / DICOM_DIR).glob("*.dcm"))]
    tmpl = slices[0]
    raw = np.stack([s.pixel_array[200:200 + rows, 180:180 + cols] for s in slices])
    data = np.stack([raw[k % 3] for k in range(n)]).astype(np.int32) + int(tmpl.RescaleIntercept)
    aff = np.diag([-0.8, -0.8, 1.0, 1.0])  # RAS of the LPS-aligned dcmqi grid
    aff[:3, 3] = (100.0, 120.0, -130.0)
    return write_series(folder, data.transpose(2, 1, 0), aff, tmpl, skip=skip, description="real stack")

"""Build small datasets in the medsegpy, SA-Med2D-20M and IVDM3Seg layouts from real images.

No public sample files exist for these three formats, so tests and demos build them
from the real CT/MR NIfTI of TotalSegmentator and the SAM-Med2D demo PNGs in the shared
test data (``shared/data``, see its MANIFEST.md), laid out exactly as the format
documents describe. Each builder returns the root it wrote and what it put there.

These helpers are for tests and demos; they are not used by the readers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "TOTALSEG_CT",
    "TOTALSEG_CT_SEG",
    "TOTALSEG_MR",
    "TOTALSEG_MR_SEG",
    "TOTALSEG_CT_CLASSES",
    "make_medsegpy_h5",
    "make_medsegpy_slices",
    "make_samed2d",
    "make_ivdm3seg",
]

TOTALSEG_CT = "totalsegmentator/example_ct_sm.nii.gz"
TOTALSEG_CT_SEG = "totalsegmentator/example_seg.nii.gz"
TOTALSEG_MR = "totalsegmentator/example_mr_sm.nii.gz"
TOTALSEG_MR_SEG = "totalsegmentator/example_seg_mr.nii.gz"
#: TotalSegmentator v2 ids of the three classes used for channel fixtures
TOTALSEG_CT_CLASSES = {5: "liver", 1: "spleen", 2: "kidney_right"}


def _canonical_zyx(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    import nibabel as nib

    img = nib.as_closest_canonical(nib.load(str(path)))
    data = np.asanyarray(img.dataobj).transpose(2, 1, 0)
    return np.ascontiguousarray(data), tuple(float(z) for z in img.header.get_zooms()[:3][::-1])


def _ct_crop(shared: Path, z: slice = slice(8, 20)) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """(image (D, H, W) int16, channels (D, H, W, 3) uint8 for liver/spleen/kidney_right, spacing zyx)."""
    img, sp = _canonical_zyx(shared / TOTALSEG_CT)
    seg, _ = _canonical_zyx(shared / TOTALSEG_CT_SEG)
    img, seg = img[z], seg[z]
    chans = np.stack([(seg == k) for k in TOTALSEG_CT_CLASSES], axis=-1).astype(np.uint8)
    return img.astype(np.int16), chans, sp


def make_medsegpy_h5(shared: str | Path, root: str | Path, *, name: str = "0000001_V00",
                     sidecar: bool = True) -> dict[str, Any]:
    """A 3D medsegpy file ``root/<name>.h5`` (``volume`` H x W x D, ``seg`` H x W x D x C) + JSON sidecar.

    Built from a crop of the TotalSegmentator CT of the shared test data. Channels: 0
    liver, 1 spleen, 2 kidney_right; the sidecar lists them plus the collated category
    ``(0, 2)`` ("liver+kidney").

    Parameters
    ----------
    shared : path-like
        The shared test data folder.
    root : path-like
        Where to write (created).
    name : str
        File stem.
    sidecar : bool
        Write ``<name>.json``.

    Returns
    -------
    dict
        ``path``, ``image`` ``(D, H, W)``, ``channels`` ``(D, H, W, C)``, ``spacing`` (z, y, x) mm.
    """
    import h5py

    shared, root = Path(shared), Path(root)
    root.mkdir(parents=True, exist_ok=True)
    img, chans, sp = _ct_crop(shared)
    path = root / f"{name}.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("volume", data=img.transpose(1, 2, 0))
        f.create_dataset("seg", data=chans.transpose(1, 2, 0, 3), compression="gzip")
    if sidecar:
        (root / f"{name}.json").write_text(json.dumps({
            "categories": [*TOTALSEG_CT_CLASSES.values(), "liver+kidney"],
            "category_ids": [0, 1, 2, [0, 2]],
            "category_colors": [[220, 120, 60], [60, 120, 220], [60, 200, 80], [250, 250, 0]],
            "spacing": [sp[1], sp[2], sp[0]],
        }))
    return {"path": path, "image": img, "channels": chans, "spacing": sp}


def make_medsegpy_slices(shared: str | Path, root: str | Path, *, scan: str = "0000002_V01-Aug00",
                         sidecar: bool = True) -> dict[str, Any]:
    """2D medsegpy slices ``root/<scan>_%03d.im`` (``data`` H x W x 1) and ``.seg`` (H x W x 1 x C).

    Parameters
    ----------
    shared : path-like
        The shared test data folder (the TotalSegmentator CT crop, as :func:`make_medsegpy_h5`).
    root : path-like
        Where to write (created).
    scan : str
        Scan id ``%07d_V%02d-Aug%02d``.
    sidecar : bool
        Write ``metadata.json``.

    Returns
    -------
    dict
        ``path``, ``scan``, ``image`` ``(D, H, W)``, ``channels`` ``(D, H, W, C)``, ``spacing`` (z, y, x) mm.
    """
    import h5py

    shared, root = Path(shared), Path(root)
    root.mkdir(parents=True, exist_ok=True)
    img, chans, sp = _ct_crop(shared)
    for k in range(img.shape[0]):
        with h5py.File(root / f"{scan}_{k + 1:03d}.im", "w") as f:
            f.create_dataset("data", data=img[k][..., None])
        with h5py.File(root / f"{scan}_{k + 1:03d}.seg", "w") as f:
            f.create_dataset("data", data=chans[k][:, :, None, :])
    if sidecar:
        (root / "metadata.json").write_text(json.dumps({
            "categories": list(TOTALSEG_CT_CLASSES.values()),
            "category_ids": [0, 1, 2],
            "spacing": [sp[1], sp[2]],
            "slice_thickness": sp[0],
        }))
    return {"path": root, "scan": scan, "image": img, "channels": chans, "spacing": sp}


_DEMO_CASES = {
    # demo image stem -> (SA-Med2D stem without class, modality)
    "amos_0004_75": "ct_00--AMOS--amos_0004--z_0075",
    "s0114_111": "ct_00--TotalSegmentator--s0114--z_0111",
    "s0619_32": "ct_00--TotalSegmentator--s0619--z_0032",
}


def make_samed2d(shared: str | Path, root: str | Path, *, volume_case: bool = True,
                 index: bool = True) -> dict[str, Any]:
    """An SA-Med2D-20M tree from the SAM-Med2D demo slices (+ a re-stackable CT case).

    * ``images/ct_00--AMOS--amos_0004--z_0075.png`` etc.: the demo PNGs, renamed;
      ``masks/<stem>--{class:04d}_{instance:03d}.png``: their masks (``hip_left_000`` /
      ``_001`` become instances 0 and 1 of one class).
    * with ``volume_case``: ``ct_00--TotalSegCT--example_ct--z_{k:04d}.png`` slices of
      the TotalSegmentator CT (8-bit window) with liver/spleen/kidney masks.
    * ``SAMed2D_v1_class_mapping_id.json`` and (``index``) ``SAMed2D_v1.json``.

    Parameters
    ----------
    shared : path-like
        The shared test data folder.
    root : path-like
        The dataset root to write (created).
    volume_case : bool
        Add the CT slices as a re-stackable case.
    index : bool
        Write ``SAMed2D_v1.json``.

    Returns
    -------
    dict
        ``root``, ``classes`` (name -> id), ``slices`` (image stems), ``volume_stems``,
        ``volume`` ``(D, H, W)`` uint8 and ``volume_labels`` ``(D, H, W)``.
    """
    from PIL import Image

    shared, root = Path(shared), Path(root)
    demo = shared / "sammed2d_demo" / "data_demo"
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    classes: dict[str, int] = {}
    idx: dict[str, list[str]] = {}

    def cid(name: str) -> int:
        if name not in classes:
            classes[name] = len(classes) + 1
        return classes[name]

    for demo_stem, stem in _DEMO_CASES.items():
        shutil.copyfile(demo / "images" / f"{demo_stem}.png", root / "images" / f"{stem}.png")
        masks = []
        for m in sorted((demo / "masks").glob(f"{demo_stem}_*.png")):
            rest = m.stem[len(demo_stem) + 1:]
            cls, _, inst = rest.rpartition("_")
            if not cls or not inst.isdigit():
                continue
            name = f"{stem}--{cid(cls):04d}_{int(inst):03d}.png"
            shutil.copyfile(m, root / "masks" / name)
            masks.append(f"./masks/{name}")
        idx[f"./images/{stem}.png"] = masks
    vol_stems: list[str] = []
    vol = vlab = None
    if volume_case:
        img, sp = _canonical_zyx(shared / TOTALSEG_CT)
        seg, _ = _canonical_zyx(shared / TOTALSEG_CT_SEG)
        zs = list(range(10, 16))
        win = np.clip((img[zs].astype(np.float32) + 160) / 400 * 255, 0, 255).astype(np.uint8)
        vol = win
        vlab = np.zeros(win.shape, dtype=np.uint8)
        for j, z in enumerate(zs):
            stem = f"ct_00--TotalSegCT--example_ct--z_{z:04d}"
            vol_stems.append(stem)
            Image.fromarray(np.stack([win[j]] * 3, axis=-1)).save(root / "images" / f"{stem}.png")
            masks = []
            for lab_id, name in TOTALSEG_CT_CLASSES.items():
                m = seg[z] == lab_id
                if not m.any():
                    continue
                fn = f"{stem}--{cid(name):04d}_000.png"
                Image.fromarray((m * 255).astype(np.uint8)).save(root / "masks" / fn)
                masks.append(f"./masks/{fn}")
            idx[f"./images/{stem}.png"] = masks
        # labels as the reader numbers them: sorted (class, instance) pairs of the case
        pairs = sorted({classes[n] for k, n in TOTALSEG_CT_CLASSES.items() if np.any(seg[zs] == k)})
        for j, z in enumerate(zs):
            for lab_id, name in TOTALSEG_CT_CLASSES.items():
                if classes.get(name) in pairs:
                    vlab[j][seg[z] == lab_id] = pairs.index(classes[name]) + 1
    (root / "SAMed2D_v1_class_mapping_id.json").write_text(
        json.dumps({k: f"{v:04d}" for k, v in classes.items()}, indent=1))
    if index:
        (root / "SAMed2D_v1.json").write_text(json.dumps(idx, indent=1))
    return {"root": root, "classes": classes, "slices": list(_DEMO_CASES.values()), "volume_stems": vol_stems,
            "volume": vol, "volume_labels": vlab}


IVDM_DISC_LABEL = 47  # the total_mr class used as the "disc" mask of the fixture


def make_ivdm3seg(shared: str | Path, root: str | Path, *, cases: tuple[str, ...] = ("01", "02"),
                  flat: bool = True, gz: bool = False) -> dict[str, Any]:
    """IVDM3Seg trees built from the TotalSegmentator MR (LPS orientation).

    Case folders ``root/NN/NN_{fat,inn,opp,wat}.nii`` + ``NN_Labels.nii`` and, with
    ``flat``, ``root/dataset/NN_*.nii`` + ``root/label/NN_Labels.nii``. The four
    "sequences" are intensity transforms of the real MR (water = MR, fat = inverted inside
    the body, in/opposed phase = their mean / absolute difference), all on the MR's own
    grid and header; labels are one binary structure of the MR's segmentation. Case ``02``
    is case ``01`` mirrored.

    Parameters
    ----------
    shared : path-like
        The shared test data folder.
    root : path-like
        Where to write (created).
    cases : tuple of str
        Case ids.
    flat : bool
        Also write the flat ``dataset/`` + ``label/`` layout.
    gz : bool
        Write ``.nii.gz`` instead of ``.nii``.

    Returns
    -------
    dict
        ``root``, ``cases`` (id -> ``sequences_xyz``, ``labels_xyz``: the arrays in file
        order ``(X, Y, Z)``) and ``affine`` (the MR's).
    """
    import nibabel as nib

    shared, root = Path(shared), Path(root)
    mr = nib.load(str(shared / TOTALSEG_MR))
    seg = nib.load(str(shared / TOTALSEG_MR_SEG))
    base = np.asanyarray(mr.dataobj).astype(np.int16)
    lab = (np.asanyarray(seg.dataobj) == IVDM_DISC_LABEL).astype(np.uint8)
    ext = ".nii.gz" if gz else ".nii"
    out: dict[str, Any] = {"root": root, "cases": {}}
    for n, cid in enumerate(cases):
        w = base if n % 2 == 0 else base[::-1].copy()
        lb = lab if n % 2 == 0 else lab[::-1].copy()
        body = w > np.percentile(w, 30)
        f = np.where(body, w.max() - w, 0).astype(np.int16)  # inverted contrast inside the body
        seqs = {"wat": w, "fat": f, "inn": ((w.astype(np.int32) + f) // 2).astype(np.int16),
                "opp": np.abs(w.astype(np.int32) - f).astype(np.int16)}
        folders = [root / cid] + ([root / "dataset"] if flat else [])
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
            for s, arr in seqs.items():
                nib.save(nib.Nifti1Image(arr, mr.affine, mr.header), str(folder / f"{cid}_{s}{ext}"))
        lab_folders = [root / cid] + ([root / "label"] if flat else [])
        for folder in lab_folders:
            folder.mkdir(parents=True, exist_ok=True)
            hdr = seg.header.copy()
            hdr.set_data_dtype(np.uint8)
            nib.save(nib.Nifti1Image(lb, seg.affine, hdr), str(folder / f"{cid}_Labels{ext}"))
        out["cases"][cid] = {"sequences_xyz": seqs, "labels_xyz": lb}
    out["affine"] = mr.affine
    return out

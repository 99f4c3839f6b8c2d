"""Build small datasets in every supported layout from the real files of shared/data.

Used by tests/test_dataset_*.py, tests/test_batch*.py, tests/widgets/test_navigator*.py and
benchmarks/batch_bench.py. The layouts follow FORMATS.md (no public sample exists for
medsegpy h5, SA-Med2D-20M or IVDM3Seg, so those are re-packed from real images here).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

CVPR25 = ("CT_AMOS_amos_0018", "MR_BraTS-T1c_bratsgli_0017", "Microscopy_SELMA3D_patchvolume_nuclei_004")


def make_cvpr25(shared: Path, root: Path, names: tuple[str, ...] = CVPR25, *, gt_folder: str = "gts",
                img_folder: str = "imgs") -> Path:
    """``root/imgs/*.npz`` + ``root/<gt_folder>/*.npz`` (the challenge validation layout)."""
    (root / img_folder).mkdir(parents=True, exist_ok=True)
    (root / gt_folder).mkdir(parents=True, exist_ok=True)
    for n in names:
        shutil.copy(shared / "cvpr25" / "imgs" / f"{n}.npz", root / img_folder / f"{n}.npz")
        shutil.copy(shared / "cvpr25" / "gts" / f"{n}.npz", root / gt_folder / f"{n}.npz")
    return root


def make_small_cvpr(shared: Path, root: Path, n_cases: int = 4, *, depth: int = 12, size: int = 160,
                    with_gt_folder: bool = True) -> Path:
    """Small CVPR25-style cases cut from the real CT_AMOS / BraTS volumes (boxes recomputed from
    the cropped ground truth, as the challenge does, without the random margin)."""
    from napari_medsegfm.dataset.batch import boxes_from_labels

    root.mkdir(parents=True, exist_ok=True)
    (root / "imgs").mkdir(exist_ok=True)
    if with_gt_folder:
        (root / "gts").mkdir(exist_ok=True)
    srcs = []
    for n in ("CT_AMOS_amos_0018", "MR_BraTS-T1c_bratsgli_0017"):
        with np.load(shared / "cvpr25" / "imgs" / f"{n}.npz", allow_pickle=False) as z:
            img, sp = z["imgs"], z["spacing"]
        with np.load(shared / "cvpr25" / "gts" / f"{n}.npz") as z:
            gts = z["gts"]
        srcs.append((n, img, gts, sp))
    for k in range(n_cases):
        n, img, gts, sp = srcs[k % len(srcs)]
        zs = np.flatnonzero(gts.any(axis=(1, 2)))
        zc = int(np.median(zs)) if zs.size else img.shape[0] // 2
        z0 = int(np.clip(zc - depth // 2 + 2 * (k // 2), 0, max(img.shape[0] - depth, 0)))
        fg = np.argwhere(gts[z0:z0 + depth] > 0)
        cy, cx = (fg[:, 1:].mean(axis=0).astype(int) if len(fg) else np.array(img.shape[1:]) // 2)
        sy, sx = min(size, img.shape[1]), min(size, img.shape[2])
        y0 = int(np.clip(cy - sy // 2, 0, img.shape[1] - sy))
        x0 = int(np.clip(cx - sx // 2, 0, img.shape[2] - sx))
        im = np.ascontiguousarray(img[z0:z0 + depth, y0:y0 + sy, x0:x0 + sx])
        gt = np.ascontiguousarray(gts[z0:z0 + depth, y0:y0 + sy, x0:x0 + sx])
        # relabel 1..N so box i prompts label i+1, as in the challenge files
        ids = [int(i) for i in np.unique(gt) if i]
        lut = np.zeros(256, np.uint8)
        for j, i in enumerate(ids):
            lut[i] = j + 1
        gt = lut[gt]
        boxes = boxes_from_labels(gt)
        box_dicts = np.empty(len(boxes), dtype=object)
        for j, b in enumerate(boxes):
            box_dicts[j] = {"z_min": np.int64(b.z_min), "z_max": np.int64(b.z_max), "z_mid": np.int64(b.z_mid),
                            "z_mid_x_min": np.int64(b.x_min), "z_mid_y_min": np.int64(b.y_min),
                            "z_mid_x_max": np.int64(b.x_max), "z_mid_y_max": np.int64(b.y_max)}
        name = f"{n.split('_')[0]}_small{k:02d}"
        members = {"imgs": im, "spacing": sp, "boxes": box_dicts}
        if not with_gt_folder:
            members["gts"] = gt
        np.savez_compressed(root / "imgs" / f"{name}.npz", **members)
        if with_gt_folder:
            np.savez_compressed(root / "gts" / f"{name}.npz", gts=gt, spacing=sp)
    return root


def make_nnunet(shared: Path, root: Path) -> Path:
    """nnU-Net raw layout from the TotalSegmentator examples (2 channels for the CT case)."""
    ts = shared / "totalsegmentator"
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(exist_ok=True)
    (root / "imagesTs").mkdir(exist_ok=True)
    shutil.copy(ts / "example_ct_sm.nii.gz", root / "imagesTr" / "ts_001_0000.nii.gz")
    shutil.copy(ts / "example_ct_sm.nii.gz", root / "imagesTr" / "ts_001_0001.nii.gz")
    shutil.copy(ts / "example_seg.nii.gz", root / "labelsTr" / "ts_001.nii.gz")
    shutil.copy(ts / "example_mr_sm.nii.gz", root / "imagesTr" / "ts_002_0000.nii.gz")
    shutil.copy(ts / "example_seg_mr.nii.gz", root / "labelsTr" / "ts_002.nii.gz")
    shutil.copy(ts / "example_mr_sm.nii.gz", root / "imagesTs" / "ts_101_0000.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT", "1": "CT"}, "labels": {"background": 0, "spleen": 1, "kidney_right": 2},
        "numTraining": 2, "file_ending": ".nii.gz"}))
    return root


def make_nifti_pairs(shared: Path, root: Path) -> Path:
    """``images/`` + ``labels/`` folders, and a flat ``X.nii.gz`` + ``X_seg.nii.gz`` pair."""
    ts = shared / "totalsegmentator"
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(exist_ok=True)
    shutil.copy(ts / "example_ct_sm.nii.gz", root / "images" / "ct.nii.gz")
    shutil.copy(ts / "example_seg.nii.gz", root / "labels" / "ct.nii.gz")
    shutil.copy(ts / "example_mr_sm.nii.gz", root / "images" / "mr.nii.gz")  # no label file
    return root


def make_ivdm3seg(shared: Path, root: Path, n: int = 2) -> Path:
    """IVDM3Seg case folders ``NN/NN_{fat,inn,opp,wat}.nii`` + ``NN_Labels.nii`` from the real MR example."""
    import nibabel as nib

    img = nib.load(str(shared / "totalsegmentator" / "example_mr_sm.nii.gz"))
    seg = nib.load(str(shared / "totalsegmentator" / "example_seg_mr.nii.gz"))
    data = np.asarray(img.dataobj).astype(np.int16)
    lab = np.asarray(seg.dataobj).astype(np.uint8)
    for k in range(1, n + 1):
        cid = f"{k:02d}"
        d = root / cid
        d.mkdir(parents=True, exist_ok=True)
        for j, s in enumerate(("fat", "inn", "opp", "wat")):
            nib.save(nib.Nifti1Image((data // (j + 1)).astype(np.int16), img.affine), str(d / f"{cid}_{s}.nii"))
        discs = np.where(np.isin(lab, [19, 20, 21]), 1, 0).astype(np.uint8)  # a few structures as "discs"
        nib.save(nib.Nifti1Image(discs, seg.affine), str(d / f"{cid}_Labels.nii"))
    return root


def make_samed2d(shared: Path, root: Path) -> Path:
    """SA-Med2D-20M naming from the real SAM-Med2D demo slices (one case of 2 slices, one 2D case)."""
    demo = shared / "sammed2d_demo" / "data_demo"
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    classes = {"liver": "0001", "aorta": "0002", "inferior_vena_cava": "0003", "spleen": "0004"}
    for src, stem in (("amos_0004_75", "ct_00--AMOS--amos_0004--z_0075"),
                      ("amos_0006_90", "ct_00--AMOS--amos_0004--z_0076")):
        shutil.copy(demo / "images" / f"{src}.png", root / "images" / f"{stem}.png")
        for cname, cid in classes.items():
            m = demo / "masks" / f"{src}_{cname}_000.png"
            if m.is_file():
                shutil.copy(m, root / "masks" / f"{stem}--{cid}_000.png")
    shutil.copy(demo / "images" / "s0619_32.png", root / "images" / "ct_00--TotalSeg--s0619--2d_none.png")
    (root / "SAMed2D_v1_class_mapping_id.json").write_text(json.dumps(classes))
    return root


def make_medsegpy_h5(shared: Path, root: Path) -> Path:
    """medsegpy 3D files: ``volume`` H x W x D and ``seg`` H x W x D x C, from the DeepLesion slabs."""
    import h5py

    root.mkdir(parents=True, exist_ok=True)
    for p in sorted((shared / "medsam2_recist").glob("*.npz")):
        with np.load(p) as z:
            img, gts = z["imgs"], z["gts"]
        with h5py.File(root / f"{p.stem[:20]}.h5", "w") as f:
            f["volume"] = np.transpose(img, (1, 2, 0))
            f["seg"] = np.transpose(gts == 1, (1, 2, 0))[..., None].astype(np.uint8)
    return root


def make_medsegpy_slices(shared: Path, root: Path) -> Path:
    """medsegpy 2D slices ``%07d_V%02d-Aug%02d_%03d.im`` / ``.seg`` from one DeepLesion slab."""
    import h5py

    root.mkdir(parents=True, exist_ok=True)
    p = sorted((shared / "medsam2_recist").glob("*.npz"))[0]
    with np.load(p) as z:
        img, gts = z["imgs"][5:10, 180:340, 220:380], z["gts"][5:10, 180:340, 220:380]
    for k in range(img.shape[0]):
        stem = f"0000001_V00-Aug00_{k + 1:03d}"
        with h5py.File(root / f"{stem}.im", "w") as f:
            f["data"] = img[k][..., None]
        with h5py.File(root / f"{stem}.seg", "w") as f:
            f["data"] = (gts[k] == 1)[..., None, None].astype(np.uint8)
    return root

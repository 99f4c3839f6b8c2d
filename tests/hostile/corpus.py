"""The hostile-input corpus: every case, how it is built, how it is opened, what must happen.

Each :class:`Hostile` case writes its file(s) into an empty folder (:meth:`Hostile.make`)
and names an *action* that :mod:`hostile.child` performs on them in a subprocess capped in
address space and time (:mod:`hostile.harness`): a crash, a hang or a memory blow-up is a
failure of that case, not of the test run. Expected: a clear error (exception class,
fragments, the file named, a bounded message) or a correct result (``check``), and for
some cases the files left byte for byte as they were.

``python tests/hostile/generate.py OUT`` writes the whole corpus to ``OUT`` (one folder per
case and ``manifest.json``), e.g. to try another reader on it.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import files as F
from . import pickles as P

#: longest error message accepted (messages are built from bounded summaries, never a payload's repr)
MAX_MESSAGE = 1500


@dataclass
class Hostile:
    family: str
    name: str
    what: str
    build: Callable[[Path], dict[str, Any]]
    action: str
    expect: str = "error"  # "error" or "ok"
    errors: tuple[str, ...] = ("ValueError",)
    fragments: tuple[str, ...] = ()
    names_file: bool = True
    check: Callable[[dict[str, Any]], str | None] | None = None
    env: dict[str, str] = field(default_factory=dict)
    unchanged: bool = False

    def request(self, args: dict[str, Any]) -> dict[str, Any]:
        """What :mod:`hostile.child` is sent for this case."""
        return {"name": self.name, "action": self.action, "env": self.env,
                "args": {k: v for k, v in args.items() if not k.startswith("_")}}

    def judge(self, args: dict[str, Any], answer: dict[str, Any], folder: Path) -> str | None:
        """``None`` when ``answer`` is the expected outcome, else what went wrong."""
        if "crash" in answer:
            return f"the child crashed (exit {answer['crash']}): {answer.get('stderr', '')[-500:]}"
        if "timeout" in answer:
            return f"no answer within {answer['timeout']} s (hang)"
        if self.unchanged:
            now = tree_hashes(folder)
            changed = [f for f, h in args["_hashes"].items() if now.get(f) != h]
            if changed:
                return f"files of the case were changed or removed: {changed}"
        if self.expect == "ok":
            if not answer.get("ok"):
                return f"expected success, got {answer.get('exc')}: {answer.get('msg', '')[:500]}"
            return self.check(answer["summary"]) if self.check is not None else None
        if answer.get("ok"):
            return f"expected an error, it loaded: {answer.get('summary')}"
        if not set(self.errors) & set(answer.get("mro", [])):
            return f"expected {'/'.join(self.errors)}, got {answer.get('exc')}: {answer.get('msg', '')[:500]}"
        msg = answer.get("msg", "")
        if answer.get("msg_len", len(msg)) > MAX_MESSAGE:
            return f"the message has {answer.get('msg_len')} characters (not a bounded summary)"
        missing = [f for f in self.fragments if f not in msg]
        if self.names_file and Path(args["path"]).name not in msg:
            missing.append(Path(args["path"]).name)
        return f"message lacks {missing}: {msg[:600]}" if missing else None

    def make(self, folder: Path) -> dict[str, Any]:
        """Write the case into ``folder`` (created); returns the action's arguments (JSON-able)."""
        folder.mkdir(parents=True, exist_ok=True)
        args = self.build(folder)
        args = {k: str(v) if isinstance(v, Path) else v for k, v in args.items()}
        if self.unchanged:
            args["_hashes"] = tree_hashes(folder)
        return args


def tree_hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every regular file under ``folder`` (symlinks not followed)."""
    out = {}
    for dirpath, _dirs, names in os.walk(folder):
        for n in names:
            p = Path(dirpath) / n
            if p.is_file() and not p.is_symlink():
                out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# ----------------------------------------------------------------------------- builders
def _pkl(fn: Callable[[], bytes]) -> Callable[[Path], dict[str, Any]]:
    def build(d: Path) -> dict[str, Any]:
        p = d / "member.pkl"
        p.write_bytes(fn())
        return {"path": p}

    return build


def _npz_with_pickle(key: str, pickle_bytes: Callable[[], bytes]) -> Callable[[Path], dict[str, Any]]:
    def build(d: Path) -> dict[str, Any]:
        p = d / "case.npz"
        F.npz(p, F.small_case_members(), [F.pickled_member(key, pickle_bytes())])
        return {"path": p}

    return build


def _laughs_in_box() -> bytes:
    box = P.EMPTY_DICT + P.s("z_min") + P._laughs() + P.SETITEM
    return P.wrap(P.object_array_of(box))


def _deep_tuple_in_box() -> bytes:
    box = P.EMPTY_DICT + P.NONE + P.TUPLE1 * 200_000 + P.i(1) + P.SETITEM
    return P.wrap(P.object_array_of(box))


def _raw_object_boxes() -> bytes:
    return P.raw_object_array()


def _laughs_clicks_order() -> bytes:
    return P.wrap(P.object_array_of(P._laughs()))


def _npz_declared(d: Path, key: str, shape: tuple[int, ...], descr: str = "|u1", *, lie: bool = True,
                  others: bool = True) -> Path:
    """An npz whose member ``key`` declares ``shape``; its zip header declares the matching size."""
    hdr = F.npy_header(shape, descr)
    nbytes = int(np.prod([int(s) for s in shape], dtype=object)) * np.dtype(descr).itemsize
    declared = len(hdr) + nbytes
    payload = hdr + b"\x00" * 64
    members = [F.member(f"{key}.npy", payload, declared=declared if lie else None)]
    arrays = F.small_case_members() if others else {}
    arrays.pop(key, None)
    p = d / "case.npz"
    F.npz(p, arrays, members)
    return p


def _real_bomb(d: Path) -> dict[str, Any]:
    shape = (256, 1024, 1024)
    n = shape[0] * shape[1] * shape[2]
    hdr = F.npy_header(shape)
    zero = bytes(16 << 20)
    data, crc = F.deflated(hdr, zero, n // len(zero))
    p = d / "case.npz"
    F.raw_zip(p, [("imgs.npy", data, 8, crc, len(hdr) + n),
                  F.member("spacing.npy", F.npy(np.array([1.0, 1.0, 1.0])))])
    return {"path": p}


def _npy_header_bomb(d: Path) -> dict[str, Any]:
    n = 256 << 20
    head = b"\x93NUMPY\x02\x00" + n.to_bytes(4, "little")  # a version-2 header declaring 256 MiB of text
    spaces = b" " * (16 << 20)
    data, crc = F.deflated(head, spaces, n // len(spaces))
    p = d / "case.npz"
    F.raw_zip(p, [("imgs.npy", data, 8, crc, len(head) + n)])
    return {"path": p}


def _sibling_gts(d: Path) -> dict[str, Any]:
    (d / "imgs").mkdir()
    (d / "gts").mkdir()
    np.savez(d / "imgs" / "c.npz", **F.small_case_members())
    _npz_declared(d / "gts", "gts", (4000, 4000, 4000), others=False).rename(d / "gts" / "c.npz")
    return {"path": d / "imgs" / "c.npz"}


def _catalog_gt_folder(d: Path) -> dict[str, Any]:
    """The ``X/`` + ``X_gt/`` layout, where the catalog (not the npz reader) reads the labels."""
    root = d / "ds"
    (root / "val_npz").mkdir(parents=True)
    (root / "val_gt").mkdir()
    np.savez(root / "val_npz" / "c.npz", **F.small_case_members())
    _npz_declared(root / "val_gt", "gts", (4000, 4000, 4000), others=False).rename(root / "val_gt" / "c.npz")
    return {"path": root, "case": "val_npz/c"}


def _nii(dims: tuple[int, ...], name: str = "img.nii.gz", **kw: Any) -> Callable[[Path], dict[str, Any]]:
    def build(d: Path) -> dict[str, Any]:
        return {"path": F.write_nifti(d / name, dims, **kw)}

    return build


def _nii_values(kind: str) -> Callable[[Path], dict[str, Any]]:
    def build(d: Path) -> dict[str, Any]:
        v = np.random.default_rng(0).normal(100, 20, (6, 20, 30)).astype(np.float32)
        if kind == "nan":
            v[0, :5, :5] = np.nan
        elif kind == "inf":
            v[1, 0, :] = np.inf
            v[2, 0, :] = -np.inf
        elif kind == "all_nan":
            v[:] = np.nan
        return {"path": F.nifti_with_values(d / f"ct_{kind}.nii.gz", v)}

    return build


def _h5_volume(d: Path) -> dict[str, Any]:
    return {"path": F.h5_declaring(d / "scan.h5", {"volume": ((2560, 2048, 1024), "int32")})}


def _h5_seg(d: Path) -> dict[str, Any]:
    return {"path": F.h5_declaring(d / "scan.h5", {"seg": ((8, 9, 11, 4), "uint8")},
                                   real={"volume": np.zeros((8, 9, 10), np.int16)})}


def _h5_seg_huge_same_hwd(d: Path) -> dict[str, Any]:
    return {"path": F.h5_declaring(d / "scan.h5", {"seg": ((8, 9, 10, 2**31), "uint8")},
                                   real={"volume": np.zeros((8, 9, 10), np.int16)})}


def _slice_file(path: Path, data: np.ndarray | None = None, declare: tuple[int, ...] | None = None) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        if declare is not None:
            f.create_dataset("data", shape=declare, dtype="uint8", chunks=(64, 64, 1), compression="gzip")
        else:
            f.create_dataset("data", data=np.zeros((8, 8, 1), np.uint8) if data is None else data)


def _slices(numbers: tuple[int, ...], *, declare: tuple[int, ...] | None = None,
            sidecar: Callable[[Path], Any] | None = None) -> Callable[[Path], dict[str, Any]]:
    def build(d: Path) -> dict[str, Any]:
        folder = d / "slices"
        folder.mkdir()
        for k in numbers:
            _slice_file(folder / f"0000001_V00-Aug00_{k:03d}.im", declare=declare if k == numbers[0] else None)
        if sidecar is not None:
            sidecar(folder / "metadata.json")
        return {"path": folder}

    return build


def _png(w: int, h: int) -> Callable[[Path], dict[str, Any]]:
    def build(d: Path) -> dict[str, Any]:
        (d / "images").mkdir()
        return {"path": F.png_declaring(d / "images" / "ct_00--AMOS--c1--2d_none.png", w, h)}

    return build


def _png_mask_bomb(d: Path) -> dict[str, Any]:
    (d / "images").mkdir()
    (d / "masks").mkdir()
    img = F.small_png(d / "images" / "ct_00--AMOS--c1--2d_none.png")
    F.png_declaring(d / "masks" / "ct_00--AMOS--c1--2d_none--0001_000.png", 100_000, 100_000)
    return {"path": img}


def _samed2d_gap(d: Path) -> dict[str, Any]:
    (d / "images").mkdir()
    for k in (0, 999_999_999):
        F.small_png(d / "images" / f"ct_00--AMOS--c1--x_{k:04d}.png", value=10 + k % 7)
    return {"path": d, "opts": {"fill_gaps": True, "case_id": "ct_00--AMOS--c1"}}


def _samed2d_deep_mapping(d: Path) -> dict[str, Any]:
    (d / "images").mkdir()
    img = F.small_png(d / "images" / "ct_00--AMOS--c1--2d_none.png")
    F.deep_json(d / "SAMed2D_v1_class_mapping_id.json")
    return {"path": img}


# ---- datasets
def _cvpr_case(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    m = F.small_case_members()
    np.savez_compressed(path, gts=(m["imgs"] > 200).astype(np.uint8), **m)
    return path


def _symlink_loop(d: Path) -> dict[str, Any]:
    root = d / "ds"
    _cvpr_case(root / "imgs" / "a.npz")
    os.symlink(root, root / "imgs" / "loop")
    os.symlink(root / "imgs", root / "imgs" / "sub_loop")
    return {"path": root}


def _symlink_alias_dir(d: Path) -> dict[str, Any]:
    root = d / "ds"
    _cvpr_case(root / "imgs" / "a.npz")
    os.symlink(root / "imgs", root / "alias")  # sorts before "imgs": the real folder must still win
    return {"path": root}


def _symlink_file_alias(d: Path) -> dict[str, Any]:
    root = d / "ds"
    _cvpr_case(root / "imgs" / "a.npz")
    os.symlink(root / "imgs" / "a.npz", root / "imgs" / "b.npz")
    return {"path": root}


def _leftover_temps(d: Path) -> dict[str, Any]:
    root = d / "ds"
    a = _cvpr_case(root / "imgs" / "a.npz")
    full = a.read_bytes()
    for name in (".msf-0123abcd-ffff99999-x1y2z3.tmp", ".msf-0123abcd-ffff99999-q1w2e3.tmp.npz",
                 ".a.npz.medsegfm-k3j4h5.tmp", ".b.nii.gz.medsegfm-k3j4h5.tmp.nii.gz"):
        (root / "imgs" / name).write_bytes(full)  # full-size copies, as a killed save leaves them
    return {"path": root}


def _dataset_with_db(kind: str) -> Callable[[Path], dict[str, Any]]:
    def build(d: Path) -> dict[str, Any]:
        root = d / "ds"
        _cvpr_case(root / "imgs" / "a.npz")
        side = root / ".medsegfm"
        (side / "corrections").mkdir(parents=True)
        db = side / "status.sqlite"
        if kind == "garbage":
            db.write_bytes(np.random.default_rng(1).integers(0, 256, 8192, dtype=np.uint8).tobytes())
        elif kind == "foreign":
            con = sqlite3.connect(db)
            con.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, path TEXT)")
            con.execute("INSERT INTO photos (path) VALUES ('holiday.jpg')")
            con.commit()
            con.close()
        elif kind in ("truncated", "wal"):
            from napari_medsegfm.dataset.status import StatusStore

            with StatusStore(db, user="ann") as st:
                for k in range(400):
                    st.set_status(f"imgs/c{k}", "done", "x" * 200)
            if kind == "truncated":
                data = db.read_bytes()
                db.write_bytes(data[: len(data) // 2])
            else:
                (side / "status.sqlite-wal").write_bytes(b"\x00garbage-not-a-wal" * 100)
        return {"path": root}

    return build


def _correction_bomb(d: Path) -> dict[str, Any]:
    import json

    root = d / "ds"
    _cvpr_case(root / "imgs" / "a.npz")
    corr = root / ".medsegfm" / "corrections"
    corr.mkdir(parents=True)
    meta = np.array(json.dumps({"case_id": "imgs/a", "saved_at": 1.0, "id_scheme": "2"}))
    F.npz(corr / "imgs_a-0000000000.npz", {"meta": meta}, [
        F.member("labels.npy", F.npy_header((100_000, 100_000, 100_000)) + b"\x00" * 64,
                 declared=len(F.npy_header((100_000, 100_000, 100_000))) + 10**15)])
    from napari_medsegfm.dataset.autosave import safe_case_filename

    (corr / "imgs_a-0000000000.npz").rename(corr / f"{safe_case_filename('imgs/a')}.npz")
    return {"path": root, "case": "imgs/a"}


# ----------------------------------------------------------------------------- checks
def _ids(expected: list[str]) -> Callable[[dict[str, Any]], str | None]:
    def check(summary: dict[str, Any]) -> str | None:
        return None if summary.get("ids") == expected else f"ids {summary.get('ids')} != {expected}"

    return check


def _finite_limits(summary: dict[str, Any]) -> str | None:
    lim = summary.get("contrast_limits")
    if not lim or not all(np.isfinite(x) for x in lim) or not lim[1] > lim[0]:
        return f"contrast limits {lim} are not finite and increasing"
    if not any("NaN or infinite" in w for w in summary.get("warnings", [])):
        return f"no NaN/inf warning among {summary.get('warnings')}"
    return None


# ----------------------------------------------------------------------------- the corpus
_UNSAFE = ("UnsafePickleError",)
_TOO_BIG = ("ArrayTooLargeError",)

CASES: list[Hostile] = [
    *[Hostile("pickle", name, what, _pkl(fn), "safe_loads", errors=_UNSAFE, fragments=(frag,), names_file=False,
              env={"MEDSEGFM_MAX_PICKLE_NODES": "100000"} if name == "flat_many_nodes" else {})  # faster, same
      for name, (fn, what, frag) in P.PICKLES.items()],
    Hostile("pickle", "npz_boxes_raw_object_array", "boxes member = ndarray(shape, 'O', bytes)",
            _npz_with_pickle("boxes", _raw_object_boxes), "load_case", errors=_UNSAFE,
            fragments=("member 'boxes'", "may not be called")),
    Hostile("pickle", "npz_boxes_deep_tuple_key", "a 200,000-deep tuple key inside a box dict",
            _npz_with_pickle("boxes", _deep_tuple_in_box), "load_case", errors=_UNSAFE,
            fragments=("member 'boxes'", "deeper than")),
    Hostile("pickle", "npz_boxes_billion_laughs", "billion laughs as a box value",
            _npz_with_pickle("boxes", _laughs_in_box), "load_case", errors=_UNSAFE,
            fragments=("member 'boxes'", "billion laughs")),
    Hostile("pickle", "npz_clicks_order_billion_laughs", "billion laughs in clicks_order",
            _npz_with_pickle("clicks_order", _laughs_clicks_order), "load_case", errors=_UNSAFE,
            fragments=("member 'clicks_order'", "billion laughs")),
    Hostile("pickle", "npz_pickle_member_declares_4gib", "a pickled member whose zip header declares 4 GiB",
            lambda d: {"path": F.raw_zip(d / "case.npz", [
                F.member("imgs.npy", F.npy(F.small_case_members()["imgs"])),
                F.member("boxes.npy", F.npy_header((1,), "|O") + P.billion_laughs(), declared=4 << 30)])},
            "load_case", errors=_UNSAFE, fragments=("member 'boxes'", "4.0 GiB", "MEDSEGFM_MAX_PICKLE_BYTES")),
    Hostile("pickle", "npz_pickle_over_configured_bytes", "a 2 KB pickle with MEDSEGFM_MAX_PICKLE_BYTES=1K",
            _npz_with_pickle("boxes", lambda: P.wrap(P.object_array_of(P.s("x" * 2000)))), "load_case",
            errors=_UNSAFE, fragments=("member 'boxes'", "1.0 KiB"), env={"MEDSEGFM_MAX_PICKLE_BYTES": "1K"}),
    Hostile("pickle", "real_cvpr25_file_loads", "the real CT_AMOS sample (positive control, default limits)",
            lambda d: {"path": _shared("cvpr25/imgs/CT_AMOS_amos_0018.npz")}, "load_case", expect="ok",
            check=lambda s: None if s.get("boxes") == 15 else f"boxes {s.get('boxes')} != 15"),
    Hostile("pickle", "real_cvpr25_under_tiny_node_limit", "the real sample with MEDSEGFM_MAX_PICKLE_NODES=100",
            lambda d: {"path": _shared("cvpr25/imgs/CT_AMOS_amos_0018.npz")}, "load_case", errors=_UNSAFE,
            fragments=("member 'boxes'", "MEDSEGFM_MAX_PICKLE_NODES"), env={"MEDSEGFM_MAX_PICKLE_NODES": "100"}),
    # ---- npz size bombs
    Hostile("npz", "imgs_declares_20gib", "imgs header + zip header declare 20 GiB, 100 bytes stored",
            lambda d: {"path": _npz_declared(d, "imgs", (20, 1024, 1024, 1024))}, "load_case", errors=_TOO_BIG,
            fragments=("member 'imgs'", "20.0 GiB")),
    Hostile("npz", "imgs_declares_4gib", "4 GiB declared: under the RAM-based limit, over what is available",
            lambda d: {"path": _npz_declared(d, "imgs", (4, 1024, 1024, 1024))}, "load_case", errors=_TOO_BIG,
            fragments=("member 'imgs'", "4.0 GiB")),
    Hostile("npz", "imgs_shape_wraps_int64", "a shape whose byte count wraps around int64 to 0",
            lambda d: {"path": _npz_declared(d, "imgs", (2**33, 2**33, 2**33), lie=False)}, "load_case",
            fragments=("member 'imgs'",)),
    Hostile("npz", "imgs_negative_shape", "a header with a negative dimension",
            lambda d: {"path": _npz_declared(d, "imgs", (5, -7, 11), lie=False)}, "load_case",
            fragments=("'imgs'", "non-negative")),
    Hostile("npz", "real_zip_bomb_256mib", "a 250 KB member that really inflates to 256 MiB, limit 64M",
            _real_bomb, "load_case", errors=_TOO_BIG, fragments=("member 'imgs'", "256.0 MiB", "64.0 MiB"),
            env={"MEDSEGFM_MAX_ARRAY_BYTES": "64M"}),
    Hostile("npz", "npy_header_bomb", "an .npy header declaring 256 MiB of header text (really there)",
            _npy_header_bomb, "load_case", fragments=("'imgs'", "header declares")),
    Hostile("npz", "gts_wrong_shape_huge", "gts declares (4000, 4000, 4000) for a (5, 7, 11) image",
            lambda d: {"path": _npz_declared(d, "gts", (4000, 4000, 4000))}, "load_case",
            fragments=("'gts'", "(4000, 4000, 4000)", "(5, 7, 11)", "not read")),
    Hostile("npz", "sibling_gts_wrong_shape_huge", "imgs/c.npz with a gts/c.npz declaring 64 GB",
            _sibling_gts, "load_case", fragments=("'gts'", "(4000, 4000, 4000)", "not read")),
    # ---- NIfTI
    Hostile("nifti", "nii_gz_declares_50tb", "a .nii.gz header declaring 30000^3 int16, 8 voxels stored",
            _nii((30000, 30000, 30000)), "load_case", errors=_TOO_BIG, fragments=("voxel data", "TiB")),
    Hostile("nifti", "nii_label_declares_huge", "a *_seg.nii.gz label map declaring 2 GB (labels path)",
            _nii((2000, 1000, 1000), "ct_seg.nii.gz", dtype="uint8"), "load_case", errors=_TOO_BIG,
            fragments=("voxel data",), env={"MEDSEGFM_MAX_ARRAY_BYTES": "1G"}),
    Hostile("nifti", "nii2_dims_overflow", "a NIfTI-2 header with 2^40 x 2^40 x 2^40 voxels",
            _nii((2**40, 2**40, 2**40), "img2.nii", version=2), "load_case"),
    Hostile("nifti", "nii_negative_dim", "a header with a negative dimension",
            _nii((4, -5, 6), "neg.nii"), "load_case"),
    Hostile("nifti", "nan_voxels", "NaN voxels: finite contrast limits and a warning",
            _nii_values("nan"), "layers", expect="ok", check=_finite_limits),
    Hostile("nifti", "inf_voxels", "+inf/-inf voxels: finite contrast limits and a warning",
            _nii_values("inf"), "layers", expect="ok", check=_finite_limits),
    Hostile("nifti", "all_nan_voxels", "only NaN voxels: limits [0, 1] and a warning",
            _nii_values("all_nan"), "layers", expect="ok", check=_finite_limits),
    # ---- HDF5 (medsegpy)
    Hostile("hdf5", "h5_volume_declares_20gib", "a few-KB .h5 whose 'volume' declares 20 GiB",
            _h5_volume, "load_case", errors=_TOO_BIG, fragments=("dataset 'volume'", "20.0 GiB")),
    Hostile("hdf5", "h5_seg_wrong_shape", "'seg' declares another H x W x D than 'volume'",
            _h5_seg, "load_case", fragments=("'seg'", "not read")),
    Hostile("hdf5", "h5_seg_declares_huge", "'seg' with 2^31 channels (the right H x W x D)",
            _h5_seg_huge_same_hwd, "load_case", errors=_TOO_BIG, fragments=("dataset 'seg'",)),
    Hostile("hdf5", "slice_999999999", "one slice named ..._999999999.im (the gap check)",
            _slices((999_999_999,)), "load_case", fragments=("lacks slice(s) [1, 2, 3", "999999988 more")),
    Hostile("hdf5", "slice_declares_huge", "a slice .im whose 'data' declares 100000 x 100000",
            _slices((1, 2), declare=(100_000, 100_000, 1)), "load_case", errors=_TOO_BIG,
            fragments=("dataset 'data'",)),
    Hostile("hdf5", "slices_over_configured_limit", "3 slices stacked, MEDSEGFM_MAX_ARRAY_BYTES=100",
            _slices((1, 2, 3)), "load_case", errors=_TOO_BIG, fragments=("3 slices",),
            env={"MEDSEGFM_MAX_ARRAY_BYTES": "100"}, names_file=False),
    Hostile("json", "medsegpy_sidecar_deep_json", "metadata.json nested 100,000 levels deep",
            _slices((1, 2), sidecar=F.deep_json), "load_case", fragments=("metadata.json", "nested too deeply")),
    Hostile("json", "medsegpy_sidecar_over_limit", "a 2 KB metadata.json with MEDSEGFM_MAX_JSON_BYTES=1K",
            _slices((1, 2), sidecar=lambda p: F.json_file(p, {"categories": ["x" * 2000]})), "load_case",
            fragments=("metadata.json", "MEDSEGFM_MAX_JSON_BYTES"), env={"MEDSEGFM_MAX_JSON_BYTES": "1K"}),
    Hostile("json", "samed2d_mapping_deep_json", "the class mapping nested 100,000 levels deep",
            _samed2d_deep_mapping, "load_case", fragments=("SAMed2D_v1_class_mapping_id.json", "nested too deeply"),
            names_file=False),
    # ---- PNG
    Hostile("png", "png_declares_10g_pixels", "a PNG declaring 100000 x 100000 pixels",
            _png(100_000, 100_000), "load_case", fragments=("100000 x 100000",)),
    Hostile("png", "png_declares_144m_pixels_limit", "12000 x 12000 (PIL only warns), limit 64M",
            _png(12_000, 12_000), "load_case", errors=_TOO_BIG, fragments=("12000 x 12000",),
            env={"MEDSEGFM_MAX_ARRAY_BYTES": "64M"}),
    Hostile("png", "png_mask_declares_10g_pixels", "an 8 x 8 image whose mask PNG declares 100000 x 100000",
            _png_mask_bomb, "load_case", fragments=("--0001_000.png", "100000 x 100000"), names_file=False),
    Hostile("png", "samed2d_fill_gaps_1e9", "slices x_0000 and x_999999999 stacked with fill_gaps",
            _samed2d_gap, "load_case", errors=_TOO_BIG, fragments=("1000000000 slices", "fill_gaps"),
            names_file=False),
    # ---- datasets
    Hostile("dataset", "symlink_loop", "links back to the root and to the folder itself",
            _symlink_loop, "discover", expect="ok", check=_ids(["imgs/a"])),
    Hostile("dataset", "symlink_alias_dir", "a linked alias of the image folder (sorts first)",
            _symlink_alias_dir, "discover", expect="ok", check=_ids(["imgs/a"])),
    Hostile("dataset", "symlink_file_alias", "a second name for one case file",
            _symlink_file_alias, "discover", expect="ok", check=_ids(["imgs/a"])),
    Hostile("dataset", "leftover_temps", "full-size temp files of killed saves beside a case",
            _leftover_temps, "discover", expect="ok",
            check=lambda s: None if s.get("ids") == ["imgs/a"] and s.get("listed") == ["a"] else f"listed {s}"),
    Hostile("dataset", "status_db_garbage", "status.sqlite is 8 KB of random bytes",
            _dataset_with_db("garbage"), "workspace", errors=("StatusDatabaseError",),
            fragments=("not an SQLite database", "left as it is", "medsegfm dataset recover"), names_file=False,
            unchanged=True),
    Hostile("dataset", "status_db_foreign", "status.sqlite is another program's SQLite database",
            _dataset_with_db("foreign"), "workspace", errors=("StatusDatabaseError",),
            fragments=("another program", "photos"), names_file=False, unchanged=True),
    Hostile("dataset", "status_db_truncated", "a real status database cut in half",
            _dataset_with_db("truncated"), "workspace", errors=("StatusDatabaseError",),
            fragments=("damaged", "recover"), names_file=False, unchanged=True),
    Hostile("dataset", "status_db_wal_garbage", "a valid database with a garbage -wal beside it",
            _dataset_with_db("wal"), "workspace", errors=("StatusDatabaseError",),
            fragments=("status.sqlite-wal", "not a valid SQLite WAL"), names_file=False, unchanged=True),
    Hostile("dataset", "catalog_gt_folder_wrong_shape_huge", "X_gt/c.npz declaring (4000, 4000, 4000) labels",
            _catalog_gt_folder, "catalog_load", fragments=("(4000, 4000, 4000)", "val_gt/c.npz", "not read"),
            names_file=False),
    Hostile("dataset", "correction_declares_huge", "an autosaved correction declaring 10^15 voxels",
            _correction_bomb, "workspace_open", fragments=("correction file",), names_file=False),
]


def _shared(rel: str) -> Path:
    env = os.environ.get("MEDSEGFM_TEST_DATA")
    base = Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"
    return base / rel


def counts_by_family(cases: list[Hostile] | None = None) -> dict[str, int]:
    """Number of cases per family, in first-seen order."""
    return dict(Counter(c.family for c in (CASES if cases is None else cases)))


def by_name(name: str) -> Hostile:
    for c in CASES:
        if c.name == name:
            return c
    raise KeyError(name)

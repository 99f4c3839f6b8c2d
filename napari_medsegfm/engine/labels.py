"""The label store of a session: the label image, the one merge, and per-object voxel counts.

:class:`LabelStore` holds two arrays of the volume's spatial shape (``(Z, Y, X)`` or
``(Y, X)``, array axis order), ``uint8`` widened to ``uint16``/``uint32`` for larger ids:

* ``committed``: the labels as of the last recorded step (undo diffs are taken against it);
* ``shared``: the array handed to the GUI, which napari's brush may paint into in place.
  Where it differs from ``committed`` there is an edit not yet committed.

Every write to ``committed`` bumps ``epoch`` and records the box written, so a merge
prepared from a snapshot (on the worker thread) can tell at apply time whether its
region changed meanwhile (:meth:`LabelStore.unchanged_since`).

A result is merged by :func:`merge_block` only (worker and GUI thread alike): it merges
an object's mask into a snapshot of a box of ``committed`` and returns a :class:`Merge`
(the new content, the undo diff, the label ids involved and their voxel-count changes),
which :meth:`LabelStore.write` then copies in. The store does no locking: the session
calls it under its own lock.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass

import numpy as np

from ..utils import label_dtype_for
from .postprocess import BBox, bbox_of, merge_object_mask
from .undo import LabelDiff

__all__ = ["LabelStore", "Merge", "merge_block", "check_label_array", "MAX_LABEL"]

MAX_LABEL = int(np.iinfo(np.uint32).max)


# ----------------------------------------------------------------------- helpers
def present_ids(values: np.ndarray) -> set[int]:
    """Non-zero label values present in ``values``.

    Fast path for the usual case of one label (plus background): two reductions, no
    sort; otherwise bincount (8/16-bit) or unique.
    """
    if values.size == 0:
        return set()
    v = values.ravel()
    mx = int(v.max())
    if mx == 0:
        return set()
    if not np.any((v != 0) & (v != mx)):
        return {mx}
    if v.dtype.itemsize <= 2 and np.issubdtype(v.dtype, np.unsignedinteger):
        ids = np.flatnonzero(np.bincount(v))
    else:
        ids = np.unique(v)
    return {int(i) for i in ids if i != 0}


def value_counts(values: np.ndarray) -> dict[int, int]:
    """``label -> count`` of the non-zero values in ``values`` (bincount for 8/16-bit, else unique)."""
    v = values.ravel()
    if v.size == 0:
        return {}
    if v.dtype.itemsize <= 2 and np.issubdtype(v.dtype, np.unsignedinteger):
        c = np.bincount(v)
        return {int(i): int(c[i]) for i in np.flatnonzero(c) if i != 0}
    u, c = np.unique(v, return_counts=True)
    return {int(i): int(n) for i, n in zip(u, c) if i != 0}


def count_changes(old: np.ndarray, new: np.ndarray) -> tuple[set[int], dict[int, int]]:
    """Labels involved and per-label voxel-count changes, from the values before/after at changed voxels."""
    co, cn = value_counts(old), value_counts(new)
    ids = set(co) | set(cn)
    return ids, {i: cn.get(i, 0) - co.get(i, 0) for i in ids if cn.get(i, 0) != co.get(i, 0)}


def intersects(a: BBox, b: BBox) -> bool:
    """Two boxes (same axes) overlap."""
    return all(x.start < y.stop and y.start < x.stop for x, y in zip(a, b))


def offset(outer: BBox, inner: BBox) -> BBox:
    """``inner`` (relative to ``outer``'s start) in the coordinates of ``outer``'s array."""
    return tuple(slice(o.start + i.start, o.start + i.stop) for o, i in zip(outer, inner))


def nonzero_bbox(arr: np.ndarray, chunk_bytes: int = 1 << 22) -> BBox | None:
    """Bounding box of the non-zero values, by slabs along the first axis (no full-size temporary)."""
    if arr.ndim < 2 or arr.size == 0:
        return bbox_of(arr != 0)
    step = max(1, chunk_bytes // max(1, arr[0].size))
    rows = np.zeros(arr.shape[0], bool)
    rest = [np.zeros(n, bool) for n in arr.shape[1:]]
    for z in range(0, arr.shape[0], step):
        nz = arr[z:z + step] != 0
        rows[z:z + step] = nz.reshape(nz.shape[0], -1).any(axis=1)
        if rows[z:z + step].any():
            for ax in range(1, arr.ndim):
                rest[ax - 1] |= nz.any(axis=tuple(a for a in range(arr.ndim) if a != ax))
    idx = np.flatnonzero(rows)
    if idx.size == 0:
        return None
    out = [slice(int(idx[0]), int(idx[-1]) + 1)]
    for r in rest:
        i = np.flatnonzero(r)
        out.append(slice(int(i[0]), int(i[-1]) + 1))
    return tuple(out)


def fast_bbox(mask: np.ndarray) -> BBox | None:
    """:func:`bbox_of` of a bool mask in about one pass (first axis first, then only its range)."""
    if mask.ndim < 2 or mask.size == 0:
        return bbox_of(mask)
    flat = mask.reshape(mask.shape[0], -1)
    if flat.flags.c_contiguous and flat.shape[1] % 8 == 0:
        first = flat.view(np.uint64).any(axis=1)
    else:
        first = flat.any(axis=1)
    idx = np.flatnonzero(first)
    if idx.size == 0:
        return None
    lo, hi = int(idx[0]), int(idx[-1]) + 1
    rest = bbox_of(mask[lo:hi].any(axis=0))
    assert rest is not None
    return (slice(lo, hi),) + rest


def check_label_array(arr: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
    """``arr`` as integer labels of ``shape`` (bool -> uint8); ``ValueError`` naming ``what`` otherwise.

    Float arrays are accepted when every value is integral; negative values and values
    above :data:`MAX_LABEL` are refused.
    """
    if arr.shape != tuple(shape):
        raise ValueError(f"{what} has shape {arr.shape}; expected {tuple(shape)}")
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        if arr.size and not np.all(np.mod(arr, 1) == 0):
            raise ValueError(f"{what} must hold integer label values; got dtype {arr.dtype}")
        arr = arr.astype(np.int64)
    if arr.size and np.issubdtype(arr.dtype, np.signedinteger) and int(arr.min()) < 0:
        raise ValueError(f"{what} has negative label {int(arr.min())}; labels must be >= 0")
    if arr.size and int(arr.max()) > MAX_LABEL:
        raise ValueError(f"{what} has label {int(arr.max())} > {MAX_LABEL}")
    return arr


# ------------------------------------------------------------------------- merge
@dataclass
class Merge:
    """One object's mask merged into a snapshot of ``committed[roi]`` (not written yet).

    Attributes
    ----------
    epoch : int
        The store's epoch when the snapshot was taken.
    roi : tuple of slice
        The snapshot's box (array axis order).
    overwrite : bool
        The object's ``overwrite`` flag the merge used.
    dtype : np.dtype
        The labels' dtype the merge used.
    diff : LabelDiff or None
        The undo diff (compression pending); ``None``: the merge changes nothing.
    new : np.ndarray or None
        The new content of ``diff.bbox``.
    ids : frozenset of int
        The object and the objects it took voxels from.
    deltas : dict of int to int
        Voxel-count change per label id.
    """

    epoch: int
    roi: BBox
    overwrite: bool
    dtype: np.dtype
    diff: LabelDiff | None
    new: np.ndarray | None
    ids: frozenset[int]
    deltas: dict[int, int]


def merge_block(old: np.ndarray, mask: np.ndarray, label_id: int, overwrite: bool,
                roi: BBox, epoch: int) -> Merge:
    """Merge ``mask`` (the object's new mask over ``roi``) into ``old`` (a copy of ``committed[roi]``).

    ``old`` is not modified. The rules are those of
    :func:`~napari_medsegfm.engine.postprocess.merge_object_mask`.
    """
    new = old.copy()
    merge_object_mask(new, mask, label_id, overwrite=overwrite, roi=tuple(slice(0, n) for n in new.shape))
    changed = old != new
    inner = fast_bbox(changed)
    if inner is None:
        return Merge(epoch, roi, overwrite, old.dtype, None, None, frozenset({label_id}), {})
    ch = changed[inner]
    o, n = old[inner], np.ascontiguousarray(new[inner])
    ids, deltas = count_changes(o[ch], n[ch])
    ids.add(label_id)
    # the raw XOR is kept; zlib runs later on the worker thread
    diff = LabelDiff.from_xor(offset(roi, inner), np.bitwise_xor(o, n), ids, defer=True)
    return Merge(epoch, roi, overwrite, old.dtype, diff, n, frozenset(ids), deltas)


@dataclass
class Written:
    """What :meth:`LabelStore.commit_region` wrote: the diff, the new content, the ids."""

    diff: LabelDiff
    content: np.ndarray
    ids: set[int]
    ids_new: set[int]
    replaced: bool


# ------------------------------------------------------------------------- store
class LabelStore:
    """Committed and shared label arrays, write epochs and per-object voxel counts.

    Parameters
    ----------
    shape : tuple of int
        Spatial shape ``(Z, Y, X)`` or ``(Y, X)``.
    labels : np.ndarray, optional
        Initial labels of ``shape`` (copied; checked by :func:`check_label_array`).
    """

    def __init__(self, shape: tuple[int, ...], labels: np.ndarray | None = None) -> None:
        self.shape = tuple(int(s) for s in shape)
        if labels is None:
            lab = np.zeros(self.shape, dtype=np.uint8)
        else:
            lab = check_label_array(np.asarray(labels), self.shape, "labels")
            mx = int(lab.max()) if lab.size else 0
            lab = lab.astype(label_dtype_for(max(mx, 1)), copy=True)
        self.committed = lab
        self.shared = lab.copy()
        #: label_id -> voxels in ``committed``; filled lazily by :meth:`count`
        self.counts: dict[int, int] = {}
        self.epoch = 0
        self._mods: deque[tuple[int, BBox | None]] = deque(maxlen=512)

    @property
    def dtype(self) -> np.dtype:
        """dtype of both label arrays (uint8, uint16 or uint32)."""
        return self.committed.dtype

    def sha256(self) -> str:
        """SHA-256 of the committed labels' bytes (C order)."""
        a = np.ascontiguousarray(self.committed)
        return hashlib.sha256(memoryview(a).cast("B") if a.size else b"").hexdigest()

    def initial_objects(self) -> dict[int, BBox | None]:
        """``label_id -> bounding box`` of every non-zero value (one ``find_objects`` pass)."""
        lab = self.committed
        mx = int(lab.max()) if lab.size else 0
        if mx == 0:
            return {}
        if mx <= 65535:
            from scipy import ndimage

            # find_objects is a slow per-voxel loop: run it on the box holding all labels only
            fg = nonzero_bbox(lab)
            assert fg is not None
            sub = lab[fg]
            found = ndimage.find_objects(sub if sub.dtype.itemsize <= 2 else sub.astype(np.int32))
            return {i + 1: offset(fg, sl) for i, sl in enumerate(found) if sl is not None}
        return {int(i): bbox_of(lab == i) for i in np.unique(lab) if i != 0}

    # ------------------------------------------------------------ bookkeeping
    def ensure_dtype(self, max_label: int) -> bool:
        """Widen both arrays for ``max_label``; True when they were replaced."""
        need = label_dtype_for(int(max_label))
        if need.itemsize <= self.committed.dtype.itemsize:
            return False
        self.committed = self.committed.astype(need)
        self.shared = self.shared.astype(need)
        self.touch(None)
        return True

    def touch(self, bbox: BBox | None) -> None:
        """Record a write to ``committed`` (``None``: everywhere)."""
        self.epoch += 1
        self._mods.append((self.epoch, bbox))

    def unchanged_since(self, epoch: int, roi: BBox) -> bool:
        """No write since ``epoch`` touched ``roi`` (False when that history was trimmed)."""
        if epoch == self.epoch:
            return True
        mods = self._mods
        if not mods or mods[0][0] > epoch + 1:
            return False
        for ep, bb in reversed(mods):
            if ep <= epoch:
                break
            if bb is None or intersects(bb, roi):
                return False
        return True

    def add_counts(self, deltas: dict[int, int]) -> None:
        """Follow voxel-count changes (``label_id -> delta``) of the ids counted so far."""
        for i, d in deltas.items():
            if i in self.counts:
                self.counts[i] += d

    def count(self, label_id: int, bbox: BBox | None) -> int:
        """Voxels of ``label_id`` in ``committed``, counted in ``bbox`` on first use, then followed."""
        n = self.counts.get(label_id)
        if n is None:
            n = 0 if bbox is None else int(np.count_nonzero(self.committed[bbox] == label_id))
            self.counts[label_id] = n
        return n

    def uncommitted(self, roi: BBox) -> bool:
        """``shared`` differs from ``committed`` inside ``roi`` (an in-place edit not yet committed)."""
        return not np.array_equal(self.shared[roi], self.committed[roi])

    def snapshot(self, roi: BBox) -> tuple[int, np.ndarray]:
        """``(epoch, copy of committed[roi])`` for :func:`merge_block`."""
        return self.epoch, self.committed[roi].copy()

    # ----------------------------------------------------------------- writes
    def write(self, merge: Merge) -> None:
        """Copy a merge's new content into both arrays and follow its counts."""
        if merge.diff is None:
            return
        self.committed[merge.diff.bbox] = merge.new
        self.shared[merge.diff.bbox] = merge.new
        self.touch(merge.diff.bbox)
        self.add_counts(merge.deltas)

    def commit_region(self, box: BBox, region: np.ndarray) -> Written | None:
        """Write ``region`` (new labels of ``box``) into both arrays; ``None`` when nothing changes."""
        mx = int(region.max()) if region.size else 0
        replaced = self.ensure_dtype(mx) if mx > np.iinfo(self.committed.dtype).max else False
        old = self.committed[box]
        diff = LabelDiff.between(old, region, offset=box, defer=True)
        if diff is None:
            return None
        inner = tuple(slice(d.start - b.start, d.stop - b.start) for d, b in zip(diff.bbox, box))
        content = np.array(region[inner], dtype=self.committed.dtype)
        old_content = self.committed[diff.bbox]
        changed = old_content != content
        count_old = value_counts(old_content[changed])
        count_new = value_counts(content[changed])
        ids = set(count_old) | set(count_new)
        self.committed[diff.bbox] = content
        self.shared[diff.bbox] = content
        self.touch(diff.bbox)
        self.add_counts({i: count_new.get(i, 0) - count_old.get(i, 0) for i in ids})
        return Written(diff.with_label_ids(ids), content, ids, set(count_new), replaced)

    def erase(self, label_id: int, bbox: BBox) -> LabelDiff | None:
        """Set the voxels of ``label_id`` inside ``bbox`` (all of them) to 0; the undo diff."""
        old = self.committed[bbox].copy()
        reg = self.committed[bbox]
        reg[reg == label_id] = 0
        diff = LabelDiff.between(old, reg, offset=bbox, label_ids={label_id}, defer=True)
        if diff is not None:
            self.shared[diff.bbox] = self.committed[diff.bbox]
            self.touch(diff.bbox)
        self.counts[label_id] = 0  # the box held every voxel of the object
        return diff

    def apply_diff(self, diff: LabelDiff) -> None:
        """Undo/redo one diff on both arrays (XOR) and follow the counts."""
        x = diff.xor()  # the raw block while its compression is pending: no wait
        cur = self.committed[diff.bbox]
        ch = x != 0
        before_vals = cur[ch]
        _, deltas = count_changes(before_vals, before_vals ^ x[ch].astype(cur.dtype, copy=False))
        diff.apply(self.committed)
        self.shared[diff.bbox] = self.committed[diff.bbox]
        self.touch(diff.bbox)
        self.add_counts(deltas)

    def ids_in_diff(self, diff: LabelDiff) -> set[int]:
        """Label ids present before or after at the changed voxels of ``diff`` (current state + XOR)."""
        if diff.label_ids is not None:
            return set(diff.label_ids)
        x = diff.xor()
        cur = self.committed[diff.bbox]
        ch = x != 0
        vals = cur[ch]
        other = vals ^ x[ch].astype(cur.dtype, copy=False)
        return present_ids(vals) | present_ids(other)

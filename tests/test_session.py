"""AnnotationSession: objects, validation, merge rules, dtype promotion, edits, undo/redo, listeners."""

from __future__ import annotations

import numpy as np
import pytest
from _engine_fakes import BoxOnly, FillBox, load_real_crop

from napari_medsegfm.backends.base import UnsupportedPromptError
from napari_medsegfm.engine.postprocess import merge_object_mask
from napari_medsegfm.engine.session import AnnotationSession, Change, InferenceResult
from napari_medsegfm.types import Box2D, Box3D, ObjectStatus, Point, Scribble, TextPrompt, Volume

SHAPE = (8, 32, 32)


@pytest.fixture
def vol():
    rng = np.random.default_rng(0)
    return Volume(rng.integers(0, 255, SHAPE, dtype=np.uint8), spacing=(2.0, 1.0, 1.0))


@pytest.fixture
def sess(vol):
    s = AnnotationSession(vol, FillBox(), use_worker=False)
    yield s
    s.close()


def box_mask(shape, z0, z1, y0, x0, y1, x1):
    m = np.zeros(shape, bool)
    m[z0:z1 + 1, y0:y1 + 1, x0:x1 + 1] = True
    return m


# ------------------------------------------------------------------ objects
def test_objects_add_ids_names_colors(sess):
    a = sess.add_object("liver")
    b = sess.add_object()
    c = sess.add_object("tumour", color=(1, 0, 0), label_id=7, overwrite=True)
    assert (a.label_id, b.label_id, c.label_id) == (1, 2, 7)
    assert a.name == "liver" and b.name == "object 2"
    assert c.color == (1.0, 0.0, 0.0, 1.0) and c.overwrite
    assert a.color != b.color and all(0 <= v <= 1 for v in a.color)
    assert sess.add_object().label_id == 8
    assert set(sess.objects) == {1, 2, 7, 8}
    with pytest.raises(ValueError, match="already used"):
        sess.add_object(label_id=7)
    with pytest.raises(ValueError, match="label_id"):
        sess.add_object(label_id=0)
    with pytest.raises(ValueError, match="color"):
        sess.add_object(color=(2, 0, 0))
    sess.rename_object(1, "liver L")
    sess.set_object_color(1, (0, 1, 0, 0.5))
    sess.set_overwrite(1, True)
    o = sess.objects[1]
    assert (o.name, o.color, o.overwrite) == ("liver L", (0.0, 1.0, 0.0, 0.5), True)
    with pytest.raises(ValueError, match="unknown object id 99"):
        sess.rename_object(99, "x")


def test_labels_promote_to_uint16_beyond_255_objects(sess):
    seen: list[Change] = []
    sess.add_listener(seen.append)
    for _ in range(255):
        sess.add_object()
    assert sess.labels.dtype == np.uint8
    old_array = sess.labels
    o = sess.add_object()
    assert o.label_id == 256
    assert sess.labels.dtype == np.uint16 and sess.labels is not old_array
    assert seen[-1].labels_replaced and not any(c.labels_replaced for c in seen[:-1])
    r = sess.add_prompt(Box3D(1, 2, 3, 3, 6, 6, object_id=256))
    assert r.error is None
    assert int(sess.labels.max()) == 256
    assert np.array_equal(sess.labels == 256, box_mask(SHAPE, 1, 2, 3, 3, 6, 6))
    # undo across the promotion keeps exact values (diffs made in uint8 still apply)
    sess.undo()
    assert sess.labels.max() == 0 and sess.labels.dtype == np.uint16


# --------------------------------------------------------------- validation
def test_prompt_validation_names_the_bad_value(sess):
    sess.add_object()
    with pytest.raises(ValueError, match="unknown object id 5"):
        sess.add_prompt(Box3D(0, 1, 0, 0, 3, 3, object_id=5))
    with pytest.raises(ValueError, match=r"z_max=8 is outside the volume"):
        sess.add_prompt(Box3D(0, 8, 0, 0, 3, 3, object_id=1))
    with pytest.raises(ValueError, match=r"zyx\[2\]=40"):
        sess.submit(Point((1, 2, 40), object_id=1))
    with pytest.raises(ValueError, match="Box2D on a 3D volume"):
        sess.add_prompt(Box2D(0, 0, 3, 3, object_id=1))
    with pytest.raises(ValueError, match="x_min=5 > x_max=3"):
        Box3D(0, 1, 0, 5, 3, 3)
    with pytest.raises(UnsupportedPromptError, match="cannot serve a text prompt"):
        sess.add_prompt(TextPrompt("liver", object_id=1))
    # nothing was recorded for rejected prompts
    assert sess.prompts_of(1) == [] and sess.pending_prompts(1) == []
    assert sess.labels.max() == 0


def test_capability_check_per_backend(vol):
    with AnnotationSession(vol, BoxOnly(), use_worker=False) as s:
        s.add_object()
        s.add_prompt(Box3D(0, 1, 0, 0, 3, 3))
        with pytest.raises(UnsupportedPromptError, match="point prompt"):
            s.submit(Point((0, 1, 1)))
    with AnnotationSession(vol, None, use_worker=False) as s:
        s.add_object()
        with pytest.raises(ValueError, match="no backend"):
            s.add_prompt(Box3D(0, 1, 0, 0, 3, 3))
        s.set_backend(FillBox())
        assert s.add_prompt(Box3D(0, 1, 0, 0, 3, 3)).applied


# ------------------------------------------------------------------- merging
def test_result_touches_only_its_object_unless_overwrite(sess):
    a, b = sess.add_object("a").label_id, sess.add_object("b").label_id
    sess.add_prompt(Box3D(0, 3, 0, 0, 15, 15, object_id=a))
    sess.add_prompt(Box3D(2, 5, 10, 10, 25, 25, object_id=b))
    A, B = box_mask(SHAPE, 0, 3, 0, 0, 15, 15), box_mask(SHAPE, 2, 5, 10, 10, 25, 25)
    assert np.array_equal(sess.labels == a, A)
    assert np.array_equal(sess.labels == b, B & ~A)  # b did not take a's voxels
    # a second prompt on a (FillBox: union of its boxes) leaves b untouched
    sess.add_prompt(Box3D(0, 1, 0, 0, 4, 4, object_id=a))
    assert len(sess.prompts_of(a)) == 2
    assert np.array_equal(sess.labels == a, A)
    assert np.array_equal(sess.labels == b, B & ~A)
    # with overwrite, b takes everything in its box
    sess.set_overwrite(b, True)
    seen: list[Change] = []
    sess.add_listener(seen.append)
    sess.add_prompt(Box3D(2, 5, 10, 10, 25, 25, object_id=b))
    assert seen[-1].label_ids == (a, b)  # the victim is reported too (voxel counts change)
    assert np.array_equal(sess.labels == b, B)
    assert np.array_equal(sess.labels == a, A & ~B)


def test_prompts_accumulate_and_clicks_refine_prev_mask(sess):
    lid = sess.add_object().label_id
    r1 = sess.add_prompt(Box3D(2, 4, 5, 5, 20, 20, object_id=lid))
    assert r1.applied and r1.prompts == (r1.prompt,)
    assert sess.objects[lid].status == ObjectStatus.PROMPTED
    p2 = Point((3, 12, 12), positive=False, object_id=lid)
    r2 = sess.add_prompt(p2)
    assert r2.prompts == (r1.prompt, p2)
    assert sess.prompts_of(lid) == [r1.prompt, p2]
    assert sess.labels[3, 12, 12] == 0 and sess.labels[3, 6, 6] == lid
    sc = Scribble(np.array([[3, 25, 25], [3, 25, 26]]), object_id=lid)
    sess.add_prompt(sc)
    assert sess.labels[3, 25, 26] == lid


def test_apply_result_rejects_stale_and_double_apply(sess):
    lid = sess.add_object().label_id
    r = sess.add_prompt(Box3D(0, 1, 0, 0, 3, 3, object_id=lid))
    assert r.applied and not sess.apply_result(r)  # applying twice is a no-op
    fake_old = InferenceResult(generation=r.generation - 1, label_id=lid, prompt=r.prompt,
                               mask=np.ones(SHAPE, bool))
    assert not sess.apply_result(fake_old) and fake_old.stale
    assert np.count_nonzero(sess.labels) == 2 * 4 * 4


def test_delete_reset_accept(sess):
    a, b = sess.add_object().label_id, sess.add_object().label_id
    sess.add_prompt(Box3D(0, 2, 0, 0, 9, 9, object_id=a))
    sess.add_prompt(Box3D(0, 2, 20, 20, 29, 29, object_id=b))
    sess.accept_object(a)
    assert sess.objects[a].status == ObjectStatus.ACCEPTED and sess.prompts_of(a) == []
    assert (sess.labels == a).sum() == 300
    sess.reset_object(b)
    assert (sess.labels == b).sum() == 0 and sess.objects[b].status == ObjectStatus.EMPTY
    sess.delete_object(a)
    assert a not in sess.objects and sess.labels.max() == 0
    sess.undo()  # undelete: object and voxels back
    assert sess.objects[a].status == ObjectStatus.ACCEPTED and (sess.labels == a).sum() == 300
    sess.undo()  # un-reset b
    assert (sess.labels == b).sum() == 300 and len(sess.prompts_of(b)) == 1
    sess.undo()  # un-accept a: its prompts are back
    assert sess.objects[a].status == ObjectStatus.PROMPTED and len(sess.prompts_of(a)) == 1


# --------------------------------------------------------------------- edits
def test_edit_in_place_region_and_full_with_shadow(sess):
    seen: list[Change] = []
    sess.add_listener(seen.append)
    lid = sess.add_object().label_id
    sess.add_prompt(Box3D(1, 2, 4, 4, 9, 9, object_id=lid))
    before = sess.labels.copy()
    # 1) napari brush: in place on the shared array, then commit by bbox
    sess.labels[1, 5:7, 20:22] = lid
    ch = sess.apply_edit(bbox=(slice(1, 2), slice(0, 32), slice(16, 32)))
    assert ch is not None and ch.kind == "edit"
    assert ch.bbox == (slice(1, 2), slice(5, 7), slice(20, 22))  # tightened to the changed voxels
    assert seen[-1] is ch and sess.objects[lid].status == ObjectStatus.EDITED
    after1 = sess.labels.copy()
    # 2) new content of a region (a copy), painting a new label: object auto-created
    reg = sess.labels[2:3, 0:4, 0:4].copy()
    reg[:] = 9
    ch2 = sess.apply_edit(reg, bbox=(slice(2, 3), slice(0, 4), slice(0, 4)))
    assert 9 in sess.objects and ch2.label_ids == (9,)
    after2 = sess.labels.copy()
    # 3) a full label image: erase everything of lid
    full = sess.labels.copy()
    full[full == lid] = 0
    sess.apply_edit(full)
    assert (sess.labels == lid).sum() == 0
    # undo walks back exactly
    sess.undo()
    assert np.array_equal(sess.labels, after2)
    sess.undo()
    assert np.array_equal(sess.labels, after1) and 9 not in sess.objects
    sess.undo()
    assert np.array_equal(sess.labels, before)
    sess.redo()
    sess.redo()
    assert np.array_equal(sess.labels, after2) and 9 in sess.objects
    # a no-op edit is not a step
    n = len(sess.undo_stack)
    assert sess.apply_edit() is None and len(sess.undo_stack) == n
    with pytest.raises(ValueError, match="expected the labels shape"):
        sess.apply_edit(np.zeros((3, 3, 3), np.uint8), bbox=(slice(0, 2), slice(0, 2), slice(0, 2)))
    with pytest.raises(ValueError, match="negative"):
        sess.apply_edit(-np.ones(SHAPE, np.int16))


def test_uncommitted_in_place_edit_is_absorbed_not_corrupted(sess):
    lid = sess.add_object().label_id
    sess.add_prompt(Box3D(0, 3, 0, 0, 9, 9, object_id=lid))
    committed = sess.labels.copy()
    sess.labels[0, 0:3, 0:3] = 0  # brush stroke the GUI forgot to commit
    stroke = sess.labels.copy()
    # undo must not XOR over the stroke: it first commits it, then undoes exactly that stroke
    sess.undo()
    assert np.array_equal(sess.labels, committed)
    sess.redo()
    assert np.array_equal(sess.labels, stroke)
    sess.undo()
    sess.undo()
    assert sess.labels.max() == 0


def test_undo_redo_many_levels_across_kinds(sess):
    states = [sess.labels.copy()]
    lid = sess.add_object().label_id
    states.append(sess.labels.copy())
    rng = np.random.default_rng(1)
    for i in range(120):
        if i % 3 == 0:
            z, y, x = rng.integers(0, [7, 28, 28])
            sess.add_prompt(Box3D(z, z + 1, y, x, y + 3, x + 3, object_id=lid))
        elif i % 3 == 1:
            sess.add_prompt(Point(tuple(int(v) for v in rng.integers(0, [8, 32, 32])), bool(i % 2), object_id=lid))
        else:
            z, y, x = rng.integers(0, [8, 30, 30])
            sess.labels[z, y:y + 2, x:x + 2] = (i % 5)
            sess.apply_edit(bbox=(slice(z, z + 1), slice(y, y + 2), slice(x, x + 2)))
        states.append(sess.labels.copy())
    # drop no-op steps (a result may change nothing): compare after each undo to the
    # labels before the matching step, walking back through the recorded history
    n_steps = len(sess.undo_stack)
    assert n_steps >= 100
    seen_back = [sess.labels.copy()]
    for _ in range(n_steps):
        assert sess.undo() is not None
        seen_back.append(sess.labels.copy())
    assert not sess.can_undo and sess.labels.max() == 0 and not sess.objects
    for _ in range(n_steps):
        sess.redo()
    assert np.array_equal(sess.labels, states[-1])
    # the walk back visits every recorded state in reverse (steps that changed labels)
    distinct_fwd = [s for i, s in enumerate(states) if i == 0 or not np.array_equal(s, states[i - 1])]
    distinct_back = [s for i, s in enumerate(seen_back[::-1]) if i == 0 or not np.array_equal(s, seen_back[::-1][i - 1])]
    assert len(distinct_fwd) == len(distinct_back)
    assert all(np.array_equal(a, b) for a, b in zip(distinct_fwd, distinct_back))


def test_undo_levels_bound(vol):
    with AnnotationSession(vol, FillBox(), use_worker=False, undo_levels=5) as s:
        for _ in range(9):
            s.add_object()
        n = 0
        while s.undo() is not None:
            n += 1
        assert n == 5 and set(s.objects) == {1, 2, 3, 4}


def test_listener_gets_tight_bbox_of_result(sess):
    seen = []
    sess.add_listener(seen.append)
    lid = sess.add_object().label_id
    sess.add_prompt(Box3D(2, 3, 4, 5, 10, 12, object_id=lid))
    ch = seen[-1]
    assert ch.kind == "result" and ch.labels_changed
    assert ch.bbox == (slice(2, 4), slice(4, 11), slice(5, 13))
    sess.remove_listener(seen.append)
    sess.undo()
    assert seen[-1] is ch


def test_initial_labels_become_objects_and_are_copied(vol):
    lab = np.zeros(SHAPE, np.int32)
    lab[0, 0:2, 0:2] = 3
    lab[5, 10:12, 10:14] = 300
    with AnnotationSession(vol, FillBox(), labels=lab, use_worker=False, label_names={3: "kidney"}) as s:
        assert s.labels.dtype == np.uint16 and s.labels is not lab
        assert set(s.objects) == {3, 300} and s.objects[3].name == "kidney"
        assert s.object_voxels(300) == 8 and s.object_volume_ml(300) == pytest.approx(8 * 2 / 1000)
        assert s.add_object().label_id == 301
        assert s.add_prompt(Box3D(0, 0, 1, 1, 3, 3, object_id=3)).applied
        assert (s.labels == 3).sum() == 9  # the old voxels outside the new box are gone
    with pytest.raises(ValueError, match=r"labels has shape \(2, 2\)"):
        AnnotationSession(vol, labels=np.zeros((2, 2), np.uint8))


def test_2d_rgb_volume(shared_data):
    rgb = np.zeros((40, 50, 3), np.uint8)
    with AnnotationSession(Volume.rgb(rgb), FillBox(), use_worker=False) as s:
        assert s.labels.shape == (40, 50)
        lid = s.add_object().label_id
        s.add_prompt(Box2D(5, 6, 10, 20, object_id=lid))
        assert (s.labels == lid).sum() == 6 * 15
        with pytest.raises(ValueError, match="Box3D needs a 3D volume"):
            s.add_prompt(Box3D(0, 0, 0, 0, 1, 1, object_id=lid))


def test_real_ct_crop_two_objects_from_gt_boxes(shared_data):
    img, gts, sp = load_real_crop(shared_data)
    vol = Volume(img, spacing=sp)
    ids = [int(i) for i in np.unique(gts) if i][:2]
    with AnnotationSession(vol, FillBox(), use_worker=False) as s:
        for i in ids:
            s.add_object(f"gt {i}", label_id=i)
            z, y, x = np.nonzero(gts == i)
            s.add_prompt(Box3D(z.min(), z.max(), y.min(), x.min(), y.max(), x.max(), object_id=i))
        first = np.nonzero(gts == ids[0])
        # the first object's box is filled exactly
        assert (s.labels == ids[0]).sum() == np.prod([a.max() - a.min() + 1 for a in first])
        # every gt voxel of the first object is covered by it
        assert np.all(s.labels[gts == ids[0]] == ids[0])
        before = s.labels.copy()
        s.undo()
        assert (s.labels == ids[-1]).sum() == 0
        s.redo()
        assert np.array_equal(s.labels, before)


def test_roi_fast_path_matches_full_merge(sess):
    """apply_result touches only where the mask changed; labels must equal a full-volume merge."""
    rng = np.random.default_rng(7)
    ids = [sess.add_object().label_id for _ in range(4)]
    ref = sess.labels.copy()
    for i in range(80):
        lid = ids[int(rng.integers(len(ids)))]
        if i % 9 == 0:
            sess.set_overwrite(lid, not sess.objects[lid].overwrite)
        if i % 4 == 0:
            z, y, x = (int(v) for v in rng.integers(0, [6, 24, 24]))
            p = Box3D(z, z + 2, y, x, y + 7, x + 7, object_id=lid)
        elif i % 4 == 3:
            p = Scribble(rng.integers(0, SHAPE, size=(5, 3)), positive=bool(i % 2), object_id=lid)
        else:
            p = Point(tuple(int(v) for v in rng.integers(0, SHAPE)), positive=bool(rng.random() < 0.6),
                      object_id=lid)
        r = sess.add_prompt(p)
        assert r.applied
        merge_object_mask(ref, r.mask, lid, overwrite=sess.objects[lid].overwrite)
        assert np.array_equal(sess.labels, ref), f"step {i}"


def test_result_type_is_public_fields_only_and_add_prompts_sends_one_request(sess):
    import dataclasses

    assert [f.name for f in dataclasses.fields(InferenceResult) if f.name.startswith("_")] == []
    a = sess.add_object("a").label_id
    b = sess.add_object("b").label_id
    with pytest.raises(ValueError, match="one object"):
        sess.add_prompts([Point((3, 10, 10), True, a), Point((3, 12, 12), True, b)])
    with pytest.raises(ValueError, match="at least one"):
        sess.add_prompts([])
    sha0 = sess.labels_sha256()
    res = sess.add_prompts([Box3D(2, 5, 4, 4, 20, 20, object_id=a), Point((3, 30, 30), True, a)])
    assert res.applied and len(res.prompts) == 2 and sess.prompts_of(a) == list(res.prompts)
    assert sess.labels_sha256() != sha0
    sess.labels[0, 0, 0] = b  # an in-place stroke not committed yet does not count
    sha1 = sess.labels_sha256()
    sess.apply_edit(bbox=(slice(0, 1), slice(0, 1), slice(0, 1)))
    assert sess.labels_sha256() != sha1

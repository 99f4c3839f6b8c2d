"""Prompt log (JSON lines) and exact replay with a deterministic backend."""

from __future__ import annotations

import json
import queue

import numpy as np
import pytest
from _engine_fakes import Crash, FillBox, load_real_crop

from napari_medsegfm.engine.promptlog import PromptLog, decode_array, encode_array, read_log
from napari_medsegfm.engine.session import AnnotationSession, replay_log
from napari_medsegfm.types import Box3D, Point, Scribble, Volume, prompt_from_dict


def _scripted_session(vol, log_path, labels=None):
    """A session mixing async and sync prompts, edits, object ops, undo/redo and an error."""
    s = AnnotationSession(vol, FillBox(), labels=labels, log_path=log_path)
    q: queue.Queue = queue.Queue()

    def settle():
        assert s.worker.wait_idle(10)
        while not q.empty():
            s.apply_result(q.get())

    Z, Y, X = vol.spatial_shape
    a = s.add_object("liver", label_id=11).label_id
    b = s.add_object("spleen", color=(0.1, 0.2, 0.3)).label_id
    s.submit(Box3D(1, Z - 2, 5, 5, Y // 2, X // 2, object_id=a), q.put)
    settle()
    # a burst on b: superseded prompts are carried by the last request
    for k in range(5):
        s.submit(Box3D(2, 4, Y // 2 - k, X // 2, Y - 3, X - 3, object_id=b), q.put)
    s.submit(Point((3, Y - 5, X - 5), positive=False, object_id=b), q.put)
    settle()
    s.add_prompt(Scribble(np.array([[2, 3, 3], [2, 3, 4], [2, 4, 4]]), object_id=a))
    s.labels[2, Y // 2 - 4:Y // 2 + 4, X // 2 - 4:X // 2 + 4] = b  # brush
    s.apply_edit(bbox=(slice(2, 3), slice(0, Y), slice(0, X)))
    s.set_overwrite(b, True)
    s.add_prompt(Point((4, 8, 8), object_id=b))
    s.undo()
    s.undo()
    s.redo()
    s.rename_object(a, "liver (edited)")
    c = s.add_object("tumour").label_id
    s.add_prompt(Box3D(0, 1, 0, 0, 6, 6, object_id=c))
    # an error: logged, changes nothing
    s.set_backend(Crash(bad_ids=[c]))
    s.add_prompt(Point((0, 3, 3), object_id=c))
    s.set_backend(FillBox())
    s.add_prompt(Point((0, 20, 20), object_id=a))
    s.accept_object(a)
    s.reset_object(c)
    s.undo()
    s.delete_object(b)
    s.close()
    return s


def test_log_file_is_json_lines_with_every_prompt_and_timing(tmp_path):
    vol = Volume(np.zeros((8, 40, 40), np.uint8))
    path = tmp_path / "logs" / "session.jsonl"
    s = _scripted_session(vol, path)
    lines = path.read_text().splitlines()
    recs = [json.loads(line) for line in lines]
    assert recs == s.log.records
    assert recs[0]["type"] == "session" and recs[0]["shape"] == [8, 40, 40]
    assert recs[-1]["type"] == "close"
    assert [r["seq"] for r in recs] == list(range(len(recs)))
    prompts = [r for r in recs if r["type"] == "prompt"]
    assert len(prompts) == 1 + 6 + 1 + 1 + 1 + 1 + 1  # every submitted prompt
    for r in prompts:
        prompt_from_dict(r["prompt"])  # round-trips
    results = [r for r in recs if r["type"] == "result"]
    statuses = [r["status"] for r in results]
    assert statuses.count("error") == 1 and "applied" in statuses
    for r in results:
        assert r["backend"] and r["elapsed_s"] >= 0 and "queued_s" in r
    applied = [r for r in results if r["status"] == "applied"]
    # the burst on b: the applied result carries all six prompts of the burst
    assert max(len(r["prompts"]) for r in applied) == 6
    assert all("apply_s" in r and "bbox" in r for r in applied)
    backends = [r for r in recs if r["type"] == "backend"]
    assert [r["name"] for r in backends] == ["crash", "fillbox"] and backends[1]["params"]["radius"] == 2
    kinds = {r["type"] for r in recs}
    assert {"edit", "undo", "redo", "object_add", "object_rename", "object_overwrite", "object_accept",
            "object_reset", "object_delete"} <= kinds


def test_replay_reproduces_labels_exactly(tmp_path, shared_data):
    img, gts, sp = load_real_crop(shared_data, size=(10, 48, 48))
    vol = Volume(img, spacing=sp)
    path = tmp_path / "s.jsonl"
    init = (gts == gts.max()).astype(np.uint8) * 5  # an initial label image (object 5)
    s = _scripted_session(vol, path, labels=init)
    final = s.labels.copy()
    objects = {k: (o.name, o.color, o.status, o.overwrite) for k, o in s.objects.items()}
    assert len(set(np.unique(final).tolist())) >= 3
    # from the file, on a fresh session with the same volume and initial labels
    r = AnnotationSession(vol, FillBox(), labels=init, use_worker=False)
    n = r.replay(path)
    assert n > 10
    assert np.array_equal(r.labels, final)
    assert {k: (o.name, o.color, o.status, o.overwrite) for k, o in r.objects.items()} == objects
    assert r.prompts_of(11) == s.prompts_of(11)
    # the replayed session's undo history works like the original's
    while r.undo() is not None:
        pass
    assert np.array_equal(r.labels, init)
    # from the in-memory records, through the helper
    r2 = replay_log(vol, FillBox(), s.log.records, labels=init)
    assert np.array_equal(r2.labels, final)
    # a log recorded on other initial labels is refused
    with pytest.raises(ValueError, match="initial labels"):
        AnnotationSession(vol, FillBox(), use_worker=False).replay(path)
    with pytest.raises(ValueError, match="shape"):
        AnnotationSession(Volume(np.zeros((3, 4, 5), np.uint8)), FillBox()).replay(path)


def test_replay_with_different_backend_differs(tmp_path):
    """The replay re-runs the backend (it is not a recording of masks)."""
    vol = Volume(np.zeros((8, 40, 40), np.uint8))
    s = _scripted_session(vol, None)
    r = AnnotationSession(vol, FillBox(radius=4), use_worker=False)
    r.replay(s.log)
    assert not np.array_equal(r.labels, s.labels)


def test_read_log_errors_and_truncated_tail(tmp_path):
    p = tmp_path / "x.jsonl"
    log = PromptLog(p)
    log.write("session", shape=[1, 2, 3])
    log.write("undo")
    log.close()
    with open(p, "a") as fh:
        fh.write('{"type": "red')  # crash mid-write
    assert [r["type"] for r in read_log(p)] == ["session", "undo"]
    p.write_text('{"type": "undo"}\nnot json\n{"type": "redo"}\n')
    with pytest.raises(ValueError, match="line 2"):
        read_log(p)
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_log(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="record 0"):
        read_log([{"no_type": 1}])


def test_encode_decode_array_roundtrip():
    a = np.arange(60, dtype=np.uint16).reshape(3, 4, 5)
    d = encode_array(a)
    json.dumps(d)
    assert np.array_equal(decode_array(d), a) and decode_array(d).dtype == np.uint16
    with pytest.raises(ValueError, match="lacks key 'data'"):
        decode_array({"dtype": "<u2", "shape": [1]})

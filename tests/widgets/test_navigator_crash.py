"""Crash recovery: a real napari process edits a case, is killed with SIGKILL, and reopening restores it.

The child process runs napari (xcb platform on the Xvfb display pytest-xvfb started) with the
dataset navigator, opens a case and paints one brush stroke every 0.2 s, each with its own
label value at its own place, printing a line per stroke. The test kills it with ``kill -9``
mid-way, then reopens the dataset in a navigator of this process and checks that

* the restored labels hold exactly a prefix of the strokes (a consistent snapshot, never a
  torn file), and
* every stroke made more than ``autosave interval + 1 s`` before the kill is there: at most
  the last few seconds of work are lost;
* the status database is intact and the dead process's lock does not block the case.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _dataset_data import make_small_cvpr  # noqa: E402

pytestmark = pytest.mark.gui

AUTOSAVE_S = 2.0
CHILD = textwrap.dedent(
    """
    import json, sys, time
    import napari
    from qtpy.QtCore import QTimer
    from napari_medsegfm.widgets.navigator import DatasetNavigator

    root, case_id, autosave = sys.argv[1], sys.argv[2], float(sys.argv[3])
    viewer = napari.Viewer(show=True)
    nav = DatasetNavigator(viewer, root=root, autosave_s=autosave, use_annotation_widget=False, auto_scan=False)
    viewer.window.add_dock_widget(nav, name="Dataset correction")
    assert nav.open_case(case_id), nav.message.text()
    lab = nav.editor.labels_layer
    lab.brush_size = 3
    z = lab.data.shape[0] // 2
    state = {"k": 0}

    def stroke():
        k = state["k"]
        y, x = 8 + (k // 12) * 12, 8 + (k % 12) * 12
        value = 20 + k
        lab.paint((z, y, x), value)
        print(json.dumps({"k": k, "t": time.time(), "z": z, "y": y, "x": x, "value": value}), flush=True)
        state["k"] += 1

    timer = QTimer()
    timer.timeout.connect(stroke)
    QTimer.singleShot(500, lambda: (print(json.dumps({"ready": time.time()}), flush=True), timer.start(200)))
    napari.run()
    """
)


def test_kill_9_of_napari_loses_at_most_the_last_seconds(make_napari_viewer, qtbot, tmp_path, shared_data,
                                                          artifacts_dir):
    from napari_medsegfm.dataset.workspace import DatasetWorkspace
    from napari_medsegfm.widgets.navigator import DatasetNavigator

    root = make_small_cvpr(shared_data, tmp_path / "ds", 2)
    case_id = "imgs/CT_small00"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = dict(os.environ)
    env.pop("QT_QPA_PLATFORM", None)  # the real xcb platform on pytest-xvfb's display
    assert env.get("DISPLAY"), "pytest-xvfb should provide a display"
    proc = subprocess.Popen([sys.executable, str(script), str(root), case_id, str(AUTOSAVE_S)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    strokes = []
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            msg = json.loads(line)
            if "k" in msg:
                strokes.append(msg)
                if len(strokes) >= 30:  # ~6 s of editing: several autosaves happened
                    break
        assert len(strokes) >= 30, f"child did not edit: {proc.stderr.read() if proc.poll() is not None else ''}"
        t_kill = time.time()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL

    # reopen in a real viewer of this process
    viewer = make_napari_viewer()
    nav = DatasetNavigator(viewer, root=root, use_annotation_widget=False, auto_scan=False)
    viewer.window.add_dock_widget(nav, name="Dataset correction")
    assert nav.open_case(case_id), nav.message.text()  # the dead process's lock is stale at once
    assert nav.current.restored and "restored the correction" in nav.message.text()
    labels = np.asarray(nav.editor.labels_layer.data)
    present = [bool(labels[s["z"], s["y"], s["x"]] == s["value"]) for s in strokes]
    n_kept = present.index(False) if False in present else len(present)
    assert all(present[:n_kept]) and not any(present[n_kept:]), f"not a prefix of the strokes: {present}"
    lost = strokes[n_kept:]
    assert n_kept >= 10, f"only {n_kept} of {len(strokes)} strokes survived"
    if lost:
        oldest_lost_age = t_kill - lost[0]["t"]
        assert oldest_lost_age <= AUTOSAVE_S + 1.5, (
            f"lost strokes made {oldest_lost_age:.1f} s before the kill (autosave interval {AUTOSAVE_S} s)")
    ws = nav.workspace
    assert ws.store.integrity_check() == "ok"
    hist = [e.action for e in ws.store.history(case_id)]
    assert hist[0] == "restore" and "autosave" in hist
    (artifacts_dir / "crash_recovery.json").write_text(json.dumps({
        "strokes_made": len(strokes), "strokes_restored": n_kept, "strokes_lost": len(lost),
        "seconds_of_work_lost": round(t_kill - lost[0]["t"], 2) if lost else 0.0,
        "autosave_interval_s": AUTOSAVE_S}, indent=1))
    from qtpy.QtWidgets import QApplication

    QApplication.processEvents()
    viewer.window._qt_window.grab().save(str(artifacts_dir / "navigator_after_crash.png"))
    nav.close_dataset()
    with DatasetWorkspace(root) as ws2:
        assert ws2.store.lock_holder(case_id) is None

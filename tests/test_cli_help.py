"""CLI texts a user reads: plain --help (no reST markup), progress and a summary for long work."""

from __future__ import annotations

import argparse
import re

import numpy as np
import pytest

from napari_medsegfm.cli import build_parser, main

MARKUP = re.compile(r"``|:(func|mod|class|data|meth|attr):|`[^`\s][^`]*`")


def _all_parsers(parser: argparse.ArgumentParser, name: str = "medsegfm"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _all_parsers(sub, f"{name} {sub_name}")


def test_every_help_text_is_plain():
    parsers = list(_all_parsers(build_parser()))
    assert len(parsers) > 12  # the commands and their sub-commands
    for name, p in parsers:
        text = p.format_help()
        bad = MARKUP.search(text)
        assert bad is None, f"{name} --help shows markup {bad.group(0)!r}:\n{text}"
    predict = dict(parsers)["medsegfm predict"].format_help()
    assert "napari_medsegfm.tasks.predict.predict_case" in predict and "segs (uint8 labels" in predict


def _case(path, seed):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (6, 40, 40), np.uint8)
    boxes = np.empty(2, dtype=object)
    boxes[0] = {"z_min": 1, "z_max": 4, "z_mid": 2, "z_mid_x_min": 3, "z_mid_y_min": 3, "z_mid_x_max": 30,
                "z_mid_y_max": 30}
    boxes[1] = {"z_min": 2, "z_max": 3, "z_mid": 2, "z_mid_x_min": 10, "z_mid_y_min": 10, "z_mid_x_max": 15,
                "z_mid_y_max": 15}
    np.savez(path, imgs=img, spacing=np.array([1.0, 1.0, 2.0]), boxes=boxes)


def test_predict_shows_progress_and_a_summary(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    for i in range(2):
        _case(tmp_path / "in" / f"case{i}.npz", i)
    assert main(["predict", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--backend", "boxfill"]) == 0
    err = capsys.readouterr().err
    assert "predict" in err and "2/2" in err  # the tqdm bar on stderr reached the end
    assert "object 2/2" in err  # per-object progress inside a file
    last = err.strip().splitlines()[-1]
    assert re.search(r"medsegfm predict: 2 of 2 file\(s\) -> .*out/ with boxfill in [\d.]+ s", last), last
    assert main(["predict", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out2"), "--backend", "boxfill",
                 "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "2/2" not in err and "2 of 2 file(s)" in err


@pytest.mark.parametrize("cmd", ["predict", "evaluate", "batch"])
def test_help_exits_zero(cmd, capsys):
    with pytest.raises(SystemExit) as ei:
        main([cmd, "--help"])
    assert ei.value.code == 0
    assert "usage: medsegfm " + cmd in capsys.readouterr().out

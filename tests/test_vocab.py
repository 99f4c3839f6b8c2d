"""Class vocabulary and free-text resolution (engine/vocab.py, resources/vocabulary, cli/vocab.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_medsegfm.engine.vocab import (
    CVPR25_VOCAB_FILENAME,
    UnresolvedTextError,
    VocabClass,
    Vocabulary,
    canonical_key,
    default_vocabulary,
    default_vocabulary_path,
    find_dataset_vocabulary,
    load_vocabulary,
    normalize_tokens,
    resolve,
    resolve_text_prompts,
    vocabulary_for_folder,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def voc() -> Vocabulary:
    return default_vocabulary()


@pytest.fixture(scope="module")
def cvpr_json(shared_data: Path) -> Path:
    return shared_data / "cvpr25" / CVPR25_VOCAB_FILENAME


@pytest.fixture(scope="module")
def cvpr_voc(cvpr_json: Path) -> Vocabulary:
    return load_vocabulary(cvpr_json)


# ----------------------------------------------------------------- shipped vocabulary
def test_shipped_vocabulary_is_built_from_its_script():
    r = subprocess.run([sys.executable, str(REPO / "resources" / "vocabulary" / "build_vocabulary.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_shipped_vocabulary_covers_vista3d_and_totalsegmentator(voc):
    assert default_vocabulary_path().is_file()
    assert len(voc) >= 250
    vista = voc.space("vista3d")
    assert sorted(vista) == list(range(1, 133))
    assert len(voc.space("totalseg")) == 117 and len(voc.space("totalseg_mr")) == 50
    # spot facts of the two label spaces
    assert vista[14].name == "left kidney" and vista[5].name == "right kidney" and vista[2].name == "kidney"
    assert vista[3].name == "spleen" and vista[118].name == "prostate" and vista[16].name == "prostate or uterus"
    assert voc.space("totalseg")[3] is vista[14]  # kidney_left is one class in both spaces
    assert voc.space("totalseg")[21] is vista[15]  # urinary_bladder == bladder


def test_every_vista3d_name_resolves_to_its_own_id(voc):
    from importlib import util

    spec = util.spec_from_file_location("bv", REPO / "resources" / "vocabulary" / "build_vocabulary.py")
    mod = util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    for i, name in enumerate(mod.VISTA3D, start=1):
        r = voc.resolve(name, space="vista3d")
        assert r.ok, r.describe()
        assert i in r.cls.ids["vista3d"], (name, r.cls.ids)
    for i, name in enumerate(mod.TOTALSEG, start=1):
        assert voc.label_id(name, "totalseg") == i, name


# ------------------------------------------------------------------------ resolution
@pytest.mark.parametrize("text", [
    "left kidney", "Left Kidney", "LEFT KIDNEY", "kidney left", "kidney_left", "Kidney-Left", "L kidney",
    "lt kidney", "kidneys, left", "left kidneys", "the left kidney", "left renal", "LK",
])
def test_left_kidney_spellings(voc, text):
    r = voc.resolve(text)
    assert r.ok and r.name == "left kidney", r.describe()
    assert r.label_id("vista3d") == 14 and r.label_id("totalseg") == 3


def test_exact_synonym_and_match_statuses(voc):
    assert voc.resolve("left kidney").status == "exact"
    assert voc.resolve("IVC").status == "exact" and voc.resolve("IVC").name == "inferior vena cava"
    assert voc.resolve("kidney left").status == "exact"  # TotalSegmentator's kidney_left
    r = voc.resolve("kidneys (left)")
    assert r.name == "left kidney" and r.status == "match" and r.confidence == pytest.approx(1.0)
    assert voc.resolve("fifth lumbar vertebra").name == "vertebrae L5"
    assert voc.resolve("T12").name == "vertebrae T12"
    assert voc.resolve("gall bladder").name == "gallbladder"
    assert voc.resolve("liver tumour").name == "liver tumor"
    assert voc.resolve("tumor in the liver").name == "liver tumor"
    assert voc.resolve("left upper lobe").name == "left lung upper lobe"
    assert voc.resolve("5th rib, right").name == "right rib 5"


@pytest.mark.parametrize("typo, expected", [
    ("livr", "liver"), ("pancraes", "pancreas"), ("spleeen", "spleen"), ("gallblader", "gallbladder"),
    ("esophagous", "esophagus"), ("right kidny", "right kidney"), ("aorat", "aorta"),
])
def test_typos_resolve_fuzzily_with_lower_confidence(voc, typo, expected):
    r = voc.resolve(typo)
    assert r.ok and r.name == expected, r.describe()
    assert r.status == "fuzzy"
    assert 0.6 <= r.confidence < 1.0


def test_ambiguous_text_lists_candidates_instead_of_guessing(voc):
    r = voc.resolve("kidney", space="totalseg")  # only left and right kidney exist there
    assert r.status == "ambiguous" and not r.ok and r.cls is None
    assert {c.cls.name for c in r.candidates} == {"left kidney", "right kidney"}
    with pytest.raises(UnresolvedTextError) as ei:
        r.label_id()
    assert "left kidney" in str(ei.value) and "right kidney" in str(ei.value)
    assert voc.resolve("adrenal gland").ambiguous
    assert voc.resolve("rib 5").ambiguous
    # the vocabulary that has a whole-kidney class resolves it
    assert voc.resolve("kidney").name == "kidney" and voc.resolve("kidney", space="vista3d").label_id() == 2
    assert voc.resolve("both kidneys").name == "kidney"


def test_unknown_text_and_laterality_conflict(voc):
    r = voc.resolve("flux capacitor")
    assert r.status == "none" and not r.ok
    r = voc.resolve("left spleen")  # no lateral spleen: the spleen, with a doubt
    assert r.name == "spleen" and r.confidence < 1.0
    r = voc.resolve("right kidney")
    assert all(c.cls.name != "left kidney" or c.score < 0.5 for c in r.candidates)
    with pytest.raises(ValueError, match="unknown label space"):
        voc.resolve("liver", space="nope")
    with pytest.raises(ValueError):
        voc.resolve(None)  # type: ignore[arg-type]


def test_normalization_helpers():
    assert normalize_tokens("Kidneys, LEFT") == ("left", ("kidney",))
    assert normalize_tokens("vertebrae_L5") == (None, ("vertebra", "l5"))
    assert canonical_key("kidney_left") == canonical_key("Left kidneys") == canonical_key("L kidney")
    assert canonical_key("lung_upper_lobe_left") == canonical_key("left lung upper lobe")
    assert canonical_key("prostate/uterus") == canonical_key("prostate or uterus")
    # MR sequence names are not vertebrae
    assert "t1" not in normalize_tokens("enhancing tissue in T1-weighted MR")[1]


def test_autocomplete(voc):
    names = voc.names()
    assert len(names) == len(set(names)) == len(voc)
    sug = voc.complete("kid")
    assert "kidney" in sug[:3] and "left kidney" in sug
    assert voc.complete("kidney le")[0] == "left kidney"
    assert "inferior vena cava" in voc.complete("IVC")
    assert set(voc.complete("lung", space="vista3d")) <= set(voc.names("vista3d"))
    assert len(voc.complete("", limit=7)) == 7


def test_resolution_serializes(voc):
    d = voc.resolve("left kidneys", space="vista3d").to_dict()
    json.dumps(d)
    assert d["name"] == "left kidney" and d["label_id"] == 14 and d["status"] == "match"


def test_user_vocabulary_file_merges(tmp_path, voc):
    f = tmp_path / "mine.json"
    f.write_text(json.dumps({"format": "medsegfm-vocabulary", "version": 1, "classes": [
        {"name": "left kidney", "synonyms": ["sinister ren"], "ids": {"mymodel": [7]}},
        {"name": "tumor bed", "synonyms": ["surgical bed"], "ids": {"mymodel": [9]}},
    ]}))
    v = load_vocabulary(f)
    assert len(v) == len(voc) + 1  # "left kidney" merged, "tumor bed" new
    assert v.label_id("kidney_left", "mymodel") == 7 and v.label_id("kidney_left", "vista3d") == 14
    assert v.resolve("surgical bed").name == "tumor bed"
    alone = load_vocabulary(f, base=None)
    assert len(alone) == 2


def test_bad_vocabulary_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_vocabulary(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        load_vocabulary(bad)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="not a vocabulary"):
        load_vocabulary(other)
    with pytest.raises(ValueError):
        VocabClass(name=" ")


# --------------------------------------------------------------------- CVPR25 JSON
def test_cvpr25_vocabulary_adds_dataset_label_spaces(cvpr_voc, cvpr_json, voc):
    raw = json.loads(cvpr_json.read_text())
    assert len([s for s in cvpr_voc.spaces() if s.startswith("cvpr25:")]) == len(raw) == 68
    amos = cvpr_voc.space("cvpr25:CT_AMOS")
    assert sorted(amos) == list(range(1, 16))
    assert amos[2].name == "right kidney" and amos[3].name == "left kidney"
    # the CVPR classes merged into the shipped ones rather than duplicating them
    assert amos[2] is cvpr_voc.space("vista3d")[5]
    r = cvpr_voc.resolve("kidney", space="cvpr25:CT_AMOS")
    assert r.ambiguous and {c.cls.name for c in r.candidates} == {"left kidney", "right kidney"}
    assert cvpr_voc.get("Kidney lesions").instance


def test_every_cvpr25_sentence_resolves_to_its_label(cvpr_voc, cvpr_json):
    raw = json.loads(cvpr_json.read_text())
    n = ok_in_space = ok_global = 0
    for ds, labels in raw.items():
        space = f"cvpr25:{ds}"
        for lid, sentences in labels.items():
            if lid == "instance_label":
                continue
            for s in sentences:
                n += 1
                r = cvpr_voc.resolve(s, space=space)
                ok_in_space += r.ok and int(lid) in r.cls.ids[space]
                g = cvpr_voc.resolve(s)
                ok_global += g.ok and int(lid) in g.cls.ids.get(space, ())
    assert n > 3000
    assert ok_in_space == n
    assert ok_global >= 0.99 * n


def _load_npz(path: Path) -> dict:
    try:
        from napari_medsegfm.io import safe_load_npz
    except ImportError:  # the io package's restricted loader not there yet: trusted test data
        with np.load(path, allow_pickle=True) as z:
            return {k: z[k] for k in z.files}
    return dict(safe_load_npz(path))


def test_cvpr25_sentences_resolve_from_short_names_alone(cvpr_json):
    """Held out: only each label's short name is known; its descriptive sentences must resolve."""
    raw = json.loads(cvpr_json.read_text())
    names_only = {ds: {k: (v[:1] if k != "instance_label" else v) for k, v in labels.items()}
                  for ds, labels in raw.items()}
    held = default_vocabulary().merged(Vocabulary.from_dict(names_only))
    n = ok = 0
    for ds, labels in raw.items():
        space = f"cvpr25:{ds}"
        for lid, sentences in labels.items():
            if lid == "instance_label":
                continue
            for sent in sentences[1:]:
                n += 1
                r = held.resolve(sent, space=space)
                ok += r.ok and int(lid) in r.cls.ids[space]
    assert ok >= 0.95 * n, f"{ok}/{n}"


def test_case_space_and_text_prompts_of_real_cases(cvpr_voc, shared_data):
    safe_load_npz = _load_npz

    assert cvpr_voc.space_for_case("CT_AMOS_amos_0018.npz") == "cvpr25:CT_AMOS"
    assert cvpr_voc.space_for_case("MR_BraTS-T1c_bratsgli_0017") == "cvpr25:MR_BraTS-T1c"
    assert cvpr_voc.space_for_case("Microscopy_SELMA3D_patchvolume_nuclei_004") is None  # not a dataset of the JSON
    for name in ("CT_AMOS_amos_0018", "MR_BraTS-T1c_bratsgli_0017"):
        m = safe_load_npz(shared_data / "cvpr25" / "imgs" / f"{name}.npz")
        tp = m["text_prompts"]
        tp = tp.item() if isinstance(tp, np.ndarray) else tp
        space = cvpr_voc.space_for_case(name)
        res = resolve_text_prompts(tp, cvpr_voc, space=space)
        assert sorted(res) == sorted(int(k) for k in tp if k != "instance_label")
        for lab, r in res.items():
            assert r.ok and r.label_id() == lab, r.describe()
    # AMOS sentences also resolve to VISTA3D ids without the dataset file
    m = safe_load_npz(shared_data / "cvpr25" / "imgs" / "CT_AMOS_amos_0018.npz")
    tp = m["text_prompts"]
    tp = tp.item() if isinstance(tp, np.ndarray) else tp
    res = resolve_text_prompts(tp, default_vocabulary(), space="vista3d")
    ids = {lab: r.label_id() for lab, r in res.items()}
    assert ids[1] == 3 and ids[2] == 5 and ids[3] == 14 and ids[6] == 1 and ids[15] == 16


def test_dataset_folder_finds_the_cvpr25_file(shared_data, tmp_path):
    found = find_dataset_vocabulary(shared_data / "cvpr25" / "imgs")
    assert found is not None and found.name == CVPR25_VOCAB_FILENAME
    v = vocabulary_for_folder(shared_data / "cvpr25" / "imgs")
    assert "cvpr25:CT_AMOS" in v.spaces()
    assert vocabulary_for_folder(tmp_path) is default_vocabulary()
    assert find_dataset_vocabulary(tmp_path) is None


@pytest.mark.timing
def test_resolution_is_fast(voc):
    import time

    qs = ["left kidney", "livr", "CT imaging of the spleen within the abdomen", "rib 5", "xyzzy"] * 40
    t = time.perf_counter()
    for q in qs:
        resolve(q, voc)
    per = (time.perf_counter() - t) / len(qs)
    assert per < 0.05  # generous: typically well under a millisecond


# ------------------------------------------------------------------------------- CLI
def _cli(*args: str) -> tuple[int, str, str]:
    r = subprocess.run([sys.executable, "-c", "import sys; from napari_medsegfm.cli import main; sys.exit(main())", *args], capture_output=True, text=True,
                       cwd=REPO)
    return r.returncode, r.stdout, r.stderr


def test_cli_vocab_text_and_json(capsys):
    from napari_medsegfm.cli import main

    assert main(["vocab", "kidney left"]) == 0
    out = capsys.readouterr().out
    assert "left kidney" in out and "vista3d 14" in out and "confidence 1.00" in out
    assert main(["vocab", "kidney", "--space", "totalseg"]) == 1
    out = capsys.readouterr().out
    assert "ambiguous" in out and "left kidney" in out and "right kidney" in out
    assert main(["vocab", "livr", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["name"] == "liver" and d["status"] == "fuzzy" and 0 < d["confidence"] < 1
    assert main(["vocab", "--complete", "kid"]) == 0
    assert "left kidney" in capsys.readouterr().out
    assert main(["vocab", "liver", "--space", "nope"]) == 2
    assert "unknown label space" in capsys.readouterr().err


def test_cli_vocab_with_cvpr25_file(cvpr_json, capsys):
    from napari_medsegfm.cli import main

    assert main(["vocab", "Abdominal CT showing the left kidney", "--vocab", str(cvpr_json),
                 "--space", "cvpr25:CT_AMOS", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["name"] == "left kidney" and d["label_id"] == 3
    assert main(["vocab", "x", "--vocab", str(cvpr_json.parent / "nope.json")]) == 2
    assert "not found" in capsys.readouterr().err


def test_cli_runs_as_a_program():
    code, out, _err = _cli("vocab", "L kidney", "--space", "vista3d", "--json")
    assert code == 0 and json.loads(out)["label_id"] == 14

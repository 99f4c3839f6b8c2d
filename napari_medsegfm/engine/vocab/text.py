"""Text normalisation of class names and queries, and the token similarity of fuzzy matching."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# ----------------------------------------------------------------------------- text
_LEFT = {"left", "l", "lt", "sinister", "sinistra", "sin"}
_RIGHT = {"right", "r", "rt", "dexter", "dextra", "dex"}
_BOTH = {"bilateral", "both"}

# British/variant spellings -> one form (applied to every token, names and queries alike).
_SPELLING = {
    "tumour": "tumor", "tumours": "tumors", "oesophagus": "esophagus", "oesophageal": "esophageal",
    "haemorrhage": "hemorrhage", "haemorrhagic": "hemorrhagic", "oedema": "edema", "caecum": "cecum",
    "faecal": "fecal", "anaemia": "anemia", "haematoma": "hematoma", "haemangioma": "hemangioma",
    "foetal": "fetal", "foetus": "fetus", "grey": "gray", "centre": "center", "paediatric": "pediatric",
    "oestrogen": "estrogen", "gluteal": "gluteus", "clavicle": "clavicula", "clavicles": "clavicula",
    "vertebrae": "vertebra", "vertebras": "vertebra", "vertebral": "vertebra",
    "kidnies": "kidney", "lumen": "lumen", "sulcus": "sulcus", "nuclei": "nucleus",
    "bronchi": "bronchus", "bronchia": "bronchus", "metastases": "metastasis", "atria": "atrium",
    "mitochondria": "mitochondrion", "foci": "focus", "phalanges": "phalanx", "lymphnode": "lymph node",
    "lymphnodes": "lymph node", "vena": "vena", "venae": "vena", "cavae": "cava", "lobi": "lobe",
    "cochleae": "cochlea", "cochleas": "cochlea", "ampullae": "ampulla", "cartilages": "cartilage",
    "glands": "gland", "adrenals": "adrenal", "suprarenal": "adrenal", "ureters": "ureter",
    "alzheimers": "alzheimer", "covid19": "covid 19", "ribcage": "rib cage", "spleens": "spleen",
}

# Adjectives -> the organ noun, so "hepatic tumor" = "liver tumor", "aortic" = "aorta".
_ADJECTIVE = {
    "aortic": "aorta", "hepatic": "liver", "renal": "kidney", "splenic": "spleen",
    "pancreatic": "pancreas", "gastric": "stomach", "esophageal": "esophagus", "cardiac": "heart",
    "cerebral": "brain", "costal": "rib", "tracheal": "trachea", "prostatic": "prostate",
    "duodenal": "duodenum", "colonic": "colon", "rectal": "rectum", "femoral": "femur",
    "humeral": "humerus", "sacral": "sacrum", "myocardial": "myocardium", "ventricular": "ventricle",
    "atrial": "atrium", "bronchial": "bronchus", "thyroidal": "thyroid", "cochlear": "cochlea",
    "vesical": "bladder", "uterine": "uterus", "ovarian": "ovary", "mammary": "breast",
    "cerebellar": "cerebellum", "biliary": "bile", "vascular": "vessel", "intestinal": "intestine",
    "nodal": "node", "osseous": "bone", "skeletal": "skeletal", "lobar": "lobe",
}

_ORDINALS = {
    "first": "1", "second": "2", "third": "3", "fourth": "4", "fifth": "5", "sixth": "6",
    "seventh": "7", "eighth": "8", "ninth": "9", "tenth": "10", "eleventh": "11", "twelfth": "12",
    "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
    "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12",
}
_ROMAN = {"i": "1", "ii": "2", "iii": "3", "iv": "4", "v": "5", "vi": "6", "vii": "7", "viii": "8"}
_SPINE_REGION = {"cervical": "c", "thoracic": "t", "lumbar": "l", "sacral": "s", "sacrum": "s"}
_SPINE_LETTERS = {"c", "t", "l", "s"}

# Words that never name a structure: dropped from queries and names.
_STOP = {
    "the", "a", "an", "of", "and", "or", "to", "with", "for", "by", "as", "its", "is", "are", "this",
    "that", "these", "those", "please", "all", "whole", "entire", "only", "each", "every", "any",
    "showing", "show", "shows", "shown", "visualization", "visualisation", "visualize", "visualise",
    "visualized", "depicting", "depict", "depicted", "displaying", "display", "highlighting",
    "segmentation", "segment", "segmenting", "segmented", "seg", "mask", "label", "annotation",
    "annotate", "delineate", "delineation", "delineated", "outline", "contour", "find", "locate",
    "localize", "localization", "identify", "identified", "identification", "detect", "detected",
    "detection", "presence", "present", "observed", "observe", "seen", "visible", "revealing", "reveal",
    "revealed", "via", "using", "scan", "image", "imaging", "imaged", "picture", "view", "slice",
    "volume", "structure", "region", "area", "anatomy", "anatomical", "portion", "part",
    "ct", "cta", "mr", "mri", "mra", "pet", "spect", "ultrasound", "us", "sonography", "xray",
    "ray", "radiograph", "magnetic", "resonance", "computed", "tomography", "scanning", "weighted",
    "contrast", "enhanced", "post", "pre", "t1w", "t2w", "t1c", "t1n", "t2f", "dwi", "adc",
    "microscopy", "microscope", "microscopic", "light", "sheet", "electron", "em", "fluorescence",
    "confocal", "study", "exam", "examination", "patient", "human", "sample", "specimen",
}
# Context words: count little towards the match ("... in abdominal CT").
_CONTEXT = {
    "abdomen", "abdominal", "chest", "thorax", "thoracic", "pelvis", "pelvic", "head", "neck",
    "torso", "trunk", "tissue", "organ", "cavity", "wall",
}
# Generic head nouns: an alias's coverage barely needs them ("left parotid" = "left parotid gland").
_GENERIC = {"gland", "muscle", "bone", "structure"}
_PREPOSITIONS = {"in", "within", "inside", "on", "at", "from", "into", "throughout", "across", "via",
                 "around", "near", "along", "over", "under", "between"}
_NON_PLURAL_ENDINGS = ("ss", "us", "is", "as", "os")
_JOIN = {("gall", "bladder"), ("ilio", "psoas"), ("sterno", "cleidomastoid"), ("endo", "lysosome"),
         ("endo", "lysosomes"), ("hyper", "intensity"), ("hyper", "intensities")}


def _strip_accents(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def _singular(tok: str) -> str:
    if len(tok) <= 3 or tok.isdigit():
        return tok
    if tok.endswith("ies") and len(tok) > 4:
        return tok[:-3] + "y"
    if tok.endswith("s") and not tok.endswith(_NON_PLURAL_ENDINGS):
        return tok[:-1]
    return tok


@dataclass(frozen=True)
class _Parsed:
    """A normalized text: laterality, content tokens and their weights."""

    side: str | None
    tokens: tuple[str, ...]
    weights: tuple[float, ...]
    raw: tuple[str, ...] = ()  # each token before singular/adjective folding (for typo matching)
    after_preposition: tuple[bool, ...] = ()  # token follows "in", "within", "via", ...


def _raw_tokens(text: str) -> list[str]:
    text = _strip_accents(str(text)).lower()
    text = text.replace("'s ", " ").replace("'s", "").replace("'", "")
    toks = re.findall(r"[a-z]+[0-9]*|[0-9]+", text)
    out: list[str] = []
    for t in toks:
        rep = _SPELLING.get(t, t)
        out.extend(rep.split())
    return out


def _parse(text: str, join: frozenset[str] | None = None) -> _Parsed:
    """Normalize ``text`` into laterality + content tokens (weights: 1 head, <1 context)."""
    toks = _raw_tokens(text)
    # ordinals / number words: "fifth rib" -> "5 rib"; "5th" -> "5"
    conv: list[str] = []
    for t in toks:
        m = re.fullmatch(r"([0-9]+)(st|nd|rd|th)", t)
        if m:
            conv.append(m.group(1))
        elif t in _ORDINALS:
            conv.append(_ORDINALS[t])
        else:
            conv.append(t)
    toks = conv
    # drop "t1 weighted"/"t2 weighted" (MR sequence names, not vertebrae)
    # and "whole body" (an imaging field of view, not the vertebral body)
    cleaned: list[str] = []
    for i, t in enumerate(toks):
        nxt = toks[i + 1] if i + 1 < len(toks) else ""
        if t in ("t1", "t2") and nxt in ("weighted", "w", "mr", "mri", "flair", "contrast", "sequence", "image"):
            continue
        if t == "body" and i > 0 and toks[i - 1] == "whole":
            continue
        cleaned.append(t)
    toks = cleaned
    # spine levels: "l 5" -> "l5", "lumbar 5"/"5 lumbar" -> "l5", "lumbar vertebra v" -> "l5"
    out: list[str] = []
    i = 0
    while i < len(toks):
        t = toks[i]
        nxt = toks[i + 1] if i + 1 < len(toks) else ""
        if t in _SPINE_LETTERS and nxt.isdigit():
            out.append(t + nxt)
            i += 2
            continue
        if t in _SPINE_REGION and (nxt.isdigit() or nxt in _ROMAN):
            out.append(_SPINE_REGION[t] + _ROMAN.get(nxt, nxt))
            i += 2
            continue
        if t.isdigit() and nxt in _SPINE_REGION and nxt != "sacrum":
            out.append(_SPINE_REGION[nxt] + t)
            i += 2
            continue
        out.append(t)
        i += 1
    toks = out
    # join split compounds ("gall bladder" -> "gallbladder"): a fixed table, plus any
    # pair whose concatenation the vocabulary knows (``join``)
    joined: list[str] = []
    i = 0
    while i < len(toks):
        if i + 1 < len(toks):
            pair = toks[i] + toks[i + 1]
            if (toks[i], toks[i + 1]) in _JOIN or (join and pair in join):
                joined.append(pair)
                i += 2
                continue
        joined.append(toks[i])
        i += 1
    toks = joined
    side: str | None = None
    content: list[str] = []
    weights: list[float] = []
    raw: list[str] = []
    after: list[bool] = []
    in_context = False
    for t in toks:
        if (join is not None and t not in join and t not in _STOP and 4 <= len(t) <= 6
                and t not in _LEFT and t not in _RIGHT):
            # a mistyped side word ("rigth", "lfet") when the vocabulary does not know the word
            if _osa_distance(t, "right", 1) <= 1:
                t = "right"
            elif _osa_distance(t, "left", 1) <= 1:
                t = "left"
        if t in _LEFT or t in _RIGHT or t in _BOTH:
            s = "left" if t in _LEFT else "right" if t in _RIGHT else "both"
            if side is None or side == s:
                side = s
            elif side != "both":
                side = "both"
            continue
        if t in _PREPOSITIONS:
            if content:  # "in the liver" at the very start is still the target
                in_context = True
            continue
        r = t
        t = _singular(t)
        t = _SPELLING.get(t, t)
        t = _ADJECTIVE.get(t, t)
        if t in _STOP or not t:
            continue
        raw.append(r)
        w = 1.0
        if t in _CONTEXT:
            w = 0.15
        elif in_context:
            w = 0.3
        content.append(t)
        weights.append(w)
        after.append(in_context)
    return _Parsed(side, tuple(content), tuple(weights), tuple(raw), tuple(after))


def normalize_tokens(text: str) -> tuple[str | None, tuple[str, ...]]:
    """Laterality and content tokens of ``text``.

    >>> normalize_tokens("Kidneys, LEFT")
    ('left', ('kidney',))
    >>> normalize_tokens("vertebrae_L5")
    (None, ('vertebra', 'l5'))
    """
    p = _parse(text)
    return p.side, p.tokens


def canonical_key(text: str) -> str:
    """Order-, case-, plural- and laterality-spelling-insensitive key of a class name.

    ``canonical_key("kidney_left") == canonical_key("Left kidneys") == "kidney|left"``.
    """
    p = _parse(text)
    # words after "in"/"via"/... describe where, not what ("left kidney via abdominal MR")
    head = [t for t, c in zip(p.tokens, p.after_preposition) if not c]
    toks = sorted(set(head or p.tokens))
    return " ".join(toks) + ("|" + p.side if p.side else "")


def _pretty_name(name: str) -> str:
    """Display form of a source class name: ``"kidney_left"`` -> ``"left kidney"``."""
    raw = name.replace("_", " ").strip()
    words = raw.split()
    low = [w.lower() for w in words]
    for side in ("left", "right"):
        if side in low and low[0] != side:
            idx = low.index(side)
            words = [words[idx]] + words[:idx] + words[idx + 1:]
            break
    out = " ".join(words)
    return out[:1].lower() + out[1:] if out[:2] != out[:2].upper() else out


# ------------------------------------------------------------------------ similarity
def _osa_distance(a: str, b: str, limit: int) -> int:
    """Optimal-string-alignment edit distance (adjacent transpositions count 1), capped."""
    la, lb = len(a), len(b)
    if abs(la - lb) > limit:
        return limit + 1
    prev2: list[int] = []
    prev = list(range(lb + 1))
    for i in range(1, la + 1):
        cur = [i] + [0] * lb
        best = cur[0]
        ai = a[i - 1]
        for j in range(1, lb + 1):
            cost = 0 if ai == b[j - 1] else 1
            v = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and ai == b[j - 2] and a[i - 2] == b[j - 1]:
                v = min(v, prev2[j - 2] + 1)
            cur[j] = v
            best = min(best, v)
        if best > limit:
            return limit + 1
        prev2, prev = prev, cur
    return prev[lb]


def _token_similarity(q: str, v: str) -> float:
    """Similarity of a query token to a vocabulary token, 0 or 0.7..1."""
    if q == v:
        return 1.0
    if q.isdigit() or v.isdigit() or len(q) < 4 or len(v) < 4:
        return 0.0
    n = max(len(q), len(v))
    limit = 1 if n <= 5 else 2 if n <= 9 else 3
    d = _osa_distance(q, v, limit)
    if d > limit:
        # a clear prefix ("pancrea" for "pancreas", "hyperintens")
        if len(q) >= 5 and v.startswith(q) and len(q) >= 0.7 * len(v):
            return 0.8
        return 0.0
    return max(0.0, 1.0 - d / n) if d else 1.0


def _exact_form(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", _strip_accents(text).lower()))

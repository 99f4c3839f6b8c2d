"""Class vocabulary and free-text resolution ("left kidney" -> a class and its label ids).

A :class:`Vocabulary` is a list of :class:`VocabClass` entries (a display name, synonyms,
laterality, category, default instance/semantic flag and label ids in named *label
spaces* such as ``"vista3d"``, ``"totalseg"`` or ``"cvpr25:CT_AMOS"``). The shipped one
(:func:`default_vocabulary`) is built from openly licensed class lists (see
``resources/vocabulary/README.md``); the CVPR 2025 ``CVPR25_TextSegFMData_with_class.json``
can be merged in at run time (:func:`load_vocabulary`, :func:`vocabulary_for_folder`).

Free text resolves by, in order of confidence: exact name (case, ``_``/``-`` and
spacing insensitive), synonyms and abbreviations, plural/word-order/laterality variants
(``"kidney_left"`` = ``"left kidney"`` = ``"L kidney"`` = ``"kidneys, left"``), and fuzzy
token matching for typos. Sentences such as ``"CT imaging of the spleen within the
abdomen"`` work too: filler words are dropped and words after *in/within* count as
context. Text that fits several classes equally well is reported as ``"ambiguous"``
with the candidates, never silently guessed (``"kidney"`` in a label space holding only
left and right kidney).

Nothing here imports torch or Qt.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "VocabClass",
    "Candidate",
    "Resolution",
    "Vocabulary",
    "UnresolvedTextError",
    "CVPR25_VOCAB_FILENAME",
    "VOCAB_ENV_VAR",
    "normalize_tokens",
    "canonical_key",
    "default_vocabulary",
    "default_vocabulary_path",
    "load_vocabulary",
    "find_dataset_vocabulary",
    "vocabulary_for_folder",
    "resolve",
    "resolve_text_prompts",
    "attach_vocabulary",
]

log = logging.getLogger(__name__)

#: File name of the CVPR 2025 text-guided segmentation vocabulary (CC BY-NC-SA 4.0; not shipped).
CVPR25_VOCAB_FILENAME = "CVPR25_TextSegFMData_with_class.json"
#: Environment variable naming an extra vocabulary file merged into the default one.
VOCAB_ENV_VAR = "MEDSEGFM_VOCABULARY"

VOCAB_FORMAT = "medsegfm-vocabulary"

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


# --------------------------------------------------------------------------- classes
@dataclass(eq=False)
class VocabClass:
    """One class of the vocabulary.

    Attributes
    ----------
    name : str
        Display name (``"left kidney"``).
    synonyms : tuple of str
        Other names, abbreviations and source spellings (``"kidney_left"``, ``"L kidney"``).
    side : str or None
        ``"left"``, ``"right"`` or None.
    category : str
        ``"organ"``, ``"vessel"``, ``"bone"``, ``"muscle"``, ``"lesion"``, ``"cell"``, ...
    instance : bool
        Default for CVPR ``instance_label``: True when each connected component is one object
        (lesions, nuclei), False for a semantic class.
    ids : dict
        Label space -> label ids of this class in that space, preferred first
        (``{"vista3d": (14,), "totalseg": (3,)}``).
    sources : tuple of str
        Where the class comes from (``"vista3d"``, ``"totalseg"``, ``"cvpr25"``, ...).
    """

    name: str
    synonyms: tuple[str, ...] = ()
    side: str | None = None
    category: str = ""
    instance: bool = False
    ids: dict[str, tuple[int, ...]] = field(default_factory=dict)
    sources: tuple[str, ...] = ()
    key: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"VocabClass.name must be a non-empty string; got {self.name!r}")
        if not self.key:
            self.key = canonical_key(self.name)
        if self.side is None:
            self.side = _parse(self.name).side if _parse(self.name).side in ("left", "right") else None
        self.synonyms = tuple(dict.fromkeys(s for s in self.synonyms if s and s != self.name))
        self.ids = {str(k): tuple(int(i) for i in (v if isinstance(v, (list, tuple)) else [v]))
                    for k, v in dict(self.ids).items()}
        self.sources = tuple(dict.fromkeys(self.sources))

    @property
    def aliases(self) -> tuple[str, ...]:
        """The name followed by every synonym."""
        return (self.name, *self.synonyms)

    def label_id(self, space: str) -> int | None:
        """Preferred label id in ``space`` (None if the class is not in it)."""
        ids = self.ids.get(space)
        return ids[0] if ids else None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name}
        if self.synonyms:
            d["synonyms"] = list(self.synonyms)
        if self.side:
            d["side"] = self.side
        if self.category:
            d["category"] = self.category
        if self.instance:
            d["instance"] = True
        if self.ids:
            d["ids"] = {k: list(v) for k, v in sorted(self.ids.items())}
        if self.sources:
            d["sources"] = list(self.sources)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VocabClass:
        if "name" not in d:
            raise ValueError(f"vocabulary class entry without 'name': {dict(d)!r}")
        return cls(
            name=str(d["name"]),
            synonyms=tuple(str(s) for s in d.get("synonyms", ())),
            side=d.get("side"),
            category=str(d.get("category", "")),
            instance=bool(d.get("instance", False)),
            ids=dict(d.get("ids", {})),
            sources=tuple(d.get("sources", ())),
        )

    def __repr__(self) -> str:
        return f"VocabClass({self.name!r})"


@dataclass(frozen=True)
class Candidate:
    """A class a text may mean, with its score in 0..1 and the alias that matched."""

    cls: VocabClass
    score: float
    alias: str

    def to_dict(self, space: str | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.cls.name, "score": round(self.score, 4), "matched": self.alias}
        if space:
            d["label_id"] = self.cls.label_id(space)
        return d


class UnresolvedTextError(ValueError):
    """Text that does not resolve to exactly one class; ``.resolution`` has the candidates."""

    def __init__(self, message: str, resolution: Resolution | None = None) -> None:
        super().__init__(message)
        self.resolution = resolution


@dataclass(frozen=True)
class Resolution:
    """Result of resolving a free text.

    ``status`` is one of:

    * ``"exact"``: the text is a class name or synonym (case/underscore/spacing aside);
    * ``"match"``: same words modulo order, plural, laterality spelling or filler words;
    * ``"fuzzy"``: matched through typo-tolerant token matching;
    * ``"ambiguous"``: several classes fit equally well (see ``candidates``);
    * ``"none"``: nothing fits well enough (``candidates`` holds suggestions).
    """

    query: str
    status: str
    cls: VocabClass | None
    confidence: float
    candidates: tuple[Candidate, ...] = ()
    space: str | None = None

    @property
    def ok(self) -> bool:
        """True when the text resolved to exactly one class."""
        return self.status in ("exact", "match", "fuzzy") and self.cls is not None

    @property
    def ambiguous(self) -> bool:
        return self.status == "ambiguous"

    @property
    def name(self) -> str | None:
        return self.cls.name if self.cls is not None else None

    @property
    def alternatives(self) -> tuple[Candidate, ...]:
        """Candidates other than the chosen class."""
        return tuple(c for c in self.candidates if c.cls is not self.cls)

    def label_id(self, space: str | None = None) -> int:
        """The resolved class's label id in ``space`` (default: the space resolved in).

        Raises
        ------
        UnresolvedTextError
            When the text is ambiguous/unknown or the class has no id in ``space``.
        """
        space = space or self.space
        if not self.ok:
            raise UnresolvedTextError(self.describe(), self)
        if not space:
            raise ValueError("label_id needs a label space (e.g. 'vista3d')")
        lid = self.cls.label_id(space)  # type: ignore[union-attr]
        if lid is None:
            raise UnresolvedTextError(
                f"{self.query!r} resolved to {self.name!r}, which has no label in space {space!r}", self
            )
        return lid

    def describe(self) -> str:
        """One human sentence: what the text resolved to, or why not."""
        where = f" (in {self.space})" if self.space else ""
        cands = ", ".join(f"{c.cls.name} ({c.score:.2f})" for c in self.candidates[:5])
        if self.ok:
            alt = ", ".join(f"{c.cls.name} ({c.score:.2f})" for c in self.alternatives[:3])
            return (f"{self.query!r} -> {self.name!r} ({self.status}, confidence {self.confidence:.2f}){where}"
                    + (f"; alternatives: {alt}" if alt else ""))
        if self.status == "ambiguous":
            return f"{self.query!r} is ambiguous{where}: it could be {cands}; please be more specific"
        if cands:
            return f"{self.query!r} matches no class{where}; closest: {cands}"
        return f"{self.query!r} matches no class{where}"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "query": self.query,
            "status": self.status,
            "name": self.name,
            "confidence": round(self.confidence, 4),
            "space": self.space,
        }
        if self.cls is not None:
            d["category"] = self.cls.category
            d["instance"] = self.cls.instance
            d["ids"] = {k: list(v) for k, v in sorted(self.cls.ids.items())}
            if self.space:
                d["label_id"] = self.cls.label_id(self.space)
        d["candidates"] = [c.to_dict(self.space) for c in self.candidates]
        return d


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


# --------------------------------------------------------------------------- vocabulary
@dataclass(frozen=True)
class _Alias:
    cls_index: int
    text: str
    side: str | None
    tokens: tuple[str, ...]


def _exact_form(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", _strip_accents(text).lower()))


class Vocabulary:
    """A searchable class vocabulary (see module docstring).

    Parameters
    ----------
    classes : iterable of VocabClass
    name : str
        Short description, e.g. ``"default"`` or ``"default + CVPR25"``.
    sources : sequence of str
        Files it was loaded from.
    """

    def __init__(self, classes: Iterable[VocabClass], *, name: str = "", sources: Sequence[str] = ()) -> None:
        self.classes: list[VocabClass] = []
        self.name = name
        self.sources = tuple(str(s) for s in sources)
        self._by_key: dict[str, int] = {}
        for c in classes:
            self._add(c)
        self._index()

    # ------------------------------------------------------------------ building
    def _add(self, c: VocabClass) -> None:
        """Add or merge a class: its name's canonical key equals a name/synonym key of a known class."""
        idx = self._by_key.get(c.key)
        if idx is None:
            self.classes.append(c)
            idx = len(self.classes) - 1
        else:
            old = self.classes[idx]
            ids = dict(old.ids)
            for space, v in c.ids.items():
                ids[space] = tuple(dict.fromkeys((*ids.get(space, ()), *v)))
            self.classes[idx] = VocabClass(
                name=old.name,
                synonyms=(*old.synonyms, c.name, *c.synonyms),
                side=old.side,
                category=old.category or c.category,
                instance=old.instance or c.instance,
                ids=ids,
                sources=(*old.sources, *c.sources),
                key=old.key,
            )
        for a in self.classes[idx].aliases:
            self._by_key.setdefault(canonical_key(a), idx)

    def _index(self) -> None:
        aliases: list[_Alias] = []
        seen: set[tuple[int, str, str | None]] = set()
        tokens: set[str] = set()
        self._exact: dict[str, list[int]] = {}
        for ci, c in enumerate(self.classes):
            for a in c.aliases:
                ex = _exact_form(a)
                if ex and ci not in self._exact.get(ex, []):
                    self._exact.setdefault(ex, []).append(ci)
                p = _parse(a)
                toks = tuple(dict.fromkeys(p.tokens))
                if not toks:
                    continue
                side = p.side if p.side in ("left", "right") else None
                k = (ci, " ".join(sorted(toks)), side)
                if k in seen:
                    continue
                seen.add(k)
                aliases.append(_Alias(ci, a, side, toks))
                tokens.update(toks)
        self._aliases = aliases
        self._tokens = frozenset(tokens)
        self._by_token: dict[str, list[int]] = {}
        for ai, a in enumerate(aliases):
            for t in a.tokens:
                self._by_token.setdefault(t, []).append(ai)
        self._spaces: dict[str, dict[int, VocabClass]] = {}
        for c in self.classes:
            for space, ids in c.ids.items():
                for i in ids:
                    self._spaces.setdefault(space, {}).setdefault(i, c)
        self._fuzzy_cache: dict[str, tuple[tuple[str, float], ...]] = {}
        # (unlateralized class, side) -> the class with the same base name on that side
        self._siblings: dict[tuple[int, str], int] = {}
        base_of: dict[str, int] = {}
        for ci, c in enumerate(self.classes):
            if c.side is None:
                base_of.setdefault(c.key, ci)
        for ci, c in enumerate(self.classes):
            if c.side in ("left", "right"):
                base = base_of.get(c.key.rsplit("|", 1)[0])
                if base is not None:
                    self._siblings.setdefault((base, c.side), ci)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "") -> Vocabulary:
        """Build from this package's JSON layout or from a CVPR25 class JSON (auto-detected)."""
        if isinstance(data, Mapping) and data.get("format") == VOCAB_FORMAT:
            classes = [VocabClass.from_dict(d) for d in data.get("classes", [])]
            return cls(classes, name=str(data.get("name", "")) or Path(source).stem, sources=[source] if source else [])
        if _looks_like_cvpr25(data):
            return cls(_cvpr25_classes(data), name="CVPR25", sources=[source] if source else [])
        raise ValueError(
            f"{source or 'vocabulary data'}: not a vocabulary: expected a JSON object with "
            f"\"format\": \"{VOCAB_FORMAT}\" or a CVPR25 class JSON "
            f"({{dataset: {{label id: [names...], \"instance_label\": 0|1}}}})"
        )

    def merged(self, other: Vocabulary) -> Vocabulary:
        """A new vocabulary holding this one's classes plus ``other``'s (same names merge)."""
        return Vocabulary([*self.classes, *other.classes], name=" + ".join(n for n in (self.name, other.name) if n),
                          sources=(*self.sources, *other.sources))

    def subset(self, space: str) -> Vocabulary:
        """Only the classes that have a label in ``space``."""
        if space not in self._spaces:
            raise ValueError(f"unknown label space {space!r}; known: {', '.join(self.spaces())}")
        keep = list(dict.fromkeys(self._spaces[space].values()))
        return Vocabulary(keep, name=f"{self.name}[{space}]", sources=self.sources)

    def to_dict(self) -> dict[str, Any]:
        return {"format": VOCAB_FORMAT, "version": 1, "name": self.name,
                "classes": [c.to_dict() for c in self.classes]}

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        return len(self.classes)

    def __iter__(self) -> Iterator[VocabClass]:
        return iter(self.classes)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __repr__(self) -> str:
        return f"Vocabulary({self.name!r}, {len(self)} classes, spaces={self.spaces()})"

    def get(self, name: str) -> VocabClass | None:
        """The class whose name or synonym is ``name`` modulo case/order/plural, else None."""
        idx = self._by_key.get(canonical_key(name))
        return self.classes[idx] if idx is not None else None

    def spaces(self) -> list[str]:
        """Names of the label spaces, sorted (``["cvpr25:CT_AMOS", ..., "vista3d"]``)."""
        return sorted(self._spaces)

    def space(self, space: str) -> dict[int, VocabClass]:
        """Label id -> class in ``space`` (``ValueError`` for an unknown space)."""
        if space not in self._spaces:
            raise ValueError(f"unknown label space {space!r}; known: {', '.join(self.spaces()) or 'none'}")
        return dict(sorted(self._spaces[space].items()))

    def names(self, space: str | None = None) -> list[str]:
        """Every display name (for autocomplete lists), sorted case-insensitively."""
        classes = self.classes if space is None else list(self.space(space).values())
        return sorted({c.name for c in classes}, key=str.lower)

    def complete(self, prefix: str, limit: int = 20, space: str | None = None) -> list[str]:
        """Display names for autocomplete: names/synonyms starting with, then containing, ``prefix``.

        Word order of the prefix does not matter for the second tier ("kidney le" finds
        "left kidney"). An empty prefix returns the first ``limit`` names.
        """
        pool = self.classes if space is None else list(dict.fromkeys(self.space(space).values()))
        want = _exact_form(prefix)
        if not want:
            return sorted({c.name for c in pool}, key=str.lower)[:limit]
        words = want.split()
        ranked: list[tuple[tuple[int, int], str]] = []
        for c in pool:
            best: tuple[int, int] | None = None
            for a in c.aliases:
                ea = _exact_form(a)
                if ea.startswith(want):
                    rank = 0 if a == c.name else 1
                elif all(any(w2.startswith(w) for w2 in ea.split()) for w in words):
                    rank = 2 if a == c.name else 3
                elif want in ea:
                    rank = 4
                else:
                    continue
                cand = (rank, len(ea))
                best = cand if best is None else min(best, cand)
            if best is not None:
                ranked.append((best, c.name))
        ranked.sort(key=lambda r: (r[0], len(r[1]), r[1].lower()))
        return list(dict.fromkeys(n for _, n in ranked))[:limit]

    def _fuzzy(self, q: str, raw: str = "") -> tuple[tuple[str, float], ...]:
        key = q + "\0" + raw
        hit = self._fuzzy_cache.get(key)
        if hit is not None:
            return hit
        if q in self._tokens:
            res: tuple[tuple[str, float], ...] = ((q, 1.0),)
        else:
            scored = [(v, s) for v in self._tokens
                      if (s := max(_token_similarity(q, v), _token_similarity(raw, v) if raw else 0.0)) > 0]
            scored.sort(key=lambda vs: -vs[1])
            res = tuple(scored[:4])
        if len(self._fuzzy_cache) > 20000:
            self._fuzzy_cache.clear()
        self._fuzzy_cache[key] = res
        return res

    def resolve(
        self,
        text: str,
        *,
        space: str | None = None,
        min_confidence: float = 0.6,
        margin: float = 0.03,
        max_candidates: int = 5,
    ) -> Resolution:
        """Resolve free ``text`` to a class.

        Parameters
        ----------
        text : str
            ``"left kidney"``, ``"kidney_left"``, ``"L kidney"``, ``"livr"``, or a sentence.
        space : str, optional
            Only consider classes with a label in this label space (``"vista3d"``,
            ``"cvpr25:CT_AMOS"``); the resolution's :meth:`Resolution.label_id` then
            returns the id in that space.
        min_confidence : float
            Below this score the result is ``"none"`` (with suggestions).
        margin : float
            Classes scoring within ``margin`` of the best one make the text ambiguous.
        """
        if not isinstance(text, str):
            raise ValueError(f"text must be a string; got {type(text).__name__}")
        allowed: set[int] | None = None
        if space is not None:
            if space not in self._spaces:
                raise ValueError(f"unknown label space {space!r}; known: {', '.join(self.spaces()) or 'none'}")
            ids = {id(c) for c in self._spaces[space].values()}
            allowed = {i for i, c in enumerate(self.classes) if id(c) in ids}
        query = text.strip()
        if not query:
            return Resolution(text, "none", None, 0.0, (), space)

        # 1. exact name/synonym
        ex = _exact_form(query)
        exact_classes = [ci for ci in self._exact.get(ex, []) if allowed is None or ci in allowed]
        if len(exact_classes) == 1:
            c = self.classes[exact_classes[0]]
            alias = next((a for a in c.aliases if _exact_form(a) == ex), c.name)
            return Resolution(query, "exact", c, 1.0, (Candidate(c, 1.0, alias),), space)

        # 2. token scoring
        p = _parse(query, self._tokens)
        if not p.tokens:
            return Resolution(query, "none", None, 0.0, (), space)
        qmatch: list[tuple[tuple[str, float], ...]] = [
            self._fuzzy(t, p.raw[i] if i < len(p.raw) else "") for i, t in enumerate(p.tokens)]
        # a token the vocabulary does not know at all (a dataset name, noise) counts half
        qweights = [w if qmatch[i] else 0.5 * w for i, w in enumerate(p.weights)]
        total_w = sum(qweights)
        cand_alias: set[int] = set()
        for matches in qmatch:
            for v, _s in matches:
                cand_alias.update(self._by_token.get(v, ()))
        best: dict[int, tuple[float, int, bool]] = {}
        for ai in cand_alias:
            a = self._aliases[ai]
            if allowed is not None and a.cls_index not in allowed:
                continue
            cov = 0.0
            used_fuzzy = False
            matched_w = 0.0
            for qi, matches in enumerate(qmatch):
                sim = 0.0
                for v, s in matches:
                    if v in a.tokens and s > sim:
                        sim = s
                if sim > 0:
                    matched_w += qweights[qi] * sim
                    if sim < 1.0:
                        used_fuzzy = True
            cov_w = 0.0
            for t in a.tokens:
                sim = 0.0
                for matches in qmatch:
                    for v, s in matches:
                        if v == t and s > sim:
                            sim = s
                w = 0.3 if (t in _GENERIC and len(a.tokens) > 1) else 1.0
                cov += w * sim
                cov_w += w
            cov /= cov_w
            prec = matched_w / total_w if total_w > 0 else 0.0
            score = cov * (0.4 + 0.6 * prec)
            score *= _side_factor(p.side, a.side)
            prev = best.get(a.cls_index)
            if prev is None or score > prev[0] + 1e-9 or (abs(score - prev[0]) <= 1e-9 and not used_fuzzy and prev[2]):
                best[a.cls_index] = (score, ai, used_fuzzy)
        if not best:
            return Resolution(query, "none", None, 0.0, (), space)
        if p.side in ("left", "right"):
            # "left jugular": the unlateralized class matched; its left sibling is what was meant
            for ci, (sc, ai, fz) in list(best.items()):
                sib = self._siblings.get((ci, p.side))
                if sib is None or (allowed is not None and sib not in allowed):
                    continue
                lifted = sc / _side_factor(p.side, None)
                if sib not in best or best[sib][0] < lifted - 1e-9:
                    best[sib] = (lifted, ai, fz)
        ranked = sorted(best.items(), key=lambda kv: (-kv[1][0], self.classes[kv[0]].name))
        cands = tuple(Candidate(self.classes[ci], round(sc, 6), self._aliases[ai].text)
                      for ci, (sc, ai, _f) in ranked[:max(max_candidates, 2)])
        top_score = ranked[0][1][0]
        if top_score < min_confidence:
            return Resolution(query, "none", None, top_score, cands[:max_candidates], space)
        ties = [ci for ci, (sc, _ai, _f) in ranked if sc >= top_score - margin]
        if len(ties) > 1:
            return Resolution(query, "ambiguous", None, top_score,
                              tuple(c for c in cands if c.score >= top_score - margin)[:max_candidates]
                              or cands[:max_candidates], space)
        ci, (sc, _ai, fuzzy) = ranked[0]
        status = "fuzzy" if fuzzy else ("match" if sc >= 0.999 or not fuzzy else "fuzzy")
        return Resolution(query, status, self.classes[ci], sc, cands[:max_candidates], space)

    def label_id(self, text: str, space: str, **kw: Any) -> int:
        """Label id of ``text`` in ``space`` (raises :class:`UnresolvedTextError` with candidates)."""
        return self.resolve(text, space=space, **kw).label_id(space)

    def space_for_case(self, case_name: str, prefix: str = "cvpr25:") -> str | None:
        """The CVPR25 dataset label space of a case file name (``"CT_AMOS_amos_0018"`` -> ``"cvpr25:CT_AMOS"``).

        The longest dataset name that prefixes the case name (followed by ``_``) wins.
        """
        stem = Path(case_name).name
        for suffix in (".npz", ".nii.gz", ".nii"):
            if stem.endswith(suffix):
                stem = stem[: -len(suffix)]
        best: str | None = None
        for sp in self._spaces:
            if not sp.startswith(prefix):
                continue
            ds = sp[len(prefix):]
            if (stem == ds or stem.startswith(ds + "_")) and (best is None or len(ds) > len(best) - len(prefix)):
                best = sp
        return best


def _side_factor(q: str | None, a: str | None) -> float:
    if q == a:
        return 1.0
    if q is None:  # "adrenal gland" vs "left adrenal gland"
        return 0.92
    if q == "both":
        return 1.0 if a is None else 0.85
    if a is None:  # "left liver": the liver, with a doubt
        return 0.85
    return 0.3  # opposite side


# ------------------------------------------------------------------------- CVPR25 JSON
def _looks_like_cvpr25(data: Any) -> bool:
    if not isinstance(data, Mapping) or not data:
        return False
    for v in list(data.values())[:5]:
        if not isinstance(v, Mapping) or "instance_label" not in v:
            return False
    return True


def _cvpr25_classes(data: Mapping[str, Any]) -> list[VocabClass]:
    out: list[VocabClass] = []
    for dataset, labels in data.items():
        inst = bool(int(labels.get("instance_label", 0) or 0))
        for lid, names in labels.items():
            if lid == "instance_label":
                continue
            try:
                label = int(lid)
            except (TypeError, ValueError):
                log.warning("CVPR25 vocabulary: dataset %s has a non-integer label key %r; skipped", dataset, lid)
                continue
            if isinstance(names, str):
                names = [names]
            names = [str(n) for n in names if str(n).strip()]
            if not names:
                continue
            out.append(VocabClass(name=names[0], synonyms=tuple(names[1:]), instance=inst,
                                  category="lesion" if inst else "",
                                  ids={f"cvpr25:{dataset}": (label,)}, sources=("cvpr25",)))
    return out


# -------------------------------------------------------------------------- loading
def default_vocabulary_path() -> Path:
    """Path of the shipped ``vocabulary.json`` (``resources/vocabulary/``)."""
    here = Path(__file__).resolve()
    for cand in (here.parents[1] / "resources" / "vocabulary" / "vocabulary.json",
                 here.parents[2] / "resources" / "vocabulary" / "vocabulary.json"):
        if cand.is_file():
            return cand
    raise FileNotFoundError(
        "the shipped class vocabulary was not found; looked for resources/vocabulary/vocabulary.json "
        f"next to the package ({here.parents[1]}) and in the source checkout ({here.parents[2]})"
    )


def load_vocabulary(path: str | os.PathLike[str], *, base: Vocabulary | None | bool = True) -> Vocabulary:
    """Load a vocabulary file (this package's format or the CVPR25 class JSON).

    Parameters
    ----------
    path : path-like
        A ``.json`` file; a folder is searched for :data:`CVPR25_VOCAB_FILENAME`.
    base : Vocabulary, True or None
        Merge the loaded classes into this vocabulary (True: the shipped default;
        None/False: return the file's classes alone).
    """
    p = Path(path)
    if p.is_dir():
        found = find_dataset_vocabulary(p)
        if found is None:
            raise FileNotFoundError(f"{p}: no {CVPR25_VOCAB_FILENAME} in this folder or its parents")
        p = found
    if not p.is_file():
        raise FileNotFoundError(f"vocabulary file not found: {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: not valid JSON ({exc})") from None
    voc = Vocabulary.from_dict(data, source=str(p))
    if base is True:
        base = default_vocabulary()
    if isinstance(base, Vocabulary):
        return base.merged(voc)
    return voc


def find_dataset_vocabulary(folder: str | os.PathLike[str], levels: int = 2) -> Path | None:
    """The CVPR25 vocabulary file in ``folder`` or up to ``levels`` parents, else None."""
    p = Path(folder).resolve()
    if p.is_file():
        p = p.parent
    for _ in range(levels + 1):
        cand = p / CVPR25_VOCAB_FILENAME
        if cand.is_file():
            return cand
        if p.parent == p:
            break
        p = p.parent
    return None


@functools.lru_cache(maxsize=1)
def _default_cached(path: str, env: str) -> Vocabulary:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    voc = Vocabulary.from_dict(data, source=path)
    voc.name = "default"
    if env:
        extra = load_vocabulary(env, base=None)
        voc = voc.merged(extra)
    return voc


def default_vocabulary() -> Vocabulary:
    """The shipped vocabulary (cached), plus the file named by ``$MEDSEGFM_VOCABULARY`` if set."""
    return _default_cached(str(default_vocabulary_path()), os.environ.get(VOCAB_ENV_VAR, ""))


@functools.lru_cache(maxsize=8)
def _folder_cached(path: str, mtime: float) -> Vocabulary:
    return load_vocabulary(path, base=True)


def vocabulary_for_folder(folder: str | os.PathLike[str] | None) -> Vocabulary:
    """Default vocabulary, merged with the CVPR25 JSON found in/above ``folder`` (if any)."""
    if folder is not None:
        found = find_dataset_vocabulary(folder)
        if found is not None:
            return _folder_cached(str(found), found.stat().st_mtime)
    return default_vocabulary()


def resolve(text: str, vocab: Vocabulary | None = None, **kw: Any) -> Resolution:
    """Resolve ``text`` with ``vocab`` (default: :func:`default_vocabulary`); see :meth:`Vocabulary.resolve`."""
    return (vocab or default_vocabulary()).resolve(text, **kw)


def resolve_text_prompts(
    text_prompts: Mapping[str, Any],
    vocab: Vocabulary | None = None,
    *,
    space: str | None = None,
    min_confidence: float = 0.6,
) -> dict[int, Resolution]:
    """Resolve a CVPR25 ``text_prompts`` dict (``{"1": text, ..., "instance_label": 0|1}``).

    Returns
    -------
    dict
        Label id (int, in the case's numbering) -> :class:`Resolution`, sorted by label.
    """
    if not isinstance(text_prompts, Mapping):
        raise ValueError(f"text_prompts must be a dict of label id -> text; got {type(text_prompts).__name__}")
    vocab = vocab or default_vocabulary()
    out: dict[int, Resolution] = {}
    for k, v in text_prompts.items():
        if str(k) == "instance_label":
            continue
        try:
            label = int(k)
        except (TypeError, ValueError):
            raise ValueError(f"text_prompts key {k!r} is not a label id (expected '1', '2', ...)") from None
        if isinstance(v, (list, tuple)):
            v = v[0] if v else ""
        out[label] = vocab.resolve(str(v), space=space, min_confidence=min_confidence)
    return dict(sorted(out.items()))


def attach_vocabulary(backend: Any, vocab: Vocabulary | None = None, *, min_confidence: float = 0.6) -> bool:
    """Give a text-capable backend a resolver from free text to its label ids.

    Backends may not import ``engine`` (layering), so the host hands the vocabulary over:
    a backend that declares a ``label_space`` (``"vista3d"``) and a ``text_resolver``
    attribute gets ``text_resolver(text) -> label id``, which raises
    :class:`UnresolvedTextError` (a ``ValueError``) listing the candidates for ambiguous
    or unknown text. A resolver set already (by the backend's constructor) is replaced
    only when ``vocab`` is given explicitly.

    Returns
    -------
    bool
        True when a resolver was attached.
    """
    space = getattr(backend, "label_space", None)
    if not space or not hasattr(backend, "text_resolver"):
        return False
    if getattr(backend, "text_resolver", None) is not None and vocab is None:
        return False
    voc = vocab or default_vocabulary()
    if space not in voc.spaces():
        log.warning("vocabulary %r has no label space %r for backend %r", voc.name, space,
                    getattr(backend, "name", backend))
        return False

    def resolver(text: str) -> int:
        return voc.resolve(text, space=space, min_confidence=min_confidence).label_id(space)

    backend.text_resolver = resolver
    return True

"""The vocabulary's data model: classes, candidates, resolutions; the format constants."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .text import _parse, canonical_key

#: File name of the CVPR 2025 text-guided segmentation vocabulary (CC BY-NC-SA 4.0; not shipped).
CVPR25_VOCAB_FILENAME = "CVPR25_TextSegFMData_with_class.json"
#: Environment variable naming an extra vocabulary file merged into the default one.
VOCAB_ENV_VAR = "MEDSEGFM_VOCABULARY"

VOCAB_FORMAT = "medsegfm-vocabulary"


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

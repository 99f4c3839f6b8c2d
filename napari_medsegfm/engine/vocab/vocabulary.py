"""The searchable :class:`Vocabulary` and the CVPR 2025 JSON class list it reads."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .classes import VOCAB_FORMAT, Candidate, Resolution, VocabClass
from .text import _GENERIC, _exact_form, _parse, _token_similarity, canonical_key

log = logging.getLogger("napari_medsegfm.engine.vocab")


# --------------------------------------------------------------------------- vocabulary
@dataclass(frozen=True)
class _Alias:
    cls_index: int
    text: str
    side: str | None
    tokens: tuple[str, ...]


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

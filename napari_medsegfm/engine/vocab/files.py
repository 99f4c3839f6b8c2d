"""Finding and loading vocabularies, free-text resolution helpers, and handing a vocabulary to a backend."""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .classes import CVPR25_VOCAB_FILENAME, VOCAB_ENV_VAR, Resolution
from .vocabulary import Vocabulary

log = logging.getLogger("napari_medsegfm.engine.vocab")


# -------------------------------------------------------------------------- loading
def default_vocabulary_path() -> Path:
    """Path of the shipped ``vocabulary.json`` (``resources/vocabulary/``)."""
    package = Path(__file__).resolve().parents[2]  # napari_medsegfm/ (this file: engine/vocab/files.py)
    for cand in (package / "resources" / "vocabulary" / "vocabulary.json",
                 package.parent / "resources" / "vocabulary" / "vocabulary.json"):
        if cand.is_file():
            return cand
    raise FileNotFoundError(
        "the shipped class vocabulary was not found; looked for resources/vocabulary/vocabulary.json "
        f"next to the package ({package}) and in the source checkout ({package.parent})"
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

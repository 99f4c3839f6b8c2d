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

Nothing here imports torch or Qt. The package: :mod:`.text` (normalisation, similarity),
:mod:`.classes` (the data model), :mod:`.vocabulary` (:class:`Vocabulary`), :mod:`.files`
(loading, resolution helpers, :func:`attach_vocabulary`).
"""

from .classes import (
    CVPR25_VOCAB_FILENAME,
    VOCAB_ENV_VAR,
    VOCAB_FORMAT,
    Candidate,
    Resolution,
    UnresolvedTextError,
    VocabClass,
)
from .files import (
    attach_vocabulary,
    default_vocabulary,
    default_vocabulary_path,
    find_dataset_vocabulary,
    load_vocabulary,
    resolve,
    resolve_text_prompts,
    vocabulary_for_folder,
)
from .text import canonical_key, normalize_tokens
from .vocabulary import Vocabulary

__all__ = [
    "VocabClass",
    "Candidate",
    "Resolution",
    "Vocabulary",
    "UnresolvedTextError",
    "CVPR25_VOCAB_FILENAME",
    "VOCAB_ENV_VAR",
    "VOCAB_FORMAT",
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

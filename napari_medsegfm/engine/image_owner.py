"""Which session's image a backend currently holds (a backend may be shared by sessions).

A backend's ``set_image`` is expensive (LiteMedSAM: image embeddings), so a session
skips it when the backend already holds that session's image. The record lives beside
the backend, not in the session, because another session may call ``set_image`` on the
same backend in between.

Backends that can be weakly referenced are keyed by a weak reference (the entry goes
with the backend). For the rare backend that cannot (``__slots__`` without
``__weakref__``) the entry keeps the backend object itself and is matched by identity,
so a later object at the same address is never mistaken for it; such entries are
dropped when the owning session closes (:meth:`ImageOwners.release`).
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

__all__ = ["ImageOwners", "IMAGE_OWNERS"]


class ImageOwners:
    """``backend -> owner token`` of the session whose image the backend holds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._weak: weakref.WeakKeyDictionary[Any, object] = weakref.WeakKeyDictionary()
        self._held: list[tuple[Any, object]] = []  # (backend, token) for backends without weakrefs

    def owner(self, backend: Any) -> object | None:
        """The token recorded for ``backend`` (``None``: no image of a known session)."""
        with self._lock:
            try:
                return self._weak.get(backend)
            except TypeError:
                return next((t for b, t in self._held if b is backend), None)

    def set(self, backend: Any, token: object) -> None:
        """Record that ``backend`` now holds the image of the session owning ``token``."""
        with self._lock:
            try:
                self._weak[backend] = token
            except TypeError:
                self._held = [(b, t) for b, t in self._held if b is not backend]
                self._held.append((backend, token))

    def release(self, token: object) -> None:
        """Forget ``token`` (its session closed): backends it held images on hold none now."""
        with self._lock:
            self._held = [(b, t) for b, t in self._held if t is not token]
            for b in [b for b, t in self._weak.items() if t is token]:
                self._weak.pop(b, None)


#: the process-wide record (sessions share backends across the process)
IMAGE_OWNERS = ImageOwners()

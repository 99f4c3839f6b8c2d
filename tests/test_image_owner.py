"""Which session's image a shared backend holds: no confusion by object ids, entries released."""

from __future__ import annotations

import gc

import numpy as np

from napari_medsegfm.engine.image_owner import ImageOwners
from napari_medsegfm.engine.session import AnnotationSession
from napari_medsegfm.types import Box3D, Capability, Volume


class SlottedBox:
    """A backend that cannot be weakly referenced (``__slots__`` without ``__weakref__``)."""

    __slots__ = ("volume", "set_image_calls")
    name = "slotted"
    capabilities = Capability.BOX3D

    def __init__(self) -> None:
        self.volume = None
        self.set_image_calls = 0

    def set_image(self, volume: Volume) -> None:
        self.volume = volume
        self.set_image_calls += 1

    def reset(self) -> None:
        self.volume = None

    def predict(self, prompts, prev_mask, cancel):
        b = prompts[-1]
        m = np.zeros(self.volume.spatial_shape, bool)
        m[b.z_min:b.z_max + 1, b.y_min:b.y_max + 1, b.x_min:b.x_max + 1] = True
        return m


def _box(lid: int) -> Box3D:
    return Box3D(1, 2, 1, 1, 4, 4, object_id=lid)


def test_shared_unweakrefable_backend_gets_each_sessions_image():
    be = SlottedBox()
    v1, v2 = Volume(np.zeros((4, 8, 8), np.float32)), Volume(np.ones((4, 8, 8), np.float32))
    with AnnotationSession(v1, be, use_worker=False) as s1, AnnotationSession(v2, be, use_worker=False) as s2:
        a, b = s1.add_object("a").label_id, s2.add_object("b").label_id
        s1.add_prompt(_box(a))
        s1.add_prompt(_box(a))
        assert be.set_image_calls == 1 and be.volume is v1  # held: not set again
        s2.add_prompt(_box(b))
        assert be.set_image_calls == 2 and be.volume is v2
        s1.add_prompt(_box(a))  # the backend holds s2's image now: s1 sets its own again
        assert be.set_image_calls == 3 and be.volume is v1


def test_owner_records_match_by_identity_and_are_released():
    owners = ImageOwners()
    token = object()
    be = SlottedBox()
    owners.set(be, token)
    assert owners.owner(be) is token
    assert owners.owner(SlottedBox()) is None  # another object: never its owner, whatever its id
    owners.release(token)
    assert owners.owner(be) is None

    class Plain:
        pass

    weak_be = Plain()
    owners.set(weak_be, token)
    assert owners.owner(weak_be) is token
    del weak_be
    gc.collect()
    for _ in range(50):  # new objects (some may reuse the freed address) are never "owned"
        assert owners.owner(Plain()) is None


def test_closed_session_releases_its_unweakrefable_backend():
    be = SlottedBox()
    from napari_medsegfm.engine.image_owner import IMAGE_OWNERS

    with AnnotationSession(Volume(np.zeros((4, 8, 8), np.float32)), be, use_worker=False) as s:
        s.add_prompt(_box(s.add_object("a").label_id))
        assert IMAGE_OWNERS.owner(be) is not None
    assert IMAGE_OWNERS.owner(be) is None

"""types.py: prompt constructors, validation against a volume, dict round trips, Volume, CancelToken."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from napari_medsegfm.types import (
    Box2D,
    Box3D,
    Cancelled,
    CancelToken,
    Capability,
    Point,
    Scribble,
    TextPrompt,
    Volume,
    prompt_from_dict,
    prompt_kind,
    prompt_to_dict,
    required_capability,
    validate_prompt,
)

PROMPTS = [
    Box3D(1, 3, 2, 4, 10, 12, object_id=2, z_mid=2),
    Box3D(0, 0, 0, 0, 0, 0),
    Box2D(1, 2, 5, 6, z=3, object_id=4),
    Box2D(1, 2, 5, 6),
    Point((1, 2, 3), positive=False, object_id=3),
    Point((5, 6)),
    Scribble(np.array([[1, 2, 3], [1, 2, 4]]), positive=False, object_id=9),
    Scribble(np.array([[7, 8]])),
    TextPrompt("  left kidney ", instance=True, object_id=5),
]


@pytest.mark.parametrize("p", PROMPTS, ids=lambda p: prompt_kind(p))
def test_prompt_dict_roundtrip_through_json(p):
    d = json.loads(json.dumps(prompt_to_dict(p)))
    q = prompt_from_dict(d)
    assert q == p and type(q) is type(p)
    assert required_capability(p) in Capability


def test_constructors_validate_and_name_the_value():
    with pytest.raises(ValueError, match="z_min=4 > z_max=3"):
        Box3D(4, 3, 0, 0, 1, 1)
    with pytest.raises(ValueError, match="Box3D.y_min must be >= 0; got -1"):
        Box3D(0, 1, -1, 0, 1, 1)
    with pytest.raises(ValueError, match="z_mid=9 outside"):
        Box3D(0, 3, 0, 0, 1, 1, z_mid=9)
    with pytest.raises(ValueError, match="integer voxel index; got 2.5"):
        Box2D(0, 0, 2.5, 3)
    with pytest.raises(ValueError, match="object_id must be >= 1"):
        Point((1, 1), object_id=0)
    with pytest.raises(ValueError, match="2 .* or 3"):
        Point((1,))
    with pytest.raises(ValueError, match="non-empty"):
        Scribble(np.zeros((0, 3), int))
    with pytest.raises(ValueError, match="integer voxel"):
        Scribble(np.array([[0.5, 1, 1]]))
    with pytest.raises(ValueError, match="non-empty string"):
        TextPrompt("   ")
    with pytest.raises(ValueError, match="unknown prompt kind 'lasso'"):
        prompt_from_dict({"kind": "lasso"})
    # numpy integers and integral floats are accepted and normalised to int
    b = Box3D(np.int64(1), 2.0, np.uint8(0), 0, 1, 1)
    assert type(b.z_min) is int and b.z_max == 2
    assert Point(np.array([1, 2, 3])).zyx == (1, 2, 3)


def test_validate_prompt_against_shape():
    shape = (10, 20, 30)
    for p in (Box3D(0, 9, 0, 0, 19, 29), Box2D(0, 0, 19, 29, z=9), Point((9, 19, 29)),
              Scribble(np.array([[9, 19, 29]])), TextPrompt("x")):
        validate_prompt(p, shape)
    with pytest.raises(ValueError, match=r"Box3D.x_max=30 is outside the volume: axis 2 has size 30"):
        validate_prompt(Box3D(0, 9, 0, 0, 19, 30), shape)
    with pytest.raises(ValueError, match=r"Box2D.z=10"):
        validate_prompt(Box2D(0, 0, 1, 1, z=10), shape)
    with pytest.raises(ValueError, match="needs its slice index z"):
        validate_prompt(Box2D(0, 0, 1, 1), shape)
    with pytest.raises(ValueError, match=r"Point.zyx\[1\]=20"):
        validate_prompt(Point((0, 20, 0)), shape)
    with pytest.raises(ValueError, match="has 2 coordinates"):
        validate_prompt(Point((0, 0)), shape)
    with pytest.raises(ValueError, match="reach index 30 on axis 2"):
        validate_prompt(Scribble(np.array([[0, 0, 30]])), shape)
    with pytest.raises(ValueError, match="Box3D needs a 3D volume"):
        validate_prompt(Box3D(0, 0, 0, 0, 1, 1), (20, 30))
    with pytest.raises(ValueError, match="given for a 2D image"):
        validate_prompt(Box2D(0, 0, 1, 1, z=2), (20, 30))
    validate_prompt(Box2D(0, 0, 19, 29), (20, 30))


def test_scribble_is_immutable_and_hashable():
    s = Scribble(np.array([[1, 2, 3]]))
    with pytest.raises(ValueError):
        s.voxels[0, 0] = 5
    assert hash(s) == hash(Scribble(np.array([[1, 2, 3]])))
    assert s != Scribble(np.array([[1, 2, 3]]), positive=False)


def test_volume_shapes_spacing_rgb():
    v = Volume(np.zeros((4, 5, 6)), spacing=(2, 1, 0.5))
    assert v.spatial_shape == (4, 5, 6) and v.ndim == 3 and v.voxel_volume_ml == pytest.approx(0.001)
    rgb = Volume.rgb(np.zeros((5, 6, 3), np.uint8))
    assert rgb.is_rgb and rgb.spatial_shape == (5, 6) and rgb.spacing == (1.0, 1.0)
    # (Z, Y, 3) without the rgb flag is a thin 3D volume, not an image
    assert Volume(np.zeros((5, 6, 3))).spatial_shape == (5, 6, 3)
    with pytest.raises(ValueError, match="spacing .* has 2 values; expected 3"):
        Volume(np.zeros((4, 5, 6)), spacing=(1, 1))
    with pytest.raises(ValueError, match="finite and positive"):
        Volume(np.zeros((4, 5)), spacing=(0, 1))
    with pytest.raises(ValueError, match="must be 2D"):
        Volume(np.zeros((2, 3, 4, 5)))
    with pytest.raises(ValueError, match="4x4"):
        Volume(np.zeros((2, 3, 4)), affine=np.eye(3))


@pytest.mark.timing
def test_cancel_token_wakes_waiters():
    t = CancelToken()
    assert not t.cancelled
    t.check()
    woke = []

    def waiter():
        woke.append(t.wait(5.0))

    th = threading.Thread(target=waiter)
    th.start()
    time.sleep(0.05)
    t0 = time.perf_counter()
    t.cancel("user")
    th.join(1)
    assert woke == [True] and time.perf_counter() - t0 < 0.5
    with pytest.raises(Cancelled, match="user"):
        t.check()

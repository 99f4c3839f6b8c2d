"""The size-limit helper every reader uses before allocating what a file declares."""

from __future__ import annotations

import pytest

from napari_medsegfm.io import limits


def test_parse_and_format_sizes():
    assert limits.parse_bytes("2G") == 2 << 30 and limits.parse_bytes("512M") == 512 << 20
    assert limits.parse_bytes("1024") == 1024 and limits.parse_bytes("1.5KiB") == 1536
    for bad in ("", "lots", "-1", "0"):
        with pytest.raises(ValueError, match="size|at least"):
            limits.parse_bytes(bad, "X")
    assert limits.format_bytes(20 << 30) == "20.0 GiB" and limits.format_bytes(10) == "10 B"


def test_nbytes_is_exact_and_refuses_negative_dims():
    # a product that wraps around in int64 stays exact
    assert limits.array_nbytes((2**40, 2**40, 16), 1) == 2**84
    with pytest.raises(ValueError, match="negative"):
        limits.array_nbytes((4, -1), 1, what="f.npz: member 'imgs'")
    with pytest.raises(ValueError, match="not an integer"):
        limits.array_nbytes((4, 2.5), 1)


def test_limit_from_the_environment(monkeypatch):
    monkeypatch.setenv(limits.ENV_MAX_ARRAY_BYTES, "1M")
    assert limits.max_array_bytes() == 1 << 20
    limits.check_array_bytes(1 << 20, "ok")
    with pytest.raises(limits.ArrayTooLargeError) as ei:
        limits.check_shape((1025, 1024), 1, "case.npz: member 'imgs' (1025, 1024) uint8")
    msg = str(ei.value)
    assert "case.npz: member 'imgs'" in msg and "1.0 MiB" in msg and limits.ENV_MAX_ARRAY_BYTES in msg
    monkeypatch.setenv(limits.ENV_MAX_ARRAY_BYTES, "a lot")
    with pytest.raises(ValueError, match=limits.ENV_MAX_ARRAY_BYTES):
        limits.max_array_bytes()
    monkeypatch.setenv(limits.ENV_MAX_PICKLE_NODES, "0")
    with pytest.raises(ValueError, match="at least 1"):
        limits.max_pickle_nodes()


def test_default_is_half_the_ram_and_unknown_memory_does_not_refuse(monkeypatch):
    monkeypatch.delenv(limits.ENV_MAX_ARRAY_BYTES, raising=False)
    phys = limits._physical_memory()
    if phys:
        assert limits.max_array_bytes() == max(1 << 30, phys // 2)
    monkeypatch.setattr(limits, "available_memory_bytes", lambda: None)
    limits.check_array_bytes(1 << 30, "fits when the free memory is unknown")
    monkeypatch.setattr(limits, "available_memory_bytes", lambda: 1 << 20)
    with pytest.raises(limits.ArrayTooLargeError, match="available now"):
        limits.check_array_bytes(2 << 20, "x")

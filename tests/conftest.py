"""Shared fixtures: the real sample data in ../shared/data and an artifacts folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _find_shared_data() -> Path:
    env = os.environ.get("MEDSEGFM_TEST_DATA")
    candidates = [Path(env)] if env else []
    candidates += [REPO.parent / "shared" / "data", Path("/work/shared/data")]
    for c in candidates:
        if (c / "MANIFEST.md").is_file():
            return c
    raise RuntimeError(
        "The real test data (shared/data with MANIFEST.md) was not found; looked in "
        + ", ".join(str(c) for c in candidates)
        + ". Set MEDSEGFM_TEST_DATA to its folder."
    )


SHARED_DATA = _find_shared_data()
ARTIFACTS = Path(os.environ.get("MEDSEGFM_ARTIFACTS", REPO / "test-artifacts"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of the real sample data (see its MANIFEST.md)."""
    return SHARED_DATA


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests save screenshots and other artifacts for a person to look at."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS

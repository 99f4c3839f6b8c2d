"""Shared fixtures: the real sample data in ../shared/data and an artifacts folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


DATA_ENV = "MEDSEGFM_TEST_DATA"


def _find_shared_data() -> tuple[Path | None, str]:
    """(folder or None, where it was looked for): ``$MEDSEGFM_TEST_DATA``, else the ``shared/data``
    folder beside this checkout (``<repo>/../shared/data``). A folder counts when it holds
    the data's ``MANIFEST.md``."""
    env = os.environ.get(DATA_ENV)
    cand = Path(env) if env else REPO.parent / "shared" / "data"
    where = f"${DATA_ENV}={env}" if env else str(cand)
    return (cand if (cand / "MANIFEST.md").is_file() else None), where


SHARED_DATA, _DATA_WHERE = _find_shared_data()
SKIP_NO_DATA = (f"needs the real sample data (a folder with MANIFEST.md), not found at {_DATA_WHERE}; "
                f"put it at <repo>/../shared/data or set ${DATA_ENV}")
ARTIFACTS = Path(os.environ.get("MEDSEGFM_ARTIFACTS", REPO / "test-artifacts"))


def pytest_report_header(config: pytest.Config) -> str:
    return f"medsegfm test data: {SHARED_DATA or 'not found at ' + _DATA_WHERE + ' (tests that need it skip)'}"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of the real sample data (see its MANIFEST.md); tests that need it skip without it."""
    if SHARED_DATA is None:
        pytest.skip(SKIP_NO_DATA)
    return SHARED_DATA


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests save screenshots and other artifacts for a person to look at."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS

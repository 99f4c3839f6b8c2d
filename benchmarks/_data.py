"""Where the benchmarks find the real sample data: ``$MEDSEGFM_TEST_DATA``, else the
``shared/data`` folder beside this checkout (``<repo>/../shared/data``), the same rule as the
tests (``tests/conftest.py``). No machine path is written anywhere."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENV_VAR = "MEDSEGFM_TEST_DATA"


def shared_data_candidate() -> Path:
    """The folder the data should be in (it may not exist)."""
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else REPO.parent / "shared" / "data"


def shared_data() -> Path:
    """The data folder (holding ``MANIFEST.md``); ``FileNotFoundError`` saying where it looked."""
    c = shared_data_candidate()
    if (c / "MANIFEST.md").is_file():
        return c
    raise FileNotFoundError(f"the real sample data (a folder with MANIFEST.md) is not at {c}; put the shared "
                            f"data there or set ${ENV_VAR} to its folder")

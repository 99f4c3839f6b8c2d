"""Hostile files (tests/hostile): no crash, no hang, no memory blow-up, a clear error.

The corpus is generated here (nothing hostile is checked in). Every case is opened in a
subprocess capped at 1.5 GiB of address space with a timeout per case
(:mod:`hostile.harness`). Run against the code before these fixes (``HOSTILE_CODE=<old
checkout> python tests/hostile/generate.py OUT --run --timeout 30``), 4 cases crash the
process (segfault), 4 hang, 14 die with ``MemoryError``, 9 end in a bare
``RecursionError``/``OverflowError``/``DecompressionBombError``/``sqlite3.DatabaseError``/
``KeyError`` and 20 are accepted with a wrong result (object arrays of file bytes, symlink
aliases listed twice, NaN contrast limits, a foreign database modified). Here each must give
the expected clear error (exception class, message naming the file and member, bounded in
length) or the expected result.
"""

from __future__ import annotations

import pytest
from hostile import harness
from hostile.corpus import CASES, counts_by_family


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, shared_data):
    base = tmp_path_factory.mktemp("hostile")
    built = {}
    for c in CASES:
        folder = base / c.family / c.name
        built[c.name] = (c.make(folder), folder)
    answers = harness.run([c.request(built[c.name][0]) for c in CASES])
    return {name: (args, folder, answers[name]) for name, (args, folder) in built.items()}


@pytest.mark.parametrize("case", CASES, ids=[f"{c.family}-{c.name}" for c in CASES])
def test_hostile_case(outcomes, case):
    args, folder, answer = outcomes[case.name]
    problem = case.judge(args, answer, folder)
    assert problem is None, f"{case.family}/{case.name} ({case.what}): {problem}"


def test_every_family_is_covered():
    counts = counts_by_family()
    assert set(counts) == {"pickle", "npz", "nifti", "hdf5", "json", "png", "dataset"}
    assert counts["pickle"] >= 30 and counts["npz"] >= 8 and counts["dataset"] >= 10
    assert len({c.name for c in CASES}) == len(CASES)


def test_the_harness_reports_crashes_and_hangs(tmp_path):
    """Control: a request that segfaults the child, then one that hangs, then a normal one."""
    crash = tmp_path / "crash.pkl"
    crash.write_bytes(b"")
    reqs = [{"name": "segv", "action": "_segfault", "args": {"path": str(crash)}, "env": {}},
            {"name": "hang", "action": "_sleep", "args": {"path": str(crash)}, "env": {}},
            {"name": "fine", "action": "safe_loads", "args": {"path": str(crash)}, "env": {}}]
    out = harness.run(reqs, timeout=3)
    assert out["segv"].get("crash") == -11
    assert "timeout" in out["hang"]
    assert out["fine"]["exc"] == "UnsafePickleError"  # an empty stream; the replaced child answers

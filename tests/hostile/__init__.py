"""A corpus of hostile and odd input files, and a harness to open them safely.

* :mod:`hostile.pickles` — hand-assembled hostile pickle streams;
* :mod:`hostile.files` — zip/npy/NIfTI/HDF5/PNG/JSON files declaring what they do not hold;
* :mod:`hostile.corpus` — every case: family, what it tries, the action that opens it, the
  expected outcome (:data:`hostile.corpus.CASES`);
* :mod:`hostile.harness` / :mod:`hostile.child` — run the cases in a subprocess with an
  address-space cap and a timeout (a crash or hang fails one case, not the run);
* ``python tests/hostile/generate.py OUT [--run]`` — write the corpus to a folder (and run it).

Used by ``tests/test_hostile_files.py``.
"""

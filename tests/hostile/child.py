"""The subprocess that opens hostile files (started by :mod:`hostile.harness`).

Reads one JSON request per line on stdin ``{"name", "action", "args", "env"}``, performs the
action and answers one JSON line on stdout ``{"name", "ok", "summary" | "exc", "mro", "msg",
"elapsed_s", "warnings"}``. It runs under the address-space limit and the timeout the
harness sets: a crash or a hang shows as the missing answer.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.messages.append(record.getMessage()[:300])
        except Exception:  # noqa: BLE001 - a log message must not break the run
            self.messages.append(str(record.msg)[:300])


def _summary_of_case(case: Any) -> dict[str, Any]:
    from napari_medsegfm.io.layers import case_to_layers

    layers = case_to_layers(case)
    clim = next((kw.get("contrast_limits") for _d, kw, t in layers if t == "image" and "contrast_limits" in kw), None)
    return {"format": case.format, "shape": list(case.image.spatial_shape), "boxes": len(case.boxes),
            "clicks": len(case.clicks or []), "labels": sorted(case.labels),
            "contrast_limits": None if clim is None else [float(x) for x in clim]}


def act(action: str, args: dict[str, Any]) -> dict[str, Any]:
    path = Path(args["path"])
    if action == "_segfault":  # controls for the harness itself
        import ctypes

        ctypes.string_at(0)
    if action == "_sleep":
        time.sleep(3600)
    if action == "safe_loads":
        from napari_medsegfm.io.safe_pickle import safe_loads

        obj = safe_loads(path.read_bytes())
        return {"type": type(obj).__name__}
    if action in ("load_case", "layers"):
        from napari_medsegfm.io import detect_format, load_case

        detect_format(path)  # claim time must not crash or hang either
        opts = dict(args.get("opts") or {})
        case_id = opts.pop("case_id", None)
        return _summary_of_case(load_case(path, case_id=case_id, **opts))
    if action == "discover":
        from napari_medsegfm.dataset.catalog import discover
        from napari_medsegfm.io import list_cases

        cat = discover(path)
        listed = sorted(r.name for r in list_cases(path / "imgs")) if (path / "imgs").is_dir() else []
        return {"ids": cat.ids(), "layout": cat.layout, "listed": listed}
    if action == "catalog_load":
        from napari_medsegfm.dataset.catalog import discover

        cat = discover(path)
        return _summary_of_case(cat.load(args["case"]))
    if action in ("workspace", "workspace_open"):
        from napari_medsegfm.dataset.workspace import DatasetWorkspace

        with DatasetWorkspace(path, user="hostile") as ws:
            rows = ws.rows()
            if action == "workspace_open":
                oc = ws.open(args["case"])
                ws.close_case(oc, save=False)
            return {"ids": [r.case_id for r in rows]}
    raise ValueError(f"unknown action {action!r}")


def _use_other_checkout() -> None:
    """``$HOSTILE_CODE=/path/to/checkout``: import napari_medsegfm from there instead of the installed
    (editable) one, to run the same corpus against another version, e.g. before a fix."""
    code = os.environ.get("HOSTILE_CODE")
    if not code:
        return
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__ + repr(f)]
    sys.path.insert(0, code)


def main() -> int:
    _use_other_checkout()
    handler = _Collect()
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.WARNING)
    for line in sys.stdin:
        req = json.loads(line)
        old_env = {k: os.environ.get(k) for k in req.get("env", {})}
        os.environ.update(req.get("env", {}))
        handler.messages = []
        t0 = time.perf_counter()
        out: dict[str, Any] = {"name": req["name"]}
        try:
            out["summary"] = act(req["action"], req["args"])
            out["ok"] = True
        except BaseException as exc:  # noqa: BLE001 - every outcome is reported to the parent
            out.update(ok=False, exc=type(exc).__name__, mro=[c.__name__ for c in type(exc).__mro__],
                       msg=str(exc)[:20000], msg_len=len(str(exc)))
        finally:
            for k, v in old_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        out["elapsed_s"] = round(time.perf_counter() - t0, 3)
        out["warnings"] = handler.messages
        if out.get("summary") is not None:
            out["summary"]["warnings"] = handler.messages
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

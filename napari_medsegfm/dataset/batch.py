"""Batch pre-segmentation of a whole dataset on Dask distributed.

:func:`run_batch` runs one backend over every case of a dataset (any layout the
:mod:`~napari_medsegfm.dataset.catalog` knows) and writes one ``<out>/<case_id>.npz``
with ``segs`` (uint8 labels, the image's spatial shape) per case, plus a manifest.

* **Where it runs.** A :class:`distributed.LocalCluster` on this machine (worker
  *processes*, one thread each, ``memory_limit`` per worker: a worker that grows past
  it is restarted by its nanny and the case is recorded as failed), or an existing
  cluster given by its scheduler address (its workers need this package installed and
  the dataset and output paths mounted at the same place). ``scheduler="sync"`` runs
  in this process (reference results, debugging).
* **Bounded memory.** Workers read their case from disk and write their output
  themselves; only a small record travels back. At most ``2 x threads`` cases are
  queued at once, so neither the scheduler nor the client accumulates work.
* **Resumable.** ``<out>/manifest.json`` (and an append-only
  ``<out>/manifest.journal.jsonl`` written as results arrive, so a killed run loses
  nothing) records per case the SHA-256 of the input files and of the output file,
  and the configuration. A case is skipped when its output file still has the
  recorded checksum, the configuration is the same, and its inputs are unchanged
  (same size/mtime, or, if those moved, the same SHA-256).
* **Failures are data.** An exception in a case (unreadable file, no boxes, backend
  error, worker killed) is recorded in its manifest entry (``status: "error"``,
  ``error``, the end of the traceback); the batch goes on.
* **Agreement with existing labels.** When a case has labels (ground truth), the
  manifest holds the Dice of the prediction against them (mean over labels and per
  label); with a :class:`~napari_medsegfm.dataset.status.StatusStore` the value is also
  stored as metric ``dice_pred`` for the navigator's review queue.

Prompts (``prompts_from``):

``boxes``
    the boxes stored in the case (CVPR npz ``boxes``, read by :mod:`napari_medsegfm.io.cvpr`
    with its out-of-bounds policy), box ``i`` -> label ``i + 1``.

Whatever the prompt source, the objects are predicted and merged by the challenge step's
own :func:`~napari_medsegfm.tasks.predict.predict_masks` and
:func:`~napari_medsegfm.tasks.predict.merge_masks` (larger objects first, smaller on top).
``gts``
    one tight box per label of the existing labels (3D: the z range and the xy box on the
    median labelled slice), prompting the same label id: a model re-segmentation to
    compare with the labels.
``text``
    the case's text prompts (CVPR ``text_prompts``), else its label names; needs a backend
    with TEXT capability.

Outputs are byte-for-byte deterministic (fixed zip timestamps), so a result computed on
two workers is identical to the single-process one, checksum included.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..io.atomic import atomic_write_bytes
from ..tasks.predict import merge_masks, predict_masks
from ..types import CancelToken, Capability, Prompt, TextPrompt
from ..utils import sha256_file
from ._util import json_default, label_ids
from .batch_outputs import boxes_from_labels, encode_segs, output_path, read_segs
from .case_loading import load_entry
from .catalog import CaseEntry, Catalog, discover, existing_labels

__all__ = [
    "PROMPT_SOURCES",
    "BatchReport",
    "run_batch",
    "process_case",
    "boxes_from_labels",
    "read_manifest",
    "output_path",
    "read_segs",
]

logger = logging.getLogger(__name__)

PROMPT_SOURCES = ("boxes", "gts", "text")
MANIFEST = "manifest.json"
JOURNAL = "manifest.journal.jsonl"
MANIFEST_VERSION = 1


# ----------------------------------------------------------------------------- the task
_LOCAL = threading.local()


def _backend(name: str, kwargs: Mapping[str, Any]) -> Any:
    """One backend instance per (worker thread, name, kwargs), reused across cases."""
    from ..backends.registry import get_backend

    key = (name, json.dumps(dict(kwargs), sort_keys=True, default=str))
    cache = getattr(_LOCAL, "backends", None)
    if cache is None:
        cache = _LOCAL.backends = {}
    if key not in cache:
        cache[key] = get_backend(name, **dict(kwargs))
    return cache[key]


def _inputs_sha256(entry: CaseEntry) -> str:
    import hashlib

    h = hashlib.sha256()
    for p in entry.files():
        h.update(p.name.encode())
        h.update(sha256_file(p).encode())
    return h.hexdigest()


def process_case(entry: CaseEntry, config: Mapping[str, Any]) -> dict[str, Any]:
    """Segment one case and write its output; never raises for a per-case problem.

    Runs on a Dask worker (or in-process).

    Parameters
    ----------
    entry : CaseEntry
        The catalog entry.
    config : mapping
        ``backend``, ``backend_kwargs``, ``prompts_from``, ``out_dir``, ``label_names``.

    Returns
    -------
    dict
        The case's manifest record: ``case_id``, ``name``, ``status`` (``"ok"``, or
        ``"error"`` with ``error`` and ``traceback``), ``backend``, ``input_sha256``,
        ``output`` (relative to ``out_dir``), ``output_sha256``, ``shape``, ``label_ids``,
        ``seconds``, ``finished_at``, and ``dice``/``dice_per_label`` against the case's
        existing labels where it has them.
    """
    t0 = time.time()
    rec: dict[str, Any] = {
        "case_id": entry.case_id, "name": entry.name, "status": "error", "backend": config["backend"],
        "prompts_from": config["prompts_from"], "started_at": t0, "worker": _worker_name(),
        "input_signature": entry.signature(),
    }
    try:
        rec["input_sha256"] = _inputs_sha256(entry)
        backend = _backend(config["backend"], config.get("backend_kwargs") or {})
        segs, gts, names, n_obj = _segment(entry, config, backend)
        out = output_path(config["out_dir"], entry.case_id)
        out.parent.mkdir(parents=True, exist_ok=True)
        data = encode_segs(segs)
        atomic_write_bytes(out, data)
        import hashlib

        rec.update(
            status="ok", output=str(out.relative_to(config["out_dir"])), output_sha256=hashlib.sha256(data).hexdigest(),
            shape=list(segs.shape), n_objects=n_obj, label_ids=label_ids(segs),
            label_names={str(k): v for k, v in names.items()},
        )
        if gts is not None:
            from ..tasks.metrics import per_class_dsc

            if gts.shape == segs.shape:
                per = per_class_dsc(gts, segs)
                vals = [v for v in per.values() if not np.isnan(v)]
                rec["dice"] = float(np.mean(vals)) if vals else None
                rec["dice_per_label"] = {str(k): (None if np.isnan(v) else float(v)) for k, v in per.items()}
            else:
                rec["dice"] = None
                rec["dice_note"] = f"labels shape {gts.shape} != output {segs.shape}"
        try:
            backend.reset()
        except AttributeError:
            pass
    except Exception as exc:  # the per-case failure boundary: record it, keep the batch going
        rec["error"] = f"{type(exc).__name__}: {exc}"
        rec["traceback"] = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-6:])
        logger.warning("case %s failed: %s", entry.case_id, rec["error"])
    rec["seconds"] = round(time.time() - t0, 3)
    rec["finished_at"] = time.time()
    return rec


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return f"local:{os.getpid()}"


def _segment(entry: CaseEntry, config: Mapping[str, Any], backend: Any
             ) -> tuple[np.ndarray, np.ndarray | None, dict[int, str], int]:
    """(segs, existing labels or None, label names, number of prompted objects)."""
    mode = config["prompts_from"]
    cancel = CancelToken()
    names: dict[int, str] = {int(k): v for k, v in (config.get("label_names") or {}).items()}
    case = load_entry(entry)
    names = {**names, **case.label_names}
    ex = existing_labels(case)
    gts = None if ex is None else ex[1]
    prompts: dict[int, list[Prompt]] = {}
    if mode == "boxes":
        for b in case.boxes:  # CVPR boxes: read (and clipped by the box policy) in io.cvpr
            prompts.setdefault(b.object_id, []).append(b)
        if not prompts:
            raise ValueError(f"case {entry.case_id!r} has no boxes (file {entry.path.name}); "
                             "use prompts_from='gts' (boxes from its labels) or 'text'")
    elif mode == "gts":
        if gts is None:
            raise ValueError(f"case {entry.case_id!r} has no existing labels to take boxes from")
        for b in boxes_from_labels(gts):
            prompts[b.object_id] = [b]
        if not prompts:
            raise ValueError(f"case {entry.case_id!r}: its labels are empty; nothing to prompt")
    elif mode == "text":
        texts = dict(case.text_prompts) or {k: v for k, v in names.items() if v}
        if not texts:
            raise ValueError(f"case {entry.case_id!r} has no text prompts and no label names")
        inst = bool(case.instance_label)
        prompts = {int(k): [TextPrompt(str(v), instance=inst, object_id=int(k))] for k, v in sorted(texts.items())}
    else:
        raise ValueError(f"prompts_from={mode!r}; expected one of {', '.join(PROMPT_SOURCES)}")
    # the challenge step's own predict-and-merge (tasks.predict), prompts read by io like everywhere
    masks = predict_masks(case.image, prompts, backend, cancel=cancel)
    segs = merge_masks(masks, case.image.spatial_shape)
    return segs, (None if gts is None else np.asarray(gts)), names, len(prompts)


# ----------------------------------------------------------------------------- manifest
def read_manifest(out_dir: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Records by case id from ``manifest.json`` and the journal of an interrupted run.

    Parameters
    ----------
    out_dir : path-like
        The batch output folder.

    Returns
    -------
    dict of str to dict
        ``{}`` when neither file exists; journal records override the manifest's; an
        unreadable manifest is ignored (logged), a journal line cut by a crash skipped.
    """
    out = Path(out_dir)
    recs: dict[str, dict[str, Any]] = {}
    mf = out / MANIFEST
    if mf.is_file():
        try:
            data = json.loads(mf.read_text())
            for r in data.get("cases", []):
                recs[r["case_id"]] = r
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            logger.warning("ignoring unreadable manifest %s: %s", mf, exc)
    jr = out / JOURNAL
    if jr.is_file():
        for line in jr.read_text().splitlines():
            try:
                r = json.loads(line)
                recs[r["case_id"]] = r
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut by a crash
    return recs


def _config_key(cfg: Mapping[str, Any]) -> str:
    return json.dumps({"backend": cfg["backend"], "prompts_from": cfg["prompts_from"],
                       "backend_kwargs": cfg.get("backend_kwargs") or {}}, sort_keys=True, default=str)


def _is_done(prev: Mapping[str, Any] | None, entry: CaseEntry, out_dir: Path, cfg_key: str,
             rehash: bool) -> bool:
    if not prev or prev.get("status") != "ok" or prev.get("config") != cfg_key:
        return False
    out = out_dir / prev.get("output", "")
    if not out.is_file() or not prev.get("output_sha256"):
        return False
    if sha256_file(out) != prev["output_sha256"]:
        logger.info("case %s: output %s changed since the last run; redoing it", entry.case_id, out)
        return False
    if not rehash and entry.signature() == prev.get("input_signature"):
        return True
    return _inputs_sha256(entry) == prev.get("input_sha256")


@dataclass
class BatchReport:
    """Outcome of :func:`run_batch`.

    Parameters
    ----------
    out_dir : Path
        The output folder.
    manifest_path : Path
        ``manifest.json`` in it.
    records : dict of str to dict
        Case id -> manifest record.
    processed, skipped, failed : list of str
        Case ids run this time, skipped (output already there), failed.
    seconds : float
        Wall time of the run.
    n_workers : int
        Dask workers used (0: in-process).
    """

    out_dir: Path
    manifest_path: Path
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    processed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    n_workers: int = 0

    @property
    def ok(self) -> list[str]:
        """Case ids processed this run without failure."""
        return [c for c in self.processed if c not in self.failed]

    @property
    def cases_per_minute(self) -> float:
        """Processed cases per minute of wall time (NaN when no time was measured)."""
        n = len(self.processed)
        return 60.0 * n / self.seconds if self.seconds > 0 else float("nan")

    def summary(self) -> str:
        """One line for logs and the CLI: counts, failures, time and rate.

        Returns
        -------
        str
        """
        return (f"{len(self.ok)} done, {len(self.skipped)} skipped (already done), {len(self.failed)} failed "
                f"in {self.seconds:.1f} s on {self.n_workers} worker(s); manifest: {self.manifest_path}")


def _write_manifest(out_dir: Path, meta: dict[str, Any], records: Mapping[str, Mapping[str, Any]]) -> Path:
    data = dict(meta)
    data["cases"] = [records[k] for k in sorted(records)]
    counts: dict[str, int] = {}
    for r in records.values():
        counts[r.get("status", "?")] = counts.get(r.get("status", "?"), 0) + 1
    data["summary"] = counts
    path = out_dir / MANIFEST
    atomic_write_bytes(path, json.dumps(data, indent=1, default=json_default).encode())
    return path


# ----------------------------------------------------------------------------- driver
def run_batch(
    dataset: str | os.PathLike[str] | Catalog,
    backend: str,
    out_dir: str | os.PathLike[str],
    *,
    prompts_from: str = "boxes",
    scheduler: str | None = None,
    client: Any = None,
    n_workers: int = 2,
    threads_per_worker: int = 1,
    memory_limit: str | int | None = "2GiB",
    backend_kwargs: Mapping[str, Any] | None = None,
    cases: Iterable[str] | None = None,
    force: bool = False,
    rehash: bool = False,
    progress: bool | None = None,
    status_store: Any = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> BatchReport:
    """Pre-segment every case of ``dataset`` with ``backend``; see the module docstring.

    Parameters
    ----------
    dataset : path-like or Catalog
        Dataset folder (any supported layout) or a catalog from :func:`discover`.
    backend : str
        Registered backend name (``medsegfm backends`` lists them).
    out_dir : path-like
        Output folder (created); holds ``<case_id>.npz`` and ``manifest.json``.
    prompts_from : {"boxes", "gts", "text"}
        Prompt source (module docstring).
    scheduler : str, optional
        Address of an existing Dask scheduler (``tcp://host:8786``), or ``"sync"`` to run
        in this process. Default: a new LocalCluster.
    client : distributed.Client, optional
        Use this client (e.g. one LocalCluster shared by several runs).
    n_workers, threads_per_worker, memory_limit
        LocalCluster size; ``memory_limit`` is per worker (``None``: no limit).
    backend_kwargs : mapping, optional
        Passed to the backend constructor on every worker.
    cases : iterable of str, optional
        Only these case ids.
    force : bool
        Redo cases already done.
    rehash : bool
        Verify unchanged inputs by SHA-256 even when size and mtime match.
    progress : bool, optional
        Show a progress bar on stderr (default: when stderr is a terminal).
    status_store : StatusStore, optional
        Store ``dice_pred`` metrics and a ``batch`` history line per case.
    on_result : callable, optional
        Called with each finished record (driver thread).

    Returns
    -------
    BatchReport
    """
    t_start = time.time()
    if prompts_from not in PROMPT_SOURCES:
        raise ValueError(f"prompts_from={prompts_from!r}; expected one of {', '.join(PROMPT_SOURCES)}")
    catalog = dataset if isinstance(dataset, Catalog) else discover(dataset)
    _check_backend(backend, prompts_from)
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    entries = list(catalog)
    if cases is not None:
        wanted = list(cases)
        missing = [c for c in wanted if c not in catalog]
        if missing:
            raise ValueError(f"unknown case ids {missing[:5]} in {catalog.root} (known: {', '.join(catalog.ids()[:5])}, ...)")
        entries = [catalog[c] for c in wanted]
    cfg = {"backend": backend, "backend_kwargs": dict(backend_kwargs or {}), "prompts_from": prompts_from,
           "out_dir": str(out), "label_names": {str(k): v for k, v in catalog.label_names.items()}}
    cfg_key = _config_key(cfg)
    records = read_manifest(out)
    todo, skipped = [], []
    for e in entries:
        if not force and _is_done(records.get(e.case_id), e, out, cfg_key, rehash):
            skipped.append(e.case_id)
        else:
            todo.append(e)
    logger.info("batch: %d cases, %d already done, %d to run", len(entries), len(skipped), len(todo))
    report = BatchReport(out_dir=out, manifest_path=out / MANIFEST, skipped=skipped)
    meta = {"version": MANIFEST_VERSION, "dataset": str(catalog.root), "layout": catalog.layout,
            "backend": backend, "backend_kwargs": cfg["backend_kwargs"], "prompts_from": prompts_from,
            "started_at": t_start}
    journal = out / JOURNAL
    show = sys.stderr.isatty() if progress is None else progress
    from tqdm import tqdm

    bar = tqdm(total=len(todo), desc=f"batch {backend}", unit="case", disable=not show, file=sys.stderr)

    def finished(rec: dict[str, Any]) -> None:
        rec["config"] = cfg_key
        records[rec["case_id"]] = rec
        with open(journal, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec, default=json_default) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        report.processed.append(rec["case_id"])
        if rec.get("status") != "ok":
            report.failed.append(rec["case_id"])
        if status_store is not None:
            _record_in_store(status_store, rec, out)
        bar.update(1)
        bar.set_postfix(failed=len(report.failed), refresh=False)
        if on_result is not None:
            on_result(rec)

    try:
        if todo:
            if scheduler == "sync":
                report.n_workers = 1
                for e in todo:
                    finished(process_case(e, cfg))
            else:
                report.n_workers = _run_dask(todo, cfg, finished, scheduler=scheduler, client=client,
                                             n_workers=n_workers, threads_per_worker=threads_per_worker,
                                             memory_limit=memory_limit)
    finally:
        bar.close()
        meta["finished_at"] = time.time()
        report.manifest_path = _write_manifest(out, meta, records)
        if journal.is_file():
            journal.unlink()
    report.records = {e.case_id: records[e.case_id] for e in entries if e.case_id in records}
    report.seconds = time.time() - t_start
    logger.info("batch: %s", report.summary())
    return report


def _check_backend(name: str, prompts_from: str) -> None:
    """Fail before starting a cluster when the backend is unknown or cannot serve the prompts."""
    from ..backends.registry import list_backends

    status = list_backends()
    if name not in status:
        raise ValueError(f"unknown backend {name!r}; known backends: {', '.join(status)}")
    st = status[name]
    if not st.ready:
        raise ValueError(f"backend {name!r} is not usable ({st.state}): {st.message}")
    need = Capability.TEXT if prompts_from == "text" else (Capability.BOX3D | Capability.BOX2D)
    if st.capabilities and not (st.capabilities & need):
        raise ValueError(f"backend {name!r} cannot serve prompts from {prompts_from!r} "
                         f"(needs {'TEXT' if prompts_from == 'text' else 'BOX3D/BOX2D'})")


def _record_in_store(store: Any, rec: Mapping[str, Any], out: Path) -> None:
    try:
        if rec.get("status") == "ok":
            if rec.get("dice") is not None:
                store.set_metric(rec["case_id"], "dice_pred", rec["dice"], source=f"{rec['backend']}:{out}",
                                 detail={"pred_path": str(out / rec["output"]), "per_label": rec.get("dice_per_label"),
                                         "prompts_from": rec.get("prompts_from")})
            store.add_history(rec["case_id"], "batch", f"{rec['backend']} ({rec.get('prompts_from')}) -> {out / rec['output']}"
                              + (f", Dice {rec['dice']:.3f}" if rec.get("dice") is not None else ""))
        else:
            store.add_history(rec["case_id"], "batch", f"{rec['backend']} failed: {rec.get('error')}")
    except Exception as exc:  # the status DB must never stop a batch
        logger.warning("could not record case %s in the status database: %s", rec.get("case_id"), exc)


def _run_dask(todo: list[CaseEntry], cfg: Mapping[str, Any], finished: Callable[[dict[str, Any]], None], *,
              scheduler: str | None, client: Any, n_workers: int, threads_per_worker: int,
              memory_limit: str | int | None) -> int:
    import dask
    from distributed import Client, LocalCluster, as_completed

    own_client = own_cluster = None
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        if client is None:
            if scheduler:
                own_client = client = Client(scheduler, timeout="30s")
            else:
                if n_workers < 1:
                    raise ValueError(f"n_workers must be >= 1; got {n_workers}")
                own_cluster = LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker,
                                           processes=True, memory_limit=memory_limit, dashboard_address=None)
                own_client = client = Client(own_cluster)
        try:
            nthreads = sum(client.nthreads().values()) or 1
            window = max(2, 2 * nthreads)
            pending = iter(todo)
            by_key: dict[str, CaseEntry] = {}
            ac = as_completed()
            import uuid

            run_tag = uuid.uuid4().hex[:8]

            def submit_next() -> bool:
                e = next(pending, None)
                if e is None:
                    return False
                fut = client.submit(process_case, e, dict(cfg), key=f"medsegfm-case-{run_tag}-{len(by_key)}",
                                    pure=False, retries=0)
                by_key[fut.key] = e
                ac.add(fut)
                return True

            for _ in range(window):
                if not submit_next():
                    break
            for fut in ac:
                e = by_key[fut.key]
                try:
                    rec = fut.result()
                except Exception as exc:  # worker died (memory limit), connection lost, ...
                    rec = {"case_id": e.case_id, "name": e.name, "status": "error", "backend": cfg["backend"],
                           "prompts_from": cfg["prompts_from"], "input_signature": e.signature(),
                           "error": f"{type(exc).__name__}: {exc}",
                           "note": "the worker failed while processing this case (e.g. it exceeded its memory limit)"}
                fut.release()
                finished(rec)
                submit_next()
            return len(client.nthreads())
        finally:
            if own_client is not None:
                own_client.close()
            if own_cluster is not None:
                own_cluster.close()

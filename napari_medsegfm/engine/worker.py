"""One persistent worker thread with generations, latest-wins per key and cancel tokens.

:class:`InferenceWorker` runs jobs ``fn(cancel_token) -> value`` on **one** thread
that lives as long as the worker (started on the first submit; GPU/cuDNN and
allocator caches are per-thread warm). Semantics:

* Every submit gets a new, globally increasing **generation** and becomes the
  current generation of its **key** (the session uses the object's label id).
* **Latest wins per key**: a new job for a key drops the queued job of that key
  (it never runs) and sets the :class:`~napari_medsegfm.types.CancelToken` of the
  running one. Jobs of different keys run first-in first-out.
* **Exactly one callback per submit**, always called on the worker thread, with a
  :class:`JobOutcome`: the value, or the exception, or ``cancelled=True`` (dropped
  from the queue, cancelled while running, or raised
  :class:`~napari_medsegfm.types.Cancelled`). ``stale`` is True when the job's
  generation is no longer the key's current one at callback time. A GUI marshals
  the outcome to its own thread (a Qt signal) and re-checks :meth:`is_current` there.
* A callback that raises is logged; the thread keeps serving.
* The thread survives **anything** a job raises, ``SystemExit`` and ``KeyboardInterrupt``
  included (a backend calling ``sys.exit()`` is a bug of that backend, and signals are only
  delivered to the main thread, so on this thread neither is a request to stop): it becomes
  the job's error outcome, :attr:`busy` returns to False. Should the loop itself ever fail,
  the running job gets an error outcome and the next submit starts a fresh thread.
* ``debounce_s`` (default 0): a job that supersedes a queued or running job of the
  same key waits that long before starting, so a burst of prompts (a drag, rapid
  clicks) starts only the last one instead of starting and cancelling each. An
  isolated job (nothing to supersede) starts at once: no added latency.
* :meth:`InferenceWorker.run_when_idle` queues low-priority housekeeping (the
  session compresses undo diffs there) that runs on the same thread only while no
  job is ready; it is not a job (no generation, no callback, not :attr:`busy`).

Nothing here imports Qt or torch.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from ..types import Cancelled, CancelToken

__all__ = ["InferenceWorker", "JobOutcome", "Job"]

log = logging.getLogger(__name__)


@dataclass
class JobOutcome:
    """What a job's callback receives.

    Attributes
    ----------
    key : hashable
        The job's key (label id for the session).
    generation : int
        The job's generation (unique per worker, increasing).
    value : Any
        ``fn``'s return value (``None`` when it raised or was cancelled).
    error : BaseException or None
        The exception ``fn`` raised (not set for :class:`Cancelled`).
    cancelled : bool
        Dropped before running, or cancelled while running.
    stale : bool
        A newer job was submitted for the same key (or the key was cancelled).
    elapsed_s : float
        Time spent in ``fn`` (0 when it never ran).
    queued_s : float
        Time from submit to start (or to drop).
    """

    key: Hashable
    generation: int
    value: Any = None
    error: BaseException | None = None
    cancelled: bool = False
    stale: bool = False
    elapsed_s: float = 0.0
    queued_s: float = 0.0


@dataclass
class Job:
    """A submitted job (internal bookkeeping, exposed for introspection)."""

    key: Hashable
    generation: int
    fn: Callable[[CancelToken], Any]
    callback: Callable[[JobOutcome], None] | None
    token: CancelToken = field(default_factory=CancelToken)
    submitted: float = field(default_factory=time.perf_counter)
    started: float | None = None
    not_before: float = 0.0


class InferenceWorker:
    """One persistent thread serving latest-wins jobs (see module docstring).

    Parameters
    ----------
    name : str
        Thread name (shows in debuggers and logs).
    debounce_s : float
        Hold-off for a job that supersedes another of its key (see module docstring).
    clock : callable, optional
        Seconds, monotonic (default :func:`time.perf_counter`): what the hold-off, the
        jobs' ``submitted``/``started`` times and ``queued_s`` are measured on. Tests pass
        a manual clock; the worker then re-checks a held job every ``debounce_s`` real
        seconds against it. ``elapsed_s`` (time in the job) is always real time.
    """

    def __init__(self, name: str = "medsegfm-worker", debounce_s: float = 0.0, *,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        if not debounce_s >= 0:
            raise ValueError(f"debounce_s must be >= 0 seconds; got {debounce_s!r}")
        self.name = name
        self.debounce_s = float(debounce_s)
        self._clock = clock
        self._cond = threading.Condition()
        self._queue: OrderedDict[Hashable, Job] = OrderedDict()
        self._dropped: deque[tuple[Job, str]] = deque()
        self._running: Job | None = None
        self._current: dict[Hashable, int] = {}
        self._next_gen = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        self._idle: deque[Callable[[], Any]] = deque()
        self.jobs_started = 0
        self.jobs_finished = 0  # ran to completion (value or error, not cancelled)

    # ------------------------------------------------------------------ public
    def next_generation(self) -> int:
        """Reserve a generation number without submitting (the session's sync path uses it)."""
        with self._cond:
            self._next_gen += 1
            return self._next_gen

    def submit(
        self,
        key: Hashable,
        fn: Callable[[CancelToken], Any],
        callback: Callable[[JobOutcome], None] | None = None,
        *,
        generation: int | None = None,
    ) -> int:
        """Queue ``fn(cancel_token)`` for ``key``; returns its generation.

        Supersedes the queued job of ``key`` and cancels the running one.
        ``generation`` (from :meth:`next_generation`) may be passed to use a
        number reserved earlier; it must be newer than the key's current one.
        """
        with self._cond:
            if self._closed:
                raise RuntimeError(f"worker {self.name!r} is closed; cannot submit key {key!r}")
            if generation is None:
                self._next_gen += 1
                generation = self._next_gen
            else:
                generation = int(generation)
                if generation <= self._current.get(key, 0):
                    raise ValueError(
                        f"generation {generation} for key {key!r} is not newer than the current "
                        f"{self._current[key]}"
                    )
                self._next_gen = max(self._next_gen, generation)
            self._current[key] = generation
            busy = key in self._queue or (self._running is not None and self._running.key == key)
            self._supersede_locked(key, "superseded")
            job = Job(key=key, generation=generation, fn=fn, callback=callback, submitted=self._clock())
            job.not_before = job.submitted + (self.debounce_s if busy else 0.0)
            self._queue[key] = job
            self._ensure_thread_locked()
            self._cond.notify_all()
            return generation

    def run_when_idle(self, fn: Callable[[], Any]) -> None:
        """Run ``fn()`` on the worker thread once no job is ready (FIFO among such tasks).

        For short housekeeping; exceptions are logged. Tasks left when the worker
        closes are dropped. ``RuntimeError`` when the worker is closed.
        """
        with self._cond:
            if self._closed:
                raise RuntimeError(f"worker {self.name!r} is closed; cannot queue housekeeping")
            self._idle.append(fn)
            self._ensure_thread_locked()
            self._cond.notify_all()

    def cancel(self, key: Hashable | None = None, reason: str = "cancelled") -> None:
        """Cancel the queued and running job of ``key`` (every key when ``None``).

        The key's current generation is bumped, so any later outcome of the
        cancelled jobs is stale. Callbacks still arrive (``cancelled=True``).
        """
        with self._cond:
            keys = list(set(self._queue) | ({self._running.key} if self._running else set()))
            if key is not None:
                keys = [k for k in keys if k == key]
            for k in keys:
                self._next_gen += 1
                self._current[k] = self._next_gen
                self._supersede_locked(k, reason)
            self._cond.notify_all()

    def invalidate(self, key: Hashable) -> int:
        """Make every job of ``key`` stale (and cancel it); returns the new current generation."""
        with self._cond:
            self._next_gen += 1
            self._current[key] = self._next_gen
            self._supersede_locked(key, "invalidated")
            self._cond.notify_all()
            return self._next_gen

    def current_generation(self, key: Hashable) -> int:
        """The newest generation submitted (or reserved via :meth:`invalidate`) for ``key``; 0 if none."""
        with self._cond:
            return self._current.get(key, 0)

    def is_current(self, key: Hashable, generation: int) -> bool:
        """``generation`` is the newest one submitted for ``key``."""
        with self._cond:
            return self._current.get(key, 0) == generation

    @property
    def busy(self) -> bool:
        """True while a job runs or waits."""
        with self._cond:
            return self._running is not None or bool(self._queue) or bool(self._dropped)

    def running_key(self) -> Hashable | None:
        """Key of the job running now (``None``: none)."""
        with self._cond:
            return self._running.key if self._running is not None else None

    def pending_keys(self) -> list[Hashable]:
        """Keys with a queued or running job."""
        with self._cond:
            keys = list(self._queue)
            if self._running is not None and self._running.key not in keys:
                keys.insert(0, self._running.key)
            return keys

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing runs or waits (all callbacks delivered); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._running is not None or self._queue or self._dropped:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    @property
    def thread(self) -> threading.Thread | None:
        """The worker thread (``None`` before the first submit)."""
        return self._thread

    @property
    def closed(self) -> bool:
        """True after :meth:`close`; submits then raise ``RuntimeError``."""
        return self._closed

    def close(self, timeout: float = 5.0) -> None:
        """Cancel everything, deliver the cancelled callbacks, stop and join the thread.

        ``timeout=0`` signals the thread to stop without waiting for it.
        """
        with self._cond:
            if self._closed:
                return
            for k in list(self._queue) + ([self._running.key] if self._running else []):
                self._supersede_locked(k, "worker closed")
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive() and timeout > 0:
                log.warning("worker %s did not stop within %.1f s (a backend ignores its cancel token)",
                            self.name, timeout)

    def __enter__(self) -> InferenceWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- private
    def _supersede_locked(self, key: Hashable, reason: str) -> None:
        old = self._queue.pop(key, None)
        if old is not None:
            self._dropped.append((old, reason))
        if self._running is not None and self._running.key == key:
            self._running.token.cancel(reason)

    def _ensure_thread_locked(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()

    def _deliver(self, job: Job, outcome: JobOutcome) -> None:
        with self._cond:
            outcome.stale = outcome.stale or self._current.get(job.key, 0) != job.generation
        if job.callback is None:
            return
        try:
            job.callback(outcome)
        except BaseException:  # noqa: BLE001 - SystemExit in a callback must not end the worker either
            log.exception("callback of job %r (generation %d) raised", job.key, job.generation)

    def _loop(self) -> None:
        _lower_thread_priority()
        try:
            self._serve()
        finally:
            # whatever ended the loop, nothing may stay "running": busy goes back to False and the
            # next submit starts a new thread (_ensure_thread_locked)
            with self._cond:
                stuck = self._running
                self._running = None
                self._cond.notify_all()
            if stuck is not None and stuck.callback is not None:
                self._deliver(stuck, JobOutcome(stuck.key, stuck.generation,
                                                error=RuntimeError("the worker thread stopped unexpectedly")))

    def _serve(self) -> None:
        while True:
            task = None
            with self._cond:
                while True:
                    if self._dropped or self._closed or self._idle:
                        break
                    if self._queue:
                        now = self._clock()
                        wake = min(j.not_before for j in self._queue.values())
                        if wake <= now:
                            break
                        self._cond.wait(min(wake - now, max(self.debounce_s, 0.001)))
                    else:
                        self._cond.wait()
                key = None
                now = self._clock()
                if not self._dropped and self._queue:
                    key = next((k for k, j in self._queue.items() if j.not_before <= now), None)
                    if key is None and (self._closed or not self._idle):
                        key = next(iter(self._queue))  # closed while a debounced job waits: run it (cancelled)
                if self._dropped:
                    job, reason = self._dropped.popleft()
                    running = None
                elif key is not None:
                    job = self._queue.pop(key)
                    job.started = now
                    self._running = running = job
                    self.jobs_started += 1
                elif self._idle and not self._closed:
                    task = self._idle.popleft()
                else:  # closed and drained
                    self._idle.clear()
                    self._cond.notify_all()
                    return
            if task is not None:
                try:
                    task()
                except BaseException:  # noqa: BLE001 - housekeeping never ends the worker
                    log.exception("housekeeping task %r failed", task)
                del task
                continue
            if running is None:
                now = self._clock()
                self._deliver(job, JobOutcome(job.key, job.generation, cancelled=True, stale=True,
                                              queued_s=now - job.submitted))
                with self._cond:
                    self._cond.notify_all()
                del job  # an idle loop must not keep the last job (and what it references) alive
                continue
            outcome = self._run(job)
            self._deliver(job, outcome)
            del job, running, outcome
            with self._cond:
                self._running = None
                self._cond.notify_all()

    def _run(self, job: Job) -> JobOutcome:
        assert job.started is not None
        queued = job.started - job.submitted
        out = JobOutcome(job.key, job.generation, queued_s=queued)
        if job.token.cancelled:
            out.cancelled = True
            return out
        t0 = time.perf_counter()
        try:
            out.value = job.fn(job.token)
        except Cancelled:
            out.cancelled = True
        except BaseException as exc:  # noqa: BLE001 - any backend failure (SystemExit too) is an error outcome
            out.error = exc
        out.elapsed_s = time.perf_counter() - t0
        if not out.cancelled and job.token.cancelled:
            # finished although cancelled (backend ignored the token): keep the value, mark it
            out.cancelled = True
        if not out.cancelled:
            with self._cond:
                self.jobs_finished += 1
        return out


def _lower_thread_priority() -> None:
    """Give this worker thread (and the math-library threads it starts) a lower priority.

    Inference competes with the GUI thread and the X server for a few cores; on Linux a
    thread has its own nice value and threads it creates (e.g. OpenMP teams of torch)
    inherit it, so the GUI keeps getting the CPU when it needs it. The niceness comes from
    ``$MEDSEGFM_WORKER_NICE`` (default 5; 0 disables). Elsewhere, or without the right
    to, nothing changes.
    """
    raw = os.environ.get("MEDSEGFM_WORKER_NICE", "5")
    try:
        nice = int(raw)
    except ValueError:
        log.warning("MEDSEGFM_WORKER_NICE=%r is not an integer; worker priority unchanged", raw)
        return
    if nice <= 0 or not hasattr(os, "setpriority") or not os.uname().sysname == "Linux":
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError as exc:  # pragma: no cover - depends on the system's limits
        log.debug("could not lower the worker thread's priority: %s", exc)

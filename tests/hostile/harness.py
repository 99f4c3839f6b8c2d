"""Run hostile cases in a subprocess with an address-space cap and a per-case timeout.

One child (:mod:`hostile.child`) serves the cases one after the other; when a case crashes
the child (segfault, out-of-memory kill) or overruns its timeout, that case is recorded as
``crash``/``timeout``, the child is replaced and the remaining cases go on. The cap
(``RLIMIT_AS``) turns an attempted huge allocation into a ``MemoryError`` in the child,
which fails the case (a reader must refuse *before* allocating).
"""

from __future__ import annotations

import json
import os
import resource
import selectors
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CHILD = Path(__file__).with_name("child.py")
#: address space of the child: its imports take ~0.3 GiB, so a reader has ~1.2 GiB to work with
ADDRESS_SPACE_BYTES = 1536 << 20
TIMEOUT_S = 90.0


def _limit() -> None:  # runs in the child before exec
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_BYTES, ADDRESS_SPACE_BYTES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


class _Child:
    def __init__(self) -> None:
        env = dict(os.environ)
        for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
            env[k] = "1"  # thread pools reserve address space
        env.setdefault("MEDSEGFM_WORKER_NICE", "0")
        self.proc = subprocess.Popen([sys.executable, str(CHILD)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env, preexec_fn=_limit)
        self.sel = selectors.DefaultSelector()
        assert self.proc.stdout is not None
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)

    def ask(self, req: dict[str, Any], timeout: float) -> dict[str, Any] | str:
        """The child's answer, or ``"died"`` / ``"timeout"``."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            return "died"
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sel.select(left):
                return "timeout"
            line = self.proc.stdout.readline()
            if not line:
                return "died"
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue  # something else printed to stdout

    def close(self, kill: bool = False) -> tuple[int | None, str]:
        if kill and self.proc.poll() is None:
            self.proc.kill()
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        err = self.proc.stderr.read()[-4000:] if self.proc.stderr else ""
        self.sel.close()
        return self.proc.returncode, err


def run(requests: list[dict[str, Any]], *, timeout: float = TIMEOUT_S) -> dict[str, dict[str, Any]]:
    """Answers by case name; a crashed case gets ``{"crash": returncode, "stderr": ...}``, an
    overrun one ``{"timeout": seconds}``."""
    out: dict[str, dict[str, Any]] = {}
    child: _Child | None = None
    for req in requests:
        if child is None:
            child = _Child()
        t0 = time.monotonic()
        ans = child.ask(req, timeout)
        if isinstance(ans, dict):
            out[req["name"]] = ans
            continue
        rc, err = child.close(kill=ans == "timeout")
        child = None
        if ans == "timeout":
            out[req["name"]] = {"name": req["name"], "timeout": round(time.monotonic() - t0, 1), "stderr": err}
        else:
            out[req["name"]] = {"name": req["name"], "crash": rc, "stderr": err}
    if child is not None:
        child.close()
    return out

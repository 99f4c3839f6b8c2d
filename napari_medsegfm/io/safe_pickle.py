"""A restricted, bounded unpickler for the pickled members of CVPR npz files.

``boxes``, ``text_prompts``, ``clicks`` and ``clicks_order`` of the CVPR 2025 npz files
are pickled object arrays; ``np.load(path, allow_pickle=True)`` on a file from a
stranger runs whatever the pickle asks for. This module loads them with an unpickler
that admits only:

* builtin containers and scalars: ``dict``, ``list``, ``tuple``, ``set``, ``frozenset``,
  ``int``, ``float``, ``complex``, ``bool``, ``str``, ``bytes``, ``bytearray``, ``None``,
  ``collections.OrderedDict``;
* numpy arrays, scalars and dtypes (``numpy.ndarray`` through ``_reconstruct`` + a checked
  state, or the protocol-5 ``_frombuffer``; ``numpy.dtype`` of simple types;
  ``multiarray.scalar``);
* ``_codecs.encode(str, "latin1")``, which protocol-2 pickles use for bytes.

Anything else (``os.system``, ``builtins.eval``, ``subprocess.*``, arbitrary classes,
persistent ids, extension codes, ``NEWOBJ``) is refused with :class:`UnsafePickleError`
*before* anything is called: the opcode stream is scanned first, then loaded with a
``find_class`` that resolves only the names above, each to a *checking* wrapper.

Memory safety (a hostile pickle of a few KB must not crash, hang or exhaust memory):

* every allowed callable checks its arguments: no ``numpy.ndarray(shape, 'O', buffer)``
  (an object array whose pointers are bytes from the file), no ``bytes(10**10)``, no
  ``str(<huge shared structure>)``, ``_reconstruct`` only with the empty shape numpy
  writes, ``_frombuffer`` only when ``shape × itemsize`` equals the buffer length;
* every array state (``BUILD``) is checked: simple dtype, non-negative shape, raw bytes of
  exactly ``shape × itemsize``, and for object arrays a list of exactly ``prod(shape)``
  items (never raw bytes);
* the stream is limited in bytes and opcodes, tuples and frozensets (the only hashable
  containers) are limited in depth and expanded size *as they are built*, so hashing a
  dict key can neither recurse deeply nor walk 2**60 shared leaves, and the work spent
  hashing is counted;
* the result is walked once, iteratively, counting shared objects once per reference:
  more than :func:`~napari_medsegfm.io.limits.max_pickle_nodes` objects ("billion
  laughs"), nesting deeper than :func:`~napari_medsegfm.io.limits.max_pickle_depth`, or
  a recursive structure is refused, so what the callers do with it (``tolist``,
  comparisons, ``repr``) stays bounded;
* error messages describe objects by type and size, never by ``repr``.

The limits are configurable (``MEDSEGFM_MAX_PICKLE_BYTES``, ``..._NODES``, ``..._DEPTH``;
see :mod:`napari_medsegfm.io.limits`).
"""


from __future__ import annotations

import io
import logging
import pickletools
from typing import Any

import numpy as np

from .limits import (
    ENV_MAX_PICKLE_BYTES,
    ENV_MAX_PICKLE_DEPTH,
    ENV_MAX_PICKLE_NODES,
    array_nbytes,
    format_bytes,
    max_pickle_bytes,
    max_pickle_depth,
    max_pickle_nodes,
)
from .unpickler import (
    _FORBIDDEN_OPCODES,
    _LEAVES,
    _MAPPINGS,
    ALLOWED_GLOBALS,
    UnsafePickleError,
    _refuse,
    _RestrictedUnpickler,
    describe,
)

__all__ = ["UnsafePickleError", "safe_loads", "scan_pickle", "load_npy_bytes", "ALLOWED_GLOBALS", "describe"]

logger = logging.getLogger(__name__)

#: opcodes the scan allows per object the result may hold (the CVPR sample files: ~4.5)
_OPS_PER_NODE = 8


def _check_result(obj: Any, max_nodes: int, max_depth: int) -> int:
    """Walk the result once, iteratively, counting every reference; returns the count."""
    stack: list[tuple[Any, int]] = [(obj, 0)]
    count = 0
    while stack:
        o, d = stack.pop()
        count += 1
        if count > max_nodes:
            raise _refuse(f"pickle expands to more than {max_nodes:,} objects (shared references counted each "
                          f"time, e.g. a 'billion laughs' structure; limit {ENV_MAX_PICKLE_NODES}); refused")
        if d > max_depth:
            raise _refuse(f"pickle nests containers deeper than {max_depth} levels or is recursive "
                          f"(limit {ENV_MAX_PICKLE_DEPTH}); refused")
        t = type(o)
        if t in (list, tuple, set, frozenset):
            stack.extend((c, d + 1) for c in o)
        elif t in _MAPPINGS:
            for k, v in o.items():
                stack.append((k, d + 1))
                stack.append((v, d + 1))
        elif t is np.ndarray:
            if o.dtype.hasobject:
                if o.size > max_nodes:
                    raise _refuse(f"pickle holds an object array of {o.size:,} items (limit {max_nodes:,}); refused")
                stack.extend((c, d + 1) for c in o.flat)
        elif t in _LEAVES or isinstance(o, (np.generic, np.dtype)):
            continue
        else:
            raise _refuse(f"pickle yields {describe(o)}, which is not a plain value; refused")
    return count


def scan_pickle(data: bytes | memoryview, *, max_ops: int | None = None) -> list[tuple[str, str]]:
    """Check a pickle's opcode stream without executing it.

    Parameters
    ----------
    data : bytes-like
        The pickle stream.
    max_ops : int, optional
        Opcode limit (default 8 x :func:`~napari_medsegfm.io.limits.max_pickle_nodes`).

    Returns
    -------
    list of (module, name)
        The pairs named by ``GLOBAL`` opcodes, all in :data:`ALLOWED_GLOBALS`.

    Raises
    ------
    UnsafePickleError
        Forbidden opcodes or globals, more than ``max_ops`` opcodes, or a stream that is
        not a valid pickle.
    """
    limit = max_ops if max_ops is not None else _OPS_PER_NODE * max_pickle_nodes()
    names: list[tuple[str, str]] = []
    try:
        for n, (op, arg, _pos) in enumerate(pickletools.genops(io.BytesIO(bytes(data)))):
            if n >= limit:
                raise _refuse(f"pickle has more than {limit:,} opcodes (limit {_OPS_PER_NODE} x "
                              f"{ENV_MAX_PICKLE_NODES}); refused")
            if op.name in _FORBIDDEN_OPCODES:
                raise _refuse(f"pickle uses the {op.name} opcode, which is not allowed")
            if op.name == "GLOBAL":
                module, _, name = str(arg).partition(" ")
                if (module, name) not in ALLOWED_GLOBALS:
                    raise _refuse(f"pickle asks for {module[:60]}.{name[:60]}, which is not allowed")
                names.append((module, name))
    except UnsafePickleError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse failure of a hostile stream is "not a pickle"
        raise _refuse(f"not a valid pickle stream: {_exc_text(exc)}") from None
    return names


def _exc_text(exc: BaseException) -> str:
    """``Type: message`` from the exception's own string argument only (no repr of payload objects)."""
    arg = exc.args[0] if exc.args and isinstance(exc.args[0], str) else ""
    return f"{type(exc).__name__}: {arg[:200]}" if arg else type(exc).__name__


def safe_loads(data: bytes | memoryview, *, max_nodes: int | None = None, max_depth: int | None = None,
               max_bytes: int | None = None) -> Any:
    """Unpickle ``data`` admitting only the allow-listed types, within the limits (module docstring).

    Parameters
    ----------
    data : bytes-like
        The pickle stream.
    max_nodes, max_depth, max_bytes : int, optional
        Override :func:`~napari_medsegfm.io.limits.max_pickle_nodes`, ``max_pickle_depth``
        and ``max_pickle_bytes``.

    Raises
    ------
    UnsafePickleError
        (a ``ValueError``) for anything outside the allow-list or the limits; nothing is executed.
    """
    nodes = max_nodes if max_nodes is not None else max_pickle_nodes()
    depth = max_depth if max_depth is not None else max_pickle_depth()
    cap = max_bytes if max_bytes is not None else max_pickle_bytes()
    if len(data) > cap:
        raise _refuse(f"pickle of {format_bytes(len(data))} is larger than the limit of {format_bytes(cap)} "
                      f"({ENV_MAX_PICKLE_BYTES}); refused")
    scan_pickle(data, max_ops=_OPS_PER_NODE * nodes)
    try:
        obj = _RestrictedUnpickler(io.BytesIO(bytes(data)), max_nodes=nodes, max_depth=depth).load()
    except UnsafePickleError:
        raise
    except RecursionError:
        raise _refuse("pickle is nested too deeply to load; refused") from None
    except MemoryError:
        raise _refuse("pickle needs more memory than is available; refused") from None
    except Exception as exc:  # noqa: BLE001 - a hostile stream can make the unpickler raise anything
        raise _refuse(f"could not unpickle: {_exc_text(exc)}") from None
    _check_result(obj, nodes, depth)
    return obj


def load_npy_bytes(buf: bytes | memoryview, *, allow_object: bool = True) -> np.ndarray:
    """Read a whole ``.npy`` payload held in memory; object arrays via :func:`safe_loads`.

    Parameters
    ----------
    buf : bytes-like
        The ``.npy`` bytes (header and data).
    allow_object : bool
        Accept a pickled object array.

    Returns
    -------
    np.ndarray
        A new array (a copy, writable).

    Raises
    ------
    ValueError
        A malformed header, a truncated payload, or an object array with ``allow_object=False``.
    UnsafePickleError
        A refused pickle.
    """
    fp = io.BytesIO(bytes(buf))
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
    if dtype.hasobject:
        if not allow_object:
            raise ValueError("object array refused")
        arr = safe_loads(memoryview(fp.getbuffer())[fp.tell():])
        if not isinstance(arr, np.ndarray):
            raise UnsafePickleError(f"pickled member is {describe(arr)}, expected a numpy array")
        return arr
    count = array_nbytes(shape, 1, what="npy header")
    data = fp.read(count * dtype.itemsize)
    if len(data) != count * dtype.itemsize:
        raise ValueError(f"npy payload truncated: expected {count * dtype.itemsize} bytes, got {len(data)}")
    arr = np.frombuffer(data, dtype=dtype, count=count)
    arr = arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)
    return arr.copy(order="K")

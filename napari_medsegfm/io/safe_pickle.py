"""A restricted unpickler for the pickled members of CVPR npz files.

``boxes``, ``text_prompts``, ``clicks`` and ``clicks_order`` of the CVPR 2025 npz files
are pickled object arrays; ``np.load(path, allow_pickle=True)`` on a file from a
stranger runs whatever the pickle asks for. This module loads them with an unpickler
that admits only:

* builtin containers and scalars: ``dict``, ``list``, ``tuple``, ``set``, ``frozenset``,
  ``int``, ``float``, ``complex``, ``bool``, ``str``, ``bytes``, ``bytearray``, ``None``,
  ``collections.OrderedDict``;
* numpy arrays, scalars and dtypes (``numpy.ndarray`` through ``_reconstruct`` or the
  protocol-5 ``_frombuffer``, ``numpy.dtype``, ``multiarray.scalar`` — never with an
  object dtype from raw bytes);
* ``_codecs.encode(str, "latin1")``, which protocol-2 pickles use for bytes.

Anything else (``os.system``, ``builtins.eval``, ``subprocess.*``, arbitrary classes,
persistent ids, extension codes) is refused with :class:`UnsafePickleError` *before*
anything is called: the opcode stream is scanned first, then loaded with a
``find_class`` that resolves only the names above.
"""

from __future__ import annotations

import collections
import io
import logging
import pickle
import pickletools
from typing import Any

import numpy as np

__all__ = ["UnsafePickleError", "safe_loads", "scan_pickle", "load_npy_bytes", "ALLOWED_GLOBALS"]

logger = logging.getLogger(__name__)


class UnsafePickleError(ValueError):
    """A pickle asked for something outside the allow-list; nothing was executed."""


def _np_reconstruct(cls: Any, shape: Any, dtype: Any) -> np.ndarray:
    if cls is not np.ndarray:
        raise UnsafePickleError(f"pickle asks to reconstruct {cls!r}; only numpy.ndarray is allowed")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


try:  # numpy >= 2
    from numpy._core.multiarray import scalar as _scalar
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import scalar as _scalar


def _np_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise UnsafePickleError(f"pickle asks for a numpy scalar of dtype {dtype!r}; object dtypes are refused")
    return _scalar(dtype, data) if data is not None else _scalar(dtype)


def _np_frombuffer(buf: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
    """Protocol-5 array reconstruction (``numpy._core.numeric._frombuffer``), plain dtypes only."""
    dt = np.dtype(dtype) if not isinstance(dtype, np.dtype) else dtype
    if dt.hasobject:
        raise UnsafePickleError("pickle asks for an object array from a raw buffer; refused")
    if order not in ("C", "F"):
        raise UnsafePickleError(f"pickle asks for array order {order!r}")
    return np.frombuffer(buf, dtype=dt).reshape(shape, order=order)


def _codecs_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    if not isinstance(obj, str) or encoding.lower().replace("-", "") not in ("latin1", "utf8", "ascii"):
        raise UnsafePickleError(f"pickle asks for _codecs.encode with encoding {encoding!r}; only latin1/utf-8")
    return obj.encode(encoding, errors)


_BUILTINS = {
    "dict": dict,
    "list": list,
    "tuple": tuple,
    "set": set,
    "frozenset": frozenset,
    "int": int,
    "float": float,
    "complex": complex,
    "bool": bool,
    "str": str,
    "bytes": bytes,
    "bytearray": bytearray,
}

#: (module, name) -> object handed to the unpickler
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    **{("builtins", k): v for k, v in _BUILTINS.items()},
    **{("__builtin__", k): v for k, v in _BUILTINS.items()},  # protocol-2 pickles from Python 2
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): _codecs_encode,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy.core.multiarray", "scalar"): _np_scalar,
    ("numpy.core.numeric", "_frombuffer"): _np_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _np_frombuffer,
    ("numpy._core.multiarray", "scalar"): _np_scalar,
}

# opcodes that create objects in ways find_class cannot police
_FORBIDDEN_OPCODES = {"INST", "OBJ", "PERSID", "BINPERSID", "EXT1", "EXT2", "EXT4"}


def _check_dtype_state(dt: np.dtype, state: Any) -> None:
    """A dtype's BUILD state must be the one numpy itself writes for that dtype.

    ``np.dtype.__setstate__`` trusts its input: a state taken from another dtype (e.g. a
    float's item size and flags applied to an object dtype) corrupts memory. Only simple
    dtypes are admitted, with exactly their canonical state (any byte order).
    """
    if dt.fields is not None or dt.subdtype is not None:
        raise UnsafePickleError(f"pickle builds a structured/sub-array dtype {dt}; refused")
    if not isinstance(state, tuple) or len(state) < 2 or state[1] not in ("<", ">", "|", "="):
        raise UnsafePickleError(f"pickle gives dtype {dt} the state {state!r}; refused")
    ref = dt.newbyteorder(state[1]) if state[1] in "<>" and dt.byteorder != "|" else dt
    expected = ref.__reduce__()[2]
    if tuple(state) != tuple(expected):
        raise UnsafePickleError(f"pickle gives dtype {dt} the state {state!r}, expected {expected!r}; refused")


class _RestrictedUnpickler(pickle._Unpickler):  # the pure-Python unpickler, so BUILD can be checked
    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"pickle asks for {module}.{name}, which is not allowed "
                "(only builtin containers/scalars and numpy arrays/scalars/dtypes)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:  # pragma: no cover - opcode scan refuses first
        raise UnsafePickleError("pickle uses persistent ids, which are not allowed")

    def load_build(self) -> None:
        state, inst = self.stack[-1], self.stack[-2]
        if type(inst) is np.dtype or isinstance(inst, np.dtype):
            _check_dtype_state(inst, state)
        elif type(inst) is not np.ndarray:
            raise UnsafePickleError(f"pickle sets the state of a {type(inst).__name__}; only numpy arrays/dtypes")
        super().load_build()

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BUILD[0]] = load_build


def scan_pickle(data: bytes | memoryview) -> list[tuple[str, str]]:
    """Check a pickle's opcode stream without executing it.

    Returns the ``(module, name)`` pairs named by ``GLOBAL`` opcodes; raises
    :class:`UnsafePickleError` for forbidden opcodes or globals, and for a stream that
    is not a valid pickle.
    """
    names: list[tuple[str, str]] = []
    try:
        for op, arg, _pos in pickletools.genops(io.BytesIO(bytes(data))):
            if op.name in _FORBIDDEN_OPCODES:
                raise UnsafePickleError(f"pickle uses the {op.name} opcode, which is not allowed")
            if op.name == "GLOBAL":
                module, _, name = str(arg).partition(" ")
                if (module, name) not in ALLOWED_GLOBALS:
                    raise UnsafePickleError(f"pickle asks for {module}.{name}, which is not allowed")
                names.append((module, name))
    except UnsafePickleError:
        raise
    except (ValueError, EOFError, IndexError, TypeError) as exc:
        raise UnsafePickleError(f"not a valid pickle stream: {exc}") from None
    return names


def safe_loads(data: bytes | memoryview) -> Any:
    """Unpickle ``data`` admitting only the allow-listed types (see module docstring).

    Raises
    ------
    UnsafePickleError
        (a ``ValueError``) for anything outside the allow-list; nothing is executed.
    """
    scan_pickle(data)
    try:
        return _RestrictedUnpickler(io.BytesIO(bytes(data))).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError, IndexError) as exc:
        raise UnsafePickleError(f"could not unpickle: {type(exc).__name__}: {exc}") from None


def load_npy_bytes(buf: bytes | memoryview, *, allow_object: bool = True) -> np.ndarray:
    """Read a whole ``.npy`` payload held in memory; object arrays via :func:`safe_loads`.

    Raises ``ValueError`` (or :class:`UnsafePickleError`) for a malformed header or a
    refused pickle.
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
            raise UnsafePickleError(f"pickled member is a {type(arr).__name__}, expected a numpy array")
        return arr
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    data = fp.read(count * dtype.itemsize)
    if len(data) != count * dtype.itemsize:
        raise ValueError(f"npy payload truncated: expected {count * dtype.itemsize} bytes, got {len(data)}")
    arr = np.frombuffer(data, dtype=dtype, count=count)
    arr = arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)
    return arr.copy(order="K")

"""The allow-list and the checking unpickler behind :mod:`~napari_medsegfm.io.safe_pickle`.

:data:`ALLOWED_GLOBALS` names what a pickle may ask for; :class:`_RestrictedUnpickler`
(the pure-Python unpickler with every opcode that builds or mutates an object checked)
loads a stream that :func:`~napari_medsegfm.io.safe_pickle.scan_pickle` already accepted.
The module docstring of :mod:`~napari_medsegfm.io.safe_pickle` lists the rules.
"""

from __future__ import annotations

import collections
import pickle
import re
import struct
from collections.abc import Callable
from typing import Any

import numpy as np

from .limits import (
    ENV_MAX_PICKLE_DEPTH,
    ENV_MAX_PICKLE_NODES,
    array_nbytes,
    format_bytes,
)

__all__ = ["UnsafePickleError", "ALLOWED_GLOBALS", "describe"]


class UnsafePickleError(ValueError):
    """A pickle asked for something outside the allow-list or the limits; nothing was executed."""


try:  # numpy >= 2
    from numpy._core.multiarray import scalar as _scalar
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import scalar as _scalar


def describe(obj: Any) -> str:
    """A short, bounded description of ``obj`` for error messages (never a full ``repr``).

    Parameters
    ----------
    obj : object
        Anything a pickle produced.

    Returns
    -------
    str
        At most about 100 characters: a short repr of small scalars, else type and size.
    """
    t = type(obj)
    if obj is None or t in (bool, int, float, complex):
        s = repr(obj) if t is not int or obj.bit_length() < 200 else f"an int of {obj.bit_length()} bits"
        return s if len(s) <= 40 else s[:37] + "..."
    if t in (str, bytes, bytearray):
        s = repr(obj[:30])
        return s if len(obj) <= 30 else f"{t.__name__} of length {len(obj)} starting {s}"
    if isinstance(obj, type):
        return f"the type {getattr(obj, '__module__', '?')}.{getattr(obj, '__name__', '?')}"[:100]
    if isinstance(obj, np.ndarray):
        return f"an array {obj.shape} {obj.dtype}"
    if isinstance(obj, np.dtype):
        return f"dtype {obj.str}"
    if isinstance(obj, np.generic):
        return f"a numpy {obj.dtype} scalar"
    if t is tuple and len(obj) <= 8 and all(type(x) is int and x.bit_length() < 64 for x in obj):
        return repr(obj)
    if t in (list, tuple, dict, set, frozenset, collections.OrderedDict):
        return f"a {t.__name__} of {len(obj)} items"
    return f"a {t.__name__}"


def _refuse(msg: str) -> UnsafePickleError:
    return UnsafePickleError(msg)


_SIMPLE_DTYPE = re.compile(r"[<>|=]?[A-Za-z?]\d{0,10}(\[\w{1,8}\])?")


def _plain_dtype(spec: Any, where: str) -> np.dtype:
    """A simple (non-structured, non-subarray) dtype from a dtype or a type string."""
    if isinstance(spec, np.dtype):
        dt = spec
    elif type(spec) in (str, bytes):
        s = spec.decode("latin1") if isinstance(spec, bytes) else spec
        if not _SIMPLE_DTYPE.fullmatch(s):
            raise _refuse(f"{where}: dtype {describe(spec)} is not a simple type code; refused")
        try:
            dt = np.dtype(s)
        except (TypeError, ValueError) as exc:
            raise _refuse(f"{where}: dtype {describe(spec)} is not valid ({type(exc).__name__})") from None
    else:
        raise _refuse(f"{where}: dtype is {describe(spec)}; expected a numpy dtype")
    if dt.fields is not None or dt.subdtype is not None:
        raise _refuse(f"{where}: structured/sub-array dtype {dt.str}; refused")
    return dt


def _shape_arg(shape: Any, where: str) -> tuple[int, ...]:
    if type(shape) is int:
        shape = (shape,)
    if type(shape) is not tuple or len(shape) > 64 or not all(type(s) is int and s >= 0 for s in shape):
        raise _refuse(f"{where}: shape {describe(shape)} is not a tuple of non-negative integers")
    return shape


def _codecs_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    if (type(obj) is not str or type(encoding) is not str or type(errors) is not str
            or encoding.lower().replace("-", "").replace("_", "") not in ("latin1", "utf8", "ascii")):
        raise _refuse(f"pickle asks for _codecs.encode({describe(obj)}, {describe(encoding)}); "
                      "only a string in latin1/utf-8")
    return obj.encode(encoding, errors)


_BUILTINS: dict[str, type] = {
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
_RECONSTRUCT = ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")
_SCALAR = ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")
_FROMBUFFER = ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")

#: (module, name) a pickle may name -> what it stands for (the unpickler hands out checking
#: wrappers of these; ``numpy.ndarray`` is only accepted as the class argument of ``_reconstruct``)
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    **{("builtins", k): v for k, v in _BUILTINS.items()},
    **{("__builtin__", k): v for k, v in _BUILTINS.items()},  # protocol-2 pickles from Python 2
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): _codecs_encode,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **{k: "numpy _reconstruct" for k in _RECONSTRUCT},
    **{k: "numpy scalar" for k in _SCALAR},
    **{k: "numpy _frombuffer" for k in _FROMBUFFER},
}

# opcodes that create objects in ways find_class cannot police
_FORBIDDEN_OPCODES = {"INST", "OBJ", "PERSID", "BINPERSID", "EXT1", "EXT2", "EXT4", "NEWOBJ", "NEWOBJ_EX",
                      "NEXT_BUFFER"}
_MAPPINGS = (dict, collections.OrderedDict)
_LEAVES = (str, bytes, bytearray, int, float, complex, bool, type(None))


def _check_dtype_state(dt: np.dtype, state: Any) -> None:
    """A dtype's BUILD state must be the one numpy itself writes for that dtype.

    ``np.dtype.__setstate__`` trusts its input: a state taken from another dtype (e.g. a
    float's item size and flags applied to an object dtype) corrupts memory. Only simple
    dtypes are admitted, with exactly their canonical state (any byte order).
    """
    if dt.fields is not None or dt.subdtype is not None:
        raise _refuse(f"pickle builds a structured/sub-array dtype {dt.str}; refused")
    if type(state) is not tuple or len(state) < 2 or state[1] not in ("<", ">", "|", "="):
        raise _refuse(f"pickle gives dtype {dt.str} the state {describe(state)}; refused")
    ref = dt.newbyteorder(state[1]) if state[1] in "<>" and dt.byteorder != "|" else dt
    expected = ref.__reduce__()[2]
    if len(state) != len(expected) or any(type(a) is not type(b) or a != b for a, b in zip(state, expected)):
        raise _refuse(f"pickle gives dtype {dt.str} a state that is not numpy's own for it; refused")


class _RestrictedUnpickler(pickle._Unpickler):  # the pure-Python unpickler, so every step can be checked
    def __init__(self, file: Any, *, max_nodes: int, max_depth: int) -> None:
        super().__init__(file)
        self.max_nodes = max_nodes
        self.max_depth = max_depth
        self.work = 0  # objects copied by constructors + hashing work
        self._info: dict[int, tuple[int, int]] = {}  # id(tuple/frozenset) -> (expanded size, depth)
        self._keep: list[Any] = []  # keeps the tracked objects alive: their ids stay unique
        self._globals: dict[tuple[str, str], Any] = self._make_globals()
        self._callables = {id(v) for k, v in self._globals.items() if k != ("numpy", "ndarray")}

    # ----------------------------------------------------------------- budget
    def _charge(self, n: int) -> None:
        self.work += int(n)
        if self.work > self.max_nodes:
            raise _refuse(f"pickle copies or hashes more than {self.max_nodes:,} objects "
                          f"(limit {ENV_MAX_PICKLE_NODES}); refused")

    def _size(self, obj: Any) -> tuple[int, int]:
        return self._info.get(id(obj), (1, 0))

    def _note(self, obj: Any) -> Any:
        """Record the expanded size and depth of a new tuple/frozenset; refuse it beyond the limits."""
        size, depth = 1, 0
        for c in obj:
            s, d = self._info.get(id(c), (1, 0))
            size += s
            if d > depth:
                depth = d
        depth += 1
        if depth > self.max_depth:
            raise _refuse(f"pickle nests containers deeper than {self.max_depth} levels "
                          f"(limit {ENV_MAX_PICKLE_DEPTH}); refused")
        if size > self.max_nodes:
            raise _refuse(f"pickle builds a {type(obj).__name__} that expands to more than {self.max_nodes:,} "
                          f"objects (shared references counted each time; limit {ENV_MAX_PICKLE_NODES}); refused")
        if obj:
            self._info[id(obj)] = (size, depth)
            self._keep.append(obj)
        return obj

    def _hash_cost(self, keys: Any) -> None:
        """Charge what hashing ``keys`` walks, before hashing them."""
        cost = 0
        for k in keys:
            t = type(k)
            if t in (tuple, frozenset):
                cost += self._info.get(id(k), (1, 0))[0]
            elif t in (list, dict, set, bytearray, collections.OrderedDict, np.ndarray):
                raise _refuse(f"pickle uses {describe(k)} as a dict key or set member (unhashable); refused")
            else:
                cost += 1
        self._charge(cost)

    # ----------------------------------------------------------------- globals
    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._globals[(module, name)]
        except KeyError:
            raise _refuse(
                f"pickle asks for {str(module)[:60]}.{str(name)[:60]}, which is not allowed "
                "(only builtin containers/scalars and numpy arrays/scalars/dtypes)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:  # pragma: no cover - opcode scan refuses first
        raise _refuse("pickle uses persistent ids, which are not allowed")

    def _make_globals(self) -> dict[tuple[str, str], Any]:
        out: dict[tuple[str, str], Any] = {}
        for name, typ in _BUILTINS.items():
            fn = self._container(typ) if typ in (dict, list, tuple, set, frozenset) else (
                self._bytes(typ) if typ in (bytes, bytearray) else self._scalar_type(typ))
            out[("builtins", name)] = out[("__builtin__", name)] = fn
        out[("collections", "OrderedDict")] = self._container(collections.OrderedDict)
        out[("_codecs", "encode")] = _codecs_encode
        out[("numpy", "ndarray")] = np.ndarray
        out[("numpy", "dtype")] = self._dtype
        for k in _RECONSTRUCT:
            out[k] = self._reconstruct
        for k in _SCALAR:
            out[k] = self._np_scalar
        for k in _FROMBUFFER:
            out[k] = self._frombuffer
        return out

    def _container(self, typ: type) -> Callable[..., Any]:
        name = typ.__name__

        def make(*args: Any) -> Any:
            if not args:
                return typ()
            if len(args) != 1:
                raise _refuse(f"pickle calls {name}() with {len(args)} arguments; refused")
            src = args[0]
            if type(src) not in (list, tuple, set, frozenset, dict, collections.OrderedDict):
                raise _refuse(f"pickle calls {name}({describe(src)}); only containers are accepted")
            self._charge(len(src))
            if typ in _MAPPINGS and type(src) not in _MAPPINGS:
                for item in src:
                    if type(item) not in (list, tuple) or len(item) != 2:
                        raise _refuse(f"pickle calls {name}() with an item that is {describe(item)}, not a pair")
                self._hash_cost(item[0] for item in src)
            elif typ in (set, frozenset):
                self._hash_cost(src)
            obj = typ(src)
            return self._note(obj) if typ in (tuple, frozenset) else obj

        return make

    def _bytes(self, typ: type) -> Callable[..., Any]:
        name = typ.__name__

        def make(*args: Any) -> Any:
            if not args:
                return typ()
            src = args[0]
            if type(src) is str and len(args) in (2, 3) and all(type(a) is str for a in args[1:]):
                return typ(*args)
            if len(args) == 1 and type(src) in (bytes, bytearray):
                return typ(src)
            if len(args) == 1 and type(src) in (list, tuple) and all(type(x) is int for x in src):
                self._charge(len(src))
                return typ(src)
            raise _refuse(f"pickle calls {name}({describe(src)}{', ...' if len(args) > 1 else ''}); "
                          "only bytes, a list of byte values or an encoded string are accepted")

        return make

    def _scalar_type(self, typ: type) -> Callable[..., Any]:
        name = typ.__name__

        def make(*args: Any) -> Any:
            if len(args) > 2 or not all(type(a) in _LEAVES for a in args):
                raise _refuse(f"pickle calls {name}() on {', '.join(describe(a) for a in args[:3])}; "
                              "only plain scalars and strings are accepted")
            return typ(*args)

        return make

    def _dtype(self, spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
        if type(align) not in (bool, int) or type(copy) not in (bool, int):
            raise _refuse("pickle calls numpy.dtype() with odd flags; refused")
        if type(spec) is not str:
            raise _refuse(f"pickle calls numpy.dtype({describe(spec)}); only a type string is accepted")
        dt = _plain_dtype(spec, "pickle calls numpy.dtype()")
        # always a private copy: a later BUILD sets its state, which must never touch numpy's own dtypes
        return np.dtype(dt, align=bool(align), copy=True)

    def _reconstruct(self, cls: Any, shape: Any, dtype: Any) -> np.ndarray:
        if cls is not np.ndarray:
            raise _refuse(f"pickle asks _reconstruct for {describe(cls)}; only numpy.ndarray is allowed")
        shp = _shape_arg(shape, "pickle calls numpy _reconstruct")
        dt = _plain_dtype(dtype, "pickle calls numpy _reconstruct")
        if array_nbytes(shp, dt.itemsize) > 4096:
            raise _refuse(f"pickle asks _reconstruct for an array of shape {shp} (numpy writes an empty one; "
                          "the data comes with its state); refused")
        return np.ndarray.__new__(np.ndarray, shp, dt)

    def _np_scalar(self, dtype: Any, data: Any = None) -> Any:
        if not isinstance(dtype, np.dtype) or dtype.hasobject or dtype.fields is not None:
            raise _refuse(f"pickle asks for a numpy scalar of {describe(dtype)}; only simple, non-object dtypes")
        if type(data) is str:
            data = data.encode("latin1")
        if type(data) is not bytes or len(data) != dtype.itemsize:
            raise _refuse(f"pickle gives a numpy {dtype.str} scalar {describe(data)}; expected {dtype.itemsize} bytes")
        return _scalar(dtype, data)

    def _frombuffer(self, buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
        dt = _plain_dtype(dtype, "pickle calls numpy _frombuffer")
        if dt.hasobject:
            raise _refuse("pickle asks for an object array from a raw buffer; refused")
        if order not in ("C", "F"):
            raise _refuse(f"pickle asks for array order {describe(order)}; expected 'C' or 'F'")
        shp = _shape_arg(shape, "pickle calls numpy _frombuffer")
        if not isinstance(buf, (bytes, bytearray, memoryview, pickle.PickleBuffer)):
            raise _refuse(f"pickle gives _frombuffer {describe(buf)}; expected a bytes buffer")
        with memoryview(buf) as mv:
            have = mv.nbytes
        need = array_nbytes(shp, dt.itemsize)
        if have != need:
            raise _refuse(f"pickle gives _frombuffer {format_bytes(have)} for shape {shp} {dt.str} "
                          f"({format_bytes(need)}); refused")
        return np.frombuffer(buf, dtype=dt).reshape(shp, order=order)

    # ----------------------------------------------------------------- opcodes
    def load_reduce(self) -> None:
        stack = self.stack
        args = stack.pop()
        func = stack[-1]
        if id(func) not in self._callables:
            raise _refuse(f"pickle calls {describe(func)}, which may not be called "
                          "(numpy.ndarray only through _reconstruct)")
        if type(args) is not tuple:
            raise _refuse(f"pickle calls a function with {describe(args)} as arguments; refused")
        stack[-1] = func(*args)

    def load_build(self) -> None:
        state, inst = self.stack[-1], self.stack[-2]
        if isinstance(inst, np.dtype):
            _check_dtype_state(inst, state)
        elif type(inst) is np.ndarray:
            self.stack[-1] = self._array_state(state)
        else:
            raise _refuse(f"pickle sets the state of {describe(inst)}; only numpy arrays/dtypes")
        pickle._Unpickler.load_build(self)

    def _array_state(self, state: Any) -> tuple[Any, ...]:
        where = "pickle sets an array's state"
        if type(state) is not tuple or len(state) != 5:
            raise _refuse(f"{where} to {describe(state)}; expected (version, shape, dtype, fortran, data)")
        version, shape, dtype, fortran, raw = state
        if type(version) is not int or type(fortran) not in (bool, int):
            raise _refuse(f"{where} with version {describe(version)}, fortran flag {describe(fortran)}; refused")
        shp = _shape_arg(shape, where)
        if not isinstance(dtype, np.dtype):
            raise _refuse(f"{where} with dtype {describe(dtype)}; expected a numpy dtype")
        dt = _plain_dtype(dtype, where)
        count = array_nbytes(shp, 1)
        if dt.hasobject:
            if type(raw) is not list or len(raw) != count:
                raise _refuse(f"{where}: an object array of shape {shp} ({count} items) from {describe(raw)}; "
                              "object arrays need a list of exactly that many items (never raw bytes)")
            self._charge(count)
        else:
            if type(raw) is str:  # protocol-2 pickles from Python 2
                raw = raw.encode("latin1")
            if type(raw) not in (bytes, bytearray):
                raise _refuse(f"{where}: a {dt.str} array from {describe(raw)}; expected raw bytes")
            need = count * dt.itemsize
            if len(raw) != need:
                raise _refuse(f"{where}: shape {shp} {dt.str} needs {need} bytes, the pickle gives {len(raw)}")
        return (version, shp, dt, bool(fortran), raw)

    def _target(self, types: tuple[type, ...], what: str) -> Any:
        target = self.stack[-1]
        if type(target) not in types:
            raise _refuse(f"pickle {what} {describe(target)}; refused")
        return target

    def load_append(self) -> None:
        value = self.stack.pop()
        self._target((list,), "appends to").append(value)

    def load_appends(self) -> None:
        items = self.pop_mark()
        self._target((list,), "appends to").extend(items)

    def load_setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        d = self._target(_MAPPINGS, "sets an item of")
        self._hash_cost((key,))
        d[key] = value

    def load_setitems(self) -> None:
        items = self.pop_mark()
        d = self._target(_MAPPINGS, "sets items of")
        if len(items) % 2:
            raise _refuse("pickle sets dict items from an odd number of values; refused")
        self._hash_cost(items[0::2])
        for i in range(0, len(items), 2):
            d[items[i]] = items[i + 1]

    def load_additems(self) -> None:
        items = self.pop_mark()
        s = self._target((set,), "adds items to")
        self._hash_cost(items)
        s.update(items)

    def load_dict(self) -> None:
        items = self.pop_mark()
        if len(items) % 2:
            raise _refuse("pickle builds a dict from an odd number of values; refused")
        self._hash_cost(items[0::2])
        d = {items[i]: items[i + 1] for i in range(0, len(items), 2)}
        self.append(d)

    def load_frozenset(self) -> None:
        items = self.pop_mark()
        self._hash_cost(items)
        fs = self._note(frozenset(items))
        self.append(fs)

    def load_tuple(self) -> None:
        t = self._note(tuple(self.pop_mark()))  # pop_mark first: it rebinds self.append
        self.append(t)

    def load_tuple1(self) -> None:
        self.stack[-1] = self._note((self.stack[-1],))

    def load_tuple2(self) -> None:
        self.stack[-2:] = [self._note((self.stack[-2], self.stack[-1]))]

    def load_tuple3(self) -> None:
        self.stack[-3:] = [self._note((self.stack[-3], self.stack[-2], self.stack[-1]))]

    def load_bytearray8(self) -> None:
        (n,) = struct.unpack("<Q", self.read(8))
        data = self.read(n)  # never allocates more than the stream holds
        if len(data) != n:
            raise _refuse(f"pickle declares a bytearray of {n} bytes; the stream ends after {len(data)}")
        self.append(bytearray(data))

    dispatch = dict(pickle._Unpickler.dispatch)
    for _op, _fn in (
        (pickle.REDUCE, load_reduce), (pickle.BUILD, load_build), (pickle.APPEND, load_append),
        (pickle.APPENDS, load_appends), (pickle.SETITEM, load_setitem), (pickle.SETITEMS, load_setitems),
        (pickle.ADDITEMS, load_additems), (pickle.DICT, load_dict), (pickle.FROZENSET, load_frozenset),
        (pickle.TUPLE, load_tuple), (pickle.TUPLE1, load_tuple1), (pickle.TUPLE2, load_tuple2),
        (pickle.TUPLE3, load_tuple3), (pickle.BYTEARRAY8, load_bytearray8),
    ):
        dispatch[_op[0]] = _fn
    del _op, _fn

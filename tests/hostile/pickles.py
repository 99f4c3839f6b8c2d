"""Hand-assembled hostile pickle streams (each a few bytes to a few KB).

``pickle.dumps`` cannot produce most of these (they are not pickles of any Python object,
or of objects too big to build), so they are written opcode by opcode with :class:`Asm`.
Every function returns the stream as ``bytes``; :data:`PICKLES` maps a case name to
``(builder, what it tries, the fragment the refusal must contain)``.
"""

from __future__ import annotations

import struct

import numpy as np

PROTO = b"\x80\x04"
STOP = b"."
MARK = b"("
TUPLE = b"t"
TUPLE1 = b"\x85"
TUPLE2 = b"\x86"
EMPTY_TUPLE = b")"
EMPTY_LIST = b"]"
EMPTY_DICT = b"}"
APPEND = b"a"
APPENDS = b"e"
SETITEM = b"s"
SETITEMS = b"u"
REDUCE = b"R"
BUILD = b"b"
NONE = b"N"
NEWFALSE = b"\x89"
NEWTRUE = b"\x88"
DUP = b"2"
MEMOIZE = b"\x94"
POP = b"0"
NEWOBJ = b"\x81"


def glob(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def stack_glob(module: str, name: str) -> bytes:
    return s(module) + s(name) + b"\x93"


def i(n: int) -> bytes:
    if 0 <= n < 256:
        return b"K" + bytes([n])
    if -(2**31) <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def s(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def b(raw: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(raw)) + raw


def tup(*items: bytes) -> bytes:
    return MARK + b"".join(items) + TUPLE


def get(k: int) -> bytes:
    return b"j" + struct.pack("<I", k)  # LONG_BINGET


def put(k: int) -> bytes:
    return b"r" + struct.pack("<I", k)  # LONG_BINPUT


def dtype(spec: str, state: tuple | None = None) -> bytes:
    """``numpy.dtype(spec, False, True)`` + its BUILD state (numpy's own unless ``state``)."""
    st = state if state is not None else np.dtype(spec).__reduce__()[2]
    return glob("numpy", "dtype") + tup(s(spec), NEWFALSE, NEWTRUE) + REDUCE + _value(st) + BUILD


def _value(v: object) -> bytes:
    if v is None:
        return NONE
    if isinstance(v, bool):
        return NEWTRUE if v else NEWFALSE
    if isinstance(v, int):
        return i(v)
    if isinstance(v, str):
        return s(v)
    if isinstance(v, bytes):
        return b(v)
    if isinstance(v, tuple):
        return tup(*(_value(x) for x in v))
    raise TypeError(type(v))


def reconstruct(shape: bytes = tup(i(0)), code: bytes = b(b"b")) -> bytes:
    """``_reconstruct(numpy.ndarray, shape, typecode)`` (what ``ndarray.__reduce__`` writes)."""
    return glob("numpy._core.multiarray", "_reconstruct") + tup(glob("numpy", "ndarray"), shape, code) + REDUCE


def array_state(shape: tuple[int, ...], spec: str, raw: bytes) -> bytes:
    """An ndarray built by ``_reconstruct`` and given the state ``(1, shape, dtype, False, raw)``."""
    return reconstruct() + tup(i(1), tup(*(i(n) for n in shape)), dtype(spec), NEWFALSE, raw) + BUILD


def wrap(body: bytes) -> bytes:
    return PROTO + body + STOP


def object_array_of(item: bytes) -> bytes:
    """A 1-element object array holding ``item`` (how CVPR files pickle their members)."""
    return reconstruct() + tup(i(1), tup(i(1)), dtype("O8"), NEWFALSE, EMPTY_LIST + item + APPEND) + BUILD


# ----------------------------------------------------------------------------- the cases
def raw_object_array() -> bytes:
    # numpy.ndarray((4,), 'O', <32 bytes from the file>): an object array whose pointers are file bytes
    return wrap(glob("numpy", "ndarray") + tup(tup(i(4)), s("O"), b(b"\x41" * 32)) + REDUCE)


def raw_object_array_newobj() -> bytes:
    return wrap(glob("numpy", "ndarray") + tup(tup(i(4)), s("O"), b(b"\x41" * 32)) + NEWOBJ)


def object_state_from_bytes() -> bytes:
    return wrap(array_state((4,), "O8", b(b"\x41" * 32)))


def object_state_short_list() -> bytes:
    # 1000 object slots filled from a 2-item list: numpy would read past the list
    return wrap(array_state((1000,), "O8", EMPTY_LIST + MARK + i(1) + i(2) + APPENDS))


def float_state_short_bytes() -> bytes:
    return wrap(array_state((1000,), "f8", b(b"\x00" * 8)))


def state_negative_shape() -> bytes:
    return wrap(array_state((-1,), "f8", b(b"")))


def frombuffer_size_mismatch() -> bytes:
    fb = glob("numpy._core.numeric", "_frombuffer")
    return wrap(fb + tup(b(b"\x00" * 8), dtype("f8"), tup(i(1000)), s("C")) + REDUCE)


def frombuffer_object() -> bytes:
    fb = glob("numpy._core.numeric", "_frombuffer")
    return wrap(fb + tup(b(b"\x41" * 8), dtype("O8"), tup(i(1)), s("C")) + REDUCE)


def dtype_state_swap() -> bytes:
    # an object dtype given a float's item size and flags
    return wrap(dtype("O8", np.dtype("f8").__reduce__()[2]))


def object_scalar() -> bytes:
    # numpy scalar of object dtype = a raw pointer from the file
    return wrap(glob("numpy._core.multiarray", "scalar") + tup(dtype("O8"), b(b"\x41" * 8)) + REDUCE)


def reconstruct_huge() -> bytes:
    return wrap(reconstruct(shape=tup(i(10**10)), code=b(b"f8")))


def bytes_alloc_tuple() -> bytes:
    # tuple(bytes(300_000_000)): a 100-byte pickle asking for a 2.4 GB tuple
    return wrap(glob("builtins", "tuple") + tup(glob("builtins", "bytes") + tup(i(300_000_000)) + REDUCE) + REDUCE)


def bytearray_alloc() -> bytes:
    return wrap(glob("builtins", "bytearray") + tup(i(10**10)) + REDUCE)


def deep_tuple_key(depth: int = 200_000) -> bytes:
    # {((((...(None,)...),),): 1}: hashing the key recurses 200,000 levels deep in C
    return wrap(EMPTY_DICT + NONE + TUPLE1 * depth + i(1) + SETITEM)


def deep_list(depth: int = 200_000) -> bytes:
    return wrap(EMPTY_LIST * depth + APPEND * (depth - 1))


def shared_tuple_2_60() -> bytes:
    # t = (t, t) sixty times: 2**60 leaves, used as a dict key (hashing walks them all)
    return wrap(EMPTY_DICT + NONE + (DUP + TUPLE2) * 60 + i(1) + SETITEM)


def hash_work() -> bytes:
    # a key of ~500,000 (shared) leaves, inserted 100,000 times: each insertion hashes all of it
    return wrap(EMPTY_DICT + NONE + (DUP + TUPLE2) * 18 + put(0) + POP + MARK + (get(0) + i(1)) * 100_000 + SETITEMS)


def _laughs(levels: int = 10, width: int = 10, leaf: bytes = s("lol")) -> bytes:
    """Leaves a list on the stack that expands to width**levels leaves (memo-shared lists)."""
    out = leaf + put(0) + POP
    for k in range(1, levels + 1):
        out += EMPTY_LIST + MARK + get(k - 1) * width + APPENDS + put(k) + (POP if k < levels else b"")
    return out


def billion_laughs() -> bytes:
    return wrap(_laughs())


def billion_laughs_str() -> bytes:
    # str(<the laughs>): building the error message / repr would never end
    return wrap(glob("builtins", "str") + tup(_laughs()) + REDUCE)


def cyclic_list() -> bytes:
    return wrap(EMPTY_LIST + put(0) + get(0) + APPEND)


def flat_many_nodes(n: int = 1_200_000) -> bytes:
    return wrap(EMPTY_LIST + MARK + NONE * n + APPENDS)


def huge_int_text() -> bytes:
    return b"I" + b"9" * 100_000 + b"\n."


def memo_missing() -> bytes:
    return wrap(get(200))


def stack_global_os_system() -> bytes:
    return wrap(stack_glob("os", "system") + tup(s("true")) + REDUCE)


def setitem_on_array() -> bytes:
    arr = glob("numpy._core.numeric", "_frombuffer") + tup(b(b"\x00" * 8), dtype("f8"), tup(i(1)), s("C")) + REDUCE
    return wrap(arr + i(0) + i(1) + SETITEM)


def structured_dtype() -> bytes:
    # a plain void dtype given the state of a structured one (field names, an object field's flags)
    return wrap(dtype("V16", (3, "|", None, ("a", "b"), None, 16, 1, 63)))


def laughs_in_ordered_dict() -> bytes:
    od = glob("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE
    return wrap(od + s("k") + _laughs() + SETITEM)


#: name -> (builder, what it tries, a fragment every refusal message must contain)
PICKLES = {
    "raw_object_array": (raw_object_array, "numpy.ndarray(shape, 'O', raw bytes) via REDUCE", "may not be called"),
    "raw_object_array_newobj": (raw_object_array_newobj, "the same via NEWOBJ", "NEWOBJ"),
    "object_state_from_bytes": (object_state_from_bytes, "object array state from raw bytes", "never raw bytes"),
    "object_state_short_list": (object_state_short_list, "object array state, list shorter than the array",
                                "exactly that many items"),
    "float_state_short_bytes": (float_state_short_bytes, "float array state, too few bytes", "needs 8000 bytes"),
    "state_negative_shape": (state_negative_shape, "array state with a negative dimension", "non-negative"),
    "frombuffer_size_mismatch": (frombuffer_size_mismatch, "_frombuffer shape x itemsize != buffer", "_frombuffer"),
    "frombuffer_object": (frombuffer_object, "_frombuffer with an object dtype", "object array from a raw buffer"),
    "dtype_state_swap": (dtype_state_swap, "object dtype given a float's state", "not numpy's own"),
    "object_scalar": (object_scalar, "numpy scalar of object dtype", "object dtypes"),
    "reconstruct_huge": (reconstruct_huge, "_reconstruct of a 10**10-element array", "numpy writes an empty one"),
    "bytes_alloc_tuple": (bytes_alloc_tuple, "tuple(bytes(300_000_000)) in 100 bytes", "bytes("),
    "bytearray_alloc": (bytearray_alloc, "bytearray(10**10)", "bytearray("),
    "deep_tuple_key": (deep_tuple_key, "200,000-deep nested tuple as a dict key", "deeper than"),
    "deep_list": (deep_list, "200,000-deep nested list", "deeper than"),
    "shared_tuple_2_60": (shared_tuple_2_60, "tuple of 2**60 shared leaves as a dict key", "expands to more than"),
    "hash_work": (hash_work, "a 500,000-leaf key inserted 100,000 times", "hashes more than"),
    "billion_laughs": (billion_laughs, "memo-shared lists expanding to 10**10 leaves", "billion laughs"),
    "billion_laughs_str": (billion_laughs_str, "str() of the billion laughs", "only plain scalars"),
    "cyclic_list": (cyclic_list, "a list containing itself", "recursive"),
    "flat_many_nodes": (flat_many_nodes, "a flat list of 1.2 million items", "MEDSEGFM_MAX_PICKLE_NODES"),
    "huge_int_text": (huge_int_text, "a 100,000-digit protocol-0 integer", "not a valid pickle"),
    "memo_missing": (memo_missing, "a memo reference to nothing", "could not unpickle"),
    "stack_global_os_system": (stack_global_os_system, "os.system through STACK_GLOBAL", "not allowed"),
    "setitem_on_array": (setitem_on_array, "SETITEM into a numpy array", "sets an item of"),
    "structured_dtype": (structured_dtype, "a structured dtype with an object field", "refused"),
    "laughs_in_ordered_dict": (laughs_in_ordered_dict, "billion laughs inside an OrderedDict", "billion laughs"),
}

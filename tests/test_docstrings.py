"""The public API outside engine/ has numpydoc docstrings (issue 16).

Walks the modules of io/, dataset/, tasks/, cli/, backends/, types/ and utils.py with
:mod:`inspect`. Public: the names in a module's ``__all__`` (every name without a leading
underscore when it has none) that the module defines, and the methods and properties
without a leading underscore that those classes define. Each needs a docstring; one with
parameters (other than ``self``/``cls``) needs a numpydoc ``Parameters`` section. A method
that overrides a documented one (a backend's ``predict``, say) inherits its docstring,
as :func:`inspect.getdoc` and Sphinx do.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import inspect
import pkgutil
import re
from collections.abc import Iterator

import pytest

ROOT = "napari_medsegfm"
PACKAGES = ("io", "dataset", "tasks", "cli", "backends", "types")
MODULES = ("utils",)

#: whole modules left out, with the reason
EXEMPT_MODULES: dict[str, str] = {}

#: single callables left out ("module:qualname"), with the reason
EXEMPT: dict[str, str] = {}

_PARAMS = re.compile(r"^[ \t]*Parameters[ \t]*\n[ \t]*-{3,}[ \t]*$", re.M)
_ATTRS = re.compile(r"^[ \t]*Attributes[ \t]*\n[ \t]*-{3,}[ \t]*$", re.M)


def _module_names() -> list[str]:
    names = [f"{ROOT}.{m}" for m in MODULES]
    for pkg in PACKAGES:
        mod = importlib.import_module(f"{ROOT}.{pkg}")
        names.append(mod.__name__)
        names.extend(info.name for info in pkgutil.walk_packages(mod.__path__, mod.__name__ + "."))
    return sorted(n for n in names if n not in EXEMPT_MODULES)


def _public(mod: object) -> Iterator[tuple[str, object]]:
    names = getattr(mod, "__all__", None)
    for name, obj in vars(mod).items():
        if (name not in names) if names is not None else name.startswith("_"):
            continue
        if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == mod.__name__:
            yield name, obj


def _own_init(cls: type) -> bool:
    """True when the constructor's parameters are the class's own (not Enum's, Exception's...)."""
    if issubclass(cls, enum.Enum):
        return False
    if dataclasses.is_dataclass(cls):
        return True
    for klass in cls.__mro__:
        for name in ("__init__", "__new__"):
            if name in vars(klass):  # a Protocol's placeholder __init__ is typing's
                return getattr(vars(klass)[name], "__module__", "").startswith(ROOT)
    return False


def _params(obj: object) -> list[str]:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return []
    return [n for n in sig.parameters if n not in ("self", "cls")]


def _items(mod: object) -> Iterator[tuple[str, str | None, list[str], bool]]:
    """(qualname, docstring, parameters, is_class) of every public callable of ``mod``."""
    for name, obj in _public(mod):
        if inspect.isclass(obj):
            yield name, inspect.getdoc(obj), _params(obj) if _own_init(obj) else [], True
            for attr, raw in vars(obj).items():
                if attr.startswith("_"):
                    continue
                if isinstance(raw, property):
                    yield f"{name}.{attr}", raw.__doc__, [], False
                    continue
                func = raw.__func__ if isinstance(raw, (staticmethod, classmethod)) else raw
                if inspect.isfunction(func):
                    yield f"{name}.{attr}", inspect.getdoc(getattr(obj, attr)), _params(func), False
        else:
            yield name, inspect.getdoc(obj), _params(obj), False


def _problem(doc: str | None, params: list[str], is_class: bool) -> str | None:
    if not (doc or "").strip():
        return "no docstring"
    if params and not (_PARAMS.search(doc) or (is_class and _ATTRS.search(doc))):
        return f"parameters ({', '.join(params)}) but no 'Parameters' section"
    return None


def _offenders() -> tuple[list[str], set[str], list[str]]:
    """(offenders, every public callable seen, exempted callables that pass by now)."""
    bad, seen, fine = [], set(), []
    for modname in _module_names():
        mod = importlib.import_module(modname)
        for qual, doc, params, is_class in _items(mod):
            key = f"{modname}:{qual}"
            seen.add(key)
            problem = _problem(doc, params, is_class)
            if key in EXEMPT:
                if problem is None:
                    fine.append(key)
            elif problem is not None:
                bad.append(f"{key}: {problem}")
    return bad, seen, fine


def test_public_api_has_numpydoc_docstrings() -> None:
    bad, _, _ = _offenders()
    assert not bad, f"{len(bad)} public callables lack a numpydoc docstring:\n  " + "\n  ".join(bad)


def test_exemptions_name_public_callables() -> None:
    _, seen, fine = _offenders()
    stale = sorted(set(EXEMPT) - seen)
    assert not stale, f"exemptions that name no public callable (remove them): {stale}"
    assert not fine, f"exempted callables that are documented now (remove their exemption): {fine}"
    for modname in EXEMPT_MODULES:
        importlib.import_module(modname)


@pytest.mark.parametrize("doc, has", [
    ("Summary.\n\nParameters\n----------\nx : int\n    X.\n", True),
    ("Summary.\n\n    Parameters\n    ----------\n    x : int\n", True),
    ("Summary mentioning Parameters but no heading.\n", False),
    ("Summary.\n\nParameters\n\nx : int\n", False),
])
def test_parameters_heading_is_recognised(doc: str, has: bool) -> None:
    assert bool(_PARAMS.search(doc)) is has

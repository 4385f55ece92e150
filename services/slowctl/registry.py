"""Plug-in discovery: every module of a package that defines classes with a `model` id is registered.

A new instrument is a new file, for drivers and simulators alike: no list to edit.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType
from typing import TypeVar

T = TypeVar("T")


def discover(package: ModuleType, base: type[T]) -> dict[str, type[T]]:
    """{model: class} for the concrete subclasses of `base` defined in the package's modules."""
    found: dict[str, type[T]] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            model = getattr(cls, "model", None)
            if (
                cls.__module__ == module.__name__
                and issubclass(cls, base)
                and isinstance(model, str)
                and not inspect.isabstract(cls)
            ):
                if model in found and found[model] is not cls:
                    raise RuntimeError(f"model {model!r} defined twice: {found[model].__module__}, {cls.__module__}")
                found[model] = cls
    return found

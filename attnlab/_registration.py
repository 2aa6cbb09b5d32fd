"""Register attnlab's model families with timm as soon as timm is imported.

``import attnlab`` must make ``timm.create_model("revit_...")`` work, yet importing
torch and timm takes seconds and ``attnlab --help`` must not pay for it. So: if timm is
already imported, register now; otherwise a one-shot import hook registers right after
timm's own import finishes, whoever imports it.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType
from typing import Any, Optional, Sequence


def _register() -> None:
    importlib.import_module("attnlab.models.factory")  # registers the zoo on import
    importlib.import_module("attnlab.models.reswin")  # registers reswin_* (multiscale ReViT on Swin)
    importlib.import_module("attnlab.models.remvitv2")  # registers remvitv2_* (multiscale ReViT on MViTv2)


class _TimmLoader(importlib.abc.Loader):
    """Delegates to timm's own loader, then registers attnlab's models."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec):  # noqa: D102
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:  # noqa: D102
        self._loader.exec_module(module)
        _register()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _TimmFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Optional[Sequence[str]], target: Any = None):
        if fullname != "timm":
            return None
        uninstall()
        spec = importlib.util.find_spec("timm")
        if spec is not None and spec.loader is not None:
            spec.loader = _TimmLoader(spec.loader)
        return spec


_finder = _TimmFinder()


def uninstall() -> None:
    if _finder in sys.meta_path:
        sys.meta_path.remove(_finder)


def install() -> None:
    """Register now if timm is loaded, else as soon as it is."""
    if "timm" in sys.modules:
        _register()
    elif _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)
